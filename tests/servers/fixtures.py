"""Pytest plugin that starts the local Cosmos DB and Azure Blob stand-ins on 127.0.0.1 for integration tests.

Fixtures (session-scoped):
    cosmos_server             CosmosServer(endpoint, key, verify, real): the cosmosdb-server over TLS with a
                              fresh self-signed certificate, or the real account named by
                              CASTIEL_COSMOS_ENDPOINT / CASTIEL_COSMOS_KEY when those are set
    cosmos_endpoint           (endpoint, key) of the above
    cosmos_tls_verify         what to pass as the client's TLS verification: the generated certificate's
                              path for the local server (so TLS is really verified), True for a real account
    azurite_connection_string a connection string for azurite-blob (in memory, its own random account key)

Marker:
    real_cosmos_only(reason)  the test needs a feature the local server lacks (GROUP BY, OFFSET/LIMIT,
                              DISTINCT, transactional batch, partition-scoped change feed); it runs only
                              against a real account. Put it on a test or on a ``pytest.param``.

The npm packages live in tests/servers/node_modules (installed by scripts/install-test-deps.sh).
When they are missing, the fixtures skip with the command to run; under CI (CI=true) they fail
instead, so a broken install can never pass as "all skipped".
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import queue
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

SERVERS_DIR = Path(__file__).resolve().parent
NODE_MODULES = SERVERS_DIR / "node_modules"
INSTALL_COMMAND = "bash scripts/install-test-deps.sh   (or just: npm ci --prefix tests/servers)"
START_TIMEOUT_S = 60.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(message: str) -> None:
    """Skip on a developer machine, fail under CI: CI must never pass with the servers missing."""
    if _in_ci():
        pytest.fail(f"{message} (CI=true, so this is an error, not a skip)", pytrace=False)
    pytest.skip(f"{message}; install with: {INSTALL_COMMAND}")


def _require_node_package(package: str) -> str:
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not on PATH (the Cosmos and Azurite test servers are npm packages)")
    if not (NODE_MODULES / package / "package.json").is_file():
        _unavailable(f"the npm package {package} is not installed in {NODE_MODULES}")
    assert node is not None
    return node


# processes ----------------------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook so the kernel sends the server SIGTERM if the test process dies (Linux only).

    ctypes is resolved here, in the parent, so the child between fork and exec only makes one
    system call and takes no locks.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _start(
    args: list[str], log_path: Path, cwd: Path = SERVERS_DIR, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    log = log_path.open("w")
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.PIPE,  # the cosmos script exits when this closes
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=_parent_death_signal(),  # noqa: PLW1509 - one prctl call, no locks (see above)
        )
    finally:
        log.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _read_stdout_until(proc: subprocess.Popen[str], marker: str, log_path: Path, what: str) -> str:
    """The first stdout line containing ``marker``; a clear failure if the server dies or hangs."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stdout: IO[str] = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name=f"{what}-stdout", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return line.strip()
    _stop(proc)
    stderr = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
    raise RuntimeError(
        f"{what} did not start within {START_TIMEOUT_S:.0f} s (exit code {proc.returncode}).\n"
        f"stdout: {''.join(seen)[-2000:]}\nstderr ({log_path}): {stderr}"
    )


def _wait_http(url: str, context: ssl.SSLContext | None, what: str) -> None:
    """Wait until the server answers HTTP at all (any status counts as up)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5, context=context):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as e:
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"{what} at {url} did not answer within {START_TIMEOUT_S:.0f} s: {last}")


# certificates --------------------------------------------------------------------------------------


def write_self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A fresh self-signed certificate for ``host`` and localhost (the package's bundled one has expired)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# fixtures -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CosmosServer:
    endpoint: str
    key: str
    verify: bool | str  # a CA file for the local server, True for a real account
    real: bool


@pytest.fixture(scope="session")
def cosmos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosServer]:
    endpoint, key = os.environ.get("CASTIEL_COSMOS_ENDPOINT"), os.environ.get("CASTIEL_COSMOS_KEY")
    if endpoint and key:
        yield CosmosServer(endpoint=endpoint, key=key, verify=True, real=True)
        return
    node = _require_node_package("@vercel/cosmosdb-server")
    workdir = tmp_path_factory.mktemp("cosmosdb-server")
    cert, tls_key = write_self_signed_cert(workdir)
    log_path = workdir / "server.log"
    proc = _start(
        [node, str(SERVERS_DIR / "cosmos_server.js"), "--cert", str(cert), "--key", str(tls_key), "--port", "0"],
        log_path,
    )
    try:
        port = int(_read_stdout_until(proc, "READY", log_path, "cosmosdb-server").split()[-1])
        url = f"https://127.0.0.1:{port}/"
        _wait_http(url, ssl.create_default_context(cafile=str(cert)), "cosmosdb-server")
        # The server checks no signature, but the client needs a base64 key to sign with.
        yield CosmosServer(
            endpoint=url,
            key=base64.b64encode(secrets.token_bytes(64)).decode(),
            verify=str(cert),
            real=False,
        )
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def cosmos_endpoint(cosmos_server: CosmosServer) -> tuple[str, str]:
    return cosmos_server.endpoint, cosmos_server.key


@pytest.fixture(scope="session")
def cosmos_tls_verify(cosmos_server: CosmosServer) -> bool | str:
    return cosmos_server.verify


AZURITE_ACCOUNT = "castieltest"


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = _require_node_package("azurite")
    workdir = tmp_path_factory.mktemp("azurite")
    log_path = workdir / "azurite.log"
    # A random account key of our own instead of the well-known development key.
    account_key = base64.b64encode(secrets.token_bytes(64)).decode()
    entry = NODE_MODULES / "azurite" / "dist" / "src" / "blob" / "main.js"
    proc = _start(
        [
            node,
            str(entry),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",  # azurite binds a free port and prints it, so no race for a probed port
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "512",
            "--disableTelemetry",
            "--silent",
            # The Python SDK may speak a newer REST version than this azurite knows.
            "--skipApiVersionCheck",
        ],
        log_path,
        cwd=workdir,
        env={"AZURITE_ACCOUNTS": f"{AZURITE_ACCOUNT}:{account_key}"},
    )
    try:
        line = _read_stdout_until(proc, "successfully listens on", log_path, "azurite-blob")
        port = int(line.rsplit(":", 1)[-1].strip("/ "))
        _wait_http(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list", None, "azurite-blob")
        yield (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={account_key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    finally:
        _stop(proc)


# marker ------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_cosmos_only(reason): needs a Cosmos DB feature the local cosmosdb-server lacks; "
        "runs only when CASTIEL_COSMOS_ENDPOINT and CASTIEL_COSMOS_KEY name a real account",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("real_cosmos_only")
    if marker is None:
        return
    if os.environ.get("CASTIEL_COSMOS_ENDPOINT") and os.environ.get("CASTIEL_COSMOS_KEY"):
        return
    reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "a feature the local server lacks")
    pytest.skip(f"needs a real Cosmos DB account ({reason}); set CASTIEL_COSMOS_ENDPOINT and CASTIEL_COSMOS_KEY")
