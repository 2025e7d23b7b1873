"""The decode paths (fairseq-interactive, ``from_pretrained(...).translate()``, fairseq-generate)
validate their input as the file readers do, at the points every path passes through:

* ``FairseqTask.build_generator``: a beam or ``--nbest`` below 1 is refused by name.
* ``FairseqTask.build_bpe``: a sentencepiece model is checked against the dictionaries it must
  have made (:func:`user_dir.dictionaries.check_pieces`).
* ``FairseqTask.get_interactive_tokens_and_lengths`` (fairseq-interactive): raw words typed into
  a model that reads sentencepiece pieces are refused, naming the missing ``--bpe`` options.
* ``FairseqTask.filter_indices_by_size`` on a dataset built for inference (interactive, hub): a
  sentence longer than the model takes is answered with an empty translation and a warning,
  instead of ending the session (fairseq's default) or vanishing from the batch
  (``--skip-invalid-size-inputs-valid-test``).
* ``SequenceGenerator.generate``: a source with no known word (empty, blank, every word unknown,
  or over-long as above) gets an empty translation and a warning, not a made-up sentence.
"""
import logging

import torch
from fairseq import utils
from fairseq.sequence_generator import SequenceGenerator, SequenceGeneratorWithAlignment
from fairseq.tasks import FairseqTask
from fairseq.tasks.translation import TranslationTask

from ..dictionaries import PIECE_START, TokenizationError, check_pieces, piece_vocabulary, uses_sentencepiece
from . import replace

logger = logging.getLogger("user_dir.decoding")
_FOR_INFERENCE = "_user_dir_for_inference"  # set on the datasets made from typed or passed text


def _positive_beam(build_generator):
    def build_generator_checked(self, models, args, *rest, **kwargs):
        for name in ("beam", "nbest"):
            value = getattr(args, name, 1)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        return build_generator(self, models, args, *rest, **kwargs)

    return build_generator_checked


def _pieces_match_dictionaries(build_bpe):
    def build_bpe_checked(self, args):
        bpe = build_bpe(self, args)
        sp = getattr(bpe, "sp", None)  # fairseq's SentencepieceBPE
        if sp is not None:
            vocabulary = piece_vocabulary(sp)
            for side in ("source", "target"):
                check_pieces(getattr(self, f"{side}_dictionary"), vocabulary, args.sentencepiece_model, side)
        return bpe

    return build_bpe_checked


def _pieces_removed_only_from_pieces(post_process_prediction):
    def post_process_prediction_checked(hypo_tokens, src_str, alignment, align_dict, tgt_dict, remove_bpe=None,
                                        *args, **kwargs):
        if remove_bpe == "sentencepiece":
            pieces = getattr(tgt_dict, "_uses_sentencepiece", None)  # once per dictionary, not per sentence
            if pieces is None:
                pieces = tgt_dict._uses_sentencepiece = uses_sentencepiece(tgt_dict)
            if not pieces:
                raise TokenizationError("--post-process sentencepiece: the model's target dictionary holds words, "
                                        "not sentencepiece pieces; leave it out, or the words are joined wrongly")
        return post_process_prediction(hypo_tokens, src_str, alignment, align_dict, tgt_dict, remove_bpe,
                                       *args, **kwargs)

    return post_process_prediction_checked


def _typed_text_in_pieces(get_tokens):
    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        if not uses_sentencepiece(self.source_dictionary):
            return get_tokens(self, lines, encode_fn)

        def encode_checked(line: str) -> str:
            encoded = encode_fn(line)
            if encoded.strip() and not encoded.split()[0].startswith(PIECE_START):
                raise ValueError("the model reads sentencepiece pieces but the input is not encoded: start "
                                 "fairseq-interactive with --bpe sentencepiece --sentencepiece-model OUT/spm.model")
            return encoded

        return get_tokens(self, lines, encode_checked)

    return get_interactive_tokens_and_lengths


def _mark_for_inference(build_dataset_for_inference):
    def build_dataset_for_inference_marked(self, *args, **kwargs):
        dataset = build_dataset_for_inference(self, *args, **kwargs)
        setattr(dataset, _FOR_INFERENCE, True)
        return dataset

    return build_dataset_for_inference_marked


def _answer_over_long(filter_indices_by_size):
    def filter_indices_by_size_keeping_all(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        if getattr(dataset, _FOR_INFERENCE, False) and max_positions is not None:
            _, too_long = dataset.filter_indices_by_size(indices, max_positions)
            limit = max_positions[0] if isinstance(max_positions, tuple) else max_positions
            for i in too_long:
                logger.warning(f"sentence {i} has {dataset.src_sizes[i]} tokens, more than the model takes "
                               f"({limit}, --max-source-positions): answered with an empty translation")
                dataset.src[i] = dataset.src[i].new_tensor([dataset.eos])
                dataset.src_sizes[i] = 1
        return filter_indices_by_size(self, indices, dataset, max_positions, ignore_invalid_inputs)

    return filter_indices_by_size_keeping_all


def nothing_to_translate(src_tokens: torch.Tensor, pad: int, eos: int, unk: int) -> torch.Tensor:
    """Per row of a B x S source batch: True when no token is a known word (only pad, eos, unk)."""
    return ((src_tokens == pad) | (src_tokens == eos) | (src_tokens == unk)).all(dim=1)


def _empty_answers(generate):
    def generate_or_empty(self, models, sample, **kwargs):
        finalized = generate(self, models, sample, **kwargs)
        src_tokens = sample["net_input"]["src_tokens"]
        empty = nothing_to_translate(src_tokens, self.pad, self.eos, self.unk)
        for row in empty.nonzero().flatten().tolist():
            sid = int(sample["id"][row]) if "id" in sample else row
            logger.warning(f"sentence {sid} holds no word the model knows (empty, blank or all unknown): "
                           "answered with an empty translation")
            finalized[row] = [{"tokens": src_tokens.new_tensor([self.eos]), "score": torch.tensor(0.0),
                               "attention": torch.empty(0), "alignment": torch.empty(0),
                               "positional_scores": torch.zeros(1)}]
        return finalized

    return generate_or_empty


replace(FairseqTask, "build_generator", _positive_beam)
replace(FairseqTask, "build_bpe", _pieces_match_dictionaries)
replace(utils, "post_process_prediction", _pieces_removed_only_from_pieces)
replace(FairseqTask, "get_interactive_tokens_and_lengths", _typed_text_in_pieces)
replace(TranslationTask, "build_dataset_for_inference", _mark_for_inference)
replace(FairseqTask, "filter_indices_by_size", _answer_over_long)
replace(SequenceGenerator, "generate", _empty_answers)
replace(SequenceGeneratorWithAlignment, "generate", _empty_answers)  # --print-alignment: its own generate
