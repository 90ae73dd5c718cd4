"""Fixtures for the sync engine fault tests (defined in sync_stack)."""

from __future__ import annotations

from tests.integration.sync.sync_stack import graph, hubspot, stack

__all__ = ["graph", "hubspot", "stack"]
