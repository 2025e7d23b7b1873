"""prepare.py as a new user meets it: sides that are one file, leftovers of an interrupted run
(only its own are removed), the record checked before it is trusted, one line per mistake."""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, run
from user_dir.prepared import prepared_record, verified_raw

PREPARE = ROOT / "scripts" / "prepare.py"


def prepare(*args, check=True, env=None):
    return run("python", PREPARE, "--src", "de", "--tgt", "en", "--vocab-size", "40", *args, check=check, env=env)


def fails_with(proc: subprocess.CompletedProcess, message: str) -> None:
    """Non-zero exit, and the last line of stderr is one ``error:`` line holding ``message``."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(("error:", "prepare.py: error:")) and message in last, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A toy corpus as raw/{train,valid,test}.{de,en}."""
    folder = tmp_path_factory.mktemp("raw")
    run("python", ROOT / "scripts" / "make_toy_data.py", folder, "--train", "300", "--valid", "20", "--test", "20",
        "--seed", "3")
    for path in folder.iterdir():
        path.rename(folder / path.name.replace(".src", ".de").replace(".tgt", ".en"))
    return folder


def splits(raw: Path) -> list:
    return ["--raw-dir", raw, "--splits", "train=train", "valid=valid", "test=test"]


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "out"
    prepare(*splits(raw), "--out", out)
    return out


# A. the two sides of a corpus are two files of different text

@pytest.mark.parametrize("how, message", [
    ("symlink", "are the same file"), ("hardlink", "are the same file"), ("copy", "hold the same text"),
])
def test_a_corpus_whose_two_sides_are_one_file_is_refused(raw, tmp_path, how, message):
    (tmp_path / "c.de").write_text((raw / "train.de").read_text())
    {"symlink": os.symlink, "hardlink": os.link, "copy": shutil.copyfile}[how](tmp_path / "c.de", tmp_path / "c.en")
    fails_with(prepare("--corpus", tmp_path / "c", "--out", tmp_path / "out", check=False), message)
    assert not (tmp_path / "out" / "bin").exists()


@pytest.mark.parametrize("line, message", [
    ("\ufffd", "line 3: nothing is left of '\ufffd' once sentencepiece normalises it (U+FFFD: the text was decoded"),
    ("\u2581 \u2581", "line 3: nothing is left of '\u2581 \u2581' once sentencepiece normalises it: remove or mend"),
    ("\ufffd \ufffd", "line 3: nothing is left of '\ufffd \ufffd'"),
])
def test_a_line_empty_to_the_model_is_refused_and_nothing_is_written(raw, tmp_path, line, message):
    """Blank lines are refused when read (user_dir/text.py); these pass that check and vanish in
    sentencepiece's normalisation. A refused input leaves no trace in OUT (not even its lock)."""
    lines = (raw / "train.de").read_text().splitlines()
    (tmp_path / "c.de").write_text("\n".join(lines[:2] + [line] + lines[3:]) + "\n")
    shutil.copyfile(raw / "train.en", tmp_path / "c.en")
    fails_with(prepare("--corpus", tmp_path / "c", "--out", tmp_path / "out", check=False), message)
    assert not (tmp_path / "out").exists()


def test_training_pairs_that_are_also_held_out_leave_train_and_a_split_given_twice_is_refused(raw, tmp_path):
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            lines = (raw / f"{split}.{lang}").read_text().splitlines()
            if split == "valid":  # 5 validation pairs that are training pairs, one with other white space
                lines[:5] = (raw / f"train.{lang}").read_text().splitlines()[10:15]
                lines[0] = " " + lines[0] + "  "
            (tmp_path / f"{split}.{lang}").write_text("\n".join(lines) + "\n")
    given = ["--train", tmp_path / "train", "--valid", tmp_path / "valid", "--test", tmp_path / "test"]
    out = prepare(*given, "--out", tmp_path / "out").stdout
    assert "5 training pairs that are also validation or test pairs (the same once normalised) left out of " \
           "train" in out and "train: 295 sentence pairs" in out
    fails_with(prepare("--train", tmp_path / "train", "--valid", tmp_path / "train", "--out", tmp_path / "twice",
                       check=False), "error: every training pair is also a validation or test pair")
    assert not (tmp_path / "twice").exists()


# B. never delete what the script did not make

KILLED_PREPROCESS = '#!/bin/sh\nwhile [ "$1" != --destdir ]; do shift; done\necho half > "$2/half.bin"\nkill -9 $PPID\n'


