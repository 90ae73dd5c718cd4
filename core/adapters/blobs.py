"""Blob storage interface (local folder by default, Azure Blob Storage in production).

Blob names are ``<tenantId>/<area>/<...>``; a name is checked before use so an uploaded
file name can never escape its folder.
"""

from __future__ import annotations

import abc
import builtins
import re
from pathlib import Path

from core.errors import Invalid, NotFound, StoreUnavailable

CONTAINERS = ("templates", "outputs", "documents", "reports", "models")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,900}$")


def check_name(name: str) -> str:
    if not _SAFE.match(name) or ".." in name.split("/") or "//" in name:
        raise Invalid(f"blob name {name!r} is not allowed: use letters, digits, '.', '_', '-' and '/'")
    return name


class BlobStore(abc.ABC):
    backend = "abstract"

    @abc.abstractmethod
    def ensure_containers(self) -> list[str]:
        """Create missing blob containers; return those created."""

    @abc.abstractmethod
    def missing_containers(self) -> list[str]: ...

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable when the blob store cannot be reached."""

    @abc.abstractmethod
    def put(self, container: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abc.abstractmethod
    def get(self, container: str, name: str) -> bytes:
        """Blob bytes; NotFound when absent."""

    @abc.abstractmethod
    def exists(self, container: str, name: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, container: str, name: str) -> None: ...

    @abc.abstractmethod
    def list(self, container: str, prefix: str = "") -> list[str]: ...

    def download_url(self, container: str, name: str, expiry_minutes: int = 15) -> str | None:
        """A short-lived URL a browser can fetch, where the backend has one (Azure SAS)."""
        return None


class LocalBlobStore(BlobStore):
    backend = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, container: str, name: str) -> Path:
        if container not in CONTAINERS:
            raise Invalid(f"unknown blob container {container!r}")
        return self.root / container / check_name(name)

    def missing_containers(self) -> builtins.list[str]:
        return [c for c in CONTAINERS if not (self.root / c).is_dir()]

    def ensure_containers(self) -> builtins.list[str]:
        missing = self.missing_containers()
        try:
            for c in CONTAINERS:
                (self.root / c).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"cannot create the blob folder {self.root}: {e}") from e
        return missing

    def ping(self) -> None:
        if not self.root.exists():
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreUnavailable(f"cannot create the blob folder {self.root}: {e}") from e

    def put(self, container: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        p = self._path(container, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(p)  # atomic: a reader never sees half a blob

    def get(self, container: str, name: str) -> bytes:
        p = self._path(container, name)
        if not p.is_file():
            raise NotFound(f"blob {container}/{name} not found")
        return p.read_bytes()

    def exists(self, container: str, name: str) -> bool:
        return self._path(container, name).is_file()

    def delete(self, container: str, name: str) -> None:
        p = self._path(container, name)
        if not p.is_file():
            raise NotFound(f"blob {container}/{name} not found")
        p.unlink()

    def list(self, container: str, prefix: str = "") -> list[str]:
        base = self.root / container
        if not base.is_dir():
            return []
        out = []
        for p in base.rglob("*"):
            if p.is_file() and not p.name.endswith(".part"):
                rel = p.relative_to(base).as_posix()
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)
