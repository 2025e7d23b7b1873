#!/usr/bin/env bash
# What to run on a machine with a CUDA GPU, in about 8 minutes: the GPU tests, a short Multi30k
# training (train.sh's --fp16) with its beam-5 test decoding, and the benchmark in float32 and
# float16 autocast. Each stage has its own time limit and log; one failing does not stop the next.
#
# Usage: bash lab/gpu_check.sh DATA_BIN OUT_DIR
#   VENV=0 bash lab/gpu_check.sh runs/multi30k/de-en-v4k/bin runs/gpu
# Writes OUT_DIR/{tests,train,generate}.log, OUT_DIR/test.gen (fairseq-generate's S/T/H/D lines:
# score them where the raw references are, `evaluate.py DATA_BIN --generate-log test.gen --ref REF`)
# and OUT_DIR/benchmark_{fp32,fp16}.json. Env: TRAIN_HOURS (default 0.04).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -eq 2 ] || { sed -n '2,10p' "$0"; exit 2; }
source "$root/scripts/env.sh" || exit 1
data="$1" out="$2"
mkdir -p "$out"
ckpt="$(mktemp -d)"
nvidia-smi -L
python -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__, torch.cuda.get_device_name())'

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to OUT_DIR/NAME.log
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - start)) s"
}
stage tests 120 python -m pytest -q -x "$root/tests/unit/test_gpu.py" "$root/tests/e2e/test_gpu_cli.py"
stage train 200 env BUDGET_HOURS="${TRAIN_HOURS:-0.04}" PATIENCE=100 bash "$root/scripts/train.sh" "$data" "$ckpt"
stage generate 40 fairseq-generate "$data" --user-dir "$root/user_dir" --path "$ckpt/checkpoint_best.pt" \
    --gen-subset test --beam 5 --batch-size 128 --remove-bpe sentencepiece --fp16
grep -E '^[STHD]-' "$out/generate.log" > "$out/test.gen"
for precision in fp32 fp16; do
    stage "bench_$precision" 80 python "$root/lab/benchmark.py" --data "$data" --repeats 1 --train-batches 20 \
        --decode-sentences 256 --out "$ckpt/bench_$precision" $([ $precision = fp16 ] && echo --fp16)
    cp "$ckpt/bench_$precision/benchmark.json" "$out/benchmark_$precision.json"
done
tail -n 3 "$out/tests.log" "$out/generate.log"; grep -E "valid on|done training" "$out/train.log" | tail -n 4
tail -n 8 "$out"/bench_*.log
rm -rf "$ckpt"
