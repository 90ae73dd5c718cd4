"""Content hashes: per chunk (to reuse vectors of unchanged chunks) and per document (to skip repeats).

Text is normalised first (Unicode NFC, runs of whitespace to one space) so a re-export that only
changes line endings or spacing does not cost a re-embed.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable


def normalise_text(text: str) -> str:
    # ASCII text is NFC already (and isascii() is a flag lookup); str.split() with no separator splits
    # on runs of Unicode whitespace, several times faster than a regex.
    return " ".join((text if text.isascii() else unicodedata.normalize("NFC", text)).split())


def chunk_hash(text: str) -> str:
    """Stable 128-bit hex digest of a chunk's normalised text."""
    return hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=16).hexdigest()


def document_fingerprint(pieces: Iterable[str] | str, *salt: str) -> str:
    """Digest of a whole document (streamed piece by piece) plus salts such as the chunking key.

    Pieces are hashed as they are, not normalised: cutting a stream into different pieces must not
    change the result, and normalising across piece borders would.
    """
    h = hashlib.blake2b(digest_size=16)
    for s in salt:
        h.update(s.encode("utf-8"))
        h.update(b"\x00")
    if isinstance(pieces, str):
        pieces = (pieces,)
    for p in pieces:
        h.update(p.encode("utf-8", "surrogatepass"))
    return h.hexdigest()
