"""RNN encoder-decoder of Cho et al. (2014), as taught in Dive into Deep Learning ch. 10.7,
with Bahdanau et al.'s (2015) additive attention as an option (D2L ch. 11.4).

Encoder: embedding + multi-layer RNN. Decoder: embedding + multi-layer RNN whose input at
every step is ``[target embedding ; context]``, and whose initial state is the encoder's final
state (every layer, and for an LSTM the cell state too); then a linear projection to the
vocabulary, optionally after Cho et al.'s "deep output" ``tanh(W [s_t ; e(y_{t-1}) ; c])``.
The context ``c`` is the encoder's final top-layer hidden state (``--decoder-attention none``),
or at step t the attention over the encoder's outputs with the first decoder layer's previous
state as query (``additive``); it enters the same two places either way.

Recurrent state travels as one tensor ``K x L x B x H`` (K = 2 for LSTM ``(h, c)``, 1 for GRU),
so one code path serves both cells, beam reordering and the bridge.
"""
import contextlib
import os
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)
from omegaconf import II, OmegaConf, open_dict
from torch import Tensor

from ..dictionaries import as_hex, fingerprint, uses_sentencepiece

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
INITS = ("uniform", "torch")
ATTENTION = ("none", "additive")
DECODER_RNN = ("auto", "loop", "fused")
EncoderOut = Dict[str, Tensor]
IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


@dataclass
class RNNSeq2SeqConfig(FairseqDataclass):
    cell: ChoiceEnum(list(CELLS)) = field(  # type: ignore[valid-type]
        default="lstm", metadata={"help": "recurrent cell of both encoder and decoder"}
    )
    init: ChoiceEnum(INITS) = field(  # type: ignore[valid-type]
        default="uniform", metadata={"help": "uniform: every embedding and weight U(-0.1, 0.1), biases 0 (fairseq's lstm "
                                             "draws its biases from U(-0.1, 0.1) too); torch: the textbook's, torch's "
                                             "defaults (embeddings N(0, 1), N(0, 1/dim) when also the output projection; "
                                             "RNN parameters U(-1/sqrt(H), 1/sqrt(H))). README, \"Initialisation\""}
    )
    encoder_embed_dim: int = field(default=256, metadata={"help": "encoder embedding dimension"})
    encoder_hidden_size: int = field(default=512, metadata={"help": "encoder hidden size (per direction)"})
    encoder_layers: int = field(default=1, metadata={"help": "number of encoder layers"})
    encoder_bidirectional: bool = field(
        default=False, metadata={"help": "bidirectional encoder; a learned linear bridge maps its states to the decoder's size"}
    )
    decoder_embed_dim: int = field(default=256, metadata={"help": "decoder embedding dimension"})
    decoder_hidden_size: int = field(default=512, metadata={"help": "decoder hidden size"})
    decoder_layers: int = field(default=1, metadata={"help": "number of decoder layers (must equal encoder layers: the encoder state initialises every decoder layer)"})
    decoder_deep_output: bool = field(
        default=False, metadata={"help": "Cho et al. (2014) output layer: tanh(W [state; target embedding; context]) before the vocabulary projection"}
    )
    decoder_out_embed_dim: int = field(
        default=256, metadata={"help": "size of the deep output layer (must equal decoder-embed-dim when embeddings are shared)"}
    )
    decoder_attention: ChoiceEnum(ATTENTION) = field(  # type: ignore[valid-type]
        default="none", metadata={"help": "none: the context is the encoder's final state; additive: Bahdanau "
                                          "attention over the encoder's outputs at every step"}
    )
    decoder_attention_dim: int = field(default=256, metadata={"help": "size of the additive attention's hidden layer"})
    decoder_rnn: ChoiceEnum(DECODER_RNN) = field(  # type: ignore[valid-type]
        default="auto", metadata={"help": "teacher-forced decoder without attention: loop (the context's term cached, "
                                          "a Python loop over steps; fastest on CPU), fused (one cuDNN/oneDNN RNN call "
                                          "over [e; c]; fastest on GPU), auto: fused on a GPU, else loop. Equal results"}
    )
    dropout: float = field(
        default=0.1, metadata={"help": "dropout between stacked RNN layers, and the default of --dropout-in and --dropout-out"}
    )
    dropout_in: Optional[float] = field(
        default=None, metadata={"help": "dropout on the encoder's and decoder's embeddings (default: --dropout)"}
    )
    dropout_out: Optional[float] = field(
        default=None, metadata={"help": "dropout on the decoder's RNN output and deep output (default: --dropout)"}
    )
    word_dropout: float = field(
        default=0.0, metadata={"help": "in training, drop each source and target token's whole embedding with this "
                                       "probability (the others scaled by 1/(1-p)), before --dropout-in"}
    )
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the decoder's input embedding and output projection"}
    )
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "share encoder and decoder embeddings and the output projection, as fairseq's "
                                 "lstm and transformer do (needs --joined-dictionary data)"}
    )
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")


