"""The one interface every embedding model sits behind, and helpers shared by its implementations.

An embedder turns texts into L2-normalised float32 rows, so cosine similarity is a dot product
everywhere (exact search, the ANN index, Cosmos DB ``VectorDistance``). ``model_key`` names the
model and its version; each stored chunk records it, and a change of key means re-embedding.
Retryable failures raise ``TransientError``/``RateLimited``; anything else is a per-input problem.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence

import numpy as np

from core.embeddings.tokens import estimate_tokens


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows in float32; all-zero rows (empty text) stay zero instead of becoming NaN."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(v / norms, dtype=np.float32)


@functools.lru_cache(maxsize=64)  # called for every chunk id; a handful of distinct models
def model_slug(model_key: str) -> str:
    """A model key made safe for ids and file names."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)


class Embedder(abc.ABC):
    """Text to vectors. Subclasses set ``name``, ``version``, ``dim`` and implement ``embed``."""

    name: str = "abstract"
    version: str = "0"
    dim: int = 0
    max_batch: int = 256  # texts per call the pipeline hands over at once
    max_input_tokens: int = 8192  # longer inputs are truncated by the embedder
    # embedding calls the pipeline keeps running at once (from as many threads): above one where a call
    # leaves the machine partly idle, e.g. waiting on the network
    concurrency: int = 1
    cost_per_million_tokens: float = 0.0  # USD, for re-embed estimates; 0 for local models

    @property
    def model_key(self) -> str:
        return f"{self.name}@{self.version}"

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``: shape (len(texts), dim), float32, rows of unit length."""

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def embed_query(self, text: str) -> np.ndarray:
        """One query vector, shape (dim,)."""
        return self.embed([text])[0]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "dim": self.dim, "modelKey": self.model_key,
                "costPerMillionTokens": self.cost_per_million_tokens}
