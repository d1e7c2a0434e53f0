"""Who may talk to the producer and the dashboard: one rule, one Starlette middleware for both apps.

The rule, like Jupyter's: every request carries the token, from anywhere,
loopback included: `Authorization: Bearer <PRODUCER_TOKEN>`, or the session
cookie a login sets (the form at `/login`, or the one-click link
`/?token=<token>` that `./manage.sh up` prints, which sets the cookie and
redirects to the page without the token in its URL). Else 401, with a message
that says where the token is and how to send it. `./manage.sh up` keeps the
token in `.run/producer.token` (mode 600); the command-line tools read it.

Trusting loopback is an opt-in (`AUTH_ALLOW_LOOPBACK`, off by default),
because "came from 127.0.0.1" is true of every caller behind a reverse proxy
on the same host (nginx's `proxy_pass http://127.0.0.1:8000;` sends a
loopback `Host` and no forwarding header) and of any local process that can
be made to send a request. Even when it is on, a request carrying any
forwarding header, or a non-loopback `Host` (DNS rebinding), is not exempt.

Forwarded headers (`Forwarded`, `X-Forwarded-For`, `-Proto`, `-Host`) are
believed only from the addresses in `AUTH_TRUSTED_PROXIES` (uvicorn's
`--forwarded-allow-ips` convention: addresses or networks, comma-separated,
`*` for any). They decide the client address (failed logins are throttled per
client), whether the browser used https (the cookie gets `Secure`) and the
host it addressed (the same-origin check).

Sessions: each login draws a random session id (not derived from the token)
and the cookie carries it with its expiry, signed with a key derived from the
token (`HMAC(token, label)`). Any replica that holds the token verifies a
cookie without a shared store, and changing the token ends every session.
`POST /logout` expires the cookie and revokes its id in this process; the
revocation list lives in memory (each id only until its own expiry), so with
several replicas behind one address a revoked cookie stays valid on the
others until it expires (`AUTH_SESSION_SECONDS`, 8 h by default).

Failed credentials (a wrong bearer token, login form or link) are counted
per client: after `AUTH_MAX_FAILED_LOGINS` in `AUTH_LOGIN_WINDOW_SECONDS`
every token the client tries answers 429 until the window ends (a valid
session cookie still works).

Cross-site requests are refused everywhere (403) whatever their credentials:
a browser marks them with `Sec-Fetch-Site: cross-site|same-site`; browsers
that do not send `Sec-Fetch-Site` are judged by an `Origin` whose host is not
the one the request addressed. A web page can therefore not post rows, pause
a type or read logs through an operator's browser.

Only the health probes, login and logout are public; the probes say healthy
or not per part, and give details (`scope["auth"]` set) only to an
authenticated caller. Every other path, `/metrics` and static files
included, follows the rule.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from common.env import SettingsError, env_flag, env_float, env_int, env_str

log = logging.getLogger(__name__)

# ASGI's types, spelled out so that this module needs no web framework (workers import common too).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = dict[str, str]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SESSION_COOKIE = "autoscaler_session"
LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"
PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
#: The query parameter of the one-click login link (`/?token=...`).
LINK_PARAMETER = "token"
#: Headers a proxy adds; a request carrying one is never a loopback caller, even with `AUTH_ALLOW_LOOPBACK`.
PROXY_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "via",
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
CROSS_SITE = frozenset({"cross-site", "same-site"})
#: `Sec-Fetch-Site` values by which the browser itself vouches that the request is not cross-site.
BROWSER_SAYS_SAME = frozenset({"same-origin", "none"})
#: Placeholder secrets shipped in example manifests start with this; they are never accepted.
PLACEHOLDER_PREFIX = "PLACEHOLDER"
#: How the middleware authenticated a request; read it from `request.scope["auth"]` (None: not authenticated).
VIA_LOOPBACK, VIA_TOKEN, VIA_COOKIE = "loopback", "token", "cookie"
#: `scope[SESSION_EXPIRES]`: when the session of a cookie-authenticated request ends (long streams stop then).
SESSION_EXPIRES = "auth_session_expires"
MAX_LOGIN_BYTES = 4096
#: Where `./manage.sh up` keeps the token; the command-line tools read it when PRODUCER_TOKEN is unset.
TOKEN_FILE = Path(__file__).resolve().parent.parent / ".run" / "producer.token"
WHERE_THE_TOKEN_IS = (
    "send 'Authorization: Bearer <token>'; the token is PRODUCER_TOKEN, which ./manage.sh up keeps in "
    ".run/producer.token (on Kubernetes: Secret queue-autoscaler-secrets, key producer-token); "
    "a browser logs in at /login or with the link ./manage.sh up prints"
)
SESSION_KEY_LABEL = b"queue-autoscaler session signing key v1"


@dataclass(frozen=True)
class AuthSettings:
    """Who gets in: the token, the loopback opt-in, trusted proxies, session lifetime and the login throttle.

    `PRODUCER_TOKEN`; `AUTH_ALLOW_LOOPBACK` (false); `AUTH_TRUSTED_PROXIES` (none);
    `AUTH_SESSION_SECONDS` (8 h); `AUTH_MAX_FAILED_LOGINS` (10) per `AUTH_LOGIN_WINDOW_SECONDS` (60).
    """

    token: str | None
    allow_loopback: bool = False
    trusted_proxies: tuple[Network, ...] = ()
    session_seconds: float = 8 * 3600.0
    max_failed_logins: int = 10
    login_window_seconds: float = 60.0

    @classmethod
    def from_environment(cls) -> AuthSettings:
        token = env_str("PRODUCER_TOKEN", None)
        if token is not None and token.startswith(PLACEHOLDER_PREFIX):
            raise SettingsError(
                "PRODUCER_TOKEN holds the placeholder of the example manifests; "
                "generate a real one (./manage.sh k8s-up does) before deploying"
            )
        allow_loopback = env_flag("AUTH_ALLOW_LOOPBACK", cls.allow_loopback)
        if token is None and not allow_loopback:
            raise SettingsError(
                "PRODUCER_TOKEN is not set, and without it nobody could get in: ./manage.sh up generates one "
                "in .run/producer.token (or set AUTH_ALLOW_LOOPBACK=true to let loopback clients in without one)"
            )
        return cls(
            token=token,
            allow_loopback=allow_loopback,
            trusted_proxies=parse_networks("AUTH_TRUSTED_PROXIES", env_str("AUTH_TRUSTED_PROXIES", "")),
            session_seconds=env_float("AUTH_SESSION_SECONDS", cls.session_seconds, above=0),
            max_failed_logins=env_int("AUTH_MAX_FAILED_LOGINS", cls.max_failed_logins, minimum=1),
            login_window_seconds=env_float("AUTH_LOGIN_WINDOW_SECONDS", cls.login_window_seconds, above=0),
        )


def parse_networks(name: str, text: str) -> tuple[Network, ...]:
    """`10.0.0.1, 10.1.0.0/16` or `*` (any address) as networks; a bad entry names the variable."""
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if entry == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
        elif entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise SettingsError(f"{name}: {entry!r} is not an IP address or network") from None
    return tuple(networks)


def client_token() -> str | None:
    """The token a command-line tool sends: PRODUCER_TOKEN, else the file `./manage.sh up` keeps it in."""
    token = env_str("PRODUCER_TOKEN", None)
    if token is None and TOKEN_FILE.is_file():
        token = TOKEN_FILE.read_text().strip() or None
    return token


def describe_rule(settings: AuthSettings) -> str:
    """One line for the startup log: who gets in (never the token itself)."""
    proxies = ", ".join(map(str, settings.trusted_proxies)) or "none"
    if settings.token is None:
        return "no PRODUCER_TOKEN set: only loopback clients get in (AUTH_ALLOW_LOOPBACK)"
    if settings.allow_loopback:
        return f"token required, except straight from loopback (AUTH_ALLOW_LOOPBACK); trusted proxies: {proxies}"
    return f"token required from every client; trusted proxies: {proxies}"


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a socket or a forwarding header (`"[::1]:80"`, `1.2.3.4:5`), or None."""
    if not text:
        return None
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_loopback(address: str | None) -> bool:
    parsed = _address(address)
    return parsed is not None and parsed.is_loopback


