"""Sequence-level knowledge distillation data (Kim & Rush, 2016): a teacher translates the
training split (and the train1, train2, ... that fairseq-train adds to it), and its translations
replace the training targets.

Usage:
    python scripts/distill.py DATA_BIN TEACHER.pt OUT [--beam 5] [-- EXTRA fairseq-generate ARGS]
    python scripts/distill.py runs/multi30k/de-en/bin runs/attn/checkpoint_best.pt \\
        runs/multi30k/de-en-kd -- --amp
    bash scripts/train.sh runs/multi30k/de-en-kd/bin runs/student ...   # train a student on OUT/bin

OUT/bin holds the teacher's translations as the training splits, binarized with DATA_BIN's
dictionaries (so students and teacher share a vocabulary) in its file format, and the other splits
of DATA_BIN's pair unchanged: students are validated and tested on the real references. Its files
are named in the teacher's direction (SPLIT.SRC-TGT.*), so that a student trained there without
-s/-t learns that direction. Every training sentence must come back; OUT/distill.json records the
teacher, the beam, the splits translated, their direction, the sentences, the teacher's decoding
time (its cost, to report beside the student's) and the arguments after ``--``; none of them may
set what distill.py sets itself (checkpoint, beam, subset, post-processing, languages). The
direction is the teacher's (-s/-t may name it; a folder of de-en serves an en->de teacher too).
OUT is written under a temporary name first and renamed when complete; an existing OUT, or one
inside DATA_BIN, is refused before the teacher starts. The decoding reports its progress on
stderr.
"""
import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from user_dir.checkpoint_files import CheckpointError, absolute_ensemble, checked_ensemble, fairseq_ensemble
from user_dir.data_folder import (
    Pair,
    data_files,
    decoding_direction,
    direction_options,
    direction_owned,
    split_prefix,
    split_size,
    training_parts,
)
from user_dir.files import OutputError, WriteError, atomic_write, check_output, make_folder, temporary_folder
from user_dir.workflow import (
    binarize_with,
    check_pass_through,
    generate_command,
    generated,
    positive,
    progress,
    run_fairseq,
    script_main,
)

# fairseq-generate destinations that distill.py sets itself -> what to use instead
OWNED = {"path": "give the teacher as TEACHER", "beam": "use distill.py's --beam", "gen_subset": "the training split",
         "post_process": "the training targets must stay in the dictionary's units (pieces)",
         "user_dir": "distill.py passes the plugin", "results_path": "leave it out", "quiet": "leave it out",
         "nbest": "the best hypothesis is the target", "replace_unk": "the targets must stay in the dictionary's units",
         **direction_owned("distill.py")}


def translate(data_bin: Path, split: str, pair: Pair, teacher: str, beam: int,
              extra: list[str]) -> tuple[list[str], list[str]]:
    """(source pieces, teacher's best hypothesis pieces) for every sentence of SPLIT, in order."""
    expected = split_size(data_bin, split, pair)
    out = run_fairseq(generate_command(data_bin, teacher, split, beam, extra, "-s", pair[0], "-t", pair[1],
                                       "--max-tokens", "8000"),
                      progress(expected, f"distill.py: {split}: translated"))
    sources, hyps = generated(out.splitlines(), "S-"), generated(out.splitlines(), "H-")
    if len(hyps) != expected or len(sources) != expected:
        raise SystemExit(f"error: the teacher translated {len(hyps)} of {expected} sentences of '{split}'")
    return [sources[i] for i in range(expected)], [hyps[i] for i in range(expected)]


def write_outputs(work: Path, data_bin: Path, pair: Pair, texts: dict[str, dict[str, list[str]]],
                  record: dict) -> None:
    """WORK/bin (each training split's TEXTS binarized, the other splits of PAIR copied, all named
    SPLIT.SRC-TGT.*) and WORK/distill.json."""
    for split, sides in texts.items():
        for lang, lines in sides.items():
            with atomic_write(work / f"{split}.{lang}") as f:
                f.write("".join(line + "\n" for line in lines).encode("utf-8"))
        binarize_with(data_bin, split, work / split, work / "bin", pair)
    files = list(data_files(data_bin))
    read = {split: split_prefix(data_bin, split, pair).name + "." for _, split, _, _ in files}
    for path, split, langs, _ in files:  # the files fairseq reads PAIR's other splits from
        if split not in texts and path.name.startswith(read[split]):
            name = path.name.replace(f".{'-'.join(langs)}.", f".{'-'.join(pair)}.", 1)
            with open(path, "rb") as source, atomic_write(work / "bin" / name) as f:
                shutil.copyfileobj(source, f)
    with atomic_write(work / "distill.json", "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", type=Path)
    p.add_argument("teacher", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--beam", type=positive, default=5)
    direction_options(p, "teacher")
    args, extra = p.parse_known_args()
    extra = check_pass_through([a for a in extra if a != "--"], OWNED)
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; remove it or choose another OUT")
    if not args.data_bin.is_dir():
        raise SystemExit(f"error: DATA_BIN {args.data_bin} is not a folder")
    try:
        teachers = checked_ensemble(str(args.teacher))
        make_folder(args.out.parent, "OUT")
        check_output(args.out, "OUT", [args.data_bin, *map(Path, teachers)])
        if args.out.resolve().is_relative_to(args.data_bin.resolve()):
            raise OutputError(f"OUT: cannot write {args.out}: it is inside the input folder {args.data_bin}")
    except (CheckpointError, OutputError) as e:
        raise SystemExit(f"error: {e}")
    src, tgt = pair = decoding_direction(args.data_bin, teachers, args.source_lang, args.target_lang)
    parts = training_parts(args.data_bin, src, tgt)  # train and the train1, train2... fairseq-train adds to it
    start, texts = time.time(), {}
    with tempfile.TemporaryDirectory() as links:
        teacher = fairseq_ensemble(teachers, links)
        for split in parts:
            sources, hyps = translate(args.data_bin, split, pair, teacher, args.beam, extra)
            texts[split] = {src: sources, tgt: hyps}
    seconds = round(time.time() - start, 1)
    sentences = sum(len(sides[tgt]) for sides in texts.values())
    record = {"teacher": absolute_ensemble(str(args.teacher)), "data_bin": str(args.data_bin.resolve()),
              "direction": "-".join(pair), "beam": args.beam, "generate_args": extra, "splits": parts,
              "sentences": sentences, "teacher_decoding_seconds": seconds}
    try:  # an error or Ctrl-C leaves no half-made OUT, nor its temporary folder
        with temporary_folder(args.out.parent, args.out.name) as work:
            write_outputs(work, args.data_bin, pair, texts, record)
            work.rename(args.out)
    except WriteError as e:  # a full disk, a quota
        raise SystemExit(f"error: {e}") from None
    print(f"{sentences} training sentences ({'+'.join(parts)}) translated {src}->{tgt} by {args.teacher} in {seconds} "
          f"s -> {args.out / 'bin'} (named {src}-{tgt}: students train {src}->{tgt} there)")


if __name__ == "__main__":
    script_main(main)
