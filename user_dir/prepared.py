"""OUT/prepare.json: the record of what scripts/prepare.py made in a folder OUT.

It is written twice: as under way (PENDING) before any output is made or removed, and as
finished (RECORD) after the last one, with the SHA-256 of every raw file and dictionary. It is
the only list of what prepare.py may remove, and it is checked (schema, paths inside OUT, the
language pair and dictionaries of OUT/bin, the raw files' hashes) before train.sh and
evaluate.py trust the folder.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from .data_folder import LANGUAGE, language_pairs
from .files import atomic_write, discard, not_a_file

Pairs = tuple[list[str], list[str]]  # the source and target lines of a split
RECORD, PENDING = "prepare.json", ".prepare-pending.json"  # a finished preparation; one under way
REMOVING = "removing"  # PENDING's mark of a run that removes older outputs before it makes its own
RECORD_FORMAT = 2  # 2: hashes of the raw files and dictionaries, the outputs by name; none: older records
RECORD_KEYS = {"src": str, "tgt": str, "vocab_size": int, "sentencepiece": str, "inputs": dict,
               "tokenization": str, "pairs": dict, "raw": dict}
RECORD_KEYS_2 = {"format": int, "outputs": list, "raw_sha256": dict, "dictionaries": dict}


class Prepared(dict):
    """A checked prepare.json, and the preparation folder it lies in (``folder``)."""

    def __init__(self, record: dict, folder: Path):
        super().__init__(record)
        self.folder = folder


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _record_problem(record: dict, folder: Path) -> Optional[str]:
    """What is wrong with prepare.json's content ``record`` of FOLDER (keys, types, paths that
    leave FOLDER, the language pair and dictionaries of FOLDER/bin), or None."""
    keys = {**RECORD_KEYS, **(RECORD_KEYS_2 if "format" in record else {})}
    for key, kind in keys.items():
        if type(record.get(key)) is not kind:  # exact: True is not a size
            return f"'{key}' is missing or not a {kind.__name__}"
    src, tgt = record["src"], record["tgt"]
    if not (LANGUAGE.fullmatch(src) and LANGUAGE.fullmatch(tgt)) or src == tgt:
        return f"'src' {src!r} and 'tgt' {tgt!r} are not two language codes"
    if "format" in record and record["format"] != RECORD_FORMAT:
        return f"format {record['format']} is not {RECORD_FORMAT}"
    for split, sides in record["raw"].items():
        if not isinstance(sides, dict) or set(sides) != {src, tgt}:
            return f"'raw' of split {split!r} does not name one file for each of {src} and {tgt}"
        for path in sides.values():
            if not isinstance(path, str) or not (folder / path).resolve().is_relative_to(folder.resolve()):
                return f"the path {path!r} of split {split!r} is not a file inside {folder}"
    return _bin_problem(record, folder / "bin")


def _bin_problem(record: dict, data_bin: Path) -> Optional[str]:
    """What in DATA_BIN contradicts the record (the language pair, a split, a dictionary), or None."""
    src, tgt = record["src"], record["tgt"]
    if not list(data_bin.glob("*.*-*.*.idx")):
        return f"{data_bin} holds no fairseq-preprocess output"
    pairs = language_pairs(data_bin)
    if pairs != [(src, tgt)]:
        return f"it says {src}->{tgt}, but {data_bin} holds {', '.join('->'.join(pair) for pair in pairs)}"
    for split in record["pairs"]:
        if not (data_bin / f"{split}.{src}-{tgt}.{tgt}.idx").is_file():
            return f"its split {split!r} is not in {data_bin}"
    for name, digest in record.get("dictionaries", {}).items():
        if not (data_bin / name).is_file() or sha256_file(data_bin / name) != digest:
            return f"{data_bin / name} is not the dictionary prepare.py made (its SHA-256 differs)"
    return None


def prepared_record_path(data_bin: Path) -> Path:
    """Where scripts/prepare.py records what it made, for DATA_BIN = OUT/bin: OUT/prepare.json."""
    return Path(data_bin).resolve().parent / RECORD


UNREADABLE = "it cannot be read"


def read_json(path: Path) -> "dict | str":
    """The JSON object in a record at PATH, or why it cannot be read (a str starting with UNREADABLE)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"{UNREADABLE} ({e})"
    return record if isinstance(record, dict) else f"{UNREADABLE} (it is not a JSON object)"


