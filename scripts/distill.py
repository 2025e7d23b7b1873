"""Sequence-level knowledge distillation data (Kim & Rush, 2016): a teacher translates the
training split, and its translations replace the training targets.

Usage:
    python scripts/distill.py DATA_BIN TEACHER.pt OUT [--beam 5] [-- EXTRA fairseq-generate ARGS]
    python scripts/distill.py runs/multi30k/de-en-v4k/bin runs/attn/checkpoint_best.pt runs/multi30k/de-en-v4k-kd -- --amp
    bash scripts/train.sh runs/multi30k/de-en-v4k-kd/bin runs/student ...   # train a student on OUT/bin

OUT/bin holds the teacher's translations as the training split, binarized with DATA_BIN's
dictionaries (so students and teacher share a vocabulary), and DATA_BIN's other splits
unchanged: students are validated and tested on the real references. Every training sentence
must come back; OUT/distill.json records the teacher, the beam and the teacher's decoding time
(its cost, to report beside the student's). OUT is written under a temporary name first and
renamed when complete; an existing OUT is refused.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from evaluate import USER_DIR, language_pair, run_fairseq, split_size
from user_dir.patches.checkpoints import CheckpointError, check_file


def translate_train(data_bin: Path, teacher: Path, beam: int, extra: list[str]) -> tuple[list[str], list[str]]:
    """(source pieces, teacher's best hypothesis pieces) for every training sentence, in order."""
    out = run_fairseq(["fairseq-generate", str(data_bin), "--user-dir", str(USER_DIR), "--path", str(teacher),
                       "--gen-subset", "train", "--beam", str(beam), "--max-tokens", "8000",
                       "--num-workers", "0", "--no-progress-bar", *extra, "--nbest", "1"])
    sources, hyps = {}, {}
    for line in out.splitlines():
        kind, _, rest = line.partition("-")
        if kind in ("S", "H") and "\t" in rest:
            sid, *fields = rest.split("\t")
            (sources if kind == "S" else hyps).setdefault(int(sid), fields[-1])
    expected = split_size(data_bin, "train")
    if len(hyps) != expected or len(sources) != expected:
        raise SystemExit(f"error: the teacher translated {len(hyps)} of {expected} training sentences")
    return [sources[i] for i in range(expected)], [hyps[i] for i in range(expected)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", type=Path)
    p.add_argument("teacher", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--beam", type=int, default=5)
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; remove it or choose another OUT")
    try:
        check_file(str(args.teacher))
    except CheckpointError as e:
        raise SystemExit(f"error: {e}")
    src, tgt = language_pair(args.data_bin)
    start = time.time()
    sources, hyps = translate_train(args.data_bin, args.teacher, args.beam, extra)
    seconds = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", suffix=".tmp", dir=args.out.parent))
    for lang, lines in ((src, sources), (tgt, hyps)):
        (work / f"train.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    run_fairseq(["fairseq-preprocess", "--source-lang", src, "--target-lang", tgt,
                 "--srcdict", str(args.data_bin / f"dict.{src}.txt"), "--tgtdict", str(args.data_bin / f"dict.{tgt}.txt"),
                 "--trainpref", str(work / "train"), "--destdir", str(work / "bin"), "--workers", "1"])
    for path in args.data_bin.glob("*.*-*.*.*"):  # the other splits, unchanged
        if not path.name.startswith("train."):
            shutil.copy2(path, work / "bin" / path.name)
    (work / "distill.json").write_text(json.dumps({
        "teacher": str(args.teacher.resolve()), "data_bin": str(args.data_bin.resolve()), "beam": args.beam,
        "generate_args": extra, "sentences": len(hyps), "teacher_decoding_seconds": seconds}, indent=2) + "\n")
    work.rename(args.out)
    print(f"{len(hyps)} training sentences translated by {args.teacher} in {seconds} s -> {args.out / 'bin'}")


if __name__ == "__main__":
    sys.exit(main())
