"""A new user's path on their own data, end to end on a tiny generated corpus:
one file pair -> prepare.py --corpus -> train.sh --max-update N (exactly N) -> NPROC=2 training,
interrupted and resumed -> evaluate.py OUT/bin CKPT (no --ref) -> from_pretrained(OUT).translate;
and what train.sh picks (precision, schedule, exit status) and the packaging extras."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import user_dir  # noqa: F401  (the checkpoint allow-list for weights_only reads; applied: conftest imported fairseq)
from helpers import ROOT, run

SCRIPTS = ROOT / "scripts"
TINY = ["--arch", "rnn_seq2seq", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
        "--encoder-hidden-size", "48", "--decoder-hidden-size", "48", "--dropout", "0",
        "--label-smoothing", "0", "--lr", "5e-3", "--max-tokens", "600"]


def updates(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["optimizer_history"][-1]["num_updates"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One file pair, corpus.src and corpus.tgt (gzipped target: both kinds are read)."""
    folder = tmp_path_factory.mktemp("own")
    run("python", SCRIPTS / "make_toy_data.py", folder, "--train", "600", "--valid", "1", "--test", "1", "--seed", "7")
    (folder / "train.src").rename(folder / "corpus.src")
    run("gzip", folder / "train.tgt")
    (folder / "train.tgt.gz").rename(folder / "corpus.tgt.gz")
    return folder / "corpus"


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "out"
    log = run("python", SCRIPTS / "prepare.py", "--corpus", corpus, "--src", "src", "--tgt", "tgt",
              "--vocab-size", "60", "--valid-size", "30", "--test-size", "30", "--out", out).stdout
    assert "held out from 600 pairs (seed 1): valid 30, test 30" in log, log
    return out


def test_prepare_holds_out_disjoint_deterministic_splits(corpus, prepared, tmp_path):
    record = json.loads((prepared / "prepare.json").read_text())
    assert record["tokenization"] == "sentencepiece"
    assert sum(record["pairs"].values()) <= 600 and record["pairs"]["valid"] == record["pairs"]["test"] == 30
    pairs = {split: list(zip((prepared / "raw" / f"{split}.src").read_text().splitlines(),
                             (prepared / "raw" / f"{split}.tgt").read_text().splitlines()))
             for split in ("train", "valid", "test")}
    assert {split: len(rows) for split, rows in pairs.items()} == record["pairs"]
    assert not set(pairs["train"]) & set(pairs["valid"]) and not set(pairs["train"]) & set(pairs["test"])
    assert not set(pairs["valid"]) & set(pairs["test"])
    # same seed: same split; other sizes and seed: other held-out pairs
    again = tmp_path / "again"
    run("python", SCRIPTS / "prepare.py", "--corpus", corpus, "--src", "src", "--tgt", "tgt", "--vocab-size", "60",
        "--out", again, "--valid-size", "12", "--test-size", "0", "--seed", "2")
    assert not (again / "raw" / "test.src").exists() and not list((again / "bin").glob("test.*"))
    assert len((again / "raw" / "valid.src").read_text().splitlines()) == 12
    log = run("python", SCRIPTS / "prepare.py", "--corpus", corpus, "--src", "src", "--tgt", "tgt",
              "--vocab-size", "60", "--valid-size", "30", "--test-size", "30", "--out", tmp_path / "same").stdout
    assert "prepare.py" not in log
    assert (tmp_path / "same" / "raw" / "test.tgt").read_text() == (prepared / "raw" / "test.tgt").read_text()


