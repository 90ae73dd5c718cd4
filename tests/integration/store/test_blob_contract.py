"""The blob store contract: the local folder and Azure Blob Storage (Azurite on loopback) behave alike."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.adapters.azure_blobs import AzureBlobStore
from core.adapters.blobs import CONTAINERS, BlobStore, LocalBlobStore
from core.errors import Invalid, NotFound, StoreUnavailable


@pytest.fixture(params=["local", "azurite"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    s: BlobStore
    if request.param == "local":
        s = LocalBlobStore(tmp_path / "blobs")
    else:
        s = AzureBlobStore(request.getfixturevalue("azurite_connection_string"))
    s.ensure_containers()
    yield s
    if isinstance(s, AzureBlobStore):
        s.close()


@pytest.fixture
def prefix() -> str:
    """Azurite lives for the session, so each test writes under its own tenant folder."""
    return f"t-{uuid.uuid4().hex[:10]}"


def test_put_get_exists_overwrite(blobs: BlobStore, prefix: str) -> None:
    name = f"{prefix}/outputs/report.bin"
    payload = bytes(range(256)) * 40  # binary, zero bytes included
    assert not blobs.exists("outputs", name)
    blobs.put("outputs", name, payload)
    assert blobs.exists("outputs", name)
    assert blobs.get("outputs", name) == payload
    blobs.put("outputs", name, b"v2")
    assert blobs.get("outputs", name) == b"v2"
    assert not blobs.exists("templates", name)  # containers are separate


def test_list_by_prefix_is_sorted_and_scoped(blobs: BlobStore, prefix: str) -> None:
    other = f"{prefix}x"  # shares the text prefix but is another folder
    for n in (f"{prefix}/b/2.txt", f"{prefix}/a/1.txt", f"{prefix}/b/1.txt", f"{other}/a/1.txt"):
        blobs.put("documents", n, n.encode())
    assert blobs.list("documents", f"{prefix}/") == [f"{prefix}/a/1.txt", f"{prefix}/b/1.txt", f"{prefix}/b/2.txt"]
    assert blobs.list("documents", f"{prefix}/b/") == [f"{prefix}/b/1.txt", f"{prefix}/b/2.txt"]
    assert blobs.list("documents", f"{prefix}/none/") == []
    everything = blobs.list("documents")
    assert {f"{prefix}/a/1.txt", f"{other}/a/1.txt"} <= set(everything)
    assert everything == sorted(everything)


def test_delete_and_not_found(blobs: BlobStore, prefix: str) -> None:
    name = f"{prefix}/t.docx"
    blobs.put("templates", name, b"x")
    blobs.delete("templates", name)
    assert not blobs.exists("templates", name)
    with pytest.raises(NotFound):
        blobs.get("templates", name)
    with pytest.raises(NotFound):
        blobs.delete("templates", name)
    assert blobs.list("templates", f"{prefix}/") == []


@pytest.mark.parametrize("bad", ["../x", "a/../b", "/abs", "a//b", "", ".hidden", "a\\b", "sp ace"])
def test_names_that_could_escape_are_refused(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(Invalid):
        blobs.put("outputs", bad, b"x")
    with pytest.raises(Invalid):
        blobs.get("outputs", bad)
    with pytest.raises(Invalid):
        blobs.exists("outputs", bad)
    with pytest.raises(Invalid):
        blobs.delete("outputs", bad)


def test_unknown_container_is_refused(blobs: BlobStore) -> None:
    with pytest.raises(Invalid):
        blobs.put("secrets", "a.txt", b"x")


def test_containers_are_ensured_idempotently(blobs: BlobStore) -> None:
    assert blobs.missing_containers() == []
    assert blobs.ensure_containers() == []
    blobs.ping()


def test_missing_containers_are_reported_and_created(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    local = LocalBlobStore(tmp_path / "fresh")
    assert local.missing_containers() == list(CONTAINERS)
    assert local.ensure_containers() == list(CONTAINERS)
    assert local.missing_containers() == []

    azure = AzureBlobStore(request.getfixturevalue("azurite_connection_string"))
    azure.ensure_containers()
    azure._client().delete_container("reports")  # Azurite frees the name at once (Azure takes ~30 s)
    assert azure.missing_containers() == ["reports"]
    assert azure.list("reports") == []  # listing a missing container is empty, like the local folder
    assert azure.ensure_containers() == ["reports"]
    assert azure.missing_containers() == []
    azure.close()


def test_download_url_is_a_short_read_only_sas_for_azure(blobs: BlobStore, prefix: str) -> None:
    name = f"{prefix}/out/deck.pptx"
    blobs.put("outputs", name, b"deck-bytes", content_type="application/vnd.ms-powerpoint")
    url = blobs.download_url("outputs", name, expiry_minutes=10)
    if isinstance(blobs, LocalBlobStore):
        assert url is None  # the local backend streams through the app instead
        return
    assert url is not None
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"deck-bytes"
        assert resp.headers["Content-Type"] == "application/vnd.ms-powerpoint"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["sp"] == ["r"]  # read only
    expires = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 10 * 60 + 5
    # Read-only: the same URL cannot overwrite the blob.
    put = urllib.request.Request(url, data=b"evil", method="PUT", headers={"x-ms-blob-type": "BlockBlob"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(put, timeout=10)
    assert e.value.code == 403
    # The signature is bound to this blob: pointing it at another one fails.
    other = url.replace("deck.pptx", "other.pptx", 1)
    blobs.put("outputs", f"{prefix}/out/other.pptx", b"secret")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(other, timeout=10)
    assert e.value.code == 403
    assert blobs.get("outputs", name) == b"deck-bytes"
    with pytest.raises(Invalid):
        blobs.download_url("outputs", "../x")


def test_azure_unreachable_names_the_endpoint() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=nobody;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:{port}/nobody;"
    )
    s = AzureBlobStore(conn, timeout_s=2, retry_total=0)
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        s.ping()
    with pytest.raises(StoreUnavailable):
        s.get("outputs", "a.txt")


def test_bad_connection_string_is_invalid() -> None:
    with pytest.raises(Invalid, match="AZURE_STORAGE_CONNECTION_STRING"):
        AzureBlobStore("")
