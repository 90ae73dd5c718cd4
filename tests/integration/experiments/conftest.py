"""Fixtures for the prompts/experiments services on a real SQLite store."""

from __future__ import annotations

from typing import Any

import pytest

from core.bootstrap import Services
from core.services.access import ADMIN, ML_ENGINEER, Principal
from core.services.prompts import seed_prompts
from tests.conftest import make_user


@pytest.fixture
def admin(services: Services, two_tenants: tuple[str, str]) -> Principal:
    return make_user(services, ADMIN, None, "root@example.com")


@pytest.fixture
def seeded(services: Services, admin: Principal) -> Services:
    seed_prompts(services, admin)
    return services


@pytest.fixture
def ml(seeded: Services) -> Principal:
    """A platform-wide ML engineer (no home tenant)."""
    return make_user(seeded, ML_ENGINEER, None, "ml@example.com")


def new_experiment(services: Services, who: Principal, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        name="Router rules", hypothesis="v2 rules raise thumbs-up", slot="intent_classification",
        variants=[{"name": "control", "version": 1, "weight": 50}, {"name": "treatment", "version": 2, "weight": 50}],
        primary_metric="thumbs_up", secondary_metrics=["tokens"], guardrails=[{"metric": "latency_ms",
                                                                                "tolerance": 0.1}],
        target_tenants=["tenant-a"], min_runtime_days=0, planned_units_per_arm=2000,
    )
    args.update(kw)
    return services.experiments.create(who, **args)
