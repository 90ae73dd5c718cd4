"""Create the store's containers and blob containers and fill in tenant setting defaults; idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.bootstrap import Services
from core.schema import CONTAINERS


@dataclass
class MigrationReport:
    created: list[str] = field(default_factory=list)
    blob_containers: list[str] = field(default_factory=list)
    tenants_defaulted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.blob_containers or self.tenants_defaulted)

    def lines(self) -> list[str]:
        return [
            f"store containers/indexes: {', '.join(self.created) or 'none'}",
            f"blob containers: {', '.join(self.blob_containers) or 'none'}",
            f"tenants given default settings: {', '.join(self.tenants_defaulted) or 'none'}",
        ]


def migrate(services: Services, check: bool = False) -> MigrationReport:
    """Apply (or with ``check`` only report) what is missing. Raises StoreUnavailable if unreachable."""
    services.store.ping()
    services.blobs.ping()
    if check:
        report = MigrationReport(
            created=services.store.missing_containers(CONTAINERS),
            blob_containers=services.blobs.missing_containers(),
        )
        if "table tenants" not in report.created and "tenants" not in report.created:
            report.tenants_defaulted = services.tenants.tenants_missing_defaults()
        return report
    report = MigrationReport(
        created=services.store.ensure_containers(CONTAINERS),
        blob_containers=services.blobs.ensure_containers(),
    )
    report.tenants_defaulted = services.tenants.fill_default_settings()
    return report
