"""Checkpoint handling that fairseq 0.12 lacks: safe loading, clear errors, atomic copies.

* torch >= 2.6 loads with ``weights_only=True`` (fairseq 0.12 passes nothing), which refuses
  the few non-tensor globals fairseq checkpoints hold: numpy arrays and scalars (validation
  metrics such as ``--eval-bleu`` counts) and ``argparse.Namespace`` (``args`` of older
  checkpoints). Exactly those are allow-listed; arbitrary pickled code stays refused, and
  ``weights_only`` is never switched off.
* Before a local checkpoint is loaded, :func:`user_dir.checkpoint_files.check_file` checks its
  archive (the scripts call it too). Any failure to load is a ``CheckpointError`` naming the file
  and the reason. Paths that fairseq's ``PathManager`` resolves (remote stores) are loaded as
  fairseq loads them.
* fairseq saves a checkpoint through the fixed name ``FILE.tmp`` and *copies* it to the others
  (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place, so a kill during a copy leaves a
  half-written file and a link planted at ``FILE.tmp`` receives the save. Both go through
  :func:`user_dir.files.atomic_write` instead (exclusive random temporary name, then rename).
* One training run per ``--save-dir``: a second one is refused while the first runs, instead of
  both writing a mix of checkpoints.
* A checkpoint that holds pickled code is recognised by the globals its pickle names (read from
  the archive, whatever torch's message says), and named with them; torch's advice to switch
  ``weights_only`` off is never shown.
* Resuming (or ``--restore-file``) with model options or dictionaries other than the
  checkpoint's names, in one line, the options that differ and change the model's parameters
  (each tried alone on the checkpoint's config), instead of fairseq's "ensure that the
  architectures match"; options that change no parameter (dropout) are not named, and fairseq
  resumes with them as it does.
* ``--model-overrides`` sets only the options a checkpoint's config holds: one of the model's
  options added after the checkpoint was written (``--decoder-graphs`` on an older model) was
  ignored without a word; it is set too.
"""
import argparse
import ast
import copy
import os
import shutil
import time
from typing import Iterable, Optional

import numpy as np
import torch
from fairseq import checkpoint_utils, models
from fairseq.file_io import PathManager
from fairseq.trainer import Trainer
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError

from ..checkpoint_files import (
    CheckpointError,
    check_file,
    essence,
    note_file,
    pickled_globals,
    refused_globals,
    shown,
)
from ..files import FolderBusy, atomic_write, lock_folder, remove_orphans
from . import replace

# numpy 2 renamed numpy.core to numpy._core
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_NUMPY_DTYPES = (np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64)


def safe_globals() -> list:
    """The globals fairseq checkpoints need beyond torch's defaults."""
    found = [argparse.Namespace, np.ndarray, np.dtype, _MULTIARRAY._reconstruct, _MULTIARRAY.scalar]
    return found + [type(np.dtype(t)) for t in _NUMPY_DTYPES]  # e.g. numpy.dtypes.Float64DType


def model_name(arch: Optional[str]) -> Optional[str]:
    """The registered model of an --arch preset (a config's ``model._name``): rnn_seq2seq_d2l -> rnn_seq2seq."""
    return models.ARCH_MODEL_NAME_REGISTRY.get(arch, arch)


def override_new_options(cfg, overrides: Optional[dict]) -> None:
    """Set each of ``overrides`` that is an option of the checkpoint's model (its dataclass) but
    missing from the config ``cfg`` it was saved with: fairseq overrides only the keys there."""
    if not overrides or not OmegaConf.is_config(cfg) or cfg.get("model") is None:
        return
    model = cfg.model
    dataclass = models.MODEL_DATACLASS_REGISTRY.get(model_name(getattr(model, "_name", None)))
    if dataclass is None:
        return
    with open_dict(model):
        for key, value in overrides.items():
            if key in dataclass.__dataclass_fields__ and key not in model:
                model[key] = value


