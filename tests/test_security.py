"""Nobody gets in without the token (loopback included), nothing cross-site gets in at all, no secret leaks.

The stack binds 0.0.0.0 and the tests reach it two ways: through 127.0.0.1
(a loopback client) and through this machine's own non-loopback interface
address (a remote client as far as the servers can tell; the traffic never
leaves the machine). `ENDPOINTS` x `CLIENTS` is the access matrix: every
route of both apps (checked against the apps' route tables) against every
kind of client, each cell asserted; the README's access table is generated
from it and checked to be the same.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pytest
from starlette.routing import Mount, Route

from common.config import JobType
from common.queues import declare_queues
from harness.broker import Broker, create_user, delete_user
from harness.processes import REPO, free_port
from harness.stack import Stack
from harness.waiting import wait_until
from producer.app import ROUTES as PRODUCER_ROUTES
from scaler.web import ROUTES as SCALER_ROUTES
from tests.support.reverse_proxy import NginxLikeProxy

TOKEN = "tok-" + secrets.token_hex(8)
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "pw-" + secrets.token_hex(8)
USER = "sec-" + secrets.token_hex(3)
CSV = b"n\n1\n2\n"
EVIL = "http://evil.example"
README = REPO / "README.md"


def own_address() -> str:
    """This machine's first non-loopback IPv4 address (connecting to it stays on this machine)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    pytest.skip("this machine has no non-loopback IPv4 address to play a remote client from")


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    create_user(broker, USER, PASSWORD)
    vhost = quote(broker.vhost, safe="")
    created = Stack(
        broker,
        tmp_path_factory.mktemp("security"),
        # No workers: the queue keeps exactly what the accepted uploads put there.
        {"sleep": {"handler": "sleep", "max_workers": 0}},
        tick_seconds=0.5,
        env={
            "PRODUCER_TOKEN": TOKEN,
            "PRODUCER_HOST": "0.0.0.0",
            "SCALER_HOST": "0.0.0.0",
            "RABBITMQ_URL": f"amqp://{USER}:{PASSWORD}@127.0.0.1:5672/{vhost}",
            "RABBITMQ_API_URL": f"http://{USER}:{PASSWORD}@127.0.0.1:15672/api",
            # The matrix sends dozens of wrong tokens from one address; the throttle has its own test.
            "AUTH_MAX_FAILED_LOGINS": "100000",
        },
    )
    created.start()
    with broker.channel() as channel:
        declare_queues(channel, JobType(name="sleep", queue=created.queue_of("sleep")))
    yield created
    created.stop()
    delete_user(USER)


@pytest.fixture(scope="module")
def remote(stack: Stack) -> dict[str, str]:
    address = own_address()
    return {"producer": f"http://{address}:{stack.producer_port}", "scaler": f"http://{address}:{stack.scaler_port}"}


def session_cookie(response: httpx.Response) -> str:
    """`name=value` of the session cookie a login response sets, after checking its attributes."""
    set_cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="):
        assert attribute in set_cookie
    assert TOKEN not in set_cookie, "the cookie never holds the token"
    return set_cookie.split(";", 1)[0]


@pytest.fixture(scope="module")
def cookie(stack: Stack, remote: dict[str, str]) -> str:
    """Log in to the dashboard from a remote address, like the login form does; returns the session cookie."""
    response = httpx.post(f"{remote['scaler']}/login", data={"token": TOKEN})
    assert response.status_code == 303 and response.headers["location"] == "/"
    return session_cookie(response)


# --- the access matrix --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    app: str
    method: str
    route: str  # the route's path as the app declares it
    path: str = ""  # the path requested (default: the route's)
    ok: int = 200  # the status for a client that is let in
    group: str = "reads"  # the README table's column
    body: str = ""  # "multipart" | "csv"

    @property
    def url_path(self) -> str:
        return self.path or self.route


