"""The common base of the local vendor fakes: a threaded HTTP(S) server, switchable faults, data and OAuth state.

Each vendor module subclasses ``FakeVendor`` and registers routes that answer in the vendor's
documented JSON shapes. What every fake shares:

* ``FakeVendor(tls=..., page_size=..., **counts)``; ``start()`` / ``stop()`` / context manager;
  ``url`` is ``http(s)://127.0.0.1:<port>``; ``ca_bundle`` is the PEM of the local test CA
  (pass it as the connector's ``ca_bundle`` config so the vendor SDK verifies TLS for real).
* ``connector_config()`` / ``connector_credentials()``: what to give the connector to sync it.
* ``faults``: ``fail(status, times, match, retry_after)``, ``slow(seconds, times, match)``,
  ``drop(times, match)``, ``die_after_pages(n)`` (n data pages served, then the server is down
  from the next data page request on) + ``revive()``, ``clear()``.
* ``oauth``: ``expire_access_tokens()`` (next call answers 401 until a refresh), ``revoke()``
  (refresh answers invalid_grant), ``rotate`` (issue new refresh tokens), counters.
  Consent (authorization code): the vendor's authorize route calls ``consent_redirect(req)``, which
  redirects at once to ``redirect_uri`` with a one-time code and the same ``state`` (or with
  ``error=access_denied`` when ``oauth.deny_consent`` is set); the token route redeems the code
  with ``oauth.redeem(...)``, which checks the client, the redirect URI and the PKCE verifier and
  issues a refresh token the refresh grant then accepts.
* ``data``: tables of records keyed by a global change sequence (``Table``): ``update(id)``,
  ``add(row)``, ``delete(id)``, ``malform(id)`` (served broken by the vendor's serialiser),
  ``expected_ids(table)`` (live, well-formed ids: what a correct sync ends with).
* ``log``: ``(method, path)`` of every request, for assertions.

Records are generated on the fly from their index, so a fake can hold 100,000 of them.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import ipaddress
import json
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASE_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()

# -- TLS: one throwaway CA and a 127.0.0.1 leaf per test process ------------------------------

_TLS_LOCK = threading.Lock()
_TLS_FILES: tuple[str, str, str] | None = None


def tls_files() -> tuple[str, str, str]:
    """(ca_pem, cert_pem, key_pem) paths of a local CA and a server cert for 127.0.0.1/localhost."""
    global _TLS_FILES
    with _TLS_LOCK:
        if _TLS_FILES is not None:
            return _TLS_FILES
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Castiel test vendor CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        folder = Path(tempfile.mkdtemp(prefix="castiel-fake-tls-"))
        ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        _TLS_FILES = (str(ca_path), str(cert_path), str(key_path))
        return _TLS_FILES


# -- requests and responses ------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode()))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def bearer(self) -> str | None:
        auth = self.header("authorization") or ""
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    @property
    def basic(self) -> tuple[str, str] | None:
        """(user, password) of an HTTP Basic Authorization header (OAuth clients authenticating)."""
        auth = self.header("authorization") or ""
        if not auth.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except ValueError:
            return None
        return urllib.parse.unquote(user), urllib.parse.unquote(password)


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON, bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


def route(method: str, pattern: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Mark a FakeVendor method as the handler of ``method`` requests whose path matches ``pattern``."""

    def mark(fn: Callable[..., Response]) -> Callable[..., Response]:
        fn._route = (method.upper(), re.compile(pattern + r"$"))  # type: ignore[attr-defined]
        return fn

    return mark


# -- faults ------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str  # status | slow | drop
    times: int
    match: re.Pattern[str] | None
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    body: Any = None


class ServerDown(Exception):
    """Raised inside a handler when the fake goes down: the connection is dropped without an answer."""


