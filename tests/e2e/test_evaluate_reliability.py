"""evaluate.py, distill.py, average_checkpoints.py and the Python API through the real CLIs, round 4:
the recorded reference is the one prepare.py wrote (E), a checkpoint is used only in its direction
on every path (F), messages name what is actually wrong (I), and every user mistake is one
``error:`` line with a non-zero exit, Ctrl-C included (H)."""
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary

from helpers import ROOT, TINY_MODEL, TOY, TRAIN_ARGS, USER_DIR, run
from user_dir.data_folder import binarized, language_pairs
from user_dir.dictionaries import DIRECTION_KEY, direction_record

SCRIPTS = ROOT / "scripts"
REVERSED = r"the checkpoint translates src-tgt \(source-target\), but the data is read as tgt-src"


def one_error_line(proc: subprocess.CompletedProcess, pattern: str) -> None:
    """A non-zero exit whose whole stderr is one ``error:`` line matching ``pattern``."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]


def evaluate(*args, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, SCRIPTS / "evaluate.py", *args, check=False, **kwargs)


@pytest.fixture(scope="module")
def reversed_bin(toy_bin, tmp_path_factory) -> Path:
    """The toy data binarized tgt->src with toy_bin's joined dictionary: the fingerprints of a
    src->tgt checkpoint match it, only the direction differs."""
    dest = tmp_path_factory.mktemp("reversed") / "bin"
    run("fairseq-preprocess", "--source-lang", "tgt", "--target-lang", "src", "--srcdict", toy_bin / "dict.tgt.txt",
        "--tgtdict", toy_bin / "dict.src.txt", "--trainpref", TOY / "train", "--testpref", TOY / "test",
        "--destdir", dest, "--workers", "1")
    return dest


def model_dir(folder: Path, data_bin: Path, checkpoint: Path) -> Path:
    """A from_pretrained folder: bin/ and ckpt/checkpoint_best.pt."""
    shutil.copytree(data_bin, folder / "bin")
    (folder / "ckpt").mkdir()
    shutil.copy(checkpoint, folder / "ckpt" / "checkpoint_best.pt")
    return folder


# F. a checkpoint is decoded and scored only in its own direction, whatever path loads it

@pytest.mark.parametrize("path", ["fairseq-generate", "evaluate.py", "distill.py"])
def test_the_other_direction_is_refused_where_asked_for_on_every_cli_path(reversed_bin, trained, tmp_path, path):
    """fairseq-generate reads the direction from the file names; the scripts take the checkpoint's,
    and refuse -s/-t asking for the other one."""
    cmd = {"fairseq-generate": ["fairseq-generate", reversed_bin, "--user-dir", USER_DIR, "--path", trained,
                                "--gen-subset", "test", "--beam", "2"],
           "evaluate.py": [sys.executable, SCRIPTS / "evaluate.py", reversed_bin, trained, "--ref", TOY / "test.src",
                           "-s", "tgt", "-t", "src"],
           "distill.py": [sys.executable, SCRIPTS / "distill.py", reversed_bin, trained, tmp_path / "kd", "-s", "tgt",
                          "-t", "src"]}[path]
    proc = run(*cmd, check=False)
    assert proc.returncode != 0 and not (tmp_path / "kd").exists()
    if path == "fairseq-generate":
        assert re.search(REVERSED, proc.stderr), proc.stderr[-3000:]
    else:
        one_error_line(proc, r"-s/-t ask for tgt->src, but the checkpoint translates src->tgt")


def split_files(folder: Path, split: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob(f"{split}.*")}


def bleu_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()[0]


def test_the_scripts_decode_in_the_checkpoints_direction_whatever_the_file_names_say(toy_bin, reversed_bin,
                                                                                      trained, tmp_path):
    """A model trained with -s/-t against the order of the file names (train.sh -s en -t de on a de-en
    folder) is scored and distilled in its own direction, as fairseq-train read it: files of tgt-src
    serve src->tgt too. A reference of the other side is named with the direction scored, and so is a
    fairseq-generate output of a direction other than the one assumed."""
    scored = evaluate(reversed_bin, trained, "--ref", TOY / "test.tgt", "--json", tmp_path / "s.json")
    assert bleu_line(scored) == bleu_line(evaluate(toy_bin, trained, "--ref", TOY / "test.tgt"))
    assert json.loads((tmp_path / "s.json").read_text())["direction"] == "src-tgt"
    one_error_line(evaluate(reversed_bin, trained, "--ref", TOY / "test.src"),
                   rf"does not match split 'test' of {re.escape(str(reversed_bin))} \(src->tgt: its tgt side\)")
    proc = run(sys.executable, SCRIPTS / "distill.py", reversed_bin, trained, tmp_path / "kd")
    assert json.loads((tmp_path / "kd" / "distill.json").read_text())["direction"] == "src-tgt"
    assert "named src-tgt: students train src->tgt there" in proc.stdout
    assert language_pairs(tmp_path / "kd" / "bin") == [("src", "tgt")]  # the teacher's direction: a student's too
    both = shutil.copytree(reversed_bin, tmp_path / "both")  # 'test' named both ways, fairseq reads test.src-tgt
    for path in toy_bin.glob("valid.*"):  # other sentences as test.tgt-src
        shutil.copy(path, both / path.name.replace("valid.src-tgt", "test.tgt-src"))
    for path in toy_bin.glob("test.*"):
        shutil.copy(path, both / path.name)
    run(sys.executable, SCRIPTS / "distill.py", both, trained, tmp_path / "kd2", "--beam", "1")
    assert split_files(tmp_path / "kd2" / "bin", "test") == split_files(toy_bin, "test")
    teacher = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--gen-subset", "train",
                  "--beam", "5", "--max-tokens", "8000").stdout.splitlines()
    hyps = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in teacher if line.startswith("H-")}
    dictionary = Dictionary.load(str(toy_bin / "dict.tgt.txt"))
    targets = binarized(tmp_path / "kd" / "bin", "train", 1, ("src", "tgt"), dictionary)
    assert [dictionary.string(targets[i]) for i in range(len(targets))] == [hyps[i] for i in sorted(hyps)]
    log = tmp_path / "generate.log"
    log.write_text(run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--gen-subset",
                       "test", "--beam", "2").stdout)
    one_error_line(evaluate(reversed_bin, "--generate-log", log, "--ref", TOY / "test.tgt"),
                   rf"the T- lines of .*generate\.log are not the targets of split 'test' of "
                   rf"{re.escape(str(reversed_bin))} \(tgt->src: its src side\): 0 of 203 .* give its -s/-t")
    assert "sentences = 203" in evaluate(reversed_bin, "--generate-log", log, "--ref", TOY / "test.tgt", "-s", "src",
                                         "-t", "tgt", "--json", tmp_path / "g.json").stdout
    assert json.loads((tmp_path / "g.json").read_text())["direction"] == "src-tgt"


def with_direction(trained: Path, path: Path, direction: tuple | None) -> Path:
    """A copy of TRAINED recording DIRECTION (None: none, as checkpoints of fairseq's own models)."""
    state = torch.load(trained, map_location="cpu", weights_only=False)
    state["model"][DIRECTION_KEY] = direction_record(*direction) if direction else torch.zeros(0)
    torch.save(state, path)
    return path


def test_an_ensemble_of_two_directions_is_refused_and_a_checkpoint_without_one_reads_the_folders_pair(
        toy_bin, reversed_bin, trained, tmp_path):
    other = with_direction(trained, tmp_path / "other.pt", ("tgt", "src"))
    for script in ("evaluate.py", "distill.py"):
        out = ["--ref", TOY / "test.tgt"] if script == "evaluate.py" else [tmp_path / "kd"]
        one_error_line(run(sys.executable, SCRIPTS / script, toy_bin, f"{trained}:{other}", *out, check=False),
                       r"checkpoint .*other\.pt translates tgt->src but .*checkpoint_best\.pt src->tgt: an ensemble "
                       "decodes one direction")
    unrecorded = with_direction(trained, tmp_path / "none.pt", None)  # decoded as its folder's pair says
    assert bleu_line(evaluate(toy_bin, unrecorded, "--ref", TOY / "test.tgt")) == \
        bleu_line(evaluate(toy_bin, trained, "--ref", TOY / "test.tgt"))
    bleu_line(evaluate(reversed_bin, unrecorded, "--ref", TOY / "test.src", "--json", tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["direction"] == "tgt-src"


def test_the_other_direction_is_refused_by_from_pretrained(toy_bin, reversed_bin, trained, tmp_path):
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    good = RNNSeq2SeqModel.from_pretrained(str(model_dir(tmp_path / "good", toy_bin, trained)))
    assert len(good.translate(["eins zwei"], beam=2)) == 1
    with pytest.raises(ValueError, match=REVERSED):
        RNNSeq2SeqModel.from_pretrained(str(model_dir(tmp_path / "reversed", reversed_bin, trained)))


def test_a_checkpoint_records_its_direction_and_averaging_refuses_a_mix(trained, tmp_path):
    from user_dir.dictionaries import DIRECTION_KEY, as_direction, direction_record

    state = torch.load(trained, map_location="cpu", weights_only=False)
    assert as_direction(state["model"][DIRECTION_KEY]) == "src-tgt"
    state["model"][DIRECTION_KEY] = direction_record("tgt", "src")
    torch.save(state, tmp_path / "other.pt")
    proc = run(sys.executable, SCRIPTS / "average_checkpoints.py", "--inputs", trained, tmp_path / "other.pt",
               "--out", tmp_path / "avg.pt", check=False)
    one_error_line(proc, r"other\.pt translates tgt-src but .*checkpoint_best\.pt src-tgt")
    assert not (tmp_path / "avg.pt").exists()


def test_averaging_refuses_checkpoints_of_runs_with_other_seeds(trained, tmp_path):
    """Same shapes, data and direction, another run: no model to average into; an ensemble instead."""
    state = torch.load(trained, map_location="cpu", weights_only=False)
    state["cfg"]["common"]["seed"] = 2
    torch.save(state, tmp_path / "seed2.pt")
    proc = run(sys.executable, SCRIPTS / "average_checkpoints.py", "--inputs", trained, tmp_path / "seed2.pt",
               "--out", tmp_path / "avg.pt", check=False)
    one_error_line(proc, r"seed2\.pt was trained with --seed 2 but .*checkpoint_best\.pt with --seed 1: "
                         r"checkpoints of two runs .* as an ensemble instead: .*checkpoint_best\.pt:.*seed2\.pt$")
    assert not (tmp_path / "avg.pt").exists()


def test_averaging_takes_epoch_checkpoints_saved_before_the_direction_was_recorded(trained, tmp_path):
    """A run resumed across that change: its oldest epoch checkpoint holds no direction. --last
    averages it with the newer ones (the output holds theirs: loading it is checked), and a mix of
    directions among the others is still refused."""
    from user_dir.dictionaries import DIRECTION_KEY, as_direction, direction_record

    state = torch.load(trained, map_location="cpu", weights_only=False)
    del state["model"][DIRECTION_KEY]
    torch.save(state, tmp_path / "checkpoint1.pt")
    for epoch in (2, 3):
        shutil.copy(trained, tmp_path / f"checkpoint{epoch}.pt")
    run(sys.executable, SCRIPTS / "average_checkpoints.py", tmp_path, "--last", "3")
    assert as_direction(torch.load(tmp_path / "checkpoint_avg3.pt", map_location="cpu")["model"][DIRECTION_KEY]) == \
        "src-tgt"
    state["model"][DIRECTION_KEY] = direction_record("tgt", "src")
    torch.save(state, tmp_path / "checkpoint3.pt")
    proc = run(sys.executable, SCRIPTS / "average_checkpoints.py", tmp_path, "--last", "3", "--out",
               tmp_path / "mix.pt", check=False)
    one_error_line(proc, r"checkpoint3\.pt translates tgt-src but .*checkpoint2\.pt src-tgt")
    assert not (tmp_path / "mix.pt").exists()


# E. without --ref the reference is prepare.py's raw text, checked against its recorded SHA-256

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A small prepare.py output and a checkpoint of 2 updates on it (OUT/ckpt/checkpoint_best.pt)."""
    raw, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("prepared")
    run(sys.executable, SCRIPTS / "make_toy_data.py", raw, "--train", "300", "--valid", "20", "--test", "25",
        "--seed", "3")
    run(sys.executable, SCRIPTS / "prepare.py", "--raw-dir", raw, "--src", "src", "--tgt", "tgt", "--vocab-size", "60",
        "--splits", "train=train", "valid=valid", "test=test", "--out", out)
    run("fairseq-train", out / "bin", "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--max-update", "2",
        "--save-dir", out / "ckpt", "--no-epoch-checkpoints")
    return out


def copy_of(prepared: Path, folder: Path) -> Path:
    shutil.copytree(prepared, folder, symlinks=True)
    return folder


def test_evaluate_names_the_reference_it_scored_and_its_hash(prepared, tmp_path):
    out = copy_of(prepared, tmp_path / "out")
    proc = evaluate(out / "bin", out / "ckpt" / "checkpoint_best.pt", "--beam", "1", "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "s.json").read_text())
    reference = out / "raw" / "test.tgt"
    assert result["reference"] == os.path.abspath(reference)
    assert result["reference_sha256"] == hashlib.sha256(reference.read_bytes()).hexdigest()
    given = tmp_path / "given.tgt"
    shutil.copy(reference, given)
    proc = evaluate(out / "bin", out / "ckpt" / "checkpoint_best.pt", "--beam", "1", "--ref", given,
                    "--post-process", "sentencepiece", "--json", tmp_path / "g.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "g.json").read_text())["reference"] == os.path.abspath(given)


def _edit_record(out: Path, change) -> None:
    record = json.loads((out / "prepare.json").read_text())
    change(record)
    (out / "prepare.json").write_text(json.dumps(record))


BREAKS = {  # what is done to a copy of the preparation -> what the one error line must say
    "reference edited": (lambda out: (out / "raw" / "test.tgt").write_text(
        (out / "raw" / "test.tgt").read_text().replace("one", "eno", 1)), r"raw/test\.tgt was changed after"),
    "reference replaced": (lambda out: shutil.copy(out / "raw" / "valid.tgt", out / "raw" / "test.tgt"),
                           r"raw/test\.tgt was changed after"),
    "path leaves OUT": (lambda out: _edit_record(out, lambda r: r["raw"]["test"].update(tgt="../../test.tgt")),
                        r"'\.\./\.\./test\.tgt'.*(inside|out of)"),
    "absolute path": (lambda out: _edit_record(out, lambda r: r["raw"]["test"].update(tgt="/etc/hostname")),
                      r"'/etc/hostname'.*(inside|out of)"),
    "corrupt record": (lambda out: (out / "prepare.json").write_text('{"src": "src", '), r"prepare\.json"),
    "record removed": (lambda out: (out / "prepare.json").unlink(), r"prepare\.json does not exist"),
    "raw folder removed": (lambda out: shutil.rmtree(out / "raw"), r"raw/test\.tgt does not exist"),
    "no test split": (lambda out: [p.unlink() for p in (out / "bin").glob("test.*")],
                      r"holds no split 'test' .*it holds: train, valid"),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_evaluate_without_ref_names_what_is_wrong_with_the_recorded_reference(prepared, tmp_path, case):
    out = copy_of(prepared, tmp_path / "out")
    BREAKS[case][0](out)
    proc = evaluate(out / "bin", out / "ckpt" / "checkpoint_best.pt", "--json", tmp_path / "s.json")
    one_error_line(proc, BREAKS[case][1])
    assert "--ref is required" not in proc.stderr and not (tmp_path / "s.json").exists()


def test_evaluate_without_ref_scores_a_model_of_the_other_direction_against_its_target_languages_text(tmp_path):
    """prepare.py keeps both sides' raw text: a model trained -s en -t de on de-en is scored against test.de."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    run(sys.executable, SCRIPTS / "make_toy_data.py", raw, "--train", "300", "--valid", "20", "--test", "25")
    for path in raw.iterdir():
        path.rename(raw / path.name.replace(".src", ".de").replace(".tgt", ".en"))
    run(sys.executable, SCRIPTS / "prepare.py", "--raw-dir", raw, "--src", "de", "--tgt", "en", "--vocab-size", "60",
        "--splits", "train=train", "valid=valid", "test=test", "--out", out)
    run("fairseq-train", out / "bin", "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--max-update", "2",
        "-s", "en", "-t", "de", "--save-dir", out / "back", "--no-epoch-checkpoints")
    proc = evaluate(out / "bin", out / "back" / "checkpoint_best.pt", "--beam", "1", "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "s.json").read_text())
    assert (result["direction"], result["reference"]) == ("en-de", os.path.abspath(out / "raw" / "test.de"))


def test_a_folder_of_several_pairs_is_decoded_in_the_checkpoints_pair_or_the_one_s_t_name(toy_bin, trained, tmp_path):
    """fairseq would take whichever pair it lists first: without a direction from the checkpoint or
    -s/-t, the scripts refuse; with one, they read (and distil) that pair's files only."""
    both = tmp_path / "both"
    shutil.copytree(toy_bin, both)
    for path in toy_bin.iterdir():  # the same data again as fr->tgt
        shutil.copy(path, both / path.name.replace("src", "fr"))
    for given in ([], ["-t", "tgt"]):  # -t alone: the checkpoint's direction completes it
        scored = evaluate(both, trained, "--ref", TOY / "test.tgt", "--beam", "2", *given)
        assert scored.returncode == 0 and "sentences = 203" in scored.stdout, scored.stderr[-3000:]
    one_error_line(evaluate(both, with_direction(trained, tmp_path / "none.pt", None), "--ref", TOY / "test.tgt"),
                   r"holds several language pairs \(fr-tgt, src-tgt\)")
    run(sys.executable, SCRIPTS / "distill.py", both, trained, tmp_path / "kd", "--beam", "1")
    assert language_pairs(tmp_path / "kd" / "bin") == [("src", "tgt")]  # fr-tgt's splits are not copied half
    log = tmp_path / "generate.log"
    log.write_text(run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--gen-subset",
                       "test", "--beam", "2").stdout)
    one_error_line(evaluate(both, "--generate-log", log, "--ref", TOY / "test.tgt"),
                   r"holds several language pairs \(fr-tgt, src-tgt\) .*: give -s SRC -t TGT")
    one_error_line(evaluate(both, "--generate-log", log, "--ref", TOY / "test.tgt", "-t", "tgt"),
                   r"holds several pairs for \?->tgt \(fr-tgt, src-tgt\): give both -s and -t")
    assert "sentences = 203" in evaluate(both, "--generate-log", log, "--ref", TOY / "test.tgt", "-s", "fr",
                                         "-t", "tgt").stdout
    one_error_line(evaluate(both, "--generate-log", log, "--ref", TOY / "test.tgt", "-s", "de"),
                   r"holds no de->\? data \(from -s/-t\); it holds fr-tgt, src-tgt")


def test_evaluate_names_an_unknown_subset_and_the_splits_there(prepared):
    proc = evaluate(prepared / "bin", prepared / "ckpt" / "checkpoint_best.pt", "--subset", "tset")
    one_error_line(proc, r"holds no split 'tset' .*it holds: test, train, valid")


def test_evaluate_given_a_prepare_py_folder_names_its_bin(prepared):
    proc = evaluate(prepared, prepared / "ckpt" / "checkpoint_best.pt")
    one_error_line(proc, rf"^error: {re.escape(str(prepared))} holds no fairseq-preprocess output; give its bin "
                         rf"folder: {re.escape(str(prepared / 'bin'))}$")


# H. every user mistake is one error line, a non-zero exit, nothing written

def corrupt_gzip(path: Path) -> Path:
    """A gzip member whose deflate data is invalid (zlib's 'invalid block type')."""
    data = bytearray(gzip.compress(b"a b c\n" * 100))
    data[10] = 0x07  # the first block: final, type 3 (reserved)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("case", ["corrupt gzip reference", "json inside a file", "json is a folder",
                                  "hyp-out inside a file", "spm not a sentencepiece model"])
def test_evaluate_refuses_bad_files_with_one_line(toy_bin, trained, tmp_path, case):
    (tmp_path / "plain").write_text("x\n")
    (tmp_path / "folder").mkdir()
    args = {"corrupt gzip reference": ["--ref", corrupt_gzip(tmp_path / "ref.gz")],
            "json inside a file": ["--ref", TOY / "test.tgt", "--json", tmp_path / "plain" / "s.json"],
            "json is a folder": ["--ref", TOY / "test.tgt", "--json", tmp_path / "folder"],
            "hyp-out inside a file": ["--ref", TOY / "test.tgt", "--hyp-out", tmp_path / "plain" / "h.txt"],
            "spm not a sentencepiece model": ["--ref", TOY / "test.tgt", "--src-raw", TOY / "test.src",
                                              "--spm", tmp_path / "plain"]}[case]
    proc = evaluate(toy_bin, trained, *args)
    one_error_line(proc, {"corrupt gzip reference": r"ref\.gz: cannot be read",
                          "spm not a sentencepiece model": r"^error: --spm \S+plain is not a sentencepiece model \("
                          }.get(case, r"cannot write"))


@pytest.mark.parametrize("case", ["lines in another order", "the source side", "another split's lines",
                                  "a generate log against lines in another order"])
def test_evaluate_refuses_a_reference_that_is_not_the_scored_sentences_target(toy_bin, trained, tmp_path, case):
    """The line count alone would pass each of these and score a BLEU near zero, silently."""
    lines = (TOY / "test.tgt").read_text().splitlines(keepends=True)
    ref = tmp_path / "ref.txt"
    ref.write_text({"lines in another order": "".join(lines[::-1]), "the source side": (TOY / "test.src").read_text(),
                    "another split's lines": "".join((TOY / "train.tgt").read_text().splitlines(keepends=True)
                                                     [:len(lines)])}.get(case, "".join(lines[::-1])))
    if case.startswith("a generate log"):
        log = tmp_path / "generate.log"
        log.write_text(run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--gen-subset",
                           "test", "--beam", "2").stdout)
        assert "sentences = 203" in evaluate(toy_bin, "--generate-log", log, "--ref", TOY / "test.tgt").stdout
        proc, what = evaluate(toy_bin, "--generate-log", log, "--ref", ref), f"the sentences of {log}"
    else:
        proc, what = evaluate(toy_bin, trained, "--ref", ref), f"split 'test' of {toy_bin} (src->tgt: its tgt side)"
    one_error_line(proc, rf"^error: the reference does not match {re.escape(what)}: \d+ of its 203 lines resemble")


