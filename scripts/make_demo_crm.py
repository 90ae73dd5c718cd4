"""Generate the shipped sample CRM export in data/demo/crm (accounts, opportunities, contacts) from a fixed seed.

Run once, commit the CSVs: `python scripts/make_demo_crm.py`. The same seed always writes the same
bytes, so a re-run shows no diff. Outcomes depend on the features the way real pipelines do
(more activity, healthier industries, smaller deals and fewer days stuck in a stage win more),
so the demo tenant's opportunities give a model something honest to learn.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = 20250630
EXPORTED_AT = datetime(2025, 6, 30, 18, 0, 0, tzinfo=UTC)
OPEN_STAGES = ("Prospecting", "Qualification", "Proposal", "Negotiation")
CLOSED_STAGES = ("Closed Won", "Closed Lost")
INDUSTRIES = {
    # name: (win-rate lift, typical deal size in EUR)
    "Software": (0.35, 42_000),
    "Financial Services": (0.10, 85_000),
    "Healthcare": (-0.10, 60_000),
    "Manufacturing": (0.00, 55_000),
    "Retail": (-0.25, 25_000),
    "Energy": (0.05, 120_000),
    "Public Sector": (-0.35, 95_000),
    "Education": (-0.15, 18_000),
}
REGIONS = ("EMEA", "North America", "APAC", "LATAM")
OWNERS = (
    "Amira Haddad", "Ben Okafor", "Chloe Martin", "Daniel Novak", "Elena Rossi",
    "Farid Rahman", "Grace Liu", "Hugo Lefebvre", "Isla Murphy", "Jonas Berg",
)
OWNER_SKILL = {o: s for o, s in zip(OWNERS, (0.3, -0.2, 0.1, 0.0, 0.4, -0.4, 0.2, -0.1, 0.0, 0.15), strict=True)}
NAME_A = (
    "North", "Blue", "Silver", "Bright", "Iron", "Clear", "Summit", "Harbor", "Nova", "Vertex",
    "Cedar", "Atlas", "Orbit", "Prime", "Lumen", "Granite", "Pioneer", "Crest", "Delta", "Willow",
)
NAME_B = ("Systems", "Labs", "Holdings", "Group", "Analytics", "Logistics", "Health", "Energy", "Works", "Partners")
FIRST = ("Anna", "Ben", "Carla", "David", "Eva", "Felix", "Greta", "Henrik", "Ines", "Jakob", "Lea", "Marco",
         "Nina", "Oscar", "Paula", "Rafael", "Sara", "Tomas", "Uma", "Viktor")
LAST = ("Schmidt", "Garcia", "Smith", "Kowalski", "Dubois", "Jensen", "Silva", "Tanaka", "Ivanova", "Brown",
        "Meyer", "Rossi", "Nielsen", "Costa", "Walsh", "Huber", "Moreau", "Lind", "Novak", "Park")
TITLES = ("CFO", "CTO", "Head of Operations", "VP Sales", "Procurement Manager", "IT Director", "CEO",
          "Finance Manager", "Data Lead", "COO")
PRODUCTS = ("Platform licence", "Analytics add-on", "Renewal", "Expansion", "Pilot", "Services bundle",
            "Enterprise upgrade", "Support plan")


def ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def make(out: Path, n_accounts: int = 60, n_opps: int = 600, seed: int = SEED) -> dict[str, int]:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    start = EXPORTED_AT - timedelta(days=3 * 365)

    accounts = []
    used: set[str] = set()
    for i in range(n_accounts):
        while True:
            name = f"{rng.choice(NAME_A)} {rng.choice(NAME_B)}"
            if name not in used:
                used.add(name)
                break
        industry = rng.choice(list(INDUSTRIES))
        created = start + timedelta(days=rng.uniform(0, 300), seconds=rng.randint(0, 86399))
        employees = int(math.exp(rng.uniform(math.log(20), math.log(20_000))))
        accounts.append(
            {
                "id": f"ACC-{i + 1:04d}",
                "name": name,
                "industry": industry,
                "region": rng.choices(REGIONS, weights=(45, 30, 17, 8))[0],
                "owner": rng.choice(OWNERS),
                "employees": employees,
                "annual_revenue": int(round(employees * rng.uniform(90_000, 260_000), -3)),
                "website": "https://www." + name.lower().replace(" ", "") + ".example",
                "created_at": ts(created),
                "updated_at": ts(created + timedelta(days=rng.uniform(10, 700))),
            }
        )
        accounts[-1]["updated_at"] = min(accounts[-1]["updated_at"], ts(EXPORTED_AT))

    contacts = []
    for acc in accounts:
        for _ in range(rng.randint(2, 6)):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            created = datetime.strptime(acc["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            created += timedelta(days=rng.uniform(0, 200))
            domain = acc["website"].removeprefix("https://www.")
            contacts.append(
                {
                    "id": f"CON-{len(contacts) + 1:05d}",
                    "account_id": acc["id"],
                    "first_name": first,
                    "last_name": last,
                    "email": f"{first.lower()}.{last.lower()}@{domain}",
                    "title": rng.choice(TITLES),
                    "created_at": ts(created),
                    "updated_at": ts(min(EXPORTED_AT, created + timedelta(days=rng.uniform(0, 400)))),
                }
            )

    opps = []
    for i in range(n_opps):
        acc = rng.choice(accounts)
        lift, typical = INDUSTRIES[acc["industry"]]
        owner = acc["owner"] if rng.random() < 0.7 else rng.choice(OWNERS)
        amount = round(typical * math.exp(rng.gauss(0, 0.6)), -2)
        created = start + timedelta(days=rng.uniform(200, 3 * 365 - 5), seconds=rng.randint(0, 86399))
        age_days = (EXPORTED_AT - created).days
        activity = max(0, int(rng.gauss(14, 8)))
        days_in_stage = max(1, int(rng.expovariate(1 / 18)))
        # The chance of winning a decided deal: activity and owner help, big deals and stalls hurt.
        logit = (
            -0.2 + lift + OWNER_SKILL[owner] + 0.07 * (activity - 14)
            - 0.35 * math.log(amount / typical) - 0.02 * (days_in_stage - 18)
        )
        p_win = 1 / (1 + math.exp(-logit))
        cycle = int(rng.uniform(25, 160))
        if age_days > cycle and rng.random() < 0.85:
            stage = "Closed Won" if rng.random() < p_win else "Closed Lost"
            close = created + timedelta(days=cycle)
            updated = close + timedelta(hours=rng.uniform(0, 48))
        else:
            stage = rng.choices(OPEN_STAGES, weights=(30, 28, 24, 18))[0]
            close = EXPORTED_AT + timedelta(days=rng.uniform(7, 120))
            updated = EXPORTED_AT - timedelta(days=min(days_in_stage, max(age_days, 1)), hours=rng.uniform(0, 12))
        updated = min(max(updated, created + timedelta(hours=1)), EXPORTED_AT)
        opps.append(
            {
                "id": f"OPP-{i + 1:05d}",
                "name": f"{acc['name']} - {rng.choice(PRODUCTS)}",
                "account_id": acc["id"],
                "stage": stage,
                "amount": f"{amount:.2f}",
                "currency": "EUR",
                "close_date": close.strftime("%Y-%m-%d"),
                "created_at": ts(created),
                "updated_at": ts(updated),
                "industry": acc["industry"],
                "region": acc["region"],
                "owner": owner,
                "activity_count": activity,
                "days_in_stage": days_in_stage,
            }
        )

    for name, rows in (("accounts", accounts), ("contacts", contacts), ("opportunities", opps)):
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return {"accounts": len(accounts), "contacts": len(contacts), "opportunities": len(opps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demo" / "crm")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args()
    counts = make(args.out, seed=args.seed)
    print(", ".join(f"{k}={v}" for k, v in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()
