"""Sentence-boundary chunking with a token budget and overlap, streamed so huge documents stay small in memory.

``iter_chunks`` takes a string or any iterable of text pieces (a file read in blocks) and yields
chunks one at a time: at most one pending sentence buffer and one chunk window are held, so a
50 MB document never becomes one list of chunks. Boundaries are sentence ends (``. ! ? …``
followed by space, CJK ``。！？``) and line breaks; a sentence longer than the budget is cut at
token starts. Each new chunk begins with the previous chunk's trailing sentences up to the
overlap budget, so a fact split across a boundary is still found whole in one chunk.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.embeddings.tokens import estimate_tokens, split_by_tokens
from core.errors import Invalid

# Abbreviations whose period does not end a sentence (lower-case, without the period).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st inc ltd co corp vs etc e.g i.e approx no fig dept est jan feb mar apr jun jul aug "
    "sep sept oct nov dec u.s z.b bzw usw ca d.h m.e p.ex cf al".split()
)
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[」』）)]*\s*|\n\s*")
_LAST_WORD = re.compile(r"(\S+)$")
_CJK_END = re.compile(r"[。！？」』）]$")
# A run of text with no boundary longer than this is cut at whitespace, so memory stays bounded.
_MAX_PENDING_CHARS = 20_000
_STREAM_PIECE_CHARS = 1 << 20


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


@dataclass(frozen=True, slots=True)
class _Sentence:
    start: int
    text: str
    joiner: str  # what separates it from the next sentence when re-joined ("\n", " " or "")
    tokens: int


def _ends_sentence(buf: str, seg_start: int, m: re.Match[str]) -> bool:
    """False for periods after abbreviations or initials, and when the next word starts lower-case."""
    punct = m.group(0)
    if punct.startswith("\n") or punct[0] in "。！？":
        return True
    if punct[0] != ".":
        return True
    word_m = _LAST_WORD.search(buf, seg_start, m.start())
    word = word_m.group(1).lower().lstrip("(\"'") if word_m else ""
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return False
    nxt = buf[m.end() : m.end() + 1]
    return not (nxt and nxt.islower())


def _sentences(pieces: Iterable[str], count_tokens: Callable[[str], int]) -> Iterator[_Sentence]:
    buf = ""
    base = 0  # document offset of buf[0]
    seg_start = 0

    def emit(a: int, b: int, joiner: str) -> Iterator[_Sentence]:
        raw = buf[a:b]
        text = raw.strip()
        if text:
            lead = len(raw) - len(raw.lstrip())
            yield _Sentence(base + a + lead, text, joiner, count_tokens(text))

    for piece in pieces:
        if not piece:
            continue
        buf += piece
        seg_start = 0
        last_end = 0
        for m in _BOUNDARY.finditer(buf):
            if m.end() >= len(buf):
                break  # the boundary may continue in the next piece; decide once more text arrives
            if not _ends_sentence(buf, seg_start, m):
                continue
            sep = m.group(0)
            joiner = "\n" if "\n" in sep else ("" if _CJK_END.search(sep.rstrip()) else " ")
            yield from emit(last_end, m.start() + len(sep.rstrip()), joiner)
            last_end = seg_start = m.end()
        if len(buf) - last_end > _MAX_PENDING_CHARS:
            # No boundary for a long stretch (a table dump, binary-ish text): cut at the last space.
            cut = buf.rfind(" ", last_end, len(buf) - 1)
            cut = cut if cut > last_end else len(buf) - 1
            yield from emit(last_end, cut, " ")
            last_end = cut
        buf = buf[last_end:]
        base += last_end
    yield from emit(0, len(buf), "")


def _pieces(source: str | Iterable[str]) -> Iterable[str]:
    if isinstance(source, str):
        return (source[i : i + _STREAM_PIECE_CHARS] for i in range(0, len(source), _STREAM_PIECE_CHARS))
    return source


def iter_chunks(
    source: str | Iterable[str],
    config: ChunkingConfig | None = None,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> Iterator[Chunk]:
    """Yield chunks of ``source`` in document order, each within ``config.max_tokens`` (estimated)."""
    cfg = config or ChunkingConfig()
    window: deque[_Sentence] = deque()
    total = 0
    fresh = False  # the window holds something not yet emitted (not only the carried overlap)
    ord_ = 0

    def flush() -> Chunk:
        nonlocal ord_
        parts: list[str] = []
        for i, s in enumerate(window):
            parts.append(s.text)
            if i < len(window) - 1:
                parts.append(s.joiner)
        last = window[-1]
        chunk = Chunk(ord_, "".join(parts), total, window[0].start, last.start + len(last.text))
        ord_ += 1
        return chunk

    def carry() -> None:
        nonlocal total
        keep: list[_Sentence] = []
        budget = cfg.overlap_tokens
        for s in reversed(window):
            if s.tokens > budget:
                break
            keep.append(s)
            budget -= s.tokens
        window.clear()
        window.extend(reversed(keep))
        total = sum(s.tokens for s in window)

    for sent in _sentences(_pieces(source), count_tokens):
        if sent.tokens > cfg.max_tokens:
            if fresh:
                yield flush()
            window.clear()
            total, fresh = 0, False
            offset = sent.start
            for piece in split_by_tokens(sent.text, cfg.max_tokens):
                window.append(_Sentence(offset, piece, " ", count_tokens(piece)))
                total = window[-1].tokens
                yield flush()
                window.clear()
                offset += len(piece) + 1
            total = 0
            continue
        if fresh and total + sent.tokens > cfg.max_tokens:
            yield flush()
            carry()
            fresh = False
        while window and total + sent.tokens > cfg.max_tokens:
            total -= window.popleft().tokens
        window.append(sent)
        total += sent.tokens
        fresh = True
    if fresh and window:
        yield flush()


def chunk_text(text: str, config: ChunkingConfig | None = None) -> list[Chunk]:
    """All chunks of a (small) text; use ``iter_chunks`` for large documents."""
    return list(iter_chunks(text, config))
