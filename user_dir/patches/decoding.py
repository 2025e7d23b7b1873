"""The answers of the decode paths (fairseq-interactive, ``translate()``, fairseq-generate) to
sources with nothing to translate, and two of fairseq's searches repaired:

* ``FairseqTask.filter_indices_by_size`` on a dataset built for inference (interactive, hub): a
  sentence longer than the model takes is answered with an empty translation and a warning,
  instead of ending the session (fairseq's default) or vanishing from the batch
  (``--skip-invalid-size-inputs-valid-test``).
* ``SequenceGenerator.generate``: a source with no known word (empty, blank, every word unknown,
  or over-long as above) gets an empty translation and a warning, not a made-up sentence (models
  with an encoder reading token ids: a language model's empty prompt is left to it). A batch for
  which ``--max-len-a`` allows translations shorter than ``--min-len`` is refused by name
  (fairseq asserts it, batch by batch: :func:`~.generation.check_batch_limit`).
* ``search.DiverseBeamSearch.step``: its per-sentence group overlap is indexed by the sentences'
  dataset ids, not their rows in the batch (an IndexError once an id reaches the batch's size, in
  fairseq-generate and ``--eval-bleu``; another sentence's overlap below it): it is given the rows.
* ``NGramRepeatBlock._no_repeat_ngram`` (``--no-repeat-ngram-size`` without fairseq's CUDA
  extension, e.g. on a CPU): it read the n-grams at the padded end of the token buffer and banned
  nothing; it bans each n-gram the hypothesis already holds (:func:`repeated_ngram_ends`).
* ``fairseq_cli.interactive.make_batches``: the warnings number sentences as fairseq-interactive's
  S- lines do, across its --buffer-size chunks (its datasets count from 0 in each).
"""
import logging
import math

import torch
from fairseq import search
from fairseq.ngram_repeat_block import NGramRepeatBlock
from fairseq.sequence_generator import SequenceGenerator, SequenceGeneratorWithAlignment
from fairseq.tasks import FairseqTask
from fairseq.tasks.translation import TranslationTask
from fairseq_cli import interactive as fairseq_interactive

from . import replace
from .generation import check_batch_limit

logger = logging.getLogger(__name__)
_FOR_INFERENCE = "_user_dir_for_inference"  # set on the datasets made from typed or passed text
# fairseq-interactive numbers its datasets' sentences from 0 in each --buffer-size chunk, adds the
# chunk's first number when it prints S-/H- lines, and passes generate no ids (the batch's are in its
# own hands): the warnings below number the sentences as its S- lines do
_chunk: dict = {"first": 0, "ids": None}  # the chunk's first number, the ids of the batch being decoded
_over_long: set = set()  # sentences answered empty for their length: not warned about again as empty


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
                logger.warning(f"sentence {_chunk['first'] + i} has {dataset.src_sizes[i]} tokens, more than the "
                               f"model takes ({limit}, --max-source-positions): answered with an empty translation")
                _over_long.add(int(i))
                dataset.src[i] = dataset.src[i].new_tensor([dataset.eos])
                dataset.src_sizes[i] = 1
        return filter_indices_by_size(self, indices, dataset, max_positions, ignore_invalid_inputs)

    return filter_indices_by_size_keeping_all


def nothing_to_translate(src_tokens: torch.Tensor, specials: list[int]) -> torch.Tensor:
    """Per row of a B x S source batch: True when no token is a known word (only the dictionary's
    special symbols: padding, begin and end of sentence, unknown)."""
    return torch.isin(src_tokens, src_tokens.new_tensor(specials)).all(dim=1)


def token_source(generator: SequenceGenerator, sample: dict) -> torch.Tensor | None:
    """The source sentences as token ids (batch x length) where the models translate them; None for
    a language model's prompt (may be empty) and a speech model's features."""
    src_tokens = sample["net_input"].get("src_tokens")
    is_ids = src_tokens is not None and src_tokens.dim() == 2 and not src_tokens.is_floating_point()
    return src_tokens if is_ids and generator.model.has_encoder() else None


