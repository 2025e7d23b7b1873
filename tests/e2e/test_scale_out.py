"""NPROC=N scripts/train.sh: fairseq's own distributed training through torchrun (gloo and
legacy_ddp on CPU). Two processes, on one machine or on two (NNODES=2, each a train.sh of its own),
must train what one process trains with --update-freq 2.
(Interrupt and resume with two processes: tests/e2e/test_own_corpus.py.)"""
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

import user_dir  # noqa: F401  (the checkpoint allow-list for weights_only reads; applied: conftest imported fairseq)
from helpers import ROOT, TOY, preprocess, run

SCRIPTS = ROOT / "scripts"
TINY = ["--arch", "rnn_seq2seq", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
        "--encoder-hidden-size", "48", "--decoder-hidden-size", "48", "--dropout", "0",
        "--label-smoothing", "0", "--lr", "5e-3", "--max-tokens", "300", "--disable-validation",
        "--no-epoch-checkpoints", "--max-update", "6", "--log-format", "json", "--log-interval", "1"]


def losses(log: str) -> list[float]:
    return [float(json.loads(line.split(" | train_inner | ", 1)[1])["loss"]) for line in log.splitlines()
            if " | train_inner | " in line]


pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path")
CPU_ENV = {"AMP": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[Path, Path, str]:
    """The toy data, and one process's run of it with --update-freq 2: (data, save folder, output)."""
    root = tmp_path_factory.mktemp("scale")
    data = preprocess(TOY, root / "bin")
    out = run("bash", SCRIPTS / "train.sh", data, root / "one", *TINY, "--update-freq", "2", env=CPU_ENV).stdout
    return data, root / "one", out


def assert_same_training(one: tuple[Path, str], two: tuple[Path, str]) -> None:
    """The same losses in the log and the same weights in checkpoint_last.pt, and it trained."""
    got, want = losses(two[1]), losses(one[1])
    assert len(got) == len(want) == 6
    assert all(abs(g - w) <= 2e-3 for g, w in zip(got, want)), (got, want)  # the log rounds to 3 decimals
    models = [torch.load(save / "checkpoint_last.pt", weights_only=True)["model"] for save, _ in (one, two)]
    assert models[0].keys() == models[1].keys()
    for key in models[0]:
        assert torch.allclose(models[0][key], models[1][key], rtol=1e-4, atol=1e-5), key
    assert want[-1] < want[0]  # it trained: the comparison is not between two untouched models


def test_two_processes_train_what_one_trains_with_update_freq_2(one_process, tmp_path):
    data, one, out = one_process
    two = run("bash", SCRIPTS / "train.sh", data, tmp_path / "two", *TINY, env={**CPU_ENV, "NPROC": "2"},
              timeout=300).stdout
    assert "processes: 2 (torchrun; --distributed-backend gloo --ddp-backend legacy_ddp)" in two
    assert "distributed init (rank 1)" in two or "rank 1" in two
    assert_same_training((one, out), (tmp_path / "two", two))


def test_two_machines_of_one_process_each_train_what_one_trains_with_update_freq_2(one_process, tmp_path):
    """NNODES=2 NPROC=1: a train.sh on each "machine" (here both on this one, torchrun's c10d
    rendezvous on a free local port), sharing the save folder as the docs say."""
    data, one, out = one_process
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rendezvous = f"--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{port} --rdzv-id test"
    nodes = [subprocess.Popen(["bash", SCRIPTS / "train.sh", data, tmp_path / "two", *TINY], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, **CPU_ENV, "NPROC": "1", "NNODES": "2",
                                             "TORCHRUN_ARGS": f"{rendezvous} --node-rank {rank}"})
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert all("processes: 2 (torchrun; --distributed-backend gloo --ddp-backend legacy_ddp)" in o for o in outputs)
    assert_same_training((one, out), (tmp_path / "two", (tmp_path / "two" / "train.log").read_text()))