@pytest.mark.parametrize("words", [4, 8])
def test_evaluate_judges_the_reference_by_the_words_a_small_dictionary_knows(tmp_path, words):
    """A dictionary of 4 or 8 of the toy's 12 words leaves many targets <unk>: the right reference passes,
    by the model and by its fairseq-generate output (T- lines print <<unk>>); with 8 words, enough lines
    are judged to refuse the wrong ones."""
    data = tmp_path / "bin"
    run("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", TOY / "train",
        "--testpref", TOY / "test", "--destdir", data, "--nwordssrc", str(words + 4), "--nwordstgt", str(words + 4),
        "--workers", "1")
    run("fairseq-train", data, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--max-update", "2",
        "--valid-subset", "test", "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints")
    checkpoint = tmp_path / "ckpt" / "checkpoint_best.pt"
    log = tmp_path / "generate.log"
    log.write_text(run("fairseq-generate", data, "--user-dir", USER_DIR, "--path", checkpoint, "--gen-subset", "test",
                       "--beam", "1").stdout)
    assert "<<unk>>" in log.read_text()
    for source in ([checkpoint, "--beam", "1"], ["--generate-log", log]):
        right = evaluate(data, *source, "--ref", TOY / "test.tgt")
        assert right.returncode == 0 and "sentences = 203" in right.stdout, right.stderr[-3000:]
    if words == 4:
        return
    reversed_lines = tmp_path / "reversed.tgt"
    reversed_lines.write_text("".join((TOY / "test.tgt").read_text().splitlines(keepends=True)[::-1]))
    for wrong in (reversed_lines, TOY / "test.src"):
        one_error_line(evaluate(data, checkpoint, "--ref", wrong), r"the reference does not match split 'test' .*: "
                       r"\d+ of its \d+ lines judged \(targets of at most a quarter <unk>\) resemble")


