"""Prepare Multi30k (or any raw parallel corpus) for fairseq: sentencepiece + fairseq-preprocess.

Usage:
    python scripts/prepare.py                                 # de->en from ../shared/data/multi30k
    python scripts/prepare.py --src en --tgt de --vocab-size 8000 --out runs/m30k-en-de
    python scripts/prepare.py --raw-dir /data/my_corpus --splits train=train valid=dev test=test
    python scripts/prepare.py --download                      # no shared folder: fetch Multi30k first

Steps, each skipped when its output exists and redone when it was left half-finished (outputs
are written under a temporary name and renamed only when complete):
  1. a joint sentencepiece unigram model on the *training* split of both languages;
  2. every split encoded into pieces;
  3. fairseq-preprocess --joined-dictionary into OUT/bin.
Raw files are RAW_DIR/{prefix}.{lang}[.gz]; source and target must have the same number of
lines, none of them empty.
"""
import argparse
import gzip
import itertools
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parent.parent
SHARED_RAW = ROOT.parent / "shared" / "data" / "multi30k"
DEFAULT_RAW = SHARED_RAW if SHARED_RAW.is_dir() else ROOT / "runs" / "multi30k" / "raw"
MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw"
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def find_raw(raw_dir: Path, prefix: str, lang: str) -> Path | None:
    return next((p for p in (raw_dir / f"{prefix}.{lang}.gz", raw_dir / f"{prefix}.{lang}") if p.exists()), None)


def raw_path(raw_dir: Path, prefix: str, lang: str) -> Path:
    path = find_raw(raw_dir, prefix, lang)
    if path is None:
        raise SystemExit(f"error: no {prefix}.{lang}[.gz] in {raw_dir}")
    return path


def download(base_url: str, raw_dir: Path, prefixes: list[str], langs: tuple[str, str]) -> None:
    """Fetch the missing BASE_URL/{prefix}.{lang}.gz files into raw_dir, each renamed only when complete."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for prefix, lang in itertools.product(prefixes, langs):
        if find_raw(raw_dir, prefix, lang):
            continue
        name = f"{prefix}.{lang}.gz"
        dest = raw_dir / name
        url, tmp = f"{base_url.rstrip('/')}/{name}", dest.with_name(name + ".tmp")
        print(f"download: {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise SystemExit(f"error: could not download {url}: {e}")
        tmp.replace(dest)


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_pair(raw_dir: Path, prefix: str, src: str, tgt: str) -> tuple[list[str], list[str]]:
    """Both sides of a split, checked for equal length and no empty lines."""
    paths = raw_path(raw_dir, prefix, src), raw_path(raw_dir, prefix, tgt)
    sides = [read_lines(p) for p in paths]
    if len(sides[0]) != len(sides[1]):
        raise SystemExit(f"error: {paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}")
    for path, lines in zip(paths, sides):
        empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
        if not lines or empty:
            raise SystemExit(f"error: {path} is empty" if not lines else
                             f"error: {path} has {len(empty)} empty line(s), first at line {empty[0]}")
    return sides[0], sides[1]


def encode_pieces(sp: spm.SentencePieceProcessor, lines: list[str]) -> list[str]:
    """Raw lines -> space-separated sentencepiece pieces, the text fairseq-preprocess reads."""
    return [" ".join(pieces) for pieces in sp.encode(lines, out_type=str)]


def write_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def train_spm(out: Path, train_text: list[str], vocab_size: int) -> Path:
    model = out / "spm.model"
    if model.exists():
        print(f"skip: {model} exists")
        return model
    for stale in (out / "spm", out / "bin"):  # made with an older sentencepiece model
        shutil.rmtree(stale, ignore_errors=True)
    corpus = out / "spm_train.txt.tmp"
    write_atomic(corpus, train_text)
    prefix = out / "spm.tmp"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, num_threads=2,
                                   hard_vocab_limit=False, minloglevel=2)  # tiny corpora: at most vocab_size
    (out / "spm.tmp.vocab").replace(out / "spm.vocab")
    (out / "spm.tmp.model").replace(model)  # last: its presence marks the step done
    corpus.unlink()
    return model


def encode_splits(out: Path, model: Path, data: dict, src: str, tgt: str) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for split, sides in data.items():
        for lang, lines in zip((src, tgt), sides):
            path = out / "spm" / f"{split}.{lang}"
            if path.exists():
                continue
            path.parent.mkdir(exist_ok=True)
            write_atomic(path, encode_pieces(sp, lines))


def binarize(out: Path, src: str, tgt: str, splits: list[str]) -> None:
    dest = out / "bin"
    if dest.exists():
        print(f"skip: {dest} exists")
        return
    tmp = out / "bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    prefixes = [f"--{s}pref" for s in ("train", "valid", "test")]
    cmd = ["fairseq-preprocess", "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
           "--destdir", str(tmp), "--workers", "2"]
    for flag, split in zip(prefixes, splits):
        cmd += [flag, str(out / "spm" / split)]
    subprocess.run(cmd, check=True)
    tmp.replace(dest)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW, help="folder of raw {prefix}.{lang}[.gz] files")
    p.add_argument("--src", default="de", help="source language suffix")
    p.add_argument("--tgt", default="en", help="target language suffix")
    p.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece vocabulary size")
    p.add_argument("--splits", nargs=3, metavar="SPLIT=PREFIX",
                   default=[f"{k}={v}" for k, v in MULTI30K_SPLITS.items()],
                   help="raw file prefix of train, valid and test (default: Multi30k's names)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/multi30k/SRC-TGT)")
    p.add_argument("--download", nargs="?", const=MULTI30K_URL, metavar="URL",
                   help=f"first fetch missing raw files into --raw-dir from URL (default {MULTI30K_URL})")
    args = p.parse_args()
    splits = dict(s.split("=", 1) for s in args.splits)
    if args.download:
        download(args.download, args.raw_dir, list(splits.values()), (args.src, args.tgt))
    if not args.raw_dir.is_dir():
        raise SystemExit(f"error: raw data folder {args.raw_dir} does not exist (--download fetches Multi30k)")
    out = args.out or ROOT / "runs" / "multi30k" / f"{args.src}-{args.tgt}"
    out.mkdir(parents=True, exist_ok=True)
    data = {split: read_pair(args.raw_dir, prefix, args.src, args.tgt) for split, prefix in splits.items()}
    for split, (src_lines, _) in data.items():
        print(f"{split}: {len(src_lines)} sentence pairs")
    model = train_spm(out, data["train"][0] + data["train"][1], args.vocab_size)
    encode_splits(out, model, data, args.src, args.tgt)
    binarize(out, args.src, args.tgt, list(splits))
    print(f"done: {out}/bin (sentencepiece model {model})")


if __name__ == "__main__":
    sys.exit(main())