def test_only_the_scripts_own_leftovers_are_removed_after_an_interrupted_run(raw, tmp_path):
    """A preparation killed while binarizing leaves its recorded temporary folder; the next run
    removes it, and not the user's files whose names look like the script's temporaries."""
    out, fake = tmp_path / "out", tmp_path / "fake"
    fake.mkdir()
    (fake / "fairseq-preprocess").write_text(KILLED_PREPROCESS)
    (fake / "fairseq-preprocess").chmod(0o755)
    killed = prepare(*splits(raw), "--out", out, env={"PATH": f"{fake}:{os.environ['PATH']}"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p for p in out.glob(".bin.*.tmp") if (p / "half.bin").exists()]
    assert len(leftovers) == 1 and json.dumps(leftovers[0].name) in (out / ".lock").read_text()
    users = [out / ".bin.mine.tmp", out / "raw" / ".train.de.notes.tmp", out / ".notes.tmp"]
    users[0].mkdir()
    for path in users[1:]:
        path.write_text("keep me\n")
    log = prepare(*splits(raw), "--out", out).stdout
    assert "continue: " in log and (out / "prepare.json").is_file()
    assert not leftovers[0].exists() and all(path.exists() for path in users)
    assert (out / "raw" / ".train.de.notes.tmp").read_text() == "keep me\n"


def test_outputs_without_a_record_are_never_deleted_even_with_overwrite(raw, tmp_path):
    out = tmp_path / "out"
    (out / "bin").mkdir(parents=True)
    (out / "bin" / "mine.txt").write_text("keep me\n")
    fails_with(prepare(*splits(raw), "--out", out, "--overwrite", check=False),
               "holds bin but no record that prepare.py made them (prepare.json): use another --out, or remove")
    assert (out / "bin" / "mine.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("change", [[], ["--vocab-size", "41"]])
def test_a_redo_never_deletes_what_prepare_py_did_not_make_inside_its_folders(raw, prepared, tmp_path, change):
    """raw/, spm/ and bin/ are replaced whole: a checkpoint saved into bin/, a folder there or notes in
    spm/ are named and the redo refused (same inputs or others); moved beside them, they are kept."""
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    mine = {out / "bin" / "checkpoint_best.pt": b"model", out / "bin" / "ckpt" / "checkpoint_last.pt": b"last",
            out / "spm" / "NOTES.txt": b"notes", out / "raw" / "newstest.de": b"a test set named as a split is\n"}
    for path, data in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    fails_with(prepare(*splits(raw), "--out", out, *change, "--overwrite", check=False),
               f"error: {out} holds raw/newstest.de, spm/NOTES.txt, bin/checkpoint_best.pt, bin/ckpt, which prepare.py "
               "did not "
               "make, in the folders a redo replaces whole (raw, spm, bin): move them out first")
    assert all(path.read_bytes() == data for path, data in mine.items())
    shutil.move(out / "bin" / "ckpt", out / "ckpt")
    for path in (out / "bin" / "checkpoint_best.pt", out / "spm" / "NOTES.txt", out / "raw" / "newstest.de"):
        path.unlink()
    redone = prepare(*splits(raw), "--out", out, *change, "--overwrite").stdout
    assert f"kept: ckpt in {out}" in redone and (out / "ckpt" / "checkpoint_last.pt").read_bytes() == b"last"
    assert verified_raw(prepared_record(out / "bin"), "test", "tgt") == out / "raw" / "test.en"


def test_overwrite_redoes_a_preparation_of_the_same_inputs(raw, prepared, tmp_path):
    """Without it the same inputs are kept ("skip"), even with a damaged split in bin/; with it, redone."""
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    damaged = next((out / "bin").glob("train.*.en.bin"))
    damaged.write_bytes(damaged.read_bytes()[:10])
    assert "redo: " not in prepare(*splits(raw), "--out", out).stdout and damaged.stat().st_size == 10
    assert f"redo: {out} (--overwrite)" in prepare(*splits(raw), "--out", out, "--overwrite").stdout
    assert damaged.stat().st_size == (prepared / "bin" / damaged.name).stat().st_size


def test_an_overwrite_stopped_while_it_removes_is_redone_by_the_next_run(raw, prepared, tmp_path, monkeypatch):
    """The removal of older outputs is recorded before it starts and prepare.json goes first: one
    stopped half-way is never read as finished, and the next run redoes it, whatever its options."""
    from user_dir import prepared as record
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    made, removed = json.loads((out / "prepare.json").read_text()), []

    def discard(path: Path) -> None:
        if len(removed) == 2:
            raise KeyboardInterrupt
        removed.append(path.name)
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    monkeypatch.setattr(record, "discard", discard)
    with pytest.raises(KeyboardInterrupt):
        record.begin(out, {**made, "vocab_size": 41}, made)
    assert removed == ["prepare.json", "raw"] and (out / "bin").is_dir()
    with pytest.raises(SystemExit, match="did not finish"):
        prepared_record(out / "bin")
    assert "redo: " in prepare(*splits(raw), "--out", out).stdout
    assert verified_raw(prepared_record(out / "bin"), "test", "tgt") == out / "raw" / "test.en"


def test_an_unreadable_record_gets_one_line_that_says_what_works(raw, prepared, tmp_path):
    """train.sh, evaluate.py and prepare.py say the same, and prepare.py deletes nothing it cannot
    know to be its own, even with --overwrite."""
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    (out / "prepare.json").write_text('{"src": "de",')
    line = (rf"^error: {re.escape(str(out))}/prepare\.json cannot be trusted: it cannot be read \(.*\); prepare\.py "
            rf"cannot tell what it made there: remove {re.escape(str(out))} yourself and prepare it again, or ")
    with pytest.raises(SystemExit, match=line + "give the data without it$"):
        prepared_record(out / "bin")
    proc = prepare(*splits(raw), "--out", out, "--overwrite", check=False)
    assert proc.returncode == 1 and re.match(line + "use another --out$", proc.stderr.strip()), proc.stderr[-3000:]
    assert (out / "bin").is_dir() and (out / "raw" / "test.en").is_file()


# E. the record is checked before it is trusted

def edit_record(out: Path, change) -> None:
    record = json.loads((out / "prepare.json").read_text())
    change(record)
    (out / "prepare.json").write_text(json.dumps(record))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["raw"]["test"].update(en="../../x.en"), r"the path '../../x.en' of split 'test' is not a file inside"),
    (lambda r: r["raw"]["test"].update(en="/etc/hostname"), r"the path '/etc/hostname' of split 'test' is not a file"),
    (lambda r: r.update(vocab_size="40"), r"'vocab_size' is missing or not a int"),
    (lambda r: r.pop("pairs"), r"'pairs' is missing"),
    (lambda r: r.pop("raw_sha256"), r"'raw_sha256' is missing or not a dict"),
    (lambda r: r.update(src="en", tgt="de"), r"it says en->de, but .*bin holds de->en"),
    (lambda r: r.update(src="d.e"), r"'src' 'd.e' and 'tgt' 'en' are not two language codes"),
    (lambda r: r["pairs"].update(extra=3), r"its split 'extra' is not in"),
    ("dictionary", r"dict\.en\.txt is not the dictionary prepare\.py made"),
])  # an unreadable record: test_an_unreadable_record_gets_one_line_that_says_what_works
def test_a_record_that_contradicts_itself_or_its_data_is_refused(prepared, tmp_path, change, message):
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    if change == "dictionary":
        with open(out / "bin" / "dict.en.txt", "a") as f:
            f.write("extra 1\n")
    else:
        edit_record(out, change)
    with pytest.raises(SystemExit, match=rf"^error: {out}/prepare\.json cannot be trusted: .*{message}.*--overwrite"):
        prepared_record(out / "bin")