@pytest.mark.parametrize("case", ["a line left out, one added at the end", "two lines swapped",
                                  "a generate log against a line left out"])
def test_evaluate_refuses_a_reference_out_of_line_with_the_sentences(toy_bin, trained, tmp_path, case):
    """Most lines still match their sentence's target here (the half-of-the-lines rule passes them),
    and the count too: the lines out of place would score against the wrong sentences, silently."""
    lines = (TOY / "test.tgt").read_text().splitlines(keepends=True)
    edited = {"two lines swapped": lines[:49] + [lines[50], lines[49]] + lines[51:]}.get(
        case, lines[:150] + lines[151:] + ["one two\n"])
    ref = tmp_path / "ref.txt"
    ref.write_text("".join(edited))
    if case.startswith("a generate log"):
        log = tmp_path / "generate.log"
        log.write_text(run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--gen-subset",
                           "test", "--beam", "2").stdout)
        proc, what = evaluate(toy_bin, "--generate-log", log, "--ref", ref), f"the sentences of {log}"
    else:
        proc, what = evaluate(toy_bin, trained, "--ref", ref), f"split 'test' of {toy_bin} (src->tgt: its tgt side)"
    one_error_line(proc, rf"^error: the reference is out of line with {re.escape(what)}: \d+ of its lines resemble "
                         "a neighbouring sentence's target more than their own")


