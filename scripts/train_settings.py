"""The fairseq-train options scripts/train.sh uses, fitted to the data, the machine and the environment.

Usage (train.sh runs it): python scripts/train_settings.py ARGS_FILE DATA_BIN SAVE_DIR [EXTRA...]
Writes the options, one per line, to ARGS_FILE (EXTRA, the user's own, come after them and win)
and prints the effective settings. Environment: AMP (0/1; unset: measured), PATIENCE,
BUDGET_HOURS, NPROC (see train.sh).

* Tokenization: OUT/prepare.json of scripts/prepare.py names it; for other data it is detected
  from the dictionary (sentencepiece pieces start with U+2581). It is what --eval-bleu removes.
* Size: the training split's pairs and tokens (from the binarized index) give the updates an
  epoch; validation (and epoch checkpoints) come about every VALIDATE_EVERY updates.
* Stopping: --max-update/--max-epoch in EXTRA are honoured exactly (early stopping only if
  PATIENCE is set). Otherwise the run ends at max(MIN_UPDATES, 9 epochs) updates, or earlier
  after PATIENCE (default 5) validations without a better BLEU. BUDGET_HOURS adds a wall-clock limit.
* Precision on a CPU: bfloat16 autocast only where a short probe (the model's kind of work,
  both precisions, alternating) finds it faster; the result is cached per CPU model, torch
  version and thread count in ~/.cache/fairseq-rnn-seq2seq/precision.json.
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's user_dir, when not pip-installed
from fairseq import criterions, optim  # noqa: E402,F401 (registers fairseq's components)
from fairseq.data import Dictionary, data_utils  # noqa: E402
from fairseq.optim import lr_scheduler  # noqa: E402,F401
from fairseq.registry import REGISTRIES  # noqa: E402

from user_dir.dictionaries import uses_sentencepiece  # noqa: E402
from user_dir.files import atomic_write  # noqa: E402
from user_dir.workflow import language_pair, prepared_record  # noqa: E402

MAX_TOKENS = 2048
VALIDATE_EVERY = 200  # updates between validations, about (whole epochs, or updates for long epochs)
MIN_VALIDATIONS = 5  # a run short in epochs still validates (selects, stops early, shrinks the rate) this often
LONG_EPOCH = 2000  # updates an epoch above which validation and checkpoints go by updates
MIN_UPDATES, EPOCHS = 2000, 9  # default length: max(MIN_UPDATES, EPOCHS epochs); Multi30k: 9 epochs = 2,300
WARMUP = 100  # learning-rate warmup updates, at most a tenth of the run
SMALL = 10_000  # pairs below which the learning rate waits one more validation before it shrinks
BF16_MARGIN = 1.05  # bfloat16 must be this much faster: float32 is exact, and probes are noisy
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fairseq-rnn-seq2seq" / "precision.json"
OURS = {
    "criterion": ("masked_ce", {"--label-smoothing": "0.1"}),
    "optimizer": ("adam", {"--adam-betas": "(0.9, 0.98)"}),
    "lr-scheduler": ("reduce_lr_on_plateau", {"--lr-shrink": "0.5", "--lr-patience": "0", "--warmup-updates": "100"}),
}


def given(extra: list[str], flag: str) -> str | None:
    """The last value EXTRA gives ``flag`` (``--flag V`` or ``--flag=V``), else None."""
    values = [b for a, b in zip(extra, extra[1:]) if a == flag] + [a.split("=", 1)[1] for a in extra
                                                                   if a.startswith(flag + "=")]
    return values[-1] if values else None


def components(extra: list[str], lr_patience: int, warmup: int) -> list[str]:
    """The criterion, optimizer and scheduler with their options; where EXTRA chooses another one,
    only the options that one defines (fairseq-train refuses the others)."""
    args = []
    for kind, (ours, options) in OURS.items():
        if kind == "lr-scheduler":
            options = {**options, "--lr-patience": str(lr_patience), "--warmup-updates": str(warmup)}
        chosen = given(extra, f"--{kind}")
        if chosen is None:
            args += [f"--{kind}", ours]
        elif (component := REGISTRIES[kind.replace("-", "_")]["registry"].get(chosen)) is not None:
            parser = argparse.ArgumentParser()
            component.add_args(parser)  # fairseq's own way to list a component's options
            defined = {option for action in parser._actions for option in action.option_strings}
            options = {k: v for k, v in options.items() if k in defined}
        args += [x for item in options.items() for x in item]
    return args


def env_number(name: str, kind: type, minimum: float, meaning: str) -> float | None:
    text = os.environ.get(name, "")
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < minimum or (kind is float and not math.isfinite(value)):
        raise SystemExit(f"error: {name}={text!r}: {meaning}")
    return value


def corpus(data: Path) -> dict:
    """Tokenization, training pairs and tokens of DATA_BIN (prepare.json where prepare.py made it)."""
    made = prepared_record(data)
    src, tgt = language_pair(data)
    tokenization = made.get("tokenization")
    if tokenization is None:
        pieces = uses_sentencepiece(Dictionary.load(str(data / f"dict.{tgt}.txt")))
        tokenization = "sentencepiece" if pieces else "none"
    sides = [data_utils.load_indexed_dataset(str(data / f"train.{src}-{tgt}.{lang}"), None) for lang in (src, tgt)]
    if sides[0] is None or sides[1] is None:
        raise SystemExit(f"error: {data} holds no training split (train.{src}-{tgt}.*.idx)")
    tokens = int(sum(max(s, t) + 1 for s, t in zip(sides[0].sizes, sides[1].sizes)))
    where = "prepare.json" if made else "detected"
    return {"tokenization": tokenization, "pairs": len(sides[0]), "tokens": tokens, "source": where}


def cpu_name() -> str:
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


def cpu_precision() -> tuple[bool, str]:
    """(bfloat16 autocast?, why) from AMP or the cached probe."""
    amp = os.environ.get("AMP", "")
    if amp not in ("", "0", "1"):
        raise SystemExit(f"error: AMP={amp!r}: 1 forces bfloat16 autocast, 0 float32, unset measures which is faster")
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


def settings(data: Path, save: Path, extra: list[str]) -> tuple[list[str], list[str]]:
    """fairseq-train's options before EXTRA, and the lines that describe them."""
    info = corpus(data)
    nproc = int(env_number("NPROC", int, 1, "the number of processes, a whole number >= 1") or 1)
    patience = env_number("PATIENCE", int, 0, "a whole number of validations >= 0 (0: no early stopping)")
    budget = env_number("BUDGET_HOURS", float, 1e-9, "a number of hours > 0 (unset: no wall-clock limit)")
    max_tokens = int(given(extra, "--max-tokens") or MAX_TOKENS)
    update_freq = int((given(extra, "--update-freq") or "1").split(",")[0])
    per_epoch = max(1, math.ceil(info["tokens"] * 1.15 / (max_tokens * nproc * update_freq)))  # padding ~15%
    sized = [f for f in ("--max-update", "--max-epoch") if given(extra, f) is not None]
    total = min(int(given(extra, "--max-update") or sys.maxsize), int(given(extra, "--max-epoch") or 0) * per_epoch
                or sys.maxsize)
    args = [data.as_posix(), "--save-dir", save.as_posix(), "--arch", "rnn_seq2seq_multi30k"]
    if sized:
        stop = f"{' and '.join(f'{f} {given(extra, f)}' for f in sized)} as given"
        patience = patience or 0
    else:
        updates = total = round(max(MIN_UPDATES, EPOCHS * per_epoch), -2)
        args += ["--max-update", str(updates)]
        stop = f"--max-update {updates} (default: max({MIN_UPDATES}, {EPOCHS} epochs))"
        patience = 5 if patience is None else patience
    early = f"early stopping after {patience} validations without a better BLEU" if patience else "no early stopping"
    stop += f"; {early}"
    stop += f"; wall-clock limit {budget} h" if budget else "; no wall-clock limit"
    args += ["--patience", str(patience)] + (["--stop-time-hours", str(budget)] if budget else [])
    if per_epoch <= LONG_EPOCH:
        # about every VALIDATE_EVERY updates, and at least MIN_VALIDATIONS times in the run
        every = max(1, min(round(VALIDATE_EVERY / per_epoch), total // (MIN_VALIDATIONS * per_epoch)))
        max_epoch = int(given(extra, "--max-epoch") or 0)
        while max_epoch and max_epoch % every:  # the last epoch of a --max-epoch run is validated and saved
            every -= 1
        args += ["--validate-interval", str(every), "--save-interval", str(every)]
        validation = f"every {every} epoch(s)"
    else:
        args += ["--validate-interval-updates", str(VALIDATE_EVERY * 10), "--save-interval-updates",
                 str(VALIDATE_EVERY * 10), "--keep-interval-updates", "5"]
        validation = f"every {VALIDATE_EVERY * 10} updates"
    lr_patience = 1 if info["pairs"] < SMALL else 0
    warmup = min(WARMUP, max(1, total // 10))
    args += components(extra, lr_patience, warmup)
    bleu = ["--eval-bleu", "--eval-bleu-args", '{"beam": 1}', "--best-checkpoint-metric", "bleu",
            "--maximize-best-checkpoint-metric"]
    args += bleu + (["--eval-bleu-remove-bpe", "sentencepiece"] if info["tokenization"] == "sentencepiece" else [])
    if torch.cuda.is_available():
        amp = os.environ.get("AMP", "1") != "0"
        args += ["--fp16"] if amp else []
        precision = "float16 (--fp16, GPU)" if amp else "float32 (AMP=0, GPU)"
    else:
        bf16, why = cpu_precision()
        args += ["--cpu"] + (["--amp"] if bf16 else [])
        precision = f"{'bfloat16 autocast (--amp)' if bf16 else 'float32'}, {why}"
    if nproc > 1:
        backend = ["--distributed-backend", "nccl"] if torch.cuda.is_available() else [
            "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
        args += ["--distributed-world-size", str(nproc * int(os.environ.get("NNODES", "1")))] + backend
    args += ["--lr", "2e-3", "--clip-norm", "1.0", "--max-tokens", str(MAX_TOKENS),
             "--required-batch-size-multiple", "1", "--keep-last-epochs", "5", "--seed", "1",
             "--num-workers", "0", "--log-format", "simple", "--log-interval", "50"]
    lines = [f"data: {data}: {info['pairs']} training pairs, about {per_epoch} updates an epoch; "
             f"tokenization {info['tokenization']} ({info['source']}), removed before validation BLEU",
             f"stop: {stop}",
             f"validation and checkpoints: {validation}; learning rate x0.5 after {lr_patience + 1} "
             f"validation(s) without a better BLEU, {warmup} warmup updates",
             f"precision: {precision}",
             f"processes: {nproc}" + (f" (torchrun; {' '.join(backend)})" if nproc > 1 else "")]
    return args, lines


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    args_file, data, save, *extra = sys.argv[1:]
    args, lines = settings(Path(data).resolve(), Path(save), extra)
    Path(args_file).write_text("".join(a + "\n" for a in args))
    print("".join(f"train.sh: {line}\n" for line in lines), end="")


if __name__ == "__main__":
    main()
