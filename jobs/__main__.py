"""`python -m jobs`: the worker process (scheduler + queue consumers + metrics endpoint)."""

from __future__ import annotations

import argparse
import sys

from core.bootstrap import build
from core.config import load_settings
from core.errors import CastielError
from core.migrate import migrate
from core.observability.logging import configure_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs")
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--queues", default="", help="comma-separated queue names (default: all)")
    p.add_argument("--no-scheduler", action="store_true")
    args = p.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, service="worker")
        services = build(settings)
        migrate(services, check=False)
        from jobs.webhooks import start_webhook_server

        start_webhook_server(services)  # vendor webhooks at /webhooks/<tenant>/<connection>; port 0 is off
    except CastielError as e:
        print(f"worker cannot start: {e.message}", file=sys.stderr)
        return 3
    from jobs.runner import Worker

    worker = Worker(
        services,
        consumers=args.consumers,
        queues=[q for q in args.queues.split(",") if q] or None,
        with_scheduler=not args.no_scheduler,
    )
    worker.run_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