def checked_record(path: Path) -> tuple[dict, Optional[str]]:
    """The prepare.json at PATH read once ({} if unreadable), and what is wrong with it: unreadable,
    against its schema, or against the data beside it; None when it can be trusted."""
    record = read_json(path)
    if isinstance(record, str):
        return {}, record
    return record, _record_problem(record, path.parent)


def record_problem(path: Path) -> Optional[str]:
    """What is wrong with the prepare.json at PATH (:func:`checked_record`), or None."""
    return checked_record(path)[1]


def untrusted_record(path: Path, problem: str, otherwise: str) -> str:
    """The one line for a prepare.json that cannot be trusted, with what works: prepare.py --overwrite
    redoes a folder whose record it can read; one it cannot read names nothing it may delete."""
    if problem.startswith(UNREADABLE):
        how = f"prepare.py cannot tell what it made there: remove {path.parent} yourself and prepare it again"
    else:
        how = f"prepare {path.parent} again (prepare.py --overwrite)"
    return f"error: {path} cannot be trusted: {problem}; {how}, or {otherwise}"


def read_record(path: Path) -> Prepared:
    """prepare.json at PATH, checked by :func:`checked_record` (SystemExit, one line, naming what is
    wrong otherwise). Records of older prepare.py versions (no 'format') are accepted with the
    checks their content allows; :func:`verified_raw` asks to update them."""
    record, problem = checked_record(path)
    if problem:
        raise SystemExit(untrusted_record(path, problem, "give the data without it"))
    return Prepared(record, path.parent)


def prepared_record(data_bin: Path) -> "Prepared | dict":
    """The checked prepare.json of OUT when DATA_BIN is OUT/bin made by scripts/prepare.py, else {};
    SystemExit when OUT is a preparation that did not finish."""
    record = prepared_record_path(data_bin)
    if (record.parent / "bin").resolve() != Path(data_bin).resolve():
        return {}
    if not record.is_file():
        if (record.parent / PENDING).exists():
            raise SystemExit(f"error: {record.parent} is a preparation that did not finish (prepare.py failed or "
                             "was interrupted): run the same prepare.py command again to finish it, or remove "
                             f"{record.parent}")
        return {}
    return read_record(record)


def verified_raw(record: Prepared, split: str, side: str) -> Path:
    """The raw text of SPLIT's SIDE ('src' or 'tgt') that prepare.py kept, checked against the
    SHA-256 it recorded, so that no edited or replaced file is used as a reference (``record``:
    from :func:`prepared_record`); SystemExit with one line otherwise."""
    where = record.folder / RECORD
    lang = record[side]
    relative = record["raw"].get(split, {}).get(lang)
    if relative is None:
        raise SystemExit(f"error: {where} names no raw text of split '{split}' (it has "
                         f"{', '.join(record['raw']) or 'none'})")
    path = record.folder / relative
    digest = record.get("raw_sha256", {}).get(split, {}).get(lang)
    if digest is None:
        raise SystemExit(f"error: {where} records no SHA-256 of {relative} (an older prepare.py wrote it): run the "
                         "same prepare.py command again to add it, or give the reference (--ref)")
    why = not_a_file(path)
    if why is not None:
        raise SystemExit(f"error: {path} {why}: run the same prepare.py command with --overwrite to make it again")
    if sha256_file(path) != digest:
        raise SystemExit(f"error: {path} was changed after prepare.py wrote it (its SHA-256 is not the one in "
                         f"{where}): restore it (prepare.py --overwrite), or give the reference (--ref)")
    return path


