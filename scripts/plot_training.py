"""Plot train/valid loss and valid BLEU per epoch from a fairseq-train log.

Usage:
    python scripts/plot_training.py runs/multi30k/de-en/ckpt/train.log            # -> train.png beside it
    python scripts/plot_training.py LOG --out curve.png --title "rnn_seq2seq de-en"

Reads fairseq's end-of-epoch lines (``| train | epoch 003 | loss 5.1 | ...`` and
``| valid | epoch 003 | valid on 'valid' subset | loss ... | bleu 21.3 | ...``), in simple or
tqdm/none log formats. A resumed run's repeated epochs keep their last values.
"""
import argparse
import re
from pathlib import Path

LINE = re.compile(r"\| (train|valid) \| epoch (\d+) \|(.*)")
FIELD = re.compile(r"\| (\w+) ([-\d.]+)")


def parse(log: str) -> dict[str, dict[int, dict[str, float]]]:
    """{"train"|"valid": {epoch: {metric: value}}} from end-of-epoch log lines."""
    curves: dict[str, dict[int, dict[str, float]]] = {"train": {}, "valid": {}}
    for line in log.splitlines():
        m = LINE.search(line)
        if m:
            split, epoch, rest = m.group(1), int(m.group(2)), "|" + m.group(3)
            curves[split][epoch] = {k: float(v) for k, v in FIELD.findall(rest)}
    return curves


def plot(curves: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(out, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path)
    p.add_argument("--out", type=Path, help="PNG path (default: the log's name with .png)")
    p.add_argument("--title", default="")
    args = p.parse_args()
    if not args.log.is_file():
        raise SystemExit(f"error: {args.log} does not exist")
    curves = parse(args.log.read_text(encoding="utf-8", errors="replace"))
    if not curves["train"] or not curves["valid"]:
        raise SystemExit(f"error: no end-of-epoch train/valid lines in {args.log}")
    out = args.out or args.log.with_suffix(".png")
    plot(curves, out, args.title or args.log.parent.name)
    print(f"wrote {out} ({len(curves['train'])} epochs)")


if __name__ == "__main__":
    main()
