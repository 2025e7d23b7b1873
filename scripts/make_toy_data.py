"""Write a toy parallel corpus: the target is the source reversed, each word translated.

Usage:
    python scripts/make_toy_data.py data/toy            # what ships in the repo
    python scripts/make_toy_data.py /tmp/toy --train 500 --seed 3

German number words in, English number words out, reversed: ``eins zwei drei`` ->
``three two one``. A model that ignores the source scores near zero BLEU. Letter-only words,
so sentencepiece can keep them whole. Writes {train,valid,test}.{src,tgt}.
"""
import argparse
import random
from pathlib import Path


SRC = "null eins zwei drei vier fünf sechs sieben acht neun zehn elf".split()
TGT = "zero one two three four five six seven eight nine ten eleven".split()


def make_pairs(n: int, min_len: int, max_len: int, rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(n):
        ids = [rng.randrange(len(SRC)) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((" ".join(SRC[i] for i in ids), " ".join(TGT[i] for i in reversed(ids))))
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--train", type=int, default=3000, help="training pairs")
    p.add_argument("--valid", type=int, default=100, help="validation pairs")
    p.add_argument("--test", type=int, default=203, help="test pairs (not a multiple of 8 on purpose)")
    p.add_argument("--min-len", type=int, default=2)
    p.add_argument("--max-len", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        pairs = make_pairs(getattr(args, split), args.min_len, args.max_len, rng)
        for side, lines in zip(("src", "tgt"), zip(*pairs)):
            (args.out_dir / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
