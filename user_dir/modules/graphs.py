"""``--decoder-graphs``: the decoder on a GPU as CUDA graphs, one per shape bucket.

On a GPU the step-by-step decoder spends its time launching each step's small kernels one by one
from Python (docs/design.md, "On a GPU"). A CUDA graph replays a whole captured call (the
teacher-forced decoder with its backward, or one beam-search step) as one launch. A graph has
fixed shapes, so each call is written into its bucket's input tensors (:mod:`.buckets`: the
bucket sizes and how each tensor is padded), replayed, and its block of the outputs copied out.
A tensor already in a graph's inputs, unchanged, is not written again: a decoding step copies in
its embeddings and state, not the sentences' encoder outputs. The graphs of a memory pool keep
their inputs, outputs and gradients in buffers they share (:class:`Slots`), so memory grows
with the largest bucket, not with the number of graphs. The parameters are the same with graphs
on or off (the choice itself is saved in a checkpoint's config); on a CPU the graphs are never
entered.
"""
import gc
import itertools
import logging
import math
import weakref
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from .beam import Cache, version
from .buckets import OUTPUTS, Outputs, Pad, Shape, bucket_shape, call_shape, leading, pads_of, tensors_of

logger = logging.getLogger(__name__)

MAX_GRAPHS = 64  # per decoder and mode: past this many shapes, new ones run kernel by kernel (memory bounded)
MODES = ("train", "forward", "step")  # teacher forcing with gradients, without, and a decoding step


def graphs_wanted(choice: str) -> bool:
    """``--decoder-graphs``: ``on`` forces them (where CUDA is); ``auto`` is off until the GPU check
    (lab/gpu_check.sh) has shown them equal and faster on a GPU."""
    if choice == "on" and not torch.cuda.is_available():
        logger.warning("--decoder-graphs on: no CUDA here, so the decoder runs step by step (the same model)")
    return choice == "on"


class Slot:
    """A buffer that the graphs of one pool share for one role (their i-th input, output or
    gradient), each through a view of its own shape; ``held`` records what was last written into
    it as an input, and in which view."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device):
        self.buffer = torch.empty(numel, dtype=dtype, device=device)
        self.held: Optional[tuple] = None  # (weak reference to the tensor, (view size, version, address))

    def view(self, size: torch.Size) -> Tensor:
        """The buffer's leading elements as a tensor of ``size``."""
        return self.buffer[: math.prod(size)].view(size)


class Slots:
    """A pool's slots by role and dtype. A slot too small for a new graph is replaced by one of at
    least twice its size (the graphs that use the old one keep it), so the memory held is at most
    a few times the largest bucket's, however many graphs there are. Sharing is safe because no
    graph of a pool runs between another's forward and backward (:class:`Pool`): what a call
    writes into a slot is read before any other graph writes there."""

    def __init__(self):
        self.slots: Dict[tuple, Slot] = {}

    def view(self, role: tuple, size: torch.Size, like: Tensor) -> Tuple[Slot, Tensor]:
        """The slot of ``role`` for ``like``'s dtype, and its view of ``size``."""
        key, numel = (role, like.dtype), math.prod(size)
        slot = self.slots.get(key)
        if slot is None or slot.buffer.numel() < numel:
            slot = self.slots[key] = Slot(max(numel, 2 * slot.buffer.numel()) if slot else numel,
                                          like.dtype, like.device)
        return slot, slot.view(size)


class StaticInputs:
    """A graph's inputs: bucket-shaped views of the pool's slots that each call's tensors are
    written into (padding filled as :meth:`Pad.grow` would), unless the same tensor, unchanged, is
    in that view already (a sentence's encoder outputs, read at every decoding step: no copy per
    step). Unchanged means the same object, in-place change counter and address, and no other
    graph's write since: writes that bypass the counter (``x.data.add_``, another tensor over the
    same memory) are not seen; nothing here makes them."""

    def __init__(self, tensors: List[Tensor], pads: List[Pad], shape: Shape, slots: Slots):
        self.pads = pads
        self.slots, self.tensors = [], []
        for i, (x, pad) in enumerate(zip(tensors, pads)):
            slot, view = slots.view(("input", i, pad), pad.size(x, shape), x)
            self.slots.append(slot)
            self.tensors.append(view)
        with torch.no_grad():
            self.load(tensors)
        for view, x in zip(self.tensors, tensors):
            view.requires_grad_(x.requires_grad)

    def load(self, tensors: List[Tensor]) -> None:
        for static, slot, pad, x in zip(self.tensors, self.slots, self.pads, tensors):
            now = (static.shape, version(x), x.data_ptr())
            if slot.held is not None and slot.held[0]() is x and now[1] is not None and slot.held[1] == now:
                continue
            pad.load(static, x)
            slot.held = weakref.ref(x), now


