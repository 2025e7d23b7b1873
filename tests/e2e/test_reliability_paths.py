"""The paths around the main one, through the real CLIs: outputs never replace inputs, what is
recorded is what ran, tokenization and identity checked, divergence ends a run, resume errors
name what differs, decode paths answer every line, special files and colons named."""
import json
import os
import re
import shutil

import pytest
import torch

from helpers import ROOT, TINY_MODEL, TOY, TRAIN_ARGS, USER_DIR, fails_with, generate_lines, run

SCRIPTS = ROOT / "scripts"



def evaluate(data, checkpoint, *args, check=False, **kwargs):
    return run("python", SCRIPTS / "evaluate.py", data, checkpoint, "--ref", TOY / "test.tgt", *args,
               check=check, **kwargs)


def train(data, save_dir, *extra, check=True, **kwargs):
    return run("fairseq-train", data, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--save-dir", save_dir,
               "--no-epoch-checkpoints", *extra, check=check, **kwargs)


@pytest.fixture(scope="module")
def swapped_bin(toy_bin, tmp_path_factory):
    """The toy data binarized with a dictionary of the same size and entries, two ids swapped."""
    folder = tmp_path_factory.mktemp("swapped")
    lines = (toy_bin / "dict.src.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (folder / "dict.txt").write_text("\n".join(lines) + "\n")
    run("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--srcdict", folder / "dict.txt",
        "--tgtdict", folder / "dict.txt", "--trainpref", TOY / "train", "--validpref", TOY / "valid",
        "--testpref", TOY / "test", "--destdir", folder / "bin", "--workers", "1")
    return folder / "bin"


# A. outputs never overwrite inputs or a live run

@pytest.mark.parametrize("option, target", [
    ("--json", "checkpoint"), ("--hyp-out", "ref"), ("--hyp-out", "checkpoint_last"), ("--json", "dict"),
])
def test_evaluate_refuses_outputs_onto_inputs_and_live_checkpoints(toy_bin, trained, tmp_path, option, target):
    save = tmp_path / "save"
    shutil.copytree(trained.parent, save)
    ref = tmp_path / "ref.txt"
    shutil.copy(TOY / "test.tgt", ref)
    path = {"checkpoint": save / "checkpoint_best.pt", "ref": ref, "checkpoint_last": save / "checkpoint_last.pt",
            "dict": toy_bin / "dict.src.txt"}[target]
    before = path.read_bytes()
    proc = run("python", SCRIPTS / "evaluate.py", toy_bin, save / "checkpoint_best.pt", "--ref", ref, option, path,
               check=False)
    fails_with(proc, rf"^error: {option}: cannot write {re.escape(str(path))}: ")
    assert path.read_bytes() == before and "translated" not in proc.stderr  # refused before decoding


def test_evaluate_replaces_its_own_earlier_outputs_and_records_what_ran(toy_bin, trained, tmp_path):
    args = ["--json", tmp_path / "s.json", "--hyp-out", tmp_path / "h.txt", "--", "--lenpen", "1.5"]
    first = evaluate(toy_bin, trained, *args, check=True)
    again = evaluate(toy_bin, trained, *args, check=True)
    assert first.stdout == again.stdout and "sentences = 203" in first.stdout  # stdout: the scores only
    assert "evaluate.py: translated: 203/203 sentences" in first.stderr  # progress goes to stderr
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["generate_args"] == ["--lenpen", "1.5"] and record["beam"] == 5 and record["post_process"] == ""
    foreign = tmp_path / "mine.txt"  # as many lines as the test set, but not evaluate.py's: kept
    shutil.copy(TOY / "test.tgt", foreign)
    (tmp_path / "h.txt").write_text((tmp_path / "h.txt").read_text() + "edited by hand\n")
    for path in (foreign, tmp_path / "h.txt"):
        before = path.read_bytes()
        fails_with(evaluate(toy_bin, trained, "--hyp-out", path), r"exists and is not an earlier output of this kind")
        assert path.read_bytes() == before


def test_average_refuses_to_write_over_a_live_checkpoint_or_a_foreign_file(toy_bin, trained, tmp_path):
    save = tmp_path / "save"
    shutil.copytree(trained.parent, save)
    live = (save / "checkpoint_last.pt").read_bytes()
    script = SCRIPTS / "average_checkpoints.py"
    proc = run("python", script, "--inputs", save / "checkpoint_best.pt", "--out", save / "checkpoint_last.pt",
               check=False)
    fails_with(proc, r"--out: cannot write .*checkpoint_last\.pt: the name is one fairseq-train writes")
    assert (save / "checkpoint_last.pt").read_bytes() == live
    (tmp_path / "notes.pt").write_text("mine")
    fails_with(run("python", script, "--inputs", save / "checkpoint_best.pt", "--out", tmp_path / "notes.pt",
                   check=False), r"exists and is not an earlier output of this kind")
    run("python", script, "--inputs", save / "checkpoint_best.pt", "--out", tmp_path / "avg.pt")
    run("python", script, "--inputs", save / "checkpoint_best.pt", "--out", tmp_path / "avg.pt")  # its own: replaced
    assert torch.load(tmp_path / "avg.pt", weights_only=True)["extra_state"]["made_by"]["script"] == \
        "average_checkpoints.py"


def test_ema_weights_of_other_data_are_refused_and_the_note_is_not_under_ema(trained, tmp_path):
    """D: --ema compares the EMA weights' dictionary fingerprints with the model's; what it writes
    notes its origin under made_by, never under the key fairseq reads back as EMA weights."""
    state = torch.load(trained, weights_only=True)
    state["extra_state"]["ema"] = {k: v.clone() for k, v in state["model"].items()}
    script = SCRIPTS / "average_checkpoints.py"
    torch.save(state, tmp_path / "same.pt")
    run("python", script, "--ema", tmp_path / "same.pt", "--out", tmp_path / "ema.pt")
    extra = torch.load(tmp_path / "ema.pt", weights_only=True)["extra_state"]
    assert "ema" not in extra and extra["made_by"]["script"] == "average_checkpoints.py"
    state["extra_state"]["ema"]["target_dictionary_fingerprint"] = state["model"]["target_dictionary_fingerprint"] + 1
    torch.save(state, tmp_path / "mixed.pt")
    fails_with(run("python", script, "--ema", tmp_path / "mixed.pt", "--out", tmp_path / "x.pt", check=False),
               r"^error: the EMA weights of .*mixed\.pt and .*mixed\.pt were trained with other target dictionaries")
    assert not (tmp_path / "x.pt").exists()


# B. what a script records is what ran

CONTRADICTS, NOT_PASSED = "would contradict what this script sets", "is not passed to fairseq-generate"


@pytest.mark.parametrize("extra, option, why", [
    (["--beam", "1"], "--beam", CONTRADICTS), (["--gen-subset=valid"], "--gen-subset", CONTRADICTS),
    (["--path", "x.pt"], "--path", CONTRADICTS), (["--remove-bpe", "sentencepiece"], "--remove-bpe", CONTRADICTS),
    (["-t", "src"], "-t", CONTRADICTS), (["--score-reference"], "--score-reference", NOT_PASSED),
    (["--prefix-size", "1"], "--prefix-size", NOT_PASSED), (["--bpe", "sentencepiece"], "--bpe", NOT_PASSED),
    (["--help"], "--help", NOT_PASSED),
])
def test_evaluate_refuses_pass_through_that_contradicts_what_it_records(toy_bin, trained, extra, option, why):
    fails_with(evaluate(toy_bin, trained, "--", *extra), rf"^error: {option} after -- {why}")


def test_distill_refuses_post_processing_its_targets(toy_bin, trained, tmp_path):
    proc = run("python", SCRIPTS / "distill.py", toy_bin, trained, tmp_path / "kd", "--", "--post-process",
               "sentencepiece", check=False)
    fails_with(proc, r"^error: --post-process after -- would contradict .*dictionary's units")
    fails_with(run("python", SCRIPTS / "distill.py", toy_bin, trained, toy_bin / "kd", check=False),
               r"OUT: cannot write .*kd: it is inside the input folder")
    assert not (tmp_path / "kd").exists() and not (toy_bin / "kd").exists()


# C. tokenization is tied to the model

def test_pieces_options_on_a_word_level_model_are_refused(toy_bin, trained, tmp_path):
    fails_with(evaluate(toy_bin, trained, "--post-process", "sentencepiece"),
               r"--post-process sentencepiece: the model's target dictionary holds words")
    (tmp_path / "text").write_text((TOY / "train.src").read_text())
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(input=str(tmp_path / "text"), model_prefix=str(tmp_path / "spm"), vocab_size=30,
                                   hard_vocab_limit=False, minloglevel=2)
    fails_with(evaluate(toy_bin, trained, "--src-raw", TOY / "test.src", "--spm", tmp_path / "spm.model"),
               r"--spm .*spm\.model: the model's source dictionary holds words")
    proc = run("fairseq-interactive", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--bpe", "sentencepiece",
               "--sentencepiece-model", tmp_path / "spm.model", input="one two\n", check=False)
    fails_with(proc, r"TokenizationError: .*spm\.model: the model's source dictionary holds words")


@pytest.mark.parametrize("command", ["fairseq-train", "fairseq-hydra-train"])
def test_validation_bleu_that_would_join_words_wrongly_is_refused(toy_bin, tmp_path, command):
    """--eval-bleu-remove-bpe sentencepiece on word-level data (configs/multi30k.yaml on other data)
    would join every word and pick checkpoint_best.pt by that BLEU: refused before training."""
    if command == "fairseq-train":
        cmd = ["fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--eval-bleu",
               "--eval-bleu-remove-bpe", "sentencepiece", "--max-update", "3", "--save-dir", tmp_path / "ckpt"]
    else:
        cmd = ["fairseq-hydra-train", "--config-dir", ROOT / "configs", "--config-name", "multi30k",
               f"task.data={toy_bin}", f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={tmp_path / 'ckpt'}",
               "optimization.max_update=3"]
    fails_with(run(*cmd, check=False, cwd=tmp_path), r"TokenizationError: --eval-bleu-remove-bpe sentencepiece: the "
               r"model's target dictionary holds words", traceback=command == "fairseq-hydra-train")  # Hydra's report
    assert not list((tmp_path / "ckpt").glob("*.pt"))


# D. identity is compared, never averaged

def test_average_refuses_checkpoints_of_other_dictionaries_of_the_same_size(toy_bin, swapped_bin, tmp_path):
    train(toy_bin, tmp_path / "a", "--max-update", "1", "--disable-validation")
    train(swapped_bin, tmp_path / "b", "--max-update", "1", "--disable-validation")
    proc = run("python", SCRIPTS / "average_checkpoints.py", "--inputs", tmp_path / "a" / "checkpoint_last.pt",
               tmp_path / "b" / "checkpoint_last.pt", "--out", tmp_path / "avg.pt", check=False)
    fails_with(proc, r"b/checkpoint_last\.pt and .*a/checkpoint_last\.pt were trained with other source dictionaries")
    assert not (tmp_path / "avg.pt").exists()


# F. divergence ends a run

@pytest.mark.parametrize("precision", [[], ["--amp"]])
def test_a_diverging_run_stops_with_an_error_and_no_best_checkpoint(toy_bin, tmp_path, precision):
    proc = train(toy_bin, tmp_path, "--optimizer", "sgd", "--lr", "1e38", "--max-update", "300", "--cpu",
                 *precision, check=False, timeout=300)
    fails_with(proc, r"TrainingDiverged: training diverged at update \d+: the gradients are not finite")
    assert not (tmp_path / "checkpoint_best.pt").exists()


# G. resume errors say what differs

@pytest.mark.parametrize("change, named", [
    (["--encoder-hidden-size", "64"], r"--encoder-hidden-size 128 \(this command: 64\)"),
    (["--cell", "gru"], r"--cell lstm \(this command: gru\)"),
    (["--decoder-embed-dim", "128", "--share-decoder-input-output-embed"],
     r"--decoder-embed-dim 64 \(this command: 128\).*no --share-decoder-input-output-embed "
     r"\(this command: --share-decoder-input-output-embed\)"),
])
def test_resuming_with_other_model_options_names_them(toy_bin, tmp_path, change, named):
    """Only the options that change the model are named: not the dropout that changed too."""
    train(toy_bin, tmp_path, "--max-update", "1", "--disable-validation")
    proc = train(toy_bin, tmp_path, "--max-update", "2", "--disable-validation", *change, "--dropout", "0.35",
                 check=False)
    fails_with(proc, rf"CheckpointError: checkpoint \S+checkpoint_last\.pt does not fit the model of this command: "
                     rf"it was trained with .*{named}")
    last = proc.stderr.splitlines()[-1]
    assert "architectures match" not in last and "--dropout" not in last


def test_resuming_with_another_dropout_is_allowed(toy_bin, tmp_path):
    """Dropout changes no parameter: fairseq resumes with it, and so does the plugin."""
    train(toy_bin, tmp_path, "--max-update", "1", "--disable-validation")
    out = train(toy_bin, tmp_path, "--max-update", "2", "--disable-validation", "--dropout", "0.35").stdout
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 1 @ 1 updates\)", out)


