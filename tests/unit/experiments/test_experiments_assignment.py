"""Assignment: deterministic, sticky, honours weights, re-weighting keeps assigned units, stopping serves control."""

from __future__ import annotations

import pytest

from core.errors import Invalid
from core.experiments.assignment import (
    BUCKETS,
    Allocation,
    Assigner,
    DictAssignmentLog,
    StickyAssigner,
    bucket_of,
    bucket_targets,
    split_counts,
    validate_weights,
)

VARIANTS = ["control", "concise", "verbose"]


def test_one_million_units_split_within_half_a_percent_of_weights() -> None:
    weights = [50.0, 30.0, 20.0]
    assigner = Assigner.from_weights("exp-seed-1", VARIANTS, weights)
    units = [f"user-{i}" for i in range(1_000_000)]
    counts = split_counts(assigner.assign_many(units), VARIANTS)
    for name, w in zip(VARIANTS, weights, strict=True):
        share = counts[name] / len(units)
        assert abs(share - w / 100) < 0.005, (name, share)


def test_assignment_is_deterministic_and_matches_the_documented_hash() -> None:
    a = Assigner.from_weights("seed-x", ["control", "treatment"], [50, 50])
    b = Assigner.from_weights("seed-x", ["control", "treatment"], [50, 50])
    units = [f"u{i}" for i in range(2000)]
    assert a.assign_many(units) == b.assign_many(units)
    for u in units[:200]:
        assert a.bucket(u) == bucket_of("seed-x", u)
        assert a.assign(u) == ("control" if bucket_of("seed-x", u) < BUCKETS // 2 else "treatment")
    # another experiment seed shuffles units independently
    other = Assigner.from_weights("seed-y", ["control", "treatment"], [50, 50]).assign_many(units)
    agree = sum(x == y for x, y in zip(a.assign_many(units), other, strict=True)) / len(units)
    assert 0.45 < agree < 0.55


def test_reweighting_keeps_every_assigned_unit_in_place() -> None:
    log = DictAssignmentLog()
    first = StickyAssigner(Assigner.from_weights("seed-r", ["control", "treatment"], [50, 50]), log)
    units = [f"user-{i}" for i in range(50_000)]
    before = {u: first.decide(u).variant for u in units}

    reweighted = StickyAssigner(first.assigner.reweighted([10, 90]), log)
    after = {u: reweighted.decide(u).variant for u in units}
    assert after == before

    # new units follow the new weights
    newcomers = [f"new-{i}" for i in range(50_000)]
    counts = split_counts([reweighted.decide(u).variant for u in newcomers], ["control", "treatment"])
    assert abs(counts["treatment"] / len(newcomers) - 0.90) < 0.01


def test_reweighting_moves_only_the_minimum_number_of_buckets() -> None:
    old = Allocation.initial([50, 30, 20])
    new = old.reweight([40, 30, 30])
    old_t, new_t = old.table(), new.table()
    moved = sum(a != b for a, b in zip(old_t, new_t, strict=True))
    assert moved == BUCKETS * 10 // 100  # only the 10 points that went from control to verbose
    assert new.counts(3) == bucket_targets([40, 30, 30])
    # without any log, a unit in an unmoved bucket keeps its variant
    a_old = Assigner("s", VARIANTS, old)
    a_new = Assigner("s", VARIANTS, new)
    units = [f"u{i}" for i in range(20_000)]
    same = sum(x == y for x, y in zip(a_old.assign_many(units), a_new.assign_many(units), strict=True))
    assert same / len(units) == pytest.approx(0.90, abs=0.01)
    assert Allocation.from_json(new.to_json()) == new


def test_stopped_experiment_serves_control_and_untargeted_tenants_are_not_enrolled() -> None:
    assigner = Assigner.from_weights("seed-s", ["control", "treatment"], [0.01, 99.99])
    log = DictAssignmentLog()
    running = StickyAssigner(assigner, log, status="running", target_tenants=["tenant-a"])
    assert running.decide("u1", "tenant-a").variant == "treatment"
    other = running.decide("u2", "tenant-b")
    assert (other.variant, other.enrolled) == ("control", False)
    stopped = StickyAssigner(assigner, log, status="stopped")
    d = stopped.decide("u1", "tenant-a")
    assert (d.variant, d.enrolled) == ("control", False)
    assert "stopped" in d.reason


@pytest.mark.parametrize(
    "weights",
    [[50, 40], [60, 60], [-10, 110], [100], ["half", 50], [float("nan"), 100]],
)
def test_bad_weights_are_rejected_with_the_reason(weights: list[object]) -> None:
    with pytest.raises(Invalid) as e:
        validate_weights(weights)  # type: ignore[arg-type]
    assert "weight" in e.value.message or "variants" in e.value.message


def test_weights_must_match_variants() -> None:
    with pytest.raises(Invalid, match="one weight per variant"):
        Assigner.from_weights("s", ["a", "b", "c"], [50, 50])
    with pytest.raises(Invalid, match="unique"):
        Assigner.from_weights("s", ["a", "a"], [50, 50])
