"""Translate a binarized split with fairseq-generate and score it with sacrebleu on raw references.

Usage:
    python scripts/evaluate.py DATA_BIN CHECKPOINT --ref data/toy/test.tgt
    python scripts/evaluate.py runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt/checkpoint_best.pt \\
        --ref ../shared/data/multi30k/test_2016_flickr.en.gz --post-process sentencepiece \\
        --subset test --beam 5 --json runs/multi30k/de-en/test.json
    # any raw file pair: encoded with the sentencepiece model, binarized with DATA_BIN's dictionaries
    python scripts/evaluate.py runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt/checkpoint_best.pt \\
        --src-raw my.de --ref my.en --spm runs/multi30k/de-en/spm.model --post-process sentencepiece
    # a fairseq-generate output made elsewhere (e.g. on a GPU machine without the raw references)
    python scripts/evaluate.py runs/multi30k/de-en/bin --generate-log gpu/generate.log \\
        --ref ../shared/data/multi30k/test_2016_flickr.en.gz

Hypotheses are put back in corpus order (fairseq-generate prints them by length) and scored
against the raw reference text, never against references rebuilt from the binarized data
(those contain <unk>). Every sentence must come back: a missing one is an error, not a
silently smaller test set. Extra arguments after ``--`` go to fairseq-generate; whatever they
are, exactly one hypothesis per sentence is scored, the best.

Everything is checked before decoding starts: the paths (relative ones against the current
folder), the reference text (read by user_dir/text.py), its line count against the split, the
output folders, and the sentencepiece options against the model's dictionary.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import sacrebleu
import sentencepiece as spm
from fairseq.data import Dictionary, data_utils
from prepare import ROOT, encode_pieces  # scripts/ is on sys.path when run as a script; prepare puts ROOT there

from user_dir.dictionaries import uses_sentencepiece
from user_dir.files import atomic_write
from user_dir.patches.checkpoints import CheckpointError, check_file
from user_dir.text import TextError, read_lines

USER_DIR = ROOT / "user_dir"
# options that would take fairseq-generate's hypotheses away from its standard output
UNREADABLE = ("--quiet", "--results-path")


def run_fairseq(cmd: list[str]) -> str:
    """Run a fairseq CLI; its stdout, or one line: the exception it ended with (the last
    unindented line of stderr: a traceback's details, such as omegaconf's, are indented)."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or [f"exit status {proc.returncode}"]
        raise SystemExit(f"error: {cmd[0]} failed: {([x for x in lines if not x[0].isspace()] or lines)[-1]}")
    return proc.stdout


def generate(data_bin: str, checkpoint: str, subset: str, beam: int, post_process: str,
             batch_size: int, extra: list[str]) -> list[str]:
    """Run fairseq-generate; return detokenized hypotheses in corpus order."""
    cmd = [
        "fairseq-generate", data_bin, "--user-dir", str(USER_DIR), "--path", checkpoint,
        "--gen-subset", subset, "--beam", str(beam), "--batch-size", str(batch_size),
        "--num-workers", "0", "--no-progress-bar",
        *(["--post-process", post_process] if post_process else []), *extra,
        "--nbest", "1",  # last, so it wins over any --nbest in extra
    ]
    return hypotheses(run_fairseq(cmd).splitlines())


def hypotheses(generate_output: list[str]) -> list[str]:
    """The best detokenized hypothesis of each sentence of fairseq-generate's output lines, in corpus order."""
    hyps: dict[int, str] = {}
    for line in generate_output:
        if line.startswith("D-"):  # D-<id>\t<score>\t<detokenized hypothesis>, best first
            sid, _, text = line.split("\t", 2)
            hyps.setdefault(int(sid[2:]), text)
    return [hyps[i] for i in sorted(hyps)]


def split_size(data_bin: Path, subset: str) -> int:
    """Number of sentences of a binarized split, read from its index."""
    src, tgt = language_pair(data_bin)
    prefix = data_bin / f"{subset}.{src}-{tgt}.{src}"
    dataset = data_utils.load_indexed_dataset(str(prefix), None)
    if dataset is None:
        raise SystemExit(f"error: {data_bin} holds no split '{subset}' ({prefix}.idx)")
    return len(dataset)


def check_output(path: Path | None) -> None:
    if path is not None and (path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK)):
        raise SystemExit(f"error: cannot write {path}: " + ("it is a folder" if path.is_dir() else
                                                              f"folder {path.parent} does not exist or is not writable"))


def ensemble(checkpoint: str) -> list[str]:
    """The checkpoints of ``a.pt:b.pt`` (fairseq-generate's --path ensemble syntax)."""
    return checkpoint.split(":")


