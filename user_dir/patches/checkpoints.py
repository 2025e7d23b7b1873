"""Checkpoint handling that fairseq 0.12 lacks: safe loading, clear errors, atomic copies.

* torch >= 2.6 loads with ``weights_only=True`` (fairseq 0.12 passes nothing), which refuses
  the few non-tensor globals fairseq checkpoints hold: numpy arrays and scalars (validation
  metrics such as ``--eval-bleu`` counts) and ``argparse.Namespace`` (``args`` of older
  checkpoints). Exactly those are allow-listed; arbitrary pickled code stays refused, and
  ``weights_only`` is never switched off.
* Before a local checkpoint is loaded its archive is checked without inflating anything: every
  member stored uncompressed (as torch writes them) inside the file's own size, under one
  top-level folder, and with an intact checksum. Any failure to load is a :class:`CheckpointError`
  naming the file and the reason. Paths that fairseq's ``PathManager`` resolves (remote stores)
  are loaded as fairseq loads them.
* fairseq saves a checkpoint through the fixed name ``FILE.tmp`` and *copies* it to the others
  (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place, so a kill during a copy leaves a
  half-written file and a link planted at ``FILE.tmp`` receives the save. Both go through
  :func:`user_dir.files.atomic_write` instead (exclusive random temporary name, then rename).
* One training run per ``--save-dir``: a second one is refused while the first runs, instead of
  both writing a mix of checkpoints.
"""
import argparse
import os
import shutil
import stat
import zipfile

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

from ..files import FolderBusy, atomic_write, lock_folder, remove_orphans
from . import replace

# numpy 2 renamed numpy.core to numpy._core
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_NUMPY_DTYPES = (np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64)


def safe_globals() -> list:
    """The globals fairseq checkpoints need beyond torch's defaults."""
    found = [argparse.Namespace, np.ndarray, np.dtype, _MULTIARRAY._reconstruct, _MULTIARRAY.scalar]
    return found + [type(np.dtype(t)) for t in _NUMPY_DTYPES]  # e.g. numpy.dtypes.Float64DType


class CheckpointError(RuntimeError):
    pass


def check_archive(path: str, z: zipfile.ZipFile) -> None:
    """Refuse a torch zip whose members could not have been written by ``torch.save``."""
    size = os.path.getsize(path)
    infos = z.infolist()
    tops = sorted({info.filename.split("/", 1)[0] for info in infos})
    if len(tops) > 1:  # torch.save writes every member under one folder
        raise CheckpointError(f"checkpoint {path} has an unexpected member name {tops[1]!r} beside {tops[0]!r}")
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/"):
            raise CheckpointError(f"checkpoint {path} has an unexpected member name {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CheckpointError(f"checkpoint {path} has a link member {name!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CheckpointError(f"checkpoint {path} has a compressed member {name!r} (torch.save stores members)")
    if sum(info.file_size for info in infos) > size:
        raise CheckpointError(f"checkpoint {path} claims more data than its {size} bytes hold (crafted or corrupted)")


def check_file(path: str) -> None:
    """Raise CheckpointError naming ``path`` if it is missing, truncated, corrupted or crafted."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch's format since 1.6; older files are plain pickles
    if not is_zip:
        return
    try:
        with zipfile.ZipFile(path) as z:
            check_archive(path, z)
            bad = z.testzip()  # reads every (stored) member and checks its CRC
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({e})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupted (bad checksum in {bad})")


def essence(error: Exception) -> str:
    """The line of a (often multi-line) torch error that says what is wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = [line for line in lines if line.startswith(("Unsupported", "Expected", "PytorchStreamReader"))]
    return (detail or lines or [repr(error)])[0]


def _explain_load_errors(load):
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        if not PathManager.path_requires_pathmanager(path):
            check_file(path)
        try:
            return load(path, *args, **kwargs)
        except CheckpointError:
            raise
        except Exception as e:  # torch's and pickle's errors name neither the file nor the cause
            refused = [line for line in str(e).splitlines() if "Unsupported global" in line]
            if refused:
                raise CheckpointError(f"checkpoint {path} holds pickled objects that are not allowed "
                                      f"(refused for safety, only trust files you made): {refused[0].strip()}") from None
            raise CheckpointError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {essence(e)})") from e

    load_checkpoint_to_cpu.__wrapped__ = load
    return load_checkpoint_to_cpu


def copy_atomic(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """Copy so that readers see the old file or the new one, never a part (``atomic_write``)."""
    if os.path.lexists(dst_path) and not overwrite:
        return False
    with atomic_write(dst_path) as out, open(src_path, "rb") as src:
        shutil.copyfileobj(src, out)
    return True


def _atomic_saves(save):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not isinstance(filename, str) or PathManager.path_requires_pathmanager(filename):
            return save(obj, filename, async_write)
        with atomic_write(filename) as f:  # fairseq's own goes through the fixed name FILENAME.tmp
            checkpoint_utils._torch_persistent_save(obj, f)

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


if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4; adding twice changes nothing
    torch.serialization.add_safe_globals(safe_globals())
replace(checkpoint_utils, "load_checkpoint_to_cpu", _explain_load_errors)
replace(checkpoint_utils, "PathManager", _atomic_copies)  # only checkpoint_utils' copies change
replace(checkpoint_utils, "torch_persistent_save", _atomic_saves)
replace(checkpoint_utils, "verify_checkpoint_directory", _one_writer)
