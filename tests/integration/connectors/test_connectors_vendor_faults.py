"""Every vendor connector against its local fake, through the vendor's own client library, with each fault.

Parametrised over salesforce, hubspot, dynamics365, msgraph, gdrive, slack and notion.
"""

from __future__ import annotations

from core.errors import ConfigError, TransientError
from tests.integration.connectors.conftest import Vendor, sync


def test_full_sync_reads_exactly_the_servers_records_and_incremental_reads_only_changes(vendor: Vendor):
    connector = vendor.connector()
    assert connector.test_connection()
    first = sync(connector, vendor.case.stream)
    assert first.error is None
    assert set(first.store) == vendor.case.expected(vendor.fake)
    assert first.pages >= 5 and first.skipped == []
    assert all(r.object_type == connector.stream(vendor.case.stream).object_type for r in first.store.values())

    changed = vendor.case.nth_id(vendor.fake, 3)
    if vendor.case.provider == "slack":
        channel = changed.split(":")[0]
        new = vendor.fake.post(channel, "a fresh message")
        changed = f"{channel}:{new['ts']}"
    else:
        vendor.fake.table(vendor.case.table).update(changed)
    second = sync(connector, vendor.case.stream, first.state, first.store)
    assert second.error is None
    assert changed in second.read
    assert len(second.read) <= 2  # the change, plus at most the boundary record of a >= cursor
    assert set(second.store) == vendor.case.expected(vendor.fake)


def test_rate_limit_is_retried_after_the_vendors_retry_after(vendor: Vendor):
    vendor.fake.faults.fail(429, times=1, match=vendor.case.data_path, retry_after=7)
    result = sync(vendor.connector(), vendor.case.stream)
    assert result.error is None
    assert 7.0 in vendor.sleeps
    assert set(result.store) == vendor.case.expected(vendor.fake)


def test_server_errors_are_retried_then_succeed(vendor: Vendor):
    vendor.fake.faults.fail(500, times=2, match=vendor.case.data_path)
    result = sync(vendor.connector(), vendor.case.stream)
    assert result.error is None
    assert vendor.fake.faults.injected == 2 and len(vendor.sleeps) >= 2
    assert set(result.store) == vendor.case.expected(vendor.fake)


def test_a_timeout_is_retried(vendor: Vendor):
    connector = vendor.connector(http_timeout=0.4)
    connector.test_connection()  # tokens fetched before the slow page
    vendor.fake.faults.slow(1.2, times=1, match=vendor.case.data_path)
    result = sync(connector, vendor.case.stream)
    assert result.error is None
    assert len(vendor.sleeps) >= 1
    assert set(result.store) == vendor.case.expected(vendor.fake)


def test_persistent_outage_surfaces_as_transient_after_the_retries(vendor: Vendor):
    vendor.fake.faults.fail(503, times=100, match=vendor.case.data_path)
    result = sync(vendor.connector(max_attempts=3), vendor.case.stream)
    assert isinstance(result.error, TransientError)
    assert len(vendor.sleeps) == 2


def test_expired_access_token_is_refreshed_and_the_sync_continues(vendor: Vendor):
    connector = vendor.connector()
    connector.test_connection()
    oauth = vendor.fake.oauth
    before = (oauth.refreshes, oauth.client_credential_grants)
    oauth.expire_access_tokens()
    result = sync(connector, vendor.case.stream)
    if vendor.case.refresh_kind == "static":
        # A Notion integration token does not expire; a 401 means it was revoked: a person must act.
        assert isinstance(result.error, ConfigError)
        return
    assert result.error is None
    assert (oauth.refreshes, oauth.client_credential_grants) != before
    assert set(result.store) == vendor.case.expected(vendor.fake)
    assert vendor.tokens.latest is not None and oauth.valid(vendor.tokens.latest["access_token"])


def test_revoked_refresh_token_is_a_config_error_that_needs_reauth(vendor: Vendor):
    connector = vendor.connector()
    vendor.fake.oauth.revoke()
    result = sync(connector, vendor.case.stream)
    assert isinstance(result.error, ConfigError)
    assert result.store == {}
    info = connector.token_info()
    if vendor.case.refresh_kind != "static":
        assert info is not None and info["last_refresh_error"]


def test_a_malformed_record_mid_page_is_skipped_and_counted(vendor: Vendor):
    bad = vendor.case.nth_id(vendor.fake, 15)  # the middle of the second page
    vendor.case.malform(vendor.fake, bad)
    result = sync(vendor.connector(), vendor.case.stream)
    assert result.error is None
    assert len(result.skipped) == 1
    skipped_id, reason = result.skipped[0]
    assert skipped_id in (bad, None) and reason
    assert bad not in result.store
    assert set(result.store) == vendor.case.expected(vendor.fake)


def test_server_dying_mid_sync_resumes_from_the_committed_state_without_gaps_or_repeats(vendor: Vendor):
    connector = vendor.connector(max_attempts=2)
    vendor.fake.faults.die_after_pages(2)
    first = sync(connector, vendor.case.stream)
    assert isinstance(first.error, TransientError)
    assert 0 < len(first.store) < len(vendor.case.expected(vendor.fake))
    assert first.state is not None

    vendor.fake.faults.revive()
    second = sync(vendor.connector(), vendor.case.stream, first.state, first.store)
    assert second.error is None
    assert set(second.store) == vendor.case.expected(vendor.fake)
    # It resumed rather than starting over: at most one boundary record is read twice.
    assert len(set(first.read) & set(second.read)) <= 1
    assert len(second.read) < len(vendor.case.expected(vendor.fake))
