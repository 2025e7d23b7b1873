"""The precision scripts/train.sh trains in: AMP, a resumed checkpoint's, --fp16 on a GPU, or on a
CPU with bfloat16 instructions, whichever of float32 and bfloat16 autocast trains *this model* faster.

* The CPU's choice is measured: fairseq-train's own updates of the planned model (criterion,
  optimizer, clipping) on training batches drawn by fairseq's iterator, a dozen in each precision.
  Whether bfloat16 pays depends on the model as much as on the CPU: a stand-in workload picked
  bfloat16 for a model that trained slower in it (docs/training.md, "Precision by measurement").
* The result is cached in ~/.cache/fairseq-rnn-seq2seq/precision.json, keyed by the CPU model,
  torch version, thread count and the work (the model's layers and options, the criterion's and
  optimizer's options, the batches' shapes).
"""
import hashlib
import itertools
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from .files import atomic_write
from .machine import cpu_name, cpuinfo

BF16_MARGIN = 1.3  # bfloat16 must be this much faster in the probe: float32 is exact, and the probe's dozen
# updates read bfloat16 faster than a long fairseq-train run finds it (docs/training.md)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fairseq-rnn-seq2seq" / "precision.json"
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16"}  # /proc/cpuinfo flags bfloat16 runs on
GIVEN_PRECISION = ("fp16", "amp", "memory_efficient_fp16")  # fairseq-train options that set it (--bf16: refused)
CPU_CHOICES = [["--cpu"], ["--cpu", "--amp"]]  # the precision options a CPU may get (float32, bfloat16 autocast)


@dataclass(frozen=True)
class Workload:
    """What a probe times: NAME (with the CPU, torch and threads) keys the cache; STEP(bf16, i) does
    the work of set I of SETS in float32 or bfloat16 autocast and returns its seconds (set 0 warms up)."""
    name: str
    sets: int
    step: Callable[[bool, int], float]


def cpu_key() -> str:
    """The CPU's model name, its bfloat16 instructions and oneDNN's settings: a key of the precision cache
    (CPUs of one name can differ in these, and the settings change bfloat16's speed)."""
    flags = set(cpuinfo("flags").split()) & BF16_FLAGS
    onednn = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("ONEDNN_", "DNNL_"))]
    return " ".join([cpu_name(), *sorted(flags), *onednn])


def training_samples(cfg: DictConfig, task, model: torch.nn.Module, count: int) -> list[dict]:
    """COUNT batches of the training split drawn by fairseq's iterator (its batching and filtering of
    the dataset it loads, shuffled by the seed), again from the start when an epoch holds fewer."""
    from fairseq import utils

    task.load_dataset(cfg.dataset.train_subset, epoch=1, combine=True)
    batches = task.get_batch_iterator(
        dataset=task.dataset(cfg.dataset.train_subset), max_tokens=cfg.dataset.max_tokens,
        max_sentences=cfg.dataset.batch_size, ignore_invalid_inputs=True, seed=cfg.common.seed,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions(), cfg.dataset.max_tokens),
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple)
    samples = []
    while len(samples) < count:
        epoch = batches.next_epoch_itr(shuffle=True)
        if not len(epoch):
            raise ValueError("no training batch")  # train_settings refuses this plan before
        samples += itertools.islice(epoch, count - len(samples))
    return samples


def described(node: object) -> str:
    """A config as YAML (a legacy model's argparse options, which hold the whole command, as nothing)."""
    return OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else ""


def training_work(cfg: DictConfig, task, model: torch.nn.Module, sets: int = 5, size: int = 3) -> Workload:
    """fairseq-train's updates of MODEL as CFG plans them (task.train_step, gradient scaling and
    clipping, the learning rate of update 0, the optimizer's step; --amp's optimizer wrapper for
    bfloat16) on SETS of SIZE training batches; the name digests all that sets their speed."""
    from fairseq import optim
    from fairseq.optim import lr_scheduler

    samples = training_samples(cfg, task, model, sets * size)
    criterion = task.build_criterion(cfg.criterion)  # task.train_step puts the model in training mode
    params = [p for p in [*model.parameters(), *criterion.parameters()] if p.requires_grad]
    optimizers = {False: optim.build_optimizer(cfg.optimizer, params),
                  True: optim.AMPOptimizer.build_optimizer(cfg, params)}
    for optimizer in optimizers.values():
        lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, optimizer).step_update(0)
    shapes = [tuple(s["net_input"]["src_tokens"].shape) + tuple(s["target"].shape) for s in samples]
    what = repr((model, criterion, type(optimizers[False]).__name__, cfg.optimization.clip_norm, shapes,
                 *(described(node) for node in (cfg.model, cfg.criterion, cfg.optimizer))))

    def step(bf16: bool, i: int) -> float:
        optimizer = optimizers[bf16]
        start = time.perf_counter()
        for sample in samples[i * size:(i + 1) * size]:
            _, sample_size, _ = task.train_step(sample, model, criterion, optimizer, update_num=0)
            optimizer.multiply_grads(1 / max(sample_size, 1))
            optimizer.clip_grad_norm(cfg.optimization.clip_norm)
            optimizer.step()
            optimizer.zero_grad()
        return time.perf_counter() - start

    name = f"{cfg.model._name} on {len(samples)} training batches ({hashlib.sha256(what.encode()).hexdigest()[:10]})"
    return Workload(name, sets, step)


