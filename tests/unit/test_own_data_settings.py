"""prepare.py's held-out split, train_settings.py's plan (fairseq-train's own reading of the options,
refusals in one line) and the recipe in configs/ against its sources, in process (no CLI)."""
import dataclasses
import io
import os
import re
import shutil
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from fairseq import options, tasks, utils
from fairseq.data.iterators import GroupedIterator
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_CONFIG_REGISTRY
from fairseq_cli import preprocess as fairseq_preprocess
from omegaconf import OmegaConf

from helpers import ROOT, TOY, preprocess_args
from scripts import train_settings
from scripts.prepare import as_the_model_sees, hold_out
from scripts.train_settings import (
    components,
    held_folder,
    per_epoch,
    recipe,
    settings,
)
from user_dir import data_folder, machine, workflow
from user_dir.models.rnn_seq2seq import RNNSeq2SeqConfig
from user_dir.patches.distributed import config_allowed


def corpus(n: int, copies: int = 1) -> tuple[list[str], list[str]]:
    src = [f"s{i}" for i in range(n)] * copies
    return src, [f"t{i}" for i in range(n)] * copies


def test_hold_out_is_deterministic_disjoint_and_drops_copies_of_held_out_pairs():
    data = corpus(100, copies=2)  # every pair twice
    a, b = hold_out(data, 5, 7, seed=3), hold_out(data, 5, 7, seed=3)
    assert a == b and a != hold_out(data, 5, 7, seed=4)
    pairs = {split: set(zip(*sides)) for split, sides in a.items()}
    assert len(a["valid"][0]) == 5 and len(a["test"][0]) == 7
    assert not pairs["train"] & pairs["valid"] and not pairs["train"] & pairs["test"]
    assert not pairs["valid"] & pairs["test"]
    assert len(a["train"][0]) == 2 * (100 - 12)  # both copies of the 12 held-out pairs left train


VARIANTS = ["{}", "  {} ", "{}\u00a0", "\u3000{}", "{}\t"]  # white space runs, ends, NBSP, ideographic, tab


def test_no_pair_is_in_two_splits_as_the_model_sees_it():
    """Copies that differ only in what sentencepiece's normalisation removes (white space, NFKC
    compatibility forms: full-width letters, ligatures) are one pair: none is on both sides."""
    base = [(f"ein hund {i}", f"a dog {i}") for i in range(30)] + [("\ufb01sch", "\uff46ish"), ("x  y", "z")]
    pairs = [(v.format(s), v.format(t)) for s, t in base for v in VARIANTS]
    pairs += [("fisch", "fish"), ("x y", "z")]  # NFKC: the ligature and full-width letters; folded spaces
    data = hold_out(([s for s, _ in pairs], [t for _, t in pairs]), 4, 4, seed=1)
    seen = {split: set(zip(*map(as_the_model_sees, sides))) for split, sides in data.items()}
    assert len(seen["valid"]) == len(data["valid"][0]) == 4 and len(seen["test"]) == 4
    assert not seen["train"] & seen["valid"] and not seen["train"] & seen["test"] and not seen["valid"] & seen["test"]
    assert len(seen["train"]) == len(base) - 8


def test_hold_out_defaults_and_refusals():
    assert {k: len(v[0]) for k, v in hold_out(corpus(1000), None, None, 1).items()} == {
        "train": 900, "valid": 50, "test": 50}
    assert "test" not in hold_out(corpus(100), 10, 0, 1)
    with pytest.raises(SystemExit, match="fewer than half of the 100 distinct pairs"):
        hold_out(corpus(100), 30, 30, 1)


def test_components_keep_only_the_options_a_chosen_component_defines():
    names = {"criterion": "masked_ce", "optimizer": "adam", "lr-scheduler": "reduce_lr_on_plateau"}
    ours = components(recipe()[0], names, lr_patience=1, warmup=10)
    assert ours[ours.index("--lr-patience") + 1] == "1" and ours[ours.index("--warmup-updates") + 1] == "10"
    cosine = components(recipe()[0], {**names, "lr-scheduler": "cosine"}, lr_patience=0, warmup=10)
    assert "--lr-patience" not in cosine and "--warmup-updates" in cosine


@pytest.mark.parametrize("extra, expect, line", [
    (["--max-update=7", "--max-update", "9"], {"max_update": 9}, "stop: --max-update 9 as given; no early"),
    (["--max-sentences", "16"], {"batch_size": 16}, "3000 training pairs, about 188 updates an epoch"),  # alias
    (["--update-freq=2", "--max-tokens", "600"], {"update_freq": [2], "max_tokens": 600}, "about 14 updates"),
    (["--update-freq=4,2", "--max-tokens", "600"], {"update_freq": [4, 2]},
     "about 14 updates an epoch from epoch 2 (--update-freq 4,2)"),
    (["--max-epoch", "30", "--max-tokens", "300"], {"max_epoch": 30, "validate_interval": 3}, "every 3 epoch(s)"),
    (["--patience", "2", "--max-update", "50"], {"patience": 2}, "early stopping after 2 validations"),
    (["--max-update", "0", "--max-epoch", "3"], {"max_update": 0, "max_epoch": 3}, "stop: --max-epoch 3 as given"),
    (["--amp", "--max-update", "5"], {"amp": True}, "precision: bfloat16 autocast (--amp), as given"),
    (["--lr-scheduler", "fixed", "--max-update", "5"], {"lr_scheduler": "fixed"}, "--lr-scheduler fixed"),
])
def test_the_plan_is_fairseqs_own_reading_of_the_options(plan, toy_bin, extra, expect, line):
    """Aliases, --opt=value, the last of a repeated option, types and 0 = no limit as fairseq-train
    reads them; the printed plan is that reading."""
    args, lines = plan(*extra)
    assert {k: getattr(args, k) for k in expect} == expect
    assert line in "\n".join(lines), lines
    assert f"about {per_epoch(train_settings.corpus(args), args)} updates an epoch" in lines[0]