def test_resuming_on_another_dictionary_names_it(toy_bin, swapped_bin, tmp_path):
    train(toy_bin, tmp_path, "--max-update", "1", "--disable-validation")
    proc = train(swapped_bin, tmp_path, "--max-update", "2", "--disable-validation", check=False)
    fails_with(proc, r"CheckpointError: checkpoint \S+checkpoint_last\.pt: the checkpoint was trained with a source "
                     r"dictionary of \d+ entries")


# H. decode paths answer every line

@pytest.mark.parametrize("buffer", ["1", "2", "6"])
def test_interactive_answers_empty_unknown_and_over_long_lines_and_keeps_going(toy_bin, trained, buffer):
    """Each line gets its answer, and each warning names its line as the S- lines do, whatever
    --buffer-size (fairseq-interactive counts each chunk's sentences from 0); the over-long line is
    named once, for its length."""
    lines = ["one two", "", "   ", "qqq zzz", " ".join(["one"] * 40), "three"]
    proc = run("fairseq-interactive", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--max-source-positions",
               "20", "--buffer-size", buffer, "--batch-size", buffer, input="".join(line + "\n" for line in lines))
    hyps = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in proc.stdout.splitlines()
            if line.startswith("H-")}
    assert sorted(hyps) == list(range(6))
    assert hyps[1] == hyps[2] == hyps[3] == hyps[4] == "" and hyps[0] and hyps[5]
    output = proc.stdout + proc.stderr
    assert sorted(re.findall(r"sentence (\d+) holds no word the model knows", output)) == ["1", "2", "3"]
    assert re.findall(r"sentence (\d+) has 41 tokens, more than the model takes \(20, --max-source-positions\)",
                      output) == ["4"]


