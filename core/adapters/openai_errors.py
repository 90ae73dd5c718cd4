"""The openai SDK's errors as Castiel errors, for the chat client and the embedder alike.

Each error says which endpoint answered and what a person can do: a refused key or a missing
deployment is a ``ConfigError`` (someone fixes the settings), a 429 is ``RateLimited`` with the
server's own wait when it gave one, a bad request is ``Invalid``, and anything the service may get
over (5xx, timeouts, a dropped connection) is ``TransientError``, which callers retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import CastielError, ConfigError, Invalid, RateLimited, TransientError


def message(e: Any) -> str:
    """The service's own explanation, from the error body when it has one."""
    body = getattr(e, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(e, "message", e))


def retry_after(e: Any) -> float | None:
    """Seconds the service asked to wait (``retry-after-ms`` or ``retry-after``), if it said."""
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(key)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None


def castiel_error(e: Exception, service: str, model: str, settings_hint: str = "") -> CastielError | None:
    """The Castiel error for an openai SDK error from ``service`` (e.g. "the embedding service"); else None.

    ``settings_hint`` ends messages a person fixes in the settings, e.g. "; check CASTIEL_LLM_API_KEY".
    """
    import openai

    msg = message(e)
    if isinstance(e, openai.RateLimitError):
        return RateLimited(f"{service} is rate limiting (429): {msg}; try again shortly", retry_after(e))
    if isinstance(e, openai.AuthenticationError):
        return ConfigError(f"{service} refused the API key (401): {msg}{settings_hint}")
    if isinstance(e, openai.PermissionDeniedError):
        return ConfigError(f"the API key may not use {model} at {service} (403): {msg}{settings_hint}")
    if isinstance(e, openai.NotFoundError):
        return ConfigError(f"model or deployment {model!r} not found at {service} (404): {msg}{settings_hint}")
    if isinstance(e, openai.BadRequestError):
        return Invalid(f"{service} refused the request (400): {msg}")
    if isinstance(e, openai.APIStatusError):
        return TransientError(f"{service} answered {e.status_code}: {msg}; try again")
    if isinstance(e, openai.APIConnectionError):  # APITimeoutError is one too
        return TransientError(f"cannot reach {service}: {e}")
    return None
