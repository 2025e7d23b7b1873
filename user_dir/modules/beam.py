"""Reordering what the model keeps between decoder steps when beam search reorders its rows."""
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
        num_sentences = next(iter(per_sentence.values())).size(0)
        sentences = torch.div(new_order, cache["state"].size(2) // num_sentences, rounding_mode="floor")
        # on a GPU the next lines wait for the device, as fairseq's search does at every step
        kept, counts = torch.unique_consecutive(sentences, return_counts=True)
        if bool((counts != counts[:1]).any()):
            kept = sentences
        identity = torch.arange(num_sentences, device=kept.device)
        unchanged = kept.numel() == num_sentences and bool((kept == identity).all())
        out[PER_SENTENCE] = per_sentence if unchanged else {k: v.index_select(0, kept) for k, v in per_sentence.items()}
    return out
