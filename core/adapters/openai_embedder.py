"""OpenAI / Azure OpenAI (or any OpenAI-compatible server) embeddings through the openai SDK.

Requests are cut by input count and by estimated tokens per request; each input is truncated to
the model's input limit. 429s are retried with exponential backoff and jitter, honouring
``Retry-After`` / ``retry-after-ms``; 5xx, timeouts and dropped connections likewise. The SDK's
own retries are off so there is one retry policy, visible here. Errors become core errors:
``RateLimited``/``TransientError`` when retries ran out, ``ConfigError`` for bad credentials or a
missing deployment, ``Invalid`` for a request the server refuses.
"""

from __future__ import annotations

import base64
import binascii
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from core.adapters.openai_errors import castiel_error
from core.embeddings.embedder import Embedder, l2_normalise
from core.embeddings.tokens import estimate_tokens, estimate_tokens_many, truncate_to_tokens
from core.errors import ConfigError, Invalid, TransientError

# Native output sizes and list prices (USD per million input tokens) of OpenAI's embedding models.
KNOWN_MODELS: dict[str, tuple[int, float]] = {
    "text-embedding-3-small": (1536, 0.02),
    "text-embedding-3-large": (3072, 0.13),
    "text-embedding-ada-002": (1536, 0.10),
}


def _matrix(embeddings: list[Any]) -> np.ndarray:
    """Rows from base64 little-endian float32 strings, or from float lists (servers that ignore the format)."""
    try:
        if all(isinstance(e, str) for e in embeddings):
            rows = [np.frombuffer(base64.b64decode(e, validate=True), dtype="<f4") for e in embeddings]
        else:
            rows = [np.asarray(e, dtype=np.float32) for e in embeddings]
        return np.stack(rows).astype(np.float32, copy=False)
    except (ValueError, TypeError, binascii.Error) as e:  # ragged rows, bad base64, odd byte counts
        raise TransientError(f"embedding service answered malformed vectors ({e})") from e


class OpenAIEmbedder(Embedder):
    """Embeddings from OpenAI, Azure OpenAI (``azure_endpoint``) or a compatible ``base_url``."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        dimensions: int | None = None,
        max_batch: int = 256,
        max_request_tokens: int = 250_000,
        max_input_tokens: int = 8191,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        concurrency: int = 4,
        client: Any = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        known_dim, price = KNOWN_MODELS.get(model, (0, 0.0))
        self.model = model
        self.dimensions = dimensions
        self.dim = dimensions or known_dim
        self.name = f"openai-{model}"
        self.version = str(dimensions or known_dim or "native")
        self.cost_per_million_tokens = price
        self.max_batch = max_batch
        self.max_request_tokens = max_request_tokens
        self.max_input_tokens = max_input_tokens
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        # requests in flight at once from the pipeline: each mostly waits on the network (429s back off)
        self.concurrency = concurrency
        self.requests = 0  # HTTP calls made, retries included (for tests and telemetry)
        self._count_lock = threading.Lock()
        if client is not None:
            self._client = client
            return
        if not api_key:
            raise ConfigError("OpenAI embeddings need an API key: set CASTIEL_LLM_API_KEY")
        import openai

        if azure_endpoint:
            if not api_version:
                raise ConfigError("Azure OpenAI needs an API version: set CASTIEL_LLM_AZURE_API_VERSION")
            self._client = openai.AzureOpenAI(
                azure_endpoint=azure_endpoint,
                api_version=api_version,
                api_key=api_key,
                max_retries=0,
                timeout=timeout,
            )
        else:
            self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)

    @property
    def model_key(self) -> str:
        if not self.dim:
            # An unknown model or deployment: one tiny call tells its output size, which is part of the key.
            self.embed(["dimension probe"])
        return f"{self.name}@{self.version}"

    # batching ---------------------------------------------------------------------------
    def _batches(self, texts: list[str], counts: list[int]) -> list[list[str]]:
        """Requests of at most ``max_batch`` inputs and ``max_request_tokens`` (estimated) each."""
        batches: list[list[str]] = []
        current: list[str] = []
        tokens = 0
        for t, n in zip(texts, counts, strict=True):
            n = max(1, n)
            if current and (len(current) >= self.max_batch or tokens + n > self.max_request_tokens):
                batches.append(current)
                current, tokens = [], 0
            current.append(t)
            tokens += n
        if current:
            batches.append(current)
        return batches

    def _prepare(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """Texts as sent, and their estimated tokens: counted in one pass, each cut to the input limit."""
        # The API rejects empty strings; a single space embeds as "no content".
        prepared = [t if t.strip() else " " for t in texts]
        counts = estimate_tokens_many(prepared)
        for i, n in enumerate(counts):
            if n > self.max_input_tokens:
                prepared[i] = truncate_to_tokens(prepared[i], self.max_input_tokens)
                counts[i] = estimate_tokens(prepared[i])
        return prepared, counts

    # calls ------------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None) if exc else None
        if hinted is not None:
            return min(hinted, self.backoff_max)
        expo = self.backoff_base * (2 ** (state.attempt_number - 1))
        return min(self.backoff_max, expo) * (0.5 + random.random() / 2)

    def _call(self, batch: list[str]) -> np.ndarray:
        import openai

        def once() -> np.ndarray:
            with self._count_lock:
                self.requests += 1
            # base64 asked for explicitly: the SDK then hands over the strings as they came, instead of
            # turning each vector into a list of Python floats that is turned back into an array here
            kwargs: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "base64"}
            if self.dimensions:
                kwargs["dimensions"] = self.dimensions
            try:
                resp = self._client.embeddings.create(**kwargs)
            except openai.OpenAIError as e:
                mapped = castiel_error(e, "the embedding service", self.model)
                if mapped is None:
                    raise
                raise mapped from e
            rows = sorted(resp.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise TransientError(f"embedding service answered {len(rows)} vectors for {len(batch)} inputs")
            return _matrix([r.embedding for r in rows])

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            reraise=True,
        )
        if self._sleep is not None:
            retrying.sleep = self._sleep  # tests record the waits instead of sleeping
        return retrying(once)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._call(b) for b in self._batches(*self._prepare(texts))]
        vectors = np.concatenate(parts, axis=0)
        if not self.dim:
            self.dim = int(vectors.shape[1])
            self.version = str(self.dim)
        elif vectors.shape[1] != self.dim:
            raise Invalid(
                f"{self.model} returned {vectors.shape[1]}-d vectors but {self.dim} were expected; "
                "set the embedding dimensions to match the deployment"
            )
        return l2_normalise(vectors)