def _host_name(host: str) -> str:
    """The name part of a Host header value (`[::1]:8000` -> `[::1]`, `localhost:80` -> `localhost`)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_headers(scope: Scope) -> Headers:
    """The request's headers by lower-case name (a repeated header keeps its last value)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def _forwarded_elements(value: str) -> list[dict[str, str]]:
    """RFC 7239 `Forwarded: for=a;proto=https, for=b` as one dict per hop (names lower-case, quotes removed)."""
    elements = []
    for hop in value.split(","):
        pairs = (pair.partition("=") for pair in hop.split(";"))
        elements.append({name.strip().lower(): text.strip().strip('"') for name, _, text in pairs if text})
    return elements


@dataclass(frozen=True)
class Origin:
    """Where a request came from as far as this server may believe: client address, scheme, addressed host."""

    client: str
    scheme: str
    host: str


def request_origin(scope: Scope, headers: Headers, trusted: tuple[Network, ...]) -> Origin:
    """The socket's view, corrected by forwarding headers only when the socket peer is a trusted proxy.

    The client is the rightmost address in the forwarding chain that is not a
    trusted proxy itself (what uvicorn does), so a client cannot pick its
    address by sending its own `X-Forwarded-For`.
    """
    peer = scope.get("client")
    client = peer[0] if peer else "unknown"
    origin = Origin(client, scope.get("scheme", "http"), headers.get("host", ""))
    if not _trusted(client, trusted):
        return origin
    if "forwarded" in headers:
        hops = _forwarded_elements(headers["forwarded"])
        chain = [hop.get("for", "") for hop in hops]
        scheme, host = hops[-1].get("proto"), hops[-1].get("host")
    else:
        chain = [part.strip() for part in headers.get("x-forwarded-for", "").split(",") if part.strip()]
        scheme = headers.get("x-forwarded-proto", "").split(",")[-1].strip() or None
        host = headers.get("x-forwarded-host", "").split(",")[-1].strip() or None
    for hop in reversed(chain):
        client = hop
        if not _trusted(hop, trusted):
            break
    return Origin(client, (scheme or origin.scheme).lower(), host or origin.host)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in trusted)


