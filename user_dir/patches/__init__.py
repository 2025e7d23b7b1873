"""Every repair of fairseq 0.12 that the plugin makes, one module each, applied on import.

* ``checkpoints``: torch >= 2.6 ``weights_only`` loading of fairseq checkpoints (a small
  allow-list, never switched off), one clear error per damaged or unsafe file, atomic copies to
  ``checkpoint_last.pt``/``checkpoint_best.pt``.
* ``batching``: no sentence is dropped when a split's size is not a multiple of
  ``--required-batch-size-multiple`` (fairseq issues #5036, #5351).
* ``distributed``: ``torchrun`` on CPU (fairseq divides the rank by the GPU count).
* ``decoding``: fairseq-interactive, ``translate()`` and fairseq-generate answer an empty,
  all-unknown or over-long sentence with an empty translation, refuse a beam below 1 and a
  sentencepiece model that did not make the dictionaries.
* ``divergence``: a non-finite training loss or validation metric ends the run with a clear
  error; it never becomes ``checkpoint_best.pt``.
* ``amp``: ``--amp`` on CPU trains, validates and decodes under bfloat16 autocast (fairseq's
  ``--amp`` knows only CUDA's float16).
* ``shutdown``: fairseq-train ends with status 0, not SIGABRT, when it stops mid-epoch (its batch
  prefetching thread is stopped and joined before the interpreter exits).

Each patch goes through :func:`replace`, so importing or reloading a module twice never wraps
a function twice.
"""
from typing import Any, Callable

_ORIGINAL = "__fairseq_original__"


def replace(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Set ``owner.name = make(original)``, where ``original`` is fairseq's own object even when
    ``owner.name`` is already a replacement made here (re-import, ``importlib.reload``)."""
    current = getattr(owner, name)
    original = getattr(current, _ORIGINAL, current)
    new = make(original)
    setattr(new, _ORIGINAL, original)
    setattr(owner, name, new)


def original(obj: Any) -> Any:
    """fairseq's object behind a replacement (``obj`` itself if it is not one)."""
    return getattr(obj, _ORIGINAL, obj)


from . import amp, batching, checkpoints, decoding, distributed, divergence, shutdown  # noqa: E402,F401  (they use replace)