OUTPUTS = ("raw", "spm.model", "spm.vocab", "spm", "bin", RECORD)  # what a preparation makes in OUT
OWN_FOLDERS = ("raw", "spm", "bin")  # removed whole by a redo


def file_text(lines: list[str]) -> bytes:
    """A raw file's bytes as prepare.py writes them (what raw_sha256 hashes)."""
    return "".join(line + "\n" for line in lines).encode("utf-8")


def differences(made: dict, wanted: dict) -> list[str]:
    """The options and inputs in which a record MADE differs from the preparation WANTED."""
    differ = [key for key in wanted if key not in ("inputs", "outputs") and made.get(key) != wanted[key]]
    made_inputs = made.get("inputs") if isinstance(made.get("inputs"), dict) else {}
    return differ + [f"{name} text" for name, digest in wanted["inputs"].items() if made_inputs.get(name) != digest]


def read_made(path: Path) -> dict:
    """A record prepare.py wrote (a JSON object), or SystemExit: what it names cannot be known."""
    made = read_json(path)
    if isinstance(made, str):
        raise SystemExit(untrusted_record(path, made, "use another --out"))
    return made


def remove_made(out: Path, made: dict) -> None:
    """Delete the outputs that a record of prepare.py names as its own (records before 'outputs'
    was kept: the outputs that prepare.py always made), prepare.json first: nothing is read as
    finished while the rest goes."""
    named = made.get("outputs", OUTPUTS)
    for name in sorted(set(named if isinstance(named, list) else OUTPUTS) & set(OUTPUTS),  # never outside OUT
                       key=lambda name: (name != RECORD, OUTPUTS.index(name))):
        discard(out / name)


def own_files(made: dict) -> dict[str, set[str]] | None:
    """The names a preparation recorded as MADE writes in OUT's raw/, spm/ and bin/ (SPLIT.LANG, and
    fairseq-preprocess's files of SRC-TGT), None where the record names no inputs to tell them by."""
    inputs, src, tgt = made.get("inputs"), made.get("src"), made.get("tgt")
    if not isinstance(inputs, dict) or not isinstance(src, str) or not isinstance(tgt, str):
        return None
    splits = {name.rsplit(".", 1)[0] for name in inputs}
    binarized = {f"{split}.{src}-{tgt}.{lang}.{kind}" for split in splits for lang in (src, tgt)
                 for kind in ("bin", "idx")}
    return {"raw": set(inputs), "spm": set(inputs),
            "bin": binarized | {f"dict.{lang}.txt" for lang in (src, tgt)} | {"preprocess.log"}}


def strangers(out: Path, made: dict) -> list[str]:
    """What OUT's raw/, spm/ and bin/ hold that the preparation recorded as MADE does not write there (a
    checkpoint saved into bin/, a test set of yours in raw/): removing the outputs, folder by folder,
    would lose it. Where the record cannot tell, everything there."""
    own = own_files(made) or {}
    folders = [folder for folder in OWN_FOLDERS if (out / folder).is_dir() and not (out / folder).is_symlink()]
    return [f"{folder}/{p.name}" for folder in folders for p in sorted((out / folder).iterdir())
            if p.is_dir() or p.name not in own.get(folder, ())]


def removable(out: Path, made: dict) -> dict:
    """MADE, the record of outputs to remove, once nothing but prepare.py's own files is in them."""
    if found := strangers(out, made):
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise SystemExit(f"error: {out} holds {shown}, which prepare.py did not make, in the folders a redo "
                         f"replaces whole ({', '.join(OWN_FOLDERS)}): move them out first (a folder beside them, "
                         f"e.g. {out / 'ckpt'}, is kept)")
    return made


