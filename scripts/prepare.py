"""Prepare a parallel corpus for fairseq: sentencepiece + fairseq-preprocess.

Usage:
    python scripts/prepare.py --download                      # Multi30k de->en, fetched into runs/multi30k/raw first
    python scripts/prepare.py --raw-dir path/to/multi30k      # Multi30k's files already here
    python scripts/prepare.py --download --src en --tgt de --vocab-size 8000 --out runs/m30k-en-de-v8k
    # one file pair (corpus.de, corpus.en, plain or .gz): validation and test sets held out here
    python scripts/prepare.py --corpus data/corpus --src de --tgt en --out runs/mine/de-en
    # given splits (test optional)
    python scripts/prepare.py --train data/train --valid data/dev [--test data/test] --src de --tgt en --out OUT
    python scripts/prepare.py --raw-dir /data/my_corpus --splits train=train valid=dev test=test --out OUT

Data comes from one of: --corpus PREFIX (PREFIX.SRC and PREFIX.TGT, split here), --train/--valid
[/--test] PREFIX (files PREFIX.SRC, PREFIX.TGT), or RAW_DIR/{prefix}.{lang} named by --splits
(default: Multi30k's). A file may be gzipped (PREFIX.SRC.gz); a plain and a gzipped file for one
split are refused as ambiguous.

Held-out sets of --corpus: --valid-size and --test-size distinct pairs (default 5% of the pairs
each, at least 1 and at most 3000; --test-size 0: no test split), drawn with --seed; every copy
of a held-out pair is removed from training, so no pair is in two splits. Pairs are compared as
the model sees them: after sentencepiece's normalisation (nmt_nfkc: NFKC, runs of white space
folded, leading and trailing space dropped). The two sides of a corpus must be two files of
different text.

Steps, each skipped when its output exists and redone when it was left half-finished (outputs
are written under a temporary name and renamed only when complete):
  1. OUT/raw/{split}.{lang}: the text of every split as read (so that scripts/evaluate.py
     OUT/bin CHECKPOINT scores against OUT/raw/test.TGT without --ref);
  2. a joint sentencepiece unigram model on the *training* split of both languages;
  3. every split encoded into pieces;
  4. fairseq-preprocess --joined-dictionary into OUT/bin.
Raw files are read by user_dir/text.py (UTF-8, one sentence a line, problems named by file and
line); source and target must have the same number of lines.
OUT/prepare.json records a *finished* preparation: what the outputs are made from (options,
sentencepiece version, a fingerprint of every input's text), the direction (src, tgt), the
tokenization, the number of pairs per split (scripts/train.sh reads them), and the SHA-256 of
every raw file and dictionary (user_dir/prepared.py checks them before they are used). A later
run with other inputs or options is refused (--overwrite redoes everything); a run that failed
or was interrupted before it finished (also while it removed older outputs) is redone or
continued by the next run, whatever its options. A run while another one writes OUT is refused.
Only what prepare.py recorded as its own is ever deleted: the outputs named in its record
(written before they are made, and before they are removed: prepare.json first) and temporary
files named in OUT/.lock (user_dir/files.py).
"""
import argparse
import hashlib
import itertools
import os
import random
import re
import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sentencepiece as spm

from user_dir.data_folder import language_code
from user_dir.files import (
    FolderBusy,
    OutputError,
    WriteError,
    atomic_write,
    discard,
    lock_folder,
    remove_orphans,
    temporary_folder,
)
from user_dir.prepared import OUTPUTS, Pairs, begin, claim, differences, file_text, finish, others
from user_dir.text import TextError, read_lines
from user_dir.workflow import ROOT, at_least, encode_pieces, preprocess_command, run_fairseq, script_main

DEFAULT_RAW = ROOT / "runs" / "multi30k" / "raw"  # where --download puts Multi30k
MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw"
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
SPLITS = ("train", "valid", "test")
HELD_OUT_SHARE, HELD_OUT_MAX = 20, 3000  # default held-out size: 1/20 of the pairs, at most 3000
MIN_VOCAB = 8
NORMALISATION = "nmt_nfkc"  # sentencepiece's default rule, named so that the split and the model agree


