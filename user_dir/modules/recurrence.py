"""Recurrent cells and the layers built on them.

A cell is one entry of :data:`CELLS` (its torch module, gate count, state parts, one-step
function and fused sequence op): a new cell type is one more entry. Recurrent state travels
as one tensor ``K x L x B x H`` (K state parts: 2 for LSTM ``(h, c)``, 1 for GRU), so one code
path serves every cell, beam reordering and the encoder-decoder bridge.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.modules import FairseqDropout
from torch import Tensor

State = Tuple[Tensor, ...]  # one B x H tensor per state part
Attend = Callable[[Tensor], Tensor]  # first layer's previous hidden state B x H -> context's share of the gates


def lstm_step(gx: Tensor, state: State, hidden_proj: nn.Linear) -> State:
    """One LSTM step from the input's gates ``gx`` (B x 4H), in torch's gate order (i, f, g, o)."""
    h, c = state
    i, f, g, o = (gx + hidden_proj(h)).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(gx: Tensor, state: State, hidden_proj: nn.Linear) -> State:
    """One GRU step from the input's gates ``gx`` (B x 3H), in torch's gate order (r, z, n)."""
    (h,) = state
    xr, xz, xn = gx.chunk(3, dim=1)
    hr, hz, hn = hidden_proj(h).chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    return ((1 - z) * torch.tanh(xn + r * hn) + z * h,)


def fused_lstm(x: Tensor, state: Tensor, weights: List[Tensor], train: bool) -> Tuple[Tensor, Tensor]:
    """One layer of torch's fused LSTM (cuDNN, oneDNN) over T x B x I; state 2 x B x H."""
    out, h, c = torch.lstm(x, (state[:1], state[1:]), weights, has_biases=True, num_layers=1, dropout=0.0,
                           train=train, bidirectional=False, batch_first=False)
    return out, torch.cat([h, c])


def fused_gru(x: Tensor, state: Tensor, weights: List[Tensor], train: bool) -> Tuple[Tensor, Tensor]:
    """One layer of torch's fused GRU over T x B x I; state 1 x B x H."""
    return torch.gru(x, state, weights, has_biases=True, num_layers=1, dropout=0.0,
                     train=train, bidirectional=False, batch_first=False)


@dataclass(frozen=True)
class Cell:
    """What the layers need to know of a recurrent cell."""

    module: type  # torch's multi-layer RNN of this cell (nn.LSTM, nn.GRU)
    gates: int  # gate blocks in W_ih and W_hh (torch's layout)
    state_parts: int  # K
    step: Callable[[Tensor, State, nn.Linear], State]  # one step from precomputed input gates
    fused: Callable[[Tensor, Tensor, List[Tensor], bool], Tuple[Tensor, Tensor]]  # one layer over a sequence


CELLS = {
    "lstm": Cell(nn.LSTM, gates=4, state_parts=2, step=lstm_step, fused=fused_lstm),
    "gru": Cell(nn.GRU, gates=3, state_parts=1, step=gru_step, fused=fused_gru),
}


def init_rnn_(module: nn.Module, hidden_size: int, init: str) -> None:
    """Initialise every parameter of ``module``: "uniform": weights U(-0.1, 0.1), biases 0;
    "torch": everything U(-1/sqrt(H), 1/sqrt(H)), torch's own RNN initialisation (so a
    :class:`ContextRNN` starts as the fused RNN it equals)."""
    bound = 0.1 if init == "uniform" else hidden_size ** -0.5
    for name, p in module.named_parameters():
        if init == "uniform" and "bias" in name:
            nn.init.zeros_(p)
        else:
            nn.init.uniform_(p, -bound, bound)


