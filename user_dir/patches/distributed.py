"""Let ``torchrun`` drive CPU training (gloo): fairseq 0.12 sets ``device_id = rank %
torch.cuda.device_count()``, a ZeroDivisionError where there is no GPU. GPU runs are unchanged.

    torchrun --nproc_per_node 2 $(which fairseq-train) DATA --user-dir user_dir ... \\
        --cpu --distributed-world-size 2 --distributed-backend gloo --ddp-backend legacy_ddp
"""
import os

import torch
from fairseq.distributed import utils as distributed_utils

from . import replace


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


replace(distributed_utils, "_infer_torch_distributed_launch_init", _cpu_safe)
