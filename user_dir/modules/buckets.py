"""Shape buckets and padding for ``--decoder-graphs``: a call's sizes rounded up to a few bucket
sizes (rows, target and source lengths), each tensor of a call grown to its bucket by its own rule
(:class:`Pad`), and the bucket's outputs cut back (:meth:`Pad.block`). The padding changes nothing
the caller sees: extra target positions come last (the decoder is causal), extra source positions
are masked from attention, extra rows are zeros sliced off before anything reads them, so they
get no gradient (tests/unit/test_graphs.py runs a call padded this way, kernel by kernel).
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_flatten_with_path, tree_unflatten

from .beam import PER_SENTENCE, Cache

MIN_BUCKET = 8


def bucket(n: int) -> int:
    """The smallest size >= n of 8, 12, 16, 24, 32, 48, ...: two sizes per power of two, so that
    padding adds at most half and a run sees few shapes."""
    size = MIN_BUCKET
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


@dataclass(frozen=True)
class Shape:
    """A call's sizes, or its bucket's: ``sentences`` source sentences of ``source`` positions (0
    without attention), ``rows`` = sentences x hypotheses per sentence, ``target`` steps."""

    rows: int
    sentences: int
    target: int
    source: int


def call_shape(emb: Tensor, encoder_out: Cache) -> Shape:
    """The sizes of a call on B x T x E target embeddings."""
    per_sentence = encoder_out.get(PER_SENTENCE)
    rows = emb.size(0)
    sentences, source = (rows, 0) if per_sentence is None else per_sentence["padding_mask"].shape
    return Shape(rows=rows, sentences=sentences, target=emb.size(1), source=source)


def bucket_shape(actual: Shape, teacher_forcing: bool) -> Shape:
    """The bucket of a call: rows by source sentence (a beam's hypotheses stay together), the
    target length when teacher forcing (a decoding step is one position)."""
    sentences = bucket(actual.sentences)
    return Shape(rows=sentences * (actual.rows // actual.sentences), sentences=sentences,
                 source=bucket(actual.source) if actual.source else 0,
                 target=bucket(actual.target) if teacher_forcing else actual.target)


def leading(x: Tensor, shape: torch.Size) -> Tensor:
    """The leading ``shape`` block of ``x``."""
    return x[tuple(slice(0, n) for n in shape)]


@dataclass(frozen=True)
class Pad:
    """How a tensor grows to its bucket: along each ``(dim, Shape field, fill value)`` in turn."""

    steps: Tuple[Tuple[int, str, object], ...]

    def grow(self, x: Tensor, shape: Shape) -> Tensor:
        """``x`` grown to its bucket ``shape``, a step at a time (a new tensor; :meth:`load` writes
        the same into a bucket-shaped one)."""
        for dim, size, value in self.steps:
            if x.size(dim) < getattr(shape, size):
                extra = list(x.shape)
                extra[dim] = getattr(shape, size) - x.size(dim)
                x = torch.cat([x, x.new_full(extra, value)], dim=dim)
        return x

    def size(self, x: Tensor, shape: Shape) -> torch.Size:
        """The size of :meth:`grow`'s result."""
        size = list(x.shape)
        for dim, field, _ in self.steps:
            size[dim] = getattr(shape, field)
        return torch.Size(size)

    def block(self, padded: Tensor, shape: Shape) -> Tensor:
        """The part of a bucket-shaped tensor that belongs to a call of ``shape``."""
        index = [slice(None)] * padded.dim()
        for dim, size, _ in self.steps:
            index[dim] = slice(0, getattr(shape, size))
        return padded[tuple(index)]

    def load(self, padded: Tensor, x: Tensor) -> None:
        """Write :meth:`grow`'s result for ``x`` into ``padded`` (its bucket's shape) in place."""
        leading(padded, x.shape).copy_(x)
        index = [slice(0, n) for n in x.shape]
        for dim, _, value in self.steps:
            if x.size(dim) < padded.size(dim):
                index[dim] = slice(x.size(dim), None)
                padded[tuple(index)].fill_(value)
            index[dim] = slice(None)


ROWS = Pad(((0, "rows", 0),))  # B x ...
STATE = Pad(((2, "rows", 0),))  # K x L x B x H
EMBEDDINGS = FEATURES = Pad(((0, "rows", 0), (1, "target", 0)))  # B x T x ...
WEIGHTS = Pad(((0, "rows", 0), (1, "target", 0), (2, "source", 0)))  # B x T x S
PER_SENTENCE_TENSOR = Pad(((0, "sentences", 0), (1, "source", 0)))  # N x S x ...
# new positions are padding; new sentences read the real ones (zeros there: finite attention)
PADDING_MASK = Pad(((0, "sentences", False), (1, "source", True)))
OUTPUTS = (FEATURES, WEIGHTS, STATE)  # of a call: features, weights or None[, a step's state]
Outputs = Tuple[Optional[Tensor], ...]


def pad_of(path: tuple) -> Pad:
    """How the tensor at ``path`` in a call's ``[emb, encoder_out(, cache)]`` grows, by the layout
    :func:`~.beam.reorder` reads: ``state`` K x L x B x H, per-sentence tensors N x S x ...,
    other tensors B x ..."""
    if len(path) == 1:
        return EMBEDDINGS
    if path[1].key == PER_SENTENCE:
        return PADDING_MASK if path[2].key == "padding_mask" else PER_SENTENCE_TENSOR
    return STATE if path[1].key == "state" else ROWS


def tensors_of(args: list) -> Tuple[List[Tensor], Callable[[List[Tensor]], list]]:
    """A call's tensors, and a function that rebuilds the call's arguments around other tensors
    in their places (Nones kept); at every call, so the plain flatten (no key paths)."""
    leaves, spec = tree_flatten(args)
    where = [i for i, x in enumerate(leaves) if isinstance(x, Tensor)]

    def rebuild(tensors: List[Tensor]) -> list:
        full = list(leaves)
        for i, x in zip(where, tensors):
            full[i] = x
        return tree_unflatten(full, spec)

    return [leaves[i] for i in where], rebuild


def pads_of(args: list) -> List[Pad]:
    """How each of a call's tensors (in :func:`tensors_of`'s order) grows: once per capture."""
    return [pad_of(path) for path, x in tree_flatten_with_path(args)[0] if isinstance(x, Tensor)]
