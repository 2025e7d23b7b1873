"""NPROC=N scripts/train.sh: fairseq's own distributed training through torchrun (gloo and
legacy_ddp on CPU). Two processes must train what one process trains with --update-freq 2.
(Interrupt and resume with two processes: tests/e2e/test_own_corpus.py.)"""
import json

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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path")
def test_two_processes_train_what_one_trains_with_update_freq_2(tmp_path):
    data = preprocess(TOY, tmp_path / "bin")
    one = run("bash", SCRIPTS / "train.sh", data, tmp_path / "one", *TINY, "--update-freq", "2",
              env={"AMP": "0", "OMP_NUM_THREADS": "1"}).stdout
    two = run("bash", SCRIPTS / "train.sh", data, tmp_path / "two", *TINY,
              env={"AMP": "0", "NPROC": "2", "OMP_NUM_THREADS": "1"}, timeout=300).stdout
    assert "processes: 2 (torchrun; --distributed-backend gloo --ddp-backend legacy_ddp)" in two
    assert "distributed init (rank 1)" in two or "rank 1" in two
    got, want = losses(two), losses(one)
    assert len(got) == len(want) == 6
    assert all(abs(g - w) <= 2e-3 for g, w in zip(got, want)), (got, want)  # the log rounds to 3 decimals
    models = [torch.load(tmp_path / name / "checkpoint_last.pt", weights_only=True)["model"] for name in ("one", "two")]
    assert models[0].keys() == models[1].keys()
    for key in models[0]:
        assert torch.allclose(models[0][key], models[1][key], rtol=1e-4, atol=1e-5), key
    assert want[-1] < want[0]  # it trained: the comparison is not between two untouched models
