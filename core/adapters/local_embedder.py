"""The offline default embedder: WordLlama l2_supercat 256-d, weights and tokenizer shipped in the PyPI wheel.

Why this one (see the note in the embeddings report): it runs on numpy and scipy, needs no torch
or onnxruntime, loads in about 0.3 s and embeds tens of thousands of sentences per second on two
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
from itertools import chain
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
    """WordLlama static token embeddings with average pooling; 256-d by default (64 or 128 truncate it).

    The pooling is WordLlama's (the mean of the text's token embeddings, made unit length), computed
    without its padding: WordLlama pads a batch to its longest text, gathers a (texts, tokens, dim)
    array and masks it, about 30 MB per 128 texts, all of it memory traffic and most of it under the
    GIL. Here each text's token ids become one row of a sparse count matrix and the pooled vectors
    are that matrix times the embedding table, one scipy call that releases the GIL. Same vectors
    (checked against WordLlama's own ``embed`` in the tests), two to three times the texts per second.
    """

    max_batch = 512
    max_input_tokens = 2048  # bounds the characters read per text (see ``embed``)
    # The tokenizer already runs on every core (Rust) and the pooling is one GIL-free call, so a second
    # call at once adds nothing on two cores (bench/embeddings.py times both).
    concurrency = 1

    def __init__(self, config: str = "l2_supercat", dim: int = 256) -> None:
        import wordllama

        self.config = config
        self.dim = dim
        self.name = f"wordllama-{config.replace('_', '-')}"
        self.version = f"{wordllama.__version__}-{dim}"
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = _load_wordllama(self.config, self.dim)
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer without padding (WordLlama's own pads every batch to its longest text)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self.model.tokenizer.to_str())
            tok.no_padding()
            tok.no_truncation()
            self._tokenizer = tok
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import scipy.sparse as sp

        limit = self.max_input_tokens * 8  # characters; tokens average well above one per 8 chars
        texts = [t[:limit] for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        table = self.model.embedding  # (vocabulary, dim) float32
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(lengths.sum()))
        np.clip(ids, 0, table.shape[0] - 1, out=ids)  # as WordLlama does with ids beyond its table
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        counts = sp.csr_matrix((np.ones(ids.size, dtype=np.float32), ids, starts), shape=(len(texts), table.shape[0]))
        return l2_normalise(counts @ table)  # the sum's direction is the mean's: no division needed
