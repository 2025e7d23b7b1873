"""How the textbook-sized model learns with each initialisation and dropout placement.

Usage:
    python lab/init_study.py                       # -> runs/init_study/, docs/results/init_study/init_study.json
    python lab/init_study.py --seeds 1 --jobs 2 --out /tmp/study

A generated task (``make_toy_data.py --words 100``: 100 made-up words, each translated, the
order reversed, 3-7 words, 6,000 training pairs) is learned by ``rnn_seq2seq_d2l`` in variants
of ``--init`` and dropout placement, and by the textbook's own model in plain PyTorch
(``lab/d2l_reference``), all with the same few-update recipe (``--max-tokens 4096``, 40
epochs, about 360 updates, Adam 5e-3); each is scored by exact match of beam-5 translations of
the 500 test sentences, per seed. Runs go ``--jobs`` at a time, one thread each.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from user_dir.workflow import ROOT, generated  # fairseq-free: this process only starts others
from user_dir.workflow import USER_DIR as PLUGIN

REFERENCE = ROOT / "lab" / "d2l_reference"
VARIANTS = {  # name -> (user dir, fairseq-train arguments)
    "preset before (--init uniform, dropout everywhere)":
        (PLUGIN, ["--arch", "rnn_seq2seq_d2l", "--init", "uniform", "--dropout-in", "0.1", "--dropout-out", "0.1"]),
    "--init uniform, dropout between layers":
        (PLUGIN, ["--arch", "rnn_seq2seq_d2l", "--init", "uniform"]),
    "--init torch, dropout everywhere":
        (PLUGIN, ["--arch", "rnn_seq2seq_d2l", "--dropout-in", "0.1", "--dropout-out", "0.1"]),
    "preset now (--init torch, dropout between layers)":
        (PLUGIN, ["--arch", "rnn_seq2seq_d2l"]),
    "textbook model in plain PyTorch (lab/d2l_reference)":
        (REFERENCE, ["--arch", "d2l_reference"]),
}
RECIPE = ["--criterion", "masked_ce", "--optimizer", "adam", "--lr", "5e-3", "--clip-norm", "1.0",
          "--max-tokens", "4096", "--max-epoch", "40", "--no-epoch-checkpoints", "--num-workers", "0",
          "--no-progress-bar", "--log-format", "simple", "--log-interval", "1000"]


def run(cmd: list, log: Path | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: {cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def make_task(out: Path) -> Path:
    raw, data = out / "raw", out / "bin"
    if not data.exists():
        run([sys.executable, ROOT / "scripts" / "make_toy_data.py", raw, "--words", "100", "--train", "6000",
             "--valid", "200", "--test", "500", "--min-len", "3", "--max-len", "7", "--seed", "11"])
        run(["fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", raw / "train",
             "--validpref", raw / "valid", "--testpref", raw / "test", "--destdir", data, "--workers", "1"])
    return data


def exact_match(data: Path, user_dir: Path, args: list, seed: int, save: Path, refs: list) -> float:
    save.mkdir(parents=True, exist_ok=True)
    run(["fairseq-train", data, "--user-dir", user_dir, *args, *RECIPE, "--seed", seed, "--save-dir", save],
        log=save / "train.log")
    out = run(["fairseq-generate", data, "--user-dir", user_dir, "--path", save / "checkpoint_last.pt",
               "--beam", "5", "--batch-size", "128"])
    hyps = generated(out.splitlines(), "H-")
    return round(sum(hyps.get(i) == ref for i, ref in enumerate(refs)) / len(refs), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/init_study"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "init_study" / "init_study.json")
    args = p.parse_args()
    data = make_task(args.out.resolve())
    refs = (args.out.resolve() / "raw" / "test.tgt").read_text().splitlines()
    runs = [(number, name, seed) for number, name in enumerate(VARIANTS) for seed in args.seeds]

    def score(run_: tuple) -> float:
        number, name, seed = run_
        return exact_match(data, *VARIANTS[name], seed, args.out.resolve() / f"v{number}_s{seed}", refs)

    with ThreadPoolExecutor(args.jobs) as pool:
        scores = list(pool.map(score, runs))
    table = {name: {} for name in VARIANTS}
    for (_, name, seed), value in zip(runs, scores):
        table[name][seed] = value
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"recipe": RECIPE, "variants": {n: VARIANTS[n][1] for n in VARIANTS},
                                     "exact_match": table}, indent=2) + "\n")
    for name, by_seed in table.items():
        values = list(by_seed.values())
        print(f"{name:60s} " + " ".join(f"{v:.3f}" for v in values) + f"   mean {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()
