"""fairseq-train on the GPU, where CUDA is available (skipped on a machine without one): it trains with
--fp16 and --amp, with and without --decoder-graphs, and what it saved decodes with fairseq-generate on
the GPU and on CPU."""
import re

import pytest
import torch

from helpers import TINY_MODEL, TOY, TRAIN_ARGS, USER_DIR, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


GRAPHS = ["--decoder-graphs", "on"]


@pytest.mark.parametrize("precision, model",  # the graphs first: a run cut short by its time limit has them
                         [("--fp16", GRAPHS), ("--amp", ["--decoder-attention", "additive", *GRAPHS]),
                          ("--fp16", []), ("--amp", []), ("--fp16", ["--decoder-attention", "additive"])],
                         ids=["fp16-graphs", "amp-attention-graphs", "fp16", "amp", "fp16-attention"])
def test_fairseq_train_on_gpu_then_generate_on_gpu_and_cpu(toy_bin, tmp_path, precision, model):
    log = run("fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, *model, *TRAIN_ARGS, precision,
              "--max-update", "60", "--validate-interval-updates", "20", "--log-format", "simple",
              "--log-interval", "20", "--save-dir", tmp_path, "--no-epoch-checkpoints").stdout
    for mode in ("train", "forward"):  # training and validation ran from graphs, or not at all
        assert (f"--decoder-graphs: capturing {mode} graphs" in log) == (model[-2:] == GRAPHS), log[-2000:]
    losses = [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log)]
    assert losses and all(x == x and x < 20 for x in losses), log[-2000:]  # finite, validated each epoch
    assert losses[-1] < losses[0], "validation loss did not fall"
    hyps = {}
    for device in ([precision], ["--cpu"]):
        out = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", tmp_path / "checkpoint_best.pt",
                  "--gen-subset", "test", "--beam", "5", "--batch-size", "64", *device).stdout
        hyps[device[0]] = re.findall(r"^H-(\d+)\t", out, flags=re.M)
    n_test = len((TOY / "test.src").read_text().splitlines())
    assert sorted(hyps[precision], key=int) == sorted(hyps["--cpu"], key=int) == [str(i) for i in range(n_test)]
