"""lab/gpu_recipes.sh (and lab/gpu_env.sh, which lab/gpu_check.sh shares) as a dry run on the CPU:
what a visit to a GPU machine runs, so that the visit does not find a broken script."""
import json
import tarfile

from helpers import ROOT, run

RECIPES = ROOT / "lab" / "gpu_recipes.sh"


def test_a_recipe_trains_scores_and_packs_its_logs_into_out(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    proc = run("bash", RECIPES, "", "attn",
               env={"GPU_CHECK_CPU": "1", "RECIPES_UPDATES": "1", "OUT": str(out), "LOG_DIR": str(logs)})
    assert "gpu_recipes: 4 of 4 stages passed" in proc.stdout  # prepare, train, valid and test scores
    assert "'max_update': 1" in (logs / "train_attn.log").read_text()
    assert "'model': {'_name': 'rnn_seq2seq_attention_multi30k'" in (logs / "train_attn.log").read_text()
    scores = json.loads((logs / "attn_test.json").read_text())
    assert scores["sentences"] == len((logs / "attn_test.hyp").read_text().splitlines()) > 0
    assert f"attn_test BLEU {scores['bleu']} chrF2 {scores['chrf']}" in proc.stdout
    # what the device tool returns: at most 8 files; the logs travel packed
    assert sorted(p.name for p in out.iterdir()) == ["gpu_recipes.summary.txt", "gpu_recipes.tar.gz"]
    with tarfile.open(out / "gpu_recipes.tar.gz") as packed:
        names = {name.removeprefix("./") for name in packed.getnames()}
    assert {"summary.txt", "train_attn.log", "attn_valid.json", "attn_test.json", "attn_test.hyp"} <= names
    assert (out / "gpu_recipes.summary.txt").read_text() == (logs / "summary.txt").read_text()


def test_an_unknown_recipe_is_one_line_before_anything_runs(tmp_path):
    proc = run("bash", RECIPES, "", "attn", "lstn", check=False, env={"LOG_DIR": str(tmp_path / "logs")})
    assert proc.returncode == 2
    assert proc.stderr == "error: unknown recipe 'lstn': choose from attn, pair, lstm, transformer\n"
    assert not (tmp_path / "logs").exists()
