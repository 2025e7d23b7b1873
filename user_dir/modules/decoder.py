"""The decoder: at every step the RNN reads ``[target embedding ; context]``, starting from the
encoder's final state; the context is fixed (the encoder's final state) or attention's."""
from functools import partial
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.data import Dictionary
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor

from .attention import ATTENTIONS
from .beam import PER_SENTENCE, Cache, reorder
from .embeddings import TokenInput
from .graphs import DecoderGraphs, graphs_wanted
from .lengths import by_length
from .recurrence import ContextLinear, ContextRNN, pad_rows
from .step_sums import StepSums, first_sentences, step_sum

if TYPE_CHECKING:  # the config's class, without importing the model that imports this module
    from ..models.rnn_seq2seq import RNNSeq2SeqConfig

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


def ties_output(cfg) -> bool:
    """fairseq's meaning (``lstm``, ``transformer``): sharing all embeddings ties the output projection too."""
    return cfg.share_decoder_input_output_embed or cfg.share_all_embeddings


class RNNDecoder(TokenInput, FairseqIncrementalDecoder):
    """The RNN over ``[target embedding ; context]`` from the encoder's final state, teacher-forced
    in training and a step at a time (an incremental state per hypothesis) in beam search."""

    def __init__(self, cfg: "RNNSeq2SeqConfig", dictionary: Dictionary, embed_tokens: nn.Embedding,
                 context_dim: int):
        super().__init__(dictionary)
        self.init_token_input(cfg, embed_tokens, cfg.max_target_positions)
        self.rnn = ContextRNN(cfg.cell, cfg.decoder_embed_dim, context_dim, cfg.decoder_hidden_size,
                              cfg.decoder_layers, cfg.dropout, cfg.init)
        self.rnn_path = cfg.decoder_rnn
        self.graphs = DecoderGraphs() if graphs_wanted(cfg.decoder_graphs) else None
        self.attention = None
        if cfg.decoder_attention != "none":
            self.attention = ATTENTIONS[cfg.decoder_attention](cfg.decoder_hidden_size, context_dim,
                                                               cfg.decoder_attention_dim, cfg.init)
        out_dim = cfg.decoder_hidden_size
        self.deep_output = None
        if cfg.decoder_deep_output:
            self.deep_output = ContextLinear(cfg.decoder_hidden_size + cfg.decoder_embed_dim, context_dim,
                                             cfg.decoder_out_embed_dim)
            out_dim = cfg.decoder_out_embed_dim
        self.fc_out = None if ties_output(cfg) else nn.Linear(out_dim, len(dictionary))

    def forward(self, prev_output_tokens: Tensor, encoder_out: Cache,
                incremental_state: Optional[IncrementalState] = None, features_only: bool = False, **kwargs):
        """
        Args:
            prev_output_tokens: B x T previous target tokens (teacher forcing), or the prefix so
                far when ``incremental_state`` is given (only its last column is read).
            encoder_out: output of :class:`~.encoder.RNNEncoder`.
        Returns:
            (B x T x V logits, or B x T x C features if ``features_only``; ``{"attn": [weights]}``:
            B x T x S attention weights, None without attention)
        """
        x, attn = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        return (x if features_only else self.output_layer(x)), {"attn": [attn]}

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: Cache,
                         incremental_state: Optional[IncrementalState] = None) -> Tuple[Tensor, Optional[Tensor]]:
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "rnn")
            cache = self.initial_cache(encoder_out) if cache is None else cache
            source = {PER_SENTENCE: encoder_out[PER_SENTENCE]} if PER_SENTENCE in encoder_out else {}
            x, attn, state = self.run(self.step, self.embed(prev_output_tokens[:, -1:]), source, cache)
            self.set_incremental_state(incremental_state, "rnn", {**cache, "state": state})
            return x, attn
        order, active = None, None
        if not self.use_fused(prev_output_tokens):
            order, active = by_length(prev_output_tokens, self.padding_idx)
            if order is not None:  # longest first, so that the sentences still going are leading rows
                prev_output_tokens, encoder_out = prev_output_tokens[order], reorder(encoder_out, order)
        emb = self.embed(prev_output_tokens)
        x, attn = self.run(partial(self.teacher_forced, active=active), emb, encoder_out)  # active: None on a GPU
        if order is not None:  # back to the batch's order
            unsort = order.argsort()
            x, attn = x.index_select(0, unsort), None if attn is None else attn.index_select(0, unsort)
        return x, attn

    def run(self, fn, emb: Tensor, encoder_out: Cache, cache: Optional[Cache] = None):
        """``fn(emb, encoder_out[, cache])``, from CUDA graphs where --decoder-graphs has them (graphs.py)."""
        args = (emb, encoder_out) if cache is None else (emb, encoder_out, cache)
        if self.graphs is None or not emb.is_cuda or self.cudnn_dropout():
            return fn(*args)
        return self.graphs(self, fn, *args)

    def cudnn_dropout(self) -> bool:
        """Whether the upper layers' cuDNN RNN drops out (training, 3 or more layers): its dropout
        state is a buffer outside any graph, reallocated after every reseeding (fairseq reseeds
        each update), so a graph would replay into freed memory; such calls run kernel by kernel."""
        upper = self.rnn.upper
        return self.training and upper is not None and upper.rnn.dropout > 0

    def teacher_forced(self, emb: Tensor, encoder_out: Cache,
                       active: Optional[List[int]] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Every step from the encoder's state over B x T x E embeddings -> (B x T x C features,
        B x T x S weights or None); ``active``: see :func:`~.recurrence.recur`."""
        fused = self.use_fused(emb)
        x, attn, _ = self.decode(emb, encoder_out, self.initial_cache(encoder_out), fused, active)
        return x, attn

    def step(self, emb: Tensor, encoder_out: Cache, cache: Cache) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """One decoding step from ``cache`` (B x 1 x E embeddings; of the encoder's output only its
        per-sentence tensors, for attention) -> (features, weights, new state)."""
        return self.decode(emb, encoder_out, cache, fused=False, active=None)

    def decode(self, emb: Tensor, encoder_out: Cache, cache: Cache, fused: bool,
               active: Optional[List[int]]) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """The recurrence from ``cache`` over B x T x E embeddings, then the output layers ->
        (B x T x C features, B x T x S weights or None, K x L x B x H final state)."""
        emb = emb.transpose(0, 1)  # T x B x E
        if self.attention is None:
            if fused:
                x, state = self.rnn.fused(emb, cache["state"], encoder_out["context"])
            else:
                x, state = self.rnn(emb, cache["state"], context_term=cache["rnn_context_term"], active=active)
            output_context, attn = cache["output_context_term"], None
        else:
            x, state, attn = self.attend_and_recur(emb, cache, encoder_out[PER_SENTENCE], active)
            output_context = None
            if self.deep_output is not None:  # T x B x C contexts, all steps in one batched matmul
                outputs = encoder_out[PER_SENTENCE]["outputs"]
                contexts = step_sum(attn.reshape(-1, attn.size(2)), outputs).view(*attn.shape[:2], -1)
                output_context = self.deep_output.context_term(contexts.transpose(0, 1))
        x = self.dropout_out(x)
        if self.deep_output is not None:
            x = self.dropout_out(torch.tanh(self.deep_output(torch.cat([x, emb], dim=-1), output_context)))
        return x.transpose(0, 1), attn, state  # T x B x C -> B x T x C

    def attend_and_recur(self, emb: Tensor, cache: Cache, source: Dict[str, Tensor],
                         active) -> Tuple[Tensor, Tensor, Tensor]:
        """The RNN over T x B x E embeddings with attention at every step -> (T x B x H outputs,
        new state, B x T x S weights). The context's gate term ``W_c (sum_s a_s h_s) + b`` is
        formed as ``sum_s a_s (W_c h_s + b)`` from per-position terms computed once per sentence."""
        weights = []
        per_sentence = dict(cache[PER_SENTENCE])
        gate_terms = StepSums(per_sentence.pop("gate_terms"))
        padding_mask = source["padding_mask"]

        def attend(query: Tensor) -> Tensor:
            nonlocal per_sentence, padding_mask  # narrowed to the sentences still going, as they end
            per_sentence = {k: first_sentences(v, query) for k, v in per_sentence.items()}
            padding_mask = first_sentences(padding_mask, query)
            w = self.attention(query, per_sentence, padding_mask)
            weights.append(pad_rows(w, emb.size(1)))
            return gate_terms(w)

        x, state = self.rnn(emb, cache["state"], attend=attend, active=active)
        return x, state, torch.stack(weights, dim=1)  # B x T x S

    def use_fused(self, x: Tensor) -> bool:
        """``--decoder-rnn`` for teacher forcing: the fused call without attention (decoding one
        step at a time gains nothing from it)."""
        if self.rnn_path == "loop" or self.attention is not None:
            return False
        return self.rnn_path == "fused" or x.is_cuda

    def initial_cache(self, encoder_out: Cache) -> Cache:
        """The decoder's state before the first step and what of the context it computes once
        per sentence: the fixed context's terms in the RNN's gates and the deep output, or with
        attention the attention's precomputed tensors and each source position's gate term
        ``W_c h + b`` (kept once per source sentence however many hypotheses read it)."""
        if self.attention is not None:
            outputs = encoder_out[PER_SENTENCE]["outputs"]  # N x S x C
            per_sentence = {**self.attention.precompute(outputs), "gate_terms": self.rnn.context_term(outputs)}
            return {"state": encoder_out["state"], PER_SENTENCE: per_sentence}
        context = encoder_out["context"]
        return {
            "state": encoder_out["state"],  # K x L x B x H
            "rnn_context_term": self.rnn.context_term(context),  # B x (gates H)
            "output_context_term": None if self.deep_output is None else self.deep_output.context_term(context),
        }

    def output_layer(self, features: Tensor) -> Tensor:
        if self.fc_out is None:
            return F.linear(features, self.embed_tokens.weight)
        return self.fc_out(features)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        cache = self.get_incremental_state(incremental_state, "rnn")
        if cache is not None:
            self.set_incremental_state(incremental_state, "rnn", reorder(cache, new_order))
