"""``--decoder-graphs``: the decoder on a GPU as CUDA graphs, one per shape bucket.

On a GPU the step-by-step decoder spends its time launching ~20 small kernels per step from
Python (docs/design.md, "On a GPU"). A CUDA graph replays a whole captured call (the
teacher-forced decoder with its backward, or one beam-search step) as one launch. A graph has
fixed shapes, so each batch is padded up to a bucket (:func:`bucket`: rows, target and source
lengths), run, and sliced back (:func:`run_bucketed`). The padding changes nothing the caller
sees: extra target positions come last (the decoder is causal), extra source positions are
masked from attention, extra rows are zeros sliced off before anything reads them, so they get
no gradient. The parameters are the same with graphs on or off (the choice itself is saved in
a checkpoint's config); on a CPU the graphs are never entered.
"""
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from .beam import PER_SENTENCE, Cache

logger = logging.getLogger(__name__)

MIN_BUCKET = 8
MAX_GRAPHS = 64  # per decoder and mode: past this many shapes, new ones run kernel by kernel (memory bounded)
MODES = ("train", "forward", "step")  # teacher forcing with gradients, without, and a decoding step
Outputs = Tuple[Optional[Tensor], ...]  # (B x T x C features, B x T x S weights or None[, K x L x B x H state])


def graphs_wanted(choice: str) -> bool:
    """``--decoder-graphs``: ``on`` forces them (where CUDA is); ``auto`` is off until the GPU check
    (lab/gpu_check.sh) has shown them equal and faster on a GPU."""
    if choice == "on" and not torch.cuda.is_available():
        logger.warning("--decoder-graphs on: no CUDA here, so the decoder runs step by step (the same model)")
    return choice == "on"


def bucket(n: int) -> int:
    """The smallest size >= n of 8, 12, 16, 24, 32, 48, ...: two sizes per power of two, so that
    padding adds at most half and a run sees few shapes."""
    size = MIN_BUCKET
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


@dataclass(frozen=True)
class Shape:
    """A bucket: ``sentences`` source sentences of ``source`` positions (0 without attention),
    ``rows`` = sentences x hypotheses per sentence, ``target`` steps."""

    rows: int
    sentences: int
    target: int
    source: int


