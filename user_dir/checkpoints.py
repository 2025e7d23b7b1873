"""Checkpoint handling that fairseq 0.12 lacks: safe loading, clear errors, atomic copies.

* torch >= 2.6 loads with ``weights_only=True`` (fairseq 0.12 passes nothing), which refuses
  the few non-tensor globals fairseq checkpoints hold: numpy arrays and scalars (validation
  metrics such as ``--eval-bleu`` counts) and ``argparse.Namespace`` (``args`` of older
  checkpoints). Exactly those are allow-listed; arbitrary pickled code stays refused, and
  ``weights_only`` is never switched off.
* A truncated, corrupted or unsafe checkpoint fails with an error naming the file and the
  reason, instead of a pickle traceback.
* fairseq writes the first checkpoint of a save atomically but *copies* it to the others
  (``checkpoint_last.pt``, ``checkpoint_best.pt``); a kill during that copy leaves a half-written
  file. The copy goes through a temporary file and an atomic rename instead.
"""
import argparse
import os
import pickle
import shutil
import zipfile
from functools import wraps

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

# numpy 2 renamed numpy.core to numpy._core
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_NUMPY_DTYPES = (np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64)


def safe_globals() -> list:
    """The globals fairseq checkpoints need beyond torch's defaults."""
    found = [argparse.Namespace, np.ndarray, np.dtype, _MULTIARRAY._reconstruct, _MULTIARRAY.scalar]
    return found + [type(np.dtype(t)) for t in _NUMPY_DTYPES]  # e.g. numpy.dtypes.Float64DType


class CheckpointError(RuntimeError):
    pass


def check_file(path: str) -> None:
    """Raise CheckpointError naming ``path`` if it is missing, truncated or corrupted."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch's format since 1.6; older files are plain pickles
    if is_zip:
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()  # reads every member and checks its CRC
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({e})") from None
        if bad is not None:
            raise CheckpointError(f"checkpoint {path} is corrupted (bad checksum in {bad})")


def _explain_load_errors(load):
    @wraps(load)
    def wrapper(path, *args, **kwargs):
        check_file(path)
        try:
            return load(path, *args, **kwargs)
        except pickle.UnpicklingError as e:
            if "weights_only" in str(e):
                raise CheckpointError(f"checkpoint {path} holds pickled objects that are not allowed "
                                      f"(refused for safety, only trust files you made): {e}") from None
            raise CheckpointError(f"checkpoint {path} is corrupted ({e})") from None
    return wrapper


class _AtomicCopyPathManager(PathManager):
    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(dst_path):
            return PathManager.copy(src_path, dst_path, overwrite)
        tmp = dst_path + ".tmp"
        shutil.copyfile(src_path, tmp)
        os.replace(tmp, dst_path)
        return True


if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4
    torch.serialization.add_safe_globals(safe_globals())
checkpoint_utils.load_checkpoint_to_cpu = _explain_load_errors(checkpoint_utils.load_checkpoint_to_cpu)
checkpoint_utils.PathManager = _AtomicCopyPathManager  # only checkpoint_utils' copies change