WORDS_NOT = r"TokenizationError: --post-process {}: the model's target dictionary holds words, not {}; leave it out"
UNKNOWN_SCHEME = r"TokenizationError: --post-process 'foo' is not a scheme fairseq knows: use one of 'sentencepiece'"


@pytest.mark.parametrize("command, scheme, message", [
    ("fairseq-interactive", "sentencepiece", WORDS_NOT.format("sentencepiece", "sentencepiece pieces")),
    ("fairseq-generate", "sentencepiece", WORDS_NOT.format("sentencepiece", "sentencepiece pieces")),
    ("fairseq-generate", "wordpiece", WORDS_NOT.format("wordpiece", r"wordpiece units \(entries starting with '_'\)")),
    ("fairseq-interactive", "letter", WORDS_NOT.format("letter", r"letters \(with the word boundary '\|'\)")),
    ("fairseq-generate", "foo", UNKNOWN_SCHEME),
    ("fairseq-interactive", "foo", UNKNOWN_SCHEME),
])
def test_post_processing_a_word_level_models_output_is_refused(toy_bin, trained, command, scheme, message):
    """C: a --post-process scheme would join a word-level model's words, or is none fairseq knows:
    refused by name before a line is printed (fairseq applies it to the S- line first)."""
    batches = ["--batch-size", "16"] if command == "fairseq-generate" else ["--buffer-size", "2"]
    proc = run(command, toy_bin, "--user-dir", USER_DIR, "--path", trained, "--post-process", scheme, *batches,
               input="one two\nthree\n", check=False)
    fails_with(proc, message)
    assert "Traceback" not in proc.stderr and not re.search(r"^[SHWDP]-", proc.stdout, re.M), proc.stdout


