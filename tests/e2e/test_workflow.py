"""The Multi30k scripts end to end on a tiny generated slice: prepare -> train.sh -> evaluate ->
plot, the hub-style Python API, and the Multi30k Hydra config."""
import gzip
import json
import re
import shutil
from argparse import Namespace

import pytest
import torch

from helpers import ROOT, TINY_MODEL, TRAIN_ARGS, USER_DIR, built_once, run

SCRIPTS = ROOT / "scripts"
TINY = ["--arch", "rnn_seq2seq", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
        "--encoder-hidden-size", "128", "--decoder-hidden-size", "128", "--encoder-bidirectional",
        "--dropout", "0.1", "--label-smoothing", "0", "--lr", "5e-3", "--max-tokens", "400"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A few hundred raw sentence pairs written by the test (reverse + translate words)."""
    return built_once(tmp_path_factory, "workflow-raw", lambda folder: run(
        "python", SCRIPTS / "make_toy_data.py", folder, "--train", "2000", "--valid", "60", "--test", "77",
        "--seed", "5"))


def prepare(raw, out, *extra):
    return run("python", SCRIPTS / "prepare.py", "--raw-dir", raw, "--src", "src", "--tgt", "tgt",
               "--vocab-size", "60", "--splits", "train=train", "valid=valid", "test=test", "--out", out,
               *extra).stdout


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    return built_once(tmp_path_factory, "workflow-prepared", lambda out: prepare(raw, out))


@pytest.fixture(scope="module")
def trained_dir(prepared, tmp_path_factory):
    """scripts/train.sh with tiny sizes; the model directory then holds spm.model, bin/, ckpt/."""
    # no early stopping: the toy's BLEU in the first epochs is noise, and stopping on it made the
    # model's quality hang on rounding (a change in the loss's last bit once stopped it at 196 updates)
    built_once(tmp_path_factory, "workflow-trained", lambda _: run(
        "bash", SCRIPTS / "train.sh", prepared / "bin", prepared / "ckpt", *TINY, "--max-update", "600",
        env={"BUDGET_HOURS": "0.1", "PATIENCE": "0"}))
    return prepared


def test_prepare_is_idempotent_and_redoes_half_finished_steps(raw, tmp_path):
    out = tmp_path / "p"
    prepare(raw, out)
    stamp = (out / "bin" / "train.src-tgt.src.bin").stat().st_mtime_ns
    again = prepare(raw, out)
    assert "skip: " in again and (out / "bin" / "train.src-tgt.src.bin").stat().st_mtime_ns == stamp
    # bin gone (a hidden folder of that name's pattern is not the script's: it stays): the files no
    # longer match the record, and the same inputs and options redo them
    other = out / ".bin.k1ll3d.tmp"
    (out / "bin").rename(other)
    assert "redo: " in prepare(raw, out)
    assert other.is_dir() and (out / "bin" / "train.src-tgt.src.bin").stat().st_size > 4
    # a new sentencepiece model invalidates the encoded text and binarized data made with the old one
    (out / "spm.model").unlink()
    (out / "spm" / "train.src").write_text("stale\n")
    prepare(raw, out)
    assert (out / "spm" / "train.src").read_text() != "stale\n"


def test_prepare_downloads_missing_raw_files(raw, tmp_path):
    """--download URL fetches {prefix}.{lang}.gz (here from a file:// "server") into --raw-dir."""
    server, fetched = tmp_path / "server", tmp_path / "fetched"
    server.mkdir()
    for path in raw.iterdir():
        (server / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    download = ("--download", server.as_uri(), "--raw-dir", fetched)
    out = prepare(raw, tmp_path / "out", *download)
    assert out.count("download: ") == 6 and (tmp_path / "out" / "bin" / "dict.src.txt").exists()
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in server.iterdir())
    assert "download: " not in prepare(raw, tmp_path / "out", *download)  # files there: nothing fetched


def test_evaluate_restores_order_and_decodes_sentencepiece(trained_dir, raw, tmp_path):
    summary, hyp = tmp_path / "test.json", tmp_path / "test.hyp"
    out = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", trained_dir / "ckpt" / "checkpoint_best.pt",
              "--ref", raw / "test.tgt", "--post-process", "sentencepiece", "--json", summary, "--hyp-out", hyp).stdout
    assert "nrefs:1|case:mixed" in out and "chrF2" in out
    result = json.loads(summary.read_text())
    hyps, refs = hyp.read_text().splitlines(), (raw / "test.tgt").read_text().splitlines()
    assert result["sentences"] == len(hyps) == 77
    assert not any("\u2581" in h for h in hyps)  # sentencepiece pieces were joined back into words
    assert sum(h == r for h, r in zip(hyps, refs)) > 0.5 * len(refs)  # hypothesis i translates source i
    assert result["bleu"] > 50


def test_evaluate_decodes_an_ensemble_and_records_every_member(trained_dir, raw, tmp_path):
    """``a.pt:b.pt`` given relative to the working folder: both members are checked, decoded
    together, and recorded with absolute paths."""
    ckpt = trained_dir / "ckpt"
    shutil.copy(ckpt / "checkpoint_best.pt", tmp_path / "copy.pt")
    summary = tmp_path / "ens.json"
    run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", f"{ckpt / 'checkpoint_best.pt'}:copy.pt",
        "--ref", raw / "test.tgt", "--post-process", "sentencepiece", "--json", summary, cwd=tmp_path)
    result = json.loads(summary.read_text())
    assert result["checkpoint"] == f"{ckpt / 'checkpoint_best.pt'}:{tmp_path / 'copy.pt'}"
    assert result["sentences"] == 77
    proc = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", f"{ckpt / 'checkpoint_best.pt'}:missing.pt",
               "--ref", raw / "test.tgt", "--post-process", "sentencepiece", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "missing.pt does not exist" in proc.stderr, proc.stderr[-2000:]


