"""The sync engine's document-change hook for tests: collects (tenant, document id, op) per changed document."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def collect_changes(into: list[tuple[str, str, str]]) -> Callable[[str, Sequence[tuple[Any, ...]]], None]:
    """A hook that appends one (tenant, document id, op) per change of each page the engine announces."""

    def hook(tenant_id: str, refs: Sequence[tuple[Any, ...]]) -> None:
        into.extend((tenant_id, r[0], r[1]) for r in refs)

    return hook