def find_raw(prefix: Path, lang: str) -> Path | None:
    """PREFIX.LANG or PREFIX.LANG.gz; both existing is ambiguous and refused."""
    found = [p for p in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")) if p.exists()]
    if len(found) > 1:
        raise SystemExit(f"error: both {found[0]} and {found[1]} exist: which one is meant is ambiguous; "
                         "remove or rename one")
    return found[0] if found else None


def raw_path(prefix: Path, lang: str) -> Path:
    path = find_raw(prefix, lang)
    if path is None:
        hint = f" ({prefix} is a file: give the prefix, without the language)" if prefix.is_file() else ""
        raise SystemExit(f"error: no {prefix}.{lang}[.gz]{hint}")
    return path


def download(base_url: str, raw_dir: Path, prefixes: list[str], langs: tuple[str, str]) -> None:
    """Fetch the missing BASE_URL/{prefix}.{lang}.gz files into raw_dir, each renamed only when complete."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for prefix, lang in itertools.product(prefixes, langs):
        if find_raw(raw_dir / prefix, lang):
            continue
        name = f"{prefix}.{lang}.gz"
        url = f"{base_url.rstrip('/')}/{name}"
        print(f"download: {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, atomic_write(raw_dir / name) as f:
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, OSError) as e:
            raise SystemExit(f"error: could not download {url}: {e}")


def read_pair(prefix: Path, src: str, tgt: str) -> Pairs:
    """Both sides of a split, each line checked by user_dir/text.py, of equal length, and two
    different files of different text (one file given twice would teach copying)."""
    paths = raw_path(prefix, src), raw_path(prefix, tgt)
    if os.path.samefile(*paths):
        raise SystemExit(f"error: {paths[0]} and {paths[1]} are the same file: give the {src} and the {tgt} "
                         "text as two files")
    sides = [read_lines(p) for p in paths]
    if len(sides[0]) != len(sides[1]):
        raise SystemExit(f"error: {paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}")
    if sides[0] == sides[1]:
        raise SystemExit(f"error: {paths[0]} and {paths[1]} hold the same text: give the {src} and the {tgt} "
                         "text of the pairs")
    for path, lines in zip(paths, sides):
        check_not_empty_to_the_model(path, lines)
    return sides[0], sides[1]


def check_not_empty_to_the_model(path: Path, lines: list[str]) -> None:
    """Refuse a line that sentencepiece's normalisation leaves empty (user_dir/text.py refuses blank
    lines; U+FFFD, the mark of text decoded wrongly before, and U+2581 pass it but vanish here):
    the model would learn from a pair with an empty side."""
    for number, seen in enumerate(as_the_model_sees(lines), start=1):
        if not seen.strip("\u2581"):  # sentencepiece's mark of a space
            shown = lines[number - 1][:20]
            why = " (U+FFFD: the text was decoded wrongly before it was saved)" if "\ufffd" in shown else ""
            raise SystemExit(f"error: {path} line {number}: nothing is left of {shown!r} once sentencepiece "
                             f"normalises it{why}: remove or mend the pair")


def as_the_model_sees(lines: list[str]) -> list[str]:
    """Each line normalised as the sentencepiece model will normalise it before cutting it into
    pieces (the rule it is trained with, white space folded, ``\u2581`` for spaces), so that pairs
    that differ only in what it removes count as one."""
    normaliser = spm.SentencePieceNormalizer(rule_name=NORMALISATION, add_dummy_prefix=True,
                                             escape_whitespaces=True, remove_extra_whitespaces=True)
    return [normaliser.normalize(line) for line in lines]


def default_held_out(pairs: int) -> int:
    return min(HELD_OUT_MAX, max(1, pairs // HELD_OUT_SHARE))


def hold_out(corpus: Pairs, valid_size: int | None, test_size: int | None, seed: int) -> dict[str, Pairs]:
    """Split one corpus into train/valid/test: valid and test are distinct pairs drawn with
    ``seed`` (kept in corpus order); every copy of a held-out pair leaves the training split.
    Pairs are compared as the model sees them (:func:`as_the_model_sees`)."""
    pairs = list(zip(*corpus))
    keys = list(zip(*map(as_the_model_sees, corpus)))
    first = dict(zip(reversed(keys), reversed(range(len(keys)))))  # key -> index of its first pair
    distinct = [keys[i] for i in sorted(first.values())]
    sizes = {"valid": valid_size, "test": test_size}
    sizes = {k: default_held_out(len(distinct)) if v is None else v for k, v in sizes.items()}
    if sum(sizes.values()) > len(distinct) // 2:
        raise SystemExit(f"error: --valid-size {sizes['valid']} and --test-size {sizes['test']} would leave fewer "
                         f"than half of the {len(distinct)} distinct pairs for training: choose smaller sizes")
    order = list(range(len(distinct)))
    random.Random(seed).shuffle(order)
    picked = {"valid": sorted(order[:sizes["valid"]]), "test": sorted(order[sizes["valid"]:sum(sizes.values())])}
    held = {distinct[i] for indices in picked.values() for i in indices}
    splits = {"train": [pair for pair, key in zip(pairs, keys) if key not in held]}
    splits.update({split: [pairs[first[distinct[i]]] for i in indices] for split, indices in picked.items() if indices})
    removed = len(pairs) - len(splits["train"]) - len(held)
    print(f"held out from {len(pairs)} pairs (seed {seed}): valid {sizes['valid']}, test {sizes['test']}"
          + (f"; {removed} more copies of held-out pairs (the same once normalised) left out of train"
             if removed else ""))
    return {split: ([s for s, _ in rows], [t for _, t in rows]) for split, rows in splits.items()}


def without_held_out_copies(data: dict[str, Pairs]) -> dict[str, Pairs]:
    """Given splits, the training pairs that are also validation or test pairs (as the model sees
    them) leave train, as with --corpus, and a line says how many; none left is refused."""
    if "train" not in data:
        return data
    held = {key for split, sides in data.items() if split != "train" for key in zip(*map(as_the_model_sees, sides))}
    kept = [i for i, key in enumerate(zip(*map(as_the_model_sees, data["train"]))) if key not in held]
    removed = len(data["train"][0]) - len(kept)
    if removed and not kept:
        raise SystemExit("error: every training pair is also a validation or test pair (the same text given as "
                         "two splits?): give the training split its own pairs")
    if removed:
        print(f"{removed} training pairs that are also validation or test pairs (the same once normalised) "
              "left out of train")
    data["train"] = tuple([side[i] for i in kept] for side in data["train"])
    return data


def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_write(path) as f:
        f.write(file_text(lines))


def spm_refusal(error: RuntimeError, vocab_size: int) -> str:
    """One line for sentencepiece's refusal to train, naming the option to change."""
    text = str(error)
    small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", text)
    if small:
        return (f"--vocab-size {vocab_size} is smaller than the {small[1]} characters and special pieces of the "
                f"training text: use --vocab-size {small[1]} or more")
    high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", text)
    if high:
        return (f"--vocab-size {vocab_size} is more pieces than sentencepiece can make of the training text: "
                f"use --vocab-size {high[2]} or less")
    return f"sentencepiece could not train on the training text: {text.splitlines()[-1] if text else error!r}"


