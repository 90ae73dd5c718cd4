"""Intent classification of user messages (the first prompt slot in use) and its offline evaluation.

A prompt version of the ``intent_classification`` slot becomes the system message; the user's
message is the user turn; the model answers ``{"intent": "<name>"}`` (or just the name, which is
accepted too). The evaluation runs a version over the labelled set in ``data/eval/intents.jsonl``
and reports accuracy, per-intent precision and recall (scikit-learn), latency percentiles, tokens
and cost; runs are stored in ``eval_runs`` so versions can be compared side by side.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import clock
from core.adapters.llm_openai import ChatClient
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import CastielError, Invalid, NotFound
from core.experiments.prompt_templates import Variable, render
from core.services.access import ADMIN, ML_ENGINEER, Principal, require

SLOT = "intent_classification"
EVAL_SET = Path(__file__).resolve().parents[2] / "data" / "eval" / "intents.jsonl"
EVAL_RUNS = "eval_runs"
EVALUATE_KIND = "prompts.evaluate"

INTENTS: dict[str, str] = {
    "deal_status": "where one deal or opportunity stands: stage, next steps, last activity, who is involved",
    "forecast_question": "forecast, quota, commit, pipeline totals or coverage, attainment, win rates, bookings",
    "draft_email": "write or draft an email or message to send to someone",
    "summarize_meeting": "summarise or recap a call, meeting, transcript or notes; action items from a meeting",
    "risk_assessment": "which deals or accounts are at risk, why, churn or slip likelihood, risk scores",
    "find_document": "find, open or share a document, deck, contract, recording, template or file",
    "update_crm": "change or record something in the CRM: stage, dates, amounts, contacts, tasks, logged activity",
    "small_talk": "greetings, thanks, chit-chat, or questions about the assistant itself",
}
# Variables an intent_classification version may declare, and how to fill them.
KNOWN_VARIABLES: dict[str, Callable[[], str]] = {
    "intent_catalog": lambda: "\n".join(f"- {k}: {v}" for k, v in INTENTS.items()),
    "intent_names": lambda: ", ".join(INTENTS),
}


def variable_values(variables: Sequence[Variable]) -> dict[str, str]:
    """Values for the version's declared variables; optional ones we do not know keep their default."""
    values: dict[str, str] = {}
    for v in variables:
        if v.name in KNOWN_VARIABLES:
            values[v.name] = KNOWN_VARIABLES[v.name]()
        elif v.required:
            raise Invalid(
                f"intent classification cannot fill the required variable {v.name!r}; "
                f"it knows {', '.join(KNOWN_VARIABLES)}"
            )
    return values


def system_prompt_for(version: Mapping[str, Any]) -> str:
    variables = [Variable.from_dict(v) for v in version.get("variables") or []]
    return render(str(version["template"]), variables, variable_values(variables))


_WORDS = re.compile(r"[a-z_]+")


def parse_intent(text: str) -> str | None:
    """The intent named in a model answer: JSON ``{"intent": ...}`` or a bare name; None if neither."""
    cleaned = text.strip().strip("`").strip()
    if cleaned.lower().startswith("json"):
        cleaned = cleaned[4:].strip()
    try:
        data = json.loads(cleaned)
        if isinstance(data, dict) and isinstance(data.get("intent"), str):
            name = data["intent"].strip().lower().replace(" ", "_").replace("-", "_")
            return name if name in INTENTS else None
    except json.JSONDecodeError:
        pass
    for token in _WORDS.findall(cleaned.lower().replace("-", "_")):
        if token in INTENTS:
            return token
    return None


@dataclass(frozen=True)
class IntentPrediction:
    intent: str | None
    raw: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    error: str | None = None
    cost_known: bool = True