class Faults:
    """Switchable misbehaviour, consumed request by request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending: list[Fault] = []
        self.down = False
        self.die_after: int | None = None
        self.pages_served = 0
        self.injected = 0

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self.pending.append(fault)

    def fail(
        self,
        status: int = 500,
        times: int = 1,
        match: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (429 carries ``Retry-After``)."""
        self._add(Fault("status", times, re.compile(match) if match else None, status, retry_after, body=body))

    def slow(self, seconds: float, times: int = 1, match: str | None = None) -> None:
        """Hold the next ``times`` matching requests for ``seconds`` before answering (client timeouts)."""
        self._add(Fault("slow", times, re.compile(match) if match else None, delay=seconds))

    def drop(self, times: int = 1, match: str | None = None) -> None:
        """Close the connection without an answer on the next ``times`` matching requests."""
        self._add(Fault("drop", times, re.compile(match) if match else None))

    def die_after_pages(self, pages: int) -> None:
        """Serve ``pages`` more data pages (and the calls that go with them), then go down: the next
        data page request and every request after it are dropped until ``revive()``."""
        with self._lock:
            self.die_after = self.pages_served + pages

    def revive(self) -> None:
        with self._lock:
            self.down = False
            self.die_after = None

    def clear(self) -> None:
        with self._lock:
            self.pending.clear()
            self.down = False
            self.die_after = None

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.pending:
                if fault.match is None or fault.match.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.pending.remove(fault)
                    self.injected += 1
                    return fault
        return None

    def page_served(self) -> None:
        """Count a data page; past ``die_after_pages`` the server goes down before answering it."""
        with self._lock:
            if self.die_after is not None and self.pages_served >= self.die_after:
                self.down = True
                raise ServerDown()
            self.pages_served += 1


# -- OAuth -----------------------------------------------------------------------------------


