"""Helpers that the workflow scripts (``scripts/``) and lab instruments (``lab/``) share.

They live in the package rather than beside the scripts so that a script imports them like any
client of the plugin: ``from user_dir.workflow import ...``, with the package installed
(``pip install -e .``: scripts/env.sh does it). That is the one way scripts find the plugin.
Importing this module defines names only and does not import fairseq (seconds): the functions that
need it import it when called, and the plugin registers itself then (``user_dir/__init__.py``), so a
script that never needs fairseq in its own process (``prepare.py``) starts, and refuses, at once.
"""
import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from .files import OutputError, WriteError, atomic_write, check_output, not_a_file

USER_DIR = Path(__file__).resolve().parent  # what fairseq's CLIs get as --user-dir
ROOT = USER_DIR.parent  # the checkout: default places of runs/ and data next to it


def run_fairseq(cmd: list[str], on_line: Optional[Callable[[str], None]] = None) -> str:
    """Run a fairseq CLI; its stdout (each line also given to ``on_line`` as it comes, e.g. to show
    progress), or one line: the exception it ended with (the last unindented line of stderr: a
    traceback's details, such as omegaconf's, are indented)."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a full pipe cannot stall the child
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=err, text=True)
        out = []
        try:
            for line in proc.stdout:
                out.append(line)
                if on_line is not None:
                    on_line(line)
        except BaseException:  # Ctrl-C: the child must not decode on alone
            proc.kill()
            proc.wait()
            raise
        returncode = proc.wait()
        err.seek(0)
        stderr = err.read()
    if returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip()] or [f"exit status {returncode}"]
        raise SystemExit(f"error: {cmd[0]} failed: {([x for x in lines if not x[0].isspace()] or lines)[-1]}")
    return "".join(out)


def progress(total: int, what: str, kind: str = "H-", every: Optional[int] = None) -> Callable[[str], None]:
    """An ``on_line`` for :func:`run_fairseq` that counts fairseq-generate's ``kind`` lines (one per
    sentence) and writes ``what: N/TOTAL sentences`` to stderr every ``every`` sentences (default:
    a tenth, at least 100), so a long decode shows it is moving; stdout stays the result's."""
    every = every or max(100, total // 10)
    done = 0

    def on_line(line: str) -> None:
        nonlocal done
        if line.startswith(kind):
            done += 1
            if done % every == 0 or done == total:
                print(f"{what}: {done}/{total} sentences", file=sys.stderr, flush=True)

    return on_line


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least ``minimum`` (a beam, a size, a count)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"takes a whole number >= {minimum}, got {text!r}")
        return value
    return parse


positive = at_least(1)


LANGUAGE = re.compile(r"[A-Za-z0-9_]+")  # fairseq's file names (train.de-en.de) need codes without . - / or spaces


def language_code(text: str) -> str:
    """argparse type: a language suffix that fairseq's file names can hold."""
    if not LANGUAGE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a language code fairseq's file names can hold "
                                         "(letters, digits and _ only, e.g. de, pt_BR)")
    return text


def preprocess_command(src: str, tgt: str, prefixes: dict, destdir: Path, dictionaries: Optional[Path] = None,
                       workers: int = 1) -> list[str]:
    """fairseq-preprocess of the pairs PREFIX.{src,tgt} of each split (``prefixes``: split -> PREFIX)
    into DESTDIR: with DATA_BIN ``dictionaries``' dict.{src,tgt}.txt, or building one joined dictionary."""
    cmd = ["fairseq-preprocess", "--source-lang", src, "--target-lang", tgt, "--destdir", str(destdir),
           "--workers", str(workers)]
    if dictionaries is None:
        cmd.append("--joined-dictionary")
    else:
        cmd += ["--srcdict", str(Path(dictionaries) / f"dict.{src}.txt"),
                "--tgtdict", str(Path(dictionaries) / f"dict.{tgt}.txt")]
    return cmd + [x for split, prefix in prefixes.items() for x in (f"--{split}pref", str(prefix))]


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
    pair = language_pair(data_bin)
    if pair != (src, tgt):
        return f"it says {src}->{tgt}, but {data_bin} holds {'->'.join(pair)}"
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