def cross_site_reason(headers: Headers, host: str) -> str | None:
    """Why a browser-made request comes from another site, or None when it does not.

    `host` is the host the browser addressed (behind a trusted proxy, the one it forwarded).
    """
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site in CROSS_SITE:
        return f"Sec-Fetch-Site: {fetch_site}"
    if fetch_site in BROWSER_SAYS_SAME:
        return None  # the browser itself says so; page scripts cannot set Sec-* headers
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return f"Origin {origin[:100]!r} is not this server"
    return None


class TooManyFailures(Exception):
    """A client used up its failed attempts; it may try again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many wrong tokens from this client; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class FailureThrottle:
    """Failed credentials per client in fixed windows; a client over the limit is refused until its window ends."""

    #: Entries kept before expired windows are swept (bounds memory under many clients).
    SWEEP_AT = 10_000

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raise TooManyFailures while `client` is over the limit."""
        started, count = self._windows.get(client, (0.0, 0))
        remaining = started + self.window_seconds - self.clock()
        if count >= self.limit and remaining > 0:
            raise TooManyFailures(remaining)

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            started, count = self._windows.get(client, (now, 0))
            if now - started >= self.window_seconds:
                started, count = now, 0
            self._windows[client] = (started, count + 1)
            if len(self._windows) > self.SWEEP_AT:
                self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window_seconds}


