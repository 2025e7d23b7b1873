"""Let torch >= 2.6's ``weights_only`` loader read fairseq checkpoints, and nothing more.

fairseq 0.12 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means
``weights_only=True``, which refuses the few non-tensor globals fairseq checkpoints hold:
numpy arrays and scalars (validation metrics such as ``--eval-bleu`` counts) and
``argparse.Namespace`` (``args`` of older checkpoints). This allow-lists exactly those;
arbitrary pickled code stays refused, and ``weights_only`` is never switched off.
"""
import argparse

import numpy as np
import torch

# numpy 2 renamed numpy.core to numpy._core
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_NUMPY_DTYPES = (np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64)


def safe_globals() -> list:
    """The globals fairseq checkpoints need beyond torch's defaults."""
    found = [argparse.Namespace, np.ndarray, np.dtype]
    found += [type(np.dtype(t)) for t in _NUMPY_DTYPES]  # e.g. numpy.dtypes.Float64DType
    return found + [_MULTIARRAY._reconstruct, _MULTIARRAY.scalar]


if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4
    torch.serialization.add_safe_globals(safe_globals())
