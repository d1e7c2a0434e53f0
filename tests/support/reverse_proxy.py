"""A reverse proxy on loopback in front of one of our apps, configured like nginx's default `proxy_pass`.

`proxy_pass http://127.0.0.1:8000;` with nothing else connects from
127.0.0.1, sends `Host: 127.0.0.1:8000` (nginx's `$proxy_host`) and no
forwarding header, and passes every other request header (`Authorization`,
`Cookie`) and the body on. That is exactly what used to make every caller of
such a proxy a "loopback client"; the security tests put this one in front of
the producer and the dashboard and expect 401 without a token.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

#: Hop-by-hop headers a proxy does not pass on (RFC 9110, 7.6.1), plus the ones it sets itself.
NOT_FORWARDED = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"})


class NginxLikeProxy:
    """Listens on `127.0.0.1:<free port>` (or `host`) and forwards every request to `upstream` (`host:port`)."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
                headers["Host"] = proxy.upstream
                answer = httpx.request(
                    self.command, f"http://{proxy.upstream}{self.path}", headers=headers, content=body, timeout=30
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in NOT_FORWARDED | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward  # noqa: N815 (http.server's naming)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
