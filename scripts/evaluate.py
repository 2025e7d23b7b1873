"""Translate a split of fairseq-preprocess output with fairseq-generate and score it with sacrebleu on raw references.

Usage:
    python scripts/evaluate.py DATA_BIN CHECKPOINT --ref data/toy/test.tgt
    python scripts/evaluate.py runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt/checkpoint_best.pt \\
        --ref runs/multi30k/raw/test_2016_flickr.en.gz --post-process sentencepiece \\
        --subset test --beam 5 --json runs/multi30k/de-en/test.json
    # any raw file pair: encoded with the sentencepiece model, binarized with DATA_BIN's dictionaries
    python scripts/evaluate.py runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt/checkpoint_best.pt \\
        --src-raw my.de --ref my.en --spm runs/multi30k/de-en/spm.model --post-process sentencepiece
    # a fairseq-generate output made elsewhere (e.g. on a GPU machine without the raw references)
    python scripts/evaluate.py runs/multi30k/de-en/bin --generate-log gpu/generate.log \\
        --ref runs/multi30k/raw/test_2016_flickr.en.gz

Hypotheses are put back in corpus order (fairseq-generate prints them by length) and scored
against the raw reference text, never against references rebuilt from the binarized data
(those contain <unk>). Every sentence must come back: a missing one is an error, not a
silently smaller test set. Arguments evaluate.py does not know go to fairseq-generate (written
after ``--`` in these docs, for clarity; fairseq-generate names an unknown one); whatever they
are, exactly one hypothesis per sentence is scored, the best.

Everything is checked before decoding starts: the paths (relative ones against the current
folder), the reference text (read by user_dir/text.py), its line count against the split and its
lines against the split's target side (:func:`check_reference`: another split, language or order
of the same length is refused), the outputs (never an input, a training run's checkpoint, or an
existing file that is not an earlier output of the same kind), the arguments after ``--`` (none
may set what evaluate.py sets and records: checkpoint, beam, subset, post-processing, languages,
batch size; none may show the model the references, decode the pieces twice or ask for help),
and the sentencepiece options against the model's dictionary (``--spm`` must be the model that
made it, and leave the --src-raw text's pieces known). Without ``--ref``, the reference is the
raw text prepare.py kept, refused when it changed since (the SHA-256 in OUT/prepare.json). The
direction is the one the checkpoint was trained in (a folder of de-en serves an en->de model too;
the folder's one pair where the checkpoint records none), or -s/-t, which must agree with it. The
JSON records the options that ran, the arguments after ``--`` included, the direction, and the
reference scored against with its SHA-256. A long decode reports its progress on stderr (stdout
is unchanged); Ctrl-C ends it with one line and exit status 130.
"""
import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import sacrebleu

from user_dir.checkpoint_files import (
    CheckpointError,
    absolute_ensemble,
    checked_ensemble,
    fairseq_ensemble,
    split_ensemble,
)
from user_dir.data_folder import (
    Pair,
    binarized,
    decoding_direction,
    dictionary_path,
    direction_options,
    direction_owned,
    split_size,
)
from user_dir.dictionaries import (
    PIECE_START,
    TokenizationError,
    check_post_process,
    check_spm_model,
    load_spm,
    unknown_share,
    uses_sentencepiece,
)
from user_dir.files import (
    OutputError,
    WriteError,
    atomic_write,
    check_distinct,
    check_output,
    not_a_file,
    write_recorded,
    written_before,
)
from user_dir.prepared import prepared_record, prepared_record_path, sha256_file, verified_raw
from user_dir.reference_check import check_reference, resembling
from user_dir.text import TextError, read_lines
from user_dir.workflow import (
    binarize_with,
    check_pass_through,
    encode_pieces,
    generate_command,
    generated,
    positive,
    progress,
    run_fairseq,
    script_main,
)

