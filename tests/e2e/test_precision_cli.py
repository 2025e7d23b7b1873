"""``--amp`` on CPU (user_dir/patches/amp.py): bfloat16 autocast in training, validation and
decoding through the real fairseq CLIs, float32 weights, no loss scaler."""
import re

import torch

from helpers import TINY_MODEL, TRAIN_ARGS, USER_DIR, run


def train_log(toy_bin, save_dir, *extra) -> str:
    return run("fairseq-train", toy_bin, "--user-dir", USER_DIR, "--cpu", *TINY_MODEL, *TRAIN_ARGS,
               "--max-update", "40", "--log-format", "simple", "--log-interval", "10", "--save-dir", save_dir,
               "--no-epoch-checkpoints", *extra).stdout


def numbers(log: str, pattern: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, log)]


def test_amp_trains_and_validates_in_bfloat16_with_float32_weights(toy_bin, tmp_path):
    """Same seed and batches: --amp's losses differ from float32's (autocast is on) by little, its
    loss scale is 1, and the checkpoint holds float32 weights."""
    fp32 = train_log(toy_bin, tmp_path / "fp32")
    amp = train_log(toy_bin, tmp_path / "amp", "--amp")
    for pattern in (r"train_inner .*? loss=([\d.]+)", r"valid on 'valid' subset \| loss ([\d.]+)"):
        ref, got = numbers(fp32, pattern), numbers(amp, pattern)
        assert len(ref) == len(got) > 0, pattern
        assert ref != got, f"--amp changed nothing ({pattern}): autocast is not on"
        assert all(abs(a - b) < 0.03 * b for a, b in zip(got, ref)), (ref, got)
    assert set(re.findall(r"loss_scale=([\d.]+)", amp)) == {"1"}
    state = torch.load(tmp_path / "amp" / "checkpoint_last.pt", weights_only=True)
    assert {t.dtype for t in state["model"].values()} == {torch.float32}


def test_generate_with_amp_decodes_in_bfloat16(toy_bin, trained):
    def scores(*extra):
        out = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--beam", "5",
                  "--batch-size", "64", *extra).stdout
        return {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines() if line.startswith("H-")}

    fp32, bf16 = scores(), scores("--amp")
    assert fp32.keys() == bf16.keys() and len(fp32) == 203
    assert fp32 != bf16, "--amp changed no score: decoding did not run under autocast"
    same = sum(fp32[k][1] == bf16[k][1] for k in fp32)
    assert same > 0.9 * len(fp32), same  # the same translations almost everywhere
