"""One table of the vendor fakes: how to start each one and what a correct sync of its main stream ends with.

Used by the connector integration tests, the sync-engine tests and ``bench/``:

    case = CASES["salesforce"]
    fake = case.start(records=100_000, page_size=2000)      # a started FakeVendor
    connector = case.connector(fake, retry=fast_policy())    # the real connector, pointed at it
    ... read case.stream ...; fake.stop()
    case.expected(fake)                                       # source ids a complete sync must hold

``python -m tests.fakes.vendors.serve <provider> --records N`` runs one in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import Connector, TokenStore, build_connector
from connectors.retry import RetryPolicy
from tests.fakes.vendors.dynamics365 import FakeDynamics
from tests.fakes.vendors.gdrive import FOLDER, FakeGoogleDrive
from tests.fakes.vendors.hubspot import FakeHubSpot
from tests.fakes.vendors.msgraph import FakeGraph
from tests.fakes.vendors.notion import FakeNotion
from tests.fakes.vendors.salesforce import FakeSalesforce
from tests.fakes.vendors.server import FakeVendor
from tests.fakes.vendors.slack import FakeSlack


def _ids(table: str) -> Callable[[FakeVendor], set[str]]:
    return lambda fake: fake.expected_ids(table)


def _nth_id(table: str) -> Callable[[FakeVendor, int], str]:
    def pick(fake: FakeVendor, n: int) -> str:
        rows = [r for r in fake.table(table).live() if not r.get("folder") and r.get("mimeType") != FOLDER]
        return str(rows[n]["id"])

    return pick


def _graph_expected(fake: FakeVendor) -> set[str]:
    t = fake.table("items")
    return {rid for rid, row in t.rows.items() if not row.get("folder")} - t.malformed


def _drive_expected(fake: FakeVendor) -> set[str]:
    t = fake.table("files")
    return {rid for rid, row in t.rows.items() if row["mimeType"] != FOLDER} - t.malformed


def _slack_nth(fake: FakeVendor, n: int) -> str:
    assert isinstance(fake, FakeSlack)
    channel = sorted(fake.messages)[0]
    return f"{channel}:{fake.messages[channel][n]['ts']}"


def _slack_malform(fake: FakeVendor, source_id: str) -> None:
    assert isinstance(fake, FakeSlack)
    channel, ts = source_id.split(":", 1)
    fake.malform(channel, ts)


def _table_malform(table: str) -> Callable[[FakeVendor, str], None]:
    return lambda fake, source_id: fake.table(table).malform(source_id)


@dataclass(frozen=True)
class VendorCase:
    provider: str
    fake_class: type[FakeVendor]
    count_kwarg: str  # the fake's keyword for the main stream's record count
    stream: str  # the connector stream that reads it
    table: str  # the fake's table behind it
    data_path: str  # regex of the data endpoint (where faults are injected)
    expected: Callable[[FakeVendor], set[str]]
    nth_id: Callable[[FakeVendor, int], str]  # source id of the n-th record in sync order
    malform: Callable[[FakeVendor, str], None]
    refresh_kind: str  # refresh_token | client_credentials | rotation | static

    def start(self, records: int | None = None, page_size: int | None = None, **kwargs: Any) -> FakeVendor:
        if records is not None:
            kwargs[self.count_kwarg] = records
        if page_size is not None:
            kwargs["page_size"] = page_size
        fake = self.fake_class(**kwargs)
        if self.refresh_kind == "rotation":
            assert isinstance(fake, FakeSlack)
            fake.enable_rotation()
        return fake.start()

    def connector(
        self,
        fake: FakeVendor,
        *,
        retry: RetryPolicy | None = None,
        token_store: TokenStore | None = None,
        http_timeout: float = 10.0,
        **config: Any,
    ) -> Connector:
        return build_connector(
            self.provider,
            {**fake.connector_config(), **config},
            fake.connector_credentials(),
            token_store=token_store,
            http_timeout=http_timeout,
            retry=retry,
        )


CASES: dict[str, VendorCase] = {
    "salesforce": VendorCase(
        "salesforce",
        FakeSalesforce,
        "opportunities",
        "opportunities",
        "Opportunity",
        r"/query",
        _ids("Opportunity"),
        _nth_id("Opportunity"),
        _table_malform("Opportunity"),
        "refresh_token",
    ),
    "hubspot": VendorCase(
        "hubspot",
        FakeHubSpot,
        "deals",
        "deals",
        "deals",
        r"/search$",
        _ids("deals"),
        _nth_id("deals"),
        _table_malform("deals"),
        "refresh_token",
    ),
    "dynamics365": VendorCase(
        "dynamics365",
        FakeDynamics,
        "opportunities",
        "opportunities",
        "opportunities",
        r"/api/data/v9\.2/opportunities",
        _ids("opportunities"),
        _nth_id("opportunities"),
        _table_malform("opportunities"),
        "client_credentials",
    ),
    "msgraph": VendorCase(
        "msgraph",
        FakeGraph,
        "files",
        "drive_items",
        "items",
        r"/root/delta",
        _graph_expected,
        _nth_id("items"),
        _table_malform("items"),
        "client_credentials",
    ),
    "gdrive": VendorCase(
        "gdrive",
        FakeGoogleDrive,
        "files",
        "files",
        "files",
        r"/drive/v3/files$",
        _drive_expected,
        _nth_id("files"),
        _table_malform("files"),
        "refresh_token",
    ),
    "slack": VendorCase(
        "slack",
        FakeSlack,
        "messages",
        "messages",
        "messages",
        r"conversations\.history",
        lambda fake: fake.expected_ids(),
        _slack_nth,
        _slack_malform,
        "rotation",
    ),
    "notion": VendorCase(
        "notion",
        FakeNotion,
        "pages",
        "pages",
        "pages",
        r"/v1/search",
        _ids("pages"),
        _nth_id("pages"),
        _table_malform("pages"),
        "static",
    ),
}