def _explain_load_errors(load):
    def load_checkpoint_to_cpu(path, arg_overrides=None, *args, **kwargs):
        if not PathManager.path_requires_pathmanager(path):
            check_file(path)
        try:
            state = load(path, arg_overrides, *args, **kwargs)
        except CheckpointError:
            raise
        except Exception as e:  # torch's and pickle's errors name neither the file nor the cause
            name = shown(path)  # for a link of fairseq_ensemble's, the checkpoint it stands for
            allowed = [f"{g.__module__}.{g.__qualname__}" for g in safe_globals()]
            refused = refused_globals(pickled_globals(path), allowed) if os.path.isfile(path) else []
            if refused:
                raise CheckpointError(f"checkpoint {name} holds pickled objects that are not allowed (refused "
                                      "for safety, only trust files you made): Unsupported global(s) "
                                      f"{', '.join(refused)}") from None
            if type(e) is KeyError and e.args == ("best_loss",):  # fairseq's upgrade of a dict without its entries
                raise CheckpointError(f"checkpoint {name} is not a fairseq checkpoint: it has no {essence(e)} entry "
                                      "(fairseq-train's hold 'model', 'cfg' and 'optimizer_history'; a torch.save of a "
                                      "state_dict or of another object is not one)") from None
            raise CheckpointError(f"checkpoint {name} could not be loaded ({type(e).__name__}: {essence(e)})") from e
        override_new_options(state.get("cfg"), arg_overrides)
        note_file(state, path)
        return state

    load_checkpoint_to_cpu.__wrapped__ = load
    return load_checkpoint_to_cpu


