"""Does train.sh's precision probe pick the faster precision on this CPU? Its pick (a fresh cache)
against both precisions' steady speed in fairseq-train, alternating rounds: a speed check, so it
lives here and not in the tests (tests/unit/test_precision_probe.py tests the pick's logic).

A preset's words/s through train.sh with AMP=0 and AMP=1 in its third and fourth epochs, once every
batch has been seen (bfloat16's kernels are made per shape: the first epoch is slower). The pick is
right when it is float32 and bfloat16 is under BF16_MARGIN (1.3x) faster, or bfloat16 and it is
over; within 10 % of the margin either pick is right. Exit status 1 when the pick is wrong.

Usage, from the repository root after `source scripts/env.sh` (train.sh's threads), on a small prepared corpus
(few batches, so few shapes), alone on the machine:
    python lab/precision_check.py DATA_BIN [--rounds 2] [-- --arch rnn_seq2seq_attention_multi30k]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from user_dir.precision import BF16_MARGIN  # noqa: E402

SCRIPTS = ROOT / "scripts"


def run(*command, env: dict) -> str:
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(map(str, command))} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def steady_wps(data_bin: Path, save: Path, amp: str, arch: list[str]) -> float:
    """Words/s of ARCH through train.sh in its third and fourth epochs."""
    log = run("bash", SCRIPTS / "train.sh", data_bin, save, *arch, "--max-epoch", "4", "--max-tokens", "1024",
              "--log-interval", "1", "--log-format", "json", "--disable-validation", "--no-save", env={"AMP": amp})
    updates = [json.loads(line.split(" | train_inner | ", 1)[1]) for line in log.splitlines()
               if " | train_inner | " in line]
    steady = [u for u in updates if int(u["epoch"]) > 2]
    if not steady:
        raise SystemExit(f"error: train.sh logged no update of epochs 3 and 4 for AMP={amp}:\n{log[-2000:]}")
    return sum(float(u["wpb"]) for u in steady) / sum(float(u["wpb"]) / float(u["wps"]) for u in steady)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_bin", type=Path)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of AMP=0 and AMP=1 (default 2)")
    args, arch = p.parse_known_args()
    arch = [a for a in arch if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        settings = run("python", SCRIPTS / "train_settings.py", tmp / "args", args.data_bin, tmp / "s", *arch,
                       "--max-tokens", "1024", env={"XDG_CACHE_HOME": str(tmp / "cache")})
        plan = next(line for line in settings.splitlines() if "precision:" in line)
        print(plan)
        speed = {"0": [], "1": []}
        for round_ in range(args.rounds):
            for amp in ("0", "1"):
                speed[amp].append(steady_wps(args.data_bin, tmp / f"{amp}{round_}", amp, arch))
                print(f"round {round_ + 1}, AMP={amp}: {speed[amp][-1]:.0f} words/s", flush=True)
    ratio = max(speed["1"]) / max(speed["0"])
    picked_bf16 = "precision: bfloat16 autocast" in plan
    close = abs(ratio - BF16_MARGIN) <= 0.10 * BF16_MARGIN
    right = close or picked_bf16 == (ratio > BF16_MARGIN)
    print(f"bfloat16 / float32, best of {args.rounds}: {ratio:.2f}x; the probe picked "
          f"{'bfloat16' if picked_bf16 else 'float32'}: {'right' if right else 'WRONG'}"
          + (f" (within 10 % of the {BF16_MARGIN}x margin: either is right)" if close else ""))
    sys.exit(0 if right else 1)


if __name__ == "__main__":
    main()
