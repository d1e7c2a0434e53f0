"""Who may talk to the producer and the dashboard: one rule, one Starlette middleware for both apps.

The rule, like RabbitMQ's `guest` user: a request straight from loopback needs
no credentials while `AUTH_ALLOW_LOOPBACK` is true (the local default, so
`curl -F file=@data.csv http://localhost:8000/upload` keeps working on a
developer's machine); every other request carries `Authorization: Bearer
<PRODUCER_TOKEN>` or the dashboard's session cookie (set by `POST /login`,
`HttpOnly`, `SameSite=Strict`), else 401. Kubernetes manifests turn the
loopback exemption off.

"Straight from loopback" is strict on purpose. A request that carries any
forwarding header (`Forwarded`, `X-Forwarded-For`, ...) came through a proxy
(ours or an nginx on the same host), so its loopback peer address says nothing
about the caller; and a request whose `Host` is not a loopback name is a DNS
rebinding attempt. Neither gets the exemption. The apps run uvicorn without
proxy-header rewriting, so the peer address is the socket's.

Cross-site requests are refused everywhere (403) whatever their credentials:
a browser marks them with `Sec-Fetch-Site: cross-site|same-site` or an
`Origin` whose host is not the request's own. A web page can therefore not
post rows, pause a type or read logs through an operator's browser.

Only the health probes and the login form are public; every other path,
`/metrics` and static files included, follows the rule.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobtypes.env import env_flag, env_str

log = logging.getLogger(__name__)

# ASGI's types, spelled out so that this module needs no web framework (workers import jobtypes too).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = dict[str, str]

SESSION_COOKIE = "autoscaler_session"
PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/login"})
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
CROSS_SITE = frozenset({"cross-site", "same-site"})
#: Placeholder secrets shipped in example manifests start with this; they are never accepted.
PLACEHOLDER_PREFIX = "PLACEHOLDER"
#: How the middleware authenticated a request; read it from `request.scope["auth"]`.
VIA_LOOPBACK, VIA_TOKEN, VIA_COOKIE = "loopback", "token", "cookie"
MAX_LOGIN_BYTES = 4096


@dataclass(frozen=True)
class AuthSettings:
    """`PRODUCER_TOKEN` (none: only loopback clients get in) and `AUTH_ALLOW_LOOPBACK` (default true)."""

    token: str | None
    allow_loopback: bool = True

    @classmethod
    def from_environment(cls) -> AuthSettings:
        token = env_str("PRODUCER_TOKEN", None)
        if token is not None and token.startswith(PLACEHOLDER_PREFIX):
            raise SystemExit(
                "PRODUCER_TOKEN holds the placeholder of the example manifests; "
                "generate a real one (./manage.sh k8s-up does) before deploying"
            )
        allow_loopback = env_flag("AUTH_ALLOW_LOOPBACK", cls.allow_loopback)
        if token is None and not allow_loopback:
            raise SystemExit("AUTH_ALLOW_LOOPBACK=false needs a PRODUCER_TOKEN: without one nobody could get in")
        return cls(token=token, allow_loopback=allow_loopback)

    def session_value(self) -> str | None:
        """The cookie value a login sets: derived from the token, so the cookie never holds the token itself."""
        if self.token is None:
            return None
        return hmac.new(self.token.encode(), b"dashboard-session", hashlib.sha256).hexdigest()


def describe_rule(settings: AuthSettings) -> str:
    """One line for the startup log: who gets in (never the token itself)."""
    if settings.token is None:
        return "no PRODUCER_TOKEN set: only loopback clients get in"
    if settings.allow_loopback:
        return "token required, except from loopback (AUTH_ALLOW_LOOPBACK)"
    return "token required from every client"


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name part of a Host header value (`[::1]:8000` -> `[::1]`, `localhost:80` -> `localhost`)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_headers(scope: Scope) -> Headers:
    """The request's headers by lower-case name (a repeated header keeps its last value)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def cross_site_reason(headers: Headers) -> str | None:
    """Why a browser-made request comes from another site, or None when it does not."""
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site in CROSS_SITE:
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        return f"Origin {origin[:100]!r} is not this server"
    return None


