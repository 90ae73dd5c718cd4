"""Demo data: two demo tenants, a user for each role, then each feature's demo through its real pipeline."""

from __future__ import annotations

import importlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from core.bootstrap import Services
from core.errors import Conflict
from core.services.access import ADMIN, ROLES, SYSTEM, Principal
from core.services.users import user_id_for

log = logging.getLogger(__name__)

DEMO_TENANTS = (("acme-demo", "Acme Corp (demo)"), ("globex-demo", "Globex (demo)"))

# Each feature contributes a hook ``fn(services, tenant_id, actor)`` that pushes its demo data
# through the same services and pipelines production uses. Listed in dependency order.
DEMO_HOOKS: tuple[tuple[str, str], ...] = (
    ("core.services.integrations", "seed_integrations_demo"),
    ("core.services.embeddings", "seed_embeddings_demo"),  # embeds the documents the sync just stored
    ("core.services.templates", "seed_templates_demo"),  # after integrations: configured against its CRM data
    ("core.services.models", "seed_models_demo"),  # after integrations: trains on the synced opportunities too
    ("core.services.experiments", "seed_experiments_demo"),  # seeds the prompt catalog it experiments on
    ("core.services.overview", "seed_observability_demo"),  # last: its alert cycle sees the others' data
)


@dataclass
class SeedReport:
    tenants: list[str] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # email -> role
    password: str | None = None
    hooks: list[str] = field(default_factory=list)


def ensure_admin(services: Services) -> tuple[str, str | None]:
    """Create the bootstrap admin when missing; returns (email, password if it was generated now)."""
    s = services.settings
    email = s.admin_email.strip().lower()
    if services.store.get_or_none("users", "_platform", user_id_for(email)) is not None:
        return email, None
    password = s.admin_password.get_secret_value() if s.admin_password else None
    _, generated = services.users.create(
        SYSTEM, email, ADMIN, None, name="Bootstrap admin", password=password, reason="bootstrap admin"
    )
    return email, generated


def demo_hooks() -> list[tuple[str, Callable[[Services, str, Principal], object]]]:
    out = []
    for module, fn in DEMO_HOOKS:
        out.append((f"{module}.{fn}", getattr(importlib.import_module(module), fn)))
    return out


def seed_demo(services: Services, password: str | None = None) -> SeedReport:
    """Idempotent: existing tenants and users are kept; hooks run for tenants created now."""
    report = SeedReport()
    configured = services.settings.demo_password
    password = password or (configured.get_secret_value() if configured else None) or secrets.token_urlsafe(12)
    created_tenants = []
    for tenant_id, name in DEMO_TENANTS:
        try:
            services.tenants.create(SYSTEM, tenant_id, name, demo=True, reason="demo seed")
            created_tenants.append(tenant_id)
        except Conflict:
            pass
    report.tenants = created_tenants
    for tenant_id, _ in DEMO_TENANTS:
        for role in ROLES:
            if role == ADMIN:
                continue
            email = f"{role.replace('_', '-')}@{tenant_id}.castiel.local"
            try:
                services.users.create(SYSTEM, email, role, tenant_id, password=password, reason="demo seed")
                report.users[email] = role
            except Conflict:
                pass
    if report.users:
        report.password = password
    for tenant_id in created_tenants:
        for name, hook in demo_hooks():
            log.info("demo seed: %s for %s", name, tenant_id)
            hook(services, tenant_id, SYSTEM)
            report.hooks.append(f"{name}({tenant_id})")
    return report