@pytest.mark.parametrize("extra", [["--max-tokens", "600", "--update-freq", "2"], ["--batch-size", "16"],
                                   ["--max-tokens", "1000", "--required-batch-size-multiple", "8"],
                                   ["--max-tokens", "300", "--update-freq", "3"],
                                   ["--max-tokens", "300", "--update-freq", "1,3"],
                                   ["--max-tokens", "5", "--max-tokens-valid", "100"],
                                   ["--max-source-positions", "4", "--max-tokens", "50",
                                    "--skip-invalid-size-inputs-valid-test"],
                                   ["--train-subset", "valid", "--max-tokens", "100"], ["-s", "tgt", "-t", "src"],
                                   ["--upsample-primary", "2", "--max-tokens", "300", "data:train1"]])
def test_the_updates_an_epoch_are_fairseqs_own_count(plan, toy_bin, tmp_path, extra):
    """The plan's updates an epoch are the batches fairseq's iterator makes of the split it trains on
    (--train-subset with the train1.. parts it adds, in the direction it reads; pairs longer than
    --max-tokens or the positions left out), grouped by --update-freq (its last value)."""
    data = with_train1(toy_bin, tmp_path) if "data:train1" in extra else None
    args, lines = plan(*[x for x in extra if x != "data:train1"], "--max-update", "5", data=data)
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)  # as fairseq-train sets it up
    task.load_dataset(args.train_subset, combine=True)
    model_positions = args.max_source_positions, args.max_target_positions
    positions = utils.resolve_max_positions(task.max_positions(), model_positions, args.max_tokens)  # as the Trainer
    batches = task.get_batch_iterator(task.dataset(args.train_subset), max_tokens=args.max_tokens,
                                      max_sentences=args.batch_size, max_positions=positions, seed=1,
                                      ignore_invalid_inputs=True,
                                      required_batch_size_multiple=args.required_batch_size_multiple)
    updates = len(GroupedIterator(batches.next_epoch_itr(shuffle=True), args.update_freq[-1]))
    assert f"about {updates} updates an epoch" in lines[0]


def with_train1(toy_bin: Path, tmp_path: Path) -> Path:
    """The toy data with its validation split also as train1 (fairseq-train adds it to train)."""
    data = shutil.copytree(toy_bin, tmp_path / "train1")
    for path in data.glob("valid.*"):
        shutil.copy(path, data / path.name.replace("valid.", "train1.", 1))
    return data


def test_the_plan_names_what_fairseq_trains_on(plan, toy_bin, tmp_path):
    """The direction, the split and its added parts, the pairs counted in them."""
    assert "src->tgt: 3000 training pairs, about" in plan("--max-update", "5")[1][0]
    assert "tgt->src: 3000 training pairs, about" in plan("-s", "tgt", "-t", "src", "--max-update", "5")[1][0]
    assert "src->tgt: 100 training pairs (valid), about" in plan("--train-subset", "valid", "--max-update", "5")[1][0]
    lines = plan("--upsample-primary", "2", "--max-update", "5", data=with_train1(toy_bin, tmp_path))[1]
    assert "src->tgt: 6100 training pairs (train+train1, --upsample-primary 2), about" in lines[0]
    args, _ = plan("-s", "tgt", "-t", "src", "--max-update", "5")
    forward, backward = (train_settings.corpus(a)["sizes"] for a in (plan("--max-update", "5")[0], args))
    assert all((f == b).all() for f, b in zip(forward, reversed(backward)))


def without(toy_bin: Path, tmp_path: Path, pattern: str) -> Path:
    """The toy data without the files matching PATTERN."""
    data = shutil.copytree(toy_bin, tmp_path / "data")
    for path in data.glob(pattern):
        path.unlink()
    return data


def with_pair(toy_bin: Path, tmp_path: Path, lang: str) -> Path:
    """The toy data with its source also as the language LANG: two language pairs in one folder."""
    data = shutil.copytree(toy_bin, tmp_path / "pairs")
    for path in data.glob("*.src*"):
        shutil.copy(path, data / path.name.replace("src", lang))
    return data