def copy_atomic(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """Copy so that readers see the old file or the new one, never a part (``atomic_write``)."""
    if os.path.lexists(dst_path) and not overwrite:
        return False
    with atomic_write(dst_path) as out, open(src_path, "rb") as src:
        shutil.copyfileobj(src, out)
    return True


def save_retried(obj, filename: str, tries: int = 3, pause: float = 2.5) -> None:
    """fairseq's tries of ``torch.save``, each into a new file of its own (``atomic_write``): fairseq's
    own wrote a try after the part a failed one left, a checkpoint torch cannot read."""
    for attempt in range(tries):
        try:
            with atomic_write(filename) as f:
                try:
                    return torch.save(obj, f)
                except RuntimeError:  # torch's words for a short write ("unexpected pos"): a byte more gets
                    f.write(b"\0")    # the system's (a full disk), which atomic_write names with the path
                    f.flush()
                    raise
        except Exception:
            if attempt == tries - 1:
                raise
            time.sleep(pause)


def _atomic_saves(save):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not isinstance(filename, str) or PathManager.path_requires_pathmanager(filename):
            return save(obj, filename, async_write)
        save_retried(obj, filename)  # fairseq's own goes through the fixed name FILENAME.tmp

    return torch_persistent_save


def _one_writer(verify):
    def verify_checkpoint_directory(save_dir: str) -> None:
        """Create ``save_dir`` and hold its lock for this training run (fairseq calls this on the
        master rank only, before anything is saved); fairseq's own check wrote a file named
        ``dummy`` there, which a second run could race and a planted link could redirect."""
        if PathManager.path_requires_pathmanager(save_dir):
            return verify(save_dir)
        try:
            lock_folder(save_dir, "fairseq-train")
        except FolderBusy as e:
            raise FolderBusy(f"--save-dir {e}") from None
        remove_orphans(save_dir)  # left by a killed save; the lock says no save is under way

    return verify_checkpoint_directory


def _atomic_copies(path_manager):
    class AtomicCopyPathManager(path_manager):
        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            if path_manager.path_requires_pathmanager(src_path) or path_manager.path_requires_pathmanager(dst_path):
                return path_manager.copy(src_path, dst_path, overwrite)
            return copy_atomic(src_path, dst_path, overwrite)

    return AtomicCopyPathManager


def as_dict(cfg) -> dict:
    """A config section as a dict: an OmegaConf config (interpolations resolved where they can be),
    an argparse Namespace (fairseq's components without a dataclass: sgd, --arch lstm), or None."""
    if isinstance(cfg, argparse.Namespace):
        return vars(cfg)
    if not OmegaConf.is_config(cfg):
        return dict(cfg or {})
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError:  # e.g. ${task.max_source_positions} in a config without its task
        return OmegaConf.to_container(cfg, resolve=False)


def _same_value(a, b) -> bool:
    """Equal as options: "(0.9, 0.98)" (a Namespace's or the command line's) and [0.9, 0.98] (YAML's) too."""
    def value(x):
        if isinstance(x, str) and x.startswith(("(", "[")):
            try:
                x = ast.literal_eval(x)
            except (ValueError, SyntaxError):
                return x
        return tuple(x) if isinstance(x, (list, tuple)) else x
    return value(a) == value(b)


def option_differences(saved, current, keys: Optional[Iterable[str]] = None, name: Optional[str] = None) -> list[str]:
    """``--name VALUE (this command: OTHER)`` for every option (of ``keys``, if given) that the two
    configs give differently; ``name``: the option a ``_name`` field is (``--criterion``)."""
    saved, current = as_dict(saved), as_dict(current)
    differ = {key for key in saved.keys() & current.keys() if not _same_value(saved[key], current[key])}
    def flag(key: str) -> str:
        return f"--{name if key == '_name' and name else key.lstrip('_').replace('_', '-')}"

    return [f"{flag(key)} {_shown(saved[key])} (this command: {_shown(current[key])})"
            if not isinstance(saved[key], bool) and not isinstance(current[key], bool) else
            f"{_switch(flag(key), saved[key])} (this command: {_switch(flag(key), current[key])})"
            for key in sorted(differ if keys is None else differ & set(keys))]


def _shown(value):
    """An option's value as it is given on the command line: a list of one (--lr) as its item."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _switch(flag: str, on: Optional[bool]) -> str:
    """A switch as the command line gives it: FLAG, or ``no FLAG`` (off or unset)."""
    return flag if on else f"no {flag}"


def _parameter_shapes(model_cfg, task) -> Optional[dict]:
    """Name -> shape of every parameter and buffer of the model ``model_cfg`` describes (None: it cannot be built)."""
    try:
        model = models.build_model(copy.deepcopy(model_cfg), task)
    except Exception:
        return None
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def model_changing(saved, current, task) -> list[str]:
    """The options that ``current`` gives otherwise than the checkpoint's ``saved`` and that, each
    alone, change the model's parameters (names or shapes): sizes, cell, layers, attention,
    tying... not dropout, which a resumed run may change (fairseq loads such a checkpoint)."""
    before, now = as_dict(saved), as_dict(current)
    shapes = _parameter_shapes(saved, task)
    changing = []
    for key in sorted(k for k in before.keys() & now.keys() if not _same_value(before[k], now[k])):
        probe = copy.deepcopy(saved)
        if isinstance(probe, argparse.Namespace):  # --arch lstm and other models without a dataclass
            setattr(probe, key, now[key])
        else:
            with open_dict(probe):
                probe[key] = now[key]
        if shapes is None or _parameter_shapes(probe, task) != shapes:
            changing.append(key)
    return changing


def misfit(filename: str, cause: Exception, model_cfg, task, saved=None) -> CheckpointError:
    """Why the checkpoint ``filename`` (its model config ``saved``, read when None) does not load into
    the model of ``model_cfg``: the model's own check (dictionaries, direction), else the options that
    differ and change its parameters, else ``cause``. Resuming (Trainer) and train.sh's check of a
    complete run (scripts/train_settings.py) both say it in these words."""
    named = f"checkpoint {filename}: "  # the model's refusals open with it too (checkpoint_files.named_file)
    if isinstance(cause, ValueError):  # the model's own check (dictionaries) says what differs
        return CheckpointError(named + str(cause).removeprefix(named))
    if saved is None:
        saved = checkpoint_utils.load_checkpoint_to_cpu(filename)["cfg"]["model"]
    kinds = [model_name(as_dict(cfg).get("_name")) for cfg in (saved, model_cfg)]  # _name: the --arch preset
    if None not in kinds and kinds[0] != kinds[1]:  # another model: its options are not this one's
        what = f"it holds a {kinds[0]} model (this command: {kinds[1]})"
    else:
        differ = option_differences(saved, model_cfg, model_changing(saved, model_cfg, task), name="arch")
        what = ("it was trained with " + ", ".join(differ)) if differ else essence(cause).removeprefix(named)
    return CheckpointError(f"checkpoint {filename} does not fit the model of this command: {what}; use the "
                           "checkpoint's options, or another --save-dir (train.sh: SAVE_DIR) for a new model")


def _name_what_differs(load_checkpoint):
    def load_checkpoint_naming_differences(self, filename, *args, **kwargs):
        try:
            return load_checkpoint(self, filename, *args, **kwargs)
        except CheckpointError:
            raise
        except Exception as e:  # fairseq's "ensure that the architectures match", the cause chained under it
            cause = e.__cause__ or e.__context__
            if type(e) is not Exception or cause is None:
                raise
            raise misfit(filename, cause, self.cfg.model, self.task) from None

    return load_checkpoint_naming_differences


# every level, "minimal" too: not a replacement, and fairseq 0.12 cannot load its checkpoints without it
if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4; adding twice changes nothing
    torch.serialization.add_safe_globals(safe_globals())
replace(checkpoint_utils, "load_checkpoint_to_cpu", _explain_load_errors)
replace(checkpoint_utils, "PathManager", _atomic_copies)  # only checkpoint_utils' copies change
replace(checkpoint_utils, "torch_persistent_save", _atomic_saves)
replace(checkpoint_utils, "verify_checkpoint_directory", _one_writer)
replace(Trainer, "load_checkpoint", _name_what_differs)
