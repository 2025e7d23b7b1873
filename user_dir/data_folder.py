"""A fairseq-preprocess folder as the scripts read it: its files, language pairs and splits, and
the direction a script decodes it in.

fairseq names each split's sides SPLIT.A-B.LANG (.idx and .bin when binarized; no suffix for
``--dataset-impl raw`` text), and its task reads the pair SRC->TGT from SPLIT.SRC-TGT.* or else
SPLIT.TGT-SRC.*: files of de-en serve en->de too. Importing this module does not import fairseq.
"""
import argparse
import itertools
import re
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from .checkpoint_files import CheckpointError, essence
from .files import not_a_file

if TYPE_CHECKING:
    from fairseq.data import Dictionary, FairseqDataset

Pair = tuple[str, str]  # a direction: (source language, target language)
LANGUAGE = re.compile(r"[A-Za-z0-9_]+")  # fairseq's file names (train.de-en.de) need codes without . - / or spaces


def language_code(text: str) -> str:
    """argparse type: a language suffix that fairseq's file names can hold."""
    if not LANGUAGE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a language code fairseq's file names can hold "
                                         "(letters, digits and _ only, e.g. de, pt_BR)")
    return text


def data_files(data_bin: Path) -> Iterator[tuple[Path, str, Pair, str]]:
    """fairseq-preprocess's files in DATA_BIN as (path, split, pair as named, language): SPLIT.A-B.LANG.idx
    and .bin (binarized), SPLIT.A-B.LANG (raw text). Codes holding '-' or '.' make names fairseq cannot
    read a pair from: not counted."""
    for path in Path(data_bin).glob("*.*-*.*"):
        parts = path.name.split(".")
        langs = tuple(parts[1].split("-"))
        if (len(parts) == 3 or len(parts) == 4 and parts[3] in ("idx", "bin")) and len(langs) == 2 \
                and parts[2] in langs and path.is_file():
            yield path, parts[0], langs, parts[2]


def sides(data_bin: Path) -> set[tuple[str, Pair, str]]:
    """(split, pair as named, language) of every split side in DATA_BIN (its .idx, or its raw text)."""
    return {(split, langs, lang) for path, split, langs, lang in data_files(data_bin) if path.suffix != ".bin"}


def raw_text(data_bin: Path, subset: str) -> bool:
    """Whether DATA_BIN's SUBSET is --dataset-impl raw text, which fairseq finds only when told
    (--dataset-impl raw: it infers the binarized formats alone)."""
    return any(split == subset and path.suffix not in (".idx", ".bin") for path, split, *_ in data_files(data_bin))


def language_pairs(data_bin: Path) -> list[Pair]:
    """Every (src, tgt) named in DATA_BIN's file names (:func:`data_files`), sorted."""
    return sorted({langs for _, langs, _ in sides(data_bin)})


def language_pair(data_bin: Path, source: Optional[str] = None, target: Optional[str] = None,
                  given: str = "-s/-t") -> Pair:
    """The (src, tgt) to read DATA_BIN in: SOURCE -> TARGET (GIVEN: where they come from; one alone is
    completed from the folder's pair that holds it), named either way round; else the folder's one
    pair (several are refused: fairseq takes whichever file it lists first)."""
    pairs = language_pairs(data_bin)
    if not pairs:
        unread = sorted(Path(data_bin).glob("*.idx"))
        inside = Path(data_bin) / "bin"  # a prepare.py folder given for its bin/
        raise SystemExit(f"error: {data_bin} holds no fairseq-preprocess output" + (
            f" whose names give a language pair ({unread[0].name}: language codes with '-' or '.'): train.sh and "
            "fairseq take -s SRC -t TGT; the other scripts need codes without them" if unread else
            f"; give its bin folder: {inside}" if language_pairs(inside) else ""))
    held = ", ".join("-".join(p) for p in pairs)
    if source or target:
        found = sorted({(a, b) for pair in pairs for a, b in (pair, pair[::-1])
                        if source in (None, a) and target in (None, b)})
        if len(found) != 1:
            wanted = f"{source or '?'}->{target or '?'}"
            raise SystemExit(f"error: {data_bin} holds " + (f"several pairs for {wanted} ({held}): give both -s and -t"
                             if found else f"no {wanted} data (from {given}); it holds {held}"))
        return found[0]
    if len(pairs) > 1:
        raise SystemExit(f"error: {data_bin} holds several language pairs ({held}) and fairseq would take the first "
                         "file it lists: give -s SRC -t TGT")
    return pairs[0]


