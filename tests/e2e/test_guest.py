"""The plugin as a guest: fairseq's own models train and decode exactly as without ``--user-dir``,
and ``RNN_SEQ2SEQ_PATCHES=minimal`` still trains, resumes and decodes the plugin's model."""
import json
import re

import pytest
import torch

from helpers import TINY_MODEL, TRAIN_ARGS, USER_DIR, run

FAIRSEQ_MODELS = {
    "transformer": ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
                    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
                    "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
                    "--decoder-attention-heads", "2"],
    "lstm": ["--arch", "lstm", "--encoder-embed-dim", "16", "--encoder-hidden-size", "16",
             "--decoder-embed-dim", "16", "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16"],
}
# 2 epochs of the 100 validation sentences (4 batches each): training ends with an epoch, and with
# --required-batch-size-multiple 1 stock fairseq drops no sentence (else it drops the last batch's rest)
GUEST_TRAIN = ["--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "160", "--required-batch-size-multiple", "1",
               "--train-subset", "valid", "--valid-subset", "valid", "--max-epoch", "2", "--seed", "1",
               "--num-workers", "0", "--cpu", "--no-progress-bar", "--log-format", "json", "--log-interval", "1",
               "--no-epoch-checkpoints"]
GUEST_GENERATE = ["--gen-subset", "test", "--beam", "3", "--batch-size", "32", "--required-batch-size-multiple", "1"]
# stock fairseq 0.12 cannot load its own checkpoints under torch >= 2.6's weights_only (argparse.Namespace in
# them): without the plugin, the run that decodes them lifts it, as a user would for a file they made
STOCK_LOAD = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def losses(log: str) -> list[float]:
    """Every loss fairseq-train logged (per update, per epoch, validation), in order."""
    records = [json.loads(line[line.index("{"):]) for line in log.splitlines()
               if re.search(r"\| (train_inner|train|valid) \| \{", line)]
    return [float(r[k]) for r in records for k in ("loss", "train_loss", "valid_loss") if k in r]


@pytest.mark.parametrize("arch", sorted(FAIRSEQ_MODELS))
def test_fairseqs_own_models_train_and_decode_exactly_as_without_the_plugin(toy_bin, tmp_path, arch):
    logs, weights, hyps = {}, {}, {}
    for guest, extra, env in (("stock", [], STOCK_LOAD), ("plugin", ["--user-dir", USER_DIR], {})):
        save = tmp_path / guest
        logs[guest] = run("fairseq-train", toy_bin, *FAIRSEQ_MODELS[arch], *GUEST_TRAIN, "--save-dir", save,
                          *extra, env={"OMP_NUM_THREADS": "1"}).stdout
        weights[guest] = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=True)["model"]
        out = run("fairseq-generate", toy_bin, "--path", save / "checkpoint_last.pt", *GUEST_GENERATE, *extra,
                  env={"OMP_NUM_THREADS": "1", **env}).stdout
        hyps[guest] = sorted(line for line in out.splitlines() if line.startswith(("H-", "P-")))
    assert len(losses(logs["stock"])) >= 6 and losses(logs["stock"]) == losses(logs["plugin"])
    assert weights["stock"].keys() == weights["plugin"].keys()
    assert all(torch.equal(weights["stock"][k], weights["plugin"][k]) for k in weights["stock"])
    assert len(hyps["stock"]) == 2 * 203 and hyps["stock"] == hyps["plugin"]  # every test sentence, both ways


def test_minimal_patches_train_resume_and_decode_the_plugins_model(toy_bin, tmp_path):
    minimal = {"RNN_SEQ2SEQ_PATCHES": "minimal", "OMP_NUM_THREADS": "1"}
    model = [*TINY_MODEL, *TRAIN_ARGS, "--decoder-attention", "additive", "--save-dir", tmp_path,
             "--no-epoch-checkpoints", "--disable-validation"]
    first = run("fairseq-train", toy_bin, "--user-dir", USER_DIR, *model, "--max-update", "3", env=minimal).stdout
    assert re.search(r"rnn_seq2seq patches: minimal \(3 replacements of fairseq: ", first)
    assert len(re.findall(r"rnn_seq2seq patches: ", first)) == 1
    resumed = run("fairseq-train", toy_bin, "--user-dir", USER_DIR, *model, "--max-update", "5", env=minimal).stdout
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 1 @ 3 updates\)", resumed), resumed[-3000:]
    assert "num_updates 5" in resumed
    out = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", tmp_path / "checkpoint_last.pt",
              "--beam", "2", "--batch-size", "64", "--required-batch-size-multiple", "1", env=minimal).stdout
    assert len([line for line in out.splitlines() if line.startswith("H-")]) == 203


def test_an_unknown_patch_level_ends_the_command_with_one_line(toy_bin, tmp_path):
    proc = run("fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, "--save-dir", tmp_path,
               env={"RNN_SEQ2SEQ_PATCHES": "minimum"}, check=False)
    assert proc.returncode != 0 and not (tmp_path / "checkpoint_last.pt").exists()
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == (
        "error: RNN_SEQ2SEQ_PATCHES='minimum': allowed values are 'all' (the default: "
        "every repair) and 'minimal' (only those fairseq 0.12 needs to run on current torch)")
