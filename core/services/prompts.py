"""The system prompt catalog: slots, immutable versions, movable labels with history, diffs, seeding.

Storage (platform-wide, partition ``_platform``):
- ``prompts``: one ``slot`` record per slot (title, description, current ``labels`` {name: version})
  and one ``version`` record per version (``<slot>@v<n>``), created once and never updated.
- ``prompt_labels``: one record per label move (from, to, who, why, experiment), the label history.

Every label move is also written to the audit log. ``roll_back_label`` walks the history back one
step (a second roll back goes one further), so the previous label is always restorable.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.experiments import prompt_templates as tpl
from core.services.access import ADMIN, ML_ENGINEER, Principal, require
from core.services.audit import AuditLog

PROMPTS = "prompts"
LABELS = "prompt_labels"
SEED_FILE = Path(__file__).resolve().parents[2] / "data" / "prompts" / "system-prompts.json"
PRODUCTION, STAGING = "production", "staging"
EDITORS = (ADMIN, ML_ENGINEER)
_SLOT = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _slot_id(slot: str) -> str:
    return f"slot:{slot}"


def _version_id(slot: str, version: int) -> str:
    return f"{slot}@v{version}"


def content_hash(template: str, variables: Sequence[Mapping[str, Any]]) -> str:
    body = json.dumps({"t": template, "v": list(variables)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def check_label_name(label: str) -> str:
    label = (label or "").strip().lower()
    if not _LABEL.match(label):
        raise Invalid(f"label {label!r} must start with a letter and use a-z, 0-9, - or _ (max 32)")
    return label


class PromptCatalog:
    def __init__(self, store: DocumentStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    # access -------------------------------------------------------------------------------
    @staticmethod
    def _reader(principal: Principal) -> None:
        require(principal, None, EDITORS)

    @staticmethod
    def _editor(principal: Principal) -> None:
        require(principal, None, EDITORS)
        if not principal.platform_wide:
            raise Forbidden("the prompt catalog serves every tenant; changing it needs a platform-wide account")

    # reading ------------------------------------------------------------------------------
    def slots(self, principal: Principal) -> list[Doc]:
        self._reader(principal)
        return self.store.query(PROMPTS, PLATFORM, [Cond("kind", "=", "slot")], order_by="slot")

    def slot(self, principal: Principal, slot: str) -> Doc:
        self._reader(principal)
        doc = self.store.get_or_none(PROMPTS, PLATFORM, _slot_id(slot))
        if doc is None:
            raise NotFound(f"prompt slot {slot!r} does not exist; seed the catalog with `python -m core seed-prompts`")
        return doc

    def versions(self, principal: Principal, slot: str) -> list[Doc]:
        self._reader(principal)
        return self.store.query(
            PROMPTS, PLATFORM, [Cond("slot", "=", slot), Cond("kind", "=", "version")], order_by="version"
        )

    def version(self, principal: Principal, slot: str, version: int) -> Doc:
        self._reader(principal)
        doc = self.store.get_or_none(PROMPTS, PLATFORM, _version_id(slot, int(version)))
        if doc is None:
            raise NotFound(f"prompt {slot} has no version {version}")
        return doc

    def resolve(self, principal: Principal, slot: str, label: str = PRODUCTION) -> Doc:
        """The version a label points at (what the platform serves for ``production``)."""
        labels = self.slot(principal, slot).get("labels") or {}
        if label not in labels:
            raise NotFound(f"prompt {slot} has no {label!r} label; set one in the catalog")
        return self.version(principal, slot, int(labels[label]))

    def label_history(self, principal: Principal, slot: str, label: str | None = None, limit: int = 200) -> list[Doc]:
        self._reader(principal)
        conds = [Cond("slot", "=", slot)]
        if label:
            conds.append(Cond("label", "=", label))
        return self.store.query(LABELS, PLATFORM, conds, order_by="at", descending=True, limit=limit)

    def diff(self, principal: Principal, slot: str, old: int, new: int) -> str:
        a, b = self.version(principal, slot, old), self.version(principal, slot, new)
        text = tpl.unified_diff(a["template"], b["template"], f"{slot} v{old}", f"{slot} v{new}")
        va = {v["name"]: v for v in a.get("variables") or []}
        vb = {v["name"]: v for v in b.get("variables") or []}
        notes = [f"+ variable {n}" for n in sorted(set(vb) - set(va))]
        notes += [f"- variable {n}" for n in sorted(set(va) - set(vb))]
        notes += [f"~ variable {n} changed" for n in sorted(set(va) & set(vb)) if va[n] != vb[n]]
        return text + ("\n" + "\n".join(notes) + "\n" if notes else "")

    def render(self, principal: Principal, slot: str, version: int, values: Mapping[str, Any]) -> str:
        doc = self.version(principal, slot, version)
        variables = [tpl.Variable.from_dict(v) for v in doc.get("variables") or []]
        return tpl.render(doc["template"], variables, values)

    # writing ------------------------------------------------------------------------------
    def ensure_slot(self, principal: Principal, slot: str, title: str, description: str) -> tuple[Doc, bool]:
        self._editor(principal)
        if not _SLOT.match(slot or ""):
            raise Invalid(f"slot name {slot!r} must be lower_snake_case (2-64 characters)")
        existing = self.store.get_or_none(PROMPTS, PLATFORM, _slot_id(slot))
        if existing is not None:
            return existing, False
        now = clock.iso()
        doc = {
            "id": _slot_id(slot),
            "tenantId": PLATFORM,
            "kind": "slot",
            "slot": slot,
            "version": 0,
            "title": title or slot,
            "description": description or "",
            "labels": {},
            "createdAt": now,
            "updatedAt": now,
        }
        try:
            created = self.store.create(PROMPTS, doc)
        except Conflict:
            return self.store.get(PROMPTS, PLATFORM, _slot_id(slot)), False
        self.audit.record(principal, None, "prompt.slot.create", slot, after={"title": title})
        return created, True

    def add_version(
        self,
        principal: Principal,
        slot: str,
        template: str,
        variables: Sequence[Mapping[str, Any]],
        notes: str = "",
        model_params: Mapping[str, Any] | None = None,
        version: int | None = None,
    ) -> Doc:
        """Store a new immutable version (next number unless given); the template must match its variables."""
        self._editor(principal)
        self.slot(principal, slot)
        declared = tpl.validate(template, variables)
        var_dicts = [v.to_dict() for v in declared]
        if version is None:
            existing = self.versions(principal, slot)
            version = (max(int(v["version"]) for v in existing) + 1) if existing else 1
        if int(version) < 1:
            raise Invalid("version numbers start at 1")
        doc = {
            "id": _version_id(slot, int(version)),
            "tenantId": PLATFORM,
            "kind": "version",
            "slot": slot,
            "version": int(version),
            "template": template,
            "variables": var_dicts,
            "notes": notes or "",
            "modelParams": dict(model_params or {}),
            "contentHash": content_hash(template, var_dicts),
            "createdAt": clock.iso(),
            "createdBy": principal.email,
        }
        try:
            created = self.store.create(PROMPTS, doc)
        except Conflict:
            raise Conflict(f"{slot} v{version} already exists; versions are immutable, add a new one") from None
        self.audit.record(
            principal,
            None,
            "prompt.version.create",
            _version_id(slot, int(version)),
            after={"notes": notes, "variables": [v["name"] for v in var_dicts]},
        )
        return created

    def move_label(
        self,
        principal: Principal,
        slot: str,
        label: str,
        version: int,
        reason: str,
        experiment_id: str | None = None,
        action: str = "move",
    ) -> Doc:
        """Point ``label`` at ``version``; the move is kept in the label history and audited."""
        self._editor(principal)
        label = check_label_name(label)
        if not (reason or "").strip():
            raise Invalid("say why the label moves (the reason is kept in the history and the audit log)")
        self.version(principal, slot, version)
        moved: dict[str, Any] = {}

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise NotFound(f"prompt slot {slot!r} does not exist")
            labels = dict(doc.get("labels") or {})
            moved["from"] = labels.get(label)
            if labels.get(label) == int(version):
                return None
            labels[label] = int(version)
            return {**doc, "labels": labels, "updatedAt": clock.iso()}

        self.store.update(PROMPTS, PLATFORM, _slot_id(slot), change)
        if moved.get("from") == int(version):
            raise Conflict(f"{slot}:{label} already points at v{version}")
        at = clock.iso()
        record = {
            "id": f"{at}-{uuid.uuid4().hex[:8]}",
            "tenantId": PLATFORM,
            "slot": slot,
            "label": label,
            "fromVersion": moved.get("from"),
            "toVersion": int(version),
            "at": at,
            "actor": principal.email,
            "reason": reason.strip(),
            "experimentId": experiment_id,
            "action": action,
        }
        saved = self.store.create(LABELS, record)
        self.audit.record(
            principal,
            None,
            f"prompt.label.{action}",
            f"{slot}:{label}",
            reason=reason.strip(),
            before={"version": moved.get("from")},
            after={"version": int(version), "experimentId": experiment_id},
        )
        return saved

    def previous_version(self, principal: Principal, slot: str, label: str) -> int | None:
        """Where ``roll_back_label`` would send the label: one step back in its history."""
        history = list(reversed(self.label_history(principal, slot, label, limit=1000)))
        stack: list[Doc] = []
        for h in history:
            if h.get("action") == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(h)
        while stack:
            top = stack.pop()
            if top.get("fromVersion") is not None:
                return int(top["fromVersion"])
        return None

    def roll_back_label(
        self, principal: Principal, slot: str, label: str, reason: str, experiment_id: str | None = None
    ) -> Doc:
        self._editor(principal)
        label = check_label_name(label)
        target = self.previous_version(principal, slot, label)
        if target is None:
            raise Conflict(f"{slot}:{label} has no earlier version to roll back to")
        return self.move_label(principal, slot, label, target, reason, experiment_id, action="rollback")


@dataclass
class SeedPromptsReport:
    slots_created: list[str] = field(default_factory=list)
    versions_created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # stored version differs from the file: kept as stored
    labels_set: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"slots created: {', '.join(self.slots_created) or 'none'}",
            f"versions created: {', '.join(self.versions_created) or 'none'}",
            f"versions already present: {len(self.unchanged)}",
            f"labels set: {', '.join(self.labels_set) or 'none'}",
            *(f"kept stored version (the file differs; add a new version number instead): {c}" for c in self.conflicts),
        ]


def seed_prompts(services: Any, actor: Principal, path: Path | str = SEED_FILE) -> SeedPromptsReport:
    """Load the catalog file: new slots and versions are added, nothing stored is overwritten.

    Labels in the file are applied only where the slot has no such label yet, so running the seed
    again never undoes a promotion made in the console.
    """
    catalog: PromptCatalog = services.prompts
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise Invalid(f"cannot read the prompt catalog file {path}: {e}") from None
    report = SeedPromptsReport()
    for entry in data.get("slots") or []:
        slot = str(entry.get("slot", ""))
        _, created = catalog.ensure_slot(actor, slot, str(entry.get("title", slot)), str(entry.get("description", "")))
        if created:
            report.slots_created.append(slot)
        for v in entry.get("versions") or []:
            number = int(v["version"])
            variables = list(v.get("variables") or [])
            existing = services.store.get_or_none(PROMPTS, PLATFORM, _version_id(slot, number))
            name = _version_id(slot, number)
            if existing is not None:
                declared = [d.to_dict() for d in tpl.validate(v["template"], variables)]
                same = existing.get("contentHash") == content_hash(v["template"], declared)
                (report.unchanged if same else report.conflicts).append(name)
                continue
            catalog.add_version(
                actor, slot, v["template"], variables, v.get("notes", ""), v.get("model_params"), version=number
            )
            report.versions_created.append(name)
        current = catalog.slot(actor, slot).get("labels") or {}
        for label, number in (entry.get("labels") or {}).items():
            if label not in current:
                catalog.move_label(
                    actor, slot, label, int(number), "initial label from the seeded catalog", action="seed"
                )
                report.labels_set.append(f"{slot}:{label}=v{number}")
    return report