@pytest.mark.parametrize("data, extra, message", [
    (lambda b, t: without(b, t, "valid.*"), [],
     "holds no split 'valid' of src-tgt (valid.src-tgt.src.idx), which fairseq-train loads (--valid-subset valid); "
     "it holds: test, train"),
    (None, ["--valid-subset", "valid,dev"], "holds no split 'dev' of src-tgt (dev.src-tgt.src.idx), which fairseq-train"
     " loads (--valid-subset valid,dev); it holds: test, train, valid"),
    (None, ["--train-subset", "training"], "holds no split 'training' of src-tgt"),
    (lambda b, t: without(b, t, "train.*"), [], "holds no split 'train' of src-tgt"),
    (lambda b, t: without(b, t, "valid.src-tgt.tgt.*"), [], "split 'valid' of {data} has no tgt side"),
    (None, ["-s", "tgt"], "-s tgt alone: fairseq-train reads the pair from {data}'s file names (src->tgt) unless"),
    (None, ["-t", "src"], "-t src alone"),
    (None, ["-s", "xx", "-t", "tgt"], "holds no dict.xx.txt, the dictionary of xx->tgt"),
    (lambda b, t: with_pair(b, t, "fr"), [], "holds several language pairs (fr-tgt, src-tgt) and fairseq would take"),
    (with_train1, [], "holds train1, which fairseq-train adds to 'train' with --upsample-primary copies"),
])
def test_data_fairseq_train_would_not_find_is_one_line_before_anything_is_written(plan, toy_bin, tmp_path, data,
                                                                                    extra, message):
    """Splits, sides, dictionaries and language pairs as fairseq-train reads them from the options: what
    it would fail on after the plan (a traceback), or read otherwise than given, is refused first."""
    folder = data(toy_bin, tmp_path) if data else toy_bin
    with pytest.raises(SystemExit) as refused:
        plan(*extra, "--max-update", "5", data=folder)
    text = str(refused.value)
    assert text.startswith("error: ") and message.format(data=folder) in text and "\n" not in text, text
    assert not (tmp_path / "save").exists()


def binarized_toy(tmp_path: Path, edit=None, extra=()) -> Path:
    """data/toy, its raw text changed by EDIT(folder), binarized by fairseq-preprocess's own main."""
    raw = shutil.copytree(TOY, tmp_path / "raw")
    if edit:
        edit(raw)
    dest = tmp_path / "bin"
    fairseq_preprocess.main(options.get_preprocessing_parser().parse_args(preprocess_args(raw, dest, extra)))
    return dest


def long_pairs(raw: Path) -> None:
    """Three pairs of 40 copies of a sentence (120-280 tokens) added to the training and validation text."""
    for split in ("train", "valid"):
        for side in ("src", "tgt"):
            first = (raw / f"{split}.{side}").read_text().splitlines()[0]
            with open(raw / f"{split}.{side}", "a") as f:
                f.write("".join(" ".join([first] * 40) + "\n" for _ in range(3)))


def test_the_plan_says_which_pairs_fairseq_leaves_out(plan, tmp_path):
    """Training leaves out pairs longer than --max-tokens or the positions; validation those longer than
    the positions under --skip-invalid-size-inputs-valid-test."""
    data = binarized_toy(tmp_path, long_pairs)
    assert "3003 training pairs, about" in plan("--max-update", "5", data=data)[1][0]
    line = plan("--max-tokens", "100", "--max-tokens-valid", "300", "--max-update", "5", data=data)[1][0]
    assert "3003 training pairs (3 longer than --max-tokens or the positions, left out), about" in line
    line = plan("--max-source-positions", "50", "--skip-invalid-size-inputs-valid-test", "--max-update", "5",
                data=data)[1][0]
    assert "(3 longer than --max-tokens or the positions, left out); validation leaves out 3 of the 103 pairs of " \
        "'valid' (longer than the positions), about" in line
    for path in data.glob("valid.*"):
        shutil.copy(path, data / path.name.replace("valid.", "valid1.", 1))
    line = plan("--combine-valid-subsets", "--upsample-primary", "2", "--max-update", "5", data=data)[1][0]
    assert "3003 training pairs; validation on valid+valid1 (--upsample-primary 2), about" in line


@pytest.mark.parametrize("edit, extra, message", [
    (long_pairs, ["--max-source-positions", "50"], "error: split 'valid' holds 3 pair(s) longer than the positions "
     "(--max-source-positions 50, --max-target-positions 1024): fairseq-train would fail at its start"),
    (lambda raw: [(raw / f"valid.{side}").write_text(" ".join(["w"] * 60) + "\n") for side in ("src", "tgt")],
     ["--max-source-positions", "50", "--skip-invalid-size-inputs-valid-test"],
     "error: every pair of split 'valid' is longer than the positions"),
    (None, ["--combine-valid-subsets", "--valid-subset", "test"], "error: --combine-valid-subsets loads 'valid'"),
    ("valid1", ["--combine-valid-subsets"], "error: {data} holds valid1, which fairseq-train adds to 'valid' with "
     "--upsample-primary copies of 'valid' (default -1: it fails)"),
    (long_pairs, ["--max-tokens", "100"], "error: split 'valid' holds pairs of up to"),
    (None, ["--max-tokens-valid", "x"], "error: --max-tokens-valid x: give a whole number >= 1"),
    (lambda raw: [(raw / f"valid.{side}").write_text("") for side in ("src", "tgt")], [],
     "error: split 'valid' of {data} cannot be read as fairseq-train reads it (--valid-subset valid): "
     "valid.src-tgt.src.bin is empty (0 sentences)"),
    ("lazy", ["--dataset-impl", "mmap"], "error: split 'valid' of {data} cannot be read as fairseq-train reads it "
     "(--valid-subset valid, --dataset-impl mmap): AssertionError: Index file doesn't match expected format."),
    ("lazy", [], "error: {data} holds fairseq's indexed (lazy/cached) files, which fairseq-train reads as "
     "--dataset-impl cached (inferred) and then fails on (KeyError in its first batch): give --dataset-impl lazy"),
    ("lazy", ["--dataset-impl", "cached"], "--dataset-impl cached and then fails on"),
    ("raw", [], "error: split 'valid' of {data} is fairseq-preprocess --dataset-impl raw text, which fairseq-train "
     "finds only with --dataset-impl raw: give it"),
    (None, ["--dataset-impl", "raw"], "error: split 'valid' of {data} is binarized, not text: leave --dataset-impl "
     "raw out"),
])
def test_splits_fairseq_train_would_fail_on_are_one_line(plan, tmp_path, edit, extra, message):
    """Validation it would fail on at its start (after the plan and the probe), splits it cannot read:
    one line (nothing else on stderr at exit: tests/e2e/test_train_reliability.py)."""
    data = binarized_toy(tmp_path, None if isinstance(edit, str) else edit,
                         ["--dataset-impl", edit] if edit in ("lazy", "raw") else ())
    if edit == "valid1":
        for path in data.glob("valid.*"):
            shutil.copy(path, data / path.name.replace("valid.", "valid1.", 1))
    with pytest.raises(SystemExit) as refused:
        plan(*extra, "--max-update", "5", data=data)
    assert message.format(data=data) in str(refused.value) and "\n" not in str(refused.value), refused.value
    assert str(refused.value).startswith("error: ")
    if edit in ("lazy", "raw"):  # what the message asks for trains
        assert "training pairs" in plan("--dataset-impl", edit, "--max-update", "5", data=data)[1][0]


