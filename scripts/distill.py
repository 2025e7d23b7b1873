"""Sequence-level knowledge distillation data (Kim & Rush, 2016): a teacher translates the
training split, and its translations replace the training targets.

Usage:
    python scripts/distill.py DATA_BIN TEACHER.pt OUT [--beam 5] [-- EXTRA fairseq-generate ARGS]
    python scripts/distill.py runs/multi30k/de-en-v4k/bin runs/attn/checkpoint_best.pt \\
        runs/multi30k/de-en-v4k-kd -- --amp
    bash scripts/train.sh runs/multi30k/de-en-v4k-kd/bin runs/student ...   # train a student on OUT/bin

OUT/bin holds the teacher's translations as the training split, binarized with DATA_BIN's
dictionaries (so students and teacher share a vocabulary), and DATA_BIN's other splits
unchanged: students are validated and tested on the real references. Every training sentence
must come back; OUT/distill.json records the teacher, the beam and the teacher's decoding time
(its cost, to report beside the student's) and the arguments after ``--``; none of them may set
what distill.py sets itself (checkpoint, beam, subset, post-processing, languages). OUT is written
under a temporary name first and renamed when complete; an existing OUT, or one inside DATA_BIN,
is refused before the teacher starts. The decoding reports its progress on stderr.
"""
import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from user_dir.checkpoint_files import CheckpointError, check_file, fairseq_ensemble, split_ensemble
from user_dir.files import OutputError, check_output
from user_dir.workflow import (
    binarize_with,
    check_pass_through,
    generate_command,
    language_pair,
    positive,
    progress,
    run_fairseq,
    script_main,
    split_size,
)

# fairseq-generate destinations that distill.py sets itself -> what to use instead
OWNED = {"path": "give the teacher as TEACHER", "beam": "use distill.py's --beam", "gen_subset": "the training split",
         "post_process": "the training targets must stay in the dictionary's units (pieces)",
         "source_lang": "the languages are DATA_BIN's", "target_lang": "the languages are DATA_BIN's",
         "user_dir": "distill.py passes the plugin", "score_reference": "it scores the references instead of "
         "translating", "results_path": "leave it out", "quiet": "leave it out", "nbest": "the best hypothesis is "
         "the target", "replace_unk": "the targets must stay in the dictionary's units"}


def translate_train(data_bin: Path, teacher: str, beam: int, extra: list[str]) -> tuple[list[str], list[str]]:
    """(source pieces, teacher's best hypothesis pieces) for every training sentence, in order."""
    expected = split_size(data_bin, "train")
    out = run_fairseq(generate_command(data_bin, teacher, "train", beam, extra, "--max-tokens", "8000"),
                      progress(expected, "distill.py: translated"))
    sources, hyps = {}, {}
    for line in out.splitlines():
        kind, _, rest = line.partition("-")
        if kind in ("S", "H") and "\t" in rest:
            sid, *fields = rest.split("\t")
            (sources if kind == "S" else hyps).setdefault(int(sid), fields[-1])
    if len(hyps) != expected or len(sources) != expected:
        raise SystemExit(f"error: the teacher translated {len(hyps)} of {expected} training sentences")
    return [sources[i] for i in range(expected)], [hyps[i] for i in range(expected)]


def make_folder(folder: Path) -> None:
    """OUT's parent folder, made if missing; OutputError naming it when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"OUT: cannot make the folder {folder}: {e.strerror or e}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", type=Path)
    p.add_argument("teacher", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--beam", type=positive, default=5)
    args, extra = p.parse_known_args()
    extra = check_pass_through([a for a in extra if a != "--"], OWNED)
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; remove it or choose another OUT")
    if not args.data_bin.is_dir():
        raise SystemExit(f"error: DATA_BIN {args.data_bin} is not a folder")
    try:
        teachers = split_ensemble(str(args.teacher))
        for teacher in teachers:
            check_file(teacher)
        make_folder(args.out.parent)
        check_output(args.out, "OUT", [args.data_bin, *map(Path, teachers)])
        if args.out.resolve().is_relative_to(args.data_bin.resolve()):
            raise OutputError(f"OUT: cannot write {args.out}: it is inside the input folder {args.data_bin}")
    except (CheckpointError, OutputError) as e:
        raise SystemExit(f"error: {e}")
    src, tgt = language_pair(args.data_bin)
    start = time.time()
    with tempfile.TemporaryDirectory() as links:
        sources, hyps = translate_train(args.data_bin, fairseq_ensemble(teachers, links), args.beam, extra)
    seconds = round(time.time() - start, 1)
    work = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", suffix=".tmp", dir=args.out.parent))
    try:  # an error or Ctrl-C leaves no half-made OUT, nor its temporary folder
        for lang, lines in ((src, sources), (tgt, hyps)):
            (work / f"train.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        binarize_with(args.data_bin, "train", work / "train", work / "bin")
        for path in args.data_bin.glob("*.*-*.*.*"):  # the other splits, unchanged
            if not path.name.startswith("train."):
                shutil.copy2(path, work / "bin" / path.name)
        (work / "distill.json").write_text(json.dumps({
            "teacher": str(args.teacher.resolve()), "data_bin": str(args.data_bin.resolve()), "beam": args.beam,
            "generate_args": extra, "sentences": len(hyps), "teacher_decoding_seconds": seconds}, indent=2) + "\n")
        work.rename(args.out)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, OSError):  # a full disk, a quota
            raise SystemExit(f"error: cannot write {args.out}: {e.strerror or e} (nothing was kept)") from None
        raise
    print(f"{len(hyps)} training sentences translated by {args.teacher} in {seconds} s -> {args.out / 'bin'}")


if __name__ == "__main__":
    script_main(main)
