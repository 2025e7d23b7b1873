"""Helpers that the workflow scripts (``scripts/``) and lab instruments (``lab/``) share.

They live in the package rather than beside the scripts so that a script imports them like any
client of the plugin: ``from user_dir.workflow import ...``, with the package installed
(``pip install -e .``: scripts/env.sh does it). That is the one way scripts find the plugin.
Importing this module defines names only and does not import fairseq (seconds): the functions that
need it import it when called, and the plugin registers itself then (``user_dir/__init__.py``), so a
script that never needs fairseq in its own process (``prepare.py``) starts, and refuses, at once.
"""
import argparse
import importlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

from .data_folder import Pair, raw_text, split_prefix, splits_of
from .files import OutputError, WriteError, atomic_write, check_output, write_recorded, written_before

USER_DIR = Path(__file__).resolve().parent  # what fairseq's CLIs get as --user-dir
ROOT = USER_DIR.parent  # the checkout: default places of runs/ and data next to it


# fairseq CLIs that run_fairseq runs in its own process (a script that has imported fairseq already:
# a child would spend seconds importing it again) -> the module whose cli_main is the command
IN_PROCESS = {"fairseq-generate": "fairseq_cli.generate", "fairseq-preprocess": "fairseq_cli.preprocess"}


def run_fairseq(cmd: list[str], on_line: Optional[Callable[[str], None]] = None) -> str:
    """Run a fairseq CLI, fairseq-generate and fairseq-preprocess in this process once fairseq is
    imported, the others as a child; its stdout (each line also given to ``on_line`` as it comes,
    e.g. to show progress), or one line: the exception it ended with (the last unindented line of
    stderr: a traceback's details, such as omegaconf's, are indented)."""
    cmd = [str(c) for c in cmd]
    here = cmd[0] in IN_PROCESS and "fairseq" in sys.modules
    returncode, stdout, stderr = (in_process if here else in_child)(cmd, on_line)
    if returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip()] or [f"exit status {returncode}"]
        raise SystemExit(f"error: {cmd[0]} failed: {([x for x in lines if not x[0].isspace()] or lines)[-1]}")
    return stdout


def in_child(cmd: list[str], on_line: Optional[Callable[[str], None]]) -> tuple[int, str, str]:
    """CMD as a child process: its exit status, stdout and stderr."""
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a full pipe cannot stall the child
        out = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            try:
                for line in proc.stdout:
                    out.append(line)
                    if on_line is not None:
                        on_line(line)
            except BaseException:  # Ctrl-C: the child must not decode on alone
                proc.kill()
                raise
        err.seek(0)
        return proc.returncode, "".join(out), err.read()


class LineStream(io.StringIO):
    """A text stream that hands each line to ``on_line`` as it is written (the last one at :meth:`close_lines`),
    and keeps them all; an error of ``on_line`` (e.g. the script's stderr gone) is kept in ``failed``."""

    def __init__(self, on_line: Optional[Callable[[str], None]]) -> None:
        super().__init__()
        self.on_line, self.pending, self.failed = on_line, "", None

    def write(self, text: str) -> int:
        if self.on_line is not None:
            *lines, self.pending = (self.pending + text).split("\n")
            for line in lines:
                self.hand_on(line + "\n")
        return super().write(text)

    def hand_on(self, line: str) -> None:
        try:
            self.on_line(line)
        except Exception as e:
            self.failed = self.failed or e
            raise

    def close_lines(self) -> None:
        if self.on_line is not None and self.pending:
            self.hand_on(self.pending)
        self.pending = ""


def imported_user_dir(cmd: list[str]) -> list[str]:
    """CMD with its --user-dir spelt as this process imported the plugin, where both are the same
    folder: fairseq compares the paths as written, and would refuse the folder reached through a
    link (a PYTHONPATH of one) as another plugin of the same name."""
    package = sys.modules.get(__package__)
    if package is None:
        return cmd
    imported = package.__path__[0]
    return [imported if i and cmd[i - 1] == "--user-dir" and os.path.realpath(arg) == os.path.realpath(imported)
            else arg for i, arg in enumerate(cmd)]


def loggers() -> list[logging.Logger]:
    """The root logger and every named one made so far."""
    named = [x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)]
    return [logging.getLogger(), *named]


def in_process(cmd: list[str], on_line: Optional[Callable[[str], None]]) -> tuple[int, str, str]:
    """CMD's ``cli_main`` in this process, as a child would run it: its own argv, its Python-level
    stdout and stderr captured, the logging it sets up (fairseq-generate's to its stdout, the
    preprocess.log of fairseq-preprocess) closed after, its exit status from how it ended. Output
    written below Python (a C library's) reaches the terminal, and a crash ends the script too."""
    argv, logging_before = sys.argv, {x: (x.handlers[:], x.level) for x in loggers()}
    out, err, returncode = LineStream(on_line), io.StringIO(), 0
    try:
        # fairseq's logging.basicConfig then writes to the command's stdout, as in a child
        sys.argv, logging.getLogger().handlers[:] = imported_user_dir(cmd), []
        with redirect_stdout(out), redirect_stderr(err):
            try:
                importlib.import_module(IN_PROCESS[cmd[0]]).cli_main()
                out.close_lines()
            except SystemExit as e:  # argparse's status (its message on stderr already), or a refusal's one line
                if e.code is None or isinstance(e.code, int):
                    returncode = e.code or 0
                else:
                    returncode = 1
                    err.write(f"{e.code}\n")
            except Exception:
                if out.failed is not None:  # the script's own error, not the command's
                    raise out.failed from None
                returncode = 1
                err.write(traceback.format_exc())
    finally:
        sys.argv = argv
        for logger in loggers():
            handlers, level = logging_before.get(logger, ([], logging.NOTSET))
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
    return returncode, out.getvalue(), err.getvalue()


