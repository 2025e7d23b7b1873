"""What the tests share: paths, the tiny model and its training flags, CLI runners, hand-built models.

Imported as ``helpers`` (``pythonpath`` in setup.cfg's [tool:pytest]); fixtures live in conftest.py.
"""
import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import torch
from filelock import FileLock

from user_dir.models.rnn_seq2seq import RNNSeq2SeqConfig, RNNSeq2SeqModel

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "data" / "toy"
DATA = ROOT / "tests" / "data"
USER_DIR = str(ROOT / "user_dir")
# tiny but able to learn the toy task in a few hundred updates
TINY_MODEL = ["--arch", "rnn_seq2seq", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
              "--encoder-hidden-size", "128", "--decoder-hidden-size", "128"]
TRAIN_ARGS = ["--criterion", "masked_ce", "--optimizer", "adam", "--lr", "5e-3", "--clip-norm", "1.0",
              "--max-tokens", "400", "--required-batch-size-multiple", "1", "--seed", "1",
              "--num-workers", "0", "--no-progress-bar", "--log-interval", "50"]


def run(*cmd, check: bool = True, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a CLI (fairseq-* or a script), capturing text output; show it when it fails."""
    env = {"OMP_NUM_THREADS": "2", **os.environ, **(env or {})}
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def python_with_plugin(code: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter that finds the plugin as fairseq's --user-dir does (the
    checkout on sys.path, as sys.argv[1]; ``args`` follow it), run by :func:`run`."""
    return run("python", "-c", f"import sys; sys.path.insert(0, sys.argv[1]); {code}", ROOT, *args, **kwargs)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """FOLDER, made by ``build(FOLDER)`` once in a test run: the first xdist worker to ask builds it,
    the others wait and reuse it (an expensive fixture is not made again in each worker); a build
    that failed fails the others' fixtures at once, not after building again."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the run's folder, which holds each worker's
    folder, done, failed = (root / "built" / f"{name}{end}" for end in ("", ".done", ".failed"))
    folder.parent.mkdir(exist_ok=True)
    with FileLock(root / "built" / f"{name}.lock"):
        if failed.exists():
            pytest.fail(f"building {name} failed in another worker: {failed.read_text()}")
        if not done.exists():
            folder.mkdir()
            try:
                build(folder)
            except BaseException as e:
                failed.write_text(f"{type(e).__name__}: {e}"[:3000])
                raise
            done.touch()
    return folder


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line holds TEXT."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # ended meanwhile
            pass
    return found


def fails_with(proc: subprocess.CompletedProcess, pattern: str, traceback: bool = False) -> None:
    """PROC failed and its output matches PATTERN; without TRACEBACK (an exception of the Python API,
    or an error of fairseq's or Hydra's own) it shows no Python traceback: one line says why."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    output = proc.stderr + proc.stdout
    assert re.search(pattern, output), output[-3000:]
    assert traceback or "Traceback (most recent call last)" not in output, output[-3000:]


def preprocess_args(src_prefix: Path, dest: Path, extra=()) -> list[str]:
    """fairseq-preprocess's arguments: {train,valid,test}.{src,tgt} under ``src_prefix``, one joined dictionary."""
    return [str(a) for a in ("--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary",
                             "--trainpref", src_prefix / "train", "--validpref", src_prefix / "valid",
                             "--testpref", src_prefix / "test", "--destdir", dest, "--workers", "1", *extra)]


def preprocess(src_prefix: Path, dest: Path, extra=()) -> Path:
    """Binarize {train,valid,test}.{src,tgt} under ``src_prefix`` with fairseq-preprocess."""
    run("fairseq-preprocess", *preprocess_args(src_prefix, dest, extra))
    return dest


def generate_lines(data, checkpoint, *extra, prefixes=("H-", "P-")) -> list[str]:
    """fairseq-generate's lines that start with ``prefixes``, sorted by kind, then sentence id."""
    out = run("fairseq-generate", data, "--user-dir", USER_DIR, "--path", checkpoint, *extra).stdout
    return sorted((line for line in out.splitlines() if line.startswith(prefixes)),
                  key=lambda line: (line.split("\t")[0][:2], int(line.split("\t")[0][2:])))


def assert_floats_close(got, want, rel: float, abs: float, what: str = "value") -> None:
    """Each float of ``got`` within ``abs + rel * |want|`` of ``want``'s (naming the first that is not)."""
    assert len(got) == len(want), f"{len(got)} {what}s, recorded {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert math.isclose(g, w, rel_tol=rel, abs_tol=abs), f"{what} {i}: {g!r}, recorded {w!r}"


# fairseq-train through its own entry point, logging losses unrounded (fairseq rounds them to 3 decimals)
FULL_PRECISION_TRAIN = """
import sys
import torch
from fairseq_cli.train import cli_main  # first: it sets up logging as fairseq-train does
from fairseq.logging import meters, progress_bar
meters.safe_round = lambda number, ndigits: number
format_stat = progress_bar.format_stat
progress_bar.format_stat = lambda s: float(s) if isinstance(s, (float, torch.Tensor)) else format_stat(s)
sys.argv[0] = "fairseq-train"
cli_main()
"""


def train_losses(data, *args, user_dir: str = USER_DIR) -> list[float]:
    """Per-update training losses (base 2, unrounded) of a --log-interval 1 fairseq-train run."""
    out = run("python", "-c", FULL_PRECISION_TRAIN, data, "--user-dir", user_dir, *args,
              "--log-format", "json", "--log-interval", "1").stdout
    marker = " | train_inner | "
    records = [json.loads(line.split(marker, 1)[1]) for line in out.splitlines() if marker in line]
    return [float(r["loss"]) for r in records]


# Hand-built models for unit tests: name -> config overrides
VARIANTS = {
    "lstm": {},
    "gru-2layer": {"cell": "gru", "encoder_layers": 2, "decoder_layers": 2},
    "lstm-bidir-deep-tied": {"encoder_bidirectional": True, "decoder_deep_output": True,
                             "decoder_out_embed_dim": 8, "share_decoder_input_output_embed": True},
    "gru-bidir-2layer-shared": {"cell": "gru", "encoder_bidirectional": True, "encoder_layers": 2,
                                "decoder_layers": 2, "share_all_embeddings": True, "encoder_embed_dim": 8,
                                "decoder_deep_output": True, "decoder_out_embed_dim": 8},
    "gru-bidir-attention-deep": {"cell": "gru", "encoder_bidirectional": True, "decoder_attention": "additive",
                                 "decoder_attention_dim": 7, "decoder_deep_output": True, "decoder_out_embed_dim": 8},
    "lstm-2layer-attention": {"encoder_layers": 2, "decoder_layers": 2, "decoder_attention": "additive"},
    "gru-bidir-multiplicative-deep": {"cell": "gru", "encoder_bidirectional": True,
                                      "decoder_attention": "multiplicative", "decoder_deep_output": True,
                                      "decoder_out_embed_dim": 8},
}


def build(task, **overrides) -> RNNSeq2SeqModel:
    cfg = dict(encoder_embed_dim=6, decoder_embed_dim=8, encoder_hidden_size=10, decoder_hidden_size=12,
               max_source_positions=64, max_target_positions=64, dropout=0.0)
    cfg.update(overrides)
    return RNNSeq2SeqModel.build_model(RNNSeq2SeqConfig(**cfg), task).eval()


def batch(task, lengths):
    """B x S source of random words, left-padded like fairseq's default."""
    d = task.source_dictionary
    src = torch.full((len(lengths), max(lengths)), d.pad())
    for i, n in enumerate(lengths):
        src[i, max(lengths) - n :] = torch.randint(d.nspecial, len(d), (n,))
    return src, torch.tensor(lengths)


def prev_tokens(task, bsz: int, steps: int):
    d = task.target_dictionary
    prev = torch.randint(d.nspecial, len(d), (bsz, steps))
    prev[:, 0] = d.eos()
    return prev
