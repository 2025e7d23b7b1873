"""Translate a binarized split with fairseq-generate and score it with sacrebleu on raw references.

Usage:
    python scripts/evaluate.py DATA_BIN CHECKPOINT --ref data/toy/test.tgt
    python scripts/evaluate.py runs/m30k/bin runs/m30k/ckpt/checkpoint_best.pt \\
        --ref ../shared/data/multi30k/test_2016_flickr.en.gz --post-process sentencepiece \\
        --subset test --beam 5 --json runs/m30k/test.json

Hypotheses are put back in corpus order (fairseq-generate prints them by length) and scored
against the raw reference text, never against references rebuilt from the binarized data
(those contain <unk>). Every sentence must come back: a missing one is an error, not a
silently smaller test set. Extra arguments after ``--`` go to fairseq-generate.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import sacrebleu

USER_DIR = Path(__file__).resolve().parent.parent / "user_dir"


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def generate(data_bin: str, checkpoint: str, subset: str, beam: int, post_process: str,
             batch_size: int, extra: list[str]) -> list[str]:
    """Run fairseq-generate; return detokenized hypotheses in corpus order."""
    cmd = [
        "fairseq-generate", data_bin, "--user-dir", str(USER_DIR), "--path", checkpoint,
        "--gen-subset", subset, "--beam", str(beam), "--batch-size", str(batch_size),
        # fairseq's batch_by_size drops a short last batch otherwise (fairseq #5036, #5351)
        "--required-batch-size-multiple", "1", "--num-workers", "0", "--no-progress-bar",
        *(["--post-process", post_process] if post_process else []), *extra,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    hyps: dict[int, str] = {}
    for line in out.splitlines():
        if line.startswith("D-"):  # D-<id>\t<score>\t<detokenized hypothesis>
            sid, _, text = line.split("\t", 2)
            hyps[int(sid[2:])] = text
    return [hyps[i] for i in sorted(hyps)] if hyps else []


def score(hyps: list[str], refs: list[str]) -> dict:
    if len(hyps) != len(refs):
        raise SystemExit(f"error: {len(hyps)} hypotheses for {len(refs)} references: sentences were lost")
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "sentences": len(hyps),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(b)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", help="fairseq-preprocess output folder")
    p.add_argument("checkpoint")
    p.add_argument("--ref", type=Path, required=True, help="raw reference text (.gz ok), one line per sentence")
    p.add_argument("--subset", default="test")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--post-process", default="", help="e.g. sentencepiece; empty for pre-tokenized data")
    p.add_argument("--hyp-out", type=Path, help="write hypotheses here, one per line, in corpus order")
    p.add_argument("--json", type=Path, help="write the scores as JSON here")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    for path in (Path(args.data_bin), Path(args.checkpoint), args.ref):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    hyps = generate(args.data_bin, args.checkpoint, args.subset, args.beam, args.post_process,
                    args.batch_size, extra)
    result = score(hyps, read_lines(args.ref))
    result.update(checkpoint=os.path.abspath(args.checkpoint), subset=args.subset, beam=args.beam)
    if args.hyp_out:
        args.hyp_out.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['bleu_detail']}\n{result['bleu_signature']}\n"
          f"chrF2 = {result['chrf']}\n{result['chrf_signature']}\nsentences = {result['sentences']}")


if __name__ == "__main__":
    sys.exit(main())
