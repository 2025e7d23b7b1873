"""The textbook's model in plain PyTorch, for comparisons only (``lab/init_study.py``).

Dive into Deep Learning 0.17, section 9.7: an ``nn.GRU`` encoder, and a decoder whose one fused
``nn.GRU`` reads ``[embedding ; context]`` at every step, the context being the encoder's final
top-layer state; torch's default initialisation; dropout between the RNN layers only. Behind
fairseq's interfaces so that it trains and decodes exactly as ``rnn_seq2seq`` does:

    fairseq-train DATA --user-dir lab/d2l_reference --arch d2l_reference --criterion masked_ce ...

The plugin is imported too (fairseq loads one user dir), for ``masked_ce`` and its patches.
"""

import torch
from fairseq import utils
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)
from torch import nn

import user_dir  # noqa: E402,F401

EMBED, HIDDEN, LAYERS, DROPOUT = 32, 32, 2, 0.1


class Seq2SeqEncoder(FairseqEncoder):
    def __init__(self, dictionary):
        super().__init__(dictionary)
        self.embedding = nn.Embedding(len(dictionary), EMBED)
        self.rnn = nn.GRU(EMBED, HIDDEN, LAYERS, dropout=DROPOUT)

    def forward(self, src_tokens, src_lengths):
        src_tokens = utils.convert_padding_direction(src_tokens, self.dictionary.pad(), left_to_right=True)
        x = self.embedding(src_tokens).transpose(0, 1)  # S x B x E
        _, state = self.rnn(nn.utils.rnn.pack_padded_sequence(x, src_lengths.cpu(), enforce_sorted=False))
        return {"state": state}  # L x B x H

    def reorder_encoder_out(self, encoder_out, new_order):
        return {"state": encoder_out["state"].index_select(1, new_order)}


class Seq2SeqDecoder(FairseqIncrementalDecoder):
    def __init__(self, dictionary):
        super().__init__(dictionary)
        self.embedding = nn.Embedding(len(dictionary), EMBED)
        self.rnn = nn.GRU(EMBED + HIDDEN, HIDDEN, LAYERS, dropout=DROPOUT)
        self.dense = nn.Linear(HIDDEN, len(dictionary))

    def forward(self, prev_output_tokens, encoder_out, incremental_state=None, **kwargs):
        state = encoder_out["state"]
        if incremental_state is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
            cached = self.get_incremental_state(incremental_state, "state")
            state = state if cached is None else cached["state"]
        x = self.embedding(prev_output_tokens).transpose(0, 1)               # T x B x E
        context = encoder_out["state"][-1].expand(x.size(0), -1, -1)         # T x B x H
        out, state = self.rnn(torch.cat([x, context], dim=-1), state.contiguous())
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "state", {"state": state})
        return self.dense(out).transpose(0, 1), {"attn": [None]}

    def reorder_incremental_state(self, incremental_state, new_order):
        cached = self.get_incremental_state(incremental_state, "state")
        if cached is not None:
            reordered = cached["state"].index_select(1, new_order)
            self.set_incremental_state(incremental_state, "state", {"state": reordered})


@register_model("d2l_reference")
class D2LReference(FairseqEncoderDecoderModel):
    @classmethod
    def build_model(cls, args, task):
        return cls(Seq2SeqEncoder(task.source_dictionary), Seq2SeqDecoder(task.target_dictionary))


@register_model_architecture("d2l_reference", "d2l_reference")
def d2l_reference(args):
    pass