UPLOADS, READS, WRITES, PUBLIC = "uploads", "reads", "writes", "health and login"
ENDPOINTS = [
    Endpoint("producer", "POST", "/upload", group=UPLOADS, body="multipart"),
    Endpoint("producer", "POST", "/submit/{job_type}", "/submit/sleep", group=UPLOADS, body="csv"),
    Endpoint("producer", "POST", "/submit/{rest:path}", "/submit/a/b", ok=400, group=UPLOADS),
    Endpoint("producer", "GET", "/uploads"),
    Endpoint("producer", "GET", "/uploads/{upload_id}", "/uploads/nope", ok=404),
    Endpoint("producer", "GET", "/uploads/{upload_id}/failed-rows.csv", "/uploads/nope/failed-rows.csv", ok=404),
    Endpoint("producer", "POST", "/uploads/{upload_id}/replay", "/uploads/nope/replay", ok=404, group=WRITES),
    Endpoint("producer", "POST", "/uploads/{upload_id}/cancel", "/uploads/nope/cancel", ok=404, group=WRITES),
    Endpoint("producer", "GET", "/job-types"),
    Endpoint("producer", "GET", "/metrics"),
    Endpoint("producer", "GET", "/livez", group=PUBLIC),
    Endpoint("producer", "GET", "/readyz", group=PUBLIC),
    Endpoint("producer", "GET", "/healthz", group=PUBLIC),
    Endpoint("scaler", "GET", "/"),
    Endpoint("scaler", "GET", "/static", "/static/app.js"),
    Endpoint("scaler", "GET", "/api/status"),
    Endpoint("scaler", "GET", "/api/history"),
    Endpoint("scaler", "GET", "/api/stream"),
    Endpoint("scaler", "GET", "/api/workers/{worker_id}/log", "/api/workers/nobody/log", ok=404),
    Endpoint("scaler", "GET", "/metrics"),
    Endpoint("scaler", "POST", "/api/job-types/{name}/drain", "/api/job-types/sleep/drain", group=WRITES),
    Endpoint("scaler", "POST", "/api/job-types/{name}/retry", "/api/job-types/sleep/retry", group=WRITES),
    Endpoint("scaler", "POST", "/api/job-types/{name}/pause", "/api/job-types/sleep/pause", group=WRITES),
    Endpoint("scaler", "POST", "/api/job-types/{name}/resume", "/api/job-types/sleep/resume", group=WRITES),
    Endpoint("scaler", "POST", "/api/upload", group=UPLOADS, body="multipart"),
    Endpoint("scaler", "GET", "/api/uploads"),
    Endpoint("scaler", "GET", "/api/uploads/{upload_id}", "/api/uploads/nope", ok=404),
    Endpoint("scaler", "GET", "/api/uploads/{upload_id}/failed-rows.csv", "/api/uploads/nope/failed-rows.csv", ok=404),
    Endpoint("scaler", "POST", "/api/uploads/{upload_id}/replay", "/api/uploads/nope/replay", ok=404, group=WRITES),
    Endpoint("scaler", "POST", "/api/uploads/{upload_id}/cancel", "/api/uploads/nope/cancel", ok=404, group=WRITES),
    Endpoint("scaler", "GET", "/healthz", group=PUBLIC),
    # Not routes: the middleware answers these itself (both apps have them; POST /logout is in the browser test).
    Endpoint("scaler", "GET", "/login", group=PUBLIC),
]
#: Paths the auth middleware serves in front of the routes, in both apps.
MIDDLEWARE_PATHS = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}


@dataclass(frozen=True)
class Client:
    name: str
    remote: bool
    headers: tuple[tuple[str, str], ...] = ()
    cookie: str = ""  # "login": the module's session cookie; other text: that cookie value
    refused: int | None = 401  # the status for a non-public endpoint; None: let in
    refused_public: int | None = None


FORGED_COOKIE = f"autoscaler_session=x.{int(time.time()) + 3600}.{'0' * 64}"
CLIENTS = [
    Client("loopback, no token", remote=False),
    Client("loopback, wrong token", remote=False, headers=(("Authorization", "Bearer wrong"),)),
    Client("loopback, token", remote=False, headers=tuple(BEARER.items()), refused=None),
    Client("loopback, login cookie", remote=False, cookie="login", refused=None),
    Client("loopback, forged cookie", remote=False, cookie=FORGED_COOKIE),
    Client("loopback, no token, X-Forwarded-For: 127.0.0.1", remote=False, headers=(("X-Forwarded-For", "127.0.0.1"),)),
    Client("remote, no token", remote=True),
    Client("remote, wrong token", remote=True, headers=(("Authorization", "Bearer " + TOKEN[:-1]),)),
    Client("remote, Basic auth with the token", remote=True, headers=(("Authorization", f"Basic {TOKEN}"),)),
    Client("remote, token", remote=True, headers=tuple(BEARER.items()), refused=None),
    Client("remote, login cookie", remote=True, cookie="login", refused=None),
    Client(
        "remote, token, Origin: evil.example",
        remote=True,
        headers=(*BEARER.items(), ("Origin", EVIL)),
        refused=403,
        refused_public=403,
    ),
    Client(
        "loopback, token, Sec-Fetch-Site: cross-site",
        remote=False,
        headers=(*BEARER.items(), ("Sec-Fetch-Site", "cross-site")),
        refused=403,
        refused_public=403,
    ),
    Client(
        "loopback, login cookie, Sec-Fetch-Site: same-site",
        remote=False,
        cookie="login",
        headers=(("Sec-Fetch-Site", "same-site"),),
        refused=403,
        refused_public=403,
    ),
]


