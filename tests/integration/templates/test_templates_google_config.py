"""Google Docs/Slides templates in the running console: built from the configured service account."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.bootstrap import build
from core.config import load_settings
from core.errors import ConfigError, Invalid


def _service_account_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({
        "type": "service_account", "project_id": "castiel-test", "private_key_id": "k1", "private_key": pem,
        "client_email": "templates@castiel-test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    })


def test_configured_service_account_builds_the_google_client(tmp_path):
    services = build(load_settings(data_dir=tmp_path, google_service_account_json=_service_account_key(),
                                   google_impersonate="content@example.com"))
    client = services.templates._google("acme")
    creds = client._credentials
    assert creds.service_account_email == "templates@castiel-test.iam.gserviceaccount.com"
    assert creds._subject == "content@example.com"
    assert "https://www.googleapis.com/auth/drive" in creds._scopes


def test_without_a_service_account_the_message_says_what_to_set(tmp_path):
    services = build(load_settings(data_dir=tmp_path))
    with pytest.raises(ConfigError, match="CASTIEL_GOOGLE_SERVICE_ACCOUNT_JSON"):
        services.templates._google("acme")


def test_a_key_that_is_not_json_is_refused_with_the_setting_name(tmp_path):
    services = build(load_settings(data_dir=tmp_path, google_service_account_json="not json"))
    with pytest.raises(Invalid, match="CASTIEL_GOOGLE_SERVICE_ACCOUNT_JSON"):
        _ = services.templates
