"""Deterministic generator of the demo tenant's sales documents (data/demo/documents/<project>/*.md|txt).

Run `python scripts/make_demo_documents.py` to (re)write the shipped folder; the same seed always gives
the same files. Benchmarks import `generate_documents` to make many more distinct documents of the same
kind (meeting notes, proposals, emails, call summaries, deal reviews), so search is measured on real
language rather than random vectors.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "data" / "demo" / "documents"


@dataclass(frozen=True)
class Project:
    slug: str
    customer: str
    industry: str
    product: str
    goal: str
    competitor: str
    city: str
    region: str
    systems: tuple[str, ...]
    topics: tuple[str, ...]


PROJECTS: tuple[Project, ...] = (
    Project(
        "northwind-renewal", "Northwind Traders", "food distribution", "Castiel Enterprise",
        "renew the three-year enterprise subscription before the March fiscal close", "Globex CRM",
        "Seattle", "North America", ("NetSuite", "Salesforce", "Snowflake"),
        ("price uplift", "multi-year term", "seat true-up", "security review", "adoption in the warehouse teams",
         "procurement sign-off", "legal redlines on the liability cap"),
    ),
    Project(
        "contoso-expansion", "Contoso Ltd", "industrial equipment", "Castiel Insights",
        "expand from the two US business units to the EMEA sales organisation", "Initech Analytics",
        "Munich", "EMEA", ("SAP S/4HANA", "Dynamics 365", "Microsoft Teams"),
        ("EU data residency", "single sign-on with Entra ID", "SAP integration", "works council approval",
         "regional rollout plan", "training in German and French", "executive sponsorship"),
    ),
    Project(
        "fabrikam-pilot", "Fabrikam Inc", "precision manufacturing", "Castiel Forecasting",
        "prove a ten percent forecast accuracy gain in a ninety-day pilot", "Umbrella Planning Suite",
        "Detroit", "North America", ("Oracle EBS", "HubSpot", "Power BI"),
        ("pilot success criteria", "forecast accuracy baseline", "data quality in the order history",
         "weekly pilot check-ins", "executive readout", "conversion to a paid contract", "dealer network data"),
    ),
    Project(
        "woodgrove-rfp", "Woodgrove Bank", "retail banking", "Castiel Enterprise",
        "win the competitive RFP for the relationship-manager workspace", "Globex CRM",
        "London", "EMEA", ("Temenos", "ServiceNow", "Azure Active Directory"),
        ("SOC 2 Type II evidence", "penetration test results", "records retention", "RFP scoring",
         "reference customers", "implementation timeline", "regulatory change management"),
    ),
)

FIRST = ("Maria", "James", "Aisha", "Tomasz", "Priya", "Daniel", "Sofia", "Kenji", "Olivia", "Lukas", "Grace",
         "Mateo", "Hannah", "Ravi", "Elena", "Marcus", "Yuki", "Fatima", "Noah", "Chloe", "Ingrid", "Samuel")
LAST = ("Garcia", "Okafor", "Novak", "Chen", "Schmidt", "Patel", "Rossi", "Nakamura", "Johnson", "Dubois",
        "Kowalski", "Andersen", "Silva", "Murphy", "Haddad", "Fischer", "Lindqvist", "Moreau", "Brennan")
CUSTOMER_ROLES = ("VP of Sales Operations", "Chief Financial Officer", "Head of Procurement", "IT Director",
                  "Data Platform Lead", "Regional Sales Director", "Chief Information Security Officer",
                  "Revenue Operations Manager", "Head of Customer Success", "Senior Buyer", "General Counsel")
OUR_ROLES = ("Account Executive", "Solutions Engineer", "Customer Success Manager", "Sales Director",
             "Implementation Lead", "Deal Desk Analyst")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


class Slots:
    """Fills {placeholders} in sentence templates with values that stay consistent within one document."""

    def __init__(self, rng: random.Random, project: Project, day: date) -> None:
        self.rng = rng
        self.p = project
        self.day = day
        self.customer_people = [self._person() for _ in range(4)]
        self.our_people = [self._person() for _ in range(2)]

    def _person(self) -> str:
        return f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"

    def values(self) -> dict[str, str]:
        r = self.rng
        cp, op = self.customer_people, self.our_people
        system, system2 = r.sample(self.p.systems, 2)
        return {
            "customer": self.p.customer,
            "product": self.p.product,
            "goal": self.p.goal,
            "competitor": self.p.competitor,
            "city": self.p.city,
            "region": self.p.region,
            "industry": self.p.industry,
            "system": system,
            "system2": system2,
            "topic": r.choice(self.p.topics),
            "topic2": r.choice(self.p.topics),
            "champion": cp[0],
            "buyer": cp[1],
            "exec": cp[2],
            "tech": cp[3],
            "ae": op[0],
            "se": op[1],
            "role": r.choice(CUSTOMER_ROLES),
            "seats": str(r.choice((120, 180, 250, 340, 420, 600, 850, 1200))),
            "amount": f"${r.randint(4, 96) * 5_000:,}",
            "pct": str(r.choice((3, 4, 5, 7, 8, 10, 12, 15, 18, 20, 25))),
            "weeks": str(r.randint(2, 9)),
            "days": str(r.choice((10, 14, 21, 30, 45, 60, 90))),
            "date": (self.day + timedelta(days=r.randint(3, 60))).strftime("%B %d"),
            "weekday": r.choice(WEEKDAYS),
            "count": str(r.randint(3, 40)),
            "quarter": f"Q{r.randint(1, 4)}",
        }

    def fill(self, template: str) -> str:
        vals = self.values()
        return re.sub(r"\{(\w+)\}", lambda m: vals[m.group(1)], template)


# English sentence banks: each doc type picks from several of these, so documents differ in content.
OPENERS = (
    "We met with {champion} and {buyer} from {customer} to review where the work to {goal} stands.",
    "{ae} and {se} joined a call with {customer} focused mainly on {topic}.",
    "This note summarises the discussion with {customer} about {topic} and {topic2}.",
    "{champion} asked for a short session to walk their {role} through the current proposal.",
    "The {customer} team opened by saying the last {weeks} weeks had been dominated by {topic}.",
    "Purpose of the meeting: agree the next steps on {topic} and confirm who owns each open item.",
    "{exec} joined for the first fifteen minutes, which is the first time we have"
    " had executive attention since {quarter}.",
)
STATUS = (
    "{champion} confirmed that the {industry} business still sees {product} as the"
    " system of record for pipeline reviews.",
    "Usage grew {pct} percent over the last quarter, mostly from the regional teams in {city}.",
    "The current contract covers {seats} seats and renews on {date}; roughly"
    " {pct} percent of those seats are inactive.",
    "They have connected {system} and want the same sync for {system2} before any expansion is signed.",
    "Adoption is uneven: the inside sales team logs every call, while field reps"
    " update opportunities once a week at best.",
    "The pilot dashboards are used daily by {count} managers, which {champion} called the strongest signal so far.",
    "Data quality is the main complaint; duplicate accounts imported from {system} make the forecast hard to trust.",
    "Support tickets dropped from {count} to a handful after the last release fixed the calendar sync.",
    "Their finance team reports forecast error of about {pct} percent, and the goal is to halve it by {quarter}.",
    "{tech} described the integration with {system} as stable, with nightly jobs finishing in under an hour.",
)
CONCERNS = (
    "{buyer} pushed back on the proposed price uplift of {pct} percent and asked for a flat renewal instead.",
    "Security wants the SOC 2 report, the latest penetration test summary and a signed data processing agreement.",
    "{competitor} has offered a steep first-year discount, and procurement will use it as leverage.",
    "The {role} is worried about change fatigue after two tool migrations in eighteen months.",
    "Legal flagged the liability cap and asked for it to be raised to twelve months of fees.",
    "There is a budget freeze until {date}, so any new spend needs approval from {exec} directly.",
    "{tech} is concerned about API rate limits when the nightly {system} sync runs alongside month-end reporting.",
    "They are not convinced the forecasting model handles seasonality in {industry} well enough.",
    "The works council needs to review any tool that records call activity before it can go live in {region}.",
    "Data residency is a hard requirement: all customer data must stay in the {region} region.",
    "Their champion {champion} may move to a new role next quarter, which puts sponsorship at risk.",
)
ANSWERS = (
    "We offered a {pct} percent discount in exchange for a three-year term and a public case study.",
    "{se} will run a technical deep dive on {topic} with {tech} on {weekday}.",
    "We proposed phasing the rollout: {city} first, then the remaining regions after a {days}-day review.",
    "We agreed to share the security package within {days} days and to set up a call with our CISO.",
    "{ae} will prepare a side-by-side comparison with {competitor} that focuses on total cost over three years.",
    "We suggested a success plan with three measurable outcomes tied to {topic}.",
    "Our implementation lead can be on site in {city} for the first two weeks of onboarding.",
    "We can deduplicate the {system} accounts with the merge tool before the next forecast cycle.",
    "We offered training sessions in the local language for the {region} teams.",
    "Pricing can stay flat if they commit to at least {seats} seats for the full term.",
)
NEXT_STEPS = (
    "{ae} sends the revised order form by {date}.",
    "{se} shares the integration guide for {system} and books the follow-up with {tech}.",
    "{champion} sets up a meeting with {exec} to confirm budget before {quarter} ends.",
    "{buyer} returns the legal redlines within {days} days.",
    "Customer success prepares an adoption report covering the last {weeks} weeks.",
    "Schedule the executive readout for the week of {date}.",
    "{tech} confirms the SSO configuration and the list of admin users.",
    "Deal desk reviews the discount request of {pct} percent and answers within two business days.",
    "Send the reference call list: two customers in {industry} and one in {region}.",
)
EMAIL_BODIES = (
    "Thank you for the time on {weekday}. As promised, I am attaching the updated proposal for {product}.",
    "Following up on our conversation about {topic}: the short answer is yes, we support it today.",
    "I wanted to check whether you had a chance to review the order form we sent on {date}.",
    "Quick update from our side: the security questionnaire is complete and the SOC 2 report is in the data room.",
    "Could we find thirty minutes next week to walk {exec} through the business case?",
    "We looked into the issue with the {system} sync; it was caused by a field mapping on custom objects and is fixed.",
    "Attached is the pilot summary with the forecast accuracy results for the last {weeks} weeks.",
    "Procurement asked for a breakdown of the {amount} figure by module and by year, which you will find below.",
)
PROPOSAL_SECTIONS = (
    ("Executive summary", (
        "{customer} wants to {goal}. This proposal describes how {product} gets there with low risk.",
        "The plan builds on the current deployment and the data already flowing from {system}.",
        "We expect a measurable improvement in forecast accuracy of about {pct} percent within two quarters.",
    )),
    ("Scope", (
        "The scope covers {seats} users across sales, customer success and finance.",
        "Integrations included: {system} and {system2}, with nightly and on-demand synchronisation.",
        "Out of scope: custom development on the {system} side and migration of archived opportunities.",
        "Single sign-on, role-based access and audit logging are part of the standard package.",
    )),
    ("Commercials", (
        "The total contract value is {amount} over thirty-six months, invoiced annually in advance.",
        "A {pct} percent discount applies if the order form is signed before {date}.",
        "Additional seats are priced at the same unit rate for the remainder of the term.",
        "Premium support with a named engineer is included for the first year.",
    )),
    ("Timeline", (
        "Week one covers kickoff, access provisioning and connection to {system}.",
        "By week {weeks} the first team in {city} is live and trained.",
        "A formal review after {days} days decides the rollout to the rest of {region}.",
    )),
    ("Risks and mitigations", (
        "Data quality in {system} is the largest risk; we plan a two-week cleanup sprint before go-live.",
        "Change management is handled with champions in each team and weekly office hours.",
        "If {competitor} lowers its price again, the value case rests on integration depth and support quality.",
    )),
)

FOREIGN: dict[str, dict[str, tuple[str, ...]]] = {
    "de": {
        "title": ("Besprechungsnotiz", "Gesprächszusammenfassung", "Angebotsentwurf"),
        "body": (
            "Wir haben mit {champion} und {buyer} von {customer} über die nächsten Schritte gesprochen.",
            "Der Betriebsrat muss jedes Werkzeug prüfen, das Anrufaktivitäten aufzeichnet.",
            "Die Daten müssen vollständig in der Region {region} gespeichert bleiben.",
            "{tech} möchte die Integration mit {system} vor dem Rollout in {city} testen.",
            "Das Budget für {quarter} ist freigegeben, aber {exec} muss den Vertrag unterschreiben.",
            "Wir bieten Schulungen auf Deutsch und Französisch für die Vertriebsteams an.",
            "Die Nutzung ist im letzten Quartal um {pct} Prozent gestiegen.",
            "{competitor} hat einen deutlichen Rabatt im ersten Jahr angeboten.",
            "Nächster Schritt: {ae} schickt das überarbeitete Angebot bis zum {date}.",
        ),
    },
    "fr": {
        "title": ("Compte rendu de réunion", "Résumé d'appel", "Proposition commerciale"),
        "body": (
            "Nous avons rencontré {champion} et {buyer} de {customer} pour faire le point sur le projet.",
            "L'équipe juridique demande de relever le plafond de responsabilité à douze mois de frais.",
            "La résidence des données dans la région {region} est une exigence ferme.",
            "{tech} souhaite valider l'intégration avec {system} avant la fin du trimestre.",
            "L'utilisation a progressé de {pct} pour cent, surtout dans les équipes de {city}.",
            "{competitor} propose une remise importante la première année.",
            "Nous proposons un déploiement progressif avec une revue après {days} jours.",
            "Prochaine étape : {ae} envoie le bon de commande révisé avant le {date}.",
        ),
    },
    "es": {
        "title": ("Notas de reunión", "Resumen de llamada", "Propuesta comercial"),
        "body": (
            "Nos reunimos con {champion} y {buyer} de {customer} para revisar la renovación.",
            "El equipo de compras pidió un desglose de {amount} por módulo y por año.",
            "La adopción creció un {pct} por ciento en el último trimestre.",
            "{tech} confirmó que la sincronización con {system} funciona sin errores.",
            "Seguridad necesita el informe SOC 2 y el resumen de la última prueba de penetración.",
            "{competitor} ofreció un descuento agresivo para el primer año.",
            "Próximo paso: {se} organiza una sesión técnica sobre {topic} el {weekday}.",
        ),
    },
    "pt": {
        "title": ("Notas da reunião", "Resumo da chamada"),
        "body": (
            "Conversamos com {champion} e {buyer} da {customer} sobre o piloto.",
            "A qualidade dos dados no {system} ainda é a principal preocupação.",
            "O uso cresceu {pct} por cento nas equipes de {city}.",
            "{competitor} ofereceu um desconto agressivo no primeiro ano.",
            "Próximo passo: {ae} envia a proposta revisada até {date}.",
        ),
    },
    "ja": {
        "title": ("会議メモ", "通話サマリー"),
        "body": (
            "{customer}の{champion}様と{buyer}様と、今後の進め方について打ち合わせを行いました。",
            "セキュリティチームはSOC 2レポートと最新のペネトレーションテスト結果を求めています。",
            "データは{region}リージョン内に保存する必要があります。",
            "{system}との連携は安定しており、夜間バッチは一時間以内に完了しています。",
            "前四半期の利用率は{pct}パーセント増加しました。",
            "{competitor}は初年度の大幅な値引きを提示しています。",
            "次のステップ：{ae}が{date}までに改訂版の見積書を送付します。",
        ),
    },
}


def _pick(rng: random.Random, bank: tuple[str, ...], lo: int, hi: int) -> list[str]:
    return rng.sample(bank, k=min(len(bank), rng.randint(lo, hi)))


def _meeting_notes(rng: random.Random, s: Slots) -> tuple[str, str]:
    title = f"Meeting notes: {s.fill('{customer}')} {s.fill('{topic}')}"
    lines = [f"# {title}", "", f"Date: {s.day.isoformat()}",
             f"Attendees: {', '.join(s.customer_people[:3])} ({s.p.customer}); {', '.join(s.our_people)} (Castiel)", ""]
    lines += [s.fill(t) for t in _pick(rng, OPENERS, 1, 2)] + [""]
    lines += ["## Current state", ""] + [s.fill(t) for t in _pick(rng, STATUS, 2, 4)] + [""]
    lines += ["## Concerns raised", ""] + [f"- {s.fill(t)}" for t in _pick(rng, CONCERNS, 2, 4)] + [""]
    lines += ["## What we proposed", ""] + [s.fill(t) for t in _pick(rng, ANSWERS, 1, 3)] + [""]
    lines += ["## Action items", ""] + [f"- [ ] {s.fill(t)}" for t in _pick(rng, NEXT_STEPS, 2, 4)]
    return title, "\n".join(lines) + "\n"


def _call_summary(rng: random.Random, s: Slots) -> tuple[str, str]:
    title = f"Call summary with {s.customer_people[0]} ({s.p.customer})"
    parts = [s.fill(t) for t in _pick(rng, OPENERS, 1, 1) + _pick(rng, STATUS, 1, 3) + _pick(rng, CONCERNS, 1, 2)]
    parts += [s.fill(t) for t in _pick(rng, ANSWERS, 1, 2)]
    sentiment = rng.choice(("positive", "neutral", "cautious", "at risk"))
    body = f"{title}\n\nCall date: {s.day.isoformat()}. Overall sentiment: {sentiment}.\n\n" + " ".join(parts)
    body += "\n\nNext steps: " + " ".join(s.fill(t) for t in _pick(rng, NEXT_STEPS, 1, 3)) + "\n"
    return title, body


def _email(rng: random.Random, s: Slots) -> tuple[str, str]:
    subject = rng.choice((f"Re: {s.p.product} proposal", f"Follow-up: {s.fill('{topic}')}",
                          f"{s.p.customer} next steps", "Security questionnaire and SOC 2 report",
                          f"Order form for {s.fill('{quarter}')}"))
    sender, to = s.our_people[0], s.customer_people[0]
    body = [f"From: {sender} <{sender.lower().replace(' ', '.')}@castiel.example>",
            f"To: {to} <{to.lower().replace(' ', '.')}@{s.p.customer.split()[0].lower()}.example>",
            f"Date: {s.day.isoformat()}", f"Subject: {subject}", "", f"Hi {to.split()[0]},", ""]
    body += [s.fill(t) for t in _pick(rng, EMAIL_BODIES, 1, 3)] + [""]
    if rng.random() < 0.6:
        body += [s.fill(t) for t in _pick(rng, ANSWERS, 1, 2)] + [""]
    body += [s.fill(rng.choice(NEXT_STEPS)), "", "Best regards,", sender]
    if rng.random() < 0.4:  # quoted reply, as real threads carry
        body += ["", f"> On {s.day.isoformat()}, {to} wrote:", "> " + s.fill(rng.choice(CONCERNS))]
    return f"Email: {subject}", "\n".join(body) + "\n"


def _proposal(rng: random.Random, s: Slots) -> tuple[str, str]:
    title = f"{s.p.product} proposal for {s.p.customer}"
    lines = [f"# {title}", "", f"Version {rng.randint(1, 4)}.{rng.randint(0, 9)}, prepared by {s.our_people[0]}", ""]
    for heading, bank in PROPOSAL_SECTIONS:
        lines += [f"## {heading}", ""] + [s.fill(t) for t in _pick(rng, bank, 2, len(bank))] + [""]
    return title, "\n".join(lines)


def _deal_review(rng: random.Random, s: Slots) -> tuple[str, str]:
    stage = rng.choice(("Discovery", "Solution validation", "Proposal", "Negotiation", "Commit"))
    title = f"Internal deal review: {s.p.customer} ({stage})"
    lines = [f"# {title}", "", f"Owner: {s.our_people[0]}. Amount: {s.fill('{amount}')}. "
             f"Close date: {s.fill('{date}')}. Probability: {rng.choice((20, 35, 50, 65, 80))}%.", "",
             "## Why we win", ""]
    lines += [s.fill(t) for t in _pick(rng, STATUS, 1, 3)] + ["", "## Risks", ""]
    lines += [f"- {s.fill(t)}" for t in _pick(rng, CONCERNS, 2, 3)] + ["", "## Asks from leadership", ""]
    lines += [s.fill(t) for t in _pick(rng, ANSWERS, 1, 2)]
    return title, "\n".join(lines) + "\n"


def _foreign(rng: random.Random, s: Slots, lang: str) -> tuple[str, str]:
    bank = FOREIGN[lang]
    title = f"{rng.choice(bank['title'])}: {s.p.customer}"
    body = [s.fill(t) for t in _pick(rng, bank["body"], 3, len(bank["body"]))]
    sep = "" if lang == "ja" else " "
    return title, f"{title}\n\n{s.day.isoformat()}\n\n" + sep.join(body) + "\n"


KINDS = (("meeting-notes", _meeting_notes, "md"), ("call-summary", _call_summary, "txt"),
         ("email", _email, "txt"), ("proposal", _proposal, "md"), ("deal-review", _deal_review, "md"))


@dataclass(frozen=True)
class GeneratedDocument:
    project: str
    filename: str
    title: str
    text: str
    language: str


def generate_documents(n: int, seed: int = 7, projects: tuple[Project, ...] = PROJECTS,
                       foreign_share: float = 0.08) -> Iterator[GeneratedDocument]:
    """Yield ``n`` distinct documents; the same arguments always yield the same documents."""
    rng = random.Random(seed)
    start = date(2024, 1, 8)
    weights = (0.3, 0.25, 0.25, 0.08, 0.12)
    langs = tuple(FOREIGN)
    for i in range(n):
        project = projects[i % len(projects)]
        day = start + timedelta(days=rng.randint(0, 540))
        slots = Slots(rng, project, day)
        if rng.random() < foreign_share:
            lang = rng.choice(langs)
            title, text = _foreign(rng, slots, lang)
            kind, ext = f"notes-{lang}", "txt"
        else:
            lang = "en"
            idx = rng.choices(range(len(KINDS)), weights=weights)[0]
            kind, make, ext = KINDS[idx]
            title, text = make(rng, slots)
        yield GeneratedDocument(project.slug, f"{day.isoformat()}-{kind}-{i:05d}.{ext}", title, text, lang)


def write_demo_folder(out_dir: Path = OUT_DIR, n: int = 400, seed: int = 7) -> int:
    """Rewrite ``out_dir`` with ``n`` documents in one sub-folder per project; returns bytes written."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    total = 0
    for doc in generate_documents(n, seed):
        path = out_dir / doc.project / doc.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        data = doc.text.encode("utf-8")
        path.write_bytes(data)
        total += len(data)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("-n", type=int, default=400, help="how many documents (default 400)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    total = write_demo_folder(args.out, args.n, args.seed)
    print(f"wrote {args.n} documents, {total / 1e6:.2f} MB, to {args.out}")


if __name__ == "__main__":
    main()