def test_the_reference_check_reads_the_targets_of_every_dataset_impl(toy_bin, tmp_path):
    """evaluate.py compares the reference with the split's targets: read alike from mmap, lazy and raw data."""
    from fairseq.data import Dictionary

    from scripts.evaluate import split_targets
    folders = [toy_bin] + [binarized_toy(tmp_path / impl, extra=["--dataset-impl", impl]) for impl in ("lazy", "raw")]
    targets = [split_targets(data, "test", ("src", "tgt"), Dictionary.load(str(data / "dict.tgt.txt")), "")
               for data in folders]
    assert targets[0] == targets[1] == targets[2] and len(targets[0]) == 203


def test_language_codes_fairseq_cannot_read_from_file_names_need_s_and_t(plan, toy_bin, tmp_path):
    data = shutil.copytree(toy_bin, tmp_path / "dash")
    for path in data.iterdir():
        path.rename(data / path.name.replace("src", "en_US").replace("tgt", "zh-Hans"))
    with pytest.raises(SystemExit, match="holds no fairseq-preprocess output whose names give a language pair "
                                         r"\(test.en_US-zh-Hans.en_US.idx: language codes with '-' or '.'\)"):
        data_folder.language_pair(data)
    assert "en_US->zh-Hans: 3000 training pairs" in plan("-s", "en_US", "-t", "zh-Hans", "--max-update", "5",
                                                         data=data)[1][0]


def test_two_pairs_in_one_folder_train_with_s_and_t(plan, toy_bin, tmp_path):
    data = with_pair(toy_bin, tmp_path, "fr")
    assert "fr->tgt: 3000 training pairs" in plan("-s", "fr", "-t", "tgt", "--max-update", "5", data=data)[1][0]
    with pytest.raises(SystemExit, match="holds several language pairs"):
        data_folder.language_pair(data)  # fairseq would take either: -s/-t, or the checkpoint's direction, choose


def test_unsized_runs_get_a_length_and_early_stopping_and_unlimited_ones_need_an_end(plan):
    args, lines = plan()
    assert args.max_update == 2000 and args.patience == 5 and "(default: max(2000, 9 epochs))" in lines[1]
    args, lines = plan("--max-update", "0", PATIENCE="3")
    assert args.max_update == 0 and "stop: no update or epoch limit as given; early stopping after 3" in lines[1]


RENDEZVOUS = {"TORCHRUN_ARGS": "--rdzv-backend c10d --rdzv-endpoint node0:29400 --rdzv-id test"}
GLOO = "--distributed-backend gloo --ddp-backend legacy_ddp"