def test_remove_bpe_on_a_word_level_model_changes_nothing_as_in_fairseq(toy_bin, trained):
    """fairseq's --remove-bpe (subword-nmt's '@@ ') on words that hold no '@@': accepted, the same output."""
    short = ["--beam", "2", "--max-len-b", "5"]
    plain = generate_lines(toy_bin, trained, *short, prefixes=("H-",))
    assert plain and generate_lines(toy_bin, trained, *short, "--remove-bpe", prefixes=("H-",)) == plain


def test_interactive_with_alignments_answers_an_empty_line_with_nothing(toy_bin, tmp_path):
    """--print-alignment decodes through fairseq's other generator: it answers empty lines too."""
    train(toy_bin, tmp_path, "--decoder-attention", "multiplicative", "--max-update", "20", "--no-epoch-checkpoints",
          "--disable-validation")
    proc = run("fairseq-interactive", toy_bin, "--user-dir", USER_DIR, "--path", tmp_path / "checkpoint_last.pt",
               "--print-alignment", input="one two\n\nthree\n")
    hyps = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in proc.stdout.splitlines()
            if line.startswith("H-")}
    alignments = [line for line in proc.stdout.splitlines() if line.startswith("A-")]
    assert sorted(hyps) == [0, 1, 2] and hyps[1] == "" and len(alignments) == 3, proc.stdout


