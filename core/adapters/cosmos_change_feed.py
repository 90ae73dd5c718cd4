"""The Cosmos DB change feed for the embedding pipeline: one lease document per feed range, continuation
tokens kept in the leases container, and a lag estimate (the SQLite path uses the outbox in core.embeddings.changes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core import clock
from core.adapters.store import Doc


@dataclass
class FeedBatch:
    range_id: str
    documents: list[Doc]
    continuation: str | None


class CosmosChangeFeed:
    """Reads the ``documents`` container's change feed with continuation tokens kept in ``leases``.

    One lease document per feed range (``lease:<range id>``) holds the continuation token, the
    owner and a lease expiry, so several workers split the ranges between them and a dead
    worker's ranges are picked up when its lease lapses. Deletes are not in Cosmos DB's
    latest-version feed: the sync engine still records them with ``record_document_change``.
    """

    def __init__(self, container: Any, leases: Any, owner: str, lease_seconds: float = 60.0) -> None:
        self.container = container  # azure.cosmos ContainerProxy of "documents"
        self.leases = leases  # ContainerProxy of "leases" (partition key /id)
        self.owner = owner
        self.lease_seconds = lease_seconds

    def feed_ranges(self) -> list[Any]:
        return list(self.container.read_feed_ranges())

    @staticmethod
    def range_id(feed_range: Any) -> str:
        import hashlib
        import json

        return hashlib.sha1(json.dumps(feed_range, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _acquire(self, rid: str) -> Doc | None:
        from azure.core import MatchConditions
        from azure.cosmos import exceptions

        now = clock.now()
        try:
            lease = self.leases.read_item(f"lease:{rid}", partition_key=f"lease:{rid}")
        except exceptions.CosmosResourceNotFoundError:
            lease = {"id": f"lease:{rid}", "continuation": None}
            try:
                return dict(self.leases.create_item({**lease, "owner": self.owner,
                                                     "leaseUntil": clock.iso_in(self.lease_seconds)}))
            except exceptions.CosmosResourceExistsError:
                return None
        if lease.get("owner") not in (None, self.owner) and lease.get("leaseUntil", "") > clock.iso(now):
            return None
        lease.update(owner=self.owner, leaseUntil=clock.iso_in(self.lease_seconds))
        try:
            return dict(self.leases.replace_item(lease["id"], lease, etag=lease["_etag"],
                                                 match_condition=MatchConditions.IfNotModified))
        except exceptions.CosmosAccessConditionFailedError:
            return None

    def read(self, max_items: int = 100) -> Iterator[FeedBatch]:
        """For each feed range this worker can lease: the next page of changed documents."""
        for feed_range in self.feed_ranges():
            rid = self.range_id(feed_range)
            lease = self._acquire(rid)
            if lease is None:
                continue
            kwargs: dict[str, Any] = {"feed_range": feed_range, "max_item_count": max_items}
            if lease.get("continuation"):
                kwargs["continuation"] = lease["continuation"]
            else:
                kwargs["start_time"] = "Beginning"
            pager = self.container.query_items_change_feed(**kwargs).by_page()
            docs: list[Doc] = []
            for page in pager:
                docs.extend(page)
                break
            token = self.container.client_connection.last_response_headers.get("etag")
            yield FeedBatch(rid, docs, token)

    def commit(self, batch: FeedBatch) -> None:
        """Store the continuation after the batch's documents are recorded as changes."""
        lease = self.leases.read_item(f"lease:{batch.range_id}", partition_key=f"lease:{batch.range_id}")
        lease["continuation"] = batch.continuation
        lease["leaseUntil"] = clock.iso_in(self.lease_seconds)
        self.leases.replace_item(lease["id"], lease)

    def estimate_lag(self) -> dict[str, int]:
        """Per feed range: how many changes lie beyond the stored continuation (0 means caught up)."""
        out: dict[str, int] = {}
        for feed_range in self.feed_ranges():
            rid = self.range_id(feed_range)
            try:
                lease = self.leases.read_item(f"lease:{rid}", partition_key=f"lease:{rid}")
            except Exception:
                lease = {}
            kwargs: dict[str, Any] = {"feed_range": feed_range, "max_item_count": 1000}
            if lease.get("continuation"):
                kwargs["continuation"] = lease["continuation"]
            else:
                kwargs["start_time"] = "Beginning"
            n = 0
            for page in self.container.query_items_change_feed(**kwargs).by_page():
                n += sum(1 for _ in page)
                break
            out[rid] = n
        return out