@pytest.mark.parametrize("args, message", [
    (["--src", "src", "--tgt", "src"], "--src and --tgt are both 'src'"),
    (["--vocab-size", "3"], "--vocab-size: takes a whole number >= 8, got '3'"),
    (["--valid-size", "0"], "--valid-size: takes a whole number >= 1"),
    (["--valid-size", "400"], "would leave fewer than half of the"),
    (["--train", "CORPUS"], "--corpus takes one file pair and holds out valid and test itself: leave out --train"),
    (["--out", "OUT/raw"], "would overwrite the input"),
])
def test_prepare_refuses_bad_options_with_one_line(corpus, prepared, tmp_path, args, message):
    base = {"--corpus": str(corpus), "--src": "src", "--tgt": "tgt", "--vocab-size": "60", "--out": str(tmp_path / "o")}
    if "--out" in args:  # an output folder that holds the inputs
        base["--corpus"], args = str(prepared / "raw" / "train"), ["--out", str(prepared)]
    base.update(dict(zip(args[::2], [a.replace("CORPUS", str(corpus)) for a in args[1::2]])))
    proc = run("python", SCRIPTS / "prepare.py", *[x for kv in base.items() for x in kv], check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(("error:", "prepare.py: error:"))


def test_prepare_refuses_a_plain_and_a_gzipped_file_and_records_only_finished_runs(corpus, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "x.src").write_text((corpus.parent / "corpus.src").read_text())
    run("cp", corpus.parent / "corpus.tgt.gz", folder / "x.tgt.gz")
    run("sh", "-c", f"zcat {folder / 'x.tgt.gz'} > {folder / 'x.tgt'}")
    out = tmp_path / "out"
    args = ["python", SCRIPTS / "prepare.py", "--corpus", folder / "x", "--src", "src", "--tgt", "tgt", "--out", out]
    proc = run(*args, "--vocab-size", "60", check=False)
    assert proc.returncode != 0 and f"both {folder / 'x.tgt'} and {folder / 'x.tgt.gz'} exist" in proc.stderr
    (folder / "x.tgt.gz").unlink()
    # a run that fails half-way (here fairseq-preprocess) records nothing: the next run continues
    # it, or with other options redoes it, without --overwrite
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "fairseq-preprocess").write_text("#!/bin/sh\necho 'RuntimeError: disk trouble' >&2\nexit 1\n")
    (fake / "fairseq-preprocess").chmod(0o755)
    failing = {"PATH": f"{fake}:{os.environ['PATH']}"}
    proc = run(*args, "--vocab-size", "60", env=failing, check=False)
    assert proc.returncode != 0 and "fairseq-preprocess failed: RuntimeError: disk trouble" in proc.stderr
    assert not (out / "prepare.json").exists() and (out / "spm.model").exists()
    assert "redo: " in run(*args, "--vocab-size", "64", env=failing, check=False).stdout
    assert "continue: " in run(*args, "--vocab-size", "64").stdout
    assert json.loads((out / "prepare.json").read_text())["vocab_size"] == 64
    proc = run(*args, "--vocab-size", "50", check=False)  # a finished one is kept
    assert proc.returncode != 0 and "(they differ: vocab_size)" in proc.stderr


def test_own_corpus_end_to_end(prepared, tmp_path):
    """train.sh --max-update N stops at exactly N; NPROC=2 trains, is killed, resumes on both
    ranks; evaluate.py scores OUT/bin's test split without --ref; the hub API translates."""
    single = tmp_path / "single"
    log = run("bash", SCRIPTS / "train.sh", prepared / "bin", single, *TINY, "--max-update", "23",
              env={"AMP": "0"}).stdout
    assert updates(single / "checkpoint_last.pt") == 23
    assert "train.sh: stop: --max-update 23 as given; no early stopping; no wall-clock limit" in log
    assert "tokenization sentencepiece (prepare.json)" in log and log.count("train.sh: stop:") == 1

    ckpt = prepared / "ckpt"
    cmd = ["bash", str(SCRIPTS / "train.sh"), str(prepared / "bin"), str(ckpt), *TINY, "--max-update", "30",
           "--save-interval-updates", "10"]
    env = {**os.environ, "NPROC": "2", "AMP": "0", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, last = time.monotonic() + 120, ckpt / "checkpoint_last.pt"
    # fairseq writes checkpoint_E_10.pt, then copies it to checkpoint_last.pt (atomically: read either one)
    while not (last.exists() and updates(last) >= 10) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGTERM)
    out = first.communicate(timeout=60)[0].decode()
    assert first.returncode != 0, out[-3000:]
    assert "processes: 2 (torchrun; --distributed-backend gloo --ddp-backend legacy_ddp)" in out
    interrupted = updates(ckpt / "checkpoint_last.pt")
    assert 10 <= interrupted < 30, out[-3000:]
    resumed = run(*cmd, env={"NPROC": "2", "AMP": "0", "OMP_NUM_THREADS": "1"}, timeout=300).stdout
    assert re.search(rf"loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ {interrupted} updates\)", resumed,
                     re.IGNORECASE), resumed[-3000:]
    assert "UnpicklingError" not in resumed and updates(ckpt / "checkpoint_last.pt") == 30

    summary = tmp_path / "test.json"
    out = run("python", SCRIPTS / "evaluate.py", prepared / "bin", ckpt / "checkpoint_best.pt",
              "--json", summary).stdout
    result = json.loads(summary.read_text())
    assert result["sentences"] == 30 and "sentences = 30" in out

    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    hub = RNNSeq2SeqModel.from_pretrained(str(prepared))
    translations = hub.translate(["eins zwei drei", "sieben acht"], beam=2)
    assert len(translations) == 2 and all(isinstance(t, str) and "\u2581" not in t for t in translations)


def test_train_sh_fits_data_not_made_by_prepare_py(tmp_path):
    """Word-level data from fairseq-preprocess: no sentencepiece removal, default length and early stopping."""
    from helpers import TOY, preprocess

    data = preprocess(TOY, tmp_path / "bin")
    proc = run("bash", SCRIPTS / "train.sh", data, tmp_path / "ckpt", *TINY, "--max-epoch", "1",
               env={"AMP": "0", "PATIENCE": "3"})
    assert "tokenization none (detected)" in proc.stdout
    assert "--max-epoch 1 as given; early stopping after 3 validations" in proc.stdout
    cfg = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=True)["cfg"]
    assert cfg["task"]["eval_bleu_remove_bpe"] is None and cfg["checkpoint"]["patience"] == 3
    # an unsized run gets a length from the data, and early stopping
    settings = run("python", SCRIPTS / "train_settings.py", tmp_path / "args", data, tmp_path / "x").stdout
    assert re.search(r"stop: --max-update \d+ \(default: max\(2000, 9 epochs\)\); early stopping after 5", settings)