def split_prefix(data_bin: Path, subset: str, pair: Pair) -> Path:
    """DATA_BIN/SUBSET.A-B, where fairseq's task finds SUBSET of PAIR: named SRC-TGT, else TGT-SRC."""
    named = sides(data_bin)
    a, b = pair[::-1] if (subset, pair, pair[0]) not in named and (subset, pair[::-1], pair[0]) in named else pair
    return Path(data_bin) / f"{subset}.{a}-{b}"


def side_file(data_bin: Path, subset: str, pair: Pair, side: int = 0, raw: Optional[bool] = None) -> str:
    """The name of SIDE of SUBSET of PAIR that fairseq reads: SPLIT.SRC-TGT.LANG, with .idx unless it is
    raw text (RAW; None: as the folder's other splits are)."""
    raw = any(path.suffix not in (".idx", ".bin") for path, *_ in data_files(data_bin)) if raw is None else raw
    return f"{subset}.{pair[0]}-{pair[1]}.{pair[side]}" + ".idx" * (not raw)


def splits_of(data_bin: Path, src: str, tgt: str) -> list[str]:
    """The splits of SRC->TGT in DATA_BIN (their source side, named either way round)."""
    return sorted({split for split, langs, lang in sides(data_bin) if set(langs) == {src, tgt} and lang == src})


def training_parts(data_bin: Path, src: str, tgt: str, subset: str = "train") -> list[str]:
    """SUBSET and the SUBSET1, SUBSET2, ... splits that fairseq-train trains on with it (consecutive)."""
    held = set(splits_of(data_bin, src, tgt))
    return [subset, *itertools.takewhile(held.__contains__, (f"{subset}{k}" for k in itertools.count(1)))]


@contextmanager
def split_read(data_bin: Path, subset: str, pair: Pair, how: str = "") -> Iterator[None]:
    """Reading DATA_BIN's SUBSET of PAIR: fairseq's errors on an empty or damaged split, sides of
    different lengths or another --dataset-impl, as one line (HOW: the options that read it)."""
    cannot = f"error: split '{subset}' of {data_bin} cannot be read{how}"
    empty = sorted(p.name for p, split, langs, _ in data_files(data_bin) if split == subset and p.suffix != ".idx"
                   and set(langs) == set(pair) and p.stat().st_size == 0)
    if empty:
        raise SystemExit(f"{cannot}: {empty[0]} is empty (0 sentences)")
    try:
        yield
    except (ValueError, AssertionError, KeyError, AttributeError, IndexError) as e:
        hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
        try:  # fairseq's half-made dataset goes now, without its __del__'s complaints
            traceback.clear_frames(e.__traceback__)
        finally:
            sys.unraisablehook = hook
        raise SystemExit(f"{cannot}: {' '.join(f'{type(e).__name__}: {e}'.split())}") from None


def binarized(data_bin: Path, subset: str, side: int, pair: Pair,
              dictionary: Optional["Dictionary"] = None) -> Optional["FairseqDataset"]:
    """Side 0 (source) or 1 (target) of PAIR in DATA_BIN's SUBSET as fairseq loads it (None: absent);
    raw text is read through its dictionary (DICTIONARY, else DATA_BIN's)."""
    from fairseq.data import Dictionary, data_utils

    path = Path(f"{split_prefix(data_bin, subset, pair)}.{pair[side]}")
    with split_read(data_bin, subset, pair):
        if dictionary is None and path.is_file():
            dictionary = Dictionary.load(dictionary_path(data_bin, pair[side], pair))
        return data_utils.load_indexed_dataset(str(path), dictionary)


def dictionary_path(data_bin: Path, lang: str, pair: Pair) -> str:
    """DATA_BIN/dict.LANG.txt, or SystemExit naming it when it is missing."""
    path = Path(data_bin) / f"dict.{lang}.txt"
    if not_a_file(path):
        raise SystemExit(no_dictionary(data_bin, path.name, pair))
    return str(path)


