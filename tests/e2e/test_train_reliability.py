"""scripts/train.sh as a new user meets it: a finished run is complete and left untouched, the exit
status says whether a model was trained and saved, every refusal is one `error:` line, and stopping
train.sh in any way (Ctrl-C, SIGTERM, SIGKILL of its launcher or of its process group) leaves no
training process behind. What train_settings.py plans from the options: tests/unit/test_own_data_settings.py."""
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils

import user_dir  # noqa: F401  (the plugin's safe checkpoint loading; applied: conftest imported fairseq)
from helpers import ROOT, TOY, built_once, preprocess, processes_naming, run

TRAIN = ROOT / "scripts" / "train.sh"
TINY = ["--arch", "rnn_seq2seq", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-hidden-size", "24", "--decoder-hidden-size", "24", "--max-tokens", "3000"]
ENV = {"AMP": "0", "OMP_NUM_THREADS": "1"}


def train(data: Path, save: Path, *extra, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run("bash", TRAIN, data, save, *TINY, *extra, env={**ENV, **(env or {})}, check=check, timeout=300)


def files(folder: Path) -> dict:
    """Every file of FOLDER: its content hash and modification time."""
    return {p.name: (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert message in proc.stderr, proc.stderr


def updates(save: Path) -> int:
    state = checkpoint_utils.load_checkpoint_to_cpu(str(save / "checkpoint_last.pt"))
    return state["optimizer_history"][-1]["num_updates"]


def test_a_finished_run_is_complete_and_changes_nothing(toy_bin, tmp_path):
    """By the checkpoint against --max-update (fairseq-train's own rule), or, for a run that stopped
    early, by SAVE_DIR/train.done of the same command; a limit below the checkpoint is refused."""
    save = tmp_path / "ckpt"
    train(toy_bin, save, "--max-update", "3")
    assert updates(save) == 3 and (save / "train.done").is_file()
    before = files(save)
    again = train(toy_bin, save, "--max-update", "3")
    assert f"the run is complete: {save}/checkpoint_last.pt holds 3 updates of --max-update 3" in again.stdout
    assert "fairseq" not in again.stdout + again.stderr  # fairseq-train was not started
    one_error_line(train(toy_bin, save, "--max-update", "2", check=False),
                   f"error: {save}/checkpoint_last.pt holds 3 updates, more than --max-update 2: nothing to train")
    assert files(save) == before

    early = tmp_path / "early"  # a learning rate of nearly 0: BLEU never improves, the second validation stops it
    stop = ["--lr", "1e-9", "--max-epoch", "50", "--validate-interval", "1", "--save-interval", "1"]
    log = train(toy_bin, early, *stop, env={"PATIENCE": "1"}).stdout
    assert "early stop since valid performance hasn't improved for last 1 runs" in log
    before = files(early)
    assert "and this command finished there" in train(toy_bin, early, *stop, env={"PATIENCE": "1"}).stdout
    assert files(early) == before
    changed = train(toy_bin, early, *stop, "--log-interval", "1", env={"PATIENCE": "1"}).stdout
    assert "the run is complete" not in changed and "done training" in changed  # another command trains on


def test_exit_status_is_non_zero_when_no_checkpoint_was_saved(toy_bin, tmp_path):
    proc = train(toy_bin, tmp_path / "c", "--max-update", "2", "--disable-validation", "--no-last-checkpoints",
                 "--no-epoch-checkpoints", check=False)
    one_error_line(proc, f"error: training finished but wrote no checkpoint to {tmp_path / 'c'}")
    assert train(toy_bin, tmp_path / "n", "--max-update", "2", "--no-save").returncode == 0  # none asked for


@pytest.mark.parametrize("case, message", [
    ("no arguments", "error: give DATA_BIN and SAVE_DIR"),
    ("missing data", "error: DATA_BIN {nowhere} does not exist (or is not a folder)"),
    ("shards", "error: DATA_BIN {data}:{data}: train.sh trains on one folder, not fairseq's shards (a:b)"),
    ("data without dictionaries", "error: {empty} holds no fairseq-preprocess output (dict.*.txt); scripts/prepare.py"),
    ("the folder above bin", "error: {above} holds no fairseq-preprocess output (dict.*.txt); give its bin folder: "
     "{above}/bin\n"),
    ("save is a file", "error: SAVE_DIR: cannot write in {file}: it is not a folder: choose another folder"),
    ("save under a file", "error: SAVE_DIR: cannot write in {file}/ckpt: Not a directory: choose another folder"),
    ("not a number", "error: fairseq-train argument --max-update: invalid int value: '1O'"),
    ("zero divisor", "error: --update-freq 0: give a number >= 1"),
    ("forever", "mean no limit to fairseq-train, and no early stopping"),
    ("unknown option", "error: fairseq-train unrecognized arguments: --max-updates 5"),
    ("corrupt prepare.json", "prepare.json cannot be trusted"),
    ("no validation split", "error: {data} holds no split 'valid' of src-tgt (valid.src-tgt.src.idx), which "
     "fairseq-train loads (--valid-subset valid); it holds: test, train"),
    ("another --dataset-impl", "error: split 'valid' of {data} cannot be read as fairseq-train reads it "
     "(--valid-subset valid, --dataset-impl mmap): AssertionError: Index file doesn't match expected format."),
])
def test_train_sh_refuses_in_one_error_line(toy_bin, tmp_path, case, message):
    (tmp_path / "file").write_text("not a folder\n")
    data, save, extra = toy_bin, tmp_path / "ckpt", ["--max-update", "1"]
    if case == "corrupt prepare.json":
        data = shutil.copytree(toy_bin, tmp_path / "out" / "bin")
        (tmp_path / "out" / "prepare.json").write_text("{truncated")
    if case == "the folder above bin":  # prepare.py's OUT given for its OUT/bin
        shutil.copytree(toy_bin, tmp_path / "out" / "bin")
    if case == "no validation split":  # fairseq-preprocess without --validpref
        data = shutil.copytree(toy_bin, tmp_path / "data", ignore=shutil.ignore_patterns("valid.*"))
    if case == "another --dataset-impl":  # fairseq's half-read dataset adds nothing to the line at exit
        data = preprocess(TOY, tmp_path / "lazy", ["--dataset-impl", "lazy"])
        extra = [*extra, "--dataset-impl", "mmap"]
    args = {"no arguments": [toy_bin], "missing data": [tmp_path / "nowhere", save, *extra],
            "data without dictionaries": [tmp_path, save, *extra], "the folder above bin": [tmp_path / "out", save],
            "shards": [f"{data}:{data}", save, *extra],
            "save is a file": [data, tmp_path / "file", *extra],
            "save under a file": [data, tmp_path / "file" / "ckpt", *extra],
            "not a number": [data, save, "--max-update", "1O"], "zero divisor": [data, save, *extra, "--update-freq=0"],
            "forever": [data, save, "--max-update", "0"], "unknown option": [data, save, "--max-updates", "5"],
            }.get(case, [data, save, *extra])
    one_error_line(run("bash", TRAIN, *args, env=ENV, check=False),
                   message.format(file=tmp_path / "file", nowhere=tmp_path / "nowhere", empty=tmp_path, data=data,
                                  above=tmp_path / "out"))
    assert not (save / "checkpoint_last.pt").exists() and (tmp_path / "file").read_text() == "not a folder\n"
    assert not (save / "train.log").exists()  # opened at the first line of a plan: a refused run has none


@pytest.fixture(scope="session")
def earlier_run(toy_bin, tmp_path_factory) -> Path:
    """A finished run of 3 updates (the learning rate's warmup is 1 update): what the next runs meet
    (made once for all workers; each test trains in a copy)."""
    return built_once(tmp_path_factory, "earlier_run", lambda save: train(toy_bin, save, "--max-update", "3"))


@pytest.mark.parametrize("case, extra, env, message", [
    ("complete, another model", ["--decoder-attention", "additive"], {},
     "does not fit the model of this command: it was trained with --decoder-attention none (this command: additive)"),
    ("complete, other data", [], {}, "ckpt/checkpoint_last.pt: the checkpoint was trained with a source dictionary of"),
    ("resume, another criterion", ["--max-update", "5", "--criterion", "cross_entropy"], {},
     "was trained with --criterion masked_ce (this command: cross_entropy): resuming it keeps"),
    ("resume, another learning rate", ["--max-update", "5", "--lr", "0.5"], {},
     "was trained with --lr 0.002 (this command: 0.5): resuming it keeps the checkpoint's criterion, optimizer "
     "state and precision (and learning rate); give its values, --reset-optimizer to start the optimizer afresh, "
     "or another SAVE_DIR for a new run"),
    ("resume, other optimizer options", ["--max-update", "5", "--weight-decay", "0.1"], {},
     "was trained with --weight-decay 0.0 (this command: 0.1)"),
    pytest.param("resume, another precision", ["--max-update", "5"], {"AMP": "1"},
                 "was trained with no --amp (this command: --amp)",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU's precisions")),
    ("new run among its checkpoints", [], {}, "holds checkpoints of an earlier run (checkpoint"),
    ("new run from epoch 1 among them", ["--max-update", "5", "--reset-dataloader"], {},
     "and this run would not resume it (--reset-dataloader)"),
    ("restore another file", ["--max-update", "5", "--restore-file", "x.pt"], {},
     "and this run would not resume it (--restore-file x.pt): its checkpoints would mix with them"),
])
def test_a_run_is_refused_where_it_would_meet_another_runs_checkpoints(toy_bin, tmp_path, earlier_run, case, extra,
                                                                       env, message):
    """A complete run is still checked against the command (another model or data is another run,
    not a complete one); a resume names what fairseq-train could not resume with or would not
    apply; a run that would not resume the folder's checkpoints does not start among them. The
    folder is left as it was."""
    save, data = shutil.copytree(earlier_run, tmp_path / "ckpt"), toy_bin
    if case == "complete, other data":
        data = preprocess(TOY, tmp_path / "other", ["--nwordssrc", "16"])
    if case == "new run among its checkpoints":
        (save / "checkpoint_last.pt").unlink()
    before = files(save)
    proc = train(data, save, *(extra if "--max-update" in extra else [*extra, "--max-update", "3"]), env=env,
                 check=False)
    one_error_line(proc, message.format(save=save))
    assert files(save) == before
    if case == "resume, another precision":  # AMP unset: the checkpoint's precision, not a measured one
        resumed = train(toy_bin, save, "--max-update", "4", env={"AMP": ""}).stdout
        assert f"precision: float32, as {save}/checkpoint_last.pt was trained" in resumed and "done training" in resumed


@pytest.mark.parametrize("extra", [["--lr", "0.5", "--reset-optimizer"], ["--dropout", "0.1"],
                                   ["--lr", "0.5", "--optimizer-overrides", "{'lr': 0.5}"]])
def test_a_resume_that_fairseq_carries_out_as_asked_is_not_refused(toy_bin, tmp_path, earlier_run, extra):
    """--reset-optimizer starts the optimizer (and its rate) afresh, dropout is read from the
    command, --optimizer-overrides sets the restored state's rate: each resumes and trains."""
    save = shutil.copytree(earlier_run, tmp_path / "ckpt")
    assert "done training" in train(toy_bin, save, "--max-update", "5", *extra).stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU's refusals")
@pytest.mark.parametrize("env, extra, message", [
    ({}, ["--fp16"], "error: --fp16 trains on a CUDA GPU and there is none here"),
    ({"NPROC": "2_0"}, [], "error: NPROC='2_0': the number of processes"),
    ({"AMP": "yes"}, [], "error: AMP='yes': 1 forces bfloat16 autocast"),
])
def test_settings_a_cpu_cannot_train_with_are_refused_before_training(toy_bin, tmp_path, env, extra, message):
    one_error_line(train(toy_bin, tmp_path / "ckpt", "--max-update", "3", *extra, env=env, check=False), message)
    assert not (tmp_path / "ckpt").exists() or not list((tmp_path / "ckpt").iterdir())


def launcher_of(save: Path) -> int:
    """torchrun's pid (its console script, run by scripts/with_parent.py) of the run writing SAVE."""
    for pid in processes_naming(str(save)):
        if any(arg.endswith(b"/torchrun") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]):
            return pid
    raise AssertionError(f"no torchrun launcher for {save}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="two CPU processes (gloo)")
@pytest.mark.parametrize("kill", ["launcher SIGKILL", "launcher SIGTERM", "group SIGKILL", "Ctrl-C"])
def test_stopping_train_sh_leaves_no_training_process(toy_bin, tmp_path, kill):
    """NPROC=2: torchrun and its workers run in a session of their own and die with their parent
    (scripts/with_parent.py); Ctrl-C reaches train.sh, which stops them and says so in one line."""
    save, out = tmp_path / "ckpt", (tmp_path / "out").open("w")
    cmd = ["bash", str(TRAIN), str(toy_bin), str(save), *TINY, "--max-update", "100000", "--max-tokens", "300"]
    proc = subprocess.Popen(cmd, env={**os.environ, **ENV, "NPROC": "2"}, stdout=out, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while "Start iterating over samples" not in (tmp_path / "out").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.5)
    assert len(processes_naming(str(save))) >= 4  # train.sh, torchrun, two workers (and tee)
    training = [pid for pid in processes_naming(str(save) + "\0")  # torchrun and its workers, not train.sh
                if b"fairseq-train" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(training) == 3 and proc.pid not in map(os.getpgid, training)  # Ctrl-C reaches train.sh's group only
    if kill.startswith("launcher"):
        os.kill(launcher_of(save), getattr(signal, kill.split()[1]))
    else:
        os.killpg(proc.pid, signal.SIGKILL if kill == "group SIGKILL" else signal.SIGINT)
    deadline = time.monotonic() + 10
    while processes_naming(str(save)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_naming(str(save)), "a process of the run is left"
    stderr = proc.communicate(timeout=30)[1]
    before = files(save)
    time.sleep(2)
    assert files(save) == before  # nothing writes to the save folder any more
    if kill == "Ctrl-C":
        last = save / "checkpoint_last.pt"  # none saved yet, unless an epoch ended before Ctrl-C
        then = f"resumes from {last}" if last.exists() else "starts from the beginning"
        assert proc.returncode == 130
        assert stderr == f"error: interrupted (SIGINT): training stopped; the same command {then}\n"
        assert "Traceback" not in (tmp_path / "out").read_text()  # the processes did not see Ctrl-C
    elif kill.startswith("launcher"):
        assert proc.returncode != 0 and stderr.startswith("error: training did not finish") and stderr.count("\n") == 1


@pytest.mark.parametrize("kill", ["Ctrl-C", "train.sh SIGKILL", "training SIGKILL"])
def test_stopping_train_sh_stops_the_training_in_its_planning_process(toy_bin, tmp_path, kill):
    """One process trains in train_settings.py's own (fairseq imported once), in a session of its own
    that dies with train.sh: Ctrl-C stops it and says so in one line, SIGKILL of train.sh alone too, and
    a killed training is a failed run; the log keeps the plan and the lines so far."""
    save, out = tmp_path / "ckpt", tmp_path / "out"
    cmd = ["bash", str(TRAIN), str(toy_bin), str(save), *TINY, "--max-update", "100000", "--max-tokens", "300"]
    proc = subprocess.Popen(cmd, env={**os.environ, **ENV}, stdout=out.open("w"), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while "Start iterating over samples" not in out.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.2)
    training = [pid for pid in processes_naming(str(save)) if b"train_settings.py" in
                Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(training) == 1 and os.getpgid(training[0]) != proc.pid  # Ctrl-C reaches train.sh's group only
    {"Ctrl-C": lambda: os.killpg(proc.pid, signal.SIGINT), "train.sh SIGKILL": proc.kill,
     "training SIGKILL": lambda: os.kill(training[0], signal.SIGKILL)}[kill]()
    stderr = proc.communicate(timeout=30)[1]
    deadline = time.monotonic() + 10
    while processes_naming(str(save)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_naming(str(save)), "a process of the run is left"
    log = (save / "train.log").read_text()
    assert log.startswith("train.sh: data: ") and "Start iterating over samples" in log
    last = save / "checkpoint_last.pt"  # none saved yet, unless an epoch ended before the signal
    then = f"resumes from {last}" if last.exists() else "starts from the beginning"
    if kill == "Ctrl-C":
        assert proc.returncode == 130
        assert stderr == f"error: interrupted (SIGINT): training stopped; the same command {then}\n"
    elif kill == "training SIGKILL":
        assert proc.returncode == 137 and stderr == (
            f"error: training did not finish (fairseq-train exit status 137): see {save}/train.log\n")


def test_a_run_whose_output_reader_goes_away_still_logs_and_finishes(toy_bin, tmp_path):
    """train.sh | head -1: the reader ends at the first line, train.log still gets every line, and the
    exit status says the training finished (it said "did not finish", from a log cut at the plan)."""
    save = tmp_path / "ckpt"
    piped = f"bash {TRAIN} {toy_bin} {save} {' '.join(TINY)} --max-update 12 | head -1; exit ${{PIPESTATUS[0]}}"
    proc = run("bash", "-c", piped, env=ENV, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("train.sh: data: ") and proc.stdout.count("\n") == 1
    assert "done training" in (save / "train.log").read_text() and (save / "train.done").exists()


def test_ctrl_c_while_planning_says_that_training_had_not_started(toy_bin, tmp_path):
    """Ctrl-C during train_settings.py: its process is stopped, and the line says no training began
    and, with no checkpoint yet, that the same command starts from the beginning."""
    save = tmp_path / "ckpt"
    cmd = ["bash", str(TRAIN), str(toy_bin), str(save), *TINY, "--max-update", "3"]
    proc = subprocess.Popen(cmd, env={**os.environ, **ENV, "TMPDIR": str(tmp_path)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not processes_naming(f"\0{tmp_path}/tmp."):  # train_settings.py's ARGS_FILE: in train.sh's mktemp -d
        assert proc.poll() is None and time.monotonic() < deadline, "train_settings.py did not start"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stderr = proc.communicate(timeout=30)[1]
    assert proc.returncode == 130 and stderr == (
        "error: interrupted (SIGINT) before training started; the same command starts from the beginning\n")
    assert not processes_naming(str(save)) and not (save / "checkpoint_last.pt").exists()


def test_env_sh_run_instead_of_sourced_says_how_to_use_it():
    """bash scripts/env.sh sets up .venv but not the shell that ran it: it says so; sourced, it is quiet."""
    ran = run("bash", "scripts/env.sh", cwd=ROOT)
    assert ran.stderr == "scripts/env.sh: the environment is ready; to use it in your shell: source scripts/env.sh\n"
    assert run("bash", "-c", "source scripts/env.sh", cwd=ROOT).stderr == ""


@pytest.mark.parametrize("given, expect", [
    (":", "{n} {n}"),  # unset: every core, marked as env.sh's own
    ("export OMP_NUM_THREADS=1", "1 "),  # the user's: kept, not marked
    ("export OMP_NUM_THREADS={n} RNN_SEQ2SEQ_THREADS={n}", "{n} {n}"),  # env.sh's, from an earlier source
])
def test_env_sh_marks_the_threads_it_sets(given, expect):
    """train.sh shares env.sh's every-core setting among NPROC processes, never a value of the user's."""
    n = run("bash", "-c", "unset OMP_NUM_THREADS; nproc").stdout.strip()  # GNU nproc reads OMP_NUM_THREADS
    script = (f"unset OMP_NUM_THREADS RNN_SEQ2SEQ_THREADS; {given.format(n=n)}; source scripts/env.sh > /dev/null; "
              'echo "$OMP_NUM_THREADS ${RNN_SEQ2SEQ_THREADS:-}"')
    assert run("bash", "-c", script, cwd=ROOT).stdout.strip("\n") == expect.format(n=n)


@pytest.mark.parametrize("given, expect", [
    (":", "10000 "),  # unset: a short spin (a core another program uses slows training 20-30x otherwise)
    ("export GOMP_SPINCOUNT=5", "5 "),  # the user's: kept
    ("export OMP_WAIT_POLICY=ACTIVE", " ACTIVE"),  # the user's policy: no spin count of env.sh's over it
    ("source scripts/env.sh > /dev/null; export OMP_WAIT_POLICY=PASSIVE", " PASSIVE"),  # set after env.sh's spin
    ("export GOMP_SPINCOUNT=5 OMP_WAIT_POLICY=PASSIVE", "5 PASSIVE"),  # both the user's: both kept
])
def test_env_sh_keeps_openmps_spinning_short_unless_the_user_set_it(given, expect):
    script = (f"unset GOMP_SPINCOUNT OMP_WAIT_POLICY RNN_SEQ2SEQ_SPIN; {given}; source scripts/env.sh > /dev/null; "
              'echo "${GOMP_SPINCOUNT:-} ${OMP_WAIT_POLICY:-}"')
    assert run("bash", "-c", script, cwd=ROOT).stdout.strip("\n") == expect


@pytest.mark.parametrize("interpreter, says", [
    ("no-such-python", "no-such-python is not a Python found on PATH"),
    ("{bin}/python3.13", "{bin}/python3.13 is Python 3.13"),  # a newer Python: ve-fairseq has no wheel for it
    ("{bin}/python3.10", "{bin}/python3.10 is Python 3.10"),
])
def test_env_sh_refuses_a_python_fairseq_does_not_install_on_before_making_the_venv(tmp_path, interpreter, says):
    """Another Python would fail deep in pip ("No matching distribution found for ve-fairseq"): env.sh
    names the interpreter and its version in one line, and makes no .venv."""
    root, bin_ = tmp_path / "checkout", tmp_path / "bin"
    (root / "scripts").mkdir(parents=True)
    bin_.mkdir()
    for name in ("scripts/env.sh", "setup.cfg", "constraints.txt"):
        shutil.copy(ROOT / name, root / name)
    for version in ("3.13", "3.10"):  # an interpreter answers env.sh's question as that Python would
        (bin_ / f"python{version}").write_text(f"#!/bin/sh\necho {version}\n")
        (bin_ / f"python{version}").chmod(0o755)
    interpreter = interpreter.format(bin=bin_)
    line = (f"error: {says.format(bin=bin_)}; fairseq (ve-fairseq) installs on Python 3.11 or 3.12: "
            "give one, e.g. PYTHON=python3.12 source scripts/env.sh\n")
    proc = run("bash", "-c", f"PYTHON={interpreter} source scripts/env.sh; echo \"rc=$?\"", cwd=root, check=False)
    assert proc.stdout == "rc=1\n" and proc.stderr == line
    # as demo.sh and train.sh source it: under set -e, the question's failure must not end the script first
    proc = run("bash", "-c", f"set -euo pipefail; PYTHON={interpreter} source scripts/env.sh", cwd=root, check=False)
    assert proc.returncode == 1 and proc.stderr == line
    assert not (root / ".venv").exists()
