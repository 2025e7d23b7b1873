"""Weighted sums over source positions, one per decoder step, with a cheaper backward.

Attention forms ``sum_s a_s G_s`` at every step over per-position terms G (the context's gate
terms). Autograd would add an N x S x D outer product into G's gradient at every step;
:class:`StepSums` forms G's gradient once after the loop from all steps' weights and gradients.
"""
from typing import Optional

import torch
from torch import Tensor

from .recurrence import pad_rows


def first_sentences(per_sentence: Tensor, rows: Tensor) -> Tensor:
    """The first n sentences of N x ... when ``rows`` has n < N rows, else all of them."""
    return per_sentence[: rows.size(0)] if rows.size(0) < per_sentence.size(0) else per_sentence


def by_sentence(weights: Tensor, terms: Tensor) -> Tensor:
    """Weights (N k) x S, row i reading sentence i // k of terms N x S x D -> N x k x S, in the
    terms' dtype."""
    return weights.to(terms.dtype).view(terms.size(0), -1, terms.size(1))


def step_sum(weights: Tensor, terms: Tensor) -> Tensor:
    """``sum_s w_s G_s`` per row: weights (N k) x S, terms N x S x D, row i reading sentence
    i // k -> (N k) x D (one batched matmul); n < N rows: the first n sentences."""
    terms = first_sentences(terms, weights)
    return torch.bmm(by_sentence(weights, terms), terms).view(weights.size(0), -1)


class _StepSum(torch.autograd.Function):
    """:func:`step_sum` for one step. Backward returns the weights' gradient and records
    ``(w, grad)`` for :class:`_StepSumTerms`, which forms G's gradient."""

    @staticmethod
    def forward(ctx, weights: Tensor, terms: Tensor, steps: list) -> Tensor:
        terms = first_sentences(terms, weights)
        weights = by_sentence(weights, terms)
        ctx.save_for_backward(weights, terms)
        ctx.steps = steps
        return torch.bmm(weights, terms).view(-1, terms.size(2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        weights, terms = ctx.saved_tensors
        grad = grad.to(terms.dtype).view(weights.size(0), weights.size(1), -1)  # N x k x D
        ctx.steps.append((weights, grad))
        # grad G^T rather than (G grad^T)^T: the BLAS call that reads the terms row by row
        return torch.bmm(grad, terms.transpose(1, 2)).view(-1, terms.size(1)), None, None


class _StepSumTerms(torch.autograd.Function):
    """Identity on G (N x S x D) whose backward, after every step's, forms G's gradient in one
    batched matmul: ``sum_t w_t^T g_t`` over all steps and rows (N x S x Tk times N x Tk x D)."""

    @staticmethod
    def forward(ctx, terms: Tensor, steps: list) -> Tensor:
        ctx.steps, ctx.num_sentences = steps, terms.size(0)
        ctx.set_materialize_grads(False)
        return terms.view_as(terms)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Optional[Tensor]):  # None unless G is also used outside the steps
        if ctx.steps:
            # N x Tk x S, N x Tk x D; a step that read the first n sentences adds zero rows
            weights, grads = (torch.cat([pad_rows(x, ctx.num_sentences) for x in xs], dim=1) for xs in zip(*ctx.steps))
            ctx.steps.clear()
            from_steps = torch.bmm(weights.transpose(1, 2), grads)
            grad = from_steps if grad is None else grad + from_steps
        return grad, None


class StepSums:
    """:func:`step_sum` at every step over one G (N x S x D), with the same values and
    gradients; when G needs a gradient, it is formed once after the loop (module docstring)."""

    def __init__(self, terms: Tensor):
        self.steps: list = []
        self.defer = torch.is_grad_enabled() and terms.requires_grad
        self.terms = _StepSumTerms.apply(terms, self.steps) if self.defer else terms

    def __call__(self, weights: Tensor) -> Tensor:
        if self.defer:
            return _StepSum.apply(weights, self.terms, self.steps)
        return step_sum(weights, self.terms)
