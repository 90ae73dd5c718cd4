"""Chat completions through the openai SDK: OpenAI, Azure OpenAI or any OpenAI-compatible base URL.

One call returns the text with what it cost: prompt and completion tokens (from the server's
``usage``), wall-clock latency and a USD estimate from list prices. Retries (429 honouring
Retry-After, 5xx, timeouts) are the SDK's own, with ``max_retries``; what is left after them
becomes a core error: ``RateLimited``/``TransientError`` to retry later, ``ConfigError`` for bad
credentials or an unknown model or deployment (needs a person), ``Invalid`` for a refused request.

Configuration (core.config.Settings):
- OpenAI: ``CASTIEL_LLM_API_KEY`` (and optionally ``CASTIEL_LLM_MODEL``).
- OpenAI-compatible server: also ``CASTIEL_LLM_BASE_URL`` (e.g. http://localhost:8000/v1).
- Azure OpenAI: ``CASTIEL_LLM_BASE_URL`` = https://<resource>.openai.azure.com,
  ``CASTIEL_LLM_AZURE_API_VERSION`` (e.g. 2024-10-21), ``CASTIEL_LLM_MODEL`` = the deployment name.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.adapters.openai_errors import castiel_error
from core.errors import ConfigError
from core.observability.logging import get_tenant_id
from core.observability.telemetry import timed

# List prices, USD per million tokens (input, output). Unknown models report cost 0 and cost_known False.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}

HOW_TO_CONFIGURE = (
    "No LLM is configured. Set CASTIEL_LLM_API_KEY (OpenAI), plus CASTIEL_LLM_BASE_URL for an "
    "OpenAI-compatible server, or CASTIEL_LLM_BASE_URL=https://<resource>.openai.azure.com with "
    "CASTIEL_LLM_AZURE_API_VERSION and CASTIEL_LLM_MODEL=<deployment> for Azure OpenAI; then restart the app."
)


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    model: str
    cost_known: bool = True

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatClient(abc.ABC):
    """What services need from a chat model; tests subclass it for fakes that need no server."""

    model: str

    @abc.abstractmethod
    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        json_mode: bool = False,
    ) -> ChatResult: ...

    def describe(self) -> str:
        return self.model


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int) -> tuple[float, bool]:
    """USD for one call at list price; matches dated snapshots (gpt-4o-mini-2024-07-18) by prefix."""
    price = PRICES_PER_MILLION.get(model)
    if price is None:
        for name in sorted(PRICES_PER_MILLION, key=len, reverse=True):
            if model.startswith(name + "-"):
                price = PRICES_PER_MILLION[name]
                break
    if price is None:
        return 0.0, False
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000, True


def llm_configured(settings: Any) -> bool:
    return bool(getattr(settings, "llm_api_key", None) or getattr(settings, "llm_base_url", None))


class OpenAIChatClient(ChatClient):
    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        azure_api_version: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        client: Any = None,
    ) -> None:
        self.model = model
        self.endpoint = base_url or "https://api.openai.com/v1"
        self.azure = azure_api_version is not None
        if client is not None:
            self._client = client
            return
        import openai

        if self.azure:
            if not base_url:
                raise ConfigError("Azure OpenAI needs CASTIEL_LLM_BASE_URL=https://<resource>.openai.azure.com")
            self._client = openai.AzureOpenAI(
                azure_endpoint=base_url,
                api_version=azure_api_version,
                api_key=api_key or "",
                timeout=timeout,
                max_retries=max_retries,
            )
        else:
            if not api_key and not base_url:
                raise ConfigError(HOW_TO_CONFIGURE)
            # local compatible servers often need no key, but the SDK insists on one
            self._client = openai.OpenAI(
                api_key=api_key or "not-needed", base_url=base_url, timeout=timeout, max_retries=max_retries
            )

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> OpenAIChatClient | None:
        """The configured client, or None when no LLM is configured (the screen says how to set one up)."""
        if not llm_configured(settings):
            return None
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(
            settings.llm_model,
            api_key=key,
            base_url=settings.llm_base_url,
            azure_api_version=settings.llm_azure_api_version,
            **kw,
        )

    def describe(self) -> str:
        where = "Azure OpenAI" if self.azure else self.endpoint
        return f"{self.model} at {where}"

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        json_mode: bool = False,
    ) -> ChatResult:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
        }
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        # Timed as an LLM call for the tenant whose work this is (bound by the page run or the worker's job).
        with timed("llm.chat", get_tenant_id(), kind="llm") as t:
            started = time.perf_counter()
            try:
                resp = self._client.chat.completions.create(**kwargs)
            except openai.OpenAIError as e:
                mapped = castiel_error(e, f"the LLM endpoint {self.describe()}", self.model,
                                       "; check CASTIEL_LLM_API_KEY, CASTIEL_LLM_MODEL and CASTIEL_LLM_BASE_URL")
                if mapped is None:
                    raise
                raise mapped from e
            latency_ms = (time.perf_counter() - started) * 1000
            choice = resp.choices[0] if resp.choices else None
            text = (choice.message.content if choice and choice.message else None) or ""
            usage = resp.usage
            pt = int(getattr(usage, "prompt_tokens", 0) or 0)
            ct = int(getattr(usage, "completion_tokens", 0) or 0)
            model = str(resp.model or self.model)
            t.model, t.tokens_in, t.tokens_out = model, pt, ct  # feeds cost per tenant and model
            cost, known = estimate_cost(self.model if self.azure else model, pt, ct)
            return ChatResult(text, pt, ct, latency_ms, cost, model, known)
