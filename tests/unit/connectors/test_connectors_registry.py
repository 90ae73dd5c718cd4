"""The connector registry: every provider resolves to a well-formed Connector class."""

from __future__ import annotations

import pytest

from connectors.base import CONNECTORS, PROVIDER_LABELS, Connector, build_connector, get_connector_class
from core.errors import ConfigError, Invalid

PROVIDERS = ["salesforce", "hubspot", "dynamics365", "msgraph", "gdrive", "slack", "notion", "localfiles"]
OBJECT_TYPES = {"account", "opportunity", "contact", "task", "document", "message", "row"}


def test_all_eight_providers_are_registered_with_labels():
    assert sorted(CONNECTORS) == sorted(PROVIDERS)
    assert set(PROVIDER_LABELS) == set(PROVIDERS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_connector_declares_its_streams_and_settings(provider):
    cls = get_connector_class(provider)
    assert issubclass(cls, Connector)
    assert cls.name == provider and cls.label == PROVIDER_LABELS[provider]
    names = [s.name for s in cls.streams]
    assert names and len(names) == len(set(names))
    assert {s.object_type for s in cls.streams} <= OBJECT_TYPES
    assert all(s.primary_key for s in cls.streams)
    assert all(f.secret for f in cls.credential_fields)
    assert cls.supports_write <= OBJECT_TYPES


def test_unknown_provider_and_stream_are_invalid():
    with pytest.raises(Invalid, match="Unknown provider"):
        get_connector_class("myspace")
    with pytest.raises(Invalid, match="no stream"):
        get_connector_class("localfiles").stream("invoices")


def test_missing_required_settings_are_named():
    with pytest.raises(ConfigError, match="Consumer key"):
        build_connector("salesforce", {"instance_url": "https://x.example"}, {})
    with pytest.raises(ConfigError, match="Folder"):
        build_connector("localfiles", {}, {})


def test_writes_to_unsupported_object_types_are_refused(tmp_path):
    connector = build_connector("localfiles", {"path": str(tmp_path)})
    with pytest.raises(Invalid, match="does not accept outbound writes"):
        connector.write("opportunity", None, {"amount": 1})
    with pytest.raises(Invalid, match="do not receive webhooks"):
        connector.verify_webhook({}, b"{}")