@pytest.mark.parametrize("env, message", [
    ({"PATIENCE": "-1"}, "PATIENCE='-1': a whole number of validations >= 0 (0: no early stopping)"),
    ({"BUDGET_HOURS": "0"}, "BUDGET_HOURS='0': a number of hours > 0"),
    ({"BUDGET_HOURS": "soon"}, "BUDGET_HOURS='soon'"),
    ({"AMP": "yes"}, "AMP='yes': 1 forces bfloat16 autocast"),
    ({"NPROC": "0"}, "NPROC='0'"),
])
def test_train_sh_refuses_bad_settings_and_exits_non_zero(prepared, tmp_path, env, message):
    proc = run("bash", SCRIPTS / "train.sh", prepared / "bin", tmp_path / "c", *TINY, "--max-update", "1",
               env=env, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "c" / "checkpoint_last.pt").exists()


# sitecustomize.py for train.sh's processes: once fairseq-train's module is imported (training starts),
# reading the data fails, or the process aborts as it exits
TRAINING_FAILS = """import atexit, os, sys
training = False
def hook(event, args):
    global training
    if event == "import" and args[0] == "fairseq_cli.train":
        training = True
        if os.environ["TRAINING_FAILS"] == "at exit":
            atexit.register(os.abort)
    elif training and event == "open" and str(args[0]).endswith(".bin") and os.environ["TRAINING_FAILS"] == "reading":
        raise OSError("disk trouble")
sys.addaudithook(hook)
"""


@pytest.mark.parametrize("fails, status, message", [
    ("reading", 1, "training did not finish (fairseq-train exit status 1)"),
    ("at exit", 134, "fairseq-train exited with status 134 after training finished"),
])
def test_train_sh_exit_status_is_whether_training_finished(prepared, tmp_path, fails, status, message):
    """A training that fails is non-zero; so is one that aborts after "done training" (the plugin's
    patches.shutdown removes the known cause; another must not pass)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(TRAINING_FAILS)
    proc = run("bash", SCRIPTS / "train.sh", prepared / "bin", tmp_path / "a", *TINY, "--max-update", "2",
               env={"AMP": "0", "PYTHONPATH": str(tmp_path / "site"), "TRAINING_FAILS": fails}, check=False)
    assert proc.returncode == status and message in proc.stderr, proc.stderr[-2000:]
    assert ("disk trouble" in (tmp_path / "a" / "train.log").read_text()) == (fails == "reading")
    assert not (tmp_path / "a" / "train.done").exists()


@pytest.mark.skipif(torch.cuda.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="the CPU precision probe, on a CPU with bfloat16")
def test_train_sh_measures_the_precision_once_and_then_reads_it_from_its_cache(prepared, tmp_path):
    """Whether its pick is the faster one is a speed check: lab/precision_check.py."""
    command = ["python", SCRIPTS / "train_settings.py", tmp_path / "args", prepared / "bin", tmp_path / "s",
               "--max-tokens", "1024"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first, again = (run(*command, env=env).stdout for _ in range(2))
    assert "measured now" in first and "(cached, " in again
    assert first.split("probe: ")[1].split(" (")[0] == again.split("probe: ")[1].split(" (")[0]  # the same figure


def test_tensorboard_logdir_writes_event_files(prepared, tmp_path):
    run("bash", SCRIPTS / "train.sh", prepared / "bin", tmp_path / "c", *TINY, "--max-update", "2",
        "--tensorboard-logdir", tmp_path / "tb", env={"AMP": "0"})
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 100 for e in events), events


def test_wandb_project_logs_training(prepared, tmp_path):
    """--wandb-project with the wandb extra installed logs the training losses (offline: no network)."""
    run("bash", SCRIPTS / "train.sh", prepared / "bin", tmp_path / "c", *TINY, "--max-update", "2",
        "--log-interval", "1", "--wandb-project", "test", env={"AMP": "0", "WANDB_MODE": "offline"}, cwd=tmp_path)
    logged = b"".join(f.read_bytes() for f in (tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert b"train_inner/loss" in logged and b"train/loss" in logged


def test_ensemble_through_from_pretrained(prepared, tmp_path):
    """checkpoint_file="a.pt:b.pt" decodes with both models (documented in docs/training.md)."""
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    ckpt = prepared / "ckpt"
    if not (ckpt / "checkpoint_best.pt").exists():
        run("bash", SCRIPTS / "train.sh", prepared / "bin", ckpt, *TINY, "--max-update", "3", env={"AMP": "0"})
    files = "ckpt/checkpoint_best.pt:ckpt/checkpoint_last.pt"
    hub = RNNSeq2SeqModel.from_pretrained(str(prepared), checkpoint_file=files)
    assert len(hub.models) == 2
    assert len(hub.translate(["eins zwei"], beam=2)) == 1
