"""Observability: service telemetry rollups, latency histograms, JSON logs, alert rules, notifications, cost."""