class Pool:
    """A mode's graph memory, and the training replay whose backward is due. A graph captured later
    in the pool may use the memory that an earlier graph's backward reads (its saved activations),
    and the pool's graphs share their input slots, so no graph of the pool may replay between a
    forward and its backward: checked, not assumed. ``stream``: the decoder's, where its graphs are
    warmed up and captured."""

    def __init__(self, stream: "torch.cuda.Stream"):
        self.handle = torch.cuda.graph_pool_handle()
        self.due: object = None  # the token of the forward replay whose backward comes next
        self.slots = Slots()  # the graphs' inputs, outputs and gradients
        self.stream = stream


@contextmanager
def capturing(graph: "torch.cuda.CUDAGraph", pool: Pool) -> Iterator[None]:
    """``torch.cuda.graph`` into ``pool`` on its stream, refusing only this thread's unsafe calls
    (fairseq's data thread pins memory meanwhile), with no garbage collection inside (its frees
    would be captured)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        with torch.cuda.graph(graph, pool=pool.handle, stream=pool.stream, capture_error_mode="thread_local"):
            yield
    finally:
        if collecting:
            gc.enable()


class Captured:
    """One CUDA graph of ``fn`` over a bucket's shapes, and of its backward when its outputs need
    gradients (wrt the tensor arguments that need them and ``params``). Both graphs copy what they
    compute into views of the pool's slots; what they compute into is the pool's to reuse."""

    def __init__(self, fn: Callable, args: list, shape: Shape, params: List[Tensor], pool: Pool):
        tensors, rebuild = tensors_of(args)
        self.inputs = StaticInputs(tensors, pads_of(args), shape, pool.slots)
        self.params, self.pool = params, pool
        wrt = [x for x in self.inputs.tensors + params if x.requires_grad]

        def call() -> Outputs:
            return fn(*rebuild(self.inputs.tensors))

        pool.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(pool.stream):  # warm-up outside the capture: lazy initialisation, cuDNN plans
            for _ in range(2):
                outputs = call()
                grads = gradients(outputs, wrt)
        torch.cuda.current_stream().wait_stream(pool.stream)
        self.present = [o is not None for o in outputs]  # the slots' views, made outside the captures
        self.output_pads = [pad for pad, o in zip(OUTPUTS, outputs) if o is not None]
        returned = [o for o in outputs if o is not None]
        self.differentiable = [o.requires_grad for o in returned]  # of the outputs: their views need none
        self.outputs = view_slots(pool.slots, "output", returned)
        self.grads_out = view_slots(pool.slots, "output gradient", [o for o in returned if o.requires_grad])
        grads_wrt = view_slots(pool.slots, "gradient", list(grads) or [None] * len(wrt))
        del outputs, returned, grads  # the warm-up's: not kept through the captures
        self.forward_graph = torch.cuda.CUDAGraph()
        with capturing(self.forward_graph, pool):
            outputs = call()
            copy_into(self.outputs, [o.detach() for o in outputs if o is not None])
        self.backward_graph = None
        if self.grads_out:
            self.backward_graph = torch.cuda.CUDAGraph()
            with capturing(self.backward_graph, pool):
                copy_into(grads_wrt, gradients(outputs, wrt, self.grads_out))
        grads_wrt = iter(grads_wrt)
        self.grads_in = [next(grads_wrt) if x.requires_grad else None for x in self.inputs.tensors + params]

    def __call__(self, tensors: List[Tensor], actual: Shape) -> Outputs:
        """The graph on a call's tensors (in :func:`tensors_of`'s order) of ``actual`` sizes, within
        the bucket: its outputs, as ``fn``'s."""
        outputs = iter(_Replay.apply(self, actual, *tensors, *self.params))
        return tuple(next(outputs) if present else None for present in self.present)


def view_slots(slots: Slots, role: str, like: List[Optional[Tensor]]) -> List[Optional[Tensor]]:
    """A view of the ``role`` slots for each tensor of ``like`` (its shape and dtype; None: none)."""
    return [None if x is None else slots.view((role, i), x.shape, x)[1] for i, x in enumerate(like)]


def copy_into(views: List[Optional[Tensor]], tensors) -> None:
    """Each tensor into its view (a graph's results into the pool's slots); None: nothing to copy."""
    for view, x in zip(views, tensors):
        if view is not None and x is not None:
            view.copy_(x)


def gradients(outputs: List[Optional[Tensor]], wrt: List[Tensor], grads: Optional[List[Tensor]] = None) -> tuple:
    """Gradients of the ``outputs`` that need them (given ``grads``, else ones) wrt ``wrt``, outside
    autocast, as fairseq runs every backward."""
    differentiable = [o for o in outputs if o is not None and o.requires_grad]
    if not differentiable or not wrt:
        return ()
    grads = grads or [torch.ones_like(o) for o in differentiable]
    with torch.autocast("cuda", enabled=False):
        return torch.autograd.grad(differentiable, wrt, grads, allow_unused=True)


