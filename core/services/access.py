"""Who is acting and what they may touch: roles, the acting principal, and the one tenant check."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import Forbidden

ADMIN, OPS, ML_ENGINEER, CONTENT_ADMIN, SUPPORT = "admin", "ops", "ml_engineer", "content_admin", "support"
ROLES: tuple[str, ...] = (ADMIN, OPS, ML_ENGINEER, CONTENT_ADMIN, SUPPORT)
ROLE_LABELS = {
    ADMIN: "Admin (all tenants)",
    OPS: "Ops",
    ML_ENGINEER: "ML engineer",
    CONTENT_ADMIN: "Content admin",
    SUPPORT: "Support",
}
ANY_ROLE: frozenset[str] = frozenset(ROLES)


@dataclass(frozen=True)
class Principal:
    """The acting user. ``tenant_id`` None means platform-wide (sees every tenant)."""

    user_id: str
    email: str
    role: str
    tenant_id: str | None = None
    name: str = ""

    @property
    def platform_wide(self) -> bool:
        return self.role == ADMIN or self.tenant_id is None

    def can_see_tenant(self, tenant_id: str) -> bool:
        return self.platform_wide or self.tenant_id == tenant_id


# The worker and CLI act as this principal; every action it takes is still audited under its name.
SYSTEM = Principal(user_id="system", email="system@castiel.local", role=ADMIN, tenant_id=None, name="system")


def require(principal: Principal | None, tenant_id: str | None = None, roles: Iterable[str] = ANY_ROLE) -> Principal:
    """Refuse unless ``principal`` has one of ``roles`` and may act on ``tenant_id``.

    Called by every service method that reads or writes tenant data, so tenant scoping is
    enforced in core whatever the page asked for.
    """
    if principal is None:
        raise Forbidden("you are not signed in")
    allowed = set(roles)
    if principal.role not in allowed:
        names = ", ".join(ROLE_LABELS.get(r, r) for r in ROLES if r in allowed)
        raise Forbidden(
            f"your role ({ROLE_LABELS.get(principal.role, principal.role)}) may not do this; needs: {names}"
        )
    if tenant_id is not None and not principal.can_see_tenant(tenant_id):
        raise Forbidden("you are not authorised for this tenant")
    return principal


def visible_tenant_ids(principal: Principal, all_ids: Iterable[str]) -> list[str]:
    return [t for t in all_ids if principal.can_see_tenant(t)]
