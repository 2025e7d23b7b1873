"""train.sh's precision probe on a CPU (user_dir/precision.py): what it trains, how it draws the
batches, and the cache keyed by the model; in process, on the toy data. Whether its pick is the
faster one in fairseq-train: lab/precision_check.py (a speed check, not a test)."""
import json
import math

import pytest
import torch

from helpers import TINY_MODEL
from scripts import train_settings
from scripts.train_settings import batches, built, corpus, settings
from user_dir import precision
from user_dir.data_folder import binarized, language_pair
from user_dir.precision import Workload, measured_precision, training_samples, training_work


def drawn(plan, toy_bin, *extra: str, count: int = 15) -> tuple[list[tuple], list[tuple], set[tuple]]:
    """For the toy plan with EXTRA: the ids of each batch the probe draws, its (source, target)
    lengths, and those of each batch of the epoch (fairseq breaks ties between equal lengths at
    random, which changes a batch's members, not its lengths)."""
    args, _ = plan(*TINY_MODEL, "--max-update", "5", *extra)
    src, tgt = corpus(args)["sizes"]

    def lengths(ids) -> tuple:
        return tuple(sorted(zip(src[ids].tolist(), tgt[ids].tolist())))
    samples = training_samples(*built(args), count)
    return ([tuple(s["id"].tolist()) for s in samples], [lengths(s["id"].numpy()) for s in samples],
            {lengths(b) for b in batches(corpus(args), args)})


def test_the_probe_trains_on_fairseqs_own_batches_drawn_as_training_draws_them(plan, toy_bin):
    """As many batches as asked, none twice in an epoch, of the epoch's shapes, the seed's draw; an
    epoch of fewer batches (a small corpus) drawn again from the start, as training does."""
    ids, shapes, epoch = drawn(plan, toy_bin, "--max-tokens", "60")
    assert len(ids) == 15 == len(set(ids)) and set(shapes) <= epoch
    assert drawn(plan, toy_bin, "--max-tokens", "60")[0] == ids
    assert drawn(plan, toy_bin, "--max-tokens", "60", "--seed", "2")[0] != ids
    ids, shapes, epoch = drawn(plan, toy_bin, "--max-tokens", "10000")
    assert len(epoch) < 15 and len(ids) == 15 and set(shapes) == epoch


def test_the_probe_draws_from_the_direction_fairseq_trains(plan, toy_bin):
    """--source-lang/--target-lang either way: each batch's sources are that language's sentences."""
    pair = language_pair(toy_bin)
    for side in (0, 1):
        args, _ = plan(*TINY_MODEL, "--max-update", "5", "-s", pair[side], "-t", pair[1 - side])
        sentences = binarized(toy_bin, "train", side, pair)
        for sample in training_samples(*built(args), 3):
            rows = sample["net_input"]["src_tokens"]
            assert [row[row.ne(1)].tolist() for row in rows] == [sentences[i].tolist() for i in sample["id"]]


def test_the_probe_runs_fairseq_trains_updates_in_each_precision(plan):
    """Every step updates the plan's model (its encoder's weights, seen through a forward hook); the
    bfloat16 steps run under autocast (every linear layer computes in bfloat16), the float32 ones
    not. The name is the work's: another size, or another decoder path, another key."""
    fixed = ["--lr-scheduler", "fixed"]  # the recipe's warmup starts from a rate of 0: no step would change a weight
    args, _ = plan(*TINY_MODEL, *fixed, "--max-update", "5", "--max-tokens", "60")
    work = training_work(*built(args), sets=2, size=2)
    assert work.sets == 2 and work.name.startswith("rnn_seq2seq on 4 training batches (")
    seen = []  # every module's output as the steps run: (module, dtype)
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append((m, o.dtype if isinstance(o, torch.Tensor) else None)))
    try:
        work.step(False, 0)
        encoder = next(m for m, _ in seen if type(m).__name__ == "RNNEncoder")
        for bf16 in (False, True):
            before = [p.detach().clone() for p in encoder.parameters()]
            seen.clear()
            assert work.step(bf16, 1) > 0
            assert all(not torch.equal(a, p) for a, p in zip(before, encoder.parameters()))
            linear = {dtype for m, dtype in seen if isinstance(m, torch.nn.Linear)}
            assert linear == {torch.bfloat16 if bf16 else torch.float32}
    finally:
        hook.remove()
    assert training_work(*built(args), sets=2, size=2).name == work.name
    for other in (["--decoder-hidden-size", "64"], ["--decoder-rnn", "loop"]):
        changed, _ = plan(*TINY_MODEL, *fixed, *other, "--max-update", "5", "--max-tokens", "60")
        assert training_work(*built(changed), sets=2, size=2).name != work.name, other


def test_an_epoch_of_no_batch_is_refused_in_one_line(plan):
    with pytest.raises(SystemExit, match=r"^error: no training pair of .* fits --max-tokens 2 and the model's "
                                         r"positions: fairseq-train would train on nothing"):
        plan(*TINY_MODEL, "--max-update", "5", "--max-tokens", "2")


