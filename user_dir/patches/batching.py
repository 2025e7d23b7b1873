"""Keep every sentence whatever ``--required-batch-size-multiple`` is.

fairseq 0.12's ``data_utils.batch_by_size`` drops the last batch when its size is not a
multiple of ``--required-batch-size-multiple`` (default 8; fairseq issues #5036, #5351), so
fairseq-generate silently translates fewer sentences than the split holds, and training and
validation skip a few each epoch. Batches are consecutive runs of ``indices``, so the dropped
batch is exactly the indices after the last kept one: it is put back. Batches built from
``fixed_shapes`` are left as fairseq makes them.
"""
import numpy as np
from fairseq.data import data_utils

from . import replace


def _keep_last_batch(batch_by_size):
    def batch_by_size_complete(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None,
                               max_sentences=None, required_batch_size_multiple=1, fixed_shapes=None):
        if not isinstance(indices, np.ndarray):  # an iterator would be spent by the first call
            indices = np.fromiter(indices, dtype=np.int64, count=-1)
        batches = batch_by_size(indices, num_tokens_fn, num_tokens_vec, max_tokens, max_sentences,
                                required_batch_size_multiple, fixed_shapes)
        kept = sum(len(b) for b in batches)
        if fixed_shapes is None and kept < len(indices):
            batches.append(indices[kept:])
        return batches

    batch_by_size_complete.__doc__ = batch_by_size.__doc__
    return batch_by_size_complete


replace(data_utils, "batch_by_size", _keep_last_batch)
