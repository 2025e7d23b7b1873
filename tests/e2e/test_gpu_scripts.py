"""lab/gpu_recipes.sh (and lab/gpu_env.sh, which lab/gpu_check.sh shares) as a dry run on the CPU:
what a visit to a GPU machine runs, so that the visit does not find a broken script."""
import json
import os
import re
import signal
import subprocess
import tarfile
import time

import pytest

from helpers import ROOT, processes_naming, run

RECIPES = ROOT / "lab" / "gpu_recipes.sh"
ENV = ROOT / "lab" / "gpu_env.sh"


def packed(tarball) -> set:
    with tarfile.open(tarball) as archive:
        return {name.removeprefix("./") for name in archive.getnames()}


def fairseq_times(log) -> list:
    """The timestamps of a fairseq log's lines, in order."""
    return re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|", log.read_text(), re.MULTILINE)


def test_recipes_train_at_once_score_and_pack_their_logs_into_out(tmp_path):
    """RECIPES_PARALLEL=1 (one visit, every row): each recipe is trained by train.sh with its own
    options and scored on both splits; the pair's two trainings overlap and its ensemble waits for
    both; the logs travel packed (at most 8 files come back from a device call) and stay whole
    while stages write at once. The pair alone (a minute of this tier): the other recipes' one line,
    ``train NAME && evaluate NAME``, calls the same two functions, but is not run to its scores here
    (the next test stops attn and lstm while they train); nor is the default, one recipe after
    another, which runs the same functions without ``&``."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    proc = run("bash", RECIPES, "", "pair", env={"GPU_CHECK_CPU": "1", "RECIPES_UPDATES": "1",
                                                  "RECIPES_PARALLEL": "1", "OUT": str(out), "LOG_DIR": str(logs)})
    assert "trained together: 2 trainings at once" in proc.stdout
    # prepare; 2 trainings; valid and test scores of s1 and the ensemble
    assert "gpu_recipes: 7 of 7 stages passed" in proc.stdout
    s1_log = logs / "train_s1.log"
    assert "'max_update': 1," in s1_log.read_text() and "'_name': 'rnn_seq2seq_multi30k'" in s1_log.read_text()
    scores = json.loads((logs / "s1_test.json").read_text())
    assert scores["sentences"] == len((logs / "s1_test.hyp").read_text().splitlines()) > 0
    assert f"s1_test BLEU {scores['bleu']} chrF2 {scores['chrf']}" in proc.stdout
    s1, s2 = fairseq_times(s1_log), fairseq_times(logs / "train_s2.log")
    assert s2[0] <= s1[-1] and s1[0] <= s2[-1]  # the two trainings overlap
    assert "'seed': 2," in (logs / "train_s2.log").read_text()
    for name in ("s1_valid", "ensemble_test", "ensemble_valid"):
        assert json.loads((logs / f"{name}.json").read_text())["sentences"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu_recipes.summary.txt", "gpu_recipes.tar.gz"]
    assert {"summary.txt", "train_s1.log", "train_s2.log", "s1_valid.json", "s1_test.json", "s1_test.hyp",
            "ensemble_test.json"} <= packed(out / "gpu_recipes.tar.gz")
    assert (out / "gpu_recipes.summary.txt").read_text() == (logs / "summary.txt").read_text()


def test_stopping_recipes_run_at_once_stops_every_training(tmp_path):
    """SIGTERM to the script alone (a device call at its limit): each recipe's processes stop with
    it, its work folder goes, and the logs so far reach OUT."""
    out, logs, scratch = tmp_path / "out", tmp_path / "logs", tmp_path / "scratch"  # scratch: its work folder's
    out.mkdir()
    scratch.mkdir()
    env = {**os.environ, "GPU_CHECK_CPU": "1", "RECIPES_PARALLEL": "1", "RECIPES_UPDATES": "100000",
           "OUT": str(out), "LOG_DIR": str(logs), "TMPDIR": str(scratch)}
    proc = subprocess.Popen(["bash", str(RECIPES), "", "attn", "lstm"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = [logs / "train_attn.log", logs / "train_lstm.log"]
    deadline = time.monotonic() + 180
    while not all(log.exists() and "Start iterating over samples" in log.read_text() for log in started):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.5)
    assert len([pid for pid in processes_naming(str(scratch)) if b"train_settings.py" in  # trains in its process
                open(f"/proc/{pid}/cmdline", "rb").read()]) >= 2
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while processes_naming(str(scratch)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_naming(str(scratch)), "a process of the recipes is left"
    assert not list(scratch.glob("tmp.*"))  # the work folder (mktemp -d), checkpoints and all, and train.sh's
    assert {"train_attn.log", "train_lstm.log", "summary.txt"} <= packed(out / "gpu_recipes.tar.gz")


def test_an_unknown_recipe_is_one_line_before_anything_runs(tmp_path):
    proc = run("bash", RECIPES, "", "attn", "lstn", check=False, env={"LOG_DIR": str(tmp_path / "logs")})
    assert proc.returncode == 2
    assert proc.stderr == "error: unknown recipe 'lstn': choose from attn, pair, lstm, transformer\n"
    assert not (tmp_path / "logs").exists()
    proc = run("bash", RECIPES, "", "attn", check=False, env={"RECIPES_PARALLEL": "yes",
                                                              "LOG_DIR": str(tmp_path / "logs")})
    assert proc.returncode == 2
    assert proc.stderr == ("error: RECIPES_PARALLEL=yes: 1 trains the recipes at once, 0 one after another\n")
    assert not (tmp_path / "logs").exists()


def test_the_logs_reach_out_after_every_stage_even_if_the_run_is_killed(tmp_path):
    """A device call stopped at its limit kills the script: what ran is in $OUT already."""
    out = tmp_path / "out"
    out.mkdir()
    script = f'source {ENV}; gpu_setup probe {tmp_path / "logs"}; stage first 10 echo ran; kill -9 $$'
    proc = run("bash", "-c", script, check=False,
               env={"GPU_CHECK_CPU": "1", "OUT": str(out), "TMPDIR": str(tmp_path)})  # its work folder stays
    assert proc.returncode == -9 or proc.returncode == 137
    assert {"summary.txt", "first.log"} <= packed(out / "probe.tar.gz")
    assert "first: exit 0" in (out / "probe.summary.txt").read_text()


def test_a_stage_past_the_deadline_does_not_run(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    script = (f'source {ENV}; run_name=probe out={logs}; : > {logs}/summary.txt; stage slow 60 sleep 30; '
              'stage late 60 echo late; finish')
    proc = run("bash", "-c", script, check=False, env={"GPU_DEADLINE_S": "6"})
    summary = (logs / "summary.txt").read_text()
    limit = re.search(r"slow: exit 124 after \d+ s \(limit (\d+) s;", summary)
    assert limit and 5 <= int(limit.group(1)) <= 6  # cut to the time left
    assert "late: not run: the run's deadline (GPU_DEADLINE_S 6 s) is reached" in summary
    assert "probe: 0 of 2 stages passed" in proc.stdout
    assert not (tmp_path / "logs" / "late.log").exists()


def test_logs_never_go_into_a_folder_that_holds_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = run("bash", RECIPES, "", "attn", check=False, env={"GPU_CHECK_CPU": "1", "LOG_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr == f"error: {tmp_path} is not empty: give a new or empty folder for the logs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("recipe", ["attn", "s1", "s2", "lstm", "transformer"])
def test_each_recipe_is_a_command_fairseq_train_accepts(toy_bin, tmp_path, recipe):
    """The recipes' options, read by fairseq-train's own parser as train.sh runs it (a typo would
    otherwise show only on the GPU machine)."""
    listed = dict(line.split(": ", 1) for line in run("bash", RECIPES, "--list").stdout.splitlines())
    options = listed[recipe].split()
    run("python", ROOT / "scripts" / "train_settings.py", tmp_path / "args", toy_bin, tmp_path / "save", *options,
        env={"AMP": "0"})
    args = (tmp_path / "args").read_text().split("\n")
    assert args[args.index("--max-update") + 1] == options[options.index("--max-update") + 1]