def expected(endpoint: Endpoint, client: Client) -> int:
    refused = client.refused_public if endpoint.group == PUBLIC else client.refused
    return endpoint.ok if refused is None else refused


def send(stack: Stack, remote: dict[str, str], cookie: str, endpoint: Endpoint, client: Client) -> int:
    base = remote[endpoint.app] if client.remote else getattr(stack, f"{endpoint.app}_url")
    headers = dict(client.headers)
    if client.cookie:
        headers["Cookie"] = cookie if client.cookie == "login" else client.cookie
    request: dict = {}
    if endpoint.body == "multipart":
        request = {"files": {"file": ("rows.csv", CSV, "text/csv")}, "data": {"job_type": "sleep"}}
    elif endpoint.body == "csv":
        request = {"content": CSV}
        headers["Content-Type"] = "text/csv"
    url = base + endpoint.url_path
    with httpx.stream(endpoint.method, url, headers=headers, timeout=30, **request) as response:
        return response.status_code  # the stream endpoint never ends: the status is enough


@pytest.mark.parametrize("client", CLIENTS, ids=[client.name for client in CLIENTS])
def test_access_matrix(stack: Stack, remote: dict[str, str], cookie: str, broker: Broker, client: Client) -> None:
    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    outcomes = {f"{e.app} {e.method} {e.url_path}": send(stack, remote, cookie, e, client) for e in ENDPOINTS}
    wanted = {f"{e.app} {e.method} {e.url_path}": expected(e, client) for e in ENDPOINTS}
    assert outcomes == wanted
    accepted_uploads = sum(1 for e in ENDPOINTS if e.body and expected(e, client) == 200)
    assert broker.queue_depth(queue) - before == 2 * accepted_uploads, "refused uploads publish nothing"


def declared_routes(app: str, routes: list) -> set[tuple[str, str, str]]:
    """(app, method, path) of every route an app declares (a static files mount counts as one GET)."""
    declared = set()
    for route in routes:
        if isinstance(route, Mount):
            declared.add((app, "GET", route.path))
        elif isinstance(route, Route):
            declared |= {(app, method, route.path) for method in route.methods or {"GET"} if method != "HEAD"}
    return declared


def test_the_matrix_covers_every_route_of_both_apps() -> None:
    """A route added to either app without a row here fails this test (and so the README's table with it)."""
    code = declared_routes("producer", PRODUCER_ROUTES) | declared_routes("scaler", SCALER_ROUTES)
    matrix = {(e.app, e.method, e.route) for e in ENDPOINTS if (e.method, e.route) not in MIDDLEWARE_PATHS}
    assert matrix == code, f"in the code, not the matrix: {code - matrix}; in the matrix only: {matrix - code}"


