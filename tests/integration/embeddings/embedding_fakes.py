"""Test embedders that subclass the real interface: deterministic bag-of-words vectors, call counting, faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from core.embeddings.embedder import Embedder, l2_normalise
from core.errors import TransientError
from tests.fakes.openai_server import fake_embedding


class CountingEmbedder(Embedder):
    """Embeds like the fake OpenAI server; counts texts and batches; can fail or stall on demand."""

    def __init__(self, name: str = "fake", dim: int = 16, version: str = "1") -> None:
        self.name, self.dim, self.version = name, dim, version
        self.texts: list[str] = []
        self.batches: list[int] = []
        self.fail_batches: set[int] = set()  # 0-based call numbers that raise TransientError
        self.poison: str | None = None  # any batch holding this text fails, every time
        self.delay = 0.0
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            call = len(self.batches)
            self.batches.append(len(texts))
        if self.delay:
            time.sleep(self.delay)
        if call in self.fail_batches:
            raise TransientError(f"embedding service unavailable (batch {call})")
        if self.poison and any(self.poison in t for t in texts):
            raise ValueError("the model cannot embed this input")
        with self._lock:
            self.texts.extend(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack([fake_embedding(t, self.dim) for t in texts]))
