"""masked_ce: exact numbers on hand-built logits, and agreement with fairseq's own criterions."""
import math

import pytest
import torch
from fairseq.criterions.cross_entropy import CrossEntropyCriterion
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.logging import metrics
from torch import nn
from torch.testing import assert_close

from user_dir.criterions.masked_ce import MaskedCrossEntropyCriterion


class FixedLogits(nn.Module):
    """A model whose output is a given B x T x V logits tensor (the part under test is the loss)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, **net_input):
        return self.logits, None

    def get_normalized_probs(self, net_output, log_probs):
        return torch.log_softmax(net_output[0], dim=-1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def sample_with_lengths(task, lengths, steps=4):
    """Targets with the given valid lengths, right-padded like fairseq's targets."""
    d = task.target_dictionary
    target = torch.full((len(lengths), steps), d.pad())
    for i, n in enumerate(lengths):
        target[i, :n] = d.nspecial + torch.arange(n)
    return {"net_input": {}, "target": target, "ntokens": int(sum(lengths))}


def test_valid_lengths_4_2_0_give_losses_2_1_0(task):
    """Identical logits at every position and the same word at every valid position."""
    crit = MaskedCrossEntropyCriterion(task, sentence_avg=False)
    sample = sample_with_lengths(task, [4, 2, 0])
    word = task.target_dictionary.nspecial
    sample["target"].masked_fill_(sample["target"].ne(task.target_dictionary.pad()), word)
    logits = torch.randn(len(task.target_dictionary)).expand(3, 4, -1).clone()  # B x T x V
    loss, _, log = crit(FixedLogits(logits), sample, reduce=False)
    assert loss.shape == (3,)
    assert_close(loss / loss[1], torch.tensor([2.0, 1.0, 0.0]))
    assert_close(loss[1], -2 * torch.log_softmax(logits[0, 0], -1)[word])
    assert_close(log["loss"], loss.sum())


def test_equals_fairseq_cross_entropy_without_smoothing(task):
    sample = sample_with_lengths(task, [4, 3, 1])
    logits = torch.randn(3, 4, len(task.target_dictionary))
    ours = MaskedCrossEntropyCriterion(task, sentence_avg=False)(FixedLogits(logits), sample)
    ref = CrossEntropyCriterion(task, sentence_avg=False)(FixedLogits(logits), sample)
    assert_close(ours[0], ref[0])
    assert ours[1] == ref[1] == 8


def test_label_smoothing_equals_fairseq_label_smoothed_cross_entropy(task):
    sample = sample_with_lengths(task, [4, 3, 1])
    logits = torch.randn(3, 4, len(task.target_dictionary))
    ours = MaskedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)(FixedLogits(logits), sample)
    ref = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)(FixedLogits(logits), sample)
    assert_close(ours[0], ref[0])
    assert_close(ours[2]["nll_loss"], ref[2]["nll_loss"])


def test_padding_never_affects_loss_or_gradient(task):
    sample = sample_with_lengths(task, [4, 2, 1])
    crit = MaskedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    model = FixedLogits(torch.randn(3, 4, len(task.target_dictionary)))
    loss, _, _ = crit(model, sample)
    loss.backward()
    pad = sample["target"].eq(task.target_dictionary.pad())
    assert (model.logits.grad[pad] == 0).all() and (model.logits.grad[~pad] != 0).any()
    # wild logits at padding positions (even inf) change nothing
    wild = FixedLogits(model.logits.detach().masked_fill(pad.unsqueeze(-1), float("inf")))
    assert_close(crit(wild, sample)[0], loss.detach())


@pytest.mark.parametrize("sentence_avg", [False, True])
def test_logs_base_2_like_fairseq(task, sentence_avg):
    sample = sample_with_lengths(task, [4, 3, 1])
    crit = MaskedCrossEntropyCriterion(task, sentence_avg=sentence_avg)
    loss, sample_size, log = crit(FixedLogits(torch.randn(3, 4, len(task.target_dictionary))), sample)
    assert sample_size == (3 if sentence_avg else 8)
    assert set(log) == {"loss", "nll_loss", "ntokens", "nsentences", "sample_size"}
    with metrics.aggregate() as agg:
        crit.reduce_metrics([log, log])  # two workers: logs sum
        values = agg.get_smoothed_values()
    assert values["loss"] == pytest.approx(round(2 * loss.item() / (2 * sample_size) / math.log(2), 3))
    assert values["nll_loss"] == pytest.approx(round(loss.item() / 8 / math.log(2), 3))
    assert values["ppl"] == pytest.approx(2 ** values["nll_loss"], rel=1e-2)
    assert crit.logging_outputs_can_be_summed()