def bucket_shape(emb: Tensor, encoder_out: Cache, teacher_forcing: bool) -> Shape:
    """The bucket of B x T x E target embeddings: rows by source sentence (a beam's hypotheses
    stay together), the target length when teacher forcing (a decoding step is one position)."""
    per_sentence = encoder_out.get(PER_SENTENCE)
    rows = emb.size(0)
    sentences, source = (rows, 0) if per_sentence is None else per_sentence["padding_mask"].shape
    n = bucket(sentences)
    return Shape(rows=n * (rows // sentences), sentences=n, source=bucket(source) if source else 0,
                 target=bucket(emb.size(1)) if teacher_forcing else emb.size(1))


def grow(x: Tensor, dim: int, size: int, value=0) -> Tensor:
    """``x`` extended along ``dim`` to ``size`` with ``value``."""
    if x.size(dim) == size:
        return x
    extra = list(x.shape)
    extra[dim] = size - x.size(dim)
    return torch.cat([x, x.new_full(extra, value)], dim=dim)


def pad_per_sentence(name: str, x: Tensor, shape: Shape) -> Tensor:
    """N x S x ... per-sentence tensors to the bucket. The padding mask marks the new positions
    of real sentences as padding; new sentences get none (zeros everywhere: finite attention)."""
    if name == "padding_mask":
        return grow(grow(x, 0, shape.sentences, False), 1, shape.source, True)
    return grow(grow(x, 0, shape.sentences), 1, shape.source)


def pad_cache(cache: Cache, shape: Shape) -> Cache:
    """An encoder output or decoder cache to the bucket, by the layout :func:`~.beam.reorder`
    reads: ``state`` K x L x B x H, per-sentence tensors N x S x ..., other tensors B x ..."""
    out = {}
    for key, value in cache.items():
        if key == PER_SENTENCE:
            out[key] = {name: pad_per_sentence(name, x, shape) for name, x in value.items()}
        elif value is not None:
            out[key] = grow(value, 2 if key == "state" else 0, shape.rows)
        else:
            out[key] = None
    return out


def restore(outputs: Outputs, rows: int, target: int, source: int) -> Outputs:
    """The bucket's outputs cut back to the batch: features, weights and (a step's) state."""
    x, attn, *state = outputs
    x = x[:rows, :target]
    attn = None if attn is None else attn[:rows, :target, :source]
    return (x, attn, *(s[:, :, :rows] for s in state))


def run_bucketed(fn: Callable[..., Outputs], emb: Tensor, encoder_out: Cache, cache: Optional[Cache] = None,
                 call: Optional[Callable] = None) -> Outputs:
    """``fn(emb, encoder_out[, cache])`` (B x T x E target embeddings; a cache: one decoding
    step) run on the batch padded to its bucket (by ``call(shape, fn, *padded)`` when given: a
    graph's replay), its outputs cut back to the batch."""
    shape = bucket_shape(emb, encoder_out, teacher_forcing=cache is None)
    padded = [grow(grow(emb, 0, shape.rows), 1, shape.target), pad_cache(encoder_out, shape)]
    if cache is not None:
        padded.append(pad_cache(cache, shape))
    source = encoder_out[PER_SENTENCE]["padding_mask"].size(1) if PER_SENTENCE in encoder_out else 0
    outputs = fn(*padded) if call is None else call(shape, fn, *padded)
    return restore(outputs, emb.size(0), emb.size(1), source)


def tensors_of(tree) -> Tuple[List[Tensor], Callable[[List[Tensor]], object]]:
    """The tensors of a nest of lists, tuples and dicts, and a function that rebuilds the nest
    around other tensors in their places (Nones kept)."""
    leaves, spec = tree_flatten(tree)
    where = [i for i, x in enumerate(leaves) if isinstance(x, Tensor)]

    def rebuild(tensors: List[Tensor]):
        full = list(leaves)
        for i, x in zip(where, tensors):
            full[i] = x
        return tree_unflatten(full, spec)

    return [leaves[i] for i in where], rebuild


class Captured:
    """One CUDA graph of ``fn`` over fixed-shape arguments, and of its backward when its outputs
    need gradients (wrt the tensor arguments that need them and ``params``)."""

    def __init__(self, fn: Callable, args: list, params: List[Tensor], pool):
        tensors, rebuild = tensors_of(args)
        self.inputs = [x.detach().clone().requires_grad_(x.requires_grad) for x in tensors]
        self.params = params
        wrt = [x for x in self.inputs + params if x.requires_grad]

        def call() -> List[Tensor]:
            outputs, self.rebuild_outputs = tensors_of(fn(*rebuild(self.inputs)))
            return outputs

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the capture: lazy initialisation, cuDNN plans
            for _ in range(2):
                gradients(call(), wrt)
        torch.cuda.current_stream().wait_stream(stream)
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool):
            self.outputs = call()
        self.grads_out = [torch.empty_like(o) for o in self.outputs if o.requires_grad]
        self.backward_graph, self.grads_in = None, []
        if self.grads_out:
            self.backward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.backward_graph, pool=pool):
                grads = iter(gradients(self.outputs, wrt, self.grads_out))
            self.grads_in = [next(grads) if x.requires_grad else None for x in self.inputs + params]

    def __call__(self, args: list):
        tensors = tensors_of(args)[0]
        return self.rebuild_outputs(list(_Replay.apply(self, *tensors, *self.params)))


def gradients(outputs: List[Tensor], wrt: List[Tensor], grads: Optional[List[Tensor]] = None) -> tuple:
    """Gradients of the ``outputs`` that need them (given ``grads``, else ones) wrt ``wrt``."""
    differentiable = [o for o in outputs if o.requires_grad]
    if not differentiable or not wrt:
        return ()
    grads = grads or [torch.ones_like(o) for o in differentiable]
    return torch.autograd.grad(differentiable, wrt, grads, allow_unused=True)


