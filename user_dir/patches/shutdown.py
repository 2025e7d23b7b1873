"""fairseq-train exits with status 0, never SIGABRT ("terminate called without an active exception").

fairseq's ``BufferedIterator`` prefetches batches in a daemon thread (``BackgroundConsumer``).
When training stops before an epoch ends, that thread is still collating batches as Python
exits; a daemon thread coming back from a torch op then is ended by the interpreter through
torch's C++ frames, and the process aborts (status 134, -6 in torchrun's summary) after its
checkpoints were written. Every consumer stops at its next batch and is joined before the
interpreter shuts down (``atexit`` runs before daemon threads are ended).
"""
import atexit
import queue
import threading
import weakref
from typing import Iterable, Iterator

from fairseq.data import iterators

from . import replace

_CONSUMERS: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()
_EXITING = threading.Event()


def _until_exit(source: Iterable) -> Iterator:
    """``source``'s items until the interpreter begins to exit."""
    for item in source:
        if _EXITING.is_set():
            return
        yield item


def _stoppable(init):
    def init_stoppable(self, queue, source, *args, **kwargs) -> None:
        init(self, queue, _until_exit(source), *args, **kwargs)
        _CONSUMERS.add(self)
    return init_stoppable


def _drain(q: queue.Queue) -> None:
    """Empty ``q`` so that a consumer blocked on ``put`` goes on to its next batch, and stops."""
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


@atexit.register
def stop_consumers() -> None:
    """Stop and join every live prefetching thread (each finishes at most the batch it is on)."""
    _EXITING.set()
    for consumer in list(_CONSUMERS):
        while consumer.is_alive():
            _drain(consumer._queue)
            consumer.join(timeout=0.01)


replace(iterators.BackgroundConsumer, "__init__", _stoppable)
