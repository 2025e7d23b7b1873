"""The processes a training run that scripts/train.sh plans starts: NPROC on each of NNODES machines
through torchrun (gloo on CPUs, NCCL on GPUs); without NPROC, as fairseq-train itself: one per GPU,
one on a CPU. Its precision: :mod:`user_dir.precision`.
"""
import math
import os
import platform
import re
from pathlib import Path


def cpuinfo(field: str) -> str:
    """The first FIELD value of /proc/cpuinfo ("" where there is none, or no such file)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(field)), "")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo's, else the platform's): records name the machine they were made on."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


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


def nodes() -> int:
    """NNODES, the machines torchrun starts processes on (unset: 1)."""
    return int(env_number("NNODES", int, 1, "the number of machines, a whole number >= 1") or 1)


def several_machines(slurm: bool) -> bool:
    """Whether the run spans several machines: NNODES > 1 where train.sh starts it (torchrun, or one
    machine); under fairseq's own SLURM start (SLURM, no NPROC) SLURM_NNODES, as fairseq reads it
    (several where it is not 1)."""
    if slurm and env_number("NPROC", int, 1, "the number of processes, a whole number >= 1") is None:
        return os.environ.get("SLURM_NNODES") != "1"
    return nodes() > 1


def world(gpus: int, given: int | None, slurm: bool) -> tuple[int, bool]:
    """The processes fairseq-train trains in (on GPUS GPUs; 0: the CPU) and whether torchrun starts
    them: NPROC on each of NNODES machines, else fairseq-train's own (--distributed-world-size
    GIVEN, at most one per GPU; unset, one per GPU). SLURM (fairseq's own multi-node): as GIVEN."""
    nproc = env_number("NPROC", int, 1, "the number of processes, a whole number >= 1")
    nnodes = nodes()
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
