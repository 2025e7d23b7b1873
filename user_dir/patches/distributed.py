"""fairseq 0.12's distributed training on current torch, on CPUs too.

* ``torchrun`` on CPU (gloo): fairseq sets ``device_id = rank % torch.cuda.device_count()``, a
  ZeroDivisionError where there is no GPU. GPU runs are unchanged.
* Resuming with more than one process: rank 0 loads the checkpoint and sends it to the others
  through ``_broadcast_object_slow``, whose ``torch.load`` is ``weights_only`` on torch >= 2.6 and
  refuses the training state's omegaconf config (``DictConfig``). The receiving ranks load it
  with the checkpoint allow-list (``patches.checkpoints``) plus omegaconf's containers and
  nodes, and nothing else: ``weights_only`` stays on.

    torchrun --standalone --nproc-per-node 2 $(which fairseq-train) DATA --user-dir user_dir ... \\
        --cpu --distributed-world-size 2 --distributed-backend gloo --ddp-backend legacy_ddp

(``NPROC=2 bash scripts/train.sh ...`` does this; docs/training.md gives the multi-node command.)
"""
import collections
import os
import typing

import torch
from fairseq.distributed import utils as distributed_utils
from omegaconf import DictConfig, ListConfig, base, nodes

from . import replace
from .checkpoints import safe_globals

# what a fairseq training state's config (OmegaConf.create of a dict) pickles into
CONFIG_GLOBALS = [DictConfig, ListConfig, base.ContainerMetadata, base.Metadata, typing.Any, dict, list, tuple,
                  int, float, bool, str, collections.defaultdict, nodes.AnyNode, nodes.StringNode,
                  nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
                  distributed_utils._TensorPlaceholder]  # broadcast_object sends tensors apart, as these


def _cpu_safe(infer_launch_init):
    def infer_launch_init_cpu_safe(cfg) -> None:
        if torch.cuda.device_count() > 0:
            return infer_launch_init(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0
        cfg.distributed_no_spawn = True  # torchrun made the processes

    return infer_launch_init_cpu_safe


def config_allowed() -> torch.serialization.safe_globals:
    """A context that allows the checkpoint allow-list plus ``CONFIG_GLOBALS`` for ``weights_only``
    loading. It adds only what is not allowed already: leaving it removes what it added, and the
    plugin's permanent globals (``patches.checkpoints``) must stay."""
    allowed = torch.serialization.get_safe_globals()
    return torch.serialization.safe_globals([g for g in safe_globals() + CONFIG_GLOBALS if g not in allowed])


def _config_allowed(broadcast_object_slow):
    def broadcast_object_slow_allowing_config(obj, src_rank, group, dist_device):
        with config_allowed():
            return broadcast_object_slow(obj, src_rank, group, dist_device)

    return broadcast_object_slow_allowing_config


replace(distributed_utils, "_infer_torch_distributed_launch_init", _cpu_safe, level="minimal")
if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5; before, torch.load is not weights_only
    replace(distributed_utils, "_broadcast_object_slow", _config_allowed, level="minimal")
