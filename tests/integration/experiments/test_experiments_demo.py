"""The demo seeding hook: two demo tenants' simulated traffic through the events API; the results recover the truth."""

from __future__ import annotations

import pytest

from core.bootstrap import Services
from core.experiments.simulator import planted_lifts
from core.services.access import SYSTEM
from core.services.experiments import DEMO_EXPERIMENT_ID, ROLLUPS, seed_experiments_demo


@pytest.mark.slow
def test_demo_experiment_recovers_the_planted_truth(services: Services) -> None:
    for tenant in ("acme-demo", "globex-demo"):
        services.tenants.create(SYSTEM, tenant, tenant, demo=True, reason="test")
        out = seed_experiments_demo(services, tenant, SYSTEM)
        assert out["events"] > 50_000 and out["rejected"] == 0
    again = seed_experiments_demo(services, "acme-demo", SYSTEM)  # idempotent: no second batch of traffic
    assert again["events"] == 0

    exp = services.experiments.get(SYSTEM, DEMO_EXPERIMENT_ID)
    assert exp["status"] == "running" and exp["targetTenants"] == ["acme-demo", "globex-demo"]
    # one record per variant and UTC day; 21 days of traffic touch 21 or 22 calendar days
    assert services.store.count(ROLLUPS, "globex-demo", {"experimentId": DEMO_EXPERIMENT_ID}) in (42, 44)
    result, decision = services.experiments.decision(SYSTEM, DEMO_EXPERIMENT_ID)
    truth = planted_lifts()
    thumbs = result.primary.comparison("treatment")
    assert thumbs is not None and thumbs.lift_ci[0] < truth["thumbs_up"] < thumbs.lift_ci[1]
    assert thumbs.significant and thumbs.seq_ci is not None and thumbs.seq_ci[0] > 0
    tokens = result.metrics["tokens"].comparison("treatment")
    assert tokens is not None and tokens.lift_ci[0] < truth["tokens"] < tokens.lift_ci[1]
    assert not result.srm.flagged
    assert [g.status for g in result.guardrails] == ["pass"]
    assert (decision.action, decision.variant) == ("ship", "treatment")
    # a tenant-scoped view analyses that tenant's own traffic only
    acme = services.experiments.analysis(SYSTEM, DEMO_EXPERIMENT_ID, "acme-demo")
    assert sum(acme.units.values()) < sum(result.units.values())
