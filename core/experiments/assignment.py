"""Deterministic, sticky assignment of units (users, conversations) to experiment variants.

How a unit finds its variant:

1. ``bucket = blake2b(f"{seed}:{unit_id}", digest_size=8) as big-endian uint64 mod 10_000``.
   The seed is the experiment's own, so one unit lands independently in different experiments,
   and any service (in any language) that knows the seed computes the same bucket.
2. An :class:`Allocation` maps each of the 10,000 buckets to a variant (stored as ranges).
   At launch variants get contiguous ranges sized by weight (largest remainder, so weights
   are honoured to 0.01 percentage points).
3. Re-weighting (:meth:`Allocation.reweight`) moves the fewest buckets possible: a variant that
   loses weight releases its highest-numbered buckets and only those go to variants that gain.
   Units in every other bucket keep their variant without any lookup.
4. For the units that *were* in a released bucket, stickiness comes from the assignment log
   (:class:`StickyAssigner`): the first variant a unit was served is recorded and served again,
   so a re-weighting never moves an already-assigned unit; only new units see the new weights.

A stopped (or draft, or concluded) experiment serves the control to everyone and enrols no one;
so does a running experiment for a tenant it does not target.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import Invalid

BUCKETS = 10_000
_WEIGHT_TOLERANCE = 1e-6


def bucket_of(seed: str, unit_id: str) -> int:
    """The unit's bucket in ``[0, BUCKETS)`` for this experiment seed (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}:{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def validate_weights(weights: Sequence[Any], names: Sequence[str] | None = None) -> list[float]:
    """Weights are percentages, one per variant, non-negative, summing to 100."""
    if len(weights) < 2:
        raise Invalid(f"an experiment needs at least two variants (a control and a treatment); got {len(weights)}")
    out: list[float] = []
    for i, w in enumerate(weights):
        label = names[i] if names and i < len(names) else f"variant {i + 1}"
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise Invalid(f"weight of {label} must be a number, got {w!r}") from None
        if not math.isfinite(value) or value < 0:
            raise Invalid(f"weight of {label} must be a percentage between 0 and 100, got {w!r}")
        out.append(value)
    total = sum(out)
    if abs(total - 100.0) > _WEIGHT_TOLERANCE:
        raise Invalid(f"variant weights must sum to 100; they sum to {total:g} ({', '.join(f'{w:g}' for w in out)})")
    return out