def progress(total: int, what: str, kind: str = "H-") -> Callable[[str], None]:
    """An ``on_line`` for :func:`run_fairseq` that counts fairseq-generate's ``kind`` lines (one per
    sentence) and writes ``what: N/TOTAL sentences`` to stderr every tenth of them (at least 100),
    so a long decode shows it is moving; stdout stays the result's."""
    every = max(100, total // 10)
    done = 0
    stderr = sys.stderr  # the script's: fairseq-generate run in this process has its own while it runs

    def on_line(line: str) -> None:
        nonlocal done
        if line.startswith(kind):
            done += 1
            if done % every == 0 or done == total:
                print(f"{what}: {done}/{total} sentences", file=stderr, flush=True)

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


def binarize_with(data_bin: Path, split: str, prefix: Path, destdir: Path, pair: Pair) -> None:
    """fairseq-preprocess of the raw pair PREFIX.{src,tgt} as SPLIT (any name: train1 too) of PAIR, named
    SPLIT.SRC-TGT.*, into DESTDIR with DATA_BIN's dictionaries, so that the model sees exactly its training
    vocabulary, and in the file format (--dataset-impl) of DATA_BIN's files, so that one folder holds one."""
    from fairseq.data import indexed_dataset

    held = splits_of(data_bin, *pair)
    impl = indexed_dataset.infer_dataset_impl(f"{split_prefix(data_bin, held[0], pair)}.{pair[0]}") if held else None
    Path(destdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destdir) as made:  # fairseq-preprocess names the split by its option
        run_fairseq(preprocess_command(*pair, {"train": prefix}, Path(made), dictionaries=data_bin)
                    + ["--dataset-impl", impl or "mmap"])
        for path in Path(made).glob("train.*"):
            path.replace(Path(destdir) / f"{split}.{path.name.split('.', 1)[1]}")
        for path in Path(made).glob("dict.*.txt"):
            path.replace(Path(destdir) / path.name)


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
                "skip_invalid_size_inputs_valid_test": "it drops the sentences longer than the model takes, and "
                                                       "every sentence must be translated; raise the limit instead: "
                                                       "--model-overrides \"{'max_source_positions': N}\" (and "
                                                       "--max-source-positions N above 1024)",
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


def generated(output: list[str], kind: str) -> dict[int, str]:
    """The text of fairseq-generate's first KIND line of each sentence, by sentence id: ``S-``/``T-``
    (``S-<id>\t<text>``) or ``H-``/``D-`` (``H-<id>\t<score>\t<text>``, best first)."""
    found: dict[int, str] = {}
    for line in output:
        if line.startswith(kind) and "\t" in line:
            sid, text = line.split("\t", 1)
            found.setdefault(int(sid[len(kind):]), text.split("\t", 1)[1] if kind in ("H-", "D-") else text)
    return found


def generate_command(data_bin: Path, checkpoint: str, subset: str, beam: int, extra: list[str],
                     *options: str) -> list[str]:
    """fairseq-generate of DATA_BIN's SUBSET with the plugin, as evaluate.py and distill.py run it:
    the script's ``options``, then ``extra`` (its arguments after ``--``), then ``--nbest 1`` last,
    so that exactly one hypothesis per sentence comes back whatever ``extra`` says; raw text data
    with the --dataset-impl raw that fairseq needs to find it."""
    return ["fairseq-generate", str(data_bin), "--user-dir", str(USER_DIR), "--path", checkpoint,
            "--gen-subset", subset, "--beam", str(beam), "--num-workers", "0", "--no-progress-bar",
            *(["--dataset-impl", "raw"] if raw_text(data_bin, subset) else []), *options, *extra, "--nbest", "1"]


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


FIGURES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # the figure formats the plotting scripts write, by suffix
FIGURE = "figure"  # the kind of a figure's record: .NAME.figure.sha256 beside it


def check_figure(path: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, a figure --out with no known format suffix, one that would replace
    an input or a file that is not a figure these scripts wrote (unchanged since), or in a missing folder."""
    if path.suffix.lower() not in FIGURES:
        raise SystemExit(f"error: --out {path}: name a figure file ending in {', '.join(FIGURES)}")
    try:
        check_output(path, "--out", inputs, lambda existing: written_before(existing, FIGURE))
    except OutputError as e:
        raise SystemExit(f"error: {e}") from None


def pyplot() -> ModuleType:
    """matplotlib's pyplot drawing to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write a matplotlib figure atomically (never half a file) in the format of its suffix, with the
    record that lets a later run replace it (:func:`check_figure`)."""
    image = io.BytesIO()
    fig.savefig(image, format=path.suffix[1:].lower(), dpi=dpi)
    try:
        write_recorded(path, FIGURE, image.getvalue())
    except WriteError as e:
        raise SystemExit(f"error: {e}") from None


DONE = "train.done"  # in SAVE_DIR: the arguments of the last train.sh run that finished there


def argv_text(argv: list[str]) -> str:
    """ARGV one argument a line, as train.sh's arguments file and SAVE_DIR/train.done hold it."""
    return "".join(a + "\n" for a in argv)


def record_finished(args_file: str | Path, save: str | Path) -> None:
    """SAVE_DIR/train.done := ARGS_FILE (atomically: a planted link or a kill never leaves half a
    record). train.sh calls it once training finished: this module loads without fairseq."""
    done = Path(save) / DONE
    try:
        with atomic_write(done) as f:
            f.write(Path(args_file).read_bytes())
    except OSError as e:  # WriteError names the path itself
        why = str(e) if isinstance(e, WriteError) else f"cannot write {done}: {e.strerror}"
        raise SystemExit(f"error: {why}") from None