def read_record(path: Path) -> dict:
    """prepare.json at PATH, checked by :func:`checked_record` (SystemExit, one line, naming what is
    wrong otherwise). Records of older prepare.py versions (no 'format') are accepted with the
    checks their content allows; :func:`verified_raw` asks to update them."""
    record, problem = checked_record(path)
    if problem:
        raise SystemExit(untrusted_record(path, problem, "give the data without it"))
    return Prepared(record, path.parent)


def prepared_record(data_bin: Path) -> dict:
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


def verified_raw(record: dict, split: str, side: str) -> Path:
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


def binarize_with(data_bin: Path, split: str, prefix: Path, destdir: Path) -> None:
    """fairseq-preprocess of the raw pair PREFIX.{src,tgt} as SPLIT into DESTDIR with DATA_BIN's
    dictionaries, so that the model sees exactly its training vocabulary."""
    src, tgt = language_pair(data_bin)
    run_fairseq(preprocess_command(src, tgt, {split: prefix}, destdir, dictionaries=data_bin))


def _generate_options() -> dict:
    """fairseq-generate's option strings -> their destination (aliases share one, e.g. -s and
    --source-lang, --remove-bpe and --post-process)."""
    from fairseq import options
    from fairseq.tasks import TASK_REGISTRY

    parser = options.get_generation_parser(default_task="translation")
    TASK_REGISTRY["translation"].add_args(parser)  # the task's own options: -s, -t, ...
    return {option: action.dest for action in parser._actions for option in action.option_strings}


# fairseq-generate options that no script passes on (destination -> why): they would show the
# references to the model, decode its pieces a second time, or print help instead of translating
NEVER_PASSED = {"prefix_size": "it copies each reference's first tokens into the hypothesis",
                "score_reference": "it scores the references instead of translating",
                "bpe": "the script's --post-process joins the pieces; --bpe would decode the text a second time",
                "help": "fairseq-generate --user-dir user_dir --help lists its options"}


def check_pass_through(extra: list[str], owned: dict[str, str]) -> list[str]:
    """``extra`` (fairseq-generate arguments after ``--``) if none of them sets what the script
    sets or records itself (``owned``: destination -> what to use instead) or is one of
    :data:`NEVER_PASSED`; else SystemExit naming the option. fairseq's parser takes no
    abbreviations, so exact names and NAME=VALUE are all there is to match."""
    known = _generate_options() if extra else {}  # fairseq's parser: only for options to check
    for arg in extra:
        dest = known.get(arg.split("=", 1)[0]) if arg.startswith("-") else None
        if dest in owned:
            raise SystemExit(f"error: {arg.split('=', 1)[0]} after -- would contradict what this script sets "
                             f"and records: {owned[dest]}")
        if dest in NEVER_PASSED:
            raise SystemExit(f"error: {arg.split('=', 1)[0]} after -- is not passed to fairseq-generate: "
                             f"{NEVER_PASSED[dest]}")
    return extra


def encode_pieces(sp, lines: list[str]) -> list[str]:
    """Raw lines -> space-separated sentencepiece pieces (``sp``: a SentencePieceProcessor), the
    text fairseq-preprocess reads."""
    return [" ".join(pieces) for pieces in sp.encode(lines, out_type=str)]


def language_pair(data_bin: Path) -> tuple[str, str]:
    """(src, tgt) from fairseq-preprocess file names such as test.de-en.de.idx."""
    for idx in sorted(Path(data_bin).glob("*.*-*.*.idx")):
        return tuple(idx.name.split(".")[1].split("-"))
    raise SystemExit(f"error: {data_bin} holds no fairseq-preprocess output")


def binarized(data_bin: Path, subset: str, side: int, dictionary=None):
    """Side 0 (source) or 1 (target) of DATA_BIN's binarized SUBSET as fairseq loads it (None: absent)."""
    from fairseq.data import data_utils

    pair = language_pair(data_bin)
    return data_utils.load_indexed_dataset(str(Path(data_bin) / f"{subset}.{'-'.join(pair)}.{pair[side]}"), dictionary)


