"""masked_ce: exact numbers on hand-built logits, and agreement with fairseq's own criterions."""
import math

import pytest
import torch
from fairseq.criterions.cross_entropy import CrossEntropyCriterion
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion, label_smoothed_nll_loss
from fairseq.logging import metrics
from torch import nn
from torch.testing import assert_close

from helpers import batch, build, prev_tokens
from user_dir.criterions.masked_ce import MaskedCrossEntropyCriterion, TokenNLL, normalises_by_log_softmax


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


def random_sample(task, bsz: int, steps: int, gen: torch.Generator, all_pad_row: bool):
    """Right-padded targets of random valid lengths in [1, steps] (0 for one row if ``all_pad_row``)."""
    lengths = torch.randint(1, steps + 1, (bsz,), generator=gen)
    lengths[0] = steps  # fairseq's batches are as long as their longest target
    if all_pad_row and bsz > 1:
        lengths[-1] = 0
    d = task.target_dictionary
    target = torch.randint(d.nspecial, len(d), (bsz, steps), generator=gen)
    target[torch.arange(steps) >= lengths.unsqueeze(1)] = d.pad()
    return {"net_input": {}, "target": target, "ntokens": int(lengths.sum())}


def per_sentence(loss: torch.Tensor, bsz: int) -> torch.Tensor:
    """fairseq's reduce=False losses (per token, flattened) -> one sum per sentence."""
    return loss.reshape(bsz, -1).sum(dim=1)


def smoothed_logs(crit, log) -> dict:
    with metrics.aggregate() as agg:
        crit.reduce_metrics([log])
        return agg.get_smoothed_values()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("bsz, steps", [(1, 1), (1, 5), (4, 1), (3, 2), (5, 7), (8, 3)])
@pytest.mark.parametrize("all_pad_row", [False, True])
def test_equals_fairseq_criterions_on_every_batch_shape(task, eps, bsz, steps, all_pad_row):
    """Loss, per-sentence loss, gradient and logged values equal fairseq's own criterion's,
    including B = 1, T = 1 (one-token targets: only EOS) and a row that is all padding."""
    gen = torch.Generator().manual_seed(1000 * bsz + 10 * steps + all_pad_row)
    sample = random_sample(task, bsz, steps, gen, all_pad_row)
    logits = torch.randn(bsz, steps, len(task.target_dictionary), generator=gen)
    ref_crit = (LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=eps) if eps
                else CrossEntropyCriterion(task, sentence_avg=False))
    crit = MaskedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=eps)
    (ours, ref) = models = FixedLogits(logits), FixedLogits(logits.clone())
    (loss, size, log), (ref_loss, ref_size, ref_log) = crit(ours, sample), ref_crit(ref, sample)
    assert_close(loss, ref_loss)
    assert size == ref_size == sample["ntokens"]
    for model, value in zip(models, (loss, ref_loss)):
        value.backward()
    assert_close(ours.logits.grad, ref.logits.grad)
    assert_close(log["loss"], ref_log["loss"])
    if eps:
        assert_close(log["nll_loss"], ref_log["nll_loss"])
    ours_logged, ref_logged = smoothed_logs(crit, log), smoothed_logs(ref_crit, ref_log)
    assert ours_logged["loss"] == pytest.approx(ref_logged["loss"], abs=1e-3)
    assert ours_logged["ppl"] == pytest.approx(ref_logged["ppl"], rel=1e-2)
    # reduce=False: one value per sentence, equal to fairseq's per-token values summed per sentence
    ours_each = crit(FixedLogits(logits), sample, reduce=False)[0]
    ref_each = per_sentence(ref_crit(FixedLogits(logits), sample, reduce=False)[0], bsz)
    assert ours_each.shape == (bsz,)
    assert_close(ours_each, ref_each)


def test_one_token_targets_each_get_their_own_loss(task):
    """The batch shape that once broadcast B x 1 to B x B: uniform logits, three EOS-only targets."""
    d = task.target_dictionary
    sample = {"net_input": {}, "target": torch.full((3, 1), d.eos()), "ntokens": 3}
    loss, _, _ = MaskedCrossEntropyCriterion(task, sentence_avg=False)(
        FixedLogits(torch.zeros(3, 1, len(d))), sample, reduce=False)
    assert_close(loss, torch.full((3,), math.log(len(d))))


