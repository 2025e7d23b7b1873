"""fairseq user directory: ``--user-dir user_dir`` registers ``rnn_seq2seq`` and ``masked_ce``.

fairseq auto-imports only ``models/`` and ``tasks/`` of a user dir, so the criterion is
imported here. ``patches`` repairs fairseq 0.12 where it breaks on current torch or loses data
(checkpoint loading and copies, the last batch of a split, torchrun on CPU); registering applies
them, before any checkpoint is loaded or batch is made (``RNN_SEQ2SEQ_PATCHES=minimal``: only those
fairseq 0.12 needs to run on current torch).

Registering imports fairseq (seconds): the package registers at once where fairseq is loaded (as
under ``--user-dir``), otherwise the moment fairseq is first imported, so that the scripts'
fairseq-free helpers (``files``, ``text``, ``workflow``) load without it.
"""
import importlib.abc
import importlib.util
import sys
from typing import Callable


def _register() -> None:
    from . import criterions, models, patches  # noqa: F401


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``then`` once the module ``name`` has been imported (the first time; then steps aside)."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # by the other finders
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then(module) -> None:
                exec_module(module)
                self.then()

            spec.loader.exec_module = exec_then
        return spec


if "fairseq" in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _AfterImport("fairseq", _register))
