"""The generation options and the text the decode paths (fairseq-interactive, ``translate()``,
fairseq-generate, ``--eval-bleu``) are given, checked at the points every path passes through:

* ``FairseqTask.build_generator``: generation options fairseq asserts on (a beam or ``--nbest``
  below 1, ``--nbest`` above the beam, ``--min-len`` above the longest translation allowed, ...)
  are refused by name, one rule each in :data:`GENERATION_RULES`; fairseq-generate's and
  fairseq-interactive's ``main`` check them first, with ``--sampling`` needing ``--nbest`` = ``--beam``
  and fairseq-interactive's ``--batch-size`` at most its ``--buffer-size``; a ``--sentencepiece-model``
  that sentencepiece cannot load, and a ``--post-process`` scheme fairseq does not know, are named
  there as well. ``build_generator`` checks that scheme against the target dictionary, before a
  line is printed (fairseq applies it first to the S- line).
* ``FairseqTask.build_bpe``: a sentencepiece model is checked against the source dictionary it
  must have made (:func:`user_dir.dictionaries.check_pieces`); fairseq encodes only the source with it.
* ``FairseqTask.get_interactive_tokens_and_lengths`` (fairseq-interactive): raw words typed into
  a model that reads sentencepiece pieces are refused, naming the missing ``--bpe`` options.
* ``utils.post_process_prediction``: a ``--post-process`` scheme that fairseq does not know, or
  whose units the target dictionary does not hold, is refused
  (:func:`user_dir.dictionaries.check_post_process`).

A batch for which ``--max-len-a`` allows translations shorter than ``--min-len`` is refused by
:func:`check_batch_limit`, from ``decoding``'s ``SequenceGenerator.generate``.
"""
import dataclasses
import math
from typing import Any, Callable

from fairseq import utils
from fairseq.dataclass.configs import GenerationConfig
from fairseq.sequence_generator import SequenceGenerator
from fairseq.tasks import FairseqTask
from fairseq_cli import generate as fairseq_generate
from fairseq_cli import interactive as fairseq_interactive

from ..checkpoint_files import checked_ensemble
from ..dictionaries import (
    PIECE_START,
    TokenizationError,
    check_bpe_model,
    check_post_process,
    is_added,
    load_spm,
    uses_sentencepiece,
)
from ..errors import Refusal
from ..files import not_a_file
from . import replace
from .refusals import in_one_line

_cli: dict = {"post_process": None}  # fairseq-generate's or -interactive's --post-process, while its main runs


# the generation options that the rules read, with fairseq's defaults
_RULE_OPTIONS = ("beam", "nbest", "sampling", "sampling_topk", "sampling_topp", "temperature", "max_len_a",
                 "max_len_b", "min_len", "print_alignment", "diverse_beam_groups", "diversity_rate", "match_source_len")
_GENERATION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerationConfig) if f.name in _RULE_OPTIONS}
# fairseq-generate's and fairseq-interactive's main assert it before anything, --score-reference too; the
# generator itself returns every sample (the hub and --eval-bleu take the best), so only the CLIs check it
SAMPLING_RULE = (lambda o: o["sampling"] and o["nbest"] != o["beam"],
                 "--sampling returns every one of --beam samples: give --nbest equal to --beam (got --nbest {nbest}, "
                 "--beam {beam})")
ALIGNMENT_RULE = (lambda o: o["print_alignment"] and not o["attention"],
                  "--print-alignment reads the alignment from the model's attention, and the model has none "
                  "(--decoder-attention none): leave it out")
# fairseq's assertions on generation options (generate.py, interactive.py, FairseqTask.build_generator,
# SequenceGenerator) and what it does silently wrong, one rule each: (refused when, message)
GENERATION_RULES: list[tuple[Callable[[dict], bool], str]] = [
    (lambda o: o["beam"] < 1, "--beam must be at least 1, got {beam}"),
    (lambda o: o["nbest"] < 1, "--nbest must be at least 1, got {nbest}"),
    (lambda o: o["nbest"] > o["beam"] and not o["sampling"],
     "--nbest {nbest} is above --beam {beam}: the beam holds only {beam} hypotheses; give --nbest at most --beam"),
    (lambda o: o["sampling_topk"] > 0 and not o["sampling"], "--sampling-topk needs --sampling"),
    (lambda o: o["sampling_topp"] > 0 and not o["sampling"], "--sampling-topp needs --sampling"),
    (lambda o: o["temperature"] <= 0, "--temperature must be greater than 0, got {temperature}"),
    (lambda o: min(o["max_len_a"], o["max_len_b"], o["min_len"]) < 0,
     "--max-len-a ({max_len_a}), --max-len-b ({max_len_b}) and --min-len ({min_len}) must not be negative"),
    (lambda o: o["min_len"] > o["longest"],
     "--min-len {min_len} is above the longest translation allowed ({longest:g}: --max-len-b with --max-len-a 0, "
     "or the model's --max-target-positions - 1); lower --min-len or raise the maximum"),
    (lambda o: sum([o["sampling"], o["diverse_beam_groups"] > 0, o["match_source_len"], o["diversity_rate"] > 0]) > 1,
     "--sampling, --diverse-beam-groups, --match-source-len and --diversity-rate are searches of their own: give "
     "one of them"),
    (lambda o: o["diverse_beam_groups"] > 0 and o["beam"] % o["diverse_beam_groups"],
     "--beam {beam} must be a multiple of --diverse-beam-groups {diverse_beam_groups}"),
    ALIGNMENT_RULE,
]
# with --score-reference, fairseq's scorer reads only the alignment's option
SCORING_RULES = [ALIGNMENT_RULE]