class IntentClassifier:
    """Classifies one message with one prompt version through a chat client."""

    def __init__(self, client: ChatClient, version: Mapping[str, Any]) -> None:
        self.client = client
        self.version = version
        self.system_prompt = system_prompt_for(version)
        params = dict(version.get("model_params") or {})
        self.temperature = float(params.get("temperature", 0.0))
        self.max_tokens = int(params["max_tokens"]) if params.get("max_tokens") else None
        self.json_mode = '"intent"' in self.system_prompt

    def classify(self, message: str) -> IntentPrediction:
        if not message or not message.strip():
            raise Invalid("there is no message to classify")
        result = self.client.chat(
            [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": message}],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            json_mode=self.json_mode,
        )
        return IntentPrediction(
            parse_intent(result.text),
            result.text,
            result.latency_ms,
            result.prompt_tokens,
            result.completion_tokens,
            result.cost_usd,
            cost_known=result.cost_known,
        )


def load_eval_set(path: Path | str = EVAL_SET) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise Invalid(f"{path} line {n} is not JSON: {e.msg}") from None
        if row.get("intent") not in INTENTS or not str(row.get("text", "")).strip():
            raise Invalid(f"{path} line {n} needs a text and one of the intents {', '.join(INTENTS)}")
        rows.append({"id": str(row.get("id") or n), "text": str(row["text"]), "intent": str(row["intent"])})
    return rows


@dataclass
class EvalReport:
    n: int
    accuracy: float
    per_intent: list[dict[str, Any]]
    confusion: dict[str, dict[str, int]]
    latency_p50_ms: float
    latency_p95_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cost_known: bool
    errors: int
    unparsed: int
    mistakes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    classifier: IntentClassifier,
    examples: Sequence[Mapping[str, str]],
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Run every example (concurrently: the work is waiting on the network) and score the answers."""
    from sklearn.metrics import precision_recall_fscore_support

    if not examples:
        raise Invalid("the evaluation set is empty")

    def one(ex: Mapping[str, str]) -> IntentPrediction:
        try:
            return classifier.classify(ex["text"])
        except CastielError as e:
            return IntentPrediction(None, "", 0.0, 0, 0, 0.0, e.message)

    preds: list[IntentPrediction] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, p in enumerate(pool.map(one, examples), start=1):
            preds.append(p)
            if progress is not None:
                progress(i, len(examples))
    errors = [p for p in preds if p.error]
    if len(errors) == len(preds):
        raise Invalid(f"every call failed; the first error: {errors[0].error}")
    truth = [ex["intent"] for ex in examples]
    guess = [p.intent or "(none)" for p in preds]
    labels = list(INTENTS)
    prec, rec, f1, support = precision_recall_fscore_support(truth, guess, labels=labels, zero_division=0)
    per_intent = [
        {
            "intent": k,
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, k in enumerate(labels)
    ]
    confusion: dict[str, dict[str, int]] = {k: {} for k in labels}
    for t, g in zip(truth, guess, strict=True):
        confusion[t][g] = confusion[t].get(g, 0) + 1
    ok = [p for p in preds if not p.error]
    lat = np.array([p.latency_ms for p in ok]) if ok else np.array([0.0])
    mistakes = [
        {
            "id": ex.get("id"),
            "text": ex["text"],
            "expected": ex["intent"],
            "predicted": p.intent,
            "raw": p.raw[:200],
            "error": p.error,
        }
        for ex, p in zip(examples, preds, strict=True)
        if p.intent != ex["intent"]
    ]
    return EvalReport(
        n=len(examples),
        accuracy=float(np.mean([t == g for t, g in zip(truth, guess, strict=True)])),
        per_intent=per_intent,
        confusion=confusion,
        latency_p50_ms=float(np.percentile(lat, 50)),
        latency_p95_ms=float(np.percentile(lat, 95)),
        prompt_tokens=sum(p.prompt_tokens for p in preds),
        completion_tokens=sum(p.completion_tokens for p in preds),
        cost_usd=float(sum(p.cost_usd for p in preds)),
        cost_known=all(p.cost_known for p in ok),
        errors=len(errors),
        unparsed=sum(1 for p in ok if p.intent is None),
        mistakes=mistakes,
    )


class EvaluationRuns:
    """Stores evaluation runs per prompt version (platform-wide) for the catalog's comparison view."""

    def __init__(self, store: DocumentStore, audit: Any) -> None:
        self.store = store
        self.audit = audit

    def run(
        self,
        principal: Principal,
        version: Mapping[str, Any],
        client: ChatClient,
        examples: Sequence[Mapping[str, str]] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Doc:
        require(principal, None, (ADMIN, ML_ENGINEER))
        if version.get("slot") != SLOT:
            raise Invalid(f"offline evaluation exists for the {SLOT} slot only, not {version.get('slot')!r}")
        examples = list(examples) if examples is not None else load_eval_set()
        started = clock.iso()
        report = evaluate(IntentClassifier(client, version), examples, progress=progress)
        doc = {
            "id": f"{started}-{uuid.uuid4().hex[:8]}",
            "tenantId": PLATFORM,
            "slot": SLOT,
            "version": int(version["version"]),
            "model": client.describe(),
            "startedAt": started,
            "finishedAt": clock.iso(),
            "by": principal.email,
            **{k: v for k, v in report.to_dict().items() if k != "mistakes"},
            "mistakes": report.mistakes[:100],
        }
        saved = self.store.create(EVAL_RUNS, doc)
        self.audit.record(
            principal,
            None,
            "prompt.evaluate",
            f"{SLOT}@v{version['version']}",
            after={"accuracy": report.accuracy, "n": report.n, "model": doc["model"]},
        )
        return saved

    def request(self, principal: Principal, queue: Any, version: int, reason: str = "") -> Doc:
        """Queue an evaluation of one version for the worker (240 model calls take a while)."""
        require(principal, None, (ADMIN, ML_ENGINEER))
        return queue.enqueue(principal, "ml", EVALUATE_KIND, None,
                             {"slot": SLOT, "version": int(version), "requestedBy": principal.user_id},
                             reason=reason or f"evaluate {SLOT} v{version}", dedupe_key=f"eval:{SLOT}@v{version}",
                             max_attempts=3)

    def list(self, principal: Principal, slot: str = SLOT, limit: int = 50) -> list[Doc]:
        require(principal, None, (ADMIN, ML_ENGINEER))
        return self.store.query(
            EVAL_RUNS, PLATFORM, [Cond("slot", "=", slot)], order_by="startedAt", descending=True, limit=limit
        )

    def get(self, principal: Principal, run_id: str) -> Doc:
        require(principal, None, (ADMIN, ML_ENGINEER))
        doc = self.store.get_or_none(EVAL_RUNS, PLATFORM, run_id)
        if doc is None:
            raise NotFound(f"evaluation run {run_id} not found")
        return doc