class OAuthState:
    """Tokens a fake issues and accepts; faults flip them to expired or revoked."""

    def __init__(
        self,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        expires_in: int = 3600,
        rotate: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.rotate = rotate
        self.refresh_tokens = {"fake-refresh-" + secrets.token_hex(8)}
        self.access_tokens: set[str] = set()
        self.revoked = False
        self.refreshes = 0
        self.client_credential_grants = 0
        self.initial_access_token = self.issue()
        self._lock = threading.Lock()
        # consent: code -> what the authorize request bound it to
        self.codes: dict[str, dict[str, str | None]] = {}
        self.deny_consent = False
        self.consents = 0
        self.code_exchanges = 0
        self.authorize_requests: list[dict[str, str]] = []
        self.token_forms: list[dict[str, str]] = []

    @property
    def refresh_token(self) -> str:
        return sorted(self.refresh_tokens)[0]

    def issue(self) -> str:
        token = "fake-access-" + secrets.token_hex(12)
        self.access_tokens.add(token)
        return token

    def valid(self, token: str | None) -> bool:
        return bool(token) and token in self.access_tokens

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (as after its expiry)."""
        self.access_tokens.clear()

    def revoke(self) -> None:
        """The refresh token is revoked (consent withdrawn): refreshes answer invalid_grant."""
        self.revoked = True
        self.access_tokens.clear()

    def client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        return client_id == self.client_id and client_secret == self.client_secret

    def authorize(self, query: dict[str, str]) -> tuple[str, dict[str, str]] | str:
        """The consent page, answered at once: (redirect_uri, params to send back) or why it cannot redirect."""
        self.authorize_requests.append(dict(query))
        redirect = query.get("redirect_uri") or ""
        if query.get("client_id") != self.client_id:
            return "unknown client_id"
        if not redirect.startswith(("http://", "https://")):
            return "missing or bad redirect_uri"
        params: dict[str, str]
        if query.get("response_type") != "code":
            params = {"error": "unsupported_response_type", "error_description": "only response_type=code"}
        elif self.deny_consent:
            params = {"error": "access_denied", "error_description": "The user denied the request"}
        else:
            code = "fake-code-" + secrets.token_hex(12)
            with self._lock:
                self.consents += 1
                self.codes[code] = {
                    "redirect_uri": redirect,
                    "challenge": query.get("code_challenge"),
                    "method": query.get("code_challenge_method") or ("plain" if query.get("code_challenge") else None),
                    "scope": query.get("scope"),
                }
            params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        return redirect, params

    def redeem(
        self, code: str | None, redirect_uri: str | None, verifier: str | None, client_id: str | None,
        client_secret: str | None,
    ) -> tuple[str, str] | str:
        """(access, refresh) for a good code, else the reason: ``client`` | ``code`` | ``redirect`` | ``pkce``.

        A code is spent by its first redemption, good or bad (as real servers do).
        """
        if not self.client_ok(client_id, client_secret):
            return "client"
        with self._lock:
            bound = self.codes.pop(code or "", None)
            if bound is None:
                return "code"
            if redirect_uri != bound["redirect_uri"]:
                return "redirect"
            challenge = bound["challenge"]
            if challenge is not None:
                if not verifier:
                    return "pkce"
                if bound["method"] == "S256":
                    digest = hashlib.sha256(verifier.encode("ascii")).digest()
                    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
                else:
                    expected = verifier
                if expected != challenge:
                    return "pkce"
            self.code_exchanges += 1
            refresh = "fake-refresh-" + secrets.token_hex(8)
            if self.rotate:
                self.refresh_tokens = {refresh}
            else:
                self.refresh_tokens.add(refresh)
            self.revoked = False
            return self.issue(), refresh

    def refresh(self, refresh_token: str | None) -> tuple[str, str] | None:
        """(access, refresh) for a good refresh token, else None (invalid_grant)."""
        with self._lock:
            if self.revoked or refresh_token not in self.refresh_tokens:
                return None
            self.refreshes += 1
            if self.rotate:
                self.refresh_tokens = {"fake-refresh-" + secrets.token_hex(8)}
            return self.issue(), self.refresh_token


# -- data ------------------------------------------------------------------------------------


class Table:
    """Records of one object type ordered by a change sequence shared by the whole fake."""

    def __init__(self, name: str, sequence: Iterator[int]) -> None:
        self.name = name
        self._sequence = sequence
        self.rows: dict[str, dict[str, Any]] = {}
        self.tombstones: dict[str, int] = {}
        self._log_seq: list[int] = []
        self._log_id: list[str] = []
        self.malformed: set[str] = set()
        self._lock = threading.RLock()

    def _stamp(self, row_id: str) -> int:
        seq = next(self._sequence)
        self._log_seq.append(seq)
        self._log_id.append(row_id)
        return seq

    def put(self, row: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            row_id = str(row["id"])
            row["seq"] = self._stamp(row_id)
            row["modified"] = BASE_EPOCH + row["seq"]
            row.setdefault("created", row["modified"])
            self.rows[row_id] = row
            self.tombstones.pop(row_id, None)
            return row

    def update(self, row_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            row = dict(self.rows[row_id])
            row.update(changes)
            return self.put(row)

    def delete(self, row_id: str) -> None:
        with self._lock:
            self.rows.pop(row_id)
            self.tombstones[row_id] = self._stamp(row_id)

    def malform(self, row_id: str) -> None:
        self.malformed.add(row_id)

    def current_seq(self, row_id: str) -> int | None:
        row = self.rows.get(row_id)
        if row is not None:
            return int(row["seq"])
        return self.tombstones.get(row_id)

    def changes_after(self, seq: int, limit: int, include_deleted: bool = True) -> tuple[list[tuple[int, str]], bool]:
        """Up to ``limit`` current (seq, id) entries with seq > ``seq`` in order, and whether more follow."""
        with self._lock:
            i = bisect.bisect_right(self._log_seq, seq)
            n = len(self._log_seq)
            out: list[tuple[int, str]] = []
            while i < n and len(out) <= limit:
                s, rid = self._log_seq[i], self._log_id[i]
                i += 1
                if self.current_seq(rid) != s:
                    continue  # superseded by a later change of the same record
                if not include_deleted and rid not in self.rows:
                    continue
                out.append((s, rid))
            return out[:limit], len(out) > limit

    def live(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self.rows.values(), key=lambda r: r["seq"])

    @property
    def max_seq(self) -> int:
        return self._log_seq[-1] if self._log_seq else 0

    def expected_ids(self) -> set[str]:
        return set(self.rows) - self.malformed


def iso_z(epoch: float, millis: bool = True) -> str:
    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return (
        t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        if millis
        else t.strftime("%Y-%m-%dT%H:%M:%SZ")
    )


# -- the server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], vendor: FakeVendor) -> None:
        self.vendor = vendor
        self.tls_context: ssl.SSLContext | None = None
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        # Clients hanging up (timeouts, dropped connections) are part of the faults, not news.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's own thread so a stalled client blocks nobody.
        if self.tls_context is not None:
            try:
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write, with Nagle off: small split writes would meet the
    # client's delayed ACK and cost 40 ms per request.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _serve(self) -> None:
        vendor = self.server.vendor
        parsed = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=parsed.path,
            query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        vendor.log.append((req.method, req.path))
        if vendor.faults.down:
            self._drop()
            return
        fault = vendor.faults.take(req.path)
        if fault is not None:
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "slow":
                time.sleep(fault.delay)
            elif fault.kind == "status":
                resp = vendor.error_response(fault.status, fault.retry_after, req)
                if fault.body is not None:
                    resp.body = fault.body
                if fault.retry_after is not None:
                    resp.headers["Retry-After"] = f"{fault.retry_after:g}"
                self._send(resp)
                return
        try:
            resp = vendor.dispatch(req)
        except ServerDown:
            self._drop()
            return
        except Exception as exc:  # a bug in the fake should show as a 500, not a hang
            resp = Response(500, {"fake_error": f"{type(exc).__name__}: {exc}"})
        self._send(resp)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, resp: Response) -> None:
        payload = resp.encoded()
        try:
            self.send_response(resp.status)
            if resp.body is not None:
                self.send_header("Content-Type", resp.content_type)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


class FakeVendor:
    """Base of every vendor fake; subclasses add ``@route`` handlers and the vendor's shapes."""

    vendor = "generic"
    default_tls = False

    def __init__(self, *, tls: bool | None = None, page_size: int = 100, port: int = 0) -> None:
        self.tls = self.default_tls if tls is None else tls
        self.page_size = page_size
        self.faults = Faults()
        self.oauth = OAuthState()
        self.log: list[tuple[str, str]] = []
        self._seq_counter = iter(range(1, 1 << 62))
        self._seq_lock = threading.Lock()
        self.tables: dict[str, Table] = {}
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[[Request], Response]]] = []
        for attr in dir(type(self)):
            fn = getattr(type(self), attr)
            if callable(fn) and hasattr(fn, "_route"):
                method, pattern = fn._route
                self._routes.append((method, pattern, getattr(self, attr)))

    # -- sequence / data --------------------------------------------------------------------
    def _next_seq(self) -> Iterator[int]:
        while True:
            with self._seq_lock:
                value = next(self._seq_counter)
            yield value

    def table(self, name: str) -> Table:
        if name not in self.tables:
            self.tables[name] = Table(name, self._next_seq())
        return self.tables[name]

    def expected_ids(self, table: str) -> set[str]:
        return self.tables[table].expected_ids()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeVendor:
        server = _Server(("127.0.0.1", self._port), _Handler, self)
        if self.tls:
            _, cert, key = tls_files()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server.tls_context = ctx
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def restart(self) -> None:
        """Stop and start again on the same port (a real outage, not just dropped requests)."""
        self.stop()
        self.start()

    def __enter__(self) -> FakeVendor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def ca_bundle(self) -> str | None:
        return tls_files()[0] if self.tls else None

    # -- what a connector needs -------------------------------------------------------------
    def connector_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"base_url": self.url}
        if self.tls:
            config["ca_bundle"] = self.ca_bundle
        return config

    def connector_credentials(self) -> dict[str, Any]:
        return {}

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response:
        for method, pattern, handler in self._routes:
            if req.method not in method.split("|"):
                continue
            m = pattern.match(req.path)
            if m:
                req.params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items() if v is not None}
                return handler(req)
        return self.not_found(req)

    def not_found(self, req: Request) -> Response:
        return Response(404, {"error": {"code": "NotFound", "message": f"No route for {req.method} {req.path}"}})

    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        """The vendor's error body for an injected status; subclasses give their exact shape."""
        return Response(status, {"error": {"code": status, "message": f"Injected fault {status}"}})

    def consent_redirect(self, req: Request) -> Response:
        """An authorize endpoint that consents at once: 302 back to ``redirect_uri`` with a code and the state."""
        answer = self.oauth.authorize(req.query)
        if isinstance(answer, str):
            return Response(400, f"<h1>Cannot authorize</h1><p>{answer}</p>", content_type="text/html")
        redirect, params = answer
        sep = "&" if urllib.parse.urlsplit(redirect).query else "?"
        return Response(302, None, headers={"Location": redirect + sep + urllib.parse.urlencode(params)})

    def redeem_code(self, form: dict[str, str], basic: tuple[str, str] | None = None) -> tuple[str, str] | str:
        """Redeem a token request's authorization code (client from the form, or HTTP Basic)."""
        self.oauth.token_forms.append(dict(form))
        client_id, client_secret = basic or (form.get("client_id"), form.get("client_secret"))
        return self.oauth.redeem(
            form.get("code"), form.get("redirect_uri"), form.get("code_verifier"), client_id, client_secret
        )

    def data_page_served(self) -> None:
        """Vendors call this after building each page of records (drives ``die_after_pages``)."""
        self.faults.page_served()
