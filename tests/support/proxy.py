"""A TCP proxy in front of RabbitMQ that a test can cut and restore.

It makes "the broker went away" deterministic for one component without
stopping the broker every other test shares: `cut()` drops every open
connection and refuses new ones, `restore()` lets them through again.
`cut_after(n)` cuts by itself once clients have sent `n` more bytes, so a
test can cut an upload in the middle however fast the machine publishes
(a wait on the broker's queue statistics, which lag, may see it too late).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.broker import Broker
from harness.stack import Stack


class CuttableProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut_after: int | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, vhost_path: str) -> str:
        """An AMQP URL through this proxy for the (already quoted) vhost."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost_path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, outbound), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while data := source.recv(65536):
                if outbound and self._spend(len(data)):
                    self.cut()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut_after(self, sent_bytes: int) -> None:
        """Cut (as `cut()`) once clients have sent `sent_bytes` more bytes towards the broker."""
        with self._lock:
            self._cut_after = sent_bytes

    def _spend(self, sent: int) -> bool:
        """Count bytes a client sent; True once an armed `cut_after` budget is used up (it then disarms)."""
        with self._lock:
            if self._cut_after is None:
                return False
            self._cut_after -= sent
            if self._cut_after > 0:
                return False
            self._cut_after = None
            return True

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until `restore()`."""
        self._open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


def producer_behind(proxy: CuttableProxy, broker: Broker, directory: Path, job_types: dict[str, Any]) -> Stack:
    """A started producer whose broker connections all pass through `proxy` (short heartbeats: cuts show fast)."""
    stack = Stack(
        broker,
        directory,
        job_types,
        env={"RABBITMQ_URL": proxy.url(quote(broker.vhost, safe="")), "RABBITMQ_HEARTBEAT_SECONDS": "2"},
    )
    stack.start_producer()
    return stack