def split_size(data_bin: Path, subset: str) -> int:
    """Number of sentences of a binarized split, read from its index."""
    src, tgt = language_pair(data_bin)
    prefix = Path(data_bin) / f"{subset}.{src}-{tgt}.{src}"
    dataset = binarized(data_bin, subset, 0)
    if dataset is None:
        splits = sorted({idx.name.split(".")[0] for idx in Path(data_bin).glob(f"*.{src}-{tgt}.{src}.idx")})
        raise SystemExit(f"error: {data_bin} holds no split '{subset}' ({prefix}.idx); it holds: "
                         f"{', '.join(splits) or 'none'}")
    return len(dataset)


def generate_command(data_bin: Path, checkpoint: str, subset: str, beam: int, extra: list[str],
                     *options: str) -> list[str]:
    """fairseq-generate of DATA_BIN's SUBSET with the plugin, as evaluate.py and distill.py run it:
    the script's ``options``, then ``extra`` (its arguments after ``--``), then ``--nbest 1`` last,
    so that exactly one hypothesis per sentence comes back whatever ``extra`` says."""
    return ["fairseq-generate", str(data_bin), "--user-dir", str(USER_DIR), "--path", checkpoint,
            "--gen-subset", subset, "--beam", str(beam), "--num-workers", "0", "--no-progress-bar",
            *options, *extra, "--nbest", "1"]


def script_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: Ctrl-C ends it with one ``error:`` line and exit status 130 (the
    shell's for SIGINT), not a traceback; its outputs are written atomically, so none is half there.
    A script that knows more re-raises the KeyboardInterrupt with the line's end (e.g. "; OUT is
    unfinished: ...") as its argument."""
    try:
        main()
    except KeyboardInterrupt as e:
        end = e.args[0] if e.args else ": nothing more was written"
        print(f"error: {Path(sys.argv[0]).name} interrupted (Ctrl-C){end}", file=sys.stderr)
        sys.exit(130)


# the figure formats the plotting scripts write, by file name suffix, with how their files begin
FIGURES = {".png": (b"\x89PNG",), ".pdf": (b"%PDF",), ".svg": (b"<?xml", b"<svg"), ".jpg": (b"\xff\xd8",),
           ".jpeg": (b"\xff\xd8",)}


def check_figure(path: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, a figure --out with no known format suffix, one that would replace
    an input or a file that is not a figure of its format, or in a missing folder."""
    starts = FIGURES.get(path.suffix.lower())
    if starts is None:
        raise SystemExit(f"error: --out {path}: name a figure file ending in {', '.join(FIGURES)}")

    def earlier(existing: Path) -> bool:
        with open(existing, "rb") as f:
            return f.read(8).startswith(starts)
    try:
        check_output(path, "--out", inputs, earlier)
    except OutputError as e:
        raise SystemExit(f"error: {e}") from None


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write a matplotlib figure atomically (never half a file) in the format of its suffix."""
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=path.suffix[1:].lower(), dpi=dpi)
    except WriteError as e:
        raise SystemExit(f"error: {e}") from None


DONE = "train.done"  # in SAVE_DIR: the arguments of the last train.sh run that finished there


def lines(argv: list[str]) -> str:
    """ARGV one argument a line, as train.sh's arguments file and SAVE_DIR/train.done hold it."""
    return "".join(a + "\n" for a in argv)


def record_finished(args_file: str | Path, save: str | Path) -> None:
    """SAVE_DIR/train.done := ARGS_FILE (atomically: a planted link or a kill never leaves half a
    record). train.sh calls it once training finished: this module loads without fairseq."""
    done = Path(save) / DONE
    try:
        with atomic_write(done, "w") as f:
            f.write(Path(args_file).read_text())
    except OSError as e:  # WriteError names the path itself
        why = str(e) if isinstance(e, WriteError) else f"cannot write {done}: {e.strerror}"
        raise SystemExit(f"error: {why}") from None
