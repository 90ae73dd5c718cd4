"""Every screen of the console: its file, title, section and the roles that may open it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.services.access import ADMIN, CONTENT_ADMIN, ML_ENGINEER, OPS, ROLES, SUPPORT

APP_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageSpec:
    key: str  # also the URL path and the file name under app/pages/
    title: str
    icon: str
    section: str
    roles: frozenset[str]

    @property
    def path(self) -> Path:
        return APP_DIR / "pages" / f"{self.key}.py"

    def allows(self, role: str | None) -> bool:
        return role in self.roles


def _p(key: str, title: str, icon: str, section: str, *roles: str) -> PageSpec:
    return PageSpec(key, title, icon, section, frozenset(roles))


PAGES: tuple[PageSpec, ...] = (
    _p("overview", "Overview", ":material/monitoring:", "Operate", ADMIN, OPS),
    _p("integrations", "Integrations", ":material/sync_alt:", "Operate", ADMIN, OPS, SUPPORT),
    _p("embedding_jobs", "Embedding jobs", ":material/hub:", "Operate", ADMIN, OPS, ML_ENGINEER),
    _p("alerts", "Alerts", ":material/notifications_active:", "Operate", ADMIN, OPS),
    _p("telemetry", "Telemetry and cost", ":material/speed:", "Operate", ADMIN, OPS),
    _p("prompt_experiments", "Prompt experiments", ":material/science:", "AI", ADMIN, ML_ENGINEER),
    _p("models", "Models", ":material/model_training:", "AI", ADMIN, ML_ENGINEER),
    _p("templates", "Templates", ":material/description:", "Content", ADMIN, CONTENT_ADMIN),
    _p("jobs", "Jobs", ":material/work_history:", "Admin", ADMIN, OPS, SUPPORT),
    _p("audit", "Audit log", ":material/policy:", "Admin", ADMIN, OPS),
    _p("users", "Users", ":material/group:", "Admin", ADMIN),
    _p("account", "My account", ":material/account_circle:", "Admin", *ROLES),
)
BY_KEY = {p.key: p for p in PAGES}

# Where each role lands after signing in (the first of these it may open).
LANDING_ORDER = ("overview", "integrations", "models", "templates", "account")


def available_pages() -> list[PageSpec]:
    """Screens whose file exists (a feature's screen appears when it lands)."""
    return [p for p in PAGES if p.path.is_file()]


def landing_for(role: str) -> str:
    present = {p.key for p in available_pages()}
    for key in LANDING_ORDER:
        if key in present and BY_KEY[key].allows(role):
            return key
    return "account"