def check_inputs(args: argparse.Namespace, extra: list[str]) -> tuple[list[str], list[str] | None]:
    """Everything that can be wrong before decoding, each named; returns the reference lines
    and the --src-raw lines (None without it)."""
    if (args.checkpoint is None) == (args.generate_log is None):
        raise SystemExit("error: give a CHECKPOINT to decode with, or --generate-log to score, not both")
    if args.generate_log and (args.src_raw or extra):
        raise SystemExit("error: --generate-log scores a finished decoding: --src-raw and fairseq-generate options do not apply")
    for path in (Path(args.data_bin), args.ref, args.src_raw, args.spm, args.generate_log):
        if path is not None and not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    for checkpoint in ensemble(args.checkpoint) if args.checkpoint else []:
        check_file(checkpoint)
    for option in UNREADABLE:
        if any(a == option or a.startswith(option + "=") for a in extra):
            raise SystemExit(f"error: {option} hides fairseq-generate's hypotheses from evaluate.py; leave it out")
    check_output(args.hyp_out)
    check_output(args.json)
    refs = read_lines(args.ref)
    sources = read_lines(args.src_raw) if args.src_raw else None
    sentences = len(sources) if sources is not None else split_size(Path(args.data_bin), args.subset)
    if sentences != len(refs):
        raise SystemExit(f"error: {args.ref} has {len(refs)} lines but the source has {sentences} sentences")
    src, tgt = language_pair(Path(args.data_bin))
    if (uses_sentencepiece(Dictionary.load(str(Path(args.data_bin) / f"dict.{tgt}.txt")))
            and args.post_process != "sentencepiece" and not args.generate_log):
        raise SystemExit("error: the model writes sentencepiece pieces (its dictionary's entries start with \u2581): "
                         "pass --post-process sentencepiece, or the score is computed on pieces")
    if args.src_raw and not args.spm and uses_sentencepiece(Dictionary.load(str(Path(args.data_bin) / f"dict.{src}.txt"))):
        raise SystemExit("error: the model reads sentencepiece pieces: pass --spm with the sentencepiece model "
                         "the data was prepared with (prepare.py's OUT/spm.model)")
    return refs, sources


def language_pair(data_bin: Path) -> tuple[str, str]:
    """(src, tgt) from fairseq-preprocess file names such as test.de-en.de.idx."""
    for idx in sorted(data_bin.glob("*.*-*.*.idx")):
        return tuple(idx.name.split(".")[1].split("-"))
    raise SystemExit(f"error: {data_bin} holds no fairseq-preprocess output")


def binarize_raw(data_bin: Path, sources: list[str], refs: list[str], spm_model: Path | None, work: Path) -> str:
    """Encode raw sentence pairs (sentencepiece when given) and binarize them as split 'test'
    with DATA_BIN's dictionaries, so the model sees exactly its training vocabulary."""
    src, tgt = language_pair(data_bin)
    sp = spm.SentencePieceProcessor(model_file=str(spm_model)) if spm_model else None
    for lang, lines in ((src, sources), (tgt, refs)):
        if sp is not None:
            lines = encode_pieces(sp, lines)
        (work / f"test.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_fairseq(["fairseq-preprocess", "--source-lang", src, "--target-lang", tgt,
                 "--srcdict", str(data_bin / f"dict.{src}.txt"), "--tgtdict", str(data_bin / f"dict.{tgt}.txt"),
                 "--testpref", str(work / "test"), "--destdir", str(work / "bin"), "--workers", "1"])
    return str(work / "bin")


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
    p.add_argument("checkpoint", nargs="?", help="a checkpoint, or several joined by ':' to decode with their ensemble")
    p.add_argument("--generate-log", type=Path, help="score this fairseq-generate output (its D- lines) instead "
                                                     "of decoding; it must cover the whole --subset")
    p.add_argument("--ref", type=Path, required=True, help="raw reference text (.gz ok), one line per sentence")
    p.add_argument("--subset", default="test")
    p.add_argument("--src-raw", type=Path, help="translate this raw source file instead of a binarized split")
    p.add_argument("--spm", type=Path, help="sentencepiece model to encode --src-raw with")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--post-process", default="", help="e.g. sentencepiece; empty for pre-tokenized data")
    p.add_argument("--hyp-out", type=Path, help="write hypotheses here, one per line, in corpus order")
    p.add_argument("--json", type=Path, help="write the scores as JSON here")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    try:
        refs, sources = check_inputs(args, extra)
        hyps = hypotheses(read_lines(args.generate_log)) if args.generate_log else None
    except (TextError, CheckpointError) as e:
        raise SystemExit(f"error: {e}")
    if hyps is None:
        with tempfile.TemporaryDirectory() as work:
            data_bin, subset = args.data_bin, args.subset
            if sources is not None:
                data_bin, subset = binarize_raw(Path(args.data_bin), sources, refs, args.spm, Path(work)), "test"
            hyps = generate(data_bin, args.checkpoint, subset, args.beam, args.post_process, args.batch_size, extra)
    elif any("\u2581" in h for h in hyps):
        raise SystemExit(f"error: {args.generate_log} holds sentencepiece pieces: decode with --post-process "
                         "sentencepiece, or the score is computed on pieces")
    result = score(hyps, refs)
    made_by = ({"generate_log": os.path.abspath(args.generate_log)} if args.generate_log else
               {"checkpoint": ":".join(os.path.abspath(c) for c in ensemble(args.checkpoint)), "beam": args.beam})
    result.update(**made_by, source=str(args.src_raw) if args.src_raw else f"{args.data_bin}:{args.subset}")
    if args.hyp_out:
        with atomic_write(args.hyp_out, "w", encoding="utf-8") as f:
            f.write("".join(h + "\n" for h in hyps))
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
    print(f"{result['bleu_detail']}\n{result['bleu_signature']}\n"
          f"chrF2 = {result['chrf']}\n{result['chrf_signature']}\nsentences = {result['sentences']}")


if __name__ == "__main__":
    sys.exit(main())