@pytest.fixture
def launch_env(monkeypatch):
    """The environment train.sh reads for its processes, emptied, then set as each case gives."""
    for name in ("NPROC", "NNODES", "TORCHRUN_ARGS", "PET_RDZV_ENDPOINT", "PET_MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return lambda env: [monkeypatch.setenv(name, value) for name, value in env.items()]


@pytest.mark.parametrize("gpus, given, slurm, env, expect", [
    (0, None, False, {}, (1, False)), (0, 1, False, {}, (1, False)),
    (4, None, False, {}, (4, False)),  # fairseq-train's own processes, one per GPU
    (4, 2, False, {}, (2, False)), (4, 1, False, {}, (1, False)),  # two of the four GPUs, or one
    (8, 16, True, {}, (16, False)),  # SLURM: fairseq's own multi-node start, the whole world given
    (0, None, False, {"NPROC": "2"}, (2, True)), (4, 4, False, {"NPROC": "4"}, (4, True)),
    (0, None, False, {"NPROC": "1", "NNODES": "2", **RENDEZVOUS}, (2, True)),  # one process on each of two machines
    (2, None, False, {"NPROC": "2", "NNODES": "2", "PET_RDZV_ENDPOINT": "node0:29400"}, (4, True)),
])
def test_the_processes_planned_are_those_started(launch_env, gpus, given, slurm, env, expect):
    """NPROC x NNODES through torchrun; unset, fairseq-train's own start: --distributed-world-size
    as given, else one process per GPU (0 GPUs: the CPU, one)."""
    launch_env(env)
    assert machine.world(gpus, given, slurm) == expect


@pytest.mark.parametrize("gpus, given, env, message", [
    (0, 2, {}, "--distributed-world-size 2: fairseq-train starts its own processes one per GPU, and 0 GPU(s) train "
               "here; on the CPU, NPROC=2 starts them through torchrun"),
    (2, 4, {}, "--distributed-world-size 4: fairseq-train starts its own processes one per GPU, and 2 GPU(s)"),
    (1, None, {"NPROC": "2"}, "NPROC=2: 1 GPU(s) here, and each process trains on one of its own"),
    (0, 3, {"NPROC": "2"}, "--distributed-world-size 3: train.sh starts NPROC x NNODES = 2 process(es)"),
    (0, 2, {"NPROC": "1", "NNODES": "3", **RENDEZVOUS}, "train.sh starts NPROC x NNODES = 3 process(es)"),
    (0, None, {"NNODES": "2", **RENDEZVOUS}, "NNODES=2 without NPROC: give NPROC too"),
    (0, None, {"NNODES": "2", "NPROC": "1"}, "NNODES=2 without a rendezvous: give TORCHRUN_ARGS="),
    (0, None, {"NNODES": "2", "NPROC": "1", "TORCHRUN_ARGS": "--standalone --rdzv-endpoint n:1"}, "without a rendez"),
])
def test_processes_fairseq_could_not_start_or_would_count_otherwise_are_refused(launch_env, gpus, given, env,
                                                                               message):
    launch_env(env)
    with pytest.raises(SystemExit) as refused:
        machine.world(gpus, given, slurm=False)
    text = str(refused.value)
    assert text.startswith("error: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize("size, gpus, options", [
    (1, 0, ["--distributed-world-size", "1"]),
    (1, 4, ["--distributed-world-size", "1"]),  # fairseq's default would be 4, even with --cpu
    (2, 0, ["--distributed-world-size", "2", *GLOO.split()]),
    (2, 2, ["--distributed-world-size", "2", "--distributed-backend", "nccl"]),
])
def test_fairseq_train_is_told_the_size_and_backend(size, gpus, options):
    assert machine.distributed(size, gpus) == options


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plan on a machine without GPUs")
@pytest.mark.parametrize("env, size, launcher", [
    ({}, 1, None), ({"NPROC": "1"}, 1, None), ({"NPROC": "2"}, 2, "torchrun"),
    ({"NPROC": "1", "NNODES": "2", **RENDEZVOUS}, 2, "torchrun"),
])
def test_the_plan_trains_in_the_processes_train_sh_starts(plan, env, size, launcher):
    """The printed plan and fairseq-train's options say the same number of processes."""
    args, lines = plan("--max-update", "5", *(["--distributed-world-size", str(size)] if size > 1 else []), **env)
    assert args.distributed_world_size == size
    assert lines[-1] == f"processes: {size}" + (f" ({launcher}; {GLOO})" if launcher else ""), lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plan on a machine without GPUs")
@pytest.mark.parametrize("env, launcher", [({}, "fairseq-train"), ({"NPROC": "1"}, "fairseq-train"),
                                           ({"NPROC": "2"}, "torchrun")])
