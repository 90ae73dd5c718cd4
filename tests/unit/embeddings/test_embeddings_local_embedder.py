"""The offline default embedder: loads from the installed wheel with downloads impossible, and embeds sensibly."""

from __future__ import annotations

import numpy as np
import pytest

from core.adapters import local_embedder
from core.adapters.local_embedder import WordLlamaEmbedder


def test_loads_offline_and_embeds_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the local embedder tried to download something")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(local_embedder, "_MODELS", {})  # force a real load under these patches
    e = WordLlamaEmbedder()
    texts = ["Legal asked to raise the liability cap.", "", "The liability cap must go up, says legal.",
             "Weather in Seattle is rainy today.", "データはEU域内に保存する必要があります。"]
    v = e.embed(texts)
    assert v.shape == (5, 256) and v.dtype == np.float32
    norms = np.linalg.norm(v, axis=1)
    assert np.allclose(norms[[0, 2, 3, 4]], 1.0, atol=1e-5) and norms[1] == 0.0  # empty text: zero, not NaN
    assert v[0] @ v[2] > v[0] @ v[3] + 0.2  # paraphrases are closer than unrelated text
    assert e.model_key == f"wordllama-l2-supercat@{__import__('wordllama').__version__}-256"
    # each text's vector is its own, whatever the batch around it
    assert np.allclose(e.embed(texts[::-1])[::-1], v, atol=1e-6)
    assert e.count_tokens("hello world") >= 2


def test_truncated_model_is_a_different_model() -> None:
    small = WordLlamaEmbedder(dim=128)
    full = WordLlamaEmbedder()
    v = small.embed(["renewal pricing"])
    assert v.shape == (1, 128) and small.model_key != full.model_key
    # Matryoshka truncation: the small vector is the normalised head of the full one
    head = full.model.embed(["renewal pricing"], norm=False)[0][:128]
    assert np.allclose(v[0], head / np.linalg.norm(head), atol=1e-5)


def test_pooling_gives_wordllamas_own_vectors() -> None:
    """The embedder pools without padding (a sparse count matrix times the table); WordLlama pads and masks.
    Both are the mean of the text's token embeddings, so the vectors must agree, batch by batch."""
    e = WordLlamaEmbedder()
    long = "Procurement wants net-60 terms and a 3-year price lock before the renewal. " * 40
    texts = ["renewal pricing", "", "   ", long, "データはEU域内に保存する必要があります。", "Größe – façade 🚀 ✓",
             "a", "The champion left; legal now owns the MSA redline.\n\nNext step: exec sponsor call."] * 3
    ours = e.embed(texts)
    theirs = e.model.embed(texts, norm=False, batch_size=4)  # small batches: padding differs between them
    norms = np.linalg.norm(theirs, axis=1, keepdims=True)
    expected = np.divide(theirs, norms, out=np.zeros_like(theirs), where=norms > 0)
    assert ours.shape == expected.shape == (len(texts), 256)
    assert np.allclose(ours, expected, atol=1e-5)
    assert e.count_tokens(long) == len(e.model.tokenize([long])[0].ids)  # no padding counted