def bucket_targets(weights: Sequence[float]) -> list[int]:
    """How many of the 10,000 buckets each variant gets (largest remainder, ties to the earlier variant)."""
    ws = validate_weights(weights)
    exact = [w / 100.0 * BUCKETS for w in ws]
    counts = [math.floor(x + 1e-9) for x in exact]
    short = BUCKETS - sum(counts)
    order = sorted(range(len(ws)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:short]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class Allocation:
    """Which variant (by index) owns each bucket, as ``(start, stop, variant_index)`` ranges covering 0..BUCKETS."""

    ranges: tuple[tuple[int, int, int], ...]

    @classmethod
    def initial(cls, weights: Sequence[float]) -> Allocation:
        ranges: list[tuple[int, int, int]] = []
        start = 0
        for i, count in enumerate(bucket_targets(weights)):
            if count:
                ranges.append((start, start + count, i))
            start += count
        return cls(tuple(ranges))

    @classmethod
    def from_table(cls, table: Sequence[int]) -> Allocation:
        if len(table) != BUCKETS:
            raise Invalid(f"an allocation table has {BUCKETS} buckets, got {len(table)}")
        ranges: list[tuple[int, int, int]] = []
        start = 0
        for b in range(1, BUCKETS + 1):
            if b == BUCKETS or table[b] != table[start]:
                ranges.append((start, b, int(table[start])))
                start = b
        return cls(tuple(ranges))

    @classmethod
    def from_json(cls, data: Sequence[Sequence[int]]) -> Allocation:
        alloc = cls(tuple((int(a), int(b), int(v)) for a, b, v in data))
        alloc._check()
        return alloc

    def to_json(self) -> list[list[int]]:
        return [list(r) for r in self.ranges]

    def _check(self) -> None:
        pos = 0
        for a, b, _ in self.ranges:
            if a != pos or b <= a:
                raise Invalid("a stored allocation does not cover the buckets exactly once; recreate the experiment")
            pos = b
        if pos != BUCKETS:
            raise Invalid("a stored allocation does not cover all buckets; recreate the experiment")

    def table(self) -> list[int]:
        out = [0] * BUCKETS
        for a, b, v in self.ranges:
            out[a:b] = [v] * (b - a)
        return out

    def counts(self, variants: int) -> list[int]:
        out = [0] * variants
        for a, b, v in self.ranges:
            out[v] += b - a
        return out

    def reweight(self, weights: Sequence[float]) -> Allocation:
        """New allocation for new weights that keeps as many buckets with their variant as possible.

        A variant over its new target releases its highest-numbered buckets; the released buckets,
        in ascending order, fill the variants under target. The number of buckets that change hands
        is exactly half the L1 distance between the old and new bucket counts (the minimum).
        """
        targets = bucket_targets(weights)
        table = self.table()
        current = self.counts(len(targets))
        if any(v >= len(targets) for v in set(table)):
            raise Invalid("new weights must name every existing variant; variants cannot be removed while running")
        released: list[int] = []
        for v, (have, want) in enumerate(zip(current, targets, strict=True)):
            if have > want:
                owned = [b for b in range(BUCKETS - 1, -1, -1) if table[b] == v]
                released.extend(owned[: have - want])
        released.sort()
        pos = 0
        for v, (have, want) in enumerate(zip(current, targets, strict=True)):
            for b in released[pos : pos + max(0, want - have)]:
                table[b] = v
            pos += max(0, want - have)
        return Allocation.from_table(table)


@dataclass(frozen=True)
class Assignment:
    """What to serve one unit: the variant, whether the unit is in the experiment, and why."""

    variant: str
    enrolled: bool
    reason: str


class AssignmentLog(Protocol):
    """Remembers the first variant each unit was served (the service backs it with the store)."""

    def get(self, unit_id: str) -> str | None: ...

    def put(self, unit_id: str, variant: str) -> str:
        """Record ``variant`` unless the unit already has one; return the variant that is recorded."""
        ...


class DictAssignmentLog:
    """In-memory assignment log for simulations, benchmarks and tests."""

    def __init__(self) -> None:
        self.variants: dict[str, str] = {}

    def get(self, unit_id: str) -> str | None:
        return self.variants.get(unit_id)

    def put(self, unit_id: str, variant: str) -> str:
        return self.variants.setdefault(unit_id, variant)


class Assigner:
    """Maps unit ids to variant names for one experiment; the hot path is one hash and one list lookup."""

    def __init__(self, seed: str, variants: Sequence[str], allocation: Allocation, control: str | None = None) -> None:
        if len(set(variants)) != len(variants):
            raise Invalid(f"variant names must be unique, got {list(variants)}")
        self.seed = seed
        self.variants = list(variants)
        self.control = control if control is not None else self.variants[0]
        if self.control not in self.variants:
            raise Invalid(f"control {self.control!r} is not one of the variants {self.variants}")
        self.allocation = allocation
        table = allocation.table()
        if max(table) >= len(self.variants):
            raise Invalid("the allocation names a variant index the experiment does not have")
        self._names = [self.variants[v] for v in table]
        # blake2b(seed + ":" + unit) == a copy of the seeded hasher updated with the unit; copying skips re-hashing.
        self._seeded = hashlib.blake2b(f"{seed}:".encode(), digest_size=8)

    @classmethod
    def from_weights(cls, seed: str, variants: Sequence[str], weights: Sequence[float]) -> Assigner:
        validate_weights(weights, variants)
        if len(weights) != len(variants):
            raise Invalid(f"{len(variants)} variants but {len(weights)} weights; give one weight per variant")
        return cls(seed, variants, Allocation.initial(weights))

    def bucket(self, unit_id: str) -> int:
        h = self._seeded.copy()
        h.update(unit_id.encode())
        return int.from_bytes(h.digest(), "big") % BUCKETS

    def assign(self, unit_id: str) -> str:
        """The variant this unit's bucket maps to under the current allocation (no stickiness)."""
        h = self._seeded.copy()
        h.update(unit_id.encode())
        return self._names[int.from_bytes(h.digest(), "big") % BUCKETS]

    def assign_many(self, unit_ids: Sequence[str]) -> list[str]:
        names, seeded = self._names, self._seeded
        out: list[str] = []
        append = out.append
        for unit_id in unit_ids:
            h = seeded.copy()
            h.update(unit_id.encode())
            append(names[int.from_bytes(h.digest(), "big") % BUCKETS])
        return out

    def reweighted(self, weights: Sequence[float]) -> Assigner:
        validate_weights(weights, self.variants)
        if len(weights) != len(self.variants):
            raise Invalid(f"{len(self.variants)} variants but {len(weights)} weights; give one weight per variant")
        return Assigner(self.seed, self.variants, self.allocation.reweight(weights), self.control)


class StickyAssigner:
    """Serves each unit the variant it first got; status and targeting decide who is enrolled at all."""

    def __init__(
        self,
        assigner: Assigner,
        log: AssignmentLog,
        status: str = "running",
        target_tenants: Sequence[str] | None = None,
    ) -> None:
        self.assigner = assigner
        self.log = log
        self.status = status
        self.target_tenants = set(target_tenants or [])

    def decide(self, unit_id: str, tenant_id: str | None = None) -> Assignment:
        control = self.assigner.control
        if self.status != "running":
            return Assignment(control, False, f"experiment is {self.status}; serving the control")
        if self.target_tenants and tenant_id not in self.target_tenants:
            return Assignment(control, False, "tenant is not targeted; serving the control")
        known = self.log.get(unit_id)
        if known is not None:
            return Assignment(known, True, "sticky: unit was assigned before")
        variant = self.log.put(unit_id, self.assigner.assign(unit_id))
        return Assignment(variant, True, "assigned by bucket")


def split_counts(assigned: Sequence[str] | Mapping[str, str], variants: Sequence[str]) -> dict[str, int]:
    """How many units each variant got (for checks against the weights)."""
    values = assigned.values() if isinstance(assigned, Mapping) else assigned
    counts = dict.fromkeys(variants, 0)
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts
