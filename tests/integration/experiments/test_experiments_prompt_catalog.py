"""Prompt catalog on SQLite: idempotent seeding, immutable versions, labels with history and audit, diffs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bootstrap import Services
from core.errors import Conflict, Forbidden, Invalid
from core.services.access import ML_ENGINEER, Principal
from core.services.prompts import SEED_FILE, seed_prompts
from tests.conftest import make_user


def test_seed_is_idempotent_adds_new_versions_and_never_overwrites(
    seeded: Services, admin: Principal, tmp_path: Path
) -> None:
    again = seed_prompts(seeded, admin)
    assert again.versions_created == [] and again.labels_set == [] and len(again.unchanged) == 13
    slots = {s["slot"] for s in seeded.prompts.slots(admin)}
    assert {"intent_classification", "conversation_summary", "deal_insight", "email_draft", "risk_explanation",
            "context_assembly"} <= slots

    seeded.prompts.move_label(admin, "intent_classification", "production", 2, "promoted by hand")
    data = json.loads(SEED_FILE.read_text())
    slot = data["slots"][0]
    slot["versions"][0]["template"] += "\nChanged in the file."  # an edit to a stored version
    slot["versions"].append({**slot["versions"][2], "version": 4, "notes": "new in the file"})
    edited = tmp_path / "prompts.json"
    edited.write_text(json.dumps(data))
    report = seed_prompts(seeded, admin, edited)
    assert report.versions_created == ["intent_classification@v4"]
    assert report.conflicts == ["intent_classification@v1"]
    v1 = seeded.prompts.version(admin, "intent_classification", 1)
    assert "Changed in the file" not in v1["template"]  # nothing overwritten
    # the seeded label does not undo the promotion made in the console
    assert seeded.prompts.slot(admin, "intent_classification")["labels"]["production"] == 2


def test_versions_are_immutable_and_variables_are_validated(seeded: Services, admin: Principal) -> None:
    with pytest.raises(Conflict, match="immutable"):
        seeded.prompts.add_version(admin, "email_draft", "Hi {{ sender_name }}", [
            {"name": "sender_name", "description": "who sends"}], version=1)
    with pytest.raises(Invalid, match="undeclared variables: tone"):
        seeded.prompts.add_version(admin, "email_draft", "Hi {{ tone }}", [])
    with pytest.raises(Invalid, match="not used in the template: extra"):
        seeded.prompts.add_version(admin, "email_draft", "Hi", [{"name": "extra", "description": "x"}])
    with pytest.raises(Invalid, match="syntax error"):
        seeded.prompts.add_version(admin, "email_draft", "Hi {{ broken", [])
    new = seeded.prompts.add_version(admin, "email_draft", "Write as {{ sender_name }}.", [
        {"name": "sender_name", "description": "the rep"}], notes="short")
    assert new["version"] == 3
    assert seeded.prompts.render(admin, "email_draft", 3, {"sender_name": "Ana"}) == "Write as Ana."
    with pytest.raises(Invalid, match="missing values for required variables: sender_name"):
        seeded.prompts.render(admin, "email_draft", 3, {})
    with pytest.raises(Invalid, match="does not declare: nope"):
        seeded.prompts.render(admin, "email_draft", 3, {"sender_name": "Ana", "nope": 1})
    # an optional variable falls back to its default
    text = seeded.prompts.render(admin, "conversation_summary", 1, {"max_bullets": 5})
    assert "the account team" in text and "5 bullets" in text


def test_label_moves_are_kept_in_history_audited_and_can_be_rolled_back(seeded: Services, admin: Principal) -> None:
    p = seeded.prompts
    p.move_label(admin, "deal_insight", "production", 2, "better structure")
    p.move_label(admin, "deal_insight", "canary-eu", 2, "try in EU first")
    assert p.resolve(admin, "deal_insight")["version"] == 2
    history = p.label_history(admin, "deal_insight", "production")
    assert [(h["fromVersion"], h["toVersion"]) for h in history] == [(1, 2), (None, 1)]
    assert history[0]["reason"] == "better structure" and history[0]["actor"] == admin.email
    p.roll_back_label(admin, "deal_insight", "production", "customers preferred v1")
    assert p.resolve(admin, "deal_insight")["version"] == 1
    with pytest.raises(Conflict, match="no earlier version"):
        p.roll_back_label(admin, "deal_insight", "production", "again")
    actions = [r["action"] for r in seeded.audit.search(admin, action="prompt.label.move").rows]
    assert actions and all(a == "prompt.label.move" for a in actions)
    assert seeded.audit.search(admin, action="prompt.label.rollback").rows[0]["reason"] == "customers preferred v1"
    with pytest.raises(Invalid, match="say why"):
        p.move_label(admin, "deal_insight", "production", 2, "  ")
    with pytest.raises(Invalid, match="label"):
        p.move_label(admin, "deal_insight", "Bad Label!", 2, "x")


def test_diff_shows_changed_lines_and_variables(seeded: Services, admin: Principal) -> None:
    diff = seeded.prompts.diff(admin, "deal_insight", 1, 2)
    assert diff.startswith("--- deal_insight v1\n+++ deal_insight v2\n")
    assert any(line.startswith("+") and "stale" in line for line in diff.splitlines())
    assert "+ variable days_since_activity" in diff


def test_tenant_scoped_engineer_can_read_but_not_change_the_catalog(seeded: Services) -> None:
    tenant_ml = make_user(seeded, ML_ENGINEER, "tenant-a", "ml-a@example.com")
    assert seeded.prompts.versions(tenant_ml, "email_draft")
    with pytest.raises(Forbidden, match="platform-wide"):
        seeded.prompts.move_label(tenant_ml, "email_draft", "production", 2, "x")
