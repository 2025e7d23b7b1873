"""Attention over the encoder's outputs: an interface and its types.

An attention type is one class and one entry of :data:`ATTENTIONS`. It says what it computes
once per source sentence (:meth:`Attention.precompute`, kept by beam search once per sentence,
not per hypothesis) and how a decoder state scores the source positions
(:meth:`Attention.scores`); the base class masks padding and normalises. The decoder reads the
weights ``a`` and forms the context ``c_t = sum_s a_s h_s`` where the fixed context enters
without attention.
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

PerSentence = Dict[str, Tensor]  # name -> N x S x ... tensor, one row per source sentence


class Attention(nn.Module):
    """Weights ``softmax(score(s_t, h_s))`` over a source sentence's non-padding positions.

    Queries come as ``(N k) x H`` rows, row i reading source sentence ``i // k`` (k = 1 in
    training, the beam size in beam search). A type is built as ``Type(query_dim, value_dim,
    attention_dim, init)`` and calls :meth:`init_` once its parameters exist.
    """

    def init_(self, init: str) -> None:
        """"uniform": every parameter U(-0.1, 0.1); "torch": keep torch's nn.Linear initialisation."""
        if init == "uniform":
            for p in self.parameters():
                nn.init.uniform_(p, -0.1, 0.1)

    def precompute(self, values: Tensor) -> PerSentence:
        """N x S x C encoder outputs -> what the scores read of them, once per sentence."""
        raise NotImplementedError

    def scores(self, query: Tensor, source: PerSentence) -> Tensor:
        """(N k) x H queries, :meth:`precompute`'s tensors -> N x k x S scores."""
        raise NotImplementedError

    def forward(self, query: Tensor, source: PerSentence, padding_mask: Tensor) -> Tensor:
        """query (N k) x H, :meth:`precompute`'s tensors, padding_mask N x S (True at padding)
        -> weights (N k) x S"""
        scores = self.scores(query, source)
        masked = scores.float().masked_fill(padding_mask.unsqueeze(1), float("-inf"))
        return torch.softmax(masked, dim=2).to(scores.dtype).view(-1, scores.size(2))


class AdditiveAttention(Attention):
    """Bahdanau et al. (2015): ``score(s, h) = v^T tanh(W_q s + W_k h)``.

    Computed as ``2 v^T sigmoid(2 W_q s + 2 W_k h)``: ``tanh(z) = 2 sigmoid(2z) - 1`` and the
    constant ``-sum(v)`` cancels in the softmax; a CPU's sigmoid is far cheaper than its tanh on
    this, the largest elementwise work of a step (docs/design.md). The doubling is applied to
    the weights as they are used, so the parameters are the textbook's.
    """

    def __init__(self, query_dim: int, value_dim: int, attention_dim: int, init: str):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)  # W_q
        self.key_proj = nn.Linear(value_dim, attention_dim, bias=False)  # W_k
        self.score = nn.Linear(attention_dim, 1, bias=False)  # v
        self.init_(init)

    def precompute(self, values: Tensor) -> PerSentence:
        return {"keys": F.linear(values, 2 * self.key_proj.weight)}  # N x S x A: 2 W_k h

    def scores(self, query: Tensor, source: PerSentence) -> Tensor:
        keys = source["keys"]
        query = self.query_proj(query).view(keys.size(0), -1, 1, keys.size(2))  # N x k x 1 x A
        hidden = torch.add(keys.unsqueeze(1), query, alpha=2).sigmoid_()  # N x k x S x A
        return F.linear(hidden, 2 * self.score.weight).squeeze(3)


class MultiplicativeAttention(Attention):
    """Luong et al. (2015), "general": ``score(s, h) = s^T W h``.

    ``W h`` depends on the source only and is precomputed once per sentence; a step is then one
    batched matmul. ``attention_dim`` is unused: W maps the encoder's outputs to the query's size.
    """

    def __init__(self, query_dim: int, value_dim: int, attention_dim: int, init: str):
        super().__init__()
        self.key_proj = nn.Linear(value_dim, query_dim, bias=False)  # W
        self.init_(init)

    def precompute(self, values: Tensor) -> PerSentence:
        return {"keys": self.key_proj(values)}  # N x S x H: W h

    def scores(self, query: Tensor, source: PerSentence) -> Tensor:
        keys = source["keys"]
        query = query.view(keys.size(0), -1, query.size(1))  # N x k x H
        return torch.bmm(query, keys.transpose(1, 2))


ATTENTIONS = {"additive": AdditiveAttention, "multiplicative": MultiplicativeAttention}


def attention_help() -> str:
    """--decoder-attention's help: each type's first docstring line."""
    types = (f"{name}: {cls.__doc__.splitlines()[0].replace('``', '').rstrip('.')}" for name, cls in ATTENTIONS.items())
    return "; ".join(["none: the context is the encoder's final state", *types])
