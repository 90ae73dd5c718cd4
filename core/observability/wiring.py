"""How the composition root builds the observability pieces from ``Services`` (kept here so
``core/bootstrap.py`` only needs three one-line properties)."""

from __future__ import annotations

import logging
from typing import Any

from core.observability import telemetry
from core.observability.instrumented_store import InstrumentedStore
from core.observability.notify import Notifier

log = logging.getLogger(__name__)


def raw_store(services: Any) -> Any:
    store = services.store
    return store.inner if isinstance(store, InstrumentedStore) else store


def recorder_for(services: Any) -> telemetry.Recorder:
    """The process's telemetry recorder (the instrumented store's, so there is one buffer), installed
    as the default of ``timed`` so services and pages can time themselves without wiring."""
    store = services.store
    rec = store.recorder if isinstance(store, InstrumentedStore) else telemetry.Recorder(store, auto_flush=True)
    telemetry.install(rec)
    return rec


def build_notifier(services: Any) -> Notifier:
    from core.adapters.notify_channels import build_senders

    s = services.settings
    senders = build_senders(
        smtp_host=s.smtp_host, smtp_port=s.smtp_port, smtp_sender=s.smtp_sender, smtp_username=s.smtp_username,
        smtp_password=s.smtp_password.get_secret_value() if s.smtp_password else None, smtp_starttls=s.smtp_starttls,
    )
    # Notifications are about the platform's own state: record them without timing them as tenant traffic.
    return Notifier(senders, raw_store(services))


def build_alerting(services: Any) -> Any:
    from core.services.alerting import AlertingService, default_fact_sources, parse_channel_list

    s = services.settings
    notifier = services.overrides.get("notifier") or build_notifier(services)

    def cost_threshold(tenant_id: str) -> float | None:
        return float(services.tenants.settings(tenant_id).cost_threshold_monthly_usd)

    return AlertingService(
        services.store, services.audit, notifier,
        tenant_ids=services.tenants.all_ids,
        tenant_cost_threshold=cost_threshold,
        fact_sources=default_fact_sources(services),
        fallback_channels=parse_channel_list(s.alert_channels),
        console_url=s.console_url,
    )


def build_overview(services: Any) -> Any:
    from core.services.overview import OverviewService

    def feature(name: str) -> Any | None:
        try:
            return getattr(services, name)
        except AttributeError:
            return None

    return OverviewService(services.store, feature=feature)


def build_telemetry_views(services: Any) -> Any:
    from core.services.overview import TelemetryService

    return TelemetryService(services.store)