def readme_table() -> str:
    """The README's access table: per client, whether each group of endpoints lets it in, else the status."""
    groups = [UPLOADS, READS, WRITES, PUBLIC]
    members = {group: [e for e in ENDPOINTS if e.group == group] for group in groups}
    lines = ["| client | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for client in CLIENTS:
        cells = []
        for group in groups:
            answers = {"let in" if expected(e, client) == e.ok else str(expected(e, client)) for e in members[group]}
            assert len(answers) == 1, f"{client.name}: the {group} endpoints answer differently: {answers}"
            cells.append(answers.pop())
        lines.append(f"| {client.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_readme_shows_the_asserted_access_table() -> None:
    """The README's table is generated from the matrix above (print it with -s) and must be the same."""
    table = readme_table()
    print(table)
    assert table in README.read_text(), "README.md's access table differs from the matrix; paste the printed one"


def test_every_refusal_says_where_the_token_is(stack: Stack) -> None:
    for url in (f"{stack.producer_url}/uploads", f"{stack.scaler_url}/api/status"):
        refused = httpx.get(url)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        message = refused.json()["error"]
        assert "Authorization: Bearer <token>" in message and ".run/producer.token" in message, message


# --- the pieces of the rule -------------------------------------------------------------------------


def test_browser_without_session_is_sent_to_the_login_form(stack: Stack, remote: dict[str, str]) -> None:
    page = httpx.get(f"{remote['scaler']}/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 303 and page.headers["location"] == "/login"
    form = httpx.get(f"{remote['scaler']}/login")
    assert form.status_code == 200 and 'name="token"' in form.text and 'type="password"' in form.text
    wrong = httpx.post(f"{remote['scaler']}/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


def test_dashboard_upload_from_a_remote_browser_goes_through_with_the_cookie(
    stack: Stack, remote: dict[str, str], cookie: str, broker: Broker
) -> None:
    """The pass-through forwards a logged-in caller with the scaler's token; the producer counts it as remote."""
    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    response = httpx.post(
        f"{remote['scaler']}/api/upload",
        files={"file": ("x.csv", CSV)},
        data={"job_type": "sleep"},
        headers={"Cookie": cookie, "Origin": remote["scaler"], "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 200 and response.json()["rows"] == 2
    assert broker.queue_depth(queue) == before + 2


def test_a_reverse_proxy_on_this_host_does_not_let_its_callers_in(stack: Stack, broker: Broker) -> None:
    """nginx's default `proxy_pass http://127.0.0.1:PORT;` in front of the producer and the dashboard: its callers
    arrive from 127.0.0.1 with a loopback `Host` and no forwarding header, and still need the token."""
    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    address = own_address()
    producer = NginxLikeProxy(f"127.0.0.1:{stack.producer_port}", host=address)
    dashboard = NginxLikeProxy(f"127.0.0.1:{stack.scaler_port}", host=address)
    try:
        csv = {"content": CSV, "headers": {"Content-Type": "text/csv"}}
        assert httpx.post(f"{producer.url}/submit/sleep", **csv).status_code == 401
        assert httpx.post(f"{producer.url}/uploads/x/cancel").status_code == 401
        assert httpx.get(f"{dashboard.url}/api/status").status_code == 401
        assert httpx.post(f"{dashboard.url}/api/job-types/sleep/pause").status_code == 401
        assert httpx.get(f"{dashboard.url}/api/workers/x/log").status_code == 401
        page = httpx.get(f"{dashboard.url}/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert broker.queue_depth(queue) == before
        # With the token, the same proxy works (it passes Authorization on, as nginx does).
        sent = httpx.post(f"{producer.url}/submit/sleep", content=CSV, headers={"Content-Type": "text/csv", **BEARER})
        assert sent.status_code == 200 and broker.queue_depth(queue) == before + 2
        assert httpx.get(f"{dashboard.url}/api/status", headers=BEARER).status_code == 200
    finally:
        producer.close()
        dashboard.close()


def test_login_link_sets_a_session_and_drops_the_token_from_the_url(stack: Stack) -> None:
    """`./manage.sh up` prints `http://127.0.0.1:8080/?token=...`: a 303 to the same page without the token."""
    link = httpx.get(stack.login_link())
    assert link.status_code == 303 and link.headers["location"] == "/"
    assert link.headers["referrer-policy"] == "no-referrer"
    cookie = session_cookie(link)
    deep = httpx.get(f"{stack.scaler_url}/api/history?token={TOKEN}&x=1")
    assert deep.status_code == 303 and deep.headers["location"] == "/api/history?x=1"
    assert httpx.get(f"{stack.scaler_url}/api/status", headers={"Cookie": cookie}).status_code == 200
    assert session_cookie(deep) != cookie, "every login draws its own session id"
    wrong = httpx.get(f"{stack.scaler_url}/?token=wrong")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


def test_cross_site_form_post_shaped_like_a_browser_is_refused(stack: Stack, broker: Broker) -> None:
    """Exactly what Chromium sends for an auto-submitting multipart form on another site, to the loopback producer."""
    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    boundary = "----WebKitFormBoundaryq8Jh2nTmVZ0fPz1a"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="rows.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\nn\n1\n2\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="job_type"\r\n\r\nsleep\r\n--{boundary}--\r\n'
    ).encode()
    headers = {
        "Host": f"127.0.0.1:{stack.producer_port}",
        "Connection": "keep-alive",
        "Cache-Control": "max-age=0",
        "Origin": EVIL,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Upgrade-Insecure-Requests": "1",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-User": "?1",
        "Sec-Fetch-Dest": "document",
        "Referer": f"{EVIL}/",
        "Accept-Encoding": "gzip, deflate, br, zstd",
        "Accept-Language": "en-US,en;q=0.9",
    }
    response = httpx.post(f"{stack.producer_url}/upload", content=body, headers=headers)
    assert response.status_code == 403 and "cross-site" in response.json()["error"]
    # The same form with enctype="text/plain" (also sent without a preflight), even from an old browser
    # that sends neither Origin nor Sec-Fetch-Site, is not a CSV body.
    plain = httpx.post(
        f"{stack.producer_url}/submit/sleep", content=b"n\n1\n2\n", headers={"Content-Type": "text/plain", **BEARER}
    )
    assert plain.status_code == 415
    form = httpx.post(f"{stack.producer_url}/submit/sleep", data={"n\n1\n2\n": ""}, headers=BEARER)
    assert form.status_code == 415
    assert broker.queue_depth(queue) == before
    assert "cross-site" in stack.producer.log()


@pytest.mark.browser
def test_chromium_cross_site_upload_from_a_web_page_is_refused(stack: Stack, broker: Broker) -> None:
    """A page on another site makes the operator's Chromium post rows to the loopback producer (no-cors fetch)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from playwright.sync_api import sync_playwright

    target = f"http://127.0.0.1:{stack.producer_port}/upload"
    page_html = f"""<!doctype html><script>
      const form = new FormData();
      form.append("file", new Blob(["n\\n1\\n2\\n"], {{type: "text/csv"}}), "rows.csv");
      form.append("job_type", "sleep");
      fetch("{target}", {{method: "POST", mode: "no-cors", body: form}})
        .then(() => document.title = "sent", () => document.title = "failed");
    </script>""".encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page_html)))
            self.end_headers()
            self.wfile.write(page_html)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Attacker)
    Thread(target=server.serve_forever, daemon=True).start()
    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    refusals = stack.producer.log().count("cross-site")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page()
            # "localhost" and "127.0.0.1" are different sites, as an attacker's domain would be.
            page.goto(f"http://localhost:{server.server_address[1]}/")
            page.wait_for_function("document.title === 'sent' || document.title === 'failed'", timeout=15_000)
            browser.close()
    finally:
        server.shutdown()
    wait_until(
        lambda: stack.producer.log().count("cross-site") > refusals, timeout=10, what="the producer to log the refusal"
    )
    assert broker.queue_depth(queue) == before


@pytest.mark.browser
def test_remote_operator_logs_in_and_uploads_through_the_dashboard(
    stack: Stack, remote: dict[str, str], broker: Broker, tmp_path
) -> None:
    """Chromium on a remote address: the dashboard sends it to the login form; after it, the page is live."""
    from playwright.sync_api import sync_playwright

    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    rows = tmp_path / "rows.csv"
    rows.write_bytes(CSV)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page()
        page.goto(f"{remote['scaler']}/")
        assert page.url == f"{remote['scaler']}/login"
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        assert "Wrong token" in page.content()
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{remote['scaler']}/")
        page.wait_for_selector("#cards article.card", timeout=15_000)
        cookie = next(c for c in page.context.cookies() if c["name"] == "autoscaler_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.select_option("#upload-type", "sleep")
        page.set_input_files("#upload-file", str(rows))
        page.click("#upload-button")
        page.wait_for_function("document.getElementById('upload-answer').textContent.startsWith('Queued 2 rows')")
        browser.close()
    assert broker.queue_depth(queue) == before + 2


def test_no_secret_in_logs_status_metrics_or_page(stack: Stack) -> None:
    stack.upload(b"n\n" + b"".join(b"%d\n" % i for i in range(20)), "sleep").raise_for_status()
    httpx.get(stack.login_link())  # the token in a URL must not reach a log either
    places = {
        "status API": stack.get(f"{stack.scaler_url}/api/status").text,
        "scaler metrics": stack.get(f"{stack.scaler_url}/metrics").text,
        "producer metrics": stack.get(f"{stack.producer_url}/metrics").text,
        "producer health": stack.get(f"{stack.producer_url}/healthz").text,
        "scaler health": stack.get(f"{stack.scaler_url}/healthz").text,
        "job types": stack.get(f"{stack.producer_url}/job-types").text,
        "dashboard": stack.get(f"{stack.scaler_url}/").text + stack.get(f"{stack.scaler_url}/static/app.js").text,
        "login page": httpx.get(f"{stack.scaler_url}/login").text,
        "producer log": stack.producer.log(),
        "scaler log": stack.scaler.log(),
    }
    assert "***" in places["scaler log"], "the broker URL is logged, redacted"
    for place, text in places.items():
        assert TOKEN not in text, f"the producer token appears in the {place}"
        assert PASSWORD not in text, f"the broker password appears in the {place}"


@pytest.mark.parametrize(
    "path", ["/", "/api/status", "/api/history", "/api/stream", "/metrics", "/healthz", "/api/workers/x/log"]
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_scaler_endpoints_change_nothing(stack: Stack, path: str, method: str) -> None:
    assert httpx.request(method, f"{stack.scaler_url}{path}", headers=BEARER).status_code == 405


# --- defaults ------------------------------------------------------------------------------------------


def listening_addresses(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_services_bind_loopback_by_default(broker: Broker, tmp_path) -> None:
    default = Stack(broker, tmp_path, {"sleep": {"max_workers": 0}}).start()
    try:
        assert listening_addresses(default.producer.pid) == {"127.0.0.1"}
        assert listening_addresses(default.scaler.pid) == {"127.0.0.1"}
        assert "token required from every client" in default.producer.log()
    finally:
        default.stop()


def test_placeholder_token_or_no_way_in_refuses_to_start(broker: Broker) -> None:
    """The example manifests' placeholder is never a usable token; no token at all is refused too (nobody could
    get in), and so is a trusted-proxies entry that is not an address."""
    for module in ("producer", "scaler"):
        for env, message in (
            ({"PRODUCER_TOKEN": "PLACEHOLDER-producer-token"}, "placeholder"),
            ({"PRODUCER_TOKEN": ""}, "PRODUCER_TOKEN is not set"),
            ({"PRODUCER_TOKEN": "t", "AUTH_TRUSTED_PROXIES": "10.0.0.1, nginx"}, "'nginx' is not an IP address"),
        ):
            result = subprocess.run(
                [sys.executable, "-m", module],
                cwd=REPO,
                env={
                    **os.environ,
                    **broker.env(),
                    "PRODUCER_PORT": str(free_port()),
                    "SCALER_PORT": str(free_port()),
                    **env,
                },
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode != 0 and message in result.stderr, (module, env, result.stderr[-500:])


# --- the settings around the rule: loopback opt-in, trusted proxies, throttle, public health ---------------


@pytest.fixture(scope="module")
def edge(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A producer with every auth setting turned, whose broker is unreachable (so its health has errors to hide)."""
    closed_port = free_port()
    created = Stack(
        broker,
        tmp_path_factory.mktemp("edge"),
        {"sleep": {"max_workers": 0}},
        env={
            "PRODUCER_TOKEN": TOKEN,
            "RABBITMQ_URL": f"amqp://{USER}:{PASSWORD}@127.0.0.1:{closed_port}/%2F",
            "AUTH_ALLOW_LOOPBACK": "true",
            "AUTH_TRUSTED_PROXIES": "127.0.0.1",
            "AUTH_MAX_FAILED_LOGINS": "3",
            "PRODUCER_HEALTH_INTERVAL_SECONDS": "0.2",
        },
    )
    created.start_producer()
    yield created
    created.stop()


def test_loopback_opt_in_is_strict_about_proxies_and_host(edge: Stack) -> None:
    """With AUTH_ALLOW_LOOPBACK a loopback client needs no token, unless anything says a proxy is involved."""
    url = f"{edge.producer_url}/job-types"
    assert httpx.get(url).status_code == 200
    for header, value in (
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9"),
        ("Via", "1.1 nginx"),
        ("X-Forwarded-Proto", "https"),
        ("X-Client-IP", "203.0.113.9"),
        ("True-Client-IP", "203.0.113.9"),
        ("X-Real-IP", "203.0.113.9"),
        ("Host", "evil.example"),  # DNS rebinding
    ):
        assert httpx.get(url, headers={header: value}).status_code == 401, header


def test_forwarded_headers_count_only_from_a_trusted_proxy(stack: Stack, edge: Stack) -> None:
    """Behind a trusted proxy: `Secure` on the cookie for https, the forwarded host for the same-origin check;
    the same headers from anyone else change nothing."""
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    trusted = httpx.post(f"{edge.producer_url}/login", data={"token": TOKEN}, headers=https)
    assert "; Secure" in trusted.headers["set-cookie"]
    forwarded = httpx.post(
        f"{edge.producer_url}/login", data={"token": TOKEN}, headers={"Forwarded": 'for="[2001:db8::1]";proto=https'}
    )
    assert "; Secure" in forwarded.headers["set-cookie"]
    untrusted = httpx.post(f"{stack.producer_url}/login", data={"token": TOKEN}, headers=https)
    assert "Secure" not in untrusted.headers["set-cookie"]

    # A proxy that rewrites Host to its upstream; an old browser that sends Origin but no Sec-Fetch-Site.
    browser = {"Origin": "https://dashboard.example", "X-Forwarded-Host": "dashboard.example", **BEARER}
    assert httpx.get(f"{edge.producer_url}/job-types", headers=browser).status_code == 200
    assert httpx.get(f"{stack.producer_url}/job-types", headers=browser).status_code == 403
    # A current browser says same-origin itself, whatever Host the proxy sends.
    same = {"Origin": "https://dashboard.example", "Sec-Fetch-Site": "same-origin", **BEARER}
    assert httpx.get(f"{stack.producer_url}/job-types", headers=same).status_code == 200


def test_wrong_tokens_are_throttled_per_client(edge: Stack) -> None:
    """After AUTH_MAX_FAILED_LOGINS (3) wrong tokens a client gets 429, even for the right one; others do not."""
    url = f"{edge.producer_url}/job-types"
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    session = session_cookie(httpx.post(f"{edge.producer_url}/login", data={"token": TOKEN}, headers=attacker))
    for attempt in range(3):
        assert httpx.get(url, headers={**attacker, "Authorization": f"Bearer guess{attempt}"}).status_code == 401
    locked = httpx.post(f"{edge.producer_url}/login", data={"token": TOKEN}, headers=attacker)
    assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 61
    assert httpx.get(url, headers={**attacker, **BEARER}).status_code == 429
    assert httpx.get(url, headers={**attacker, "Cookie": session}).status_code == 200, "a session keeps working"
    assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.67", **BEARER}).status_code == 200
    assert "too many wrong tokens" in edge.producer.log()


def test_public_health_says_which_part_and_nothing_more(edge: Stack) -> None:
    """The broker is unreachable: without the token, only `failing`; the error (host, user) needs the token."""
    wait_until(
        lambda: httpx.get(f"{edge.producer_url}/readyz", headers=BEARER).json()["broker"]["error"] != "not checked yet",
        timeout=20,
        what="a failed broker check",
    )
    remote = {"X-Forwarded-For": "203.0.113.5"}  # not loopback: AUTH_ALLOW_LOOPBACK must not reveal details
    ready = httpx.get(f"{edge.producer_url}/readyz", headers=remote)
    assert ready.status_code == 503 and ready.json() == {"status": "not ready", "broker": "failing"}
    health = httpx.get(f"{edge.producer_url}/healthz", headers=remote).json()
    assert health["status"] == "ok" and health["broker"] == "failing"
    assert {value for name, value in health.items() if name != "status"} <= {"ok", "failing"}
    detailed = httpx.get(f"{edge.producer_url}/readyz", headers=BEARER).json()
    assert detailed["broker"]["reachable"] is False and detailed["broker"]["error"]
    for public in (ready.text, httpx.get(f"{edge.producer_url}/healthz", headers=remote).text):
        assert USER not in public and "127.0.0.1" not in public and "Error" not in public


# --- sessions in a real browser --------------------------------------------------------------------------


@pytest.mark.browser
def test_login_link_session_expiry_and_logout_in_chromium(broker: Broker, tmp_path: Path) -> None:
    """The link `./manage.sh up` prints logs Chromium in and leaves no token in the address bar; Log out ends the
    session on the server too; a session ends by itself after AUTH_SESSION_SECONDS."""
    from playwright.sync_api import sync_playwright

    lifetime = 4
    dashboard = Stack(broker, tmp_path, {"sleep": {"max_workers": 0}}, env={"AUTH_SESSION_SECONDS": str(lifetime)})
    dashboard.start_scaler()
    status_url = f"{dashboard.scaler_url}/api/status"

    def session(page) -> str:
        found = next(c for c in page.context.cookies() if c["name"] == "autoscaler_session")
        assert found["httpOnly"] and found["sameSite"] == "Strict" and not found["secure"]
        assert found["expires"] <= time.time() + lifetime + 1
        return f"autoscaler_session={found['value']}"

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page()
            page.goto(dashboard.login_link())
            assert page.url == f"{dashboard.scaler_url}/", "the token is gone from the address bar"
            page.wait_for_selector("#cards article.card", timeout=15_000)
            first = session(page)
            assert httpx.get(status_url, headers={"Cookie": first}).status_code == 200

            page.click("#logout")
            page.wait_for_url(f"{dashboard.scaler_url}/login")
            assert not [c for c in page.context.cookies() if c["name"] == "autoscaler_session"]
            assert httpx.get(status_url, headers={"Cookie": first}).status_code == 401, "revoked on the server"
            page.goto(f"{dashboard.scaler_url}/")
            assert page.url == f"{dashboard.scaler_url}/login"

            page.goto(dashboard.login_link())
            page.wait_for_selector("#cards article.card", timeout=15_000)
            second = session(page)
            assert second != first
            wait_until(
                lambda: httpx.get(status_url, headers={"Cookie": second}).status_code == 401,
                timeout=lifetime + 5,
                what="the session to expire on the server",
            )
            expired = httpx.get(status_url, headers={"Cookie": second}).json()["error"]
            assert "expired" in expired
            # The open page notices by itself: its live stream ends with the session, its next poll gets 401.
            page.wait_for_url(f"{dashboard.scaler_url}/login", timeout=15_000)
            browser.close()
    finally:
        dashboard.stop()


# --- local files -----------------------------------------------------------------------------------------


def test_manage_sh_keeps_run_private(tmp_path: Path) -> None:
    """`.run/` 0700, the token and every file made after it (uploads.db, sales.db, logs) 0600, old files too."""
    run = tmp_path / ".run"
    run.mkdir(mode=0o755)
    (run / "uploads.db").write_bytes(b"")
    (run / "uploads.db").chmod(0o644)
    script = f"""
        source {REPO / "manage.sh"}
        RUN={run}
        unset PRODUCER_TOKEN
        ensure_token 2>/dev/null
        python3 -c 'open("{run}/sales.db", "w")'
        echo "$PRODUCER_TOKEN"
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    token = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token) and (run / "producer.token").read_text() == token
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (run, *run.iterdir())}
    assert modes == {
        ".run": "0o700",
        "logs": "0o700",
        "producer.token": "0o600",
        "uploads.db": "0o600",
        "sales.db": "0o600",
    }


def test_manage_sh_up_prints_the_token_and_the_login_link(tmp_path: Path) -> None:
    """`up`'s last lines (its installs and starts stubbed out): the token, the link, a curl line that sends it."""
    token = secrets.token_hex(32)
    (tmp_path / "producer.token").write_text(token)
    script = f"""
        source {REPO / "manage.sh"}
        RUN={tmp_path} SCALER_ADDR=127.0.0.1:8080 PRODUCER_ADDR=127.0.0.1:8000 PRODUCER_TOKEN={token}
        ensure_venv() {{ :; }}; private_run_dir() {{ :; }}; ensure_rabbitmq() {{ :; }}; start_service() {{ :; }}
        cmd_up
    """
    printed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"http://127.0.0.1:8080/?token={token}" in printed
    assert f"token:      {token}   (.run/producer.token" in printed
    assert 'curl -H "Authorization: Bearer $(cat .run/producer.token)" -F file=@data.csv' in printed