def test_train_sh_is_told_what_starts_the_processes(plan, toy_bin, tmp_path, monkeypatch, capsys, env, launcher):
    """ARGS_FILE.launcher: train.sh starts what the plan decided, never a decision of its own."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args_file = tmp_path / "args"
    monkeypatch.setattr("sys.argv", ["train_settings.py", str(args_file), str(toy_bin), str(tmp_path / "s"),
                                     "--max-update", "5"])
    train_settings.main()
    assert (tmp_path / "args.launcher").read_text() == launcher + "\n" and args_file.read_text()
    assert "train.sh: processes:" in capsys.readouterr().out


@pytest.mark.parametrize("extra, env, message", [
    (["--max-update", "x"], {}, "error: fairseq-train argument --max-update: invalid int value: 'x'"),
    (["--max-tokens=1e3"], {}, "error: fairseq-train argument --max-tokens: invalid int value: '1e3'"),
    (["--max-upd", "5"], {}, "error: fairseq-train unrecognized arguments: --max-upd 5"),  # no abbreviations
    (["--no-such-option"], {}, "error: fairseq-train unrecognized arguments: --no-such-option"),
    (["--update-freq", "0"], {}, "error: --update-freq 0: give a number >= 1"),
    (["--update-freq", "2,0"], {}, "error: --update-freq 2,0: give a number >= 1"),
    (["--update-freq", "1.5"], {}, "error: --update-freq 1.5: give whole numbers (fairseq-train would read 1)"),
    (["--update-freq=2,2.5"], {}, "error: --update-freq 2,2.5: give whole numbers (fairseq-train would read 2,2)"),
    (["--max-tokens", "0"], {}, "error: --max-tokens 0: give a number >= 1"),
    (["--batch-size", "0"], {}, "error: --batch-size 0: give a number >= 1"),
    (["--validate-interval", "0"], {}, "error: --validate-interval 0: give a number >= 1"),
    (["--log-interval", "0"], {}, "error: --log-interval 0: give a number >= 1"),
    (["--max-update", "-3"], {}, "error: --max-update -3: give a number >= 0 (0: no limit)"),
    (["--max-epoch", "-1"], {}, "error: --max-epoch -1: give a number >= 0 (0: no limit)"),
    (["--save-interval-updates", "-5"], {}, "error: --save-interval-updates -5: give a number >= 0"),
    (["--max-update", "0"], {}, "error: --max-update 0 and --max-epoch 0 mean no limit to fairseq-train"),
    (["--max-epoch", "0"], {"PATIENCE": "0"}, "error: --max-update 0 and --max-epoch 0 mean no limit"),
    (["--max-update", "0", "--disable-validation"], {"PATIENCE": "4"}, "no early stopping (PATIENCE, with valid"),
    (["--save-dir", "elsewhere"], {}, "error: --save-dir in the options: give the folder as train.sh's SAVE_DIR"),
    (["--decoder-embed-dim", "32"], {}, "error: --share-decoder-input-output-embed ties the output projection to the "
                                        "decoder embedding: it needs --decoder-out-embed-dim (512) == "
                                        "--decoder-embed-dim (32) (--arch rnn_seq2seq_multi30k sets some of these)"),
    (["--encoder-layers", "2"], {}, "error: --encoder-layers (2) must equal --decoder-layers (1)"),
    (["--arch", "rnn_seq2seq", "--dropout", "1.5"], {}, "error: --dropout must be in [0, 1), got 1.5"),
])
def test_options_fairseq_cannot_train_with_are_refused_in_one_line(plan, extra, env, message):
    with pytest.raises(SystemExit) as refused:
        plan(*extra, **env)
    text = str(refused.value)
    assert text.startswith("error: ") and message in text and "\n" not in text, text


def test_shared_embeddings_over_two_dictionaries_are_refused_before_anything_is_written(toy_bin, tmp_path):
    """fairseq-train would refuse them in build_model, after the plan, train.log and the lock."""
    data = shutil.copytree(toy_bin, tmp_path / "bin")
    with open(data / "dict.tgt.txt", "a") as f:
        f.write("zzz 1\n")  # no longer the source's dictionary
    with pytest.raises(SystemExit, match=r"^error: --share-all-embeddings requires a joined dictionary"):
        settings(data, tmp_path / "save", ["--share-all-embeddings", "--max-update", "5"])
    assert not (tmp_path / "save").exists()
    settings(toy_bin, tmp_path / "save", ["--share-all-embeddings", "--max-update", "5"])  # joined: trains


@pytest.mark.parametrize("record", ["{not json", "[1, 2]", "\xff\xfe"])
def test_an_unreadable_prepare_json_is_one_line(plan, toy_bin, tmp_path, record):
    data = shutil.copytree(toy_bin, tmp_path / "out" / "bin")
    (tmp_path / "out" / "prepare.json").write_bytes(record.encode("latin1"))
    with pytest.raises(SystemExit, match=rf"^error: {tmp_path}/out/prepare.json [^\n]*$"):
        plan("--max-update", "5", data=data)
    (tmp_path / "out" / "prepare.json").unlink()
    assert "tokenization none (detected)" in plan("--max-update", "5", data=data)[1][0]


def test_save_dir_must_be_a_writable_folder_and_is_held(tmp_path):
    """A folder another process holds: tests/e2e/test_data_safety.py."""
    (tmp_path / "file").write_text("x")
    for save, message in ((tmp_path / "file", "it is not a folder"), (tmp_path / "file" / "sub", "Not a directory")):
        with pytest.raises(SystemExit, match=f"^error: {re.escape(f'SAVE_DIR: cannot write in {save}: {message}')}: "
                                             "choose another folder$"):
            held_folder(save, hold=True)
    held_folder(tmp_path / "new" / "save", hold=True)
    assert [p.name for p in (tmp_path / "new" / "save").iterdir()] == [".lock"]
    assert (tmp_path / "new" / "save" / ".lock").read_text().startswith(f"train.sh (pid {os.getpid()})")


def test_the_plan_holds_the_save_dir_only_where_its_train_sh_starts_every_process(plan, tmp_path):
    """Several machines (NNODES) or SLURM's tasks each run a train.sh on one shared folder: none of their
    plans takes its lock (the others would be refused, and the rendezvous would wait for them until it times out)."""
    plan("--max-update", "5", NNODES="2", NPROC="1", TORCHRUN_ARGS="--rdzv-endpoint h:1")
    assert not (tmp_path / "save" / ".lock").exists()
    plan("--max-update", "5", "--distributed-port", "12345", NNODES="1", NPROC="", SLURM_JOB_NODELIST="n1",
         SLURM_NNODES="1")  # fairseq's own SLURM start on one machine: several tasks may share it
    assert not (tmp_path / "save" / ".lock").exists()
    plan("--max-update", "5", SLURM_JOB_NODELIST="")  # no SLURM: this train.sh starts the run's processes
    assert (tmp_path / "save" / ".lock").read_text().startswith("train.sh (pid ")


def test_a_complete_run_is_known_before_the_precision_probe(toy_bin, tmp_path, monkeypatch, unmeasured):
    """By the checkpoint's updates, or by train.done of this command (a resumed run keeps its
    checkpoint's precision: nothing to measure); a new run is probed. The checkpoint's fit to the
    command: tests/e2e/test_train_reliability.py."""
    save, extra = tmp_path / "save", ["--max-update", "5"]
    monkeypatch.setenv("AMP", "1")  # what the earlier run measured
    argv, _, _ = settings(toy_bin, save, extra)
    monkeypatch.delenv("AMP")
    (save / "checkpoint_last.pt").write_bytes(b"")
    (save / workflow.DONE).write_text(workflow.argv_text(argv))
    progress = {"path": save / "checkpoint_last.pt", "updates": 5, "epochs": 1, "hours": 0.0,
                "cfg": {"common": {"amp": True, "fp16": False}}, "optimizer": True}
    monkeypatch.setattr(train_settings, "saved_progress", lambda plan: progress)
    monkeypatch.setattr(train_settings, "check_resume", lambda plan, saved: None)
    assert settings(toy_bin, save, extra)[1] == [
        f"the run is complete: {save}/checkpoint_last.pt holds 5 updates of --max-update 5; nothing to do "
        "(a larger --max-update or --max-epoch trains on)"]
    progress["updates"] = 3  # stopped early
    argv, lines, _ = settings(toy_bin, save, extra)
    assert argv is None and "this command finished there" in lines[0]
    argv, lines, _ = settings(toy_bin, save, [*extra, "--log-interval", "1"])  # trains on, as the checkpoint was
    assert "--amp" in argv
    assert f"precision: bfloat16 autocast (--amp), as {save}/checkpoint_last.pt was trained" in lines
    monkeypatch.setattr(train_settings, "saved_progress", lambda plan: None)
    with pytest.raises(AssertionError, match="probed"):
        settings(toy_bin, tmp_path / "new", extra)


def test_the_finished_record_is_written_atomically_past_a_planted_link(tmp_path):
    (tmp_path / "args").write_text("a\nb\n")
    (tmp_path / "outside").write_text("keep\n")
    (tmp_path / "save").mkdir()
    (tmp_path / "save" / workflow.DONE).symlink_to(tmp_path / "outside")
    workflow.record_finished(tmp_path / "args", tmp_path / "save")
    done = tmp_path / "save" / workflow.DONE
    assert not done.is_symlink() and done.read_text() == "a\nb\n" and (tmp_path / "outside").read_text() == "keep\n"
    assert sorted(p.name for p in (tmp_path / "save").iterdir()) == [workflow.DONE]
    with pytest.raises(SystemExit, match=rf"^error: cannot write {tmp_path}/none/{workflow.DONE}: No such file"):
        workflow.record_finished(tmp_path / "args", tmp_path / "none")


# the recipe: configs/multi30k.yaml is train_settings' source; each YAML spells out its arch preset

# what train.sh sets otherwise, and why: the machine (precision), the data (tokenization, small data's
# patience, warmup at most a tenth of the run), the environment (PATIENCE, BUDGET_HOURS), the paths
ADAPTED = {"cpu", "fp16", "amp", "eval_bleu_remove_bpe", "lr_patience", "warmup_updates", "patience",
           "stop_time_hours", "user_dir", "data", "save_dir"}


def test_train_sh_runs_the_recipe_of_configs_multi30k_yaml(plan):
    """Every field of the YAML's recipe sections reaches fairseq-train's parse of train.sh's command
    with the YAML's value, but those train.sh adapts (ADAPTED)."""
    args, _ = plan("--max-update", "2300")
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "multi30k.yaml"))
    wanted = {"arch": "rnn_seq2seq_multi30k"}
    for section, values in cfg.items():
        if section != "model":
            name = values.pop("_name", None)
            wanted.update({section: name} if name else {}, **{k: v for k, v in values.items() if k not in ADAPTED})
    got = {k: getattr(args, k) for k in wanted}
    got["adam_betas"] = list(eval(got["adam_betas"]))
    assert got == wanted
    assert recipe()[0]["criterion"] == ("masked_ce", ["--label-smoothing", "0.1"])