HYPOTHESES = "evaluate"  # the kind of --hyp-out's record: .NAME.evaluate.sha256 beside it
MAX_UNKNOWN = 0.2  # of --src-raw's pieces unknown to the dictionary: the right model's are about none
# fairseq-generate destinations that evaluate.py sets and records itself -> what to use instead
OWNED = {"path": "give the checkpoint as CHECKPOINT", "beam": "use evaluate.py's --beam",
         "gen_subset": "use evaluate.py's --subset", "post_process": "use evaluate.py's --post-process",
         "batch_size": "use evaluate.py's --batch-size", "user_dir": "evaluate.py passes the plugin",
         "results_path": "it hides the hypotheses from evaluate.py; leave it out",
         "quiet": "it hides the hypotheses from evaluate.py; leave it out", **direction_owned("evaluate.py")}


def direction(args: argparse.Namespace) -> Pair:
    """The direction decoded: -s/-t, as :func:`main` settles them before anything else reads them."""
    return args.source_lang, args.target_lang


def generate(data_bin: str, checkpoint: str, subset: str, pair: Pair, beam: int, post_process: str,
             batch_size: int, extra: list[str], sentences: int) -> list[str]:
    """Run fairseq-generate (its progress on stderr); return detokenized hypotheses in corpus order."""
    cmd = generate_command(data_bin, checkpoint, subset, beam, extra, "-s", pair[0], "-t", pair[1],
                           "--batch-size", str(batch_size), *(["--post-process", post_process] if post_process else []))
    return hypotheses(run_fairseq(cmd, progress(sentences, "evaluate.py: translated", "D-")).splitlines())


def hypotheses(generate_output: list[str]) -> list[str]:
    """The best detokenized hypothesis of each sentence of fairseq-generate's output lines, in corpus order."""
    hyps = generated(generate_output, "D-")
    return [hyps[i] for i in sorted(hyps)]