def interrupt_while_decoding(cmd: list, tmp_path: Path) -> subprocess.CompletedProcess:
    """Start ``cmd`` (one sentence a batch), send it SIGINT once it reports sentences translated (it
    decodes in its own process), and return how it ended, its stderr without those reports; no
    process of its session may be left."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"OMP_NUM_THREADS": "1", **os.environ}, start_new_session=True)
    stderr, decoding = [], threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            stderr.append(line)
            if "translated: " in line:
                decoding.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert decoding.wait(120), "".join(stderr)
    proc.send_signal(signal.SIGINT)
    stdout = proc.stdout.read()
    proc.wait(60)
    reader.join(60)
    deadline = time.time() + 10
    while session_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not session_alive(proc.pid), "a process of the interrupted script is left"
    said = "".join(line for line in stderr if not re.match(r"\S+\.py: .*translated: \d+/\d+ sentences$", line))
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, said)


def session_alive(leader: int) -> bool:
    """Whether a process of the session (and process group) LEADER started is left."""
    try:
        os.killpg(leader, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("script", ["evaluate.py", "distill.py"])
def test_ctrl_c_ends_with_one_line_and_status_130(toy_bin, trained, tmp_path, script):
    cmd = {"evaluate.py": [sys.executable, SCRIPTS / "evaluate.py", toy_bin, trained, "--ref", TOY / "test.tgt",
                           "--json", tmp_path / "s.json", "--batch-size", "1"],
           "distill.py": [sys.executable, SCRIPTS / "distill.py", toy_bin, trained, tmp_path / "kd", "--",
                          "--batch-size", "1"]}[script]
    proc = interrupt_while_decoding(cmd, tmp_path)
    assert proc.returncode == 130
    one_error_line(proc, rf"{script} interrupted \(Ctrl-C\)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# I. the Python API names the bad argument or element

@pytest.mark.parametrize("sentences, beam, error, message", [
    (None, 5, TypeError, r"translate: sentences is NoneType, expected str or a list of str"),
    (b"eins zwei", 5, TypeError, r"translate: sentences is bytes"),
    (3, 5, TypeError, r"translate: sentences is int"),
    (["eins", "zwei", "drei", b"vier"], 5, TypeError, r"translate: element 3 is bytes, expected str"),
    (["eins", None], 5, TypeError, r"translate: element 1 is NoneType, expected str"),
    (["eins", 7.0], 5, TypeError, r"translate: element 1 is float, expected str"),
    (["eins"], "5", TypeError, r"translate: beam is str '5', expected a whole number$"),
    (["eins"], 2.0, TypeError, r"translate: beam is float 2.0, expected a whole number$"),
    (["eins"], 0, ValueError, r"--beam must be at least 1, got 0"),
])
def test_translate_names_the_bad_argument_or_element(toy_bin, trained, tmp_path, sentences, beam, error, message):
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    hub = RNNSeq2SeqModel.from_pretrained(str(model_dir(tmp_path / "m", toy_bin, trained)))
    with pytest.raises(error, match=message):
        hub.translate(sentences, beam=beam)
    assert hub.translate(("eins zwei", "drei"), beam=2)[1]  # a tuple of str is fine


def test_translate_names_an_argument_fairseq_would_ignore(toy_bin, trained, tmp_path):
    """fairseq's hub sets any keyword on its generation options and uses only those it knows: a
    misspelt one is named, with the option it resembles; fairseq's generation options pass, each
    of its type (fairseq would fail deep inside the search, or truncate); nbest only in generate()."""
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    hub = RNNSeq2SeqModel.from_pretrained(str(model_dir(tmp_path / "m", toy_bin, trained)))
    for method, options, message in (("translate", {"beem": 5}, r"'beem' \(did you mean 'beam'\?\)"),
                                     ("translate", {"lenpen": 1.2, "nbset": 2}, r"'nbset' \(did you mean 'nbest'\?\)"),
                                     ("sample", {"qqq": 1}, r"'qqq' \(fairseq's generation options")):
        with pytest.raises(TypeError, match=rf"^{method}: unknown argument {message}"):
            getattr(hub, method)(["eins"], **options)
    assert hub.translate(["eins zwei"], beam=2, lenpen=1.2, max_len_b=5, skip_invalid_size_inputs=True)[0]
    assert hub.translate(["eins zwei"], sampling=True, sampling_topk=3)[0]  # the best of 5 samples, as stock fairseq
    for method, options, message in (("translate", {"lenpen": "x"}, r"lenpen is str 'x', expected a number$"),
                                     ("translate", {"max_len_b": "10"}, r"max_len_b is str '10', expected a whole"),
                                     ("sample", {"nbest": 2.5}, r"nbest is float 2.5, expected a whole number$"),
                                     ("translate", {"sampling": 1}, r"sampling is int 1, expected True or False$"),
                                     ("translate", {"nbest": 2}, r"returns the best translation of each sentence; "
                                                                 r"nbest=2 needs generate\(\)")):
        with pytest.raises(TypeError, match=rf"^{method}: {message}"):
            getattr(hub, method)(["eins"], **options)
    for tokens in (["eins"], "eins", [[4, 5, 2]]):
        with pytest.raises(TypeError, match=r"^generate: takes token tensors \(encode\(\) the text first\)"):
            hub.generate(tokens)
    assert len(hub.generate([hub.encode("eins zwei")], beam=3)[0]) == 3  # the whole beam, as fairseq's
    assert len(hub.generate([hub.encode("eins zwei")], beam=3, nbest=2)[0]) == 2  # as fairseq-generate prints
    assert len(hub.generate(hub.encode("eins zwei"), beam=3, nbest=2)) == 2  # one sentence: its hypotheses
    assert hub.translate(["eins zwei"], beam=2, lenpen=np.float32(1.0), max_len_b=np.int64(20))[0]  # numpy: numbers too


@pytest.mark.parametrize("script", ["distill.py", "average_checkpoints.py"])
def test_an_output_inside_a_file_is_one_line(toy_bin, trained, tmp_path, script):
    (tmp_path / "plain").write_text("x\n")
    args = {"distill.py": [toy_bin, trained, tmp_path / "plain" / "kd"],
            "average_checkpoints.py": ["--inputs", trained, "--out", tmp_path / "plain" / "avg.pt"]}[script]
    proc = run(sys.executable, SCRIPTS / script, *args, check=False)
    one_error_line(proc, {"distill.py": rf"^error: OUT: cannot write in {tmp_path}/plain: it is not a folder: choose "
                                        "another folder$"}.get(script, r"plain"))
    assert (tmp_path / "plain").read_text() == "x\n"


@pytest.mark.parametrize("case", ["not a checkpoint", "no model in it"])
def test_average_refuses_files_that_are_not_checkpoints_with_one_line(trained, tmp_path, case):
    bad = tmp_path / "bad.pt"
    if case == "not a checkpoint":
        bad.write_text("hello\n")
    else:
        torch.save({"weights": torch.zeros(2)}, bad)
    proc = run(sys.executable, SCRIPTS / "average_checkpoints.py", "--inputs", trained, bad, "--out",
               tmp_path / "avg.pt", check=False)
    one_error_line(proc, r"bad\.pt")
    assert not (tmp_path / "avg.pt").exists()