PRESETS = [("multi30k.yaml", "rnn_seq2seq_multi30k"), ("multi30k_attention.yaml", "rnn_seq2seq_attention_multi30k")]


@pytest.mark.parametrize("config, arch", PRESETS)
def test_each_yaml_model_block_is_its_arch_preset(config, arch):
    """fairseq-hydra-train applies no --arch: the model a YAML trains (its model: block over the
    dataclass defaults, defaults lists merged) must be, field by field, the preset's."""
    def merged(name: str) -> dict:
        cfg = OmegaConf.load(ROOT / "configs" / name)
        model = {}
        for parent in cfg.get("defaults", []):
            model.update(merged(f"{parent}.yaml") if parent != "_self_" else {})
        return {**model, **OmegaConf.to_container(cfg).get("model", {})}

    defaults = RNNSeq2SeqConfig()
    fields = [f.name for f in dataclasses.fields(RNNSeq2SeqConfig) if f.name not in ("_name",)
              and not str(getattr(defaults, f.name)).startswith("${")]
    preset = Namespace()
    ARCH_CONFIG_REGISTRY[arch](preset)
    from_preset = {k: getattr(preset, k, getattr(defaults, k)) for k in fields}
    yaml_model = merged(config)
    assert yaml_model.pop("_name") == "rnn_seq2seq"
    assert set(yaml_model) <= set(fields), set(yaml_model) - set(fields)
    assert {k: yaml_model.get(k, getattr(defaults, k)) for k in fields} == from_preset


