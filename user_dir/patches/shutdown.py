"""fairseq-train exits with status 0, never SIGABRT ("terminate called without an active exception").

fairseq's ``BufferedIterator`` prefetches batches in a daemon thread (``BackgroundConsumer``).
When training stops before an epoch ends, that thread is still collating batches as Python
exits; a daemon thread coming back from a torch op then is ended by the interpreter through
torch's C++ frames, and the process aborts (status 134, -6 in torchrun's summary) after its
checkpoints were written. Every consumer stops before its next batch and is joined before the
interpreter shuts down (``atexit`` runs before daemon threads are ended).
"""
import atexit
import logging
import queue
import threading
import time
import weakref
from typing import Iterable, Iterator

from fairseq.data import iterators

from . import replace

logger = logging.getLogger(__name__)

JOIN_SECONDS = 60.0  # a consumer stuck longer (a hung source) is left to the interpreter: no hang at exit
# kept across importlib.reload, so consumers made before a reload are still joined
_CONSUMERS: "weakref.WeakSet[threading.Thread]" = globals().get("_CONSUMERS", weakref.WeakSet())
_EXITING: threading.Event = globals().get("_EXITING", threading.Event())
if "stop_consumers" in globals():  # a reload: its exit hook replaces the previous one
    atexit.unregister(globals()["stop_consumers"])


def _until_exit(source: Iterable) -> Iterator:
    """``source``'s items until the interpreter begins to exit (checked before each next item)."""
    if _EXITING.is_set():
        return
    for item in source:
        yield item
        if _EXITING.is_set():
            return


def _stoppable(init):
    def init_stoppable(self, queue, source, *args, **kwargs) -> None:
        init(self, queue, _until_exit(source), *args, **kwargs)
        _CONSUMERS.add(self)
    return init_stoppable


def _drain(q: queue.Queue) -> None:
    """Empty ``q`` so that a consumer blocked on ``put`` goes on, sees the exit, and stops."""
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def stop_consumers() -> None:
    """Stop and join every live prefetching thread (each finishes at most the batch it is on)."""
    _EXITING.set()
    deadline = time.monotonic() + JOIN_SECONDS
    for consumer in list(_CONSUMERS):
        while consumer.is_alive():
            if time.monotonic() > deadline:
                logger.warning("a batch prefetching thread did not stop within %.0f s; exiting without it",
                               JOIN_SECONDS)
                return
            _drain(consumer._queue)
            consumer.join(timeout=0.01)


atexit.register(stop_consumers)
replace(iterators.BackgroundConsumer, "__init__", _stoppable, level="minimal")