def test_evaluate_scores_a_generate_log_as_it_scores_its_own_decoding(trained_dir, raw, tmp_path):
    """--generate-log (a decoding made elsewhere, e.g. on a GPU machine): the same hypotheses and
    score as evaluate.py's own decoding; a log that lost sentences, holds pieces, lacks its T- lines
    or holds two decodings is refused, and so are decoding options it would ignore."""
    ckpt, ref = trained_dir / "ckpt" / "checkpoint_best.pt", raw / "test.tgt"
    own = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", ckpt, "--ref", ref, "--post-process",
              "sentencepiece", "--hyp-out", tmp_path / "own.hyp").stdout
    defaulted = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", ckpt, "--ref", ref).stdout
    assert defaulted.splitlines()[0] == own.splitlines()[0]  # prepare.py's tokenization, also with --ref
    for post_process, log, nbest in (("sentencepiece", "gen.log", "1"), ("none", "pieces.log", "1"),
                                     ("sentencepiece", "nbest.log", "2")):
        out = run("fairseq-generate", trained_dir / "bin", "--user-dir", USER_DIR, "--path", ckpt, "--gen-subset",
                  "test", "--beam", "5", "--batch-size", "128", "--post-process", post_process, "--nbest", nbest).stdout
        (tmp_path / log).write_text(out)
    lines = (tmp_path / "gen.log").read_text().splitlines()
    (tmp_path / "short.log").write_text("\n".join(x for x in lines if not x.startswith("D-3\t")) + "\n")
    (tmp_path / "d-only.log").write_text("\n".join(x for x in lines if x.startswith("D-")) + "\n")  # grep ^D-
    (tmp_path / "twice.log").write_text("\n".join(lines + lines) + "\n")  # appended with >>
    logged = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", "--generate-log", tmp_path / "gen.log",
                 "--ref", ref, "--hyp-out", tmp_path / "log.hyp").stdout
    assert logged.splitlines()[0] == own.splitlines()[0]  # the BLEU line
    nbest = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", "--generate-log", tmp_path / "nbest.log",
                "--ref", ref).stdout
    assert nbest.splitlines()[0] == own.splitlines()[0]  # two D- lines a sentence: the best is scored
    assert (tmp_path / "log.hyp").read_text() == (tmp_path / "own.hyp").read_text()
    for args, message in (((ckpt, "--generate-log", tmp_path / "gen.log"), "not both"), ((), "neither is given"),
                          (("--generate-log", tmp_path / "short.log"), "76 hypotheses for 77 references"),
                          (("--generate-log", tmp_path / "pieces.log"), "holds sentencepiece pieces"),
                          (("--generate-log", tmp_path / "d-only.log"), "holds no T- lines: give fairseq-generate's"),
                          (("--generate-log", tmp_path / "twice.log"), "more than once (S-"),
                          (("--generate-log", tmp_path / "gen.log", "--beam", "3", "--post-process", "none"),
                           "scores a finished decoding: --beam, --post-process would not apply")):
        proc = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", *args, "--ref", ref, check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    proc = run("python", SCRIPTS / "evaluate.py", tmp_path / "no-bin", check=False)  # named before the data
    assert proc.returncode != 0 and "neither is given" in proc.stderr, proc.stderr[-2000:]


