"""The encoder: embeddings, a multi-layer (optionally bidirectional) RNN, and a bridge to the
decoder's state size."""
from typing import TYPE_CHECKING, Dict

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.data import Dictionary
from fairseq.models import FairseqEncoder
from torch import Tensor

from .beam import PER_SENTENCE, reorder
from .embeddings import TokenInput
from .lengths import rnn_by_length, unpad_like
from .recurrence import RNN

if TYPE_CHECKING:  # the config's class, without importing the model that imports this module
    from ..models.rnn_seq2seq import RNNSeq2SeqConfig

EncoderOut = Dict[str, object]


class RNNEncoder(TokenInput, FairseqEncoder):
    """Embeds the source, runs the RNN over its real positions, and bridges the final state of
    every layer to the decoder's size (the outputs are kept for attention)."""

    def __init__(self, cfg: "RNNSeq2SeqConfig", dictionary: Dictionary, embed_tokens: nn.Embedding):
        super().__init__(dictionary)
        self.init_token_input(cfg, embed_tokens, cfg.max_source_positions)
        self.rnn = RNN(cfg.cell, cfg.encoder_embed_dim, cfg.encoder_hidden_size, cfg.encoder_layers,
                       cfg.dropout, cfg.init, cfg.encoder_bidirectional)
        self.return_outputs = cfg.decoder_attention != "none"
        self.num_directions = 2 if cfg.encoder_bidirectional else 1
        self.output_dim = self.num_directions * cfg.encoder_hidden_size
        # one linear map per state part (h, and c for LSTM) when sizes differ
        self.bridge = (
            nn.ModuleList(nn.Linear(self.output_dim, cfg.decoder_hidden_size) for _ in range(self.rnn.cell.state_parts))
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
            also ``per_sentence``: ``outputs`` B x S x C top-layer outputs and ``padding_mask``
            B x S, both in ``src_tokens``' positions and kept once per sentence by :func:`reorder`.
        """
        padding_mask = src_tokens.eq(self.padding_idx)
        # packing needs right padding; fairseq left-pads sources by default (no-op if right-padded)
        right_padded = utils.convert_padding_direction(src_tokens, self.padding_idx, left_to_right=True)
        x = self.embed(right_padded)
        x = x.transpose(0, 1)  # B x S x E -> S x B x E
        outputs, state = rnn_by_length(self.rnn, x, src_lengths, self.return_outputs)  # state: K x (L * D) x B x H
        k, _, bsz, h = state.shape
        if self.num_directions == 2:  # K x L x 2 x B x H -> K x L x B x 2H
            state = state.view(k, -1, 2, bsz, h).permute(0, 1, 3, 2, 4).reshape(k, -1, bsz, 2 * h)
        context = state[0, -1]
        if self.bridge is not None:
            state = torch.stack([proj(s) for proj, s in zip(self.bridge, state)])
        if not self.return_outputs:
            return {"state": state, "context": context}
        outputs = self.dropout_out(unpad_like(outputs.transpose(0, 1), padding_mask))
        return {"state": state, "context": context, PER_SENTENCE: {"outputs": outputs, "padding_mask": padding_mask}}

    def reorder_encoder_out(self, encoder_out: EncoderOut, new_order: Tensor) -> EncoderOut:
        return reorder(encoder_out, new_order)