def train_spm(out: Path, train_text: list[str], vocab_size: int) -> Path:
    model = out / "spm.model"
    if model.exists():
        print(f"skip: {model} exists")
        return model
    for stale in (out / "spm", out / "bin"):  # made with an older sentencepiece model (claimed: see claim())
        discard(stale)
    with temporary_folder(out, "spm") as work:
        corpus = work / "train.txt"
        write_lines(corpus, train_text)
        try:
            spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=f"{work}/spm", vocab_size=vocab_size,
                                           model_type="unigram", character_coverage=1.0, num_threads=2,
                                           normalization_rule_name=NORMALISATION,
                                           hard_vocab_limit=False, minloglevel=2)  # tiny corpora: at most vocab_size
        except RuntimeError as e:
            raise SystemExit(f"error: {spm_refusal(e, vocab_size)}") from None
        pieces = spm.SentencePieceProcessor(model_file=str(work / "spm.model")).get_piece_size()
        if pieces < vocab_size:
            print(f"sentencepiece made {pieces} pieces, fewer than --vocab-size {vocab_size}: the training text "
                  "holds no more")
        os.replace(work / "spm.vocab", out / "spm.vocab")
        os.replace(work / "spm.model", model)  # last: its presence marks the step done
    return model


def write_splits(folder: Path, data: dict[str, Pairs], langs: tuple[str, str], encode=None) -> None:
    """FOLDER/{split}.{lang} for every split, each line passed through ``encode`` when given."""
    folder.mkdir(exist_ok=True)
    for split, sides in data.items():
        for lang, lines in zip(langs, sides):
            path = folder / f"{split}.{lang}"
            if not path.exists():
                write_lines(path, encode(lines) if encode else lines)


