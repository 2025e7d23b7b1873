"""fairseq user directory: ``--user-dir user_dir`` registers ``rnn_seq2seq`` and ``masked_ce``.

fairseq auto-imports only ``models/`` and ``tasks/`` of a user dir, so the criterion is
imported here. ``patches`` repairs fairseq 0.12 where it breaks on current torch or loses data
(checkpoint loading and copies, the last batch of a split, torchrun on CPU); registering applies
them, before any checkpoint is loaded or batch is made (``RNN_SEQ2SEQ_PATCHES=minimal``: only those
fairseq 0.12 needs to run on current torch).

Registering imports fairseq (seconds): the package registers at once where fairseq is loaded (as
under ``--user-dir``), otherwise as soon as fairseq has been imported and no module of the package
is half-loaded, so that the scripts' fairseq-free helpers (``files``, ``text``, ``workflow``,
``data_folder``, ``prepared``, ``checkpoint_files``) load without it.
"""
import importlib.abc
import importlib.util
import sys
import threading


def _register() -> None:
    from . import criterions, models, patches  # noqa: F401


class _WhenFairseqIsLoaded(importlib.abc.MetaPathFinder):
    """Registers once fairseq has been imported and no module of this package is being executed:
    registering imports ``models``, which imports names of the other modules, so it must not run
    while one of them is half-loaded (e.g. ``import user_dir.hub`` first, which imports fairseq).
    Stays in place until registering succeeds (a failed attempt fails that import and the next one)."""

    def __init__(self) -> None:
        self.executing = 0  # modules of this package being executed
        self.asking = threading.local()  # find_spec's own look-up through the other finders

    def find_spec(self, fullname, path, target=None):
        if getattr(self.asking, "now", False) or not (fullname == "fairseq" or fullname.startswith(__name__ + ".")):
            return None
        self.asking.now = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.asking.now = False
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module = self._then_register(spec.loader.exec_module, own=fullname != "fairseq")
        return spec

    def _then_register(self, exec_module, own: bool):
        def exec_then_register(module) -> None:
            self.executing += own
            try:
                exec_module(module)
            finally:
                self.executing -= own
            if not self.executing and "fairseq" in sys.modules and self in sys.meta_path:
                sys.meta_path.remove(self)  # first: registering imports modules of this package
                try:
                    _register()
                except BaseException:
                    sys.meta_path.insert(0, self)
                    raise
        return exec_then_register


if "fairseq" in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _WhenFairseqIsLoaded())