def _empty_answers(generate):
    def generate_or_empty(self, models, sample, **kwargs):
        src_tokens = token_source(self, sample)
        if src_tokens is not None:
            check_batch_limit(self, src_tokens.size(1))
        finalized = generate(self, models, sample, **kwargs)
        if src_tokens is None:
            return finalized
        empty = nothing_to_translate(src_tokens, [self.pad, self.eos, self.unk, self.tgt_dict.bos()])
        ids = sample["id"] if "id" in sample else _chunk["ids"]
        for row in empty.nonzero().flatten().tolist():
            sid = int(ids[row]) if ids is not None else row
            if sid in _over_long:
                _over_long.discard(sid)  # its warning named its length
            else:
                logger.warning(f"sentence {_chunk['first'] + sid} holds no word the model knows (empty, blank or "
                               "all unknown): answered with an empty translation")
            finalized[row] = [{"tokens": src_tokens.new_tensor([self.eos]), "score": torch.tensor(0.0),
                               "attention": torch.empty(0), "alignment": torch.empty(0),
                               "positional_scores": torch.zeros(1)}]
        return finalized

    return generate_or_empty


_BATCH_IDS = "_user_dir_batch_ids"  # a DiverseBeamSearch's sentences at step 0, in the order of its rows


def _rows_not_ids(step):
    def step_by_rows(self, step_i, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        """fairseq's step, given the rows (at step 0) of the sentences still decoded, not their ids."""
        if original_batch_idxs is not None:
            if step_i == 0:
                setattr(self, _BATCH_IDS, original_batch_idxs)
            first = getattr(self, _BATCH_IDS)
            original_batch_idxs = (original_batch_idxs.unsqueeze(1) == first.unsqueeze(0)).int().argmax(1)
        return step(self, step_i, lprobs, scores, prev_output_tokens, original_batch_idxs)

    return step_by_rows


def repeated_ngram_ends(hypothesis: list[int], n: int) -> list[int]:
    """The tokens that would end an N-gram that HYPOTHESIS (its tokens so far, after the
    beginning-of-sentence) already holds: the N-1 tokens before them are its last N-1."""
    tail = hypothesis[len(hypothesis) - n + 1:] if n > 1 else []
    return [hypothesis[i + n - 1] for i in range(len(hypothesis) - n + 1) if hypothesis[i:i + n - 1] == tail]


def _ngrams_of_the_hypotheses(no_repeat_ngram):
    def no_repeat_ngram_so_far(self, tokens, lprobs, bsz: int, beam_size: int, step: int):
        """fairseq's ban, on each row's tokens 1..STEP (those decoded), not the buffer's padded end."""
        for row, hypothesis in enumerate(tokens[:, 1: step + 1].tolist()):
            banned = repeated_ngram_ends(hypothesis, self.no_repeat_ngram_size)
            if banned:
                lprobs[row, banned] = -math.inf
        return lprobs

    return no_repeat_ngram_so_far


def _numbered_across_chunks(make_batches):
    def make_batches_numbered(lines, *args, **kwargs):
        start = _chunk["first"]
        _over_long.clear()
        try:
            for batch in make_batches(lines, *args, **kwargs):
                _chunk["ids"] = batch.ids  # generate runs on this batch before the next is made
                yield batch
        finally:
            _chunk.update(first=start + len(lines), ids=None)  # as fairseq-interactive's start_id

    return make_batches_numbered


replace(fairseq_interactive, "make_batches", _numbered_across_chunks)
replace(search.DiverseBeamSearch, "step", _rows_not_ids)
replace(NGramRepeatBlock, "_no_repeat_ngram", _ngrams_of_the_hypotheses)
replace(TranslationTask, "build_dataset_for_inference", _mark_for_inference)
replace(FairseqTask, "filter_indices_by_size", _answer_over_long)
replace(SequenceGenerator, "generate", _empty_answers)
replace(SequenceGeneratorWithAlignment, "generate", _empty_answers)  # --print-alignment: its own generate