def fill_defaults(cfg) -> None:
    """Give ``cfg`` the default of every option it lacks. fairseq merges the dataclass defaults
    into the config of ``--arch rnn_seq2seq`` only; without this, a checkpoint of a preset
    (``rnn_seq2seq_multi30k``, ...) written before an option existed would not load."""
    missing = [f for f in fields(RNNSeq2SeqConfig) if not hasattr(cfg, f.name)]
    with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
        for f in missing:
            setattr(cfg, f.name, f.default)


def check_config(cfg: RNNSeq2SeqConfig) -> None:
    """Reject option combinations that cannot build a model, naming the option."""
    if cfg.encoder_layers != cfg.decoder_layers:
        raise ValueError(
            f"--encoder-layers ({cfg.encoder_layers}) must equal --decoder-layers ({cfg.decoder_layers}): "
            "the encoder's final state initialises every decoder layer"
        )
    for name in ("encoder_embed_dim", "encoder_hidden_size", "encoder_layers", "decoder_embed_dim",
                 "decoder_hidden_size", "decoder_out_embed_dim", "decoder_attention_dim"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    for name in ("dropout", "dropout_in", "dropout_out", "word_dropout"):
        value = getattr(cfg, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    if cfg.share_all_embeddings and cfg.encoder_embed_dim != cfg.decoder_embed_dim:
        raise ValueError("--share-all-embeddings needs --encoder-embed-dim == --decoder-embed-dim")
    out_dim = cfg.decoder_out_embed_dim if cfg.decoder_deep_output else cfg.decoder_hidden_size
    if ties_output(cfg) and out_dim != cfg.decoder_embed_dim:
        flag = "--share-all-embeddings" if cfg.share_all_embeddings else "--share-decoder-input-output-embed"
        which = "--decoder-out-embed-dim" if cfg.decoder_deep_output else "--decoder-hidden-size (or use --decoder-deep-output)"
        raise ValueError(f"{flag} ties the output projection to the decoder embedding: it needs {which} ({out_dim}) "
                         f"== --decoder-embed-dim ({cfg.decoder_embed_dim})")


def dropout_layer(cfg: RNNSeq2SeqConfig, where: str) -> nn.Dropout:
    """``--dropout-in`` or ``--dropout-out`` (``where``), which default to ``--dropout``."""
    p = getattr(cfg, f"dropout_{where}", None)
    return nn.Dropout(cfg.dropout if p is None else p)


def embed_words(tokens: Tensor, embed: nn.Embedding, word_dropout: float, dropout: nn.Dropout) -> Tensor:
    """B x T tokens -> B x T x E embeddings; in training (``dropout.training``) each token's whole
    embedding is zeroed with probability ``word_dropout`` (one mask entry per token), then ``dropout``."""
    x = embed(tokens)
    if word_dropout > 0 and dropout.training:
        x = x * F.dropout(x.new_ones(*tokens.shape, 1), word_dropout)
    return dropout(x)


def ties_output(cfg: RNNSeq2SeqConfig) -> bool:
    """fairseq's meaning (``lstm``, ``transformer``): sharing all embeddings ties the output projection too."""
    return cfg.share_decoder_input_output_embed or cfg.share_all_embeddings


def embedding(num: int, dim: int, padding_idx: int, init: str, output: bool = False) -> nn.Embedding:
    """Token embeddings, the padding row zero. ``init`` "uniform": U(-0.1, 0.1); "torch": N(0, 1),
    or N(0, 1/dim) when the table is also the output projection (``output``), so that the first
    logits have unit scale, as in fairseq's transformer."""
    m = nn.Embedding(num, dim, padding_idx=padding_idx)
    if init == "uniform":
        nn.init.uniform_(m.weight, -0.1, 0.1)
    elif output:
        nn.init.normal_(m.weight, mean=0.0, std=dim ** -0.5)
    nn.init.zeros_(m.weight[padding_idx])
    return m


def init_rnn_(module: nn.Module, hidden_size: int, init: str) -> None:
    """Every parameter of ``module``: "uniform": weights U(-0.1, 0.1), biases 0; "torch": weights and
    biases U(-1/sqrt(H), 1/sqrt(H)), torch's own initialisation of ``nn.LSTM``/``nn.GRU``, applied to
    :class:`ContextRNN` too, which then starts as the fused RNN it equals."""
    bound = 0.1 if init == "uniform" else hidden_size ** -0.5
    for name, p in module.named_parameters():
        if init == "uniform" and "bias" in name:
            nn.init.zeros_(p)
        else:
            nn.init.uniform_(p, -bound, bound)


class RNN(nn.Module):
    """``nn.LSTM``/``nn.GRU`` whose state is one ``K x L x B x H`` tensor (K = 2 for LSTM)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int, dropout: float,
                 init: str, bidirectional: bool = False):
        super().__init__()
        self.is_lstm = cell == "lstm"
        self.rnn = CELLS[cell](input_size, hidden_size, layers, dropout=dropout if layers > 1 else 0.0,
                               bidirectional=bidirectional)
        init_rnn_(self, hidden_size, init)

    def forward(self, x, state: Optional[Tensor] = None):
        if state is not None:
            state = (state[0].contiguous(), state[1].contiguous()) if self.is_lstm else state[0].contiguous()
        out, new = self.rnn(x, state)
        return out, torch.stack(new) if self.is_lstm else new.unsqueeze(0)


class ContextLinear(nn.Linear):
    """``W [x_t ; c] + b`` where ``c`` (B x C) is fixed per sentence.

    Split as ``W_x x_t`` (all steps in one matmul) plus ``context_term(c) = W_c c + b``, which is
    computed once per sentence and, while decoding, cached across steps.
    """

    def __init__(self, step_dim: int, context_dim: int, out_dim: int):
        super().__init__(step_dim + context_dim, out_dim)
        self.step_dim = step_dim

    def context_term(self, context: Tensor) -> Tensor:
        """B x C -> B x N"""
        return F.linear(context, self.weight[:, self.step_dim :], self.bias)

    def forward(self, x: Tensor, context_term: Optional[Tensor]) -> Tensor:
        """T x B x D, B x N or T x B x N (or None: the step term alone) -> T x B x N"""
        out = F.linear(x, self.weight[:, : self.step_dim])
        return out if context_term is None else out + context_term


Attend = Callable[[Tensor], Tensor]  # previous hidden state B x H -> context's share of the gates
State = Tuple[Tensor, ...]  # LSTM (h, c), GRU (h,): each B x H


def lstm_cell(gx: Tensor, state: State, hidden_proj: nn.Linear) -> State:
    h, c = state
    i, f, g, o = (gx + hidden_proj(h)).chunk(4, dim=1)  # torch's gate order
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(gx: Tensor, state: State, hidden_proj: nn.Linear) -> State:
    (h,) = state
    xr, xz, xn = gx.chunk(3, dim=1)  # torch's gate order
    hr, hz, hn = hidden_proj(h).chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    return ((1 - z) * torch.tanh(xn + r * hn) + z * h,)


def pad_rows(x: Tensor, rows: int) -> Tensor:
    """x with zero rows appended along dim 0 up to ``rows``."""
    return x if x.size(0) == rows else torch.cat([x, x.new_zeros(rows - x.size(0), *x.shape[1:])])


def recur(cell: Callable, gates_x: Tensor, state: Tensor, hidden_proj: nn.Linear,
          attend: Optional[Attend] = None, active: Optional[List[int]] = None) -> Tuple[Tensor, Tensor]:
    """Runs ``cell`` over precomputed input gates T x B x G from state K x B x H -> (T x B x H
    outputs, K x B x H final state). ``attend(h)``, if given, adds a per-step term to the input
    gates. ``active[t]``, if given, is the number of leading rows still inside their sentence
    at step t (rows longest first): nothing is computed for the others, which output zeros and
    keep the state of their last step."""
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
        state = cell(gx, state, hidden_proj)
        outs.append(pad_rows(state[0], rows))
    final = torch.stack([torch.cat(parts) for parts in zip(state, *reversed(ended))])
    return torch.stack(outs), final


class ContextRNN(nn.Module):
    """Multi-layer RNN whose first layer reads ``[x_t ; c_t]``.

    Equal to ``nn.LSTM``/``nn.GRU`` over the concatenation. The context's share of the first
    layer's gates (:meth:`context_term`) is computed once per sentence when ``c`` is fixed, or
    at each step by ``attend`` from the first layer's previous state; layers above the first
    run as one fused RNN call.
    """

    def __init__(self, cell: str, input_size: int, context_size: int, hidden_size: int, layers: int,
                 dropout: float, init: str = "uniform"):
        super().__init__()
        gates = 4 if cell == "lstm" else 3
        self.input_proj = ContextLinear(input_size, context_size, gates * hidden_size)  # W_ih, b_ih
        self.hidden_proj = nn.Linear(hidden_size, gates * hidden_size)                  # W_hh, b_hh
        self.cell = lstm_cell if cell == "lstm" else gru_cell
        self.dropout = nn.Dropout(dropout)
        self.rest = RNN(cell, hidden_size, hidden_size, layers - 1, dropout, init) if layers > 1 else None
        init_rnn_(self, hidden_size, init)

    def context_term(self, context: Tensor) -> Tensor:
        return self.input_proj.context_term(context)

    def fused(self, x: Tensor, state: Tensor, context: Tensor):
        """:meth:`forward` with a fixed context as one fused RNN call over ``[x_t ; c]`` (cuDNN on
        a GPU): x T x B x E, context B x C. More arithmetic than the cached context term, far
        fewer kernel launches."""
        inp = torch.cat([x, context.unsqueeze(0).expand(x.size(0), -1, -1)], dim=2)
        weights = [self.input_proj.weight, self.hidden_proj.weight, self.input_proj.bias, self.hidden_proj.bias]
        first = state[:, 0].contiguous()  # K x B x H: LSTM (h, c), GRU h, each 1 x B x H below
        if self.cell is lstm_cell:
            out, h, c = torch.lstm(inp, (first[:1], first[1:]), weights, True, 1, 0.0, self.training, False, False)
            first_state = torch.cat([h, c])
        else:
            out, first_state = torch.gru(inp, first, weights, True, 1, 0.0, self.training, False, False)
        return self.upper_layers(out, first_state, state)

    def forward(self, x: Tensor, state: Tensor, context_term: Optional[Tensor] = None,
                attend: Optional[Attend] = None, active: Optional[List[int]] = None):
        """x: T x B x E, state: K x L x B x H, and either context_term: B x (gates H) or
        attend; ``active``: see :func:`recur` -> (T x B x H, new state)."""
        gates_x = self.input_proj(x, context_term)
        out, first_state = recur(self.cell, gates_x, state[:, 0], self.hidden_proj, attend, active)
        return self.upper_layers(out, first_state, state)

    def upper_layers(self, out: Tensor, first_state: Tensor, state: Tensor):
        """Layers 2..L over the first layer's output ``out``: (T x B x H, K x L x B x H state)."""
        if self.rest is None:
            return out, first_state.unsqueeze(1)
        out, rest_state = self.rest(self.dropout(out), state[:, 1:])
        return out, torch.cat([first_state.unsqueeze(1), rest_state], dim=1)


class AdditiveAttention(nn.Module):
    """Weights ``softmax(v^T tanh(W_q s + W_k h))`` over the source's non-padding positions.

    Computed as ``softmax(2 v^T sigmoid(2 W_q s + 2 W_k h))``: ``tanh(z) = 2 sigmoid(2z) - 1``,
    and the constant ``-sum(v)`` cancels in the softmax. This is the largest elementwise work
    of a decoder step (N x S x A), and torch's CPU ``sigmoid`` is 6.7x faster than its ``tanh``.
    ``2 W_k h`` depends on the source only: :meth:`keys` computes it once per sentence, and the
    k queries of a sentence's rows (beam hypotheses) read it without copies.
    """

    def __init__(self, query_dim: int, value_dim: int, attention_dim: int, init: str):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.key_proj = nn.Linear(value_dim, attention_dim, bias=False)
        self.score = nn.Linear(attention_dim, 1, bias=False)
        if init == "uniform":  # else torch's nn.Linear initialisation
            for p in self.parameters():
                nn.init.uniform_(p, -0.1, 0.1)

    def keys(self, values: Tensor) -> Tensor:
        """B x S x C -> B x S x A: ``2 W_k h``"""
        return F.linear(values, 2 * self.key_proj.weight)

    def forward(self, query: Tensor, keys: Tensor, padding_mask: Tensor) -> Tensor:
        """query (N k) x H, keys N x S x A (:meth:`keys`), padding_mask N x S (True at padding),
        row i of the query reading sentence i // k -> weights (N k) x S"""
        num_sentences, src_len, _ = keys.shape
        query = self.query_proj(query).view(num_sentences, -1, 1, keys.size(2))  # N x k x 1 x A
        hidden = torch.add(keys.unsqueeze(1), query, alpha=2).sigmoid_()  # N x k x S x A, in place of the sum
        scores = F.linear(hidden, 2 * self.score.weight).squeeze(3)  # N x k x S
        scores = scores.float().masked_fill(padding_mask.unsqueeze(1), float("-inf"))
        return torch.softmax(scores, dim=2).type_as(keys).view(-1, src_len)


def first_sentences(per_sentence: Tensor, rows: Tensor) -> Tensor:
    """The first n sentences of N x ... when ``rows`` has n < N rows, else all of them."""
    return per_sentence[: rows.size(0)] if rows.size(0) < per_sentence.size(0) else per_sentence


def by_sentence(weights: Tensor, terms: Tensor) -> Tensor:
    """Weights (N k) x S, row i reading sentence i // k of terms N x S x D -> N x k x S, in the
    terms' dtype."""
    return weights.to(terms.dtype).view(terms.size(0), -1, terms.size(1))


def step_sum(weights: Tensor, terms: Tensor) -> Tensor:
    """``sum_s w_s G_s`` per row: weights (N k) x S, terms N x S x D, row i reading sentence
    i // k -> (N k) x D (one N x k x S by N x S x D batched matmul); n < N rows: the first n
    sentences."""
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
        # N x k x D times N x D x S: bmm(terms, grad) transposed, the BLAS call that reads the
        # terms row by row (5x faster on CPU, measured)
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
    """Weighted sums of per-position terms G (N x S x D), one per decoder step: :func:`step_sum`.

    Same values and gradients as :func:`step_sum` at every step, but the backward of a step
    returns no N x S x D gradient for G (an outer product, added into G's gradient T times); G's
    gradient is formed once after the loop from all steps' weights and output gradients.
    """

    def __init__(self, terms: Tensor):
        self.steps: list = []
        self.defer = torch.is_grad_enabled() and terms.requires_grad
        self.terms = _StepSumTerms.apply(terms, self.steps) if self.defer else terms

    def __call__(self, weights: Tensor) -> Tensor:
        if self.defer:
            return _StepSum.apply(weights, self.terms, self.steps)
        return step_sum(weights, self.terms)


SOURCE = ("outputs", "padding_mask", "keys", "gate_terms")  # N x S x ..., one entry per source sentence


def reorder(tensors: Dict[str, Optional[Tensor]], new_order: Tensor) -> Dict[str, Optional[Tensor]]:
    """Select rows (beam hypotheses): dim 2 of the recurrent ``state`` (K x L x B x H), dim 0 of
    the other per-row tensors. The source's tensors (:data:`SOURCE`) stay once per sentence,
    row i reading sentence i // k (k = rows / sentences): an order that keeps each sentence's
    rows together in equal numbers, as beam search's does, copies none of them unless it drops
    (or repeats) sentences; any other order copies them per row (k = 1)."""
    source = {k: v for k, v in tensors.items() if k in SOURCE and v is not None}
    out = {k: None if v is None else v.index_select(2 if k == "state" else 0, new_order)
           for k, v in tensors.items() if k not in source}
    if source:
        num_sentences = next(iter(source.values())).size(0)
        sentences = torch.div(new_order, tensors["state"].size(2) // num_sentences, rounding_mode="floor")
        # on a GPU the next lines wait for the device, as fairseq's search does at every step
        kept, counts = torch.unique_consecutive(sentences, return_counts=True)
        if bool((counts != counts[:1]).any()):
            kept = sentences
        unchanged = kept.numel() == num_sentences and bool((kept == torch.arange(num_sentences, device=kept.device)).all())
        out.update(source if unchanged else {k: v.index_select(0, kept) for k, v in source.items()})
    return out


def by_length(tokens: Tensor, pad: int) -> Tuple[Optional[Tensor], Optional[List[int]]]:
    """For teacher forcing over B x T right-padded targets: an order of the rows, longest first
    (None if they are so already), and for each step the number of rows still inside their
    sentence (:func:`recur`'s ``active``). (None, None) where no sentence ends early, where the
    padding is not trailing, and off the CPU (reading the lengths would wait for the device)."""
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

    In float32 training on a CPU the sentences of each length run together, one dense fused call
    (oneDNN) per length, when there is one length or at least ``min_rows`` sentences per length
    on average: torch runs a packed sequence of unequal lengths one step at a time, and its
    backward fills a gradient of the whole input at every step (the packed call takes 1.5 to 2x
    as long, forward and backward, for 128 sentences of 2 to 9 lengths; less than dense calls
    of a few sentences each). Otherwise one packed call, as before: on a GPU (cuDNN); without
    gradients, so that validation and decoding compute exactly what they did; and under
    bfloat16 autocast (``--amp``), where a dense LSTM call runs wholly in bfloat16, its states
    included (with dense calls on every batch under ``--amp``, the tests' toy model translated
    5 of 77 test sentences right, where the tests ask for half).
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
    padding is ``padding_mask`` (B x S): left-padded sources get left-padded outputs."""
    if not padding_mask[:, 0].any():  # already right-padded (or no padding)
        return right_padded
    num_pads = padding_mask.sum(dim=1, keepdim=True)
    positions = torch.arange(padding_mask.size(1), device=padding_mask.device).unsqueeze(0)
    index = torch.remainder(positions - num_pads, padding_mask.size(1))  # B x S
    return right_padded.gather(1, index.unsqueeze(2).expand_as(right_padded))


class RNNEncoder(FairseqEncoder):
    def __init__(self, cfg: RNNSeq2SeqConfig, dictionary, embed_tokens: nn.Embedding):
        super().__init__(dictionary)
        self.max_positions_ = cfg.max_source_positions
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.dropout_in, self.dropout_out = dropout_layer(cfg, "in"), dropout_layer(cfg, "out")
        self.word_dropout = cfg.word_dropout
        self.rnn = RNN(cfg.cell, cfg.encoder_embed_dim, cfg.encoder_hidden_size, cfg.encoder_layers,
                       cfg.dropout, cfg.init, cfg.encoder_bidirectional)
        self.return_outputs = cfg.decoder_attention != "none"
        self.num_directions = 2 if cfg.encoder_bidirectional else 1
        self.output_dim = self.num_directions * cfg.encoder_hidden_size
        # one linear map per state component (h, and c for LSTM) when sizes differ
        self.bridge = (
            nn.ModuleList(nn.Linear(self.output_dim, cfg.decoder_hidden_size) for _ in range(1 + self.rnn.is_lstm))
            if self.output_dim != cfg.decoder_hidden_size else None
        )

    def forward(self, src_tokens: Tensor, src_lengths: Tensor) -> EncoderOut:
        """
        Args:
            src_tokens: B x S source tokens, left- or right-padded.
            src_lengths: B true lengths.
        Returns:
            dict with ``state``: K x L x B x H initial decoder state, and ``context``: B x C
            final top-layer hidden state (C = encoder directions x hidden size); with attention
            also ``outputs``: B x S x C top-layer outputs and ``padding_mask``: B x S, both in
            ``src_tokens``' positions and kept once per sentence by :func:`reorder`.
        """
        padding_mask = src_tokens.eq(self.padding_idx)
        # packing needs right padding; fairseq left-pads sources by default (no-op if right-padded)
        right_padded = utils.convert_padding_direction(src_tokens, self.padding_idx, left_to_right=True)
        x = embed_words(right_padded, self.embed_tokens, self.word_dropout, self.dropout_in).transpose(0, 1)  # S x B x E
        outputs, state = rnn_by_length(self.rnn, x, src_lengths, self.return_outputs)  # state: K x (L * D) x B x H
        k, _, bsz, h = state.shape
        if self.num_directions == 2:  # K x L x 2 x B x H -> K x L x B x 2H
            state = state.view(k, -1, 2, bsz, h).permute(0, 1, 3, 2, 4).reshape(k, -1, bsz, 2 * h)
        context = state[0, -1]
        if self.bridge is not None:
            state = torch.stack([proj(s) for proj, s in zip(self.bridge, state)])
        if not self.return_outputs:
            return {"state": state, "context": context}
        return {"state": state, "context": context, "padding_mask": padding_mask,
                "outputs": self.dropout_out(unpad_like(outputs.transpose(0, 1), padding_mask))}

    def reorder_encoder_out(self, encoder_out: EncoderOut, new_order: Tensor) -> EncoderOut:
        return reorder(encoder_out, new_order)

    def max_positions(self) -> int:
        return self.max_positions_


class RNNDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg: RNNSeq2SeqConfig, dictionary, embed_tokens: nn.Embedding, context_dim: int):
        super().__init__(dictionary)
        self.max_positions_ = cfg.max_target_positions
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.dropout_in, self.dropout_out = dropout_layer(cfg, "in"), dropout_layer(cfg, "out")
        self.word_dropout = cfg.word_dropout
        self.rnn = ContextRNN(cfg.cell, cfg.decoder_embed_dim, context_dim, cfg.decoder_hidden_size,
                              cfg.decoder_layers, cfg.dropout, cfg.init)
        self.rnn_path = cfg.decoder_rnn
        self.attention = None
        if cfg.decoder_attention == "additive":
            self.attention = AdditiveAttention(cfg.decoder_hidden_size, context_dim, cfg.decoder_attention_dim, cfg.init)
        out_dim = cfg.decoder_hidden_size
        self.deep_output = None
        if cfg.decoder_deep_output:
            self.deep_output = ContextLinear(cfg.decoder_hidden_size + cfg.decoder_embed_dim, context_dim,
                                             cfg.decoder_out_embed_dim)
            out_dim = cfg.decoder_out_embed_dim
        self.fc_out = None if ties_output(cfg) else nn.Linear(out_dim, len(dictionary))

    def forward(self, prev_output_tokens: Tensor, encoder_out: EncoderOut,
                incremental_state: Optional[IncrementalState] = None, features_only: bool = False, **kwargs):
        """
        Args:
            prev_output_tokens: B x T previous target tokens (teacher forcing), or the prefix so
                far when ``incremental_state`` is given (only its last column is read).
            encoder_out: output of :class:`RNNEncoder`.
        Returns:
            (B x T x V logits, or B x T x C features if ``features_only``; ``{"attn": [weights]}``:
            B x T x S attention weights, None without attention)
        """
        x, attn = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        return (x if features_only else self.output_layer(x)), {"attn": [attn]}

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: EncoderOut,
                         incremental_state: Optional[IncrementalState] = None):
        cache, order, active = None, None, None
        fused = self.use_fused(prev_output_tokens, incremental_state)
        if incremental_state is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
            cache = self.get_incremental_state(incremental_state, "rnn")
        elif not fused:
            order, active = by_length(prev_output_tokens, self.padding_idx)
            if order is not None:  # longest first, so that the sentences still going are leading rows
                prev_output_tokens, encoder_out = prev_output_tokens[order], reorder(encoder_out, order)
        if cache is None:
            cache = self.start(encoder_out)
        emb = embed_words(prev_output_tokens, self.embed_tokens, self.word_dropout, self.dropout_in).transpose(0, 1)  # T x B x E
        if self.attention is None:
            if fused:
                x, state = self.rnn.fused(emb, cache["state"], encoder_out["context"])
            else:
                x, state = self.rnn(emb, cache["state"], context_term=cache["rnn_context"], active=active)  # T x B x H
            output_context, attn = cache["output_context"], None
        else:
            weights = []
            # the context's gate term W_c (sum_s a_s h_s) + b = sum_s a_s (W_c h_s + b): a weighted
            # sum of per-sentence terms, S wide per step instead of a C x gates matmul
            gate_terms = StepSums(cache["gate_terms"])
            keys, padding_mask = cache["keys"], encoder_out["padding_mask"]

            def attend(query: Tensor) -> Tensor:
                nonlocal keys, padding_mask  # narrowed to the sentences still going, as they end
                keys, padding_mask = first_sentences(keys, query), first_sentences(padding_mask, query)
                w = self.attention(query, keys, padding_mask)
                weights.append(pad_rows(w, emb.size(1)))
                return gate_terms(w)

            x, state = self.rnn(emb, cache["state"], attend=attend, active=active)
            attn = torch.stack(weights, dim=1)  # B x T x S
            output_context = None
            if self.deep_output is not None:  # T x B x C contexts, all steps in one batched matmul
                contexts = step_sum(attn.reshape(-1, attn.size(2)), encoder_out["outputs"]).view(*attn.shape[:2], -1)
                output_context = self.deep_output.context_term(contexts.transpose(0, 1))
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "rnn", {**cache, "state": state})
        x = self.dropout_out(x)
        if self.deep_output is not None:
            x = self.dropout_out(torch.tanh(self.deep_output(torch.cat([x, emb], dim=-1), output_context)))
        x = x.transpose(0, 1)  # T x B x C -> B x T x C
        if order is not None:  # back to the batch's order
            unsort = order.argsort()
            x, attn = x.index_select(0, unsort), None if attn is None else attn.index_select(0, unsort)
        return x, attn

    def use_fused(self, x: Tensor, incremental_state: Optional[IncrementalState]) -> bool:
        """``--decoder-rnn``: the fused call for teacher forcing without attention (one step at
        a time gains nothing)."""
        if incremental_state is not None or self.rnn_path == "loop" or self.attention is not None:
            return False
        return self.rnn_path == "fused" or x.is_cuda

    def start(self, encoder_out: EncoderOut) -> Dict[str, Optional[Tensor]]:
        """Decoder state before the first step, and what of the context is computed once per
        sentence: its terms (fixed context), or with attention the keys ``W_k h`` and each
        source position's gate term ``W_c h + b``, once per source sentence however many
        hypotheses read it (the encoder's outputs and padding mask are read from
        ``encoder_out``, which beam search reorders too: not copied twice a step)."""
        if self.attention is not None:
            outputs = encoder_out["outputs"]  # N x S x C
            return {"state": encoder_out["state"], "keys": self.attention.keys(outputs),
                    "gate_terms": self.rnn.context_term(outputs)}
        context = encoder_out["context"]
        return {
            "state": encoder_out["state"],  # K x L x B x H
            "rnn_context": self.rnn.context_term(context),  # B x (gates H)
            "output_context": None if self.deep_output is None else self.deep_output.context_term(context),
        }

    def output_layer(self, features: Tensor) -> Tensor:
        if self.fc_out is None:
            return F.linear(features, self.embed_tokens.weight)
        return self.fc_out(features)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        cache = self.get_incremental_state(incremental_state, "rnn")
        if cache is not None:
            self.set_incremental_state(incremental_state, "rnn", reorder(cache, new_order))

    def max_positions(self) -> int:
        return self.max_positions_


@register_model("rnn_seq2seq", dataclass=RNNSeq2SeqConfig)
class RNNSeq2SeqModel(FairseqEncoderDecoderModel):
    """Context-concat RNN encoder-decoder; the dataclass defaults are the ``rnn_seq2seq`` arch.

    The model keeps a fingerprint of each dictionary it was built with (buffers saved in every
    checkpoint), so a checkpoint loaded over data with other dictionaries is refused by name.
    """

    def __init__(self, encoder: "RNNEncoder", decoder: "RNNDecoder"):
        super().__init__(encoder, decoder)
        for side, dictionary in (("source", encoder.dictionary), ("target", decoder.dictionary)):
            self.register_buffer(f"{side}_dictionary_fingerprint", fingerprint(dictionary))

    @classmethod
    def build_model(cls, cfg: RNNSeq2SeqConfig, task):
        fill_defaults(cfg)
        check_config(cfg)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        encoder_embed = embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad(), cfg.init, output=cfg.share_all_embeddings)
        if cfg.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ValueError("--share-all-embeddings requires a joined dictionary (fairseq-preprocess --joined-dictionary)")
            decoder_embed = encoder_embed
        else:
            decoder_embed = embedding(len(tgt_dict), cfg.decoder_embed_dim, tgt_dict.pad(), cfg.init, output=ties_output(cfg))
        encoder = RNNEncoder(cfg, src_dict, encoder_embed)
        decoder = RNNDecoder(cfg, tgt_dict, decoder_embed, encoder.output_dim)
        return cls(encoder, decoder)

    @classmethod
    def from_pretrained(cls, model_dir: str, checkpoint_file: str = "ckpt/checkpoint_best.pt",
                        data_name_or_path: str = "./bin", **kwargs):
        """A fairseq hub interface over a model directory laid out by scripts/prepare.py and
        scripts/train.sh (``spm.model``, ``bin/``, ``ckpt/``)::

            model = RNNSeq2SeqModel.from_pretrained("runs/multi30k/de-en")
            model.translate(["Ein Hund läuft."], beam=5)
        """
        spm_model = os.path.join(model_dir, "spm.model")
        if os.path.exists(spm_model):
            kwargs.setdefault("bpe", "sentencepiece")
            kwargs.setdefault("sentencepiece_model", spm_model)
        hub = super().from_pretrained(model_dir, checkpoint_file, data_name_or_path, **kwargs)
        if hub.bpe is None and uses_sentencepiece(hub.task.target_dictionary):
            raise FileNotFoundError(
                f"{model_dir} holds a model trained on sentencepiece pieces but no spm.model: copy the "
                "sentencepiece model there (or pass sentencepiece_model=PATH), else text goes in and out as pieces"
            )
        return hub

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """Name a dictionary mismatch (size or entries) instead of loading weights over it."""
        state_dict = dict(state_dict)
        for side, name in (("source", "encoder"), ("target", "decoder")):
            key, ours = f"{side}_dictionary_fingerprint", getattr(self, f"{side}_dictionary_fingerprint")
            weight = state_dict.get(f"{name}.embed_tokens.weight")
            if weight is None:  # torch's load_state_dict below names the missing key
                continue
            saved_size = weight.size(0)
            saved = state_dict.setdefault(key, ours)  # checkpoints before fingerprints: size check only
            if saved_size != len(getattr(self, name).dictionary) or as_hex(saved) != as_hex(ours):
                raise ValueError(
                    f"the checkpoint was trained with a {side} dictionary of {saved_size} entries (fingerprint "
                    f"{as_hex(saved)}), but the data's dictionary has {len(getattr(self, name).dictionary)} "
                    f"(fingerprint {as_hex(ours)}): use the data folder (dict.*.txt) the model was trained with"
                )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


@register_model_architecture("rnn_seq2seq", "rnn_seq2seq_d2l")
def rnn_seq2seq_d2l(args):
    """The sizes of Dive into Deep Learning 0.17, section 9.7 "Sequence to Sequence Learning":
    GRU, embedding 32, hidden 32, 2 layers, dropout 0.1 between the layers only, initialised as
    torch does, as in the textbook (the 1.0 edition's section 10.7 trains 256/256, 2 layers,
    dropout 0.2)."""
    args.cell = getattr(args, "cell", "gru")
    args.init = getattr(args, "init", "torch")
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 32)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 32)
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 32)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 32)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.dropout = getattr(args, "dropout", 0.1)
    args.dropout_in = getattr(args, "dropout_in", 0.0)
    args.dropout_out = getattr(args, "dropout_out", 0.0)


@register_model_architecture("rnn_seq2seq", "rnn_seq2seq_multi30k")
def rnn_seq2seq_multi30k(args):
    """Multi30k-scale: bidirectional GRU encoder, deep output, tied decoder embeddings, all 512
    wide (GRU beat LSTM by 4 valid BLEU at 16 CPU-minutes, 512-wide embeddings beat 256 and 768
    by 1-1.7 at 30 CPU-minutes on Multi30k de-en; README "Results")."""
    args.cell = getattr(args, "cell", "gru")
    args.encoder_bidirectional = getattr(args, "encoder_bidirectional", True)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 512)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 512)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 512)
    args.decoder_deep_output = getattr(args, "decoder_deep_output", True)
    args.decoder_out_embed_dim = getattr(args, "decoder_out_embed_dim", 512)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    args.dropout = getattr(args, "dropout", 0.3)


@register_model_architecture("rnn_seq2seq", "rnn_seq2seq_attention_multi30k")
def rnn_seq2seq_attention_multi30k(args):
    """``rnn_seq2seq_multi30k`` with additive attention (attention layer 256 wide), keeping the
    256-wide embeddings and deep output with which it was measured (README "Results")."""
    args.decoder_attention = getattr(args, "decoder_attention", "additive")
    for name in ("encoder_embed_dim", "decoder_embed_dim", "decoder_out_embed_dim"):
        setattr(args, name, getattr(args, name, 256))
    rnn_seq2seq_multi30k(args)