class RNN(nn.Module):
    """torch's multi-layer RNN of a cell, whose state is one ``K x L x B x H`` tensor."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int, dropout: float,
                 init: str, bidirectional: bool = False):
        super().__init__()
        self.cell = CELLS[cell]
        self.rnn = self.cell.module(input_size, hidden_size, layers, dropout=dropout if layers > 1 else 0.0,
                                    bidirectional=bidirectional)
        init_rnn_(self, hidden_size, init)

    def forward(self, x, state: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """x: T x B x I (or a PackedSequence), state: K x L x B x H or None -> (outputs, K x L x B x H)."""
        if state is not None:
            parts = tuple(s.contiguous() for s in state)
            state = parts if len(parts) > 1 else parts[0]
        out, new = self.rnn(x, state)
        return out, torch.stack(new) if isinstance(new, tuple) else new.unsqueeze(0)


class ContextLinear(nn.Linear):
    """``W [x_t ; c] + b`` where ``c`` (B x C) is fixed per sentence.

    Split as ``W_x x_t`` (all steps in one matmul) plus ``context_term(c) = W_c c + b``, which is
    computed once per sentence and, while decoding, cached across steps.
    """

    def __init__(self, step_dim: int, context_dim: int, out_dim: int):
        super().__init__(step_dim + context_dim, out_dim)
        self.step_dim = step_dim

    def context_term(self, context: Tensor) -> Tensor:
        """... x C -> ... x N"""
        return F.linear(context, self.weight[:, self.step_dim :], self.bias)

    def forward(self, x: Tensor, context_term: Optional[Tensor]) -> Tensor:
        """T x B x D, B x N or T x B x N (or None: the step term alone) -> T x B x N"""
        out = F.linear(x, self.weight[:, : self.step_dim])
        return out if context_term is None else out + context_term


def pad_rows(x: Tensor, rows: int) -> Tensor:
    """x with zero rows appended along dim 0 up to ``rows``."""
    return x if x.size(0) == rows else torch.cat([x, x.new_zeros(rows - x.size(0), *x.shape[1:])])


def recur(step: Callable, gates_x: Tensor, state: Tensor, hidden_proj: nn.Linear,
          attend: Optional[Attend] = None, active: Optional[List[int]] = None) -> Tuple[Tensor, Tensor]:
    """Run a cell's ``step`` over precomputed input gates T x B x G from state K x B x H ->
    (T x B x H outputs, K x B x H final state).

    ``attend(h)``, if given, adds a per-step term to the input gates. ``active[t]``, if given,
    is the number of leading rows still inside their sentence at step t (rows longest first):
    nothing is computed for the others, which output zeros and keep their last state.
    """
    rows, state, outs, ended = gates_x.size(1), tuple(state), [], []
    for t, gx in enumerate(gates_x):
        n = rows if active is None else active[t]
        if n < state[0].size(0):
            ended.append(tuple(s[n:] for s in state))
            state = tuple(s[:n] for s in state)
        if n < rows:  # a slice is an autograd node: none while every row is going
            gx = gx[:n]
        if attend is not None:
            gx = gx + attend(state[0])
        state = step(gx, state, hidden_proj)
        outs.append(pad_rows(state[0], rows))
    final = torch.stack([torch.cat(parts) for parts in zip(state, *reversed(ended))])
    return torch.stack(outs), final


class ContextRNN(nn.Module):
    """Multi-layer RNN whose first layer reads ``[x_t ; c_t]``, equal to torch's RNN over the
    concatenation.

    The context's share of the first layer's gates (:meth:`context_term`) is computed once per
    sentence when ``c`` is fixed, or at each step by ``attend`` from the first layer's previous
    state; the layers above the first (``upper``) run as one fused RNN call.
    """

    def __init__(self, cell: str, input_size: int, context_size: int, hidden_size: int, layers: int,
                 dropout: float, init: str = "uniform"):
        super().__init__()
        self.cell = CELLS[cell]
        gates = self.cell.gates * hidden_size
        self.input_proj = ContextLinear(input_size, context_size, gates)  # W_ih, b_ih
        self.hidden_proj = nn.Linear(hidden_size, gates)                  # W_hh, b_hh
        self.dropout = FairseqDropout(dropout, module_name=type(self).__name__)  # --retain-dropout keeps it too
        self.upper = RNN(cell, hidden_size, hidden_size, layers - 1, dropout, init) if layers > 1 else None
        init_rnn_(self, hidden_size, init)  # ``upper`` drawn again: the recorded runs' draws (tests/data)

    def context_term(self, context: Tensor) -> Tensor:
        return self.input_proj.context_term(context)

    def fused(self, x: Tensor, state: Tensor, context: Tensor) -> Tuple[Tensor, Tensor]:
        """:meth:`forward` with a fixed context as one fused RNN call over ``[x_t ; c]``
        (x T x B x E, context B x C): more arithmetic than the cached context term, far fewer
        kernel launches (the GPU's path)."""
        inp = torch.cat([x, context.unsqueeze(0).expand(x.size(0), -1, -1)], dim=2)
        weights = [self.input_proj.weight, self.hidden_proj.weight, self.input_proj.bias, self.hidden_proj.bias]
        out, first_state = self.cell.fused(inp, state[:, 0].contiguous(), weights, self.training)
        return self.upper_layers(out, first_state, state)

    def forward(self, x: Tensor, state: Tensor, context_term: Optional[Tensor] = None,
                attend: Optional[Attend] = None, active: Optional[List[int]] = None) -> Tuple[Tensor, Tensor]:
        """x: T x B x E, state: K x L x B x H, and either context_term: B x (gates H) or
        attend; ``active``: see :func:`recur` -> (T x B x H, new state)."""
        gates_x = self.input_proj(x, context_term)
        out, first_state = recur(self.cell.step, gates_x, state[:, 0], self.hidden_proj, attend, active)
        return self.upper_layers(out, first_state, state)

    def upper_layers(self, out: Tensor, first_state: Tensor, state: Tensor) -> Tuple[Tensor, Tensor]:
        """Layers 2..L over the first layer's output ``out``: (T x B x H, K x L x B x H state)."""
        if self.upper is None:
            return out, first_state.unsqueeze(1)
        out, upper_state = self.upper(self.dropout(out), state[:, 1:])
        return out, torch.cat([first_state.unsqueeze(1), upper_state], dim=1)

    def upgrade_state_dict_named(self, state_dict: dict, name: str) -> None:
        """Checkpoints written before ``upper`` was named so call it ``rest``."""
        old = f"{name}.rest."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[f"{name}.upper." + key[len(old):]] = state_dict.pop(key)
