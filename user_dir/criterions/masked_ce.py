"""Masked cross-entropy: padding positions contribute nothing to the loss or its gradient.

D2L's ``sequence_mask`` idea in fairseq's criterion contract. The mask is ``target != pad``
(fairseq right-pads targets, so it equals ``sequence_mask(valid_lengths)``). Each sentence's
loss is the sum over its valid tokens, so identical logits with valid lengths 4, 2, 0 give
per-sentence losses 2 : 1 : 0. Logged per token in base 2, like fairseq's ``cross_entropy``.

Padding is not only masked but skipped: for encoder-decoder models (``extract_features`` and
``output_layer``, as ``rnn_seq2seq`` and fairseq's ``lstm`` have) the vocabulary projection and
softmax run on the real target positions only, the largest share of the work at these sizes.
There the loss is taken from the logits by one autograd function (:class:`TokenNLL`) whose
backward writes the gradient into the saved log-probabilities: no N x V tensor is allocated in
the backward pass, where log-softmax, gather and sum each allocated their own. A model wrapped for
training in several processes takes the full B x T x V path, with the same loss: torch's DDP must
see the model's forward, which ``extract_features`` would go around.
"""
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel, FairseqDecoder, FairseqEncoderDecoderModel
from omegaconf import II
from torch import Tensor

from ..errors import OptionError


@dataclass
class MaskedCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing, 0 means no label smoothing"}
    )
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("masked_ce", dataclass=MaskedCrossEntropyConfig)
class MaskedCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, sentence_avg: bool, label_smoothing: float = 0.0):
        super().__init__(task)
        if not 0.0 <= label_smoothing < 1.0:
            raise OptionError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        self.sentence_avg = sentence_avg
        self.eps = label_smoothing

    def forward(self, model: BaseFairseqModel, sample: dict, reduce: bool = True) -> Tuple[Tensor, int, dict]:
        """Returns ``(loss, sample_size, logging_output)``; with ``reduce=False`` the loss is
        one summed value per sentence (B,)."""
        if normalises_by_log_softmax(model):
            loss, nll_loss = self.compute_loss_on_tokens(model, sample)
        else:
            loss, nll_loss = self.compute_loss(model, model(**sample["net_input"]), sample)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.sum().data,
            "nll_loss": nll_loss.sum().data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        return (loss.sum() if reduce else loss), sample_size, logging_output

    def compute_loss(self, model: BaseFairseqModel, net_output: tuple, sample: dict) -> Tuple[Tensor, Tensor]:
        """Per-sentence (B,) smoothed loss and NLL, summed over non-padding positions."""
        lprobs = model.get_normalized_probs(net_output, log_probs=True)  # B x T x V
        target = model.get_targets(sample, net_output)                     # B x T
        mask = target.ne(self.padding_idx)                                 # B x T, the sequence mask
        # without ignore_index fairseq already squeezes to B x T; squeezing again would turn
        # a B x 1 batch (one-token targets) into (B,) and broadcast the sum to B x B
        loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps, reduce=False)  # B x T
        return masked_sum(loss, mask), masked_sum(nll_loss, mask)

    def compute_loss_on_tokens(self, model: BaseFairseqModel, sample: dict) -> Tuple[Tensor, Tensor]:
        """:meth:`compute_loss` with the output layer applied to non-padding positions only, for
        models that :func:`normalises_by_log_softmax`."""
        target = sample["target"]                                          # B x T
        mask = target.ne(self.padding_idx)
        features, _ = model.extract_features(**sample["net_input"])       # B x T x C
        logits = model.output_layer(features[mask])                        # N x V, N = real tokens
        loss, nll_loss = TokenNLL.apply(logits.float(), target[mask], self.eps)  # N each
        sentence = torch.arange(target.size(0), device=target.device).unsqueeze(1).expand_as(target)[mask]
        return (loss.new_zeros(target.size(0)).index_add(0, sentence, loss),
                nll_loss.new_zeros(target.size(0)).index_add(0, sentence, nll_loss))

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        nll_loss_sum = sum(log.get("nll_loss", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        # divide by log(2) to report in base 2, like fairseq's own criterions
        metrics.log_scalar("loss", loss_sum / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", nll_loss_sum / ntokens / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def normalises_by_log_softmax(model) -> bool:
    """Whether ``model`` is an encoder-decoder whose probabilities are fairseq's default
    log-softmax of its output layer's logits (``rnn_seq2seq``, fairseq's ``lstm``), so that
    the loss can be taken from the logits of real tokens alone.
    Any other normalisation (adaptive softmax, an overridden ``get_normalized_probs``) is
    respected through the full B x T x V path."""
    if not isinstance(model, FairseqEncoderDecoderModel):
        return False
    if getattr(model.decoder, "adaptive_softmax", None) is not None:
        return False
    names = ("get_normalized_probs", "get_normalized_probs_scriptable")
    return all(getattr(type(obj), name) is getattr(base, name)
               for obj, base in ((model, BaseFairseqModel), (model.decoder, FairseqDecoder)) for name in names)


class TokenNLL(torch.autograd.Function):
    """Per-token label-smoothed loss and NLL (N each) from N x V float32 logits, with fairseq's
    ``label_smoothed_nll_loss`` definition: ``(1 - eps - eps/(V-1)) nll + eps/(V-1) smooth``, where
    ``smooth = -sum_v log p_v``.

    The gradient is ``softmax * (a + V b) - onehot * a - b`` with ``a = (1 - eps - eps/(V-1)) g_loss
    + g_nll`` and ``b = eps/(V-1) g_loss``; backward computes it in place of the saved log-probs
    (so a graph can be back-propagated through once, which is all training does).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
        lprobs = torch.log_softmax(logits, dim=-1)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        eps_i = eps / (lprobs.size(-1) - 1)
        loss = (1.0 - eps - eps_i) * nll - eps_i * lprobs.sum(-1) if eps else nll.clone()
        ctx.save_for_backward(lprobs, target)
        ctx.eps, ctx.spent = eps, False
        ctx.set_materialize_grads(False)
        return loss, nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_loss: Optional[Tensor], g_nll: Optional[Tensor]):
        if ctx.spent:
            raise RuntimeError("masked_ce: backward through the same loss twice is not supported")
        ctx.spent = True
        lprobs, target = ctx.saved_tensors
        vocab, eps_i = lprobs.size(-1), ctx.eps / (lprobs.size(-1) - 1)
        g_loss = lprobs.new_zeros(lprobs.shape[:-1]) if g_loss is None else g_loss
        a = (1.0 - ctx.eps - eps_i) * g_loss + (0.0 if g_nll is None else g_nll)
        b = eps_i * g_loss
        grad = lprobs.exp_().mul_((a + vocab * b).unsqueeze(-1))  # the softmax term, in place
        grad.scatter_add_(-1, target.unsqueeze(-1), -a.unsqueeze(-1))
        if ctx.eps:
            grad.sub_(b.unsqueeze(-1))
        return grad, None, None


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum B x T ``values`` over positions where ``mask`` is true -> (B,).

    ``where`` (not multiplication) so a NaN/inf at a padding position cannot leak in.
    """
    if values.shape != mask.shape:
        raise ValueError(f"masked_sum: values {tuple(values.shape)} and mask {tuple(mask.shape)} differ")
    return torch.where(mask, values, values.new_zeros(())).sum(dim=1)
