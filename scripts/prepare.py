"""Prepare Multi30k (or any raw parallel corpus) for fairseq: sentencepiece + fairseq-preprocess.

Usage:
    python scripts/prepare.py                                 # de->en from ../shared/data/multi30k, 4k pieces
    python scripts/prepare.py --src en --tgt de --vocab-size 8000 --out runs/m30k-en-de-v8k
    python scripts/prepare.py --raw-dir /data/my_corpus --splits train=train valid=dev test=test
    python scripts/prepare.py --download                      # no shared folder: fetch Multi30k first

Steps, each skipped when its output exists and redone when it was left half-finished (outputs
are written under a temporary name and renamed only when complete):
  1. a joint sentencepiece unigram model on the *training* split of both languages;
  2. every split encoded into pieces;
  3. fairseq-preprocess --joined-dictionary into OUT/bin.
Raw files are RAW_DIR/{prefix}.{lang}[.gz], read by user_dir/text.py (UTF-8, one sentence a
line, problems named by file and line); source and target must have the same number of lines.
OUT/prepare.json records what the outputs are made from (options, sentencepiece version, a
fingerprint of every input's text); a later run with other inputs or options is refused
(--overwrite redoes everything), and a run while another one writes OUT is refused.
"""
import argparse
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from user_dir.files import FolderBusy, atomic_write, lock_folder, remove_orphans  # noqa: E402
from user_dir.text import TextError, read_lines  # noqa: E402

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
        url = f"{base_url.rstrip('/')}/{name}"
        print(f"download: {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, atomic_write(raw_dir / name) as f:
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, OSError) as e:
            raise SystemExit(f"error: could not download {url}: {e}")


def read_pair(raw_dir: Path, prefix: str, src: str, tgt: str) -> tuple[list[str], list[str]]:
    """Both sides of a split, each line checked by user_dir/text.py, and of equal length."""
    paths = raw_path(raw_dir, prefix, src), raw_path(raw_dir, prefix, tgt)
    sides = [read_lines(p) for p in paths]
    if len(sides[0]) != len(sides[1]):
        raise SystemExit(f"error: {paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}")
    return sides[0], sides[1]


def encode_pieces(sp: spm.SentencePieceProcessor, lines: list[str]) -> list[str]:
    """Raw lines -> space-separated sentencepiece pieces, the text fairseq-preprocess reads."""
    return [" ".join(pieces) for pieces in sp.encode(lines, out_type=str)]


def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def train_spm(out: Path, train_text: list[str], vocab_size: int) -> Path:
    model = out / "spm.model"
    if model.exists():
        print(f"skip: {model} exists")
        return model
    for stale in (out / "spm", out / "bin"):  # made with an older sentencepiece model
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".spm.", suffix=".tmp") as work:
        corpus = Path(work) / "train.txt"
        write_lines(corpus, train_text)
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=f"{work}/spm", vocab_size=vocab_size,
                                       model_type="unigram", character_coverage=1.0, num_threads=2,
                                       hard_vocab_limit=False, minloglevel=2)  # tiny corpora: at most vocab_size
        os.replace(f"{work}/spm.vocab", out / "spm.vocab")
        os.replace(f"{work}/spm.model", model)  # last: its presence marks the step done
    return model


def encode_splits(out: Path, model: Path, data: dict, src: str, tgt: str) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(model))
    (out / "spm").mkdir(exist_ok=True)
    remove_orphans(out / "spm")
    for split, sides in data.items():
        for lang, lines in zip((src, tgt), sides):
            path = out / "spm" / f"{split}.{lang}"
            if not path.exists():
                write_lines(path, encode_pieces(sp, lines))


def binarize(out: Path, src: str, tgt: str, splits: list[str]) -> None:
    dest = out / "bin"
    if dest.exists():
        print(f"skip: {dest} exists")
        return
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".bin.", suffix=".tmp"))
    prefixes = [f"--{s}pref" for s in ("train", "valid", "test")]
    cmd = ["fairseq-preprocess", "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
           "--destdir", str(tmp), "--workers", "2"]
    for flag, split in zip(prefixes, splits):
        cmd += [flag, str(out / "spm" / split)]
    subprocess.run(cmd, check=True)
    tmp.replace(dest)


OUTPUTS = ("spm.model", "spm.vocab", "spm", "bin", "prepare.json")