class Authenticator:
    """Decides whether one request's credentials satisfy the rule."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.session = settings.session_value()

    def token_matches(self, supplied: str) -> bool:
        return self.settings.token is not None and hmac.compare_digest(supplied.encode(), self.settings.token.encode())

    def straight_from_loopback(self, scope: Scope, headers: Headers) -> bool:
        client = scope.get("client")
        return (
            _is_loopback(client[0] if client else None)
            and not any(name in headers for name in FORWARDING_HEADERS)
            and _host_name(headers.get("host", "")).lower() in LOOPBACK_HOSTS
        )

    def authenticate(self, scope: Scope, headers: Headers) -> tuple[str | None, str]:
        """(how the caller got in, or None) and, when refused, why."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, supplied = authorization.partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(supplied.strip()):
                return VIA_TOKEN, ""
            return None, "wrong token: send 'Authorization: Bearer <PRODUCER_TOKEN>'"
        cookie = SimpleCookie(headers.get("cookie", "")).get(SESSION_COOKIE)
        if cookie is not None and self.session is not None and hmac.compare_digest(cookie.value, self.session):
            return VIA_COOKIE, ""
        if self.settings.allow_loopback and self.straight_from_loopback(scope, headers):
            return VIA_LOOPBACK, ""
        return None, "missing token: send 'Authorization: Bearer <PRODUCER_TOKEN>' (or log in at /login)"


class AuthMiddleware:
    """Refuses cross-site requests (403) and unauthenticated ones (401) before any route runs.

    Pure ASGI, so streamed responses (server-sent events, uploads) pass through
    untouched. `POST /login` with a form field `token` sets the session cookie;
    `GET /login` serves the form. An unauthenticated browser asking for a page
    is sent to the form.
    """

    def __init__(self, app: ASGIApp, settings: AuthSettings | None = None) -> None:
        self.app = app
        self.authenticator = Authenticator(settings or AuthSettings.from_environment())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        reason = cross_site_reason(headers)
        if reason is not None:
            log.warning("refused %s %s from %s: cross-site (%s)", scope["method"], scope["path"], _peer(scope), reason)
            await _json(send, 403, f"cross-site request refused ({reason})")
            return
        path = scope["path"]
        if path == "/login":
            await self._login(scope, receive, send)
            return
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        via, why = self.authenticator.authenticate(scope, headers)
        if via is None:
            log.info("refused %s %s from %s: %s", scope["method"], scope["path"], _peer(scope), why.split(":")[0])
            if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                await _redirect(send, "/login")
            else:
                await _json(send, 401, why, {"www-authenticate": "Bearer"})
            return
        scope["auth"] = via
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            await _send(send, 200, LOGIN_PAGE.format(message="").encode(), "text/html; charset=utf-8")
            return
        if scope["method"] != "POST":
            await _json(send, 405, "use GET /login for the form, POST /login to log in")
            return
        form = parse_qs((await _read_body(receive, MAX_LOGIN_BYTES)).decode(errors="replace"))
        supplied = form.get("token", [""])[0].strip()
        if not self.authenticator.token_matches(supplied):
            page = LOGIN_PAGE.format(message='<p class="error">Wrong token.</p>')
            await _send(send, 401, page.encode(), "text/html; charset=utf-8")
            return
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{SESSION_COOKIE}={self.authenticator.session}; Path=/; HttpOnly; SameSite=Strict{secure}"
        await _redirect(send, "/", {"set-cookie": cookie})


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


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
        headers["forwarded"] = f'for="{_peer(scope)}"'
    return headers


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in: queue autoscaler</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}
input,button{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}.error{{color:#b00020}}</style>
</head><body><h1>Queue autoscaler</h1>
<p>Enter the token (<code>PRODUCER_TOKEN</code>; <code>./manage.sh up</code> prints it).</p>{message}
<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button></form></body></html>
"""