@pytest.mark.parametrize("arch", ["rnn_seq2seq", "rnn_seq2seq attention", "lstm"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_real_models_skip_padding_with_the_same_loss_and_gradients(task, arch, eps):
    """For encoder-decoder models the output layer runs on real target tokens only; the loss
    per sentence and every gradient equal the full B x T x V computation's."""
    from fairseq.models.lstm import LSTMModel, base_architecture


    if arch == "lstm":
        import argparse
        args = argparse.Namespace(encoder_embed_dim=6, decoder_embed_dim=8, encoder_hidden_size=10,
                                  decoder_hidden_size=12, decoder_out_embed_dim=8, dropout=0.0,
                                  criterion="masked_ce")
        base_architecture(args)
        model = LSTMModel.build_model(args, task)
    else:
        model = build(task, **({"decoder_attention": "additive"} if "attention" in arch else {}))
    src, src_lengths = batch(task, [5, 4, 3, 2])  # sorted: fairseq lstm packs with enforce_sorted
    sample = sample_with_lengths(task, [4, 2, 0, 1], steps=4)
    sample["net_input"] = {"src_tokens": src, "src_lengths": src_lengths, "prev_output_tokens": prev_tokens(task, 4, 4)}
    crit = MaskedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=eps)
    assert normalises_by_log_softmax(model)  # the criterion takes the logits-only path for these
    results = []
    for skip in (True, False):
        model.zero_grad()
        loss, nll = (crit.compute_loss_on_tokens(model, sample) if skip else
                     crit.compute_loss(model, model(**sample["net_input"]), sample))
        loss.sum().backward()
        results.append((loss.detach(), nll.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss, nll, grads), (ref_loss, ref_nll, ref_grads) = results
    assert_close(loss, ref_loss)
    assert_close(nll, ref_nll)
    assert loss[2] == 0 and (loss[[0, 1, 3]] > 0).all()
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("grads", ["loss", "nll", "both"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_nll_equals_log_softmax_and_fairseq_loss(eps, grads, dtype):
    """TokenNLL's values and gradient (computed in place of its saved log-probs) equal
    log_softmax + fairseq's label_smoothed_nll_loss, for any per-token weights on either output."""
    gen = torch.Generator().manual_seed(7)
    logits = (3 * torch.randn(6, 11, generator=gen)).to(dtype).requires_grad_()
    target = torch.randint(0, 11, (6,), generator=gen)
    weights = {k: torch.randn(6, generator=gen) for k in ("loss", "nll")}
    results = []
    for fused in (True, False):
        logits.grad = None
        if fused:
            loss, nll = TokenNLL.apply(logits.float(), target, eps)
        else:
            loss, nll = label_smoothed_nll_loss(torch.log_softmax(logits.float(), -1), target, eps, reduce=False)
        outputs = {"loss": loss, "nll": nll}
        sum((outputs[k] * weights[k]).sum() for k in outputs if grads in (k, "both")).backward()
        results.append((loss.detach(), nll.detach(), logits.grad))
    (loss, nll, grad), (ref_loss, ref_nll, ref_grad) = results
    assert_close(loss, ref_loss)
    assert_close(nll, ref_nll)
    assert grad.dtype == dtype and grad.abs().sum() > 0
    assert_close(grad, ref_grad)


def test_token_nll_refuses_a_second_backward():
    """Backward overwrites the saved log-probs; a retained graph must not give a wrong gradient."""
    logits = torch.randn(3, 5, requires_grad=True)
    loss, _ = TokenNLL.apply(logits, torch.tensor([0, 1, 2]), 0.1)
    loss.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.sum().backward()


@pytest.mark.parametrize("override", ["none", "decoder", "model"])
def test_a_models_own_normalisation_is_respected(task, override):
    """Only fairseq's default log-softmax takes the logits-only path; a model or decoder that
    overrides get_normalized_probs (here: logits / 2) gets its own probabilities."""

    def halved(self, net_output, log_probs, sample=None):
        return torch.log_softmax(net_output[0].float() / 2, dim=-1)

    model = build(task)
    if override != "none":
        owner = model.decoder if override == "decoder" else model
        owner.__class__ = type("Halved", (type(owner),), {"get_normalized_probs": halved})
    src, src_lengths = batch(task, [5, 4, 3])
    sample = sample_with_lengths(task, [4, 2, 3], steps=4)
    sample["net_input"] = {"src_tokens": src, "src_lengths": src_lengths, "prev_output_tokens": prev_tokens(task, 3, 4)}
    crit = MaskedCrossEntropyCriterion(task, sentence_avg=False)
    loss = crit(model, sample, reduce=False)[0]
    assert normalises_by_log_softmax(model) == (override == "none")
    full = crit.compute_loss(model, model(**sample["net_input"]), sample)[0]
    assert_close(loss, full)
    default = crit.compute_loss_on_tokens(model, sample)[0]
    assert (override == "none") == torch.allclose(loss, default)