class _Replay(torch.autograd.Function):
    """A :class:`Captured` graph as one autograd node, on the call's own tensors: they are written
    into the graph's inputs, and the call's blocks of its outputs and gradients are copied out, so
    nothing the caller keeps (features, ``.grad`` accumulated over several batches) aliases the
    graph's memory, which the next replay overwrites."""

    @staticmethod
    def forward(ctx, captured: Captured, actual: Shape, *tensors: Tensor):
        inputs = tensors[: len(captured.inputs.tensors)]
        captured.inputs.load(list(inputs))
        captured.forward_graph.replay()
        ctx.captured, ctx.shapes, ctx.token = captured, [x.shape for x in tensors], object()
        # the replay wrote the pool's input slots: a backward due before it would read them changed
        captured.pool.due = ctx.token if captured.backward_graph is not None else None
        return tuple(pad.block(o, actual).clone() for pad, o in zip(captured.output_pads, captured.outputs))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor):
        captured: Captured = ctx.captured
        if captured.backward_graph is None:  # nothing inside the graph needs a gradient
            return (None,) * (2 + len(ctx.shapes))
        if captured.pool.due is not ctx.token:
            raise RuntimeError("--decoder-graphs: the decoder ran again before the backward of its previous "
                               "call (a criterion that runs the model twice per backward?): the graph's saved "
                               "activations are gone; train with --decoder-graphs off")
        captured.pool.due = None
        needed = [(pad, g) for pad, wanted, g in zip(captured.output_pads, captured.differentiable, grads) if wanted]
        for static, (pad, g) in zip(captured.grads_out, needed):
            pad.load(static, g)  # zeros for the padding
        captured.backward_graph.replay()
        return (None, None, *(None if g is None else leading(g, shape).clone()
                              for g, shape in zip(captured.grads_in, ctx.shapes)))


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
        self.pools: Dict[str, Pool] = {}
        self.stream: Optional[torch.cuda.Stream] = None  # made at the first capture (CUDA may be absent before)
        self.params: tuple = ()
        self.full: set = set()  # the modes that reached the cap (warned once each)

    def __deepcopy__(self, memo) -> "DecoderGraphs":
        return DecoderGraphs(self.cap)  # graphs belong to one copy's parameters

    def __call__(self, module: torch.nn.Module, fn: Callable[..., Outputs], emb: Tensor, encoder_out: Cache,
                 cache: Optional[Cache] = None) -> Outputs:
        """``fn(emb, encoder_out[, cache])`` replayed from its bucket's graph (captured on first
        use), or ``fn`` unpadded when its mode has no graph left."""
        # any parameter or buffer moved, cast, replaced (frozen ones too: graphs read their addresses) or
        # frozen or unfrozen (a graph's gradients are those of its capture's trainable parameters): capture anew
        held = itertools.chain(module.parameters(), module.buffers())
        addresses = tuple((t.data_ptr(), t.requires_grad) for t in held)
        if addresses != self.params:
            self.graphs.clear()
            self.pools.clear()
            self.full.clear()
            self.params = addresses
        args = [emb, encoder_out] if cache is None else [emb, encoder_out, cache]
        actual = call_shape(emb, encoder_out)
        autocast = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
        tensors = tensors_of(args)[0]
        key = (mode_of(cache is not None, torch.is_grad_enabled()), bucket_shape(actual, cache is None),
               module.training, torch.is_grad_enabled(), autocast, tuple((x.dtype, x.requires_grad) for x in tensors))
        action = choose(key, self.graphs, self.cap)
        if action == "plain":
            if key[0] is not None:
                self.warn_full(key[0])
            return fn(*args)
        # no autocast cache: a cast weight cached outside the graph would be read at a stale address
        with torch.autocast("cuda", enabled=autocast[0], dtype=autocast[1], cache_enabled=False):
            if action == "capture":
                self.capture(key, fn, args, [p for p in module.parameters() if p.requires_grad])
            return self.graphs[key](tensors, actual)

    def warn_full(self, mode: str) -> None:
        """Say once per mode that its new shapes run without graphs."""
        if mode not in self.full:
            logger.warning(f"--decoder-graphs: {self.cap} {mode} graphs captured; new shapes run kernel by kernel")
            self.full.add(mode)

    def capture(self, key: tuple, fn: Callable, args: list, params: List[Tensor]) -> None:
        """A new graph for ``key``, in its mode's memory pool."""
        if self.stream is None:  # the decoder's own, not torch's shared capture stream: destroying a graph
            # frees its stream's cuBLAS workspace, which other graphs on that stream use (pytorch#193402)
            self.stream = torch.cuda.Stream()
        if key[0] not in self.pools:
            self.pools[key[0]] = Pool(self.stream)
            logger.info(f"--decoder-graphs: capturing {key[0]} graphs (the first of bucket {key[1]})")
        self.graphs[key] = Captured(fn, args, key[1], params, self.pools[key[0]])
