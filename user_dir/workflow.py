"""Helpers that the workflow scripts (``scripts/``) and lab instruments (``lab/``) share.

They live in the package rather than beside the scripts so that a script imports them like any
client of the plugin: ``from user_dir.workflow import ...`` after ``pip install -e .``, or after
the script's one visible ``sys.path`` line when it runs from a checkout without installing.
Importing this module defines names only; like every ``user_dir`` module it loads the plugin
(``user_dir/__init__.py``: fairseq's repairs and registrations), which the scripts need anyway.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from fairseq import options
from fairseq.data import data_utils
from fairseq.tasks import TASK_REGISTRY

USER_DIR = Path(__file__).resolve().parent  # what fairseq's CLIs get as --user-dir
ROOT = USER_DIR.parent  # the checkout: default places of runs/ and data next to it


def run_fairseq(cmd: list[str], on_line: Optional[Callable[[str], None]] = None) -> str:
    """Run a fairseq CLI; its stdout (each line also given to ``on_line`` as it comes, e.g. to show
    progress), or one line: the exception it ended with (the last unindented line of stderr: a
    traceback's details, such as omegaconf's, are indented)."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a full pipe cannot stall the child
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=err, text=True)
        out = []
        for line in proc.stdout:
            out.append(line)
            if on_line is not None:
                on_line(line)
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


def prepared_record_path(data_bin: Path) -> Path:
    """Where scripts/prepare.py records what it made, for DATA_BIN = OUT/bin: OUT/prepare.json."""
    return Path(data_bin).resolve().parent / "prepare.json"


def prepared_record(data_bin: Path) -> dict:
    """prepare.json of OUT when DATA_BIN is OUT/bin made by scripts/prepare.py, else {}."""
    record = prepared_record_path(data_bin)
    if not record.is_file() or (record.parent / "bin").resolve() != Path(data_bin).resolve():
        return {}
    return json.loads(record.read_text())


def binarize_with(data_bin: Path, split: str, prefix: Path, destdir: Path) -> None:
    """fairseq-preprocess of the raw pair PREFIX.{src,tgt} as SPLIT into DESTDIR with DATA_BIN's
    dictionaries, so that the model sees exactly its training vocabulary."""
    data_bin = Path(data_bin)
    src, tgt = language_pair(data_bin)
    run_fairseq(["fairseq-preprocess", "--source-lang", src, "--target-lang", tgt,
                 "--srcdict", str(data_bin / f"dict.{src}.txt"), "--tgtdict", str(data_bin / f"dict.{tgt}.txt"),
                 f"--{split}pref", str(prefix), "--destdir", str(destdir), "--workers", "1"])


def _generate_options() -> dict:
    """fairseq-generate's option strings -> their destination (aliases share one, e.g. -s and
    --source-lang, --remove-bpe and --post-process)."""
    parser = options.get_generation_parser(default_task="translation")
    TASK_REGISTRY["translation"].add_args(parser)  # the task's own options: -s, -t, ...
    return {option: action.dest for action in parser._actions for option in action.option_strings}


def check_pass_through(extra: list[str], owned: dict[str, str]) -> list[str]:
    """``extra`` (fairseq-generate arguments after ``--``) if none of them sets what the script
    sets or records itself (``owned``: destination -> what to use instead); else SystemExit
    naming the option. fairseq's parser takes no abbreviations, so exact names and NAME=VALUE
    are all there is to match."""
    known = _generate_options()
    for arg in extra:
        dest = known.get(arg.split("=", 1)[0]) if arg.startswith("-") else None
        if dest in owned:
            raise SystemExit(f"error: {arg.split('=', 1)[0]} after -- would contradict what this script sets "
                             f"and records: {owned[dest]}")
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


def split_size(data_bin: Path, subset: str) -> int:
    """Number of sentences of a binarized split, read from its index."""
    src, tgt = language_pair(data_bin)
    prefix = Path(data_bin) / f"{subset}.{src}-{tgt}.{src}"
    dataset = data_utils.load_indexed_dataset(str(prefix), None)
    if dataset is None:
        raise SystemExit(f"error: {data_bin} holds no split '{subset}' ({prefix}.idx)")
    return len(dataset)
