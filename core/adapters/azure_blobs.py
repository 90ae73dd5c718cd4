"""Azure Blob Storage backend of the blob store (same container names as the local folder backend).

Built from a connection string (``AZURE_STORAGE_CONNECTION_STRING``); tested against Azurite.
``download_url`` hands the browser a read-only SAS URL that expires in minutes, signed with the
account key from the connection string, so large outputs never stream through the console.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn, TypeVar

from core.adapters.blobs import CONTAINERS, BlobStore, check_name
from core.errors import Invalid, NotFound, StoreUnavailable

if TYPE_CHECKING:  # the SDK is imported lazily so core stays importable without it
    from azure.storage.blob import BlobServiceClient, ContainerClient

T = TypeVar("T")
# A SAS starts a little in the past: the storage service's clock may run behind ours.
_CLOCK_SKEW = timedelta(minutes=5)


class AzureBlobStore(BlobStore):
    backend = "azure"

    def __init__(self, connection_string: str, *, timeout_s: float = 10.0, retry_total: int = 3) -> None:
        if not connection_string or "=" not in connection_string:
            raise Invalid("AZURE_STORAGE_CONNECTION_STRING is empty or not a connection string (Key=Value;...)")
        self._connection_string = connection_string
        self.timeout_s = timeout_s
        self.retry_total = retry_total
        self._lock = threading.Lock()
        self._service: BlobServiceClient | None = None

    # client ------------------------------------------------------------------------------
    def _client(self) -> BlobServiceClient:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    from azure.storage.blob import BlobServiceClient

                    try:
                        self._service = BlobServiceClient.from_connection_string(
                            self._connection_string,
                            connection_timeout=self.timeout_s,
                            read_timeout=max(self.timeout_s, 60.0),
                            retry_total=self.retry_total,
                        )
                    except ValueError as e:
                        raise Invalid(f"AZURE_STORAGE_CONNECTION_STRING is not usable: {e}") from e
        return self._service

    @property
    def endpoint(self) -> str:
        return str(self._client().url)

    def _container(self, container: str) -> ContainerClient:
        if container not in CONTAINERS:
            raise Invalid(f"unknown blob container {container!r}; use one of {', '.join(CONTAINERS)}")
        return self._client().get_container_client(container)

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
            self._service = None

    def _unavailable(self, e: Exception) -> NoReturn:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        where = f"Azure Blob Storage at {self.endpoint}"
        if isinstance(e, ClientAuthenticationError):
            raise StoreUnavailable(
                f"{where} refused the credentials: check the AccountKey in AZURE_STORAGE_CONNECTION_STRING"
            ) from e
        if isinstance(e, HttpResponseError):
            reason = (e.message or str(e)).splitlines()[0][:300]
            raise StoreUnavailable(f"{where} answered {e.status_code}: {reason}") from e
        raise StoreUnavailable(f"cannot reach {where}: {e}") from e

    def _call(self, fn: Callable[[], T]) -> T:
        from azure.core.exceptions import AzureError

        try:
            return fn()
        except AzureError as e:
            self._unavailable(e)

    # containers --------------------------------------------------------------------------
    def missing_containers(self) -> list[str]:
        service = self._client()
        have = self._call(lambda: {c["name"] for c in service.list_containers()})
        return [c for c in CONTAINERS if c not in have]

    def ensure_containers(self) -> list[str]:
        from azure.core.exceptions import AzureError, ResourceExistsError

        created = []
        for name in self.missing_containers():
            try:
                self._container(name).create_container()
                created.append(name)
            except ResourceExistsError:  # another migrate created it meanwhile
                pass
            except AzureError as e:
                self._unavailable(e)
        return created

    def ping(self) -> None:
        service = self._client()
        # One small listing call: proves the endpoint answers and the key signs.
        self._call(lambda: next(iter(service.list_containers(results_per_page=1).by_page()), None))

    # blobs -------------------------------------------------------------------------------
    def put(self, container: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from azure.storage.blob import ContentSettings

        blob = self._container(container).get_blob_client(check_name(name))
        self._call(
            lambda: blob.upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type=content_type))
        )

    def get(self, container: str, name: str) -> bytes:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        blob = self._container(container).get_blob_client(check_name(name))
        try:
            return bytes(blob.download_blob().readall())
        except ResourceNotFoundError:
            raise NotFound(f"blob {container}/{name} not found") from None
        except AzureError as e:
            self._unavailable(e)

    def exists(self, container: str, name: str) -> bool:
        blob = self._container(container).get_blob_client(check_name(name))
        return bool(self._call(blob.exists))

    def delete(self, container: str, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        blob = self._container(container).get_blob_client(check_name(name))
        try:
            blob.delete_blob()
        except ResourceNotFoundError:
            raise NotFound(f"blob {container}/{name} not found") from None
        except AzureError as e:
            self._unavailable(e)

    def list(self, container: str, prefix: str = "") -> list[str]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        client = self._container(container)
        try:
            return sorted(client.list_blob_names(name_starts_with=prefix or None))
        except ResourceNotFoundError:  # container not created yet: empty, like the local folder
            return []
        except AzureError as e:
            self._unavailable(e)

    def download_url(self, container: str, name: str, expiry_minutes: int = 15) -> str | None:
        """A read-only SAS URL valid for ``expiry_minutes``; None when the connection string has no
        account key to sign with (for example a SAS-only connection string)."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        if not 0 < expiry_minutes <= 24 * 60:
            raise Invalid(f"expiry_minutes must be between 1 and 1440, got {expiry_minutes}")
        blob = self._container(container).get_blob_client(check_name(name))
        credential = self._client().credential
        account_key = getattr(credential, "account_key", None)
        if not account_key:
            return None
        now = datetime.now(UTC)
        sas = generate_blob_sas(
            account_name=blob.account_name or credential.account_name,
            container_name=container,
            blob_name=name,
            account_key=account_key,
            permission=BlobSasPermissions(read=True),
            start=now - _CLOCK_SKEW,
            expiry=now + timedelta(minutes=expiry_minutes),
        )
        return f"{blob.url}?{sas}"