def test_a_training_state_with_its_config_loads_weights_only_with_the_broadcast_allow_list():
    """What rank 0 sends on resume: a state with an omegaconf config (fairseq's _broadcast_object_slow)."""
    state = {"cfg": OmegaConf.create({"common": {"seed": 1, "amp": False}, "lr": [0.002]}), "model": {}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(Exception, match="DictConfig"):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    permanent = set(map(id, torch.serialization.get_safe_globals()))
    with config_allowed():
        loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert loaded["cfg"].common.seed == 1 and list(loaded["cfg"].lr) == [0.002]
    assert set(map(id, torch.serialization.get_safe_globals())) == permanent  # the plugin's allow-list stays


def test_the_data_folder_reads_pairs_splits_and_formats_from_file_names(tmp_path):
    """As fairseq's task finds them: SPLIT.SRC-TGT.* else SPLIT.TGT-SRC.*, binarized or raw text."""
    for name in ("train.de-en.de.bin", "train.de-en.de.idx", "train.de-en.en.bin", "train.de-en.en.idx",
                 "valid.en-de.en", "valid.en-de.de", "dict.de.txt", "preprocess.log", "notes.de-en.txt"):
        (tmp_path / name).write_text("")
    assert data_folder.language_pairs(tmp_path) == [("de", "en"), ("en", "de")]
    assert data_folder.language_pair(tmp_path, "en", "de") == ("en", "de")
    assert data_folder.language_pair(tmp_path, target="de") == ("en", "de")
    with pytest.raises(SystemExit, match="several language pairs"):
        data_folder.language_pair(tmp_path)
    with pytest.raises(SystemExit, match=r"no fr->\? data \(from -s/-t\); it holds de-en, en-de"):
        data_folder.language_pair(tmp_path, "fr")
    for pair in (("de", "en"), ("en", "de")):
        assert data_folder.split_prefix(tmp_path, "train", pair).name == "train.de-en"
        assert data_folder.split_prefix(tmp_path, "valid", pair).name == "valid.en-de"
        assert data_folder.splits_of(tmp_path, *pair) == ["train", "valid"]
    assert (data_folder.raw_text(tmp_path, "valid"), data_folder.raw_text(tmp_path, "train")) == (True, False)
    assert data_folder.split_prefix(tmp_path, "test", ("en", "de")).name == "test.en-de"  # none: as asked
    assert data_folder.side_file(tmp_path, "test", ("en", "de")) == "test.en-de.en"  # as the raw split is named
    assert data_folder.side_file(tmp_path, "test", ("en", "de"), 1, raw=False) == "test.en-de.de.idx"


def test_an_empty_side_is_named_only_when_its_pair_is_read(tmp_path):
    """One pair's empty split does not refuse another pair's split of the same name."""
    for name, text in (("valid.de-en.de", "a\n"), ("valid.de-en.en", "b\n"), ("valid.fr-en.fr", "")):
        (tmp_path / name).write_text(text)
    with data_folder.split_read(tmp_path, "valid", ("en", "de")):
        pass
    with pytest.raises(SystemExit, match=r"^error: split 'valid' of .* cannot be read: valid.fr-en.fr is empty"):
        with data_folder.split_read(tmp_path, "valid", ("fr", "en")):
            pass


def test_the_reference_check_judges_only_lines_whose_targets_show_enough_words():
    """Targets of a small dictionary ('the <unk> of the <unk>') leave too few letters to tell the right
    line from another: a target with more than a quarter <unk> is not judged, one with a quarter is."""
    from user_dir.reference_check import check_reference, judged

    assert judged("a <unk> b c") and not judged("a <unk> b c <unk> d e") and judged("a <<unk>> b c")
    nouns = ["kiheze", "socizo", "vabore", "lumita", "gerupo", "tesanu", "mirovi", "dakelo"]
    refs = [f"the {a} of the {b}" for a, b in zip(nouns, nouns[1:] + nouns[:1])]
    check_reference(refs, {i: "the <unk> of the <unk>" for i in range(len(refs))}, "x")  # nothing judged
    mixed = {i: line.replace(" of ", " of <unk> ", 1) if i % 2 else "the <unk> of the <unk>"
             for i, line in enumerate(refs)}  # odd lines judged (1 <unk> in 6 words), even ones not
    check_reference(refs, mixed, "x")
    with pytest.raises(SystemExit, match=r"does not match x: 0 of its 4 lines judged \(targets of at most a quarter "
                                         r"<unk>\) resemble"):
        check_reference([f"a {n} sat" for n in nouns], mixed, "x")
    swapped = refs[:3] + [refs[5], refs[4], refs[3]] + refs[6:]  # lines 4 and 6: neighbours among the judged
    with pytest.raises(SystemExit, match=r"out of line with x: 2 of its lines .*\(line 4: 'the tesanu"):
        check_reference(swapped, mixed, "x")
