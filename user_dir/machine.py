"""What the machine and the environment give a training run that scripts/train.sh plans: the
precision (AMP, or a short probe of bfloat16 autocast on a CPU, cached) and the processes (NPROC
and NNODES through torchrun, else fairseq-train's own start).

* Precision on a CPU: bfloat16 autocast only where a short probe (the model's kind of work,
  both precisions, alternating) finds it faster; the result is cached per CPU model, torch
  version and thread count in ~/.cache/fairseq-rnn-seq2seq/precision.json. On a GPU: --fp16.
  A resumed run keeps its checkpoint's precision unless AMP is set.
* Processes: NPROC on each of NNODES machines through torchrun (gloo on CPUs, NCCL on GPUs);
  without NPROC, as fairseq-train itself: one per GPU, one on a CPU.
"""
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import torch

from .files import atomic_write

BF16_MARGIN = 1.05  # bfloat16 must be this much faster: float32 is exact, and probes are noisy
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fairseq-rnn-seq2seq" / "precision.json"
CPU_CHOICES = [["--cpu"], ["--cpu", "--amp"]]  # the precision options a CPU may get (precision())


def env_number(name: str, kind: type, minimum: float, meaning: str) -> float | None:
    """The environment variable NAME as a KIND >= MINIMUM (None: unset), in ASCII digits as train.sh's
    bash reads it too (Python alone would take "2_0" as 20), else one line with MEANING."""
    text = os.environ.get(name, "")
    if not text:
        return None
    try:
        value = kind(text) if text.isascii() and "_" not in text and text.strip() == text else None
    except ValueError:
        value = None
    if value is None or value < minimum or (kind is float and not math.isfinite(value)):
        raise SystemExit(f"error: {name}={text!r}: {meaning}")
    return value


def cpu_name() -> str:
    """The CPU's model name: a key of the precision cache."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def workload(bf16: bool, steps: int = 12) -> float:
    """Seconds of one forward and backward of the kind of work rnn_seq2seq_multi30k does (recurrent
    512-wide matrix products over steps, a 4k-word output layer), in float32 or bfloat16 autocast."""
    g = torch.Generator().manual_seed(0)
    x, w, u = (torch.randn(shape, generator=g) * 0.05 for shape in ((64, 512), (512, 1536), (512, 1536)))
    out = torch.randn(512, 4000, generator=g) * 0.05
    for p in (w, u, out):
        p.requires_grad_(True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h, states = torch.zeros(64, 512), []
        for _ in range(steps):
            gates = x @ w + h @ u
            h = torch.tanh(gates[:, :512]) * torch.sigmoid(gates[:, 512:1024])
            states.append(h)
        loss = torch.logsumexp(torch.cat(states) @ out, dim=-1).float().mean()
    loss.backward()
    return time.perf_counter() - start


def probe(rounds: int = 3, repeats: int = 3) -> dict:
    """Throughput of bfloat16 autocast relative to float32 (median of alternating rounds)."""
    workload(False), workload(True)  # warm-up: first calls pick kernels
    times = {False: [], True: []}
    for _ in range(rounds):
        for bf16 in (False, True):
            times[bf16].append(sum(workload(bf16) for _ in range(repeats)))
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"bf16_speedup": round(median[False] / median[True], 3)}


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


def cpu_precision(measure: bool = True) -> tuple[bool | None, str]:
    """(bfloat16 autocast?, why) from AMP or the cached probe; (None, why) when only a probe can tell
    and MEASURE is false."""
    amp = amp_setting()
    if amp:
        return amp == "1", f"AMP={amp}"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "this CPU has no bfloat16 instructions"
    key = f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    try:
        cache = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    how = "cached"
    if key not in cache and not measure:
        return None, f"not measured yet on {key}"
    if key not in cache:
        cache[key], how = probe(), "measured now"
        try:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(CACHE, "w") as f:  # concurrent runs never read half a file
                f.write(json.dumps(cache, indent=2))
        except OSError:
            how += ", not cached"
    speedup = cache[key]["bf16_speedup"]
    return speedup >= BF16_MARGIN, f"probe: bfloat16 at {speedup:.2f}x float32's speed on {key} ({how}, {CACHE})"


def precision(gpu: bool, measure: bool = True, saved: dict | None = None) -> tuple[list[str] | None, str]:
    """fairseq-train's precision options for training on a GPU or the CPU and AMP, and why; None when
    only a probe can tell and MEASURE is false. Without AMP, a resumed run (SAVED) keeps its checkpoint's."""
    amp = amp_setting()
    kept = resumed_precision(saved["cfg"]["common"]) if saved and saved["optimizer"] and not amp else None
    if kept is not None:
        return kept, f"as {saved['path']} was trained"
    if gpu:
        return ([], "AMP=0, GPU") if amp == "0" else (["--fp16"], "GPU")
    bf16, why = cpu_precision(measure)
    return (None if bf16 is None else CPU_CHOICES[bf16]), why