def test_no_probe_where_the_options_or_several_machines_set_the_precision(plan, toy_bin, tmp_path, monkeypatch,
                                                                          unmeasured):
    """--amp (or --fp16, --bf16) in the options wins; NNODES > 1, or under fairseq's SLURM start a
    SLURM_NNODES other than 1 (or none), trains in float32 unless AMP says."""
    argv, lines, _ = settings(toy_bin, tmp_path / "a", [*TINY_MODEL, "--max-update", "5", "--amp"])
    assert "--amp" in argv and "precision: bfloat16 autocast (--amp), as given in the options" in lines
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NPROC", "1")
    monkeypatch.setenv("TORCHRUN_ARGS", "--rdzv-endpoint h:1")
    argv, lines, _ = settings(toy_bin, tmp_path / "b", [*TINY_MODEL, "--max-update", "5"])
    assert "--amp" not in argv and "precision: float32, several machines, unmeasured (AMP=1: bfloat16 autocast on " \
        "all)" in lines
    monkeypatch.delenv("NNODES")
    monkeypatch.delenv("NPROC")  # fairseq's own SLURM start
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[1-2]")  # fairseq's SLURM start: SLURM's node count decides
    for count, several in ((None, True), ("2", True), ("1", False)):
        if count:
            monkeypatch.setenv("SLURM_NNODES", count)
        extra = [*TINY_MODEL, "--max-update", "5", "--distributed-port", "12345"]
        if several:
            assert "several machines, unmeasured" in " ".join(settings(toy_bin, tmp_path / "c", extra)[1])
        else:
            with pytest.raises(AssertionError, match="probed"):  # one machine measures, as without SLURM
                settings(toy_bin, tmp_path / "c", extra)


def timed(name: str, seconds: dict) -> tuple[Workload, list]:
    """A workload whose sets take SECONDS[bf16] each (the time a probe reads), and its calls."""
    calls = []

    def step(bf16: bool, i: int) -> float:
        calls.append((bf16, i))
        return seconds[bf16]
    return Workload(name, 3, step), calls


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "CACHE", tmp_path / "cache" / "precision.json")
    return precision.CACHE


def test_the_choice_is_measured_once_per_model_and_cached(cache, capsys):
    faster, calls = timed("model a", {False: 1.0, True: 0.5})
    assert measured_precision(faster)[0] == ["--cpu", "--amp"]
    assert calls == [(False, 0), (False, 1), (False, 2), (True, 0), (True, 1), (True, 2)]  # float32 first
    assert "timing bfloat16 autocast against float32" in capsys.readouterr().err
    again, calls = timed("model a", {False: 1.0, True: 2.0})
    options, why = measured_precision(again)
    assert options == ["--cpu", "--amp"] and not calls and "2.00x float32's speed" in why and "(cached, " in why
    slower, calls = timed("model b", {False: 1.0, True: 1.0 / 1.25})  # below the margin: float32, exact
    options, why = measured_precision(slower)
    assert options == ["--cpu"] and calls and "1.25x float32's speed (bfloat16 from 1.3x)" in why
    assert "model b (measured now" in why
    assert sorted(key.rsplit(" | ", 1)[1] for key in json.loads(cache.read_text())) == ["model a", "model b"]


@pytest.mark.parametrize("damage", ["[1, 2]", '{"KEY": {"bf16_speedup": "fast"}}', '{"KEY": {}}', '{"KEY": 3}', "{",
                                    '{"KEY": {"bf16_speedup": NaN}}', '{"KEY": {"bf16_speedup": Infinity}}',
                                    '{"KEY": {"bf16_speedup": -1}}'])
def test_a_damaged_cache_is_measured_again(cache, damage):
    work, calls = timed("model a", {False: 1.0, True: 0.5})
    key = f"{precision.cpu_key()} | torch {torch.__version__} | {torch.get_num_threads()} threads | model a"
    cache.parent.mkdir(parents=True)
    cache.write_text(damage.replace("KEY", key.replace('"', '\\"')))
    options, why = measured_precision(work)
    assert options == ["--cpu", "--amp"] and calls and "(measured now" in why
    assert json.loads(cache.read_text())[key] == {"bf16_speedup": 2.0}


def test_bfloat16_that_does_not_train_is_not_picked(cache):
    """Non-finite bfloat16 gradients (the --amp path stops after MAX_SKIPPED of them) mean float32."""
    def step(bf16: bool, i: int) -> float:
        if bf16:
            raise FloatingPointError("10 updates in a row had gradients that are not finite")
        return 1.0
    options, why = measured_precision(Workload("model c", 3, step))
    assert options == ["--cpu"] and "probe: bfloat16's gradients were not finite (bfloat16 from 1.3x)" in why
    assert "(cached, " in measured_precision(Workload("model c", 3, step))[1]


def test_bf16_is_refused_in_one_line(plan):
    """fairseq 0.12's --bf16 sets --tpu: fairseq-train would fail deep inside on a CPU or GPU."""
    with pytest.raises(SystemExit, match=r"^error: --bf16 is fairseq 0.12's TPU precision \(it sets --tpu\)"):
        plan(*TINY_MODEL, "--max-update", "5", "--bf16")


def test_a_resume_with_a_new_optimizer_builds_the_model_once(plan, toy_bin, tmp_path, monkeypatch, unmeasured):
    """--reset-optimizer: the checkpoint's fit is checked and the precision probed on one model built."""
    extra = [*TINY_MODEL, "--max-update", "5", "--reset-optimizer"]
    args, _ = plan(*extra, AMP="0")
    monkeypatch.delenv("AMP")
    progress = {"path": tmp_path / "save" / "checkpoint_last.pt", "updates": 3, "epochs": 0, "hours": 0.0,
                "cfg": {}, "model": built(args)[2].state_dict(), "optimizer": False}
    models = []
    monkeypatch.setattr(train_settings, "saved_progress", lambda plan: progress)
    monkeypatch.setattr(train_settings, "built", lambda plan: models.append(built(plan)) or models[-1])
    monkeypatch.setattr(train_settings, "training_work", lambda cfg, task, model: timed("resumed", {
        False: 1.0, True: 2.0 if model is models[0][2] else math.nan})[0])
    argv, lines, _ = settings(toy_bin, tmp_path / "save", extra)
    assert len(models) == 1 and "--amp" not in argv and "probe: bfloat16 at 0.50x" in " ".join(lines)
