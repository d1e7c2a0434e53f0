"""Nobody gets in without the token (loopback aside), nothing cross-site gets in at all, no secret leaks.

The stack binds 0.0.0.0 and the tests reach it two ways: through 127.0.0.1
(a loopback client) and through this machine's own non-loopback interface
address (a remote client as far as the servers can tell; the traffic never
leaves the machine). `ACCESS` is the table the README shows: every endpoint
of both apps against every kind of client, each cell asserted.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import psutil
import pytest

from jobtypes.config import JobType
from jobtypes.queues import declare_queues
from tests.support.broker import Broker, create_user, delete_user
from tests.support.processes import REPO, free_port
from tests.support.stack import Stack
from tests.support.waiting import wait_until

TOKEN = "tok-" + secrets.token_hex(8)
PASSWORD = "pw-" + secrets.token_hex(8)
USER = "sec-" + secrets.token_hex(3)
CSV = b"n\n1\n2\n"
EVIL = "http://evil.example"


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


@pytest.fixture(scope="module")
def cookie(stack: Stack, remote: dict[str, str]) -> str:
    """Log in to the dashboard from a remote address, like the login form does; returns the session cookie."""
    response = httpx.post(f"{remote['scaler']}/login", data={"token": TOKEN})
    assert response.status_code == 303 and response.headers["location"] == "/"
    set_cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in set_cookie
    assert TOKEN not in set_cookie, "the cookie holds a value derived from the token, not the token"
    return set_cookie.split(";", 1)[0]


# --- the access table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    app: str
    method: str
    path: str
    ok: int = 200
    public: bool = False
    body: str = ""  # "multipart" | "csv"


ENDPOINTS = [
    Endpoint("producer", "POST", "/upload", body="multipart"),
    Endpoint("producer", "POST", "/submit/sleep", body="csv"),
    Endpoint("producer", "GET", "/job-types"),
    Endpoint("producer", "GET", "/metrics"),
    Endpoint("producer", "GET", "/livez", public=True),
    Endpoint("producer", "GET", "/readyz", public=True),
    Endpoint("producer", "GET", "/healthz", public=True),
    Endpoint("scaler", "GET", "/"),
    Endpoint("scaler", "GET", "/static/app.js"),
    Endpoint("scaler", "GET", "/api/status"),
    Endpoint("scaler", "GET", "/api/history"),
    Endpoint("scaler", "GET", "/api/stream"),
    Endpoint("scaler", "GET", "/api/workers/nobody/log", ok=404),
    Endpoint("scaler", "GET", "/metrics"),
    Endpoint("scaler", "POST", "/api/upload", body="multipart"),
    Endpoint("scaler", "GET", "/healthz", public=True),
    Endpoint("scaler", "GET", "/login", public=True),
]


@dataclass(frozen=True)
class Client:
    name: str
    remote: bool
    headers: tuple[tuple[str, str], ...] = ()
    cookie: bool = False
    refused: int | None = 401  # the status for a non-public endpoint; None: let in
    refused_public: int | None = None


CLIENTS = [
    Client("loopback, no token", remote=False, refused=None),
    Client("loopback, wrong token", remote=False, headers=(("Authorization", "Bearer wrong"),)),
    Client("loopback, X-Forwarded-For (behind a proxy)", remote=False, headers=(("X-Forwarded-For", "203.0.113.9"),)),
    Client("loopback, Host: evil.example (DNS rebinding)", remote=False, headers=(("Host", "evil.example"),)),
    Client("remote, no token", remote=True),
    Client("remote, wrong token", remote=True, headers=(("Authorization", "Bearer " + TOKEN[:-1]),)),
    Client("remote, Basic auth with the token", remote=True, headers=(("Authorization", f"Basic {TOKEN}"),)),
    Client("remote, token", remote=True, headers=(("Authorization", f"Bearer {TOKEN}"),), refused=None),
    Client("remote, login cookie", remote=True, cookie=True, refused=None),
    Client(
        "remote, token, Origin: evil.example",
        remote=True,
        headers=(("Authorization", f"Bearer {TOKEN}"), ("Origin", EVIL)),
        refused=403,
        refused_public=403,
    ),
    Client(
        "loopback, Sec-Fetch-Site: cross-site",
        remote=False,
        headers=(("Sec-Fetch-Site", "cross-site"),),
        refused=403,
        refused_public=403,
    ),
    Client(
        "loopback, cookie, Sec-Fetch-Site: same-site",
        remote=False,
        cookie=True,
        headers=(("Sec-Fetch-Site", "same-site"),),
        refused=403,
        refused_public=403,
    ),
]


def expected(endpoint: Endpoint, client: Client) -> int:
    refused = client.refused_public if endpoint.public else client.refused
    return endpoint.ok if refused is None else refused


def send(stack: Stack, remote: dict[str, str], cookie: str, endpoint: Endpoint, client: Client) -> int:
    base = remote[endpoint.app] if client.remote else getattr(stack, f"{endpoint.app}_url")
    headers = dict(client.headers)
    if client.cookie:
        headers["Cookie"] = cookie
    request: dict = {}
    if endpoint.body == "multipart":
        request = {"files": {"file": ("rows.csv", CSV, "text/csv")}, "data": {"job_type": "sleep"}}
    elif endpoint.body == "csv":
        request = {"content": CSV}
        headers["Content-Type"] = "text/csv"
    with httpx.stream(endpoint.method, base + endpoint.path, headers=headers, timeout=30, **request) as response:
        return response.status_code  # the stream endpoint never ends: the status is enough


@pytest.mark.parametrize("client", CLIENTS, ids=[client.name for client in CLIENTS])
def test_access_table(stack: Stack, remote: dict[str, str], cookie: str, broker: Broker, client: Client) -> None:
    queue = stack.queue_of("sleep")
    before = broker.queue_depth(queue)
    outcomes = {f"{e.app} {e.method} {e.path}": send(stack, remote, cookie, e, client) for e in ENDPOINTS}
    wanted = {f"{e.app} {e.method} {e.path}": expected(e, client) for e in ENDPOINTS}
    assert outcomes == wanted
    accepted_uploads = sum(1 for e in ENDPOINTS if e.body and expected(e, client) == 200)
    assert broker.queue_depth(queue) - before == 2 * accepted_uploads, "refused uploads publish nothing"


def test_access_table_as_markdown() -> None:
    """The README's table is generated from the same data the test above asserts (printed with -s)."""
    header = "| endpoint | " + " | ".join(client.name for client in CLIENTS) + " |"
    lines = [header, "|" + " --- |" * (len(CLIENTS) + 1)]
    for endpoint in ENDPOINTS:
        cells = [str(expected(endpoint, client)) for client in CLIENTS]
        lines.append(f"| {endpoint.app} `{endpoint.method} {endpoint.path}` | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    assert table.count("\n") == len(ENDPOINTS) + 1


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


def test_a_proxy_on_loopback_does_not_make_its_callers_loopback(stack: Stack, broker: Broker) -> None:
    """An nginx on the same host (or our own pass-through) connects from 127.0.0.1: its callers still need the token."""
    for header in ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host"):
        response = httpx.post(
            f"{stack.producer_url}/submit/sleep",
            content=CSV,
            headers={"Content-Type": "text/csv", header: "203.0.113.9"},
        )
        assert response.status_code == 401, header


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
        f"{stack.producer_url}/submit/sleep", content=b"n\n1\n2\n", headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    form = httpx.post(f"{stack.producer_url}/submit/sleep", data={"n\n1\n2\n": ""})
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
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stack.upload(b"n\n" + b"".join(b"%d\n" % i for i in range(20)), "sleep", headers=headers).raise_for_status()
    places = {
        "producer log": stack.producer.log(),
        "scaler log": stack.scaler.log(),
        "status API": httpx.get(f"{stack.scaler_url}/api/status").text,
        "scaler metrics": httpx.get(f"{stack.scaler_url}/metrics").text,
        "producer metrics": httpx.get(f"{stack.producer_url}/metrics").text,
        "producer health": httpx.get(f"{stack.producer_url}/healthz").text,
        "job types": httpx.get(f"{stack.producer_url}/job-types").text,
        "dashboard": httpx.get(f"{stack.scaler_url}/").text + httpx.get(f"{stack.scaler_url}/static/app.js").text,
        "login page": httpx.get(f"{stack.scaler_url}/login").text,
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
    assert httpx.request(method, f"{stack.scaler_url}{path}").status_code == 405


# --- defaults ------------------------------------------------------------------------------------------


def listening_addresses(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_services_bind_loopback_by_default(broker: Broker, tmp_path) -> None:
    default = Stack(broker, tmp_path, {"sleep": {"max_workers": 0}}, env={"PRODUCER_TOKEN": ""}).start()
    try:
        assert listening_addresses(default.producer.pid) == {"127.0.0.1"}
        assert listening_addresses(default.scaler.pid) == {"127.0.0.1"}
        assert "only loopback clients get in" in default.producer.log()
    finally:
        default.stop()


def test_placeholder_token_or_no_way_in_refuses_to_start(broker: Broker) -> None:
    """The example manifests' placeholder is never a usable token; nor is 'no token and no loopback'."""
    for module in ("producer", "scaler"):
        for env, message in (
            ({"PRODUCER_TOKEN": "PLACEHOLDER-producer-token"}, "placeholder"),
            ({"PRODUCER_TOKEN": "", "AUTH_ALLOW_LOOPBACK": "false"}, "needs a PRODUCER_TOKEN"),
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