def precision_name(fp16: bool, amp: bool) -> str:
    """How the plan names a precision."""
    return "float16 (--fp16)" if fp16 else "bfloat16 autocast (--amp)" if amp else "float32"


def world(gpus: int, given: int | None, slurm: bool) -> tuple[int, bool]:
    """The processes fairseq-train trains in (on GPUS GPUs; 0: the CPU) and whether torchrun starts
    them: NPROC on each of NNODES machines, else fairseq-train's own (--distributed-world-size
    GIVEN, at most one per GPU; unset, one per GPU). SLURM (fairseq's own multi-node): as GIVEN."""
    nproc = env_number("NPROC", int, 1, "the number of processes, a whole number >= 1")
    nnodes = int(env_number("NNODES", int, 1, "the number of machines, a whole number >= 1") or 1)
    if nproc is None and nnodes > 1:
        raise SystemExit(f"error: NNODES={nnodes} without NPROC: give NPROC too, the processes on each machine "
                         "(torchrun starts them)")
    if nnodes > 1 and not rendezvous(os.environ.get("TORCHRUN_ARGS", "")):
        raise SystemExit(f"error: NNODES={nnodes} without a rendezvous: give TORCHRUN_ARGS=\"--rdzv-backend c10d "
                         "--rdzv-endpoint HOST:PORT --rdzv-id NAME\" (the same on every machine; docs/training.md)")
    if nproc is None and slurm:
        return given or max(1, gpus), False
    if nproc is None:
        size = max(1, gpus) if given is None else given
        if size > max(1, gpus):
            raise SystemExit(f"error: --distributed-world-size {given}: fairseq-train starts its own processes one per "
                             f"GPU, and {gpus} GPU(s) train here" + (
                                 f"; on the CPU, NPROC={given} starts them through torchrun" if not gpus else ""))
        return size, False
    if gpus and nproc > gpus:
        raise SystemExit(f"error: NPROC={nproc}: {gpus} GPU(s) here, and each process trains on one of its own "
                         "(--cpu: processes on the CPU)")
    size = int(nproc) * nnodes
    if given is not None and given != size:
        raise SystemExit(f"error: --distributed-world-size {given}: train.sh starts NPROC x NNODES = {size} "
                         "process(es) (torchrun gives fairseq-train that number): leave the option out")
    return size, size > 1


def rendezvous(torchrun_args: str) -> bool:
    """True when torchrun's options (or its PET_ variables) meet other machines: an endpoint or a
    master address, and not --standalone (one machine)."""
    endpoint = re.search(r"--(rdzv[-_]endpoint|master[-_]addr)\b", torchrun_args) or any(
        name in os.environ for name in ("PET_RDZV_ENDPOINT", "PET_MASTER_ADDR"))
    return bool(endpoint) and "--standalone" not in torchrun_args


def distributed(size: int, gpus: int) -> list[str]:
    """fairseq-train's options for SIZE processes on GPUS GPUs (0: the CPU), the size always given:
    fairseq's default is one per visible GPU, even with --cpu."""
    backend = ["nccl"] if gpus else ["gloo", "--ddp-backend", "legacy_ddp"]
    return ["--distributed-world-size", str(size)] + (["--distributed-backend", *backend] if size > 1 else [])