def test_a_raw_file_is_used_only_as_it_was_recorded(prepared, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    record = prepared_record(out / "bin")
    assert verified_raw(record, "test", "tgt") == out / "raw" / "test.en"
    assert verified_raw(record, "valid", "src") == out / "raw" / "valid.de"
    with pytest.raises(SystemExit, match=r"names no raw text of split 'dev' \(it has train, valid, test\)"):
        verified_raw(record, "dev", "tgt")
    (out / "raw" / "test.en").write_text((out / "raw" / "test.en").read_text() + "one more line\n")
    with pytest.raises(SystemExit, match=r"test\.en was changed after prepare\.py wrote it"):
        verified_raw(record, "test", "tgt")
    (out / "raw" / "test.en").unlink()
    with pytest.raises(SystemExit, match=r"test\.en does not exist"):
        verified_raw(record, "test", "tgt")
    # a record of an older prepare.py: read, but its raw files are not trusted until it is updated
    edit_record(out, lambda r: [r.pop(k) for k in ("format", "outputs", "raw_sha256", "dictionaries")])
    with pytest.raises(SystemExit, match=r"records no SHA-256 of raw/test\.en \(an older prepare\.py wrote it\)"):
        verified_raw(prepared_record(out / "bin"), "test", "tgt")


def test_an_older_record_is_updated_by_running_the_same_command(raw, prepared, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    edit_record(out, lambda r: [r.pop(k) for k in ("format", "outputs", "raw_sha256", "dictionaries")])
    stamp = (out / "bin" / "dict.de.txt").stat().st_mtime_ns
    assert "update: " in prepare(*splits(raw), "--out", out).stdout
    assert verified_raw(prepared_record(out / "bin"), "test", "tgt") == out / "raw" / "test.en"
    assert (out / "bin" / "dict.de.txt").stat().st_mtime_ns == stamp  # nothing redone


def test_an_unfinished_preparation_says_how_to_go_on(prepared, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    (out / "prepare.json").rename(out / ".prepare-pending.json")
    with pytest.raises(SystemExit, match=rf"^error: {out} is a preparation that did not finish .*run the same "
                                         rf"prepare\.py command again to finish it, or remove {out}$"):
        prepared_record(out / "bin")


# H. one line per mistake

@pytest.mark.parametrize("code", ["de-x", "a.b", "", "x y", "a/b"])
def test_a_language_code_that_fairseq_file_names_cannot_hold_is_refused(raw, tmp_path, code):
    fails_with(prepare(*splits(raw), "--out", tmp_path / "out", "--tgt", code, check=False),
               f"argument --tgt: {code!r} is not a language code")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:40], "cannot be read"),  # truncated
    (lambda data: data[:20] + bytes(b ^ 0x55 for b in data[20:60]) + data[60:], "cannot be read"),  # bad data
    (lambda data: b"not gzip at all\n", "cannot be read"),
])
def test_a_damaged_gzip_is_one_line(raw, tmp_path, damage, message):
    folder = tmp_path / "r"
    shutil.copytree(raw, folder)
    data = gzip.compress((folder / "train.en").read_bytes())
    (folder / "train.en").unlink()
    (folder / "train.en.gz").write_bytes(damage(data))
    fails_with(prepare(*splits(folder), "--out", tmp_path / "out", check=False), f"train.en.gz: {message}")