def claim(out: Path, wanted: dict, overwrite: bool) -> dict | None:
    """Decide what becomes of OUT's outputs for ``wanted``: None to keep them (made from it,
    finished or left unfinished by a failed run), else the record of those to remove first
    ({}: none): an unfinished preparation of other inputs, a finished one with --overwrite (of any inputs).
    Refuse a finished one of other inputs without --overwrite, and files prepare.py has no record of.
    A record of outputs under removal (PENDING with REMOVING) comes first."""
    record, pending = out / RECORD, out / PENDING
    made = read_made(pending) if pending.exists() else None
    if made is not None and (made.get(REMOVING) or not record.exists()):
        if made == wanted:
            return print(f"continue: {out} (an earlier run with these inputs did not finish)")
        why = "was interrupted while it removed older outputs" if made.get(REMOVING) else \
            "with other inputs or options did not finish"
        removable(out, made)
        print(f"redo: {out} (an earlier run {why})")
        return made
    if record.exists():
        made = read_made(record)
        if differ := differences(made, wanted):
            if not overwrite:
                raise SystemExit(f"error: {out} was prepared from other inputs or options (they differ: "
                                 f"{', '.join(differ)}): use another --out, or --overwrite to redo it")
            return removable(out, made)
        mismatch = record_problem(record)  # made from these inputs and options: redone, nothing is lost
        if mismatch or overwrite:
            removable(out, made)
            print(f"redo: {out} ({f'its files do not match {RECORD}: {mismatch}' if mismatch else '--overwrite'})")
            return made
        if "format" not in made:
            print(f"update: {record} (an older prepare.py wrote it: its checksums are added)")
        return None
    if any(os.path.lexists(out / name) for name in OUTPUTS):
        found = ", ".join(name for name in OUTPUTS if os.path.lexists(out / name))
        raise SystemExit(f"error: {out} holds {found} but no record that prepare.py made them ({RECORD}): "
                         "use another --out, or remove them yourself")
    return {}


def others(out: Path) -> list[str]:
    """OUT's entries that are not prepare.py's (a model's ckpt/, notes): a redo leaves them as they are."""
    return sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS and not p.name.startswith("."))


def begin(out: Path, wanted: dict, made: dict) -> None:
    """Remove the outputs ``made`` names, then record ``wanted`` as under way, before any of its
    outputs is made. The removal is recorded before it starts, so that an interrupted one is
    redone by the next run (whatever its options), never mistaken for outputs without a record."""
    pending = out / PENDING
    if made:
        with atomic_write(pending, "w") as f:
            json.dump({**made, "outputs": list(OUTPUTS), REMOVING: True}, f, indent=2)
        remove_made(out, made)
    with atomic_write(pending, "w") as f:
        json.dump(wanted, f, indent=2)


def finish(out: Path, wanted: dict, data: dict[str, Pairs]) -> None:
    """Record the finished preparation in OUT/prepare.json (what scripts/train.sh and
    scripts/evaluate.py read), with the SHA-256 of every raw file (checked against the text read
    from the inputs) and dictionary, then drop the under-way mark."""
    langs = (wanted["src"], wanted["tgt"])
    raw = {split: {lang: f"raw/{split}.{lang}" for lang in langs} for split in data}
    raw_sha256 = {split: {lang: hashlib.sha256(file_text(lines)).hexdigest() for lang, lines in zip(langs, sides)}
                  for split, sides in data.items()}
    for split, sides in raw.items():
        for lang, path in sides.items():
            if sha256_file(out / path) != raw_sha256[split][lang]:
                raise SystemExit(f"error: {out / path} is not the text read from the inputs (changed after "
                                 "prepare.py wrote it): prepare again with --overwrite")
    done = {**wanted, "format": RECORD_FORMAT, "tokenization": "sentencepiece",
            "pairs": {split: len(sides[0]) for split, sides in data.items()}, "raw": raw, "raw_sha256": raw_sha256,
            "dictionaries": {f"dict.{lang}.txt": sha256_file(out / "bin" / f"dict.{lang}.txt") for lang in langs}}
    with atomic_write(out / RECORD, "w") as f:
        json.dump(done, f, indent=2)
    discard(out / PENDING)