def no_dictionary(data_bin: Path, name: str, pair: Pair) -> str:
    """The one line for a dictionary NAME that DATA_BIN lacks, for PAIR."""
    return f"error: {data_bin} holds no {name}, the dictionary of {'->'.join(pair)}"


def split_size(data_bin: Path, subset: str, pair: Pair) -> int:
    """The sentences of DATA_BIN's SUBSET of PAIR: its index's count, or raw text's lines (as fairseq
    reads them: not every line encoded)."""
    path = Path(f"{split_prefix(data_bin, subset, pair)}.{pair[0]}")
    if path.is_file():
        with split_read(data_bin, subset, pair), open(path, encoding="utf-8") as lines:
            return sum(1 for _ in lines)
    dataset = binarized(data_bin, subset, 0, pair)
    if dataset is None:
        held = ", ".join(splits_of(data_bin, *pair)) or "none"
        raise SystemExit(f"error: {data_bin} holds no split '{subset}' of {'->'.join(pair)} "
                         f"({side_file(data_bin, subset, pair)}); it holds: {held}")
    return len(dataset)


def trained_direction(checkpoints: list[str]) -> Optional[Pair]:
    """The (src, tgt) CHECKPOINTS were trained in: their -s/-t, else the direction rnn_seq2seq records
    beside its dictionaries; None where neither is saved (fairseq's models trained without -s/-t).
    An ensemble of two directions is refused."""
    from fairseq import checkpoint_utils

    from .dictionaries import DIRECTION_KEY, as_direction

    found = {}
    for path in checkpoints:
        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(path)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
        except Exception as e:  # without the plugin's loading patch (RNN_SEQ2SEQ_PATCHES=minimal)
            raise SystemExit(f"error: checkpoint {path} could not be loaded ({type(e).__name__}: {essence(e)})") \
                from None
        task, record = (state.get("cfg") or {}).get("task") or {}, state.get("model", {}).get(DIRECTION_KEY)
        langs = (task.get("source_lang"), task.get("target_lang"))
        if not all(langs) and record is not None and record.numel():
            langs = tuple(as_direction(record).split("-", 1))
        if all(langs):
            found[path] = langs
    directions = list(dict.fromkeys(found.values()))  # in the order of the checkpoints
    if len(directions) > 1:
        first, other = (next(p for p, d in found.items() if d == direction) for direction in directions[:2])
        raise SystemExit(f"error: checkpoint {other} translates {'->'.join(directions[1])} but {first} "
                         f"{'->'.join(directions[0])}: an ensemble decodes one direction")
    return directions[0] if directions else None


def decoding_direction(data_bin: Path, checkpoints: list[str], source: Optional[str] = None,
                       target: Optional[str] = None) -> Pair:
    """The (src, tgt) a script decodes DATA_BIN in: the direction CHECKPOINTS were trained in (-s/-t
    against it are refused: the model would be scored the wrong way round), else -s/-t (SOURCE,
    TARGET), else the folder's one pair; a folder without it is refused."""
    trained = trained_direction(checkpoints) if checkpoints else None
    if trained is None:
        return language_pair(data_bin, source, target)
    asked = (source or trained[0], target or trained[1])
    if asked != trained:
        raise SystemExit(f"error: -s/-t ask for {'->'.join(asked)}, but the checkpoint translates "
                         f"{'->'.join(trained)}: leave -s/-t out, or give a checkpoint of {'->'.join(asked)}")
    return language_pair(data_bin, *trained, given="the direction the checkpoint was trained in")


def direction_options(parser: argparse.ArgumentParser, model: str) -> None:
    """-s/--source-lang and -t/--target-lang, fairseq's names, for a script that decodes with MODEL."""
    parser.add_argument("-s", "--source-lang", type=language_code, help=f"source language (default: the one the "
                        f"{model} was trained on, else DATA_BIN's one pair): a folder of de-en serves en->de too")
    parser.add_argument("-t", "--target-lang", type=language_code, help="target language (default as -s)")


def direction_owned(script: str) -> dict[str, str]:
    """fairseq-generate's -s/-t destinations -> what SCRIPT asks for instead (its own -s/-t)."""
    return {"source_lang": f"use {script}'s -s", "target_lang": f"use {script}'s -t"}
