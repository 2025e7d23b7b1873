"""What a model needs to know about its dictionaries to be used with the right data and tools."""
import hashlib
from typing import Optional

import torch
from fairseq.data import Dictionary

PIECE_START = "\u2581"  # sentencepiece marks word-initial pieces with it
FINGERPRINT_KEYS = ("source_dictionary_fingerprint", "target_dictionary_fingerprint")


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


MADE_UP = "madeupword"  # fairseq-preprocess pads dictionaries with madeupwordNNNN entries


class TokenizationError(ValueError):
    """A sentencepiece model or option that does not fit the model's dictionary."""


def piece_vocabulary(sp) -> set:
    """Every piece of a SentencePieceProcessor ``sp``."""
    return {sp.id_to_piece(i) for i in range(sp.get_piece_size())}


def check_pieces(dictionary: Dictionary, vocabulary: Optional[set], model: str, side: str) -> None:
    """Refuse a sentencepiece model (``vocabulary``: its pieces, ``model``: its name) for a
    word-level dictionary, or one that did not make ``dictionary`` (an entry that is not one of
    its pieces: another preparation, even of the same size). Compared by content, so it needs
    no record of the preparation and holds for every data folder and checkpoint."""
    if not uses_sentencepiece(dictionary):
        raise TokenizationError(f"{model}: the model's {side} dictionary holds words, not sentencepiece pieces; "
                                "leave the sentencepiece options out for this model")
    words = [w for w in dictionary.symbols[dictionary.nspecial:] if not w.startswith(MADE_UP)]
    foreign = [w for w in words if w not in vocabulary]
    if foreign:
        raise TokenizationError(f"{model} is not the sentencepiece model that made the model's {side} dictionary: "
                                f"{len(foreign)} of its {len(words)} entries are not pieces of it "
                                f"(e.g. {foreign[0]!r}); "
                                "use the spm.model of the same prepare.py output")
