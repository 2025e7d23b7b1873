"""Shared fixtures: the toy corpus binarized once, and one small model trained on it once."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationConfig, TranslationTask

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the plugin, imported as fairseq's --user-dir would: module "user_dir"
import user_dir  # noqa: E402,F401

TOY = ROOT / "data" / "toy"
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


def preprocess(src_prefix: Path, dest: Path, extra=()) -> Path:
    """Binarize {train,valid,test}.{src,tgt} under ``src_prefix`` with a joined dictionary."""
    run("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary",
        "--trainpref", src_prefix / "train", "--validpref", src_prefix / "valid",
        "--testpref", src_prefix / "test", "--destdir", dest, "--workers", "1", *extra)
    return dest


@pytest.fixture(scope="session")
def toy_bin(tmp_path_factory) -> Path:
    return preprocess(TOY, tmp_path_factory.mktemp("toy") / "bin")


@pytest.fixture(scope="session")
def trained(toy_bin, tmp_path_factory) -> Path:
    """checkpoint_best.pt of a tiny model trained 400 updates on the toy task."""
    save_dir = tmp_path_factory.mktemp("ckpt")
    run("fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS,
        "--max-update", "400", "--save-dir", save_dir, "--no-epoch-checkpoints")
    return save_dir / "checkpoint_best.pt"


@pytest.fixture
def task() -> TranslationTask:
    """A real fairseq translation task over a 20-word joined dictionary (no data on disk)."""
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    return TranslationTask(TranslationConfig(), d, d)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
