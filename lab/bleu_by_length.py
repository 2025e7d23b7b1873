"""Corpus BLEU and chrF of several systems' translations, by source sentence length.

Usage:
    python lab/bleu_by_length.py SRC_RAW REF NAME=HYP [NAME=HYP ...] [--edges 10 15 20] [--json out.json]
    python lab/bleu_by_length.py runs/multi30k/raw/test_2016_flickr.de.gz \\
        runs/multi30k/raw/test_2016_flickr.en.gz none=runs/none.hyp additive=runs/attn.hyp

Sentences are grouped by their source length in words (whitespace-separated), with bucket edges
``--edges`` (default 10 15 20: 1-10, 11-15, 16-20, 21+ words). HYP files are evaluate.py's
``--hyp-out`` (one hypothesis per line, in corpus order); every file must have as many lines as
SRC_RAW and REF. Files are read by user_dir/text.py.
"""
import argparse
import json
import sys

import sacrebleu

from user_dir.files import atomic_write
from user_dir.text import TextError, read_lines


def buckets(lengths: list[int], edges: list[int]) -> list[tuple[str, list[int]]]:
    """(label, sentence indices) per bucket; empty buckets are left out."""
    bounds = [0, *edges, max(lengths + edges) + 1]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        idx = [i for i, n in enumerate(lengths) if lo < n <= hi]
        label = f"{lo + 1}-{hi}" if hi != bounds[-1] else f"{lo + 1}+"
        if idx:
            out.append((label, idx))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src_raw")
    p.add_argument("ref")
    p.add_argument("systems", nargs="+", metavar="NAME=HYP")
    p.add_argument("--edges", type=int, nargs="+", default=[10, 15, 20])
    p.add_argument("--json")
    args = p.parse_args()
    if min(args.edges) < 1:
        p.error("--edges are source lengths in words: give numbers of at least 1")
    try:
        src, ref = read_lines(args.src_raw), read_lines(args.ref)
        systems = {}
        for item in args.systems:
            name, sep, path = item.partition("=")
            if not sep:
                p.error(f"{item}: give systems as NAME=HYP")
            systems[name] = read_lines(path, empty=True)  # evaluate.py writes an empty translation as such
    except TextError as e:
        raise SystemExit(f"error: {e}")
    for name, lines in {"REF": ref, **systems}.items():
        if len(lines) != len(src):
            raise SystemExit(f"error: {name} has {len(lines)} lines but SRC_RAW has {len(src)}")
    table = []
    for label, idx in buckets([len(s.split()) for s in src], sorted(set(args.edges))):
        row = {"source_words": label, "sentences": len(idx)}
        refs = [ref[i] for i in idx]
        for name, hyps in systems.items():
            h = [hyps[i] for i in idx]
            row[name] = {"bleu": round(sacrebleu.corpus_bleu(h, [refs]).score, 2),
                         "chrf": round(sacrebleu.corpus_chrf(h, [refs]).score, 2)}
        table.append(row)
    print("source words | sentences | " + " | ".join(f"{n} BLEU / chrF2" for n in systems))
    for row in table:
        print(f"{row['source_words']} | {row['sentences']} | " +
              " | ".join(f"{row[n]['bleu']:.2f} / {row[n]['chrf']:.2f}" for n in systems))
    if args.json:
        with atomic_write(args.json, "w") as f:
            record = {"src": args.src_raw, "ref": args.ref, "edges": args.edges, "buckets": table}
            f.write(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
