"""The worker's webhook listener: a small stdlib HTTP server in front of core.services.webhook_receipt.

Streamlit cannot receive webhooks, so the worker (``python -m jobs``) serves
``POST /webhooks/<tenant>/<connection id>`` on ``CASTIEL_WEBHOOK_BIND``:``CASTIEL_WEBHOOK_PORT``
(default 127.0.0.1:8502; port 0 turns it off). Put a TLS-terminating reverse proxy in front of it
for vendors on the internet; the listener itself speaks plain HTTP/1.0.

Requests are served by a small fixed pool of threads rather than a thread per request: a burst
of deliveries cannot start unbounded threads, and each pool thread keeps its own store
connection (the SQLite adapter opens one per thread) instead of opening one per request.
The body is capped before it is read: a declared ``Content-Length`` over the cap gets 413 at
once, and chunked bodies (no length) get 411.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from core.errors import Invalid
from core.services.webhook_receipt import MAX_BODY_BYTES, WebhookReceiver, WebhookResponse

log = logging.getLogger("castiel.webhooks")

POOL_THREADS = 4
SOCKET_TIMEOUT_SECONDS = 15.0
# An oversize body is read and thrown away up to this much so the client sees the 413 rather than a
# connection reset; anything larger is cut off.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024


class _PooledHTTPServer(HTTPServer):
    """HTTPServer whose requests run on a bounded ThreadPoolExecutor."""

    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        receiver: WebhookReceiver,
        threads: int = POOL_THREADS,
    ) -> None:
        self.receiver = receiver
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._process, request, client_address)

    def _process(self, request: Any, client_address: Any) -> None:
        # Mirrors socketserver.ThreadingMixIn.process_request_thread.
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True)


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _PooledHTTPServer
    server_version = "CastielWebhooks/1"
    timeout = SOCKET_TIMEOUT_SECONDS

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        receiver = self.server.receiver
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send(WebhookResponse(411, b'{"error": "send the webhook with a Content-Length"}'))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send(WebhookResponse(400, b'{"error": "Content-Length is not a number"}'))
            return
        if length < 0:
            self._send(WebhookResponse(400, b'{"error": "Content-Length is negative"}'))
            return
        oversize = receiver.too_large(length)
        if oversize is not None:
            self._drain(length)
            self._send(oversize)
            return
        try:
            body = self.rfile.read(length) if length else b""
        except TimeoutError:
            log.info("webhook client %s stalled while sending its body", self.client_address[0])
            self.close_connection = True
            return
        if len(body) < length:
            self._send(WebhookResponse(400, b'{"error": "the body ended before Content-Length bytes"}'))
            return
        self._send(receiver.handle("POST", self.path, dict(self.headers.items()), body))

    def _other_method(self) -> None:
        self._send(self.server.receiver.handle(self.command, self.path, dict(self.headers.items()), b""))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other_method  # noqa: N815

    def _drain(self, length: int) -> None:
        if length > DRAIN_LIMIT_BYTES:
            return
        remaining = length
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 64 * 1024))
                if not chunk:
                    return
                remaining -= len(chunk)
        except OSError:
            return

    def _send(self, response: WebhookResponse) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            log.info("webhook client %s went away before the %d answer", self.client_address[0], response.status)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.client_address[0], format % args)


class WebhookServer:
    """A running listener; ``port`` is the bound port (useful when asked for port 0), ``stop()`` ends it."""

    def __init__(
        self, receiver: WebhookReceiver, bind: str = "127.0.0.1", port: int = 0, threads: int = POOL_THREADS
    ) -> None:
        try:
            self._httpd = _PooledHTTPServer((bind, port), _WebhookHandler, receiver, threads)
        except OSError as e:
            raise Invalid(
                f"cannot listen for webhooks on {bind}:{port} ({e.strerror or e}); set CASTIEL_WEBHOOK_PORT to a "
                "free port, or 0 to turn webhook receipt off"
            ) from e
        self.bind = bind
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.25}, name="webhook-listener", daemon=True
        )
        self._thread.start()
        log.info("webhooks on http://%s:%d/webhooks/<tenant>/<connection id>", bind, self.port)

    @property
    def url(self) -> str:
        host = self.bind if self.bind not in ("0.0.0.0", "::", "") else socket.gethostname()
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def receiver_for(services: Any, max_body_bytes: int = MAX_BODY_BYTES) -> WebhookReceiver:
    return WebhookReceiver(services.integrations, services.audit, max_body_bytes=max_body_bytes)


def start_webhook_server(services: Any, *, bind: str | None = None, port: int | None = None) -> Callable[[], None]:
    """Serve webhooks on the configured address; returns a stop function (a no-op when the port is 0).

    Like ``jobs.metrics.start_exporter``, the returned function carries ``.port``. Raises ``Invalid``
    with what to change when the port is taken.
    """
    settings = services.settings
    port = settings.webhook_port if port is None else port
    bind = settings.webhook_bind if bind is None else bind
    if port == 0:
        log.info("webhook receipt is off (CASTIEL_WEBHOOK_PORT=0)")

        def nothing() -> None:
            return None

        nothing.port = 0  # type: ignore[attr-defined]
        return nothing
    server = WebhookServer(receiver_for(services), bind, port)

    def stop() -> None:
        server.stop()

    stop.port = server.port  # type: ignore[attr-defined]
    return stop