def test_evaluate_raw_file_pair_given_by_path(trained_dir, raw, tmp_path):
    pair = tmp_path / "mine"
    pair.mkdir()
    (pair / "a.src").write_text("eins zwei drei\nvier fünf\n")
    (pair / "a.tgt").write_text("three two one\nfive four\n")
    out = run("python", SCRIPTS / "evaluate.py", trained_dir / "bin", trained_dir / "ckpt" / "checkpoint_best.pt",
              "--src-raw", pair / "a.src", "--ref", pair / "a.tgt", "--spm", trained_dir / "spm.model",
              "--post-process", "sentencepiece", "--hyp-out", pair / "a.hyp").stdout
    assert "sentences = 2" in out
    assert (pair / "a.hyp").read_text().splitlines() == ["three two one", "five four"]


def test_hub_translate_api(trained_dir):
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    model = RNNSeq2SeqModel.from_pretrained(str(trained_dir))
    assert model.translate(["eins zwei drei", "sieben acht"], beam=5) == ["three two one", "eight seven"]


def test_plot_training_curve(trained_dir, tmp_path):
    out = run("python", SCRIPTS / "plot_training.py", trained_dir / "ckpt" / "train.log",
              "--out", tmp_path / "c.png").stdout
    assert "epochs)" in out
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = trained_dir / "ckpt" / "train.log"
    out = run("python", SCRIPTS / "plot_training.py", log, log, "--labels", "a", "b",
              "--out", tmp_path / "lc.png").stdout
    assert re.search(r"a: \d+ epochs, b: \d+ epochs", out)
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run("python", SCRIPTS / "plot_training.py", log, log, "--labels", "a", check=False)
    assert proc.returncode != 0 and "1 --labels for 2 logs" in proc.stderr


def epoch_lines(epochs, loss="2.5", start="No existing checkpoint found ckpt/checkpoint_last.pt") -> str:
    """fairseq-train's line at its START (a new run, or a resume: 'Loaded checkpoint'), then its
    end-of-epoch train and valid lines (simple log format) for EPOCHS."""
    return f"2026-01-01 | INFO | fairseq.trainer | {start}\n" + "".join(
        f"2026-01-01 | INFO | train | epoch {e:03d} | loss {loss} | wall {60 * e}\n"
        f"2026-01-01 | INFO | valid | epoch {e:03d} | valid on 'valid' subset | loss 3.0 | bleu {e}.5\n"
        for e in epochs)