@pytest.mark.parametrize("command, options, message", [
    ("fairseq-generate", ["--beam", "2", "--nbest", "3"], r"--nbest 3 is above --beam 2"),
    ("fairseq-interactive", ["--min-len", "5", "--max-len-b", "3"], r"--min-len 5 is above the longest translation "
                                                                     r"allowed \(3:"),
    ("fairseq-generate", ["--sampling-topk", "4"], r"--sampling-topk needs --sampling"),
    ("fairseq-interactive", ["--max-len-a", "-1"], r"--max-len-a \(-1.0\), .* must not be negative"),
    ("fairseq-generate", ["--sampling", "--beam", "2"], r"--sampling returns every one of --beam samples"),
    ("fairseq-interactive", ["--sampling", "--beam", "3", "--nbest", "2"], r"--sampling returns every one"),
    ("fairseq-interactive", ["--batch-size", "4"], r"--batch-size 4 is above --buffer-size 1 \(its default 0 reads "
                                                   r"as 1\), the lines"),
    ("fairseq-interactive", ["--batch-size", "4", "--buffer-size", "3"], r"--batch-size 4 is above --buffer-size 3"),
])
def test_generation_options_fairseq_asserts_on_are_one_line(toy_bin, trained, command, options, message):
    """H: what fairseq would assert on (or obey silently: fewer hypotheses than --nbest) is named in
    one line, no traceback."""
    proc = run(command, toy_bin, "--user-dir", USER_DIR, "--path", trained, *options, input="one two\n", check=False)
    fails_with(proc, rf"GenerationOptionError: {message}")
    assert proc.stderr.splitlines()[-1].startswith("GenerationOptionError: --") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command, overrides, message", [
    ("fairseq-generate", {"decoder_attention": "additive"}, r"\d+ missing \(decoder\.attention\."),
    ("fairseq-generate", {"encoder_hidden_size": 64}, r"\S+ \([\d, ]+\) in the checkpoint, \([\d, ]+\) here"),
    ("fairseq-interactive", {"cell": "gru"}, r"\S+ \([\d, ]+\) in the checkpoint, \([\d, ]+\) here"),
])
def test_model_overrides_that_change_the_weights_are_one_line(toy_bin, trained, command, overrides, message):
    """--model-overrides that reshape the model: torch's pages of keys become one line naming the first."""
    proc = run(command, toy_bin, "--user-dir", USER_DIR, "--path", trained, "--model-overrides", str(overrides),
               input="one two\n", check=False)
    fails_with(proc, rf"WeightsMismatch: checkpoint {re.escape(str(trained))}: the checkpoint's weights do not fit "
                     r"the model its options build here: .*" + message)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command, model, message", [
    ("fairseq-interactive", "dict.src.txt", "is not a sentencepiece model (prepare.py's OUT/spm.model is one)"),
    ("fairseq-generate", "dict.src.txt", "is not a sentencepiece model"),
    ("fairseq-interactive", "missing.model", "does not exist"),
    ("fairseq-generate", None, "needs --sentencepiece-model PATH"),
])
def test_a_sentencepiece_model_that_is_none_is_one_line(toy_bin, trained, command, model, message):
    """--sentencepiece-model naming a file sentencepiece cannot load, or none: fairseq's OSError or
    'could not parse ModelProto' traceback after loading the models becomes one line, first."""
    given = ["--sentencepiece-model", toy_bin / model] if model else []
    proc = run(command, toy_bin, "--user-dir", USER_DIR, "--path", trained, "--bpe", "sentencepiece", *given,
               input="one two\n", check=False)
    named = f"--sentencepiece-model {toy_bin / model} " if model else "--bpe sentencepiece "
    fails_with(proc, f"TokenizationError: {re.escape(named + message)}")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["fairseq-generate", "fairseq-interactive"])