class Sessions:
    """Signed, expiring session cookies with a random id per login and an in-process revocation list."""

    def __init__(self, token: str, lifetime_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.key = hmac.new(token.encode(), SESSION_KEY_LABEL, hashlib.sha256).digest()
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock
        self._revoked: dict[str, float] = {}

    def _sign(self, session_id: str, expires: int) -> str:
        return hmac.new(self.key, f"{session_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new session's cookie value: `<random id>.<expiry, Unix seconds>.<signature>`."""
        session_id = secrets.token_urlsafe(18)
        expires = int(self.clock() + self.lifetime_seconds)
        return f"{session_id}.{expires}.{self._sign(session_id, expires)}"

    def _parse(self, value: str) -> tuple[str, int] | None:
        """(id, expiry) of a cookie value whose signature holds, else None."""
        session_id, _, rest = value.partition(".")
        expires, _, signature = rest.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(signature, self._sign(session_id, int(expires))):
            return None
        return session_id, int(expires)

    def expiry(self, value: str) -> int | None:
        """When a valid (signed, unexpired, not revoked) cookie expires, in Unix seconds; None when it is not valid."""
        parsed = self._parse(value)
        if parsed is None or parsed[1] <= self.clock() or parsed[0] in self._revoked:
            return None
        return parsed[1]

    def revoke(self, value: str) -> None:
        """Refuse this cookie from now on (kept until it would have expired anyway)."""
        parsed = self._parse(value)
        if parsed is None:
            return
        now = self.clock()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revoked[parsed[0]] = parsed[1]


class Authenticator:
    """Decides whether one request's credentials satisfy the rule."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.sessions = Sessions(settings.token, settings.session_seconds) if settings.token is not None else None
        self.throttle = FailureThrottle(settings.max_failed_logins, settings.login_window_seconds)

    def token_matches(self, supplied: str, client: str) -> bool:
        """Whether `supplied` is the token; counts a miss against `client` (raises TooManyFailures when over)."""
        self.throttle.check(client)
        token = self.settings.token
        if token is not None and hmac.compare_digest(supplied.encode(), token.encode()):
            return True
        self.throttle.failed(client)
        return False

    def straight_from_loopback(self, scope: Scope, headers: Headers) -> bool:
        client = scope.get("client")
        return (
            _is_loopback(client[0] if client else None)
            and not any(name in headers for name in PROXY_HEADERS)
            and _host_name(headers.get("host", "")).lower() in LOOPBACK_HOSTS
        )

    def session_cookie(self, headers: Headers) -> str | None:
        cookie = SimpleCookie(headers.get("cookie", "")).get(SESSION_COOKIE)
        return cookie.value if cookie is not None else None

    def authenticate(self, scope: Scope, headers: Headers, client: str) -> tuple[str | None, str]:
        """(how the caller got in, or None) and, when refused, why. Raises TooManyFailures.

        A session cookie's expiry goes into `scope[SESSION_EXPIRES]`.
        """
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, supplied = authorization.partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(supplied.strip(), client):
                return VIA_TOKEN, ""
            return None, f"wrong token: {WHERE_THE_TOKEN_IS}"
        cookie = self.session_cookie(headers)
        expires = self.sessions.expiry(cookie) if cookie is not None and self.sessions is not None else None
        if expires is not None:
            scope[SESSION_EXPIRES] = expires
            return VIA_COOKIE, ""
        if self.settings.allow_loopback and self.straight_from_loopback(scope, headers):
            return VIA_LOOPBACK, ""
        if cookie is not None:
            return None, f"the session has expired or was logged out: log in again; {WHERE_THE_TOKEN_IS}"
        return None, f"no token: {WHERE_THE_TOKEN_IS}"


class AuthMiddleware:
    """Refuses cross-site requests (403) and unauthenticated ones (401) before any route runs.

    Pure ASGI, so streamed responses (server-sent events, uploads) pass through
    untouched. `POST /login` with a form field `token`, or any `GET` with
    `?token=`, sets the session cookie; `GET /login` serves the form;
    `POST /logout` ends the session. An unauthenticated browser asking for a
    page is sent to the form.
    """

    def __init__(self, app: ASGIApp, settings: AuthSettings | None = None) -> None:
        self.app = app
        self.authenticator = Authenticator(settings or AuthSettings.from_environment())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        origin = request_origin(scope, headers, self.authenticator.settings.trusted_proxies)
        reason = cross_site_reason(headers, origin.host)
        if reason is not None:
            log.warning("refused %s %s from %s: cross-site (%s)", scope["method"], scope["path"], origin.client, reason)
            await _json(send, 403, f"cross-site request refused ({reason})")
            return
        try:
            await self._route(scope, receive, send, headers, origin)
        except TooManyFailures as refused:
            log.warning("refused %s %s from %s: %s", scope["method"], scope["path"], origin.client, refused)
            await _json(send, 429, str(refused), {"retry-after": str(int(refused.retry_after) + 1)})

    async def _route(self, scope: Scope, receive: Receive, send: Send, headers: Headers, origin: Origin) -> None:
        path = scope["path"]
        if path == LOGIN_PATH:
            await self._login(scope, receive, send, origin)
            return
        if path == LOGOUT_PATH:
            await self._logout(scope, send, headers, origin)
            return
        link = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get(LINK_PARAMETER)
        if link is not None and scope["method"] == "GET":
            await self._login_link(scope, send, link, origin)
            return
        if path in PUBLIC_PATHS:
            scope["auth"] = self._public_auth(scope, headers, origin)
            await self.app(scope, receive, send)
            return
        via, why = self.authenticator.authenticate(scope, headers, origin.client)
        if via is None:
            log.info("refused %s %s from %s: %s", scope["method"], path, origin.client, why.split(":")[0])
            if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                await _redirect(send, LOGIN_PATH)
            else:
                await _json(send, 401, why, {"www-authenticate": "Bearer"})
            return
        scope["auth"] = via
        await self.app(scope, receive, send)

    def _public_auth(self, scope: Scope, headers: Headers, origin: Origin) -> str | None:
        """Who asks for a public path (details for the authenticated); never a refusal."""
        try:
            return self.authenticator.authenticate(scope, headers, origin.client)[0]
        except TooManyFailures:
            return None

    async def _login(self, scope: Scope, receive: Receive, send: Send, origin: Origin) -> None:
        if scope["method"] == "GET":
            await _send(send, 200, LOGIN_PAGE.format(message="").encode(), "text/html; charset=utf-8")
            return
        if scope["method"] != "POST":
            await _json(send, 405, "use GET /login for the form, POST /login to log in")
            return
        form = parse_qs((await _read_body(receive, MAX_LOGIN_BYTES)).decode(errors="replace"))
        await self._start_session(send, form.get("token", [""])[0].strip(), "/", origin)

    async def _login_link(self, scope: Scope, send: Send, supplied: str, origin: Origin) -> None:
        """`GET /path?token=...`: log in, then send the browser to the same page without the token in its URL."""
        query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != LINK_PARAMETER]
        target = scope["path"] + (f"?{urlencode(query)}" if query else "")
        await self._start_session(send, supplied, target, origin)

    async def _start_session(self, send: Send, supplied: str, target: str, origin: Origin) -> None:
        sessions = self.authenticator.sessions
        if sessions is None or not self.authenticator.token_matches(supplied, origin.client):
            log.info("failed login from %s", origin.client)
            page = LOGIN_PAGE.format(message='<p class="error">Wrong token.</p>')
            await _send(send, 401, page.encode(), "text/html; charset=utf-8")
            return
        cookie = self._cookie(sessions.issue(), int(sessions.lifetime_seconds), origin)
        log.info("login from %s", origin.client)
        # no-referrer: the next request must not carry the link's URL (with the token) as its Referer.
        await _redirect(send, target, {"set-cookie": cookie, "referrer-policy": "no-referrer"})

    async def _logout(self, scope: Scope, send: Send, headers: Headers, origin: Origin) -> None:
        if scope["method"] != "POST":
            await _json(send, 405, "use POST /logout (the dashboard's Log out button)")
            return
        cookie = self.authenticator.session_cookie(headers)
        if cookie is not None and self.authenticator.sessions is not None:
            self.authenticator.sessions.revoke(cookie)
        log.info("logout from %s", origin.client)
        await _redirect(send, LOGIN_PATH, {"set-cookie": self._cookie("", 0, origin)})

    def _cookie(self, value: str, max_age: int, origin: Origin) -> str:
        secure = "; Secure" if origin.scheme == "https" else ""
        return f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


async def _read_body(receive: Receive, limit: int) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit or not message.get("more_body", False):
            return body[:limit]


async def _send(send: Send, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, message: str, extra: dict[str, str] | None = None) -> None:
    await _send(send, status, json.dumps({"error": message}).encode(), "application/json", extra)


async def _redirect(send: Send, location: str, extra: dict[str, str] | None = None) -> None:
    await _send(send, 303, b"", "text/plain", {"location": location, **(extra or {})})


def forwarded_headers(scope: Scope, token: str | None) -> dict[str, str]:
    """Headers a proxy inside our apps adds when it passes an authenticated request on.

    The request goes on with our own bearer token (the caller proved itself
    here), and, unless the caller came straight from loopback, with a
    `Forwarded` header so the next hop does not mistake it for a loopback caller.
    """
    headers: dict[str, str] = {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if scope.get("auth") != VIA_LOOPBACK:
        client = scope.get("client")
        headers["forwarded"] = f'for="{client[0] if client else "unknown"}"'
    return headers


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in: queue autoscaler</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}
input,button{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}.error{{color:#b00020}}</style>
</head><body><h1>Queue autoscaler</h1>
<p>Enter the token (<code>PRODUCER_TOKEN</code>: <code>./manage.sh up</code> prints it with a login link
and keeps it in <code>.run/producer.token</code>).</p>{message}
<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button></form></body></html>
"""
