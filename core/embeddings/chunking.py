"""Chunking with a token budget and overlap, at the largest semantic boundary that fits, streamed.

The splitting is semantic-text-splitter's (Rust): it cuts at the largest unit that fits the
budget, in order paragraphs, lines, sentences (Unicode sentence boundaries, CJK included), words,
and merges neighbours up to the budget, with overlap carried between chunks. It measures in
characters there, because a Python token counter called back from Rust costs forty times more;
the character budget is the token budget times ``CHARS_PER_TOKEN``, then every chunk's token
estimate is checked and the rare chunk over budget (CJK text, tables of symbols) is split again
by the token counter itself. So a chunk never exceeds ``max_tokens`` (estimated).

``iter_chunks`` takes a string or any iterable of text pieces (a file read in blocks) and cuts
it into windows of about ``WINDOW_CHARS`` at paragraph or line breaks, so a 50 MB document never
becomes one list of chunks. ``chunk_documents`` chunks many ordinary documents at once, counting
all their chunks' tokens in one vectorised pass (see ``estimate_tokens_many``); both give the
same chunks for the same text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from semantic_text_splitter import TextSplitter

from core.embeddings.tokens import estimate_tokens, estimate_tokens_many
from core.errors import Invalid

# Characters per estimated token assumed for the fast (character) pass: prose in Latin scripts runs
# about 3.8 characters per estimated token, so most chunks fill 90% of the budget and few overflow.
CHARS_PER_TOKEN = 3.5
WINDOW_CHARS = 256 * 1024
# Where a window may end, best first: a paragraph break, a line break, a sentence end, a space.
_WINDOW_CUTS = ("\n\n", "\n", ". ", "。", " ")


class ChunkingConfig(BaseModel):
    """Per-tenant chunking settings; ``key`` goes into document fingerprints so a change re-chunks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=200, ge=16, le=8000, description="token budget per chunk")
    overlap_tokens: int = Field(default=32, ge=0, description="tokens of trailing context carried into the next chunk")

    @model_validator(mode="after")
    def _overlap_below_half(self) -> ChunkingConfig:
        if self.overlap_tokens * 2 > self.max_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be at most half of max_tokens ({self.max_tokens})"
            )
        return self

    @property
    def key(self) -> str:
        return f"s{self.max_tokens}o{self.overlap_tokens}"

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> ChunkingConfig:
        """Build from stored or submitted values; ``Invalid`` with the reason when they do not fit."""
        from pydantic import ValidationError

        try:
            return cls(**(raw or {}))
        except ValidationError as e:
            reasons = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
            raise Invalid(f"bad chunking settings: {reasons}") from None


@dataclass(frozen=True, slots=True)
class Chunk:
    ord: int
    text: str
    tokens: int
    start: int  # character offset of the chunk's first sentence in the document
    end: int


@lru_cache(maxsize=32)
def _char_splitter(max_tokens: int, overlap_tokens: int) -> TextSplitter:
    return TextSplitter(int(max_tokens * CHARS_PER_TOKEN), int(overlap_tokens * CHARS_PER_TOKEN))


def _token_splitter(cfg: ChunkingConfig, count_tokens: Callable[[str], int]) -> TextSplitter:
    return TextSplitter.from_callback(count_tokens, cfg.max_tokens, cfg.overlap_tokens)


def _windows(source: str | Iterable[str]) -> Iterator[tuple[int, str]]:
    """(offset, text) windows of about ``WINDOW_CHARS``, each ending at the best break available."""
    pieces: Iterable[str] = (source,) if isinstance(source, str) else source
    buf = ""
    base = 0
    for piece in pieces:
        buf += piece
        while len(buf) >= 2 * WINDOW_CHARS:
            cut = _cut(buf)
            yield base, buf[:cut]
            base += cut
            buf = buf[cut:]
    while len(buf) > 2 * WINDOW_CHARS:
        cut = _cut(buf)
        yield base, buf[:cut]
        base += cut
        buf = buf[cut:]
    if buf:
        yield base, buf


def _cut(buf: str) -> int:
    for sep in _WINDOW_CUTS:
        at = buf.rfind(sep, WINDOW_CHARS // 2, WINDOW_CHARS)
        if at > 0:
            return at + len(sep)
    return WINDOW_CHARS


def _finish(cfg: ChunkingConfig, base: int, pieces: list[tuple[int, str]], counts: list[int], ord_: int,
            count_tokens: Callable[[str], int]) -> list[Chunk]:
    """Chunks from (offset, text) pieces and their counts; a piece over the budget is split by tokens."""
    out: list[Chunk] = []
    exact: TextSplitter | None = None
    for (offset, text), tokens in zip(pieces, counts, strict=True):
        if tokens <= cfg.max_tokens:
            start = base + offset
            out.append(Chunk(ord_ + len(out), text, tokens, start, start + len(text)))
            continue
        exact = exact or _token_splitter(cfg, count_tokens)
        for sub_offset, sub in exact.chunk_indices(text):
            start = base + offset + sub_offset
            out.append(Chunk(ord_ + len(out), sub, count_tokens(sub), start, start + len(sub)))
    return out


def iter_chunks(
    source: str | Iterable[str],
    config: ChunkingConfig | None = None,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> Iterator[Chunk]:
    """Yield chunks of ``source`` in document order, each within ``config.max_tokens`` (estimated)."""
    cfg = config or ChunkingConfig()
    fast = _char_splitter(cfg.max_tokens, cfg.overlap_tokens)
    count_many = estimate_tokens_many if count_tokens is estimate_tokens else (
        lambda texts: [count_tokens(t) for t in texts])
    ord_ = 0
    for base, window in _windows(source):
        pieces = fast.chunk_indices(window)
        chunks = _finish(cfg, base, pieces, count_many([t for _, t in pieces]), ord_, count_tokens)
        ord_ += len(chunks)
        yield from chunks


def chunk_documents(texts: Sequence[str], config: ChunkingConfig | None = None) -> list[list[Chunk]]:
    """The chunks of each text (as ``iter_chunks`` gives them), for many ordinary-sized texts at once."""
    cfg = config or ChunkingConfig()
    out: list[list[Chunk] | None] = [None] * len(texts)
    small = [i for i, t in enumerate(texts) if len(t) < 2 * WINDOW_CHARS]
    for i, t in enumerate(texts):
        if len(t) >= 2 * WINDOW_CHARS:
            out[i] = list(iter_chunks(t, cfg))
    fast = _char_splitter(cfg.max_tokens, cfg.overlap_tokens)
    per_text = fast.chunk_all_indices([texts[i] for i in small])
    counts = estimate_tokens_many([t for pieces in per_text for _, t in pieces])
    at = 0
    for i, pieces in zip(small, per_text, strict=True):
        out[i] = _finish(cfg, 0, pieces, counts[at : at + len(pieces)], 0, estimate_tokens)
        at += len(pieces)
    return [c if c is not None else [] for c in out]


def chunk_text(text: str, config: ChunkingConfig | None = None) -> list[Chunk]:
    """All chunks of a (small) text; use ``iter_chunks`` for large documents."""
    return list(iter_chunks(text, config))
