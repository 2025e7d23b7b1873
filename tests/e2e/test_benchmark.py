"""Smoke test of scripts/benchmark.py at tiny sizes (speed goals live in the benchmark, not here)."""
import json
import re

import pytest
import torch

from helpers import ROOT, run
from user_dir.machine import cpu_name


def test_benchmark_runs_every_model_and_writes_record(toy_bin, tmp_path):
    """One run, in bfloat16 with every model on --criterion's loss (the float32 default and each model's
    own loss: the pair test below)."""
    out = run("python", ROOT / "lab" / "benchmark.py", "--data", toy_bin, "--out", tmp_path,
              "--emb", "16", "--hidden", "32", "--max-tokens", "300", "--warmup-batches", "1",
              "--train-batches", "2", "--decode-sentences", "10", "--decode-len", "5", "--repeats", "1",
              "--bf16", "--criterion", "masked_ce").stdout
    assert "(x fairseq lstm)" in out and "matmul peak" in out
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(record["models"]) == {"rnn_seq2seq", "rnn_seq2seq attention", "fairseq lstm",
                                     "fairseq lstm no attention"}
    assert record["failed"] == {}
    outcomes = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [o["model"] for o in outcomes] == list(record["models"])  # each as its worker ended
    assert [o["train_tokens_per_s"] for o in outcomes] == [m["train_tokens_per_s"] for m in record["models"].values()]
    assert record["precision"] == "bfloat16 autocast"
    # the record names the machine
    assert record["device"] == torch.cuda.get_device_name() if torch.cuda.is_available() else \
        record["device"].startswith(f"cpu: {cpu_name()} (")
    assert record["criteria"] == dict.fromkeys(record["models"], "masked_ce")  # every model with --criterion's
    for model in record["models"].values():
        assert model["train_tokens_per_s"] > 0 and model["beam5_sentences_per_s"] > 0
        assert 0 < model["share_of_matmul_peak"] < 2
        assert model["train_flops_per_token"] > 0
        assert 0 < model["beam5_model_share"] < 1 and 0 < model["greedy_model_share"] < 1  # the rest is the search
    assert record["ratios"]["rnn_seq2seq"]["train_tokens_per_s"] > 0
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_pair_trains_model_and_reference_in_turns(toy_bin, tmp_path):
    out = run("python", ROOT / "lab" / "benchmark.py", "--data", toy_bin, "--out", tmp_path,
              "--emb", "16", "--hidden", "32", "--max-tokens", "300", "--warmup-batches", "1",
              "--train-batches", "2", "--pair", "rnn_seq2seq attention", "--pairs", "3").stdout
    record = json.loads((tmp_path / "pair.json").read_text())
    assert record["models"] == ["rnn_seq2seq attention", "fairseq lstm"]
    assert record["criteria"] == ["masked_ce", "cross_entropy"]  # each model with its own loss
    assert record["precision"] == "float32"
    speeds = record["train_tokens_per_s"]
    assert [len(v) for v in speeds.values()] == [3, 3] and min(min(v) for v in speeds.values()) > 0
    assert record["ratios"] == [a / b for a, b in zip(speeds["rnn_seq2seq attention"], speeds["fairseq lstm"])]
    assert record["median_ratio"] == sorted(record["ratios"])[1]
    assert out.count("pair ") == 3 and f"median {record['median_ratio']:.3f}x" in out
    assert not (tmp_path / "benchmark.json").exists()


def test_a_failing_worker_is_recorded_and_the_others_still_run(toy_bin, tmp_path):
    """Every worker outlives --worker-timeout (importing torch alone takes longer): each model is
    tried once, not again in the second repeat, and the record names each failure."""
    proc = run("python", ROOT / "lab" / "benchmark.py", "--data", toy_bin, "--out", tmp_path, "--repeats", "2",
               "--worker-timeout", "0.5", check=False)
    assert proc.returncode == 1
    models = ["rnn_seq2seq", "rnn_seq2seq attention", "fairseq lstm", "fairseq lstm no attention"]
    assert proc.stderr.splitlines()[-1].startswith(f"4 of 4 models failed: {', '.join(models)}")
    outcomes = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert outcomes == [{"model": m, "repeat": 1, "error": "timed out after 0.5 s (--worker-timeout)"} for m in models]
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["models"] == {} and record["ratios"] == {} and list(record["failed"]) == models
    assert "failed: fairseq lstm: timed out after 0.5 s" in proc.stdout


def test_graph_memory_estimates_shared_slots_below_a_buffer_per_graph(toy_bin):
    """Five buckets at these sizes: the slots (the largest graph's, grown at most twice over) hold
    less than five graphs' own buffers would."""
    out = run("python", "-m", "lab.graph_memory", "--data", toy_bin, "--batches", "100", "--emb", "16",
              "--hidden", "32", "--max-tokens", "150", cwd=ROOT).stdout
    buckets = int(re.search(r"(\d+) buckets", out).group(1))
    own, shared = map(float, re.search(r"in all +([\d.]+) MB; in the pool's shared slots: ([\d.]+) MB", out).groups())
    assert buckets >= 5 and 0 < shared < own


def test_step_ops_splits_each_decoding_step_into_its_parts(toy_bin, tmp_path):
    """The parts add up to the whole; the search is fairseq's, the same for models of one kind; the
    attention model's reorders wait for the device once a step (beam.sentences_kept)."""
    proc = run("python", "-m", "lab.step_ops", "--data", toy_bin, "--decode-sentences", "8", "--decode-len", "4",
               "--emb", "16", "--hidden", "32", "--out", tmp_path, cwd=ROOT)
    per_step = json.loads((tmp_path / "step_ops.json").read_text())["per_step"]
    assert set(per_step) == {"rnn_seq2seq", "rnn_seq2seq attention", "fairseq lstm", "fairseq lstm no attention"}
    for name, counts in per_step.items():
        assert counts["ops"]["all"] == pytest.approx(counts["counted"])  # each operation in exactly one part
        assert counts["ops"]["search"] > 0 and counts["ops"]["decoder rest"] > 0, name
        assert f"{name} " in proc.stdout
    ours, lstm = per_step["rnn_seq2seq attention"], per_step["fairseq lstm"]
    assert ours["ops"]["search"] == lstm["ops"]["search"]
    assert ours["ops"]["decoder step"] > 0 == lstm["ops"]["decoder step"]  # fairseq's has no step of the plugin's
    # one wait a step, and the first step's expansion to the beam (checked at both reorders: about six)
    assert 1 <= ours["syncs"]["reorders"] < 2
