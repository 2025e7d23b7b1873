"""Sentences of different lengths in one batch: what the recurrences skip or group on a CPU.

On a GPU every function here leaves the batch as it is: reading lengths there would wait for
the device, and cuDNN's packed calls already skip padding.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .recurrence import RNN


def by_length(tokens: Tensor, pad: int) -> Tuple[Optional[Tensor], Optional[List[int]]]:
    """For teacher forcing over B x T right-padded targets: an order of the rows, longest first
    (None if they are so already), and for each step the number of rows still inside their
    sentence (:func:`~.recurrence.recur`'s ``active``). (None, None) where no sentence ends
    early, where the padding is not trailing, and off the CPU."""
    if tokens.device.type != "cpu":
        return None, None
    real = tokens.ne(pad)
    lengths = real.sum(dim=1)
    positions = torch.arange(tokens.size(1))
    if bool(lengths.min() == tokens.size(1)) or not torch.equal(real, positions < lengths.unsqueeze(1)):
        return None, None
    order = None
    if bool((lengths[1:] > lengths[:-1]).any()):
        order = torch.sort(lengths, descending=True, stable=True).indices
        lengths = lengths[order]
    return order, (lengths.unsqueeze(1) > positions).sum(dim=0).tolist()


def rnn_by_length(rnn: RNN, x: Tensor, lengths: Tensor, outputs: bool = True,
                  min_rows: int = 8) -> Tuple[Optional[Tensor], Tensor]:
    """``rnn`` over right-padded S x B x E inputs whose sentences have ``lengths`` (B) ->
    (S x B x D outputs, zero at padding, or None unless ``outputs``; K x (L * directions) x B x H
    states of each sentence's last step).

    In float32 training on a CPU the sentences of each length run as one dense fused call per
    length, when there is one length or at least ``min_rows`` sentences per length on average:
    torch runs a packed sequence of unequal lengths one step at a time there, and its backward
    fills a gradient of the whole input at every step (docs/design.md). Otherwise one packed
    call: on a GPU; without gradients (validation and decoding stay exactly as recorded); and
    under bfloat16 autocast, where a dense LSTM call would run its states in bfloat16 too.
    """
    lengths = lengths.cpu()
    if x.device.type == "cpu" and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"):
        sorted_lengths, order = lengths.sort(descending=True, stable=True)
        distinct, counts = torch.unique_consecutive(sorted_lengths, return_counts=True)
        if len(distinct) == 1 or len(distinct) * min_rows <= len(lengths):
            return rnn_per_length(rnn, x, order, distinct.tolist(), counts.tolist(), outputs)
    out, state = rnn(nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False))
    return nn.utils.rnn.pad_packed_sequence(out, total_length=x.size(0))[0] if outputs else None, state


def rnn_per_length(rnn: RNN, x: Tensor, order: Tensor, lengths: List[int], rows: List[int],
                   outputs: bool) -> Tuple[Optional[Tensor], Tensor]:
    """:func:`rnn_by_length`'s dense calls: the sentences in ``order`` are ``rows[i]``
    sentences of length ``lengths[i]`` for each i."""
    ordered = bool((order == torch.arange(len(order))).all())
    if not ordered:
        x = x.index_select(1, order)
    outs, states, start = [], [], 0
    for length, n in zip(lengths, rows):
        out, state = rnn(x[:length, start : start + n])
        if outputs:
            outs.append(out if length == x.size(0) else F.pad(out, (0, 0, 0, 0, 0, x.size(0) - length)))
        states.append(state)
        start += n
    out = torch.cat(outs, dim=1) if outputs else None
    state = torch.cat(states, dim=2)
    if not ordered:
        unsort = order.argsort()
        out, state = None if out is None else out.index_select(1, unsort), state.index_select(2, unsort)
    return out, state


def unpad_like(right_padded: Tensor, padding_mask: Tensor) -> Tensor:
    """Move each row of B x S x C right-padded outputs to the positions of a source whose
    padding is ``padding_mask`` (B x S): left-padded sources get left-padded outputs, right-padded
    ones stay."""
    if not padding_mask.is_cuda and not padding_mask[:, 0].any():  # all right-padded (a GPU gathers: no wait)
        return right_padded
    shift = padding_mask[:, :1] * padding_mask.sum(dim=1, keepdim=True)  # a left-padded row's pads, else 0
    positions = torch.arange(padding_mask.size(1), device=padding_mask.device).unsqueeze(0)
    index = torch.remainder(positions - shift, padding_mask.size(1))  # B x S
    return right_padded.gather(1, index.unsqueeze(2).expand_as(right_padded))
