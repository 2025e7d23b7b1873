"""Every sentence is batched, whatever --required-batch-size-multiple (fairseq #5036, #5351)."""
import numpy as np
import pytest
from fairseq import options, tasks
from fairseq.data import data_utils


@pytest.mark.parametrize("multiple", [1, 3, 8, 16, 64])
@pytest.mark.parametrize("max_tokens, max_sentences", [(None, 64), (400, None), (100, 7)])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_batches_cover_every_sentence_once(toy_bin, split, multiple, max_tokens, max_sentences):
    """Through fairseq's own task and iterator, as train, validate and generate use them
    (3000, 100 and 203 sentences: none a multiple of 64, 203 none of 3, 8 or 16)."""
    args = options.parse_args_and_arch(options.get_generation_parser(), [str(toy_bin)])  # as the CLIs do
    task = tasks.setup_task(args)
    task.load_dataset(split)
    dataset = task.dataset(split)
    itr = task.get_batch_iterator(dataset, max_tokens=max_tokens, max_sentences=max_sentences,
                                  required_batch_size_multiple=multiple, seed=1)
    ids = np.concatenate([batch["id"].numpy() for batch in itr.next_epoch_itr(shuffle=split == "train")])
    assert sorted(ids) == list(range(len(dataset)))


def test_a_generator_of_indices_is_batched_completely():
    batches = data_utils.batch_by_size(iter(range(21)), lambda i: 5, max_tokens=40, required_batch_size_multiple=8)
    assert [list(b) for b in batches] == [list(range(8)), list(range(8, 16)), list(range(16, 21))]
