"""Prompt templates: declared variables checked against the text, strict rendering, diffs between versions.

Templates use Jinja2 placeholders (``{{ name }}``) rendered in a sandbox with ``StrictUndefined``,
so a prompt can never silently ship with an empty hole. Every placeholder must be declared with a
description; declared variables are required unless they say ``"required": false`` (then they
carry a ``default``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from core.errors import Invalid

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass(frozen=True)
class Variable:
    name: str
    description: str
    required: bool = True
    default: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Variable:
        name = str(d.get("name", "")).strip()
        if not _NAME.match(name):
            raise Invalid(f"variable name {name!r} must be lower_snake_case letters, digits and _ (max 64)")
        desc = str(d.get("description", "")).strip()
        if not desc:
            raise Invalid(f"variable {name} needs a description saying what to put in it")
        required = bool(d.get("required", True))
        default = d.get("default")
        if not required and default is None:
            raise Invalid(f"optional variable {name} needs a default")
        return cls(name, desc, required, None if default is None else str(default))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "required": self.required}
        if self.default is not None:
            out["default"] = self.default
        return out


def placeholders(template: str) -> set[str]:
    """Names the template refers to (Jinja2's own parser, so loops and filters are understood)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(template)))
    except TemplateSyntaxError as e:
        raise Invalid(f"template syntax error on line {e.lineno}: {e.message}") from None


def validate(template: str, variables: Sequence[Mapping[str, Any] | Variable]) -> list[Variable]:
    """Check a version before it is stored: placeholders and declarations must match exactly."""
    if not template or not template.strip():
        raise Invalid("a prompt template cannot be empty")
    declared = [v if isinstance(v, Variable) else Variable.from_dict(v) for v in variables]
    names = [v.name for v in declared]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise Invalid(f"variables declared twice: {', '.join(dupes)}")
    used = placeholders(template)
    undeclared = sorted(used - set(names))
    if undeclared:
        raise Invalid(
            f"the template uses undeclared variables: {', '.join(undeclared)}; declare them with a description"
        )
    unused = sorted(set(names) - used)
    if unused:
        raise Invalid(f"declared variables not used in the template: {', '.join(unused)}; remove them or use them")
    return declared


def render(template: str, variables: Sequence[Variable], values: Mapping[str, Any]) -> str:
    """Fill the template; missing required values and unknown names are errors, never blanks."""
    known = {v.name: v for v in variables}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise Invalid(f"values given for variables this version does not declare: {', '.join(unknown)}")
    missing = sorted(v.name for v in variables if v.required and values.get(v.name) in (None, ""))
    if missing:
        raise Invalid(f"missing values for required variables: {', '.join(missing)}")
    context = {v.name: v.default for v in variables if v.default is not None}
    context.update({k: v for k, v in values.items() if v not in (None, "")})
    try:
        return _ENV.from_string(template).render(**context)
    except UndefinedError as e:
        raise Invalid(f"cannot render the prompt: {e.message}") from None


def unified_diff(old: str, new: str, old_label: str, new_label: str, context: int = 3) -> str:
    """A unified diff of two versions' text (what the catalog's diff view shows)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_label, new_label, n=context
    )
    out = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return out


def similarity(old: str, new: str) -> float:
    return difflib.SequenceMatcher(a=old, b=new, autojunk=False).ratio()
