"""What a model needs to know about its dictionaries to be used with the right data and tools.

A dictionary is read through its ``symbols`` and ``nspecial`` only, so this module does not import
fairseq (evaluate.py refuses bad input before fairseq's import, which takes seconds)."""
from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

import sentencepiece as spm
import torch

from .errors import Refusal

if TYPE_CHECKING:
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
    return POST_PROCESS["sentencepiece"].fits(dictionary.symbols[dictionary.nspecial:])


MADE_UP = "madeupword"  # fairseq-preprocess pads dictionaries with madeupwordNNNN entries
# symbols added to a dictionary beside the pieces: tags such as <2en>, [en_XX], __de__, <mask>
TAG = re.compile(r"<[^<>\s]+>|\[[^\[\]\s]+\]|__\S+__")


def is_added(entry: str) -> bool:
    """True for an entry no tokenizer makes: fairseq-preprocess's filler, or a tag added to the dictionary."""
    return entry.startswith(MADE_UP) or TAG.fullmatch(entry) is not None


class TokenizationError(Refusal, ValueError):
    """A sentencepiece model or option that does not fit the model's dictionary."""


def load_spm(path: str, option: str) -> spm.SentencePieceProcessor:
    """The sentencepiece model at PATH (given as OPTION); a file that is not one is refused by name
    (sentencepiece says only "could not parse ModelProto", in a traceback)."""
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError):
        raise TokenizationError(f"{option} {path} is not a sentencepiece model (prepare.py's OUT/spm.model is "
                                "one)") from None


def piece_vocabulary(sp) -> set:
    """Every piece of a SentencePieceProcessor ``sp``."""
    return {sp.id_to_piece(i) for i in range(sp.get_piece_size())}


def check_pieces(dictionary: Dictionary, vocabulary: Optional[set], model: str, side: str) -> None:
    """Refuse a sentencepiece model (``vocabulary``: its pieces, ``model``: its name) for a
    word-level dictionary, or one that did not make ``dictionary`` (an entry that is not one of
    its pieces: another preparation, even of the same size). Compared by content, so it needs
    no record of the preparation and holds for every data folder and checkpoint. A larger model
    of the same text passes (its pieces hold every entry): text encoded with it shows that
    (:func:`unknown_share`)."""
    if not uses_sentencepiece(dictionary):
        raise TokenizationError(f"{model}: the model's {side} dictionary holds words, not sentencepiece pieces; "
                                "leave the sentencepiece options out for this model")
    words = [w for w in dictionary.symbols[dictionary.nspecial:] if not is_added(w)]
    foreign = [w for w in words if w not in vocabulary]
    if foreign:
        raise TokenizationError(f"{model} is not the sentencepiece model that made the model's {side} dictionary: "
                                f"{len(foreign)} of its {len(words)} entries are not pieces of it "
                                f"(e.g. {foreign[0]!r}); "
                                "use the spm.model of the same prepare.py output")


def check_spm_model(dictionaries: dict[str, Dictionary], sp, model: str) -> None:
    """Refuse a sentencepiece model ``sp`` (a SentencePieceProcessor named ``model``) that did not
    make the dictionaries (side -> Dictionary) of the text it encodes: fairseq encodes only the
    source with it and decodes pieces without it, so a target of another model passes there."""
    vocabulary = piece_vocabulary(sp)
    for side, dictionary in dictionaries.items():
        check_pieces(dictionary, vocabulary, model, side)


def check_bpe_model(bpe, source: Dictionary, bpe_cfg) -> None:
    """Refuse fairseq's sentencepiece BPE (``bpe.sp``) whose model, ``bpe_cfg.sentencepiece_model``,
    did not make the SOURCE dictionary (:func:`check_spm_model`); any other BPE passes."""
    sp = getattr(bpe, "sp", None)
    if sp is not None:
        check_spm_model({"source": source}, sp, bpe_cfg.sentencepiece_model)


def unknown_share(sp, dictionary: Dictionary, lines: list[str]) -> float:
    """The share of the pieces of ``lines``, encoded with ``sp``, that ``dictionary`` lacks (<unk>
    to the model): near 0 with the model that made the dictionary, high with a larger one."""
    pieces = [piece for line in sp.encode(lines, out_type=str) for piece in line]
    return sum(dictionary.index(piece) == dictionary.unk() for piece in pieces) / max(1, len(pieces))


