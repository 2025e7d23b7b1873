"""Write a toy parallel corpus: the target is the source reversed, each word translated.

Usage:
    python scripts/make_toy_data.py data/toy            # what ships in the repo
    python scripts/make_toy_data.py /tmp/toy --train 500 --seed 3
    python scripts/make_toy_data.py /tmp/rev --words 100 --train 6000 --min-len 3 --max-len 7

German number words in, English number words out, reversed: ``eins zwei drei`` ->
``three two one``. With ``--words N`` (N > 12) the vocabulary is N made-up source words, each
with its own made-up target word. A model that ignores the source scores near zero BLEU.
Letter-only words, so sentencepiece can keep them whole. Writes {train,valid,test}.{src,tgt}.
"""
import argparse
import itertools
import random
from pathlib import Path

SRC = "null eins zwei drei vier fünf sechs sieben acht neun zehn elf".split()
TGT = "zero one two three four five six seven eight nine ten eleven".split()
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70, so up to 2450 made-up words


def vocabulary(words: int) -> tuple[list[str], list[str]]:
    """Number words for up to 12 words; else two-syllable words, distinct on each side."""
    if words <= len(SRC):
        return SRC[:words], TGT[:words]
    made_up = [a + b for a, b in itertools.product(SYLLABLES, repeat=2)]
    if 2 * words > len(made_up):
        raise SystemExit(f"error: --words {words} is more than {len(made_up) // 2} made-up words allow")
    return made_up[:words], made_up[words : 2 * words]


def make_pairs(n: int, min_len: int, max_len: int, words: tuple[list[str], list[str]],
               rng: random.Random) -> list[tuple[str, str]]:
    src, tgt = words
    pairs = []
    for _ in range(n):
        ids = [rng.randrange(len(src)) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((" ".join(src[i] for i in ids), " ".join(tgt[i] for i in reversed(ids))))
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--train", type=int, default=3000, help="training pairs")
    p.add_argument("--valid", type=int, default=100, help="validation pairs")
    p.add_argument("--test", type=int, default=203, help="test pairs (not a multiple of 8 on purpose)")
    p.add_argument("--min-len", type=int, default=2)
    p.add_argument("--max-len", type=int, default=7)
    p.add_argument("--words", type=int, default=len(SRC), help="vocabulary size of each side")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    words = vocabulary(args.words)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        pairs = make_pairs(getattr(args, split), args.min_len, args.max_len, words, rng)
        for side, lines in zip(("src", "tgt"), zip(*pairs)):
            (args.out_dir / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