def recipe(args: argparse.Namespace, splits: dict, data: dict) -> dict:
    """What OUT's files are made from: the options, the sentencepiece version, and a fingerprint
    of every input's text as read (after user_dir/text.py's normalisation)."""
    inputs = {f"{split}.{lang}": hashlib.sha256("\n".join(lines).encode()).hexdigest()
              for split, sides in data.items() for lang, lines in zip((args.src, args.tgt), sides)}
    return {"src": args.src, "tgt": args.tgt, "vocab_size": args.vocab_size, "splits": splits,
            "sentencepiece": spm.__version__, "inputs": inputs}


def claim(out: Path, wanted: dict, overwrite: bool) -> None:
    """Make OUT's outputs belong to ``wanted``: keep them if they were made from it, else refuse
    (or, with --overwrite, delete them); then record ``wanted`` in OUT/prepare.json."""
    record = out / "prepare.json"
    if record.exists():
        made = json.loads(record.read_text())
        if made == wanted:
            return
        differ = [key for key in wanted if key != "inputs" and made.get(key) != wanted[key]]
        differ += [f"{name} text" for name in wanted["inputs"] if made.get("inputs", {}).get(name) != wanted["inputs"][name]]
        problem = f"{out} was prepared from other inputs or options ({', '.join(differ)} differ)"
    elif any((out / name).exists() for name in OUTPUTS):
        problem = f"{out} holds prepared files but no record of what made them ({record.name})"
    else:
        problem = None
    if problem and not overwrite:
        raise SystemExit(f"error: {problem}: use another --out, or --overwrite to redo it")
    for name in OUTPUTS:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    with atomic_write(record, "w") as f:
        json.dump(wanted, f, indent=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW, help="folder of raw {prefix}.{lang}[.gz] files")
    p.add_argument("--src", default="de", help="source language suffix")
    p.add_argument("--tgt", default="en", help="target language suffix")
    p.add_argument("--vocab-size", type=int, default=4000,
                   help="joint sentencepiece vocabulary size (4k beat 2k, 8k and 16k on Multi30k: README)")
    p.add_argument("--splits", nargs=3, metavar="SPLIT=PREFIX",
                   default=[f"{k}={v}" for k, v in MULTI30K_SPLITS.items()],
                   help="raw file prefix of train, valid and test (default: Multi30k's names)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/multi30k/SRC-TGT)")
    p.add_argument("--download", nargs="?", const=MULTI30K_URL, metavar="URL",
                   help=f"first fetch missing raw files into --raw-dir from URL (default {MULTI30K_URL})")
    p.add_argument("--overwrite", action="store_true",
                   help="redo OUT from scratch when it was prepared from other inputs or options")
    args = p.parse_args()
    try:
        prepare(args)
    except (TextError, FolderBusy) as e:
        raise SystemExit(f"error: {e}")


def prepare(args: argparse.Namespace) -> None:
    splits = dict(s.split("=", 1) for s in args.splits if "=" in s)
    if list(splits) != list(MULTI30K_SPLITS):
        raise SystemExit(f"error: --splits takes train=PREFIX valid=PREFIX test=PREFIX, got {' '.join(args.splits)}")
    if args.download:
        download(args.download, args.raw_dir, list(splits.values()), (args.src, args.tgt))
    if not args.raw_dir.is_dir():
        raise SystemExit(f"error: raw data folder {args.raw_dir} does not exist (--download fetches Multi30k)")
    out = (args.out or ROOT / "runs" / "multi30k" / f"{args.src}-{args.tgt}").resolve()
    lock_folder(str(out), "prepare.py")
    remove_orphans(str(out))
    data = {split: read_pair(args.raw_dir, prefix, args.src, args.tgt) for split, prefix in splits.items()}
    for split, (src_lines, _) in data.items():
        print(f"{split}: {len(src_lines)} sentence pairs")
    claim(out, recipe(args, splits, data), args.overwrite)
    model = train_spm(out, data["train"][0] + data["train"][1], args.vocab_size)
    encode_splits(out, model, data, args.src, args.tgt)
    binarize(out, args.src, args.tgt, list(splits))
    print(f"done: {out}/bin (sentencepiece model {model})")


if __name__ == "__main__":
    sys.exit(main())