def test_pieces_decoded_twice_are_refused(toy_bin, trained, command):
    """--bpe sentencepiece decodes the pieces: --post-process sentencepiece as well ran the words
    together ("Thecatsleeps", BLEU 0), without a word."""
    proc = run(command, toy_bin, "--user-dir", USER_DIR, "--path", trained, "--bpe", "sentencepiece",
               "--sentencepiece-model", toy_bin / "spm.model", "--post-process", "sentencepiece",
               input="one two\n", check=False)
    fails_with(proc, r"TokenizationError: --post-process sentencepiece with --bpe sentencepiece decodes the pieces "
                     r"twice \(the words run together\): leave --post-process out")
    assert "Traceback" not in proc.stderr


def test_interactive_and_translate_refuse_beam_zero_and_a_missing_folder(toy_bin, trained, tmp_path):
    proc = run("fairseq-interactive", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--beam", "0",
               input="one\n", check=False)
    fails_with(proc, r"GenerationOptionError: --beam must be at least 1, got 0")
    assert "Traceback" not in proc.stderr
    folder = tmp_path / "model"
    shutil.copytree(toy_bin, folder / "bin")
    (folder / "ckpt").mkdir()
    shutil.copy(trained, folder / "ckpt" / "checkpoint_best.pt")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel\n"
              "m = RNNSeq2SeqModel.from_pretrained(sys.argv[2]); print(m.translate(['one two', '', 'qqq'], beam=2))\n"
              "try:\n    m.translate(['one'], beam=0)\nexcept ValueError as e:\n    print(e)\n"
              "for where in (sys.argv[2] + '-missing', sys.argv[2] + '/bin/dict.src.txt'):\n"
              "    try:\n        RNNSeq2SeqModel.from_pretrained(where)\n    except FileNotFoundError as e:\n"
              "        print(e)\n"
              "odd = RNNSeq2SeqModel.from_pretrained(sys.argv[2], checkpoint_file='run:1/best.pt')\n"
              "print(odd.translate(['one']))\n")
    (folder / "run:1").mkdir()
    shutil.copy(trained, folder / "run:1" / "best.pt")  # fairseq's loader would split the name at ':'
    out = run("python", "-c", script, ROOT, folder).stdout.splitlines()
    assert out[0].endswith(", '', '']") and out[1] == "--beam must be at least 1, got 0"
    assert out[2] == f"from_pretrained: model folder {folder}-missing does not exist"
    assert out[3] == f"from_pretrained: model folder {folder}/bin/dict.src.txt is a file"
    assert out[4].startswith("['") and out[4] != "['']"


