"""Reordering what the model keeps between decoder steps when beam search reorders its rows."""
import threading
import weakref
from typing import Dict, Optional

import torch
from torch import Tensor

PER_SENTENCE = "per_sentence"  # key of the N x S x ... tensors kept once per source sentence
Cache = Dict[str, object]  # per-row tensors (``state`` K x L x B x H, others B x ...) and PER_SENTENCE


def reorder(cache: Cache, new_order: Tensor) -> Cache:
    """Select rows (beam hypotheses) of a cache: dim 2 of ``state``, dim 0 of the other per-row
    tensors. The tensors under :data:`PER_SENTENCE` stay once per sentence, row i reading
    sentence i // k (k = rows / sentences): an order that keeps each sentence's rows together in
    equal numbers, as beam search's does, copies none of them unless it drops (or repeats)
    sentences; any other order copies them per row (k = 1)."""
    out = {k: None if v is None else v.index_select(2 if k == "state" else 0, new_order)
           for k, v in cache.items() if k != PER_SENTENCE}
    per_sentence: Optional[Dict[str, Tensor]] = cache.get(PER_SENTENCE)
    if per_sentence:
        kept = sentences_kept(new_order, cache["state"].size(2), next(iter(per_sentence.values())).size(0))
        out[PER_SENTENCE] = per_sentence if kept is None else {k: v.index_select(0, kept)
                                                               for k, v in per_sentence.items()}
    return out


def version(x: Tensor) -> Optional[int]:
    """``x``'s in-place change counter (None for inference tensors, which have none)."""
    return None if x.is_inference() else x._version


_last = threading.local()  # per thread: ``entry``, the last order checked (weak reference, key) and its answer


def sentences_kept(new_order: Tensor, rows: int, num_sentences: int) -> Optional[Tensor]:
    """The per-sentence tensors' new order for ``new_order`` over ``rows`` rows of
    ``num_sentences`` sentences: None when it keeps them all in place (beam search's usual step:
    one check), else the sentences kept in order, or each row's sentence where rows of one
    sentence are apart or in unequal numbers. Beam search reorders the encoder's output and the
    decoder's cache by the same order at every step, so the second call reuses the first's
    answer (on a GPU each check waits for the device) when given the same tensor, unchanged by
    its in-place change counter: writes that bypass the counter (``x.data``, a numpy view) are not
    seen; fairseq's search makes none."""
    count = version(new_order)
    key = None if count is None else (count, rows, num_sentences)
    last = getattr(_last, "entry", None)
    if key is not None and last is not None and last[0]() is new_order and last[1] == key:
        return last[2]
    k = rows // num_sentences
    sentences = torch.div(new_order, k, rounding_mode="floor")
    identity = torch.arange(num_sentences, device=sentences.device)
    kept = None
    usual = new_order.numel() == rows == k * num_sentences
    if not usual or not bool((sentences.view(num_sentences, k) == identity[:, None]).all()):
        # rows change sentence or number: on a GPU this waits for the device again
        kept, counts = torch.unique_consecutive(sentences, return_counts=True)
        if bool((counts != counts[:1]).any()):
            kept = sentences
        elif kept.numel() == num_sentences and bool((kept == identity).all()):
            kept = None  # each sentence's rows together, as many as before or more (the first step)
    _last.entry = weakref.ref(new_order), key, kept
    return kept
