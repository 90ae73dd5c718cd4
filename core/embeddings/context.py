"""RAG context assembly: the best chunks for a question within a token budget, de-duplicated, with sources.

Retrieved chunks overlap (each carries its predecessor's last sentences) and templated documents
repeat whole paragraphs, so the same sentence often arrives several times. Chunks are taken best
score first; sentences already taken are dropped, a chunk left empty is skipped, and what remains
must fit the budget. The text groups passages by document, each headed by a numbered source marker
the model can cite, and the sources list says which document each number is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.embeddings.hashing import normalise_text
from core.embeddings.tokens import estimate_tokens, truncate_to_tokens

_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    document_id: str
    text: str
    score: float
    ord: int = 0
    title: str = ""
    source: str = ""
    project: str = ""


@dataclass
class Source:
    number: int
    document_id: str
    title: str
    source: str
    score: float
    chunk_ids: list[str] = field(default_factory=list)


@dataclass
class AssembledContext:
    text: str
    tokens: int
    sources: list[Source]
    chunks: list[RetrievedChunk]  # the chunks used, in the order they were chosen
    skipped_duplicates: int = 0
    skipped_budget: int = 0

    @property
    def empty(self) -> bool:
        return not self.chunks


def assemble_context(
    retrieved: Sequence[RetrievedChunk],
    budget_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
    min_score: float | None = None,
) -> AssembledContext:
    """Pick chunks best first until ``budget_tokens`` is used; drop repeated sentences and chunks."""
    ranked = sorted(retrieved, key=lambda c: -c.score)
    seen_sentences: set[str] = set()
    chosen: list[tuple[RetrievedChunk, str]] = []
    used = 0
    dupes = over = 0
    header_cost = 8  # the "[n] title (source)" line per new document
    docs_seen: set[str] = set()
    for c in ranked:
        if min_score is not None and c.score < min_score:
            continue
        fresh = []
        for s in _SENTENCE.split(c.text):
            key = normalise_text(s).lower()
            if key and key not in seen_sentences:
                fresh.append((key, s.strip()))
        if not fresh:
            dupes += 1
            continue
        text = " ".join(s for _, s in fresh)
        cost = count_tokens(text) + (0 if c.document_id in docs_seen else header_cost)
        if used + cost > budget_tokens:
            room = budget_tokens - used - (0 if c.document_id in docs_seen else header_cost)
            if not chosen and room > 16:  # the single best chunk is too long: keep its head
                text = truncate_to_tokens(text, room)
                cost = count_tokens(text) + header_cost
            else:
                over += 1
                continue
        seen_sentences.update(k for k, _ in fresh)
        docs_seen.add(c.document_id)
        chosen.append((c, text))
        used += cost

    sources: dict[str, Source] = {}
    passages: dict[str, list[tuple[int, str]]] = {}
    for c, text in chosen:
        src = sources.get(c.document_id)
        if src is None:
            src = Source(len(sources) + 1, c.document_id, c.title or c.document_id, c.source, c.score)
            sources[c.document_id] = src
        src.chunk_ids.append(c.chunk_id)
        passages.setdefault(c.document_id, []).append((c.ord, text))
    blocks = []
    for doc_id, src in sources.items():
        body = "\n".join(t for _, t in sorted(passages[doc_id]))  # document order reads better than score order
        where = f" ({src.source})" if src.source else ""
        blocks.append(f"[{src.number}] {src.title}{where}\n{body}")
    return AssembledContext(
        text="\n\n".join(blocks),
        tokens=used,
        sources=list(sources.values()),
        chunks=[c for c, _ in chosen],
        skipped_duplicates=dupes,
        skipped_budget=over,
    )
