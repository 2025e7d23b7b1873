"""Every repair of fairseq 0.12 that the plugin makes, one module each, applied on import.

* ``checkpoints``: torch >= 2.6 ``weights_only`` loading of fairseq checkpoints (a small
  allow-list, never switched off), one clear error per damaged or unsafe file, atomic copies to
  ``checkpoint_last.pt``/``checkpoint_best.pt``.
* ``batching``: no sentence is dropped when a split's size is not a multiple of
  ``--required-batch-size-multiple`` (fairseq issues #5036, #5351).
* ``distributed``: ``torchrun`` on CPU (fairseq divides the rank by the GPU count).
* ``generation``: the decode paths refuse generation options that fairseq would assert on,
  ``--post-process`` schemes and sentencepiece models that do not fit the dictionary, and raw
  words typed into a model of pieces.
* ``decoding``: fairseq-interactive, ``translate()`` and fairseq-generate answer an empty,
  all-unknown or over-long sentence with an empty translation; diverse beam search and
  ``--no-repeat-ngram-size`` on a CPU do what they say.
* ``divergence``: a non-finite training loss or validation metric ends the run with a clear
  error; it never becomes ``checkpoint_best.pt``.
* ``amp``: ``--amp`` on CPU trains, validates and decodes under bfloat16 autocast (fairseq's
  ``--amp`` knows only CUDA's float16).
* ``refusals``: the plugin's refusals of bad input (:class:`user_dir.errors.Refusal`) end
  fairseq-train and fairseq-interactive with their one line, not a traceback.
* ``shutdown``: fairseq-train ends with status 0, not SIGABRT, when it stops mid-epoch (its batch
  prefetching thread is stopped and joined before the interpreter exits).

Each patch goes through :func:`replace`, with the level it belongs to, so importing or reloading
a module twice never wraps a function twice. ``RNN_SEQ2SEQ_PATCHES=minimal`` in the environment
keeps only the ``minimal`` ones (without which fairseq 0.12 cannot run on current torch);
``all`` (the default) keeps every one. docs/options.md lists each replacement.
"""
import importlib
import logging
import os
from typing import Any, Callable

logger = logging.getLogger(__name__)

_ORIGINAL = "__fairseq_original__"
VARIABLE = "RNN_SEQ2SEQ_PATCHES"
LEVELS = ("minimal", "all")  # a level keeps its own replacements and those of the levels before it


class PatchLevelError(SystemExit, ValueError):
    """``RNN_SEQ2SEQ_PATCHES`` holds a value that is not a level: a command ends with its one line
    (a SystemExit, no traceback); Python code catches it as a ValueError."""


def chosen_level() -> str:
    """The level ``RNN_SEQ2SEQ_PATCHES`` names (unset or empty: ``all``)."""
    value = os.environ.get(VARIABLE) or "all"
    if value not in LEVELS:
        raise PatchLevelError(f"error: {VARIABLE}={value!r}: allowed values are 'all' (the default: every repair) and "
                              "'minimal' (only those fairseq 0.12 needs to run on current torch)")
    return value


LEVEL = chosen_level()
# "Owner.name" -> (owner, name, level) of every replacement in place; kept across importlib.reload
APPLIED: dict[str, tuple[Any, str, str]] = globals().get("APPLIED", {})


def _label(owner: Any, name: str) -> str:
    short = owner.__qualname__ if isinstance(owner, type) else owner.__name__.removeprefix("fairseq.")
    return f"{short}.{name}"


def replace(owner: Any, name: str, make: Callable[[Any], Any], level: str = "all") -> None:
    """Set ``owner.name = make(original)`` when ``level`` is within :data:`LEVEL`, where
    ``original`` is fairseq's own object even when ``owner.name`` is already a replacement made
    here (re-import, ``importlib.reload``); otherwise leave (or put back) fairseq's own."""
    assert level in LEVELS, level
    current = getattr(owner, name)
    original = getattr(current, _ORIGINAL, current)
    if LEVELS.index(level) > LEVELS.index(LEVEL):
        if current is not original:
            setattr(owner, name, original)
        APPLIED.pop(_label(owner, name), None)
        return
    new = make(original)
    setattr(new, _ORIGINAL, original)
    setattr(owner, name, new)
    APPLIED[_label(owner, name)] = (owner, name, level)


def original(obj: Any) -> Any:
    """fairseq's object behind a replacement (``obj`` itself if it is not one)."""
    return getattr(obj, _ORIGINAL, obj)


def summary() -> str:
    """One line naming the level and every replacement in place."""
    return f"rnn_seq2seq patches: {LEVEL} ({len(APPLIED)} replacements of fairseq: {', '.join(APPLIED)})"


# refusals before generation, which imports it, before decoding, which imports generation: reloads apply
# them in the order of the first import
from . import amp, batching, checkpoints, refusals, generation, decoding, distributed, divergence, shutdown  # noqa: E402, I001

if "_ANNOUNCED" in globals():  # importlib.reload of the package: its modules again, at the level read now
    for _module in (amp, batching, checkpoints, refusals, generation, decoding, distributed, divergence, shutdown):
        importlib.reload(_module)
if globals().get("_ANNOUNCED") != summary():  # once per process, again only if a reload changed it
    _ANNOUNCED = summary()
    logger.info(_ANNOUNCED)