def binarize(out: Path, src: str, tgt: str, splits: list[str]) -> None:
    dest = out / "bin"
    if dest.exists():
        print(f"skip: {dest} exists")
        return
    with temporary_folder(out, "bin") as tmp:
        run_fairseq(preprocess_command(src, tgt, {split: out / "spm" / split for split in splits}, tmp, workers=2))
        tmp.replace(dest)


def recipe(args: argparse.Namespace, sources: dict, data: dict[str, Pairs]) -> dict:
    """What OUT's files are made from: the options, the sentencepiece version, and a fingerprint
    of every input's text as read (after user_dir/text.py's normalisation)."""
    inputs = {f"{split}.{lang}": hashlib.sha256("\n".join(lines).encode()).hexdigest()
              for split, sides in data.items() for lang, lines in zip((args.src, args.tgt), sides)}
    key = "sources" if args.corpus or args.train else "splits"  # "splits": --raw-dir's prefixes, as always recorded
    return {"src": args.src, "tgt": args.tgt, "vocab_size": args.vocab_size, key: sources,
            "sentencepiece": spm.__version__, "inputs": inputs, "outputs": list(OUTPUTS)}


def sources_of(args: argparse.Namespace) -> tuple[dict[str, Path], str]:
    """The raw prefix of each given split (only "corpus" for --corpus), and the data's name."""
    given = [f"--{name}" for name in ("corpus", *SPLITS, "splits", "download") if getattr(args, name)]
    if args.corpus and len(given) > 1:
        raise SystemExit(f"error: --corpus takes one file pair and holds out valid and test itself: "
                         f"leave out {' '.join(given[1:])}")
    if not args.corpus and (args.valid_size is not None or args.test_size is not None):
        raise SystemExit("error: --valid-size and --test-size apply to --corpus only")
    if args.corpus:
        return {"corpus": args.corpus}, args.corpus.name
    if args.train or args.valid or args.test:
        if not (args.train and args.valid) or args.splits or args.download:
            raise SystemExit("error: --train and --valid are both needed (--test is optional), without --splits")
        if args.out is None:
            raise SystemExit("error: --out is required with --train/--valid/--test")
        return {split: getattr(args, split) for split in SPLITS if getattr(args, split)}, ""
    splits = dict(s.split("=", 1) for s in args.splits or [] if "=" in s) if args.splits else dict(MULTI30K_SPLITS)
    if list(splits) != list(SPLITS):
        raise SystemExit(f"error: --splits takes train=PREFIX valid=PREFIX test=PREFIX, got {' '.join(args.splits)}")
    if args.download:
        download(args.download, args.raw_dir, list(splits.values()), (args.src, args.tgt))
    if not args.raw_dir.is_dir():
        raise SystemExit(f"error: raw data folder {args.raw_dir} does not exist (--download fetches Multi30k)")
    name = "multi30k" if splits == MULTI30K_SPLITS else args.raw_dir.resolve().name
    return {split: args.raw_dir / prefix for split, prefix in splits.items()}, name


def check_out(out: Path, inputs: list[Path]) -> None:
    """OUT's outputs must not be (or hold) an input file."""
    for path in inputs:
        if any(path.resolve().is_relative_to(out / name) for name in OUTPUTS):
            raise SystemExit(f"error: --out {out} would overwrite the input {path}: choose another --out")


