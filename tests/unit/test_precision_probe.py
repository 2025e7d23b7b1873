"""train.sh's precision probe on a CPU (user_dir/precision.py): what it trains, how it draws the
batches, and the cache keyed by the model; in process, on the toy data. Whether its pick is the
faster one in fairseq-train: tests/e2e/test_own_corpus.py."""
import json

import numpy as np
import pytest
import torch

from helpers import TINY_MODEL
from scripts.train_settings import batches, corpus, probe_sets
from user_dir import precision
from user_dir.precision import Workload, measured_precision, training_work


def drawn(sets: list[list[np.ndarray]]) -> list[tuple]:
    return [tuple(batch) for batches_ in sets for batch in batches_]


def test_the_probe_trains_on_fairseqs_own_batches_drawn_as_training_draws_them(plan, toy_bin):
    args, _ = plan("--max-update", "5", "--max-tokens", "60")
    every = {tuple(b) for b in batches(corpus(toy_bin), args)}
    sets = probe_sets(corpus(toy_bin), args)
    assert [len(s) for s in sets] == [3] * 5
    assert len(every) >= 15 and set(drawn(sets)) <= every and len(set(drawn(sets))) == 15  # none twice
    assert drawn(probe_sets(corpus(toy_bin), args)) == drawn(sets)  # the seed's draw
    assert drawn(probe_sets(corpus(toy_bin), plan("--max-update", "5", "--max-tokens", "60", "--seed", "2")[0])) != (
        drawn(sets))
    few, _ = plan("--max-update", "5", "--max-tokens", "10000")  # an epoch of fewer batches: drawn again, as training
    epoch = {tuple(b) for b in batches(corpus(toy_bin), few)}
    again = drawn(probe_sets(corpus(toy_bin), few))
    assert len(epoch) < 15 and len(again) == 15 and set(again) == epoch


def test_the_probe_runs_fairseq_trains_updates_in_each_precision(plan, toy_bin):
    """Every step updates the plan's model (its encoder's weights, seen through a forward hook); the
    bfloat16 steps run under autocast (every linear layer computes in bfloat16), the float32 ones
    not. The name is the model's: another size, another key."""
    args, _ = plan(*TINY_MODEL, "--max-update", "5", "--max-tokens", "60")
    work = training_work(args, probe_sets(corpus(toy_bin), args, sets=2, size=2))
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
    sets = probe_sets(corpus(toy_bin), args, sets=2, size=2)
    assert training_work(args, sets).name == work.name
    wider, _ = plan(*TINY_MODEL, "--decoder-hidden-size", "64", "--max-update", "5", "--max-tokens", "60")
    assert training_work(wider, probe_sets(corpus(toy_bin), wider, sets=2, size=2)).name != work.name


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
    slower, calls = timed("model b", {False: 1.0, True: 1.0 / 1.04})  # below the margin: float32, exact
    options, why = measured_precision(slower)
    assert options == ["--cpu"] and calls and "1.04x" in why and "model b (measured now" in why
    assert sorted(key.rsplit(" | ", 1)[1] for key in json.loads(cache.read_text())) == ["model a", "model b"]
