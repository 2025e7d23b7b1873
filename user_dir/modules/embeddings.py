"""Token embeddings and the dropouts around the recurrences."""
import torch.nn as nn
import torch.nn.functional as F
from fairseq.modules import FairseqDropout
from torch import Tensor


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


def embed_words(tokens: Tensor, embed: nn.Embedding, word_dropout: float, dropout: FairseqDropout) -> Tensor:
    """B x T tokens -> B x T x E embeddings; in training (``dropout.training``) each token's whole
    embedding is zeroed with probability ``word_dropout`` (one mask entry per token), then ``dropout``."""
    x = embed(tokens)
    if word_dropout > 0 and dropout.training:
        x = x * F.dropout(x.new_ones(*tokens.shape, 1), word_dropout)
    return dropout(x)


def dropout_layer(cfg, where: str, owner: str) -> FairseqDropout:
    """``--dropout-in`` or ``--dropout-out`` (``where``), which default to ``--dropout``; fairseq's
    dropout module, so that ``--retain-dropout [--retain-dropout-modules OWNER]`` keeps it when decoding."""
    p = getattr(cfg, f"dropout_{where}", None)
    return FairseqDropout(cfg.dropout if p is None else p, module_name=owner)


class TokenInput:
    """What the encoder and the decoder share (a mixin before fairseq's class): the token embeddings,
    word dropout, ``--dropout-in``/``--dropout-out`` and the positions limit."""

    dictionary: object
    embed_tokens: nn.Embedding

    def init_token_input(self, cfg, embed_tokens: nn.Embedding, max_positions: int) -> None:
        self.max_positions_ = max_positions
        self.padding_idx = self.dictionary.pad()
        self.embed_tokens = embed_tokens
        self.dropout_in, self.dropout_out = (dropout_layer(cfg, where, type(self).__name__) for where in ("in", "out"))
        self.word_dropout = cfg.word_dropout

    def embed(self, tokens: Tensor) -> Tensor:
        """B x T tokens -> B x T x E embeddings, after word dropout and --dropout-in."""
        return embed_words(tokens, self.embed_tokens, self.word_dropout, self.dropout_in)

    def max_positions(self) -> int:
        return self.max_positions_
