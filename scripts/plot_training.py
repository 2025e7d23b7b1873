"""Plot train/valid loss and valid BLEU per epoch from a fairseq-train log, or compare several
runs' validation BLEU against training minutes (learning curves).

Usage:
    python scripts/plot_training.py runs/multi30k/de-en/ckpt/train.log            # -> train.png beside it
    python scripts/plot_training.py LOG --out curve.png --title "rnn_seq2seq de-en"
    python scripts/plot_training.py A/train.log B/train.log --labels ours lstm --out curves.png

With several logs, x is the run's wall-clock time at the end of each epoch (fairseq's ``wall``,
validation included, summed over resumes; CPU-minutes for a one-thread run) and y its validation BLEU.

Reads fairseq's end-of-epoch lines (``| train | epoch 003 | loss 5.1 | ...`` and
``| valid | epoch 003 | valid on 'valid' subset | loss ... | bleu 21.3 | ...``), in simple or
tqdm/none log formats, fairseq-hydra-train's (``[...][train][INFO] - epoch 003 | ...``) and
fairseq-train's ``--log-file`` (``epoch 003 | ...``, validation lines told by ``valid on``; a start
whose first epoch is 1 begins a run there, another is a resume). A
resumed run's repeated epochs keep their last values; a log that holds
several runs (fairseq-train's "No existing checkpoint found" starts each) is plotted from its
last run, and says so.
"""
import argparse
import re
from pathlib import Path

from user_dir.files import not_a_file
from user_dir.workflow import check_figure, pyplot, save_figure, script_main

# fairseq-train's "... | INFO | train | epoch 003 | ...", fairseq-hydra-train's "[...][train][INFO] - epoch 003 | ..."
# or --log-file's "epoch 003 | ..." (its validation lines go on "valid on 'valid' subset")
LINE = re.compile(r"(?:\| (?P<plain>train|valid) \| |\]\[(?P<hydra>train|valid)\]\[\w+\] - |^)"
                  r"epoch (?P<epoch>\d+) \|(?P<rest>.*)")
FIELD = re.compile(r"\| (\w+) (-?inf|nan|[-\d.]+)")


NEW_RUN = "No existing checkpoint found"  # fairseq-train's line when it starts from nothing (not a resume)
RESUMED = "Loaded checkpoint"  # ... when it resumes: its ``wall`` clock starts again from 0
# --log-file holds neither line: each start writes its config first, and the run's first epoch tells
# a start from nothing (epoch 1) from a resume
STARTED = re.compile(r"^\{'_name': None, 'common': ")


def parse(log: str) -> tuple[dict[str, dict[int, dict[str, float]]], int]:
    """{"train"|"valid": {epoch: {metric: value}}} from the end-of-epoch lines of the log's last run,
    and the number of runs (each fairseq-train start from nothing begins one; a resume goes on, its
    ``wall`` added to the time before it)."""
    runs, before, last, started = 0, 0.0, 0.0, False
    curves: dict[str, dict[int, dict[str, float]]] = {"train": {}, "valid": {}}
    for line in log.splitlines():
        m = LINE.search(line)
        if NEW_RUN in line or (started and m and int(m["epoch"]) == 1):
            runs, curves, before, last = runs + 1, {"train": {}, "valid": {}}, 0.0, 0.0
        elif RESUMED in line or (started and m):
            before = last
        started = bool(STARTED.match(line)) or (started and not m)
        if m:
            split = m["plain"] or m["hydra"] or ("valid" if m["rest"].startswith(" valid on ") else "train")
            epoch, rest = int(m["epoch"]), "|" + m["rest"]
            values = {k: float(v) for k, v in FIELD.findall(rest)}
            if split == "train" and "wall" in values:
                values["wall"] = last = before + values["wall"]
            curves[split][epoch] = values
    return curves, max(runs, 1)


def plot(curves: dict, out: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, style in (("train", "-o"), ("valid", "-s")):
        epochs = sorted(curves[split])
        ax.plot(epochs, [curves[split][e]["loss"] for e in epochs], style, label=f"{split} loss (base 2)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    bleu = {e: v["bleu"] for e, v in curves["valid"].items() if "bleu" in v}
    if bleu:
        ax2 = ax.twinx()
        ax2.plot(sorted(bleu), [bleu[e] for e in sorted(bleu)], "-^", color="tab:green", label="valid BLEU")
        ax2.set_ylabel("BLEU")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)


def plot_bleu_vs_minutes(runs: dict[str, dict], out: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, curves in runs.items():
        epochs = sorted(e for e, v in curves["valid"].items() if "bleu" in v and "wall" in curves["train"].get(e, {}))
        ax.plot([curves["train"][e]["wall"] / 60 for e in epochs], [curves["valid"][e]["bleu"] for e in epochs],
                "-o", markersize=3, label=label)
    ax.set_xlabel("training minutes (validation included)")
    ax.set_ylabel("valid BLEU")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)


def read_curves(log: Path) -> dict:
    if not_a_file(log):
        raise SystemExit(f"error: {log} {not_a_file(log)}")
    curves, runs = parse(log.read_text(encoding="utf-8", errors="replace"))
    if not curves["train"] or not curves["valid"]:
        raise SystemExit(f"error: no end-of-epoch train/valid lines in {log}: plot_training.py reads fairseq-train's "
                         "output and --log-file in --log-format simple, tqdm or none (train.sh's train.log), and "
                         "fairseq-hydra-train's, with validation; not --log-format json")
    if runs > 1:
        print(f"{log} holds {runs} runs (each started from nothing): plotting the last")
    return curves


def default_labels(logs: list[Path]) -> list[str]:
    """Each log's folder name, or as many of its last folders as tell the logs apart (runs/a/ckpt, runs/b/ckpt)."""
    parents = [log.resolve().parent.parts for log in logs]
    for depth in range(1, max(map(len, parents)) + 1):
        labels = ["/".join(parts[-depth:]) for parts in parents]
        if len(set(labels)) == len(labels):
            return labels
    return [str(log) for log in logs]  # logs of one folder: their own names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path, nargs="+")
    p.add_argument("--labels", nargs="+", help="one per log (default: each log's folder name, or as much of "
                                                "its path as tells the logs apart)")
    p.add_argument("--out", type=Path, help="a .png, .pdf, .svg or .jpg file (default: the first log's name with "
                                            ".png)")
    p.add_argument("--title", default="")
    args = p.parse_args()
    labels = args.labels or default_labels(args.log)
    if len(labels) != len(args.log):
        raise SystemExit(f"error: {len(labels)} --labels for {len(args.log)} logs")
    if len(set(labels)) != len(labels):
        raise SystemExit(f"error: --labels {' '.join(labels)}: give each log its own label")
    out = args.out or args.log[0].with_suffix(".png")
    check_figure(out, args.log)
    runs = {label: read_curves(log) for label, log in zip(labels, args.log)}
    if len(runs) == 1:
        plot(runs[labels[0]], out, args.title or labels[0])
    else:
        for (label, curves), log in zip(runs.items(), args.log):  # else a legend entry without a line
            if not any("bleu" in v for v in curves["valid"].values()):
                raise SystemExit(f"error: {log} holds no validation BLEU (fairseq-train --eval-bleu): it cannot "
                                 "be compared by BLEU; plot it alone for its losses")
        plot_bleu_vs_minutes(runs, out, args.title)
    print(f"wrote {out} (" + ", ".join(f"{label}: {len(c['train'])} epochs" for label, c in runs.items()) + ")")


if __name__ == "__main__":
    script_main(main)