def _longest(options: dict, models: list) -> float:
    """The longest translation fairseq's SequenceGenerator allows whatever the source's length (with
    --max-len-a above 0 it depends on each batch: :func:`check_batch_limit`)."""
    limit = min((m.max_decoder_positions() for m in models if hasattr(m, "max_decoder_positions")),
                default=math.inf) - 1
    return min(limit, options["max_len_b"]) if options["max_len_a"] == 0 else limit


def check_batch_limit(generator: SequenceGenerator, width: int) -> None:
    """fairseq asserts --min-len at most the longest translation it allows a batch of sources WIDTH
    tokens wide (--max-len-a x WIDTH + --max-len-b): that batch is refused by name instead."""
    longest = min(int(generator.max_len_a * width + generator.max_len_b), generator.max_len - 1)
    if generator.min_len > longest:
        raise GenerationOptionError(
            f"--min-len {generator.min_len} is above the longest translation allowed for a batch of sources "
            f"{width} tokens wide ({longest}: --max-len-a {generator.max_len_a:g} x {width} + --max-len-b "
            f"{generator.max_len_b}); lower --min-len or raise --max-len-b")


class GenerationOptionError(Refusal, ValueError):
    """A generation option that fairseq would assert on, or obey silently wrongly."""


def check_generation(args, models: list, cli: bool = False) -> None:
    """Refuse generation options that fairseq would assert on (or obey silently wrongly), naming them;
    with --score-reference fairseq's scorer reads only --print-alignment. CLI: also the rule that fairseq-generate's
    and fairseq-interactive's main assert (:data:`SAMPLING_RULE`), --score-reference or not."""
    options = {name: default if getattr(args, name, None) is None else getattr(args, name)
               for name, default in _GENERATION_DEFAULTS.items()}
    options["longest"] = _longest(options, models)
    options["attention"] = all(getattr(getattr(m, "decoder", None), "attention", True) is not None for m in models)
    rules = ([SAMPLING_RULE] if cli else []) + (SCORING_RULES if getattr(args, "score_reference", False)
                                                 else GENERATION_RULES)
    for refused, message in rules:
        if refused(options):
            raise GenerationOptionError(message.format(**options))


def _valid_generation_options(build_generator):
    def build_generator_checked(self, models, args, *rest, **kwargs):
        check_generation(args, models)
        if _cli["post_process"]:  # before a line is printed
            check_post_process(self.target_dictionary, _cli["post_process"])
        return build_generator(self, models, args, *rest, **kwargs)

    return build_generator_checked


def bpe_of(cfg: Any) -> tuple[str | None, Any]:
    """--bpe's name and the options of its group in CFG (fairseq's config, or its Namespace, which
    holds the name itself and every option)."""
    bpe = getattr(cfg, "bpe", None)
    if bpe is None or isinstance(bpe, str):
        return bpe, cfg
    return getattr(bpe, "_name", None), bpe


def check_decoded_once(cfg: Any, post_process: str | None) -> None:
    """--bpe sentencepiece decodes each hypothesis's pieces; --post-process sentencepiece then took its
    spaces too, and the words ran together ("Thecatsleeps"): refused."""
    if bpe_of(cfg)[0] == "sentencepiece" and post_process == "sentencepiece":
        raise TokenizationError("--post-process sentencepiece with --bpe sentencepiece decodes the pieces twice (the "
                                "words run together): leave --post-process out, as --bpe decodes them already")


def check_sentencepiece_file(cfg: Any) -> None:
    """--bpe sentencepiece's --sentencepiece-model (CFG: fairseq's config or its Namespace): a file
    sentencepiece can load (fairseq: an OSError or RuntimeError traceback after loading the models)."""
    name, group = bpe_of(cfg)
    path = getattr(group, "sentencepiece_model", None)
    if name != "sentencepiece" or (path and "://" in path):
        return
    if path in (None, "", "???"):  # unset: fairseq's config marks it "???"
        raise TokenizationError("--bpe sentencepiece needs --sentencepiece-model PATH (prepare.py's OUT/spm.model)")
    if not_a_file(path):
        raise TokenizationError(f"--sentencepiece-model {path} {not_a_file(path)}")
    load_spm(path, "--sentencepiece-model")


