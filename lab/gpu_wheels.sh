#!/usr/bin/env bash
# Build the folder of wheels that lab/gpu_check.sh installs fairseq from on a GPU machine without
# network (Python 3.12, x86_64 Linux; its torch, sentencepiece, sacrebleu, pytest and tensorboard
# are already there). Run it where PyPI is reachable; the versions are constraints.txt's.
#
# Usage: bash lab/gpu_wheels.sh [DIR]     (default lab/wheels, git-ignored: pass it to the device
#                                          tool's carry list)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/lab/wheels}"
mkdir -p "$dir"
pin() { grep -E "^$1==" "$root/constraints.txt" || { echo "error: $1 is not pinned in constraints.txt" >&2; exit 2; }; }
# binary wheels for the GPU machine's interpreter, whatever this machine runs
pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$dir" "$(pin ve-fairseq)" "$(pin hydra-core)" "$(pin omegaconf)" "$(pin bitarray)" \
    "$(pin pytest-xdist)" "$(pin execnet)"  # the GPU tests in parallel processes (pure Python)
# antlr4-python3-runtime 4.9.3 has no wheel on PyPI: build one (pure Python, any interpreter)
pip wheel --no-deps --wheel-dir "$dir" "$(pin antlr4-python3-runtime)"
ls -l "$dir"
du -sh "$dir"
