"""Render helpers for the Templates screen: the preflight report, usage, provenance, the placeholder editor's
mapping between a placeholder configuration and its simple form fields."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

TYPES = ["text", "number", "currency", "date", "list", "table", "image", "chart"]
SOURCES = ["static", "crm", "llm"]
SOURCE_LABELS = {"static": "Static value", "crm": "CRM field", "llm": "LLM prompt"}


def preflight_report(report: dict[str, Any], key: str) -> None:
    """The report an admin reads before accepting an upload: verdict, numbers, issues with locations."""
    if report["accepted"]:
        st.success(f"Preflight passed: {report['filename']} is a valid {report['kind']} template with "
                   f"{len(report['placeholders'])} placeholders.", icon=":material/verified:")
    else:
        st.error(f"Preflight refused {report['filename']}: fix the problems below and upload it again.",
                 icon=":material/gpp_bad:")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("File size", f"{report['size'] / 1024:,.0f} KB")
    c2.metric("Inflated", f"{report['inflatedBytes'] / 1024:,.0f} KB", f"ratio {report['ratio']:.0f}x",
              delta_color="off")
    c3.metric("Placeholders", len(report["placeholders"]))
    c4.metric("Split tags merged", report["mergedSplits"])
    issues = report["issues"]
    if issues:
        st.markdown("**Problems and warnings**")
        st.dataframe(pd.DataFrame(issues)[["severity", "code", "message", "location"]], hide_index=True,
                     width="stretch", key=f"{key}_issues")
    if report["uses"]:
        st.markdown("**Where each placeholder is**")
        st.dataframe(pd.DataFrame(report["uses"])[["name", "where", "context", "location"]], hide_index=True,
                     width="stretch", key=f"{key}_uses")


def usage_panel(usage: Any) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Generated this month", f"{usage.generated:,}")
    c2.metric("Reserved by open jobs", f"{usage.reserved:,}")
    c3.metric("Monthly quota", f"{usage.quota:,}")
    c4.metric("Left", f"{usage.remaining:,}")
    share = 0.0 if not usage.quota else min(1.0, (usage.generated + usage.reserved) / usage.quota)
    st.progress(share, text=f"{usage.month}: {usage.generated + usage.reserved:,} of {usage.quota:,} documents")


def provenance_rows(provenance: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, p in sorted(provenance.items()):
        origin = p.get("source")
        if origin == "crm":
            rec = p.get("record") or {}
            detail = f"{p.get('path')} from {rec.get('objectType', '?')} {rec.get('sourceId', '')}".strip()
        elif origin == "llm":
            detail = f"prompt {p.get('prompt')} v{p.get('promptVersion')} · {p.get('model')}"
            if p.get("shortened"):
                detail += " · shortened by the model"
        else:
            detail = "static value"
        if p.get("fallback"):
            detail += f" → fallback ({p.get('reason')})"
        elif p.get("empty"):
            detail += f" → left empty ({p.get('reason')})"
        if p.get("regeneratedAt"):
            detail += f" · re-generated {p['regeneratedAt'][:16]} by {p.get('regeneratedBy')}"
        value = p.get("value")
        rows.append({"placeholder": name, "type": p.get("type"), "source": origin, "provenance": detail,
                     "value": value if isinstance(value, str) else json.dumps(value, default=str)[:300]})
    return rows


def simple_fields(pc: dict[str, Any]) -> dict[str, Any]:
    """A placeholder configuration as the editor's simple fields plus an advanced JSON remainder."""
    src = pc.get("source") or {}
    kind = src.get("kind", "static")
    if kind == "crm":
        value = src.get("path") or ""
    elif kind == "llm":
        value = src.get("prompt") or ""
    else:
        v = src.get("value")
        value = "\n".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else (
            v if isinstance(v, str) else json.dumps(v) if v is not None else "")
    cons = dict(pc.get("constraints") or {})
    fb = pc.get("fallback")
    fallback = "\n".join(fb) if isinstance(fb, list) and all(isinstance(x, str) for x in fb) else (
        fb if isinstance(fb, str) else json.dumps(fb) if fb is not None else "")
    advanced: dict[str, Any] = {k: v for k, v in cons.items() if k not in {"required", "max_length"}
                                and v not in (None, [], "USD", "sum", "column")}
    if kind == "llm":
        advanced["variables"] = src.get("variables") or {}
        if src.get("prompt_version") is not None:
            advanced["prompt_version"] = src["prompt_version"]
    return {"type": pc.get("type", "text"), "source": kind, "value": value, "fallback": fallback,
            "required": bool(cons.get("required")), "max_length": int(cons.get("max_length") or 0),
            "advanced": json.dumps(advanced, indent=1) if advanced else ""}


def _parse_value(text: str, ftype: str) -> Any:
    text = text.strip()
    if not text:
        return None
    if ftype == "list":
        return [ln.strip() for ln in text.splitlines() if ln.strip()]
    if ftype in {"table", "chart"} or (text[:1] in "[{" and ftype != "text"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"the value must be JSON for a {ftype} ({e.msg})") from e
    return text


def from_simple(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Build a placeholder configuration from the editor's fields (validated by the service)."""
    advanced: dict[str, Any] = {}
    if fields["advanced"].strip():
        try:
            advanced = json.loads(fields["advanced"])
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: advanced settings must be JSON ({e.msg})") from e
        if not isinstance(advanced, dict):
            raise ValueError(f"{name}: advanced settings must be a JSON object")
    variables = advanced.pop("variables", {})
    prompt_version = advanced.pop("prompt_version", None)
    kind = fields["source"]
    source: dict[str, Any] = {"kind": kind}
    if kind == "crm":
        source["path"] = fields["value"].strip()
    elif kind == "llm":
        source.update(prompt=fields["value"].strip(), variables=variables, prompt_version=prompt_version)
    else:
        source["value"] = _parse_value(fields["value"], fields["type"])
    constraints = {**advanced, "required": bool(fields["required"])}
    if int(fields["max_length"] or 0) > 0:
        constraints["max_length"] = int(fields["max_length"])
    return {"name": name, "type": fields["type"], "source": source, "constraints": constraints,
            "fallback": _parse_value(fields["fallback"], fields["type"])}
