"""No silently wrong result from the scripts: bad text, stale or shared outputs, checkpoints used
with the wrong data or tools, paths and options that would change what is scored."""
import json
import os
import re
import shutil
import subprocess

import pytest

from helpers import ROOT, TINY_MODEL, TOY, TRAIN_ARGS, USER_DIR, run
from user_dir.files import lock_folder

SCRIPTS = ROOT / "scripts"
PREPARE_SPLITS = ["--splits", "train=train", "valid=valid", "test=test"]


def fails_with(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    output = proc.stderr + proc.stdout
    assert re.search(pattern, output), output[-3000:]


def raw_copy(tmp_path, name="raw", lines=300):
    """The first ``lines`` pairs of each toy split as raw files named {split}.{de,en}."""
    raw = tmp_path / name
    raw.mkdir()
    for split in ("train", "valid", "test"):
        for side, lang in (("src", "de"), ("tgt", "en")):
            text = (TOY / f"{split}.{side}").read_text().splitlines(keepends=True)[:lines]
            (raw / f"{split}.{lang}").write_text("".join(text))
    return raw


def prepare(raw, out, *extra, check=True):
    return run("python", SCRIPTS / "prepare.py", "--raw-dir", raw, "--out", out, "--vocab-size", "40",
               *PREPARE_SPLITS, *extra, check=check)


# 1. text input: every script reads through user_dir/text.py

@pytest.mark.parametrize("bad, message", [
    (b"ein hund\nk\xe4se\n", r"valid\.de line 2, column 2: not UTF-8"),
    ("ein\u2028hund\nkatze\n".encode(), r"valid\.de line 1, column 4: line break character U\+2028"),
    ("ein hund\n\u200b\n".encode(), r"valid\.de line 2: empty line"),
])
def test_prepare_refuses_text_that_only_looks_fine(tmp_path, bad, message):
    raw = raw_copy(tmp_path)
    (raw / "valid.de").write_bytes(bad)
    (raw / "valid.en").write_text("a dog\ncheese\n")
    fails_with(prepare(raw, tmp_path / "out", check=False), rf"^error: .*{message}")
    assert not (tmp_path / "out" / "bin").exists()


def test_prepare_normalises_harmless_variants_to_the_same_data(tmp_path):
    """A BOM and CRLF line endings give the very same recorded input fingerprints as clean text."""
    clean, messy = raw_copy(tmp_path, "clean"), raw_copy(tmp_path, "messy")
    for path in messy.iterdir():
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    prepare(clean, tmp_path / "a")
    prepare(messy, tmp_path / "b")
    inputs = [json.loads((tmp_path / o / "prepare.json").read_text())["inputs"] for o in ("a", "b")]
    assert inputs[0] == inputs[1]


def test_evaluate_reads_the_reference_before_decoding(toy_bin, trained, tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_bytes((TOY / "test.tgt").read_bytes().replace(b"one", b"on\xe9", 1))
    proc = run("python", SCRIPTS / "evaluate.py", toy_bin, trained, "--ref", ref, check=False)
    fails_with(proc, rf"error: {ref} line \d+, column \d+: not UTF-8")
    assert "fairseq-generate" not in proc.stderr


# 2. outputs that depend on inputs and options; one writer per folder

@pytest.mark.parametrize("change, differ", [
    (["--vocab-size", "30"], r"they differ: vocab_size\)"),
    (["--src", "en", "--tgt", "de"], r"they differ: src, tgt\)"),
    ("edit", r"they differ: train\.de text(, train\.en text)?\)"),
])
def test_prepare_refuses_an_out_made_from_other_inputs(tmp_path, change, differ):
    raw, out = raw_copy(tmp_path), tmp_path / "out"
    prepare(raw, out)
    model = (out / "spm.model").read_bytes()
    if change == "edit":
        (raw / "train.de").write_text((raw / "train.de").read_text().replace("eins", "zwei"))
        change = []
    proc = prepare(raw, out, *change, check=False)
    fails_with(proc, rf"error: {out} was prepared from other inputs or options \({differ}: .*--overwrite")
    assert (out / "spm.model").read_bytes() == model  # nothing touched
    (out / "ckpt").mkdir()  # a model of the user's, beside the preparation (the README's layout)
    again = prepare(raw, out, *change, "--overwrite").stdout
    assert "skip" not in again and "done" in again and f"kept: ckpt in {out} (not prepare.py's" in again
    assert (out / "ckpt").is_dir()


def test_prepare_refuses_a_folder_in_use_and_one_without_record(tmp_path):
    raw, out = raw_copy(tmp_path), tmp_path / "out"
    lock_folder(str(out), "the test")  # held by this process, as a running prepare.py would
    fails_with(prepare(raw, out, check=False), rf"error: {out} is in use by the test \(pid \d+\)")
    legacy = tmp_path / "legacy"
    (legacy / "bin").mkdir(parents=True)
    fails_with(prepare(raw, legacy, check=False), r"holds bin but no record that prepare\.py made them")


def test_second_training_run_on_one_save_dir_is_refused(toy_bin, tmp_path):
    save = tmp_path / "ckpt"
    cmd = ["fairseq-train", str(toy_bin), "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS,
           "--save-dir", str(save), "--max-update", "100000"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:  # the lock is taken before training starts
            if "Start iterating over samples" in line:
                break
        second = run(*cmd, check=False)
        fails_with(second, rf"FolderBusy: --save-dir {save} is in use by fairseq-train \(pid {first.pid}\)")
    finally:
        first.kill()
        first.wait()
    assert "Saved checkpoint" not in second.stdout + second.stderr  # the refused run wrote nothing


def test_train_sh_on_a_save_dir_in_use_is_refused_before_the_probe_and_the_log(toy_bin, tmp_path):
    """The folder's lock is taken as the plan is made: one line naming the holder, no precision probe
    (its timing would share the CPU with the running training), nothing written to the folder."""
    save, cache = tmp_path / "ckpt", tmp_path / "cache"
    lock_folder(str(save), "the test")  # held by this process, as a running train.sh or fairseq-train would
    proc = run("bash", SCRIPTS / "train.sh", toy_bin, save, *TINY_MODEL, "--max-update", "5", check=False,
               env={"XDG_CACHE_HOME": str(cache), "AMP": ""})
    assert proc.returncode == 2
    assert proc.stderr == f"error: SAVE_DIR {save} is in use by the test (pid {os.getpid()}): wait for it to end, " \
                          "or use another folder\n"
    assert proc.stdout == "" and not cache.exists() and [p.name for p in save.iterdir()] == [".lock"]


def test_evaluate_names_the_exception_not_the_details_indented_under_it(toy_bin, trained, tmp_path):
    """A checkpoint whose config omegaconf rejects: fairseq-generate ends with the exception line,
    then indented details (full_key, object_type); evaluate.py reports the exception line."""
    import torch

    state = torch.load(trained, weights_only=True)
    state["cfg"]["model"]["cell"] = "rnn"
    torch.save(state, tmp_path / "bad.pt")
    proc = run("python", SCRIPTS / "evaluate.py", toy_bin, tmp_path / "bad.pt", "--ref", TOY / "test.tgt", check=False)
    fails_with(proc, r"(^|\n)error: fairseq-generate failed: omegaconf\.errors\.\w+: [^\n]*'rnn'[^\n]*\n$")


# 3. checkpoints know their dictionaries and their pieces

def test_checkpoint_refuses_a_same_size_dictionary_with_other_entries(toy_bin, trained, tmp_path):
    lines = (toy_bin / "dict.src.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]  # same entries and size, two ids swapped
    other = tmp_path / "dict.txt"
    other.write_text("\n".join(lines) + "\n")
    run("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--srcdict", other, "--tgtdict", other,
        "--testpref", TOY / "test", "--destdir", tmp_path / "bin", "--workers", "1")
    proc = run("fairseq-generate", tmp_path / "bin", "--user-dir", USER_DIR, "--path", trained, check=False)
    size = len(lines) + 4
    message = (rf"trained with a source dictionary of {size} entries \(fingerprint [0-9a-f]{{16}}\), "
               rf"but the data's dictionary has {size} \(fingerprint [0-9a-f]{{16}}\)")
    fails_with(proc, message)
    odd = tmp_path / "run:1" / "best.pt"  # fairseq would split the name at ':': evaluate.py links to it
    odd.parent.mkdir()
    shutil.copy(trained, odd)
    scored = run("python", SCRIPTS / "evaluate.py", tmp_path / "bin", odd, "--ref", TOY / "test.tgt", check=False)
    fails_with(scored, rf"(^|\n)error: fairseq-generate failed: DataMismatch: checkpoint {re.escape(str(odd))}: the "
               rf"checkpoint was {message}[^\n]*\n$")  # the file given, not the link



@pytest.mark.parametrize("change, says", [
    ("source_dictionary_fingerprint", "DataMismatch: {member}: the checkpoint was trained with a source dictionary"),
    ("language_direction", r"DataMismatch: {member}: the checkpoint translates tgt-src \(source-target\)"),
    ("encoder.rnn.rnn.bias_hh_l0", "WeightsMismatch: {member}: the checkpoint's weights do not fit the model"),
])
def test_an_ensemble_refusal_names_the_member_that_does_not_fit(toy_bin, trained, tmp_path, change, says):
    """fairseq-generate loads an ensemble's members one after the other: the refusal names the member
    (first or second) made for other data or another model, not just "the checkpoint"."""
    import torch

    from user_dir.dictionaries import direction_record

    state = torch.load(trained, weights_only=True)
    weights = state["model"]
    if change == "language_direction":
        weights[change] = direction_record("tgt", "src")
        state["model"] = dict(weights)  # a plain dict, as average_checkpoints.py writes them
    elif change.endswith("fingerprint"):
        weights[change] = 255 - weights[change]
    else:
        del weights[change]
    other = tmp_path / "other.pt"
    torch.save(state, other)
    for members in ([trained, other], [other, trained]):
        proc = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", ":".join(map(str, members)),
                   check=False)
        fails_with(proc, says.format(member=re.escape(f"checkpoint {other}")))

# 4. scripts: paths from the caller's folder, checked first; one hypothesis per sentence

def test_train_sh_resolves_paths_against_the_callers_folder(toy_bin, tmp_path):
    shutil.copytree(toy_bin, tmp_path / "bin")
    run("bash", SCRIPTS / "train.sh", "bin", "ckpt", *TINY_MODEL, "--max-update", "2", "--no-save",
        "--eval-bleu-remove-bpe", "none", cwd=tmp_path, env={"BUDGET_HOURS": "0.01"})
    assert (tmp_path / "ckpt" / "train.log").exists()
    assert not (ROOT / "ckpt").exists() and not (ROOT / "bin").exists()
    fails_with(run("bash", SCRIPTS / "train.sh", "nowhere", "ckpt", cwd=tmp_path, check=False),
               r"error: DATA_BIN nowhere does not exist")


def test_train_sh_refuses_a_save_dir_inside_the_datas_folders(tmp_path):
    """Checkpoints in DATA_BIN, or in a prepare.py folder's raw/ or spm/, sit in folders that a second
    preparation replaces whole: refused before anything is made; OUT/ckpt beside them is the place."""
    out = tmp_path / "out"
    prepare(raw_copy(tmp_path), out)
    for save, folder in ((out / "bin", out / "bin"), (out / "bin" / "ckpt", out / "bin"),
                         (out / "raw" / "ckpt", out / "raw")):
        proc = run("bash", SCRIPTS / "train.sh", out / "bin", save, check=False)
        assert proc.returncode != 0 and proc.stderr.splitlines()[-1] == (
            f"error: SAVE_DIR {save} is inside {folder}, a folder of the data: give one beside it "
            f"(e.g. {out / 'ckpt'})"), proc.stderr[-2000:]
    assert not (out / "bin" / "ckpt").exists() and not (out / "raw" / "ckpt").exists()


def test_evaluate_scores_the_best_hypothesis_whatever_the_extra_options(toy_bin, trained, tmp_path):
    outs = []
    for name, extra in (("plain", []), ("nbest", ["--", "--nbest", "3", "--unnormalized"])):
        run("python", SCRIPTS / "evaluate.py", toy_bin, trained, "--ref", TOY / "test.tgt",
            "--hyp-out", tmp_path / f"{name}.hyp", *extra)
        outs.append((tmp_path / f"{name}.hyp").read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 203


@pytest.mark.parametrize("args, message", [
    (["--hyp-out", "/nonexistent-folder/x.hyp"], r"cannot write /nonexistent-folder/x\.hyp"),
    (["--json", "."], r"cannot write \.: it is a folder"),
    (["--ref", TOY / "valid.tgt"], r"has 100 lines but the source has 203 sentences"),
    (["--", "--quiet"], r"--quiet after -- would contradict .*: it hides the hypotheses from evaluate\.py"),
    (["--", "--results-path=/tmp/x"], r"--results-path after -- would contradict .*: it hides the hypotheses"),
])
def test_evaluate_checks_everything_before_decoding(toy_bin, trained, args, message):
    base = ["--ref", TOY / "test.tgt"] if "--ref" not in args else []
    proc = run("python", SCRIPTS / "evaluate.py", toy_bin, trained, *base, *args, check=False)
    fails_with(proc, message)