def earlier_scores(path: Path) -> bool:
    """Recognise an earlier --json of evaluate.py (a JSON object with its BLEU signature)."""
    try:
        return "bleu_signature" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def check_given(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """What can be wrong with the arguments themselves (paths, checkpoint files, the arguments after
    ``--``), named before fairseq is imported where none follow ``--``; returns the checkpoints."""
    if args.generate_log and extra:
        raise SystemExit("error: --generate-log scores a finished decoding: fairseq-generate options do not apply")
    if args.src_raw and args.ref is None:
        raise SystemExit("error: --src-raw needs --ref: only DATA_BIN's own splits have a recorded reference")
    if not Path(args.data_bin).is_dir():
        raise SystemExit(f"error: DATA_BIN {args.data_bin} {not_a_file(args.data_bin) or 'is not a folder'}")
    for option, path in (("--ref", args.ref), ("--src-raw", args.src_raw), ("--spm", args.spm),
                         ("--generate-log", args.generate_log)):
        if path is not None and not_a_file(path):
            raise SystemExit(f"error: {option} {path} {not_a_file(path)}")
    checkpoints = checked_ensemble(args.checkpoint) if args.checkpoint else []
    check_pass_through(extra, OWNED)
    return checkpoints


def check_inputs(args: argparse.Namespace, checkpoints: list[str], log: list[str] | None) -> tuple[list, list | None]:
    """Everything else that can be wrong before decoding, each named; returns the reference lines
    and the --src-raw lines (None without it). LOG: the --generate-log's lines."""
    refs = read_lines(args.ref)
    sources = read_lines(args.src_raw) if args.src_raw else None
    sentences = len(sources) if sources is not None else split_size(Path(args.data_bin), args.subset, direction(args))
    if sentences != len(refs):
        raise SystemExit(f"error: {args.ref} has {len(refs)} lines but the source has {sentences} sentences")
    inputs = [Path(p) for p in (args.data_bin, args.ref, args.src_raw, args.spm, args.generate_log, *checkpoints) if p]
    check_distinct({"--hyp-out": args.hyp_out, "--json": args.json})
    if args.hyp_out:
        check_output(args.hyp_out, "--hyp-out", inputs, lambda path: written_before(path, HYPOTHESES))
    if args.json:
        check_output(args.json, "--json", inputs, earlier_scores)
    target_dictionary = check_tokenization(args, sources)
    src, tgt = direction(args)
    split = f"split '{args.subset}' of {args.data_bin} ({src}->{tgt}: its {tgt} side)"
    targets = {} if sources is not None else split_targets(Path(args.data_bin), args.subset, (src, tgt),
                                                           target_dictionary, args.post_process)
    if log is not None:
        check_reference(refs, check_log(log, args, targets, split), f"the sentences of {args.generate_log}")
    elif sources is None:
        check_reference(refs, targets, split)
    return refs, sources


def split_targets(data_bin: Path, subset: str, pair: Pair, dictionary, post_process: str) -> dict[int, str]:
    """The target side of PAIR in DATA_BIN's SUBSET as fairseq-generate prints it (T- lines), by
    sentence id; empty when it has none."""
    dataset = binarized(data_bin, subset, 1, pair, dictionary)
    if dataset is None:
        return {}
    if getattr(dataset, "supports_prefetch", False):  # --dataset-impl cached/lazy: read before indexing
        dataset.prefetch(range(len(dataset)))
    return {i: dictionary.string(dataset[i], post_process or None) for i in range(len(dataset))}


def check_log(log: list[str], args: argparse.Namespace, targets: dict[int, str], split: str) -> dict[int, str]:
    """Refuse a --generate-log that is not one whole decoding of SPLIT, whose TARGETS it is given: a
    sentence decoded twice (two logs appended), no T- lines (the targets the reference is checked
    against), or T- lines of another direction or split than the one evaluate.py records; returns
    its T- lines by sentence id."""
    for kind in ("S-", "T-"):
        seen = Counter(line.split("\t", 1)[0] for line in log if line.startswith(kind) and "\t" in line)
        twice = next((sid for sid, n in seen.items() if n > 1), None)
        if twice:
            raise SystemExit(f"error: {args.generate_log} holds sentence {twice[2:]} more than once ({twice} lines: "
                             "two decodings, e.g. appended with >>): give the output of one fairseq-generate run")
    logged = generated(log, "T-")
    if targets and not logged:
        raise SystemExit(f"error: {args.generate_log} holds no T- lines: give fairseq-generate's whole output (the "
                         "reference is checked against its T- lines, the targets of the sentences it decoded)")
    same, compared = resembling(logged, targets, every=True)
    if same < compared / 2:
        raise SystemExit(f"error: the T- lines of {args.generate_log} are not the targets of {split}: {same} of "
                         f"{compared} resemble them; a decoding of another direction or split? give its -s/-t and "
                         "--subset")
    return logged


def check_tokenization(args: argparse.Namespace, sources: list[str] | None):
    """The sentencepiece options against DATA_BIN's dictionaries, in both directions, and --spm on
    the --src-raw text (SOURCES): at most MAX_UNKNOWN of its pieces unknown; returns the target dictionary."""
    from fairseq.data import Dictionary  # here: refusals before this need no fairseq (seconds to import)

    pair = direction(args)
    dicts = {side: Dictionary.load(dictionary_path(Path(args.data_bin), lang, pair))
             for side, lang in zip(("source", "target"), pair)}
    check_post_process(dicts["target"], args.post_process)
    if uses_sentencepiece(dicts["target"]) and args.post_process != "sentencepiece" and not args.generate_log:
        raise SystemExit(f"error: the model writes sentencepiece pieces (its dictionary's entries start with "
                         f"{PIECE_START}): pass --post-process sentencepiece, or the score is computed on pieces")
    if args.spm:
        sp = load_spm(args.spm, "--spm")
        check_spm_model(dicts, sp, f"--spm {args.spm}")
        share = unknown_share(sp, dicts["source"], sources) if sources else 0.0
        if share > MAX_UNKNOWN:
            raise SystemExit(f"error: --spm {args.spm} makes {share:.0%} of the --src-raw text's pieces unknown to "
                             "the model's dictionary (<unk>): it is not the sentencepiece model that made it (a "
                             "larger one of the same text?); use the spm.model of the same prepare.py output")
    elif args.src_raw and uses_sentencepiece(dicts["source"]):
        raise SystemExit("error: the model reads sentencepiece pieces: pass --spm with the sentencepiece model "
                         "the data was prepared with (prepare.py's OUT/spm.model)")
    return dicts["target"]


def binarize_raw(data_bin: Path, pair: Pair, sources: list[str], refs: list[str], spm_model: Path | None,
                 work: Path) -> str:
    """Encode raw sentence pairs (sentencepiece when given) and binarize them as split 'test'
    with DATA_BIN's dictionaries, so the model sees exactly its training vocabulary."""
    src, tgt = pair
    sp = load_spm(spm_model, "--spm") if spm_model else None
    for lang, lines in ((src, sources), (tgt, refs)):
        if sp is not None:
            lines = encode_pieces(sp, lines)
        (work / f"test.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    binarize_with(data_bin, "test", work / "test", work / "bin", pair)
    return str(work / "bin")


def score(hyps: list[str], refs: list[str]) -> dict:
    if len(hyps) != len(refs):
        raise SystemExit(f"error: {len(hyps)} hypotheses for {len(refs)} references: sentences were lost")
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "sentences": len(hyps),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(b)}


def prepared_defaults(args: argparse.Namespace) -> None:
    """For DATA_BIN = OUT/bin made by scripts/prepare.py: --post-process its tokenization, and without
    --ref the reference: the raw text of --subset that prepare.py kept, checked against the SHA-256
    OUT/prepare.json records."""
    data_bin = Path(args.data_bin)
    if args.ref is None:
        split_size(data_bin, args.subset, direction(args))  # an unknown --subset, named before the record is asked
    needed = args.ref is None or not args.post_process  # a given --ref and --post-process need no record
    record = prepared_record(data_bin) if needed else None
    if args.ref is None:
        if not record:
            where = prepared_record_path(data_bin)
            raise SystemExit(f"error: no --ref, and no record of the raw text of '{args.subset}': " + (
                f"{where} {not_a_file(where)}" if (where.parent / "bin").resolve() == data_bin.resolve() else
                f"{data_bin} is not the bin folder of a scripts/prepare.py output") + ": pass --ref with the reference")
        args.ref = verified_raw(record, args.subset, "tgt" if direction(args)[1] == record["tgt"] else "src")
    if record:
        args.post_process = args.post_process or record["tokenization"]


DECODING = {"beam": 5, "batch_size": 128, "post_process": "", "spm": None, "src_raw": None}  # options of decoding


def decoding_defaults(args: argparse.Namespace) -> None:
    """Refuse decoding options with --generate-log (a finished decoding: they would be ignored),
    else give the unset ones their defaults."""
    given = [f"--{name.replace('_', '-')}" for name in DECODING if getattr(args, name) is not None]
    if args.generate_log and given:
        raise SystemExit(f"error: --generate-log scores a finished decoding: {', '.join(given)} would not apply; "
                         "leave it out")
    for name, default in DECODING.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def parser() -> argparse.ArgumentParser:
    """evaluate.py's options (decoding ones unset: :func:`decoding_defaults` fills them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", help="fairseq-preprocess output folder")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint, or several joined by ':' to decode with their ensemble")
    p.add_argument("--generate-log", type=Path, help="score this fairseq-generate output instead of decoding: "
                                                     "the whole output (D- and T- lines) of the whole --subset")
    p.add_argument("--ref", type=Path, help="raw reference text (.gz ok), one line per sentence (default for data "
                   "made by scripts/prepare.py: the raw text of --subset kept in OUT/raw, checked against the "
                   "SHA-256 recorded in OUT/prepare.json)")
    p.add_argument("--subset", default="test")
    direction_options(p, "checkpoint")
    p.add_argument("--src-raw", type=Path, help="translate this raw source file instead of a binarized split")
    p.add_argument("--spm", type=Path, help="sentencepiece model to encode --src-raw with")
    p.add_argument("--beam", type=positive, help=f"beam size (default {DECODING['beam']})")
    p.add_argument("--batch-size", type=positive, help=f"sentences a batch (default {DECODING['batch_size']})")
    p.add_argument("--post-process", help="e.g. sentencepiece; empty for pre-tokenized data (default "
                   "for data made by scripts/prepare.py: its tokenization, with --ref too)")
    p.add_argument("--hyp-out", type=Path, help="write hypotheses here, one per line, in corpus order")
    p.add_argument("--json", type=Path, help="write the scores as JSON here")
    return p


def decode(args: argparse.Namespace, extra: list[str], refs: list[str], sources: list[str] | None) -> list[str]:
    """The hypotheses of CHECKPOINT (an ensemble: decoded together) for --subset or --src-raw."""
    with tempfile.TemporaryDirectory() as work:
        data_bin, subset = args.data_bin, args.subset
        if sources is not None:
            data_bin = binarize_raw(Path(args.data_bin), direction(args), sources, refs, args.spm, Path(work))
            subset = "test"
        checkpoint = fairseq_ensemble(split_ensemble(args.checkpoint), Path(work))
        return generate(data_bin, checkpoint, subset, direction(args), args.beam, args.post_process, args.batch_size,
                        extra, len(refs))


def write_outputs(args: argparse.Namespace, hyps: list[str], result: dict) -> None:
    """--hyp-out (with the SHA-256 record beside it) and --json, each written whole or not at all."""
    try:
        if args.hyp_out:
            write_recorded(args.hyp_out, HYPOTHESES, "".join(h + "\n" for h in hyps).encode("utf-8"))
        if args.json:
            with atomic_write(args.json, "w") as f:
                f.write(json.dumps(result, indent=2) + "\n")
    except WriteError as e:
        raise SystemExit(f"error: {e}")


def main() -> None:
    args, extra = parser().parse_known_args()
    if (args.checkpoint is None) == (args.generate_log is None):  # named before what either needs
        raise SystemExit("error: give a CHECKPOINT to decode with, or --generate-log to score: "
                         + ("not both" if args.checkpoint else "neither is given"))
    decoding_defaults(args)
    extra = [a for a in extra if a != "--"]
    try:
        checkpoints = check_given(args, extra)
        args.source_lang, args.target_lang = decoding_direction(Path(args.data_bin), checkpoints, args.source_lang,
                                                                args.target_lang)
        prepared_defaults(args)
        log = read_lines(args.generate_log) if args.generate_log else None
        refs, sources = check_inputs(args, checkpoints, log)
        reference_sha256 = sha256_file(args.ref)  # what the JSON names: the file as it was scored
        hyps = hypotheses(log) if log is not None else None
    except (TextError, CheckpointError, OutputError, TokenizationError) as e:
        raise SystemExit(f"error: {e}")
    if hyps is None:
        hyps = decode(args, extra, refs, sources)
    elif any(PIECE_START in h for h in hyps):
        raise SystemExit(f"error: {args.generate_log} holds sentencepiece pieces: decode with --post-process "
                         "sentencepiece, or the score is computed on pieces")
    result = score(hyps, refs)
    made_by = ({"generate_log": os.path.abspath(args.generate_log)} if args.generate_log else
               {"checkpoint": absolute_ensemble(args.checkpoint), "beam": args.beam,
                "post_process": args.post_process, "generate_args": extra})
    result.update(**made_by, direction="-".join(direction(args)),
                  source=str(args.src_raw) if args.src_raw else f"{args.data_bin}:{args.subset}",
                  reference=os.path.abspath(args.ref), reference_sha256=reference_sha256)
    write_outputs(args, hyps, result)
    print(f"{result['bleu_detail']}\n{result['bleu_signature']}\n"
          f"chrF2 = {result['chrf']}\n{result['chrf_signature']}\nsentences = {result['sentences']}")


if __name__ == "__main__":
    script_main(main)