@pytest.mark.parametrize("case, message", [
    ("not a figure suffix", "error: --out {tmp}/plot.txt: name a figure file ending in .png, .pdf, .svg"),
    ("no suffix", "error: --out {tmp}/plot: name a figure file ending in"),
    ("missing folder", "error: --out: cannot write {tmp}/no/plot.png: folder {tmp}/no does not exist"),
    ("the log itself", "error: --out: cannot write {tmp}/a/run.png: it is an input of this run"),
    ("a file that is not a figure", "error: --out: cannot write {tmp}/notes.png: it exists and is not an earlier"),
    ("an image made elsewhere", "error: --out: cannot write {tmp}/holiday.png: it exists and is not an earlier"),
    ("a folder as the log", "error: {tmp}/a is a folder"),
    ("one label twice", "error: --labels x x: give each log its own label"),
    ("a comparison without BLEU", "error: {tmp}/b/train.log holds no validation BLEU (fairseq-train --eval-bleu)"),
])
def test_plot_training_refuses_in_one_line_and_writes_nothing(tmp_path, case, message):
    for run_dir in ("a", "b"):
        (tmp_path / run_dir).mkdir()
        (tmp_path / run_dir / "train.log").write_text(epoch_lines(range(1, 4)))
    (tmp_path / "a" / "run.png").write_text(epoch_lines(range(1, 4)))  # a log named like a figure
    if case == "a comparison without BLEU":
        (tmp_path / "b" / "train.log").write_text(epoch_lines(range(1, 4)).replace("| bleu", "| x"))
    (tmp_path / "notes.png").write_text("my notes\n")
    (tmp_path / "holiday.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # a PNG the scripts did not write
    logs = [tmp_path / "a" / "train.log"]
    args = {"not a figure suffix": [*logs, "--out", tmp_path / "plot.txt"],
            "no suffix": [*logs, "--out", tmp_path / "plot"],
            "missing folder": [*logs, "--out", tmp_path / "no" / "plot.png"],
            "the log itself": [tmp_path / "a" / "run.png"],
            "a file that is not a figure": [*logs, "--out", tmp_path / "notes.png"],
            "an image made elsewhere": [*logs, "--out", tmp_path / "holiday.png"],
            "a folder as the log": [tmp_path / "a"],
            "one label twice": [*logs, tmp_path / "b" / "train.log", "--labels", "x", "x"],
            "a comparison without BLEU": [*logs, tmp_path / "b" / "train.log", "--out", tmp_path / "c.png"]}[case]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = run("python", SCRIPTS / "plot_training.py", *args, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith(message.format(tmp=tmp_path)), proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_plot_training_tells_runs_apart(tmp_path):
    """Logs in folders of one name get labels that tell them apart; a log appended by a new run is
    plotted from its last run and says so, a resume that repeats epochs goes on the same run; an
    infinite loss is drawn, not a KeyError."""
    for name in ("x", "y"):
        (tmp_path / name / "ckpt").mkdir(parents=True)
    resume = "Loaded checkpoint ckpt/checkpoint_last.pt (epoch 3 @ 30 updates)"
    (tmp_path / "x" / "ckpt" / "train.log").write_text(epoch_lines(range(1, 6)) + epoch_lines(range(1, 3)))
    (tmp_path / "y" / "ckpt" / "train.log").write_text(epoch_lines(range(1, 5), loss="inf")
                                                       + epoch_lines(range(3, 6), start=resume))
    out = run("python", SCRIPTS / "plot_training.py", tmp_path / "x" / "ckpt" / "train.log",
              tmp_path / "y" / "ckpt" / "train.log", "--out", tmp_path / "c.svg").stdout
    assert f"{tmp_path}/x/ckpt/train.log holds 2 runs (each started from nothing): plotting the last" in out
    assert "(x/ckpt: 2 epochs, y/ckpt: 5 epochs)" in out and "y/ckpt/train.log holds" not in out
    assert (tmp_path / "c.svg").read_bytes().startswith(b"<?xml")
    for _ in range(2):  # its own figure, unchanged, is replaced; once changed, it is not
        out = run("python", SCRIPTS / "plot_training.py", tmp_path / "y" / "ckpt" / "train.log").stdout
        assert (tmp_path / "y" / "ckpt" / "train.png").read_bytes()[:4] == b"\x89PNG" and "5 epochs" in out
    with open(tmp_path / "y" / "ckpt" / "train.png", "ab") as f:
        f.write(b"edited")
    proc = run("python", SCRIPTS / "plot_training.py", tmp_path / "y" / "ckpt" / "train.log", check=False)
    assert proc.returncode != 0 and "exists and is not an earlier output of this kind" in proc.stderr


def test_plot_training_reads_fairseq_hydra_trains_log():
    """Hydra's log format ("[time][train][INFO] - epoch 001 | ...") reads as fairseq-train's does."""
    from scripts.plot_training import parse

    hydra = "".join(f"[2026-01-01 00:00:00,000][{name}][INFO] - " + line.split(f" | {name} | ", 1)[1] + "\n"
                    for line in epoch_lines(range(1, 4)).splitlines()[1:] for name in ("train", "valid")
                    if f" | {name} | " in line)
    assert parse(hydra) == parse(epoch_lines(range(1, 4)))


def test_plot_training_counts_the_time_before_a_resume():
    """fairseq's wall clock starts again at a resume: the curve's minutes go on from where it stopped."""
    from scripts.plot_training import parse

    resume = "Loaded checkpoint ckpt/checkpoint_last.pt (epoch 2 @ 20 updates)"
    curves, runs = parse(epoch_lines(range(1, 3)) + epoch_lines(range(3, 5), start=resume))
    assert runs == 1 and [curves["train"][e]["wall"] for e in range(1, 5)] == [60, 120, 300, 360]


@pytest.mark.parametrize("config, arch", [("multi30k", "rnn_seq2seq_multi30k"),
                                          ("multi30k_attention", "rnn_seq2seq_attention_multi30k")])
def test_multi30k_hydra_config_trains_the_preset_it_spells_out(prepared, tmp_path, config, arch):
    """Hydra applies no --arch preset, so each YAML spells its preset out: every option the arch
    function sets must come out of fairseq-hydra-train with the arch function's value."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    save = tmp_path / "ckpt"
    run("fairseq-hydra-train", "--config-dir", ROOT / "configs", "--config-name", config,
        f"task.data={prepared / 'bin'}", f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={save}",
        "model.encoder_hidden_size=32", "model.decoder_hidden_size=32", "optimization.max_update=3", cwd=tmp_path)
    model = torch.load(save / "checkpoint_last.pt", weights_only=True)["cfg"]["model"]
    preset = Namespace(encoder_hidden_size=32, decoder_hidden_size=32)
    ARCH_CONFIG_REGISTRY[arch](preset)
    assert {k: model[k] for k in vars(preset)} == vars(preset)


def test_hub_refuses_a_pieces_model_without_its_sentencepiece_model(trained_dir, tmp_path):
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    bare = tmp_path / "model"
    for folder in ("bin", "ckpt"):
        shutil.copytree(trained_dir / folder, bare / folder)
    message = rf"{bare} holds a model trained on sentencepiece pieces but no spm.model"
    with pytest.raises(FileNotFoundError, match=message):
        RNNSeq2SeqModel.from_pretrained(str(bare))


@pytest.mark.parametrize("args, message", [
    ([], r"the model writes sentencepiece pieces .*: pass --post-process sentencepiece"),
    (["--post-process", "sentencepiece", "--src-raw", "SRC"], r"the model reads sentencepiece pieces: pass --spm"),
])
def test_evaluate_refuses_pieces_without_sentencepiece_options(trained_dir, raw, tmp_path, args, message):
    """Data that prepare.py did not make (no prepare.json beside it: no default --post-process)."""
    args = [str(raw / "test.src") if a == "SRC" else a for a in args]
    data = shutil.copytree(trained_dir / "bin", tmp_path / "bin")
    proc = run("python", SCRIPTS / "evaluate.py", data, trained_dir / "ckpt" / "checkpoint_best.pt",
               "--ref", raw / "test.tgt", *args, check=False)
    assert proc.returncode != 0 and re.search(message, proc.stderr), proc.stderr[-2000:]


def test_bleu_by_length_scores_each_bucket_on_its_own_sentences(tmp_path):
    """Two systems: one perfect on short sources only, one perfect on long sources only (its other
    translations empty, as evaluate.py's --hyp-out writes an empty translation)."""
    src = ["a b", "a b c", "a " * 11 + "b", "a " * 20 + "c"]
    ref = ["the cat sat on the mat", "a dog runs in the snow", "two men play a game of chess",
           "a woman rides a red bike down the hill"]
    wrong = "zebra quantum lamp"
    files = {"src": src, "ref": ref, "short": ref[:2] + [wrong] * 2, "long": ["", wrong] + ref[2:]}
    for name, lines in files.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    out = run("python", ROOT / "lab" / "bleu_by_length.py", tmp_path / "src", tmp_path / "ref",
              f"short={tmp_path / 'short'}", f"long={tmp_path / 'long'}", "--edges", "10",
              "--json", tmp_path / "by_length.json").stdout
    rows = json.loads((tmp_path / "by_length.json").read_text())["buckets"]
    assert [(r["source_words"], r["sentences"]) for r in rows] == [("1-10", 2), ("11+", 2)], out
    assert rows[0]["short"]["bleu"] == 100 and rows[0]["long"]["bleu"] == 0
    assert rows[1]["short"]["bleu"] == 0 and rows[1]["long"]["bleu"] == 100


@pytest.mark.parametrize("drop, message", [("ref", r"error: REF has 3 lines but SRC_RAW has 4"),
                                           ("hyp", r"error: sys has 3 lines but SRC_RAW has 4")])
def test_bleu_by_length_refuses_files_of_other_lengths(tmp_path, drop, message):
    for name in ("src", "ref", "hyp"):
        (tmp_path / name).write_text("a b c\n" * (3 if name == drop else 4))
    proc = run("python", ROOT / "lab" / "bleu_by_length.py", tmp_path / "src", tmp_path / "ref",
               f"sys={tmp_path / 'hyp'}", check=False)
    assert proc.returncode != 0 and re.search(message, proc.stderr), proc.stderr[-2000:]


def test_plot_attention_draws_the_weights_of_an_attention_model(prepared, trained_dir, tmp_path):
    """An attention model's heat map is written as a PNG; a model without attention is refused."""
    save = tmp_path / "attn"
    run("bash", SCRIPTS / "train.sh", prepared / "bin", save, *TINY, "--decoder-attention", "additive",
        "--max-update", "30", "--disable-validation", env={"BUDGET_HOURS": "0.1"})
    script, sentence = SCRIPTS / "plot_attention.py", "drei sieben zwei"
    out = run("python", script, prepared, save / "checkpoint_last.pt", sentence, "--out", tmp_path / "a.png").stdout
    assert f"wrote {tmp_path / 'a.png'}" in out
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run("python", script, trained_dir, trained_dir / "ckpt" / "checkpoint_best.pt", sentence,
               "--out", tmp_path / "b.png", check=False)
    assert proc.returncode != 0 and "has no attention (--decoder-attention none)" in proc.stderr
    assert not (tmp_path / "b.png").exists()
    plain = trained_dir / "ckpt" / "checkpoint_best.pt"  # an ensemble's weights would be the mean over both
    for spec in (f"{save / 'checkpoint_last.pt'}:{plain}", f"{plain}:{save / 'checkpoint_last.pt'}"):
        proc = run("python", script, prepared, spec, sentence, "--out", tmp_path / "b.png", check=False)
        assert proc.returncode != 0 and f"error: {plain} has no attention" in proc.stderr, proc.stderr
    odd = tmp_path / "run:1"  # a single file whose name holds ':', which fairseq would split
    shutil.copytree(save, odd)
    run("python", script, prepared, odd / "checkpoint_last.pt", sentence, "--out", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for args, message in (([sentence, "--out", tmp_path / "b.txt"], "name a figure file ending in .png"),
                          (["  ", "--out", tmp_path / "b.png"], "the sentence is empty: nothing to translate"),
                          ([sentence, "--beam", "0"], "argument --beam: takes a whole number >= 1, got '0'"),
                          ([sentence, "--out", tmp_path / "no" / "b.png"], f"folder {tmp_path / 'no'} does not exist"),
                          (["\u00a7\u00a7 \u00a4", "--out", tmp_path / "b.png"], "got an empty translation")):
        proc = run("python", script, prepared, save / "checkpoint_last.pt", *args, check=False)
        assert proc.returncode != 0 and message in proc.stderr.strip().splitlines()[-1], proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "b.png").exists()
    for model_dir, problem in ((tmp_path / "nowhere", "does not exist"),
                               (prepared / "bin", "holds no bin/ folder: give the folder scripts/prepare.py made "
                                                  "(spm.model, bin/), or one laid out as it is")):
        proc = run("python", script, model_dir, save / "checkpoint_last.pt", sentence, "--out", tmp_path / "b.png",
                   check=False)
        assert proc.returncode != 0 and proc.stderr.strip() == f"error: MODEL_DIR {model_dir} {problem}", proc.stderr


@pytest.mark.parametrize("extra, expect", [
    (["--lr-scheduler", "inverse_sqrt"], {"lr_scheduler": ("inverse_sqrt", {"warmup_updates": 1})}),
    (["--optimizer=sgd", "--momentum", "0.9"], {"optimizer": ("sgd", {"momentum": 0.9})}),
    (["--criterion", "cross_entropy"], {"criterion": ("cross_entropy", {})}),
    (["--criterion", "label_smoothed_cross_entropy", "--lr-scheduler", "cosine"],
     {"criterion": ("label_smoothed_cross_entropy", {"label_smoothing": 0.1}),
      "lr_scheduler": ("cosine", {"warmup_updates": 1, "lr_shrink": 0.5})}),
])
def test_train_sh_takes_another_criterion_optimizer_or_scheduler(prepared, tmp_path, extra, expect):
    """train.sh sets options of its criterion, optimizer and scheduler; choosing another one keeps
    the options that one defines and drops the rest (fairseq-train refuses unknown options). The
    warmup is a tenth of the run, at most 100 updates: 1 for --max-update 2."""
    sizes = TINY[:TINY.index("--label-smoothing")]  # train.sh's own label smoothing, not the tests' 0
    run("bash", SCRIPTS / "train.sh", prepared / "bin", tmp_path, *sizes, *extra, "--max-update", "2",
        "--disable-validation", "--no-epoch-checkpoints", env={"BUDGET_HOURS": "0.1"})
    cfg = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["cfg"]
    for section, (name, values) in expect.items():
        # a component without a dataclass (sgd) keeps its options in an argparse Namespace
        got = vars(cfg[section]) if isinstance(cfg[section], Namespace) else cfg[section]
        assert got.get("_name", got.get(section)) == name
        assert {k: got[k] for k in values} == values


def test_hub_takes_the_sentencepiece_model_a_checkpoint_or_the_caller_names(trained_dir, tmp_path):
    """No spm.model in the folder: the one the checkpoint was trained with (--bpe sentencepiece), or
    sentencepiece_model= alone, encodes the text, checked against the dictionary like the folder's."""
    from user_dir.models.rnn_seq2seq import RNNSeq2SeqModel

    bare = tmp_path / "model"
    for folder in ("bin", "ckpt"):
        shutil.copytree(trained_dir / folder, bare / folder)
    model = str(trained_dir / "spm.model")
    expected = RNNSeq2SeqModel.from_pretrained(str(trained_dir)).translate(["eins zwei"], beam=2)
    assert RNNSeq2SeqModel.from_pretrained(str(bare), sentencepiece_model=model).translate(
        ["eins zwei"], beam=2) == expected
    not_a_model = str(bare / "bin" / "dict.src.txt")
    with pytest.raises(ValueError, match=rf"^{re.escape(not_a_model)} is not a sentencepiece model$"):
        RNNSeq2SeqModel.from_pretrained(str(bare), sentencepiece_model=not_a_model)
    with pytest.raises(FileNotFoundError, match=r"^from_pretrained: sentencepiece_model \S+/nope.model does not exist"):
        RNNSeq2SeqModel.from_pretrained(str(bare), sentencepiece_model=str(tmp_path / "nope.model"))
    path = bare / "ckpt" / "checkpoint_best.pt"
    state = torch.load(path, weights_only=False)
    state["cfg"]["bpe"] = {"_name": "sentencepiece", "sentencepiece_model": model,
                           "sentencepiece_enable_sampling": False, "sentencepiece_alpha": None}
    torch.save(state, path)
    assert RNNSeq2SeqModel.from_pretrained(str(bare)).translate(["eins zwei"], beam=2) == expected
    state["cfg"]["bpe"]["sentencepiece_model"] = str(tmp_path / "elsewhere" / "spm.model")  # another machine's
    torch.save(state, path)
    with pytest.raises(FileNotFoundError, match=r"^from_pretrained: the checkpoint's --sentencepiece-model: file "
                                                r"\S+/elsewhere/spm.model not found: copy spm.model into"):
        RNNSeq2SeqModel.from_pretrained(str(bare))


def test_plot_training_reads_fairseq_trains_log_file(toy_bin, tmp_path):
    """fairseq-train --log-file writes the messages alone ("epoch 001 | ..."), without the lines that
    start a run or a resume: a start whose first epoch is 1 begins a run. A run, its resume and a new
    run appended to one file read as their stdout does."""
    from scripts.plot_training import parse

    log = tmp_path / "file.log"
    train = ["fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--log-file", log,
             "--no-epoch-checkpoints", "--log-format", "simple"]
    stdout = [run(*train, "--save-dir", tmp_path / "a", "--max-epoch", str(epochs)).stdout for epochs in (2, 3)]
    assert "epoch 003 | valid on" in log.read_text() and "No existing checkpoint" not in log.read_text()
    assert parse(log.read_text()) == parse("".join(stdout)) and parse("".join(stdout))[1] == 1
    assert sorted(parse(log.read_text())[0]["train"]) == [1, 2, 3]
    run(*train, "--save-dir", tmp_path / "b", "--max-epoch", "1")
    curves, runs = parse(log.read_text())
    assert runs == 2 and sorted(curves["train"]) == sorted(curves["valid"]) == [1]