def test_an_out_that_is_a_file_or_read_only_is_one_line(raw, tmp_path):
    (tmp_path / "file").write_text("x\n")
    fails_with(prepare(*splits(raw), "--out", tmp_path / "file", check=False),
               f"--out: cannot write in {tmp_path / 'file'}: it is not a folder: choose another folder")
    assert (tmp_path / "file").read_text() == "x\n"
    fails_with(prepare(*splits(raw), "--out", tmp_path / "file" / "sub", check=False), "cannot write in")
    if os.path.isdir("/sys/kernel"):  # where nobody, root neither, may make a folder
        fails_with(prepare(*splits(raw), "--out", "/sys/kernel/prep", check=False), "cannot write in /sys/kernel/prep")


def test_a_vocabulary_sentencepiece_refuses_names_the_option_and_a_smaller_one_is_said(raw, tmp_path):
    fails_with(prepare(*splits(raw), "--out", tmp_path / "out", "--vocab-size", "8", check=False),
               "--vocab-size 8 is smaller than the")
    proc = prepare(*splits(raw), "--out", tmp_path / "out", "--vocab-size", "8", check=False)
    assert "is unfinished: run the same command again to continue it, or remove" in proc.stderr.splitlines()[-1]
    out = prepare(*splits(raw), "--out", tmp_path / "big", "--vocab-size", "4000").stdout
    assert re.search(r"sentencepiece made (\d+) pieces, fewer than --vocab-size 4000: the training text holds no more",
                     out), out


def test_spm_refusals_name_the_option():
    from scripts.prepare import spm_refusal

    high = RuntimeError("Internal: src/trainer_interface.cc(661) Vocabulary size too high (5000). "
                        "Please set it to a value <= 1234.")
    assert spm_refusal(high, 5000) == ("--vocab-size 5000 is more pieces than sentencepiece can make of the "
                                       "training text: use --vocab-size 1234 or less")
    assert "could not train" in spm_refusal(RuntimeError("something else"), 10)


SLOW_PREPROCESS = '#!/bin/sh\ntouch "$MARK"\nexec sleep 60\n'


def test_ctrl_c_is_one_line_exit_130_and_nothing_looks_complete(raw, tmp_path):
    out, fake, mark = tmp_path / "out", tmp_path / "fake", tmp_path / "started"
    fake.mkdir()
    (fake / "fairseq-preprocess").write_text(SLOW_PREPROCESS)
    (fake / "fairseq-preprocess").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "MARK": str(mark)}
    cmd = ["python", str(PREPARE), "--src", "de", "--tgt", "en", "--vocab-size", "40", *map(str, splits(raw)),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == [f"error: prepare.py interrupted (Ctrl-C); {out} is unfinished: run the "
                                           f"same command again to continue it, or remove {out}"]
    assert not (out / "prepare.json").exists() and not (out / "bin").exists() and not list(out.glob(".bin.*"))
    with pytest.raises(SystemExit, match="did not finish"):
        prepared_record(out / "bin")
    assert "continue: " in prepare(*splits(raw), "--out", out).stdout
    assert prepared_record(out / "bin")["pairs"] == {"train": 300, "valid": 20, "test": 20}


def test_a_corpus_named_by_its_file_is_told_to_give_the_prefix(raw, tmp_path):
    proc = prepare("--corpus", raw / "train.de", "--out", tmp_path / "out", check=False)
    fails_with(proc, f"error: no {raw}/train.de.de[.gz] ({raw}/train.de is a file: give the prefix, without the "
                     "language)")
    assert not (tmp_path / "out").exists()