def prepare(args: argparse.Namespace) -> None:
    if args.src == args.tgt:
        raise SystemExit(f"error: --src and --tgt are both {args.src!r}: give two different language suffixes")
    prefixes, name = sources_of(args)
    out = (args.out or ROOT / "runs" / name / f"{args.src}-{args.tgt}").resolve()
    langs = (args.src, args.tgt)
    paths = {(split, lang): raw_path(prefix, lang) for split, prefix in prefixes.items() for lang in langs}
    check_out(out, list(paths.values()))
    if args.corpus:
        data = hold_out(read_pair(args.corpus, args.src, args.tgt), args.valid_size, args.test_size, args.seed)
        sources = {"corpus": str(paths["corpus", args.src].resolve()), "valid_size": args.valid_size,
                   "test_size": args.test_size, "seed": args.seed}
    else:
        data = without_held_out_copies({split: read_pair(prefix, args.src, args.tgt)
                                        for split, prefix in prefixes.items()})
        sources = {split: str(paths[split, args.src].resolve()) for split in prefixes}
        if name:  # --raw-dir and --splits: recorded as before, so that earlier preparations stay valid
            sources = {split: prefix.name for split, prefix in prefixes.items()}
    for split, (src_lines, _) in data.items():
        print(f"{split}: {len(src_lines)} sentence pairs")
    try:  # only now: a refused input leaves no trace in OUT
        lock_folder(str(out), "prepare.py")
    except OutputError as e:
        raise SystemExit(f"error: --out: {e}") from None
    remove_orphans(str(out))
    wanted = recipe(args, sources, data)
    made = claim(out, wanted, args.overwrite)
    with unfinished(out):
        if made is not None:
            begin(out, wanted, made)
            if made and (kept := others(out)):
                print(f"kept: {', '.join(kept)} in {out} (not prepare.py's" + ("; a model trained on the earlier "
                      "preparation does not fit the new one: train.sh and evaluate.py refuse it)"
                      if differences(made, wanted) else ")"))
        write_splits(out / "raw", data, langs)
        model = train_spm(out, data["train"][0] + data["train"][1], args.vocab_size)
        sp = spm.SentencePieceProcessor(model_file=str(model))
        write_splits(out / "spm", data, langs, lambda lines: encode_pieces(sp, lines))
        binarize(out, args.src, args.tgt, list(data))
        finish(out, wanted, data)
    print(f"done: {out}/bin (sentencepiece model {model}; raw text of each split in {out}/raw)")


@contextmanager
def unfinished(out: Path) -> Iterator[None]:
    """An error or Ctrl-C while OUT is made (or its older outputs removed) ends with one line that
    also says OUT is unfinished (no prepare.json: nothing reads it as done) and how to go on."""
    how = f"{out} is unfinished: run the same command again to continue it, or remove {out}"
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"; {how}") from None  # the line script_main prints
    except (TextError, OutputError, WriteError) as e:
        raise SystemExit(f"error: {e}; {how}") from None
    except SystemExit as e:
        raise SystemExit(f"{e.code}; {how}" if str(e.code).startswith("error:") else e.code) from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, metavar="PREFIX",
                   help="one file pair PREFIX.SRC, PREFIX.TGT: valid and test are held out from it")
    for split in SPLITS:
        optional = " (optional)" if split == "test" else ""
        p.add_argument(f"--{split}", type=Path, metavar="PREFIX", help=f"the {split} split's files{optional}")
    p.add_argument("--valid-size", type=at_least(1),
                   help=f"--corpus: validation pairs (default 1/{HELD_OUT_SHARE} of the pairs, 1 to {HELD_OUT_MAX})")
    p.add_argument("--test-size", type=at_least(0),
                   help="--corpus: test pairs (default as --valid-size; 0: no test split)")
    p.add_argument("--seed", type=int, default=1, help="--corpus: seed of the held-out draw (default 1)")
    p.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                   help="folder of raw {prefix}.{lang}[.gz] files (default runs/multi30k/raw, --download's folder)")
    p.add_argument("--splits", nargs=3, metavar="SPLIT=PREFIX",
                   help="raw file prefixes in --raw-dir of train, valid and test (default: Multi30k's names)")
    p.add_argument("--src", type=language_code, default="de",
                   help="source language suffix (letters, digits, _; default: de)")
    p.add_argument("--tgt", type=language_code, default="en",
                   help="target language suffix (letters, digits, _; default: en)")
    p.add_argument("--vocab-size", type=at_least(MIN_VOCAB), default=4000,
                   help="joint sentencepiece vocabulary size (the default was chosen on Multi30k: docs/results.md)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/NAME/SRC-TGT, NAME: multi30k, the "
                                            "--corpus file name or the --raw-dir name; required with --train)")
    p.add_argument("--download", nargs="?", const=MULTI30K_URL, metavar="URL",
                   help=f"first fetch missing raw files into --raw-dir from URL (default {MULTI30K_URL})")
    p.add_argument("--overwrite", action="store_true",
                   help="redo OUT from scratch (without it, a preparation of these inputs and options is kept, "
                        "and one of others refused)")
    args = p.parse_args()
    try:
        prepare(args)
    except (TextError, FolderBusy, OutputError, WriteError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    script_main(main)
