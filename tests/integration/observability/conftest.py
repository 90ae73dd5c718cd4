"""Local receivers for notification tests: an SMTP server (aiosmtpd) and an HTTP webhook receiver, on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpInbox:
    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox("127.0.0.1", free_port())
    controller = Controller(inbox, hostname=inbox.host, port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@dataclass
class Receiver:
    """Answers each POST with the next status in ``statuses`` (the last one repeats)."""

    url: str
    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def status_for(self, n: int) -> int:
        return self.statuses[min(n, len(self.statuses) - 1)]

    @property
    def bodies(self) -> list[Any]:
        return [r["json"] for r in self.requests]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _start_receiver(statuses: list[int], retry_after: str | None = None) -> Receiver:
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}", list(statuses))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server hook
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with rec.lock:
                n = len(rec.requests)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec.requests.append({"path": self.path, "json": body, "headers": dict(self.headers)})
                status = rec.status_for(n)
            self.send_response(status)
            if status == 429 and retry_after is not None:
                self.send_header("Retry-After", retry_after)
            text = b"ok" if status < 300 else b"no_service" if status == 404 else b"upstream unavailable"
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def do_GET(self) -> None:  # noqa: N802 - used as an MLflow-like /health endpoint
            status = rec.status_for(0)
            body = b"OK"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    rec.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return rec


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    started: list[Receiver] = []

    def make(statuses: list[int] | None = None, retry_after: str | None = None) -> Receiver:
        r = _start_receiver(statuses or [200], retry_after)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()