def check_buffer(dataset: Any, interactive: Any) -> None:
    """fairseq-interactive asserts --batch-size at most --buffer-size (the lines it reads before it
    translates; below 1, its default 0 too, it reads 1): refused by name."""
    batch, given = getattr(dataset, "batch_size", None), getattr(interactive, "buffer_size", 0) or 0
    if batch and batch > max(given, 1):
        raise GenerationOptionError(f"--batch-size {batch} is above --buffer-size {max(given, 1)}"
                                    + " (its default 0 reads as 1)" * (given < 1) + ", the lines fairseq-interactive "
                                    "reads before it translates: give --buffer-size at least --batch-size")


def _valid_generation_options_first(main):
    """fairseq-generate's and fairseq-interactive's ``main`` assert on ``--sampling`` with ``--nbest``
    other than ``--beam`` before any generator is built: the same rules run first, by name, and the
    ``--path`` checkpoints are checked. A refusal of the plugin's ends the command with its one
    line, no traceback (fairseq-generate calls ``main`` itself, not through ``call_main``)."""
    interactive = main.__module__ == fairseq_interactive.__name__

    def main_checked(cfg, *args, **kwargs):
        try:
            check_generation(getattr(cfg, "generation", cfg), [], cli=True)  # a Namespace, or the DictConfig's group
            if interactive:
                check_buffer(getattr(cfg, "dataset", cfg), getattr(cfg, "interactive", cfg))
            common_eval = getattr(cfg, "common_eval", cfg)
            check_post_process(None, getattr(common_eval, "post_process", None))  # fairseq: a traceback at S-
            check_decoded_once(cfg, getattr(common_eval, "post_process", None))
            check_sentencepiece_file(cfg)
            path = getattr(common_eval, "path", None)
            if path and "://" not in path:  # fairseq's own check is a traceback ("Model file not found")
                checked_ensemble(path, contents=False)  # the load reads them (patches/checkpoints.py)
            _cli["post_process"] = getattr(common_eval, "post_process", None)  # build_generator checks its fit
            return main(cfg, *args, **kwargs)
        except Refusal as e:
            raise in_one_line(e) from None
        finally:
            _cli["post_process"] = None

    return main_checked


def _pieces_match_dictionaries(build_bpe):
    def build_bpe_checked(self, args):
        bpe = build_bpe(self, args)
        check_bpe_model(bpe, self.source_dictionary, args)
        return bpe

    return build_bpe_checked


def _post_process_fits(post_process_prediction):
    def post_process_prediction_checked(hypo_tokens, src_str, alignment, align_dict, tgt_dict, remove_bpe=None,
                                        *args, **kwargs):
        checked = tgt_dict.__dict__.setdefault("_post_process_checked", set())  # once per scheme, not per sentence
        if remove_bpe not in checked:
            check_post_process(tgt_dict, remove_bpe)
            checked.add(remove_bpe)
        return post_process_prediction(hypo_tokens, src_str, alignment, align_dict, tgt_dict, remove_bpe,
                                       *args, **kwargs)

    return post_process_prediction_checked


def in_pieces(line: str, dictionary) -> bool:
    """True when LINE reads as sentencepiece pieces: one of its tokens starts a word (U+2581), or
    the dictionary knows them all (a model without the dummy prefix); added tags are skipped."""
    words = [w for w in line.split() if not is_added(w)]
    return any(w.startswith(PIECE_START) for w in words) or all(dictionary.index(w) != dictionary.unk() for w in words)


def _typed_text_in_pieces(get_tokens):
    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        if not uses_sentencepiece(self.source_dictionary):
            return get_tokens(self, lines, encode_fn)

        def encode_checked(line: str) -> str:
            encoded = encode_fn(line)
            if not in_pieces(encoded, self.source_dictionary):
                raise TokenizationError("the model reads sentencepiece pieces but the input is not encoded: "
                                        "start fairseq-interactive with --bpe sentencepiece --sentencepiece-model "
                                        "OUT/spm.model")
            return encoded

        return get_tokens(self, lines, encode_checked)

    return get_interactive_tokens_and_lengths


replace(FairseqTask, "build_generator", _valid_generation_options)
replace(fairseq_generate, "main", _valid_generation_options_first)
replace(fairseq_interactive, "main", _valid_generation_options_first)
replace(FairseqTask, "build_bpe", _pieces_match_dictionaries)
replace(utils, "post_process_prediction", _post_process_fits)
replace(FairseqTask, "get_interactive_tokens_and_lengths", _typed_text_in_pieces)
