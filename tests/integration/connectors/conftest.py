"""Fixtures for the connector integration tests: each vendor fake on loopback, a recording retry policy, a sync loop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.base import Connector, MemoryTokenStore, Record
from connectors.retry import RetryPolicy
from tests.fakes.vendors.catalog import CASES, VendorCase
from tests.fakes.vendors.server import FakeVendor


class Sleeps(list):
    """Stands in for time.sleep inside the retry policy: records the waits, sleeps not at all."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@dataclass
class Vendor:
    case: VendorCase
    fake: FakeVendor
    sleeps: Sleeps
    tokens: MemoryTokenStore

    def connector(self, http_timeout: float = 5.0, max_attempts: int = 4, **config: Any) -> Connector:
        retry = RetryPolicy(max_attempts=max_attempts, base_delay=0.001, max_delay=0.01, sleep=self.sleeps)
        return self.case.connector(self.fake, retry=retry, token_store=self.tokens, http_timeout=http_timeout, **config)


@dataclass
class SyncResult:
    """What a run did: records by id as a store would hold them, and the state it committed."""

    store: dict[str, Record] = field(default_factory=dict)
    read: list[str] = field(default_factory=list)
    skipped: list[tuple[str | None, str]] = field(default_factory=list)
    state: dict[str, Any] | None = None
    pages: int = 0
    error: Exception | None = None


def sync(
    connector: Connector,
    stream: str,
    state: dict[str, Any] | None = None,
    store: dict[str, Record] | None = None,
    full: bool = False,
) -> SyncResult:
    """Read pages like the engine: store each page's records, then commit its state; stop at an error."""
    result = SyncResult(store={} if store is None else store, state=state)
    try:
        for page in connector.read_pages(stream, state, full=full):
            for record in page.records:
                if record.deleted:
                    result.store.pop(record.source_id, None)
                else:
                    result.store[record.source_id] = record
                result.read.append(record.source_id)
            result.skipped += page.skipped
            if page.next_state is not None:
                result.state = page.next_state
            result.pages += 1
    except Exception as exc:  # the caller asserts on the kind
        result.error = exc
    return result


def _start(provider: str, **kwargs: Any) -> Vendor:
    case = CASES[provider]
    return Vendor(case, case.start(**kwargs), Sleeps(), MemoryTokenStore())


@pytest.fixture(params=sorted(CASES))
def vendor(request: pytest.FixtureRequest) -> Iterator[Vendor]:
    """Each vendor's fake with 5 pages of its main stream (page size 10)."""
    v = _start(request.param, records=50, page_size=10)
    yield v
    v.fake.stop()


@pytest.fixture
def start_vendor() -> Iterator[Any]:
    started: list[Vendor] = []

    def start(provider: str, **kwargs: Any) -> Vendor:
        v = _start(provider, **kwargs)
        started.append(v)
        return v

    yield start
    for v in started:
        v.fake.stop()