class _Replay(torch.autograd.Function):
    """A :class:`Captured` graph as one autograd node. Outputs and gradients are copies, so nothing
    the caller keeps (features, ``.grad`` accumulated over several batches) aliases the graph's
    memory, which the next replay overwrites."""

    @staticmethod
    def forward(ctx, captured: Captured, *tensors: Tensor):
        for static, x in zip(captured.inputs, tensors):
            static.copy_(x)
        captured.forward_graph.replay()
        ctx.captured = captured
        return tuple(o.clone() for o in captured.outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor):
        captured: Captured = ctx.captured
        for static, g in zip(captured.grads_out, [g for o, g in zip(captured.outputs, grads) if o.requires_grad]):
            static.copy_(g)
        captured.backward_graph.replay()
        return (None, *(None if g is None else g.clone() for g in captured.grads_in))


def mode_of(step: bool, grad: bool) -> Optional[str]:
    """The mode of a call (:data:`MODES`): each has its own memory pool and its own :data:`MAX_GRAPHS`.
    None for decoding steps with gradients: steps replay before any backward, which would read
    saved activations that the next replay overwrote."""
    if step:
        return None if grad else "step"
    return "train" if grad else "forward"


def choose(key: tuple, graphs: Dict[tuple, object], cap: int) -> str:
    """``replay`` the graph of ``key`` (its mode first), ``capture`` it while its mode has fewer
    than ``cap`` graphs, else (or without a mode) run the ``plain`` unpadded call."""
    if key in graphs:
        return "replay"
    return "capture" if key[0] is not None and sum(k[0] == key[0] for k in graphs) < cap else "plain"


class DecoderGraphs:
    """A decoder's graphs, one per bucket and mode (:data:`MODES`, training or not, autocast), one
    memory pool per mode; at most ``cap`` per mode, later shapes run unpadded kernel by kernel."""

    def __init__(self, cap: int = MAX_GRAPHS):
        self.cap = cap
        self.graphs: Dict[tuple, Captured] = {}
        self.pools: dict = {}
        self.params: tuple = ()
        self.full: set = set()  # the modes that reached the cap (warned once each)

    def __deepcopy__(self, memo) -> "DecoderGraphs":
        return DecoderGraphs(self.cap)  # graphs belong to one copy's parameters

    def __call__(self, module: torch.nn.Module, fn: Callable[..., Outputs], emb: Tensor, encoder_out: Cache,
                 cache: Optional[Cache] = None) -> Outputs:
        """:func:`run_bucketed` with ``fn`` replayed from this bucket's graph (captured on first
        use), or ``fn`` unpadded when its mode has no graph left."""
        params = [p for p in module.parameters() if p.requires_grad]
        if tuple(p.data_ptr() for p in params) != self.params:  # moved, cast or replaced: capture anew
            self.graphs.clear()
            self.full.clear()
            self.params = tuple(p.data_ptr() for p in params)
        args = [emb, encoder_out] if cache is None else [emb, encoder_out, cache]
        autocast = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
        key = (mode_of(cache is not None, torch.is_grad_enabled()),
               bucket_shape(emb, encoder_out, teacher_forcing=cache is None), module.training,
               torch.is_grad_enabled(), autocast, tuple((x.dtype, x.requires_grad) for x in tensors_of(args)[0]))
        action = choose(key, self.graphs, self.cap)
        if action == "plain":
            if key[0] is not None:
                self.warn_full(key[0])
            return fn(*args)

        def call(shape: Shape, fn: Callable, *padded):
            # no autocast cache: a cast weight cached outside the graph would be read at a stale address
            with torch.autocast("cuda", enabled=autocast[0], dtype=autocast[1], cache_enabled=False):
                if action == "capture":
                    self.capture(key, fn, list(padded), params)
                return self.graphs[key](list(padded))

        return run_bucketed(fn, emb, encoder_out, cache, call)

    def warn_full(self, mode: str) -> None:
        """Say once per mode that its new shapes run without graphs."""
        if mode not in self.full:
            logger.warning(f"--decoder-graphs: {self.cap} {mode} graphs captured; new shapes run kernel by kernel")
            self.full.add(mode)

    def capture(self, key: tuple, fn: Callable, args: list, params: List[Tensor]) -> None:
        """A new graph for ``key``, in its mode's memory pool."""
        if key[0] not in self.pools:
            self.pools[key[0]] = torch.cuda.graph_pool_handle()
        self.graphs[key] = Captured(fn, args, params, self.pools[key[0]])