DIRECTION_KEY = "language_direction"  # a model buffer beside the dictionary fingerprints


def direction_record(source_lang: Optional[str], target_lang: Optional[str]) -> torch.Tensor:
    """``SRC-TGT`` as the floats of its UTF-8 bytes (saved with every checkpoint, exact in every
    precision, unchanged by averaging equal values): joint dictionaries are the same both ways, so
    their fingerprints cannot tell de-en from en-de. Empty when the languages are not known."""
    if not source_lang or not target_lang:
        return torch.zeros(0)
    return torch.tensor(list(f"{source_lang}-{target_lang}".encode()), dtype=torch.float32)


def as_direction(record: torch.Tensor) -> str:
    """The ``SRC-TGT`` of a :func:`direction_record` ("" when empty)."""
    return bytes(record.float().round().clamp(0, 255).to(torch.uint8).tolist()).decode("utf-8", "replace")


def directions_differ(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    """Whether two direction records name two directions; an empty or missing one (an older
    checkpoint, data without languages) differs from none."""
    return a is not None and b is not None and a.numel() > 0 and b.numel() > 0 and as_direction(a) != as_direction(b)


def _share(test: Callable[[str], bool]) -> Callable[[list], bool]:
    return lambda words: bool(words) and sum(map(test, words)) >= 0.1 * len(words)


class Units(NamedTuple):
    """What a ``--post-process`` scheme joins, whether a dictionary's entries (no specials) are such
    units, and whether the scheme leaves text without them as it is (``only_its_marks``: it removes
    its marks, not the spaces between words)."""
    name: str
    fits: Callable[[list], bool]
    only_its_marks: bool = False


_PIECES = Units("sentencepiece pieces", _share(lambda w: w.startswith(PIECE_START)))
_SUBWORD_NMT = Units("subword-nmt units (entries ending in '@@')", _share(lambda w: w.endswith("@@")), True)
# fairseq 0.12's --post-process schemes (fairseq.data.data_utils.post_process)
POST_PROCESS: dict[str, Units] = {
    "sentencepiece": _PIECES,
    "wordpiece": Units("wordpiece units (entries starting with '_')", _share(lambda w: w.startswith("_"))),
    "letter": Units("letters (with the word boundary '|')", lambda words: "|" in words),
    "silence": Units("units with the silence token '<SIL>'", lambda words: "<SIL>" in words, True),
    "_EOW": Units("units ending words with '_EOW'", _share(lambda w: w.endswith("_EOW"))),
    "subword_nmt": _SUBWORD_NMT, "@@ ": _SUBWORD_NMT, "@@": _SUBWORD_NMT,
}


def check_post_process(dictionary: Optional[Dictionary], scheme: Optional[str], option: str = "--post-process") -> None:
    """Refuse a ``--post-process`` scheme (or another OPTION's) fairseq does not know, or one whose
    units ``dictionary`` (the model's target side; None: not loaded yet) does not hold: it would join
    the words wrongly, silently. On a dictionary of words, a scheme that only removes marks it never
    writes changes nothing and is accepted."""
    if scheme in (None, "", "none"):
        return
    if scheme not in POST_PROCESS:
        raise TokenizationError(f"{option} {scheme!r} is not a scheme fairseq knows: use one of "
                                f"{', '.join(repr(s) for s in POST_PROCESS)} or leave it out")
    if dictionary is None:
        return
    # fillers only: a tag-like <SIL> is the unit of "silence"
    words = [w for w in dictionary.symbols[dictionary.nspecial:] if not w.startswith(MADE_UP)]
    if POST_PROCESS[scheme].fits(words):
        return
    fitting = next((s for s, units in POST_PROCESS.items() if units.fits(words)), None)
    if POST_PROCESS[scheme].only_its_marks and fitting is None:
        return  # words, none of its marks: the text stays as it is (fairseq's --remove-bpe on word-level data)
    held = POST_PROCESS[fitting].name if fitting else "words"
    advice = f"use {option} {fitting}" if fitting else "leave it out"
    raise TokenizationError(f"{option} {scheme}: the model's target dictionary holds {held}, not "
                            f"{POST_PROCESS[scheme].name}; {advice}, or the words are joined wrongly")
