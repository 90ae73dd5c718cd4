"""Deploy health check (`python -m core health`): can the store, the blob store and MLflow be reached?

Each part answers ``(part, ok, reason)``; the CLI exits non-zero when any part is not ok and
prints the reasons. MLflow is checked by its tracking URI: for ``sqlite:`` and file URIs the
folder holding the database or artifacts must exist (or be creatable) and be writable; for
``http(s)`` and ``azureml`` URIs a probe passed in makes one request (core imports no HTTP
client; by default the probe comes from the notification adapter, imported lazily).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from core.errors import CastielError

HealthResult = tuple[str, bool, str]
# A probe GETs a URL and answers (HTTP status or None when unreachable, a short description).
Probe = Callable[[str, float], tuple[int | None, str]]


def _writable_dir(folder: Path) -> tuple[bool, str]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return False, f"cannot create {folder}: {e.strerror or e}"
    if not folder.is_dir():
        return False, f"{folder} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".castiel-health-", delete=True):
            pass
    except OSError as e:
        return False, f"cannot write in {folder}: {e.strerror or e}"
    return True, f"{folder} is writable"


def sqlite_path_of(uri: str) -> Path:
    """The file a ``sqlite:`` SQLAlchemy URI names (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
    rest = uri[len("sqlite:"):]
    if rest.startswith("///"):
        rest = rest[3:]
        # four slashes (or a Windows drive) mean an absolute path
        return Path("/" + rest.lstrip("/")) if uri.startswith("sqlite:////") else Path(unquote(rest))
    raise ValueError(f"unsupported sqlite URI {uri!r}; use sqlite:///relative.db or sqlite:////absolute.db")


def check_mlflow(uri: str, probe: Probe | None = None, timeout: float = 5.0) -> HealthResult:
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        try:
            path = sqlite_path_of(uri)
        except ValueError as e:
            return "mlflow", False, str(e)
        ok, why = _writable_dir(path.parent.resolve())
        return "mlflow", ok, f"sqlite tracking store {path}: {why}"
    if scheme in ("", "file"):
        folder = Path(unquote(urlsplit(uri).path) if scheme == "file" else uri)
        ok, why = _writable_dir(folder.resolve())
        return "mlflow", ok, f"file tracking store: {why}"
    if scheme in ("http", "https", "azureml"):
        if probe is None:
            from core.adapters.notify_channels import probe_http

            probe = probe_http
        parts = urlsplit(uri)
        if scheme == "azureml":
            # azureml://<region>.api.azureml.ms/mlflow/...: reachable when its HTTPS host answers at all.
            url, need_ok = f"https://{parts.netloc}/", False
        else:
            # An MLflow tracking server answers GET /health with 200 OK.
            url, need_ok = f"{uri.rstrip('/')}/health", True
        status, text = probe(url, timeout)
        if status is None:
            return "mlflow", False, f"cannot reach {url}: {text}"
        if need_ok and not 200 <= status < 300:
            return "mlflow", False, f"{url} answered {status}: {text}"
        if status >= 500:
            return "mlflow", False, f"{url} answered {status}: {text}"
        return "mlflow", True, f"{url} answered {status}"
    return "mlflow", False, f"unsupported tracking URI scheme {scheme!r} in {uri!r}"


def health_check(services: Any, probe: Probe | None = None, timeout: float = 5.0) -> list[HealthResult]:
    """Check the store, the blob store and MLflow; never raises."""
    results: list[HealthResult] = []
    settings = services.settings
    try:
        services.store.ping()
        where = str(settings.sqlite_path) if settings.store == "sqlite" else settings.cosmos_endpoint
        results.append(("store", True, f"{settings.store} store at {where} answered"))
    except CastielError as e:
        results.append(("store", False, e.message))
    except Exception as e:
        results.append(("store", False, f"{type(e).__name__}: {e}"))
    try:
        services.blobs.ping()
        results.append(("blobs", True, f"{settings.blob} blob store answered"))
    except CastielError as e:
        results.append(("blobs", False, e.message))
    except Exception as e:
        results.append(("blobs", False, f"{type(e).__name__}: {e}"))
    try:
        results.append(check_mlflow(settings.tracking_uri, probe, timeout))
    except Exception as e:
        results.append(("mlflow", False, f"{type(e).__name__}: {e}"))
    return results


def is_healthy(results: list[HealthResult]) -> bool:
    return all(ok for _, ok, _ in results)


__all__ = ["health_check", "check_mlflow", "is_healthy", "HealthResult", "Probe", "sqlite_path_of"]
