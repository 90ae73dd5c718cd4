"""The offline default embedder: WordLlama l2_supercat 256-d, weights and tokenizer shipped in the PyPI wheel.

Why this one (see the note in the embeddings report): it runs on numpy alone, needs no torch or
onnxruntime, loads in about 0.3 s and embeds tens of thousands of sentences per second on two
cores, which is what lets the demo embed every document at seed time and the worker keep up.

WordLlama looks for its tokenizer under ``<cache_dir>/tokenizers/`` and downloads it from the hub
when missing. The wheel ships it in ``wordllama/tokenizers/``, so pointing ``cache_dir`` at the
package folder and passing ``disable_download=True`` makes loading strictly offline: a missing
file raises instead of reaching the network.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.embeddings.embedder import Embedder, l2_normalise
from core.errors import CastielError

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, int], Any] = {}
SHIPPED_DIM = 256  # the wheel ships the 256-d weights; smaller sizes are truncations of them (Matryoshka)


def _load_wordllama(config: str, dim: int) -> Any:
    """Load once per process; WordLlama's import calls logging.basicConfig, which we undo."""
    key = (config, dim)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError as e:  # pragma: no cover - the package is a runtime requirement
            raise CastielError("the local embedder needs the `wordllama` package: pip install wordllama") from e
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        package_dir = Path(wordllama.__file__).parent
        try:
            model = WordLlama.load(config=config, dim=SHIPPED_DIM, trunc_dim=dim if dim != SHIPPED_DIM else None,
                                   cache_dir=package_dir, disable_download=True)
        except FileNotFoundError as e:
            raise CastielError(
                f"WordLlama weights or tokenizer for {config}/{dim} are not in the installed package ({e}); "
                "reinstall `wordllama` or choose CASTIEL_EMBEDDER=openai"
            ) from e
        _MODELS[key] = model
        return model


class WordLlamaEmbedder(Embedder):
    """WordLlama static token embeddings with average pooling; 256-d by default (64 or 128 truncate it)."""

    max_batch = 512
    max_input_tokens = 2048  # average pooling has no hard limit; this bounds padding memory per batch
    # A call tokenizes on every core (Rust), then pools on one (numpy): with two calls at once one
    # tokenizes while the other pools, 1.2 to 1.4 times the texts per second of one call at a time on
    # two cores (bench/embeddings.py prints both). The tokenizer and the weights are safe to share.
    concurrency = 2

    def __init__(self, config: str = "l2_supercat", dim: int = 256, batch_size: int = 128) -> None:
        import wordllama

        self.config = config
        self.dim = dim
        self.batch_size = batch_size
        self.name = f"wordllama-{config.replace('_', '-')}"
        self.version = f"{wordllama.__version__}-{dim}"
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = _load_wordllama(self.config, self.dim)
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps each padded batch tight: the model pads to the longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        limit = self.max_input_tokens * 8  # characters; tokens average well above one per 8 chars
        ordered = [texts[i][:limit] for i in order]
        vectors = self.model.embed(ordered, norm=False, batch_size=self.batch_size)
        out = np.empty_like(vectors)
        out[np.asarray(order)] = vectors
        return l2_normalise(out)
