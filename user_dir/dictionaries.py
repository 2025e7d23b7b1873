"""What a model needs to know about its dictionaries to be used with the right data and tools."""
import hashlib

import torch
from fairseq.data import Dictionary

PIECE_START = "\u2581"  # sentencepiece marks word-initial pieces with it


def fingerprint(dictionary: Dictionary) -> torch.Tensor:
    """The first 8 bytes of the SHA-256 of the entries in order, as 8 floats (a model buffer,
    saved with every checkpoint): equal dictionaries, and only those, agree. Every sentencepiece
    model of one size gives dictionaries of one size, so the size alone is no check. Whole
    numbers below 256 stay exact in float16 and bfloat16, and averaging equal values (EMA,
    checkpoint averaging) moves them by less than the rounding in :func:`as_hex` undoes."""
    digest = hashlib.sha256("\n".join(dictionary.symbols).encode()).digest()[:8]
    return torch.tensor(list(digest), dtype=torch.float32)


def as_hex(fingerprint_: torch.Tensor) -> str:
    return bytes(fingerprint_.float().round().to(torch.uint8).tolist()).hex()


def uses_sentencepiece(dictionary: Dictionary) -> bool:
    """True when the entries are sentencepiece pieces (many start with U+2581), so text must be
    encoded into pieces before the model and decoded after it."""
    words = dictionary.symbols[dictionary.nspecial:]
    return bool(words) and sum(w.startswith(PIECE_START) for w in words) >= 0.1 * len(words)