def probe(work: Workload) -> dict:
    """Throughput of bfloat16 autocast relative to float32 on WORK: all its sets in float32, then all
    in bfloat16 (so that no bfloat16 work runs before float32's), set 0 untimed; 0 when bfloat16's
    gradients were not finite (the --amp path stops such a run)."""
    seconds = {}
    with warnings.catch_warnings():  # fairseq 0.12's CUDA autocast notes in task.train_step
        warnings.simplefilter("ignore")
        for bf16 in (False, True):
            try:
                work.step(bf16, 0)  # warm-up: thread pools, the optimizer's state
                seconds[bf16] = sum(work.step(bf16, i) for i in range(1, work.sets))
            except FloatingPointError:
                return {"bf16_speedup": 0.0, "note": "bfloat16's gradients were not finite"}
    return {"bf16_speedup": round(seconds[False] / seconds[True], 3)}


def amp_setting() -> str:
    """AMP: "1", "0" or "" (unset), anything else refused in one line, on every device."""
    amp = os.environ.get("AMP", "")
    if amp not in ("", "0", "1"):
        raise SystemExit(f"error: AMP={amp!r}: 1 forces bfloat16 autocast on a CPU (float16 on a GPU), 0 float32, "
                         "unset chooses (measured on a CPU, float16 on a GPU)")
    return amp


def resumed_precision(common) -> list[str] | None:
    """The precision options of a checkpoint's COMMON config that this machine can train with (None: none)."""
    gpu = torch.cuda.is_available()
    if common.get("fp16") or common.get("memory_efficient_fp16"):
        return ["--fp16"] if gpu else None
    if common.get("bf16"):
        return None
    return (["--amp"] if common.get("amp") else []) if gpu else CPU_CHOICES[bool(common.get("amp"))]


def precision(gpu: bool, saved: dict | None = None, several: bool = False,
              given: dict | None = None) -> tuple[list[str] | None, str]:
    """fairseq-train's precision options on a GPU or the CPU, and why; None where only a probe can tell
    (:func:`measured_precision`). Without AMP, a resumed run (SAVED) keeps its checkpoint's, one on
    SEVERAL machines trains in float32 (each would measure on its own, and might pick another), and
    one whose GIVEN options set the precision needs no probe (those options win)."""
    amp = amp_setting()
    kept = resumed_precision(saved["cfg"]["common"]) if saved and saved["optimizer"] and not amp else None
    if kept is not None:
        return kept, f"as {saved['path']} was trained"
    if gpu:
        return ([], "AMP=0, GPU") if amp == "0" else (["--fp16"], "GPU")
    if amp:
        return CPU_CHOICES[amp == "1"], f"AMP={amp}"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return CPU_CHOICES[0], "this CPU has no bfloat16 instructions"
    if several:
        return CPU_CHOICES[0], "several machines, unmeasured (AMP=1: bfloat16 autocast on all)"
    if any((given or {}).get(option) for option in GIVEN_PRECISION):
        return CPU_CHOICES[0], "as given in the options"
    return None, "measured"


def measured_precision(work: Workload) -> tuple[list[str], str]:
    """The CPU's faster precision for WORK, and why: from the cache, else probed now (and cached)."""
    key = f"{cpu_key()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {work.name}"
    try:
        cache = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}  # a damaged cache is measured again, never trusted
    entry = cache.get(key)
    how = "cached"
    speedup = entry.get("bf16_speedup") if isinstance(entry, dict) else None
    if not (type(speedup) in (int, float) and math.isfinite(speedup) and speedup >= 0):
        print("train.sh: timing bfloat16 autocast against float32 on a few updates of this model (once per CPU, "
              "torch, threads, model and options; AMP=0 or AMP=1 chooses without it)", file=sys.stderr, flush=True)
        cache[key], how = probe(work), "measured now"
        try:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(CACHE, "w") as f:  # concurrent runs never read half a file
                f.write(json.dumps(cache, indent=2))
        except OSError:
            how += ", not cached"
    entry = cache[key]
    found = entry.get("note") or f"bfloat16 at {entry['bf16_speedup']:.2f}x float32's speed"
    return (CPU_CHOICES[entry["bf16_speedup"] >= BF16_MARGIN],
            f"probe: {found} (bfloat16 from {BF16_MARGIN}x) on {key} ({how}, {CACHE})")


def precision_name(fp16: bool, amp: bool) -> str:
    """How the plan names a precision."""
    return "float16 (--fp16)" if fp16 else "bfloat16 autocast (--amp)" if amp else "float32"