@pytest.mark.parametrize("command", ["fairseq-generate", "fairseq-interactive", "from_pretrained", "plot_attention"])
def test_a_missing_checkpoint_is_named_in_one_line_on_every_path(toy_bin, trained, tmp_path, command):
    """fairseq's own check ends in a traceback ("Model file not found"): each path names the missing
    member of an ensemble, or an empty one, in one line."""
    folder = tmp_path / "model"
    shutil.copytree(toy_bin, folder / "bin")
    (folder / "ckpt").mkdir()
    shutil.copy(trained, folder / "ckpt" / "checkpoint_best.pt")
    best, missing = folder / "ckpt" / "checkpoint_best.pt", folder / "ckpt" / "nope.pt"
    for spec, message in ((f"{best}:{missing}", rf"checkpoint {missing} does not exist \(':' in "),
                          (f"{best}:", r"checkpoint \S+ has an empty name before or after ':'")):
        if command.startswith("fairseq-"):
            proc = run(command, toy_bin, "--user-dir", USER_DIR, "--path", spec, input="one\n", check=False)
        elif command == "from_pretrained":
            script = ("import sys; sys.path.insert(0, sys.argv[1]); from user_dir.models.rnn_seq2seq import "
                      "RNNSeq2SeqModel\nRNNSeq2SeqModel.from_pretrained(sys.argv[2], checkpoint_file=sys.argv[3])")
            proc = run("python", "-c", script, ROOT, folder, spec.replace(f"{folder}/", ""), check=False)
            message = message.replace(str(folder), "[^ ]*")
        else:
            proc = run("python", SCRIPTS / "plot_attention.py", folder, spec, "one", "--out", tmp_path / "a.png",
                       check=False)
        fails_with(proc, rf"(CheckpointError|error): {message}", traceback=command == "from_pretrained")


# I, J. what a path is, not what torch says; bounded readers

def test_a_checkpoint_path_with_a_colon_is_evaluated(toy_bin, trained, tmp_path):
    odd = tmp_path / "run:1"
    odd.mkdir()
    shutil.copy(trained, odd / "best.pt")
    assert "sentences = 203" in evaluate(toy_bin, odd / "best.pt", check=True).stdout
    fails_with(evaluate(toy_bin, tmp_path / "run:2" / "best.pt"), r"separates the checkpoints of an ensemble")


@pytest.mark.parametrize("kind", ["fifo", "zero", "folder"])
def test_special_files_are_named_and_never_read(toy_bin, trained, tmp_path, kind):
    if kind == "fifo":
        os.mkfifo(tmp_path / "ref")
    path = {"fifo": tmp_path / "ref", "zero": "/dev/zero", "folder": tmp_path}[kind]
    proc = run("python", SCRIPTS / "evaluate.py", toy_bin, trained, "--ref", path, check=False, timeout=120)
    fails_with(proc, r"^error: --ref \S+ is a (FIFO|character device|folder)")
    fails_with(evaluate(toy_bin, path, timeout=120), r"^error: checkpoint \S+ is a (FIFO|character device|folder)")
