"""beam.sentences_kept: beam search's usual step costs one check of its order, shared by the
encoder's output and the decoder's cache (on a GPU each check waits for the device), and a
changed order is never taken for the one checked."""
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from user_dir.modules.beam import PER_SENTENCE, reorder, sentences_kept


class Ops(TorchDispatchMode):
    """Counts the aten operations run inside it, by name."""

    def __init__(self):
        super().__init__()
        self.names = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def cache(rows: int, sentences: int) -> dict:
    return {"state": torch.randn(1, 1, rows, 4), PER_SENTENCE: {"outputs": torch.randn(sentences, 5, 4)}}


@pytest.mark.parametrize("order, rows, sentences, kept", [
    ([1, 0, 2, 2, 5, 4], 6, 3, None),  # each sentence's rows in place
    ([0, 0, 1, 1, 2, 2], 3, 3, None),  # the first step: k rows per sentence
    ([0, 1, 5, 4], 6, 3, [0, 2]),  # a finished sentence dropped
    ([2, 3, 2, 3], 6, 3, [1]),  # one sentence's rows only
    ([4, 5, 0, 1, 2, 3], 6, 3, [2, 0, 1]),  # sentences swapped
    ([0, 1, 2, 4, 5], 6, 3, [0, 0, 1, 2, 2]),  # unequal numbers: per row
    ([0, 2, 0, 2], 6, 3, [0, 1, 0, 1]),  # rows of one sentence apart: per row
    ([0, 1, 2, 3, 3], 5, 2, [0, 0, 1, 1, 1]),  # rows not a multiple of the sentences: per row
    ([], 6, 3, []),  # every sentence finished
])
def test_the_sentences_kept(order, rows, sentences, kept):
    got = sentences_kept(torch.tensor(order, dtype=torch.long), rows, sentences)
    assert (got is None and kept is None) or got.tolist() == kept


def test_both_reorders_of_a_step_share_one_check():
    order = torch.tensor([1, 0, 2, 2, 5, 4])
    encoder_out, decoder_cache = cache(6, 3), cache(6, 3)
    with Ops() as ops:
        reorder(encoder_out, order)
    first = ops.names
    with Ops() as ops:
        out = reorder(decoder_cache, order)
    assert first["_local_scalar_dense"] == 1  # one wait for the device on a GPU
    assert ops.names == Counter({"index_select": 1})  # the state's rows only: no check, nothing per sentence
    assert out[PER_SENTENCE] is decoder_cache[PER_SENTENCE]


@pytest.mark.parametrize("change, expected", [
    ("in place", [0, 0, 0, 0, 2, 2]),
    ("another tensor", [0, 0, 0, 0, 2, 2]),
    ("other rows", [1, 0, 2, 2, 5, 4]),
    ("inference", None),  # changed in place with no counter to show it: checked again anyway
])
def test_an_order_that_may_differ_is_checked_again(change, expected):
    order = torch.tensor([1, 0, 2, 2, 5, 4])
    assert sentences_kept(order, 6, 3) is None
    rows = 6
    if change == "in place":
        order[2:4] = torch.tensor([0, 1])  # rows of sentence 0 now where sentence 1's were: per row
    elif change == "another tensor":
        order = torch.tensor([1, 0, 0, 1, 5, 4])
    elif change == "other rows":
        rows = 3  # the same order over other rows: k = 1
    else:
        with torch.inference_mode():
            order = torch.tensor([1, 0, 0, 1, 5, 4])
            assert sentences_kept(order, rows, 3).tolist() == [0, 0, 0, 0, 2, 2]
            order[2:4] = torch.tensor([2, 3])
    got = sentences_kept(order, rows, 3)
    assert (got is None and expected is None) or got.tolist() == expected
