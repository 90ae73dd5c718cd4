"""Shared fixtures: settings on a temp data dir, services on a fresh SQLite store, principals per role."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.bootstrap import Services, build
from core.config import load_settings
from core.migrate import migrate
from core.services.access import ADMIN, ROLES, SYSTEM, Principal

PASSWORD = "correct-horse-battery"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def services(data_dir: Path) -> Iterator[Services]:
    svc = build(load_settings(data_dir=data_dir))
    migrate(svc)
    yield svc
    svc.store.close()


@pytest.fixture
def two_tenants(services: Services) -> tuple[str, str]:
    services.tenants.create(SYSTEM, "tenant-a", "Tenant A", reason="test")
    services.tenants.create(SYSTEM, "tenant-b", "Tenant B", reason="test")
    return "tenant-a", "tenant-b"


def make_user(services: Services, role: str, tenant: str | None, email: str | None = None) -> Principal:
    email = email or f"{role}-{tenant or 'all'}@example.com"
    user, _ = services.users.create(
        SYSTEM, email, role, None if role == ADMIN else tenant, password=PASSWORD, reason="test"
    )
    p = services.users.current(user["id"])
    assert p is not None
    return p


@pytest.fixture
def principals(services: Services, two_tenants: tuple[str, str]) -> dict[str, Principal]:
    """One user per role in tenant-a (the admin is platform-wide)."""
    return {role: make_user(services, role, two_tenants[0]) for role in ROLES}


@pytest.fixture
def app_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Streamlit app (AppTest) at the test's data dir."""
    monkeypatch.setenv("CASTIEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("CASTIEL_STORE", raising=False)
    monkeypatch.delenv("CASTIEL_BLOB", raising=False)
    return data_dir


def in_ci() -> bool:
    return os.environ.get("CI") == "true"
