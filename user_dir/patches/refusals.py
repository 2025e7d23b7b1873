"""fairseq-train and fairseq-interactive end with the plugin's refusal in one line, not a traceback.

The plugin names bad input with one of its errors (:class:`user_dir.errors.Refusal`: options that
cannot build a model, a checkpoint that does not fit, a tokenization option the dictionary
contradicts, a run that diverged, a save folder in use). Both commands (and fairseq-validate,
fairseq-eval-lm) run ``distributed_utils.call_main``;
there the error becomes one line, ``TrainingDiverged: …``, and exit status 1. torchrun's processes
each print theirs. Not reached: fairseq-hydra-train (it imports the plugin inside the ``main`` it
already called, and Hydra reports the error under a shortened traceback), and the processes that
fairseq-train starts itself, one per GPU (torch's spawn shows the process's traceback).
"""
from fairseq.distributed import utils as distributed_utils

from ..errors import Refusal
from . import replace


def in_one_line(error: Refusal) -> SystemExit:
    """The exit that prints ``ErrorName: message`` alone."""
    return SystemExit(f"{type(error).__name__}: {error}")


def _refusals_in_one_line(call_main):
    def call_main_refusing(cfg, main, **kwargs):
        try:
            return call_main(cfg, main, **kwargs)
        except Refusal as e:
            raise in_one_line(e) from None

    return call_main_refusing


replace(distributed_utils, "call_main", _refusals_in_one_line)
