"""The test-server plugin itself: missing npm packages skip locally but fail under CI, and
``real_cosmos_only`` runs only against a real account."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import fixtures


def test_missing_npm_package_skips_with_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fixtures, "NODE_MODULES", tmp_path / "node_modules")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install-test-deps.sh"):
        fixtures._require_node_package("azurite")


def test_missing_npm_package_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fixtures, "NODE_MODULES", tmp_path / "node_modules")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        fixtures._require_node_package("@vercel/cosmosdb-server")


def test_installed_packages_are_found() -> None:
    if not (fixtures.NODE_MODULES / "azurite").is_dir():
        pytest.skip("npm test servers not installed")
    assert Path(fixtures._require_node_package("azurite")).name.startswith("node")


class _Item:
    """Just enough of a pytest item for the marker hook."""

    def __init__(self, marker: pytest.Mark | None) -> None:
        self.marker = marker

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return self.marker if name == "real_cosmos_only" else None


def test_real_cosmos_only_skips_without_an_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASTIEL_COSMOS_ENDPOINT", raising=False)
    monkeypatch.delenv("CASTIEL_COSMOS_KEY", raising=False)
    mark = pytest.mark.real_cosmos_only("GROUP BY").mark
    with pytest.raises(pytest.skip.Exception, match="GROUP BY"):
        fixtures.pytest_runtest_setup(_Item(mark))  # type: ignore[arg-type]
    fixtures.pytest_runtest_setup(_Item(None))  # type: ignore[arg-type]  # unmarked tests run

    monkeypatch.setenv("CASTIEL_COSMOS_ENDPOINT", "https://example.documents.azure.com:443/")
    monkeypatch.setenv("CASTIEL_COSMOS_KEY", "a2V5")
    fixtures.pytest_runtest_setup(_Item(mark))  # type: ignore[arg-type]  # with an account it runs


def test_self_signed_cert_is_fresh_and_names_loopback(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from cryptography import x509

    cert_path, key_path = fixtures.write_self_signed_cert(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert key_path.stat().st_mode & 0o077 == 0
