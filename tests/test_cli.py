"""End to end through the real fairseq CLIs on the shipped toy corpus (reverse + translate words)."""
import json

import pytest
import torch

from conftest import ROOT, TOY, TINY_MODEL, TRAIN_ARGS, USER_DIR, run

pytestmark = pytest.mark.slow


def test_generate_beam_translates_every_test_sentence_and_learns_the_task(toy_bin, trained, tmp_path):
    """Beam 5 over all 203 test sentences (not a multiple of 8), scored on the raw references.

    A model that ignores the source (or a decoder that loses it) scores near 0 BLEU on reversal.
    """
    hyp, summary = tmp_path / "test.hyp", tmp_path / "test.json"
    run("python", ROOT / "scripts" / "evaluate.py", toy_bin, trained, "--ref", TOY / "test.tgt",
        "--beam", "5", "--hyp-out", hyp, "--json", summary)
    result = json.loads(summary.read_text())
    refs = (TOY / "test.tgt").read_text().splitlines()
    hyps = hyp.read_text().splitlines()
    assert result["sentences"] == len(hyps) == len(refs) == 203
    assert result["bleu"] > 70, result
    # corpus order restored: hypothesis i is the translation of source i
    exact = sum(h == r for h, r in zip(hyps, refs))
    assert exact > 0.6 * len(refs), exact
    assert "nrefs:1" in result["bleu_signature"]


def test_greedy_generate_with_fairseq_scorer(toy_bin, trained):
    out = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", trained, "--beam", "1",
              "--batch-size", "64", "--scoring", "sacrebleu").stdout
    assert "Generate test with beam=1: BLEU" in out
    assert sum(line.startswith("H-") for line in out.splitlines()) == 203


def test_interactive_translates_a_line(trained, toy_bin):
    out = run("fairseq-interactive", toy_bin, "--user-dir", USER_DIR, "--path", trained,
              "--source-lang", "src", "--target-lang", "tgt", "--beam", "5",
              input="eins zwei drei vier\n").stdout
    hyp = next(line for line in out.splitlines() if line.startswith("H-")).split("\t")[2]
    assert hyp == "four three two one"


def test_hydra_train_with_yaml_config(toy_bin, tmp_path):
    save = tmp_path / "ckpt"
    run("fairseq-hydra-train", "--config-dir", ROOT / "configs", "--config-name", "toy",
        f"task.data={toy_bin}", f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={save}",
        "optimization.max_update=20", cwd=tmp_path)
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)  # the plugin's safe globals suffice
    assert state["cfg"]["model"]["_name"] == "rnn_seq2seq"
    assert state["cfg"]["model"]["encoder_hidden_size"] == 128
    assert state["optimizer_history"][-1]["num_updates"] == 20


def test_arch_preset_d2l_and_label_smoothing(toy_bin, tmp_path):
    run("fairseq-train", toy_bin, "--user-dir", USER_DIR, "--arch", "rnn_seq2seq_d2l", *TRAIN_ARGS,
        "--label-smoothing", "0.1", "--max-update", "5", "--save-dir", tmp_path, "--no-epoch-checkpoints")
    model = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["cfg"]["model"]
    assert (model["cell"], model["encoder_embed_dim"], model["encoder_layers"], model["dropout"]) == ("gru", 32, 2, 0.1)


def test_eval_bleu_checkpoint_loads_for_generate(toy_bin, tmp_path):
    """--eval-bleu stores numpy arrays in the checkpoint; torch>=2.6 weights_only refuses them unless allow-listed."""
    run("fairseq-train", toy_bin, "--user-dir", USER_DIR, *TINY_MODEL, *TRAIN_ARGS, "--max-update", "10",
        "--eval-bleu", "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
        "--save-dir", tmp_path, "--no-epoch-checkpoints")
    # the case the allow-list exists for: without the plugin, torch refuses this checkpoint
    bare = run("python", "-c", f"import torch; torch.load({str(tmp_path / 'checkpoint_best.pt')!r})", check=False)
    assert bare.returncode != 0 and "numpy" in bare.stderr
    out = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", tmp_path / "checkpoint_best.pt",
              "--batch-size", "64").stdout
    assert sum(line.startswith("H-") for line in out.splitlines()) == 203


class Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_checkpoint_with_pickled_code_is_refused(toy_bin, trained, tmp_path):
    state = torch.load(trained, weights_only=True)
    state["extra_state"]["payload"] = Exploit()
    evil = tmp_path / "evil.pt"
    torch.save(state, evil)
    proc = run("fairseq-generate", toy_bin, "--user-dir", USER_DIR, "--path", evil, "--batch-size", "8",
               cwd=tmp_path, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "exec" in proc.stderr and "Unsupported global" in proc.stderr
    assert not (tmp_path / "PWNED").exists()


def test_d2l_preset_learns_a_generated_reversal_task(tmp_path):
    """The textbook's model and size (GRU 32/32, 2 layers) must learn to reverse and translate
    short sentences in a few hundred updates, as the textbook's own model does. Measured on this
    task (2-core machine): 0.87 exact match; the preset before (fairseq's U(-0.1, 0.1)
    initialisation, dropout on its 32-wide embeddings and outputs) 0.39."""
    raw = tmp_path / "raw"
    run("python", ROOT / "scripts" / "make_toy_data.py", raw, "--train", "3000", "--valid", "50", "--test", "201",
        "--min-len", "2", "--max-len", "5", "--seed", "7")
    data = tmp_path / "bin"
    run("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", raw / "train",
        "--validpref", raw / "valid", "--testpref", raw / "test", "--destdir", data, "--workers", "1")
    run("fairseq-train", data, "--user-dir", USER_DIR, "--arch", "rnn_seq2seq_d2l", "--criterion", "masked_ce",
        "--optimizer", "adam", "--lr", "5e-3", "--clip-norm", "1.0", "--max-tokens", "4096", "--max-epoch", "60",
        "--seed", "1", "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar")
    out = run("fairseq-generate", data, "--user-dir", USER_DIR, "--path", tmp_path / "ckpt" / "checkpoint_last.pt",
              "--beam", "5", "--batch-size", "128").stdout
    hyps = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in out.splitlines() if line.startswith("H-")}
    refs = (raw / "test.tgt").read_text().splitlines()
    exact = sum(hyps.get(i) == ref for i, ref in enumerate(refs)) / len(refs)
    assert exact >= 0.75, exact
