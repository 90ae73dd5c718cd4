"""Console administration from the shell: `python -m core <command>` (setup, migrate, create-user, ...)."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.bootstrap import build
from core.config import load_settings
from core.errors import CastielError, StoreUnavailable


def _services():  # type: ignore[no-untyped-def]
    return build(load_settings())


def cmd_migrate(args: argparse.Namespace) -> int:
    from core.migrate import migrate

    report = migrate(_services(), check=args.check)
    for line in report.lines():
        print(("missing " if args.check else "created ") + line)
    if args.check and report.changed:
        print("the store is not up to date: run `python -m core migrate`", file=sys.stderr)
        return 1
    print("store is up to date" if args.check else "migration done")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """What the start command runs: migrate, bootstrap admin, seed the demo when the store is empty."""
    from core.migrate import migrate
    from core.seed import ensure_admin, seed_demo

    services = _services()
    s = services.settings
    if s.using_default_key:
        print("note: embedded demo mode with the built-in secret key; set CASTIEL_SECRET_KEY for anything real")
    migrate(services)
    from core.services.access import SYSTEM
    from core.services.prompts import seed_prompts

    seed_prompts(services, SYSTEM)  # the platform's system prompts; new versions only, nothing overwritten
    email, generated = ensure_admin(services)
    if not services.tenants.all_ids() and not args.no_demo:
        print("store is empty: seeding the demo tenants (this runs the real pipelines, it takes a minute)...")
        report = seed_demo(services, password=args.demo_password)
        if report.password:
            print(f"demo users ({', '.join(sorted(report.users))}) have the password: {report.password}")
    print(f"admin login: {email}")
    if generated:
        print(f"admin password (shown once, change it under My account): {generated}")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from core.services.access import SYSTEM

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not args.generate:
        password = getpass.getpass("password (empty to generate): ") or None
    user, generated = _services().users.create(
        SYSTEM, args.email, args.role, args.tenant, name=args.name or "", password=password, reason=args.reason
    )
    print(f"created {user['email']} ({user['role']}, tenant: {user['homeTenant'] or 'all'})")
    if generated:
        print(f"one-time password: {generated}")
    return 0


def cmd_seed_prompts(args: argparse.Namespace) -> int:
    from core.migrate import migrate
    from core.services.access import SYSTEM
    from core.services.prompts import seed_prompts

    services = _services()
    migrate(services)
    for line in seed_prompts(services, SYSTEM).lines():
        print(line)
    return 0


def cmd_create_tenant(args: argparse.Namespace) -> int:
    from core.services.access import SYSTEM

    tenant = _services().tenants.create(SYSTEM, args.id, args.name, reason=args.reason)
    print(f"created tenant {tenant['id']} ({tenant['name']})")
    return 0


def cmd_seed_demo(args: argparse.Namespace) -> int:
    from core.migrate import migrate
    from core.seed import seed_demo

    services = _services()
    migrate(services)
    report = seed_demo(services, password=args.demo_password)
    print(f"tenants created: {', '.join(report.tenants) or 'none (already there)'}")
    for email, role in sorted(report.users.items()):
        print(f"  user {email} ({role})")
    if report.password:
        print(f"demo users' password: {report.password}")
    for h in report.hooks:
        print(f"  ran {h}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from core.services.health import health_check

    results = health_check(_services())
    bad = [r for r in results if not r[1]]
    for part, ok, reason in results:
        print(f"{'ok ' if ok else 'BAD'} {part}: {reason}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="create containers, blob containers and tenant defaults")
    m.add_argument("--check", action="store_true", help="verify only; exit 1 if anything is missing")
    m.set_defaults(fn=cmd_migrate)
    s = sub.add_parser("setup", help="migrate, bootstrap admin, seed the demo when empty")
    s.add_argument("--no-demo", action="store_true")
    s.add_argument("--demo-password", default=None)
    s.set_defaults(fn=cmd_setup)
    c = sub.add_parser("create-user", help="create a console user")
    c.add_argument("--email", required=True)
    c.add_argument("--role", required=True)
    c.add_argument("--tenant", default=None, help="tenant id; omit for platform-wide")
    c.add_argument("--name", default="")
    c.add_argument("--reason", default="created from the CLI")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    g.add_argument("--generate", action="store_true", help="generate a one-time password")
    c.set_defaults(fn=cmd_create_user)
    sp = sub.add_parser("seed-prompts", help="add new system prompt versions from data/prompts (idempotent)")
    sp.set_defaults(fn=cmd_seed_prompts)
    t = sub.add_parser("create-tenant", help="create a tenant with default settings")
    t.add_argument("--id", required=True)
    t.add_argument("--name", required=True)
    t.add_argument("--reason", default="created from the CLI")
    t.set_defaults(fn=cmd_create_tenant)
    d = sub.add_parser("seed-demo", help="create the demo tenants, users and data")
    d.add_argument("--demo-password", default=None)
    d.set_defaults(fn=cmd_seed_demo)
    h = sub.add_parser("health", help="exit non-zero with the reason when a dependency is unreachable")
    h.set_defaults(fn=cmd_health)
    args = p.parse_args(argv)
    try:
        return int(args.fn(args))
    except StoreUnavailable as e:
        print(f"error: the store cannot be reached: {e.message}", file=sys.stderr)
        return 3
    except CastielError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
