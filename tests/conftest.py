"""Fixtures: the toy corpus binarized once, one small model trained on it once, a dictionary-only task.

Shared constants and helpers are in helpers.py (import them from there, not from here).
"""
import signal
from pathlib import Path

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from fairseq_cli import preprocess as fairseq_preprocess

import user_dir  # noqa: F401  (registers the plugin and applies its patches, as --user-dir does)
from helpers import TINY_MODEL, TOY, TRAIN_ARGS, USER_DIR, built_once, preprocess_args, run
from scripts import train_settings
from scripts.train_settings import fairseq_options, settings
from user_dir import precision

# A test run started in the background (``bash scripts/test.sh &`` in a script) inherits SIGINT
# ignored, and every process it starts would too: the Ctrl-C tests need it delivered. A handler,
# unlike SIG_IGN, is reset to the default in the processes the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def toy_bin(tmp_path_factory) -> Path:
    """data/toy binarized by fairseq-preprocess's own main, in this process (the unit tier runs no CLI)."""
    dest = tmp_path_factory.mktemp("toy") / "bin"
    fairseq_preprocess.main(options.get_preprocessing_parser().parse_args(preprocess_args(TOY, dest)))
    return dest


@pytest.fixture(scope="session")
def trained(toy_bin, tmp_path_factory) -> Path:
    """checkpoint_best.pt of a tiny model trained 400 updates on the toy task (end-to-end tests only;
    one training for all workers, on the first worker's toy_bin: the same files in each)."""
    save_dir = built_once(tmp_path_factory, "trained", lambda folder: run(
        "fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--max-update", "400",
        "--save-dir", folder, "--no-epoch-checkpoints"))
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


@pytest.fixture
def plan(toy_bin, tmp_path, monkeypatch):
    """train_settings' plan for EXTRA on the toy data (or DATA): (fairseq-train's parse of its arguments,
    printed lines)."""
    for name in ("PATIENCE", "BUDGET_HOURS", "NPROC", "NNODES", "TORCHRUN_ARGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AMP", "0")

    def make(*extra: str, data: Path | None = None, **env: str):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        argv, lines, _ = settings(data or toy_bin, tmp_path / "save", list(extra))
        return fairseq_options(argv), lines
    return make


@pytest.fixture
def unmeasured(plan, tmp_path, monkeypatch):
    """A CPU with bfloat16 whose precision is not cached (AMP unset): a probe here fails the test."""
    monkeypatch.delenv("AMP")
    monkeypatch.setattr(precision, "CACHE", tmp_path / "cache" / "precision.json")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def probed(*args, **kwargs):
        raise AssertionError("probed")
    monkeypatch.setattr(train_settings, "training_work", probed)
