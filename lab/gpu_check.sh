#!/usr/bin/env bash
# The GPU check, one command, under 8 minutes on a machine with a CUDA GPU and no network:
#   1. install fairseq from lab/wheels (lab/gpu_wheels.sh builds it) unless python3 has it,
#   2. the GPU tests (tests/unit/test_gpu.py, test_graphs.py, tests/e2e/test_gpu_cli.py): CUDA
#      against CPU, --decoder-graphs on against off (loss, gradients, beam hypotheses),
#   3. lab/benchmark.py in train.sh's GPU precision (--half: fairseq-train --fp16): rnn_seq2seq with
#      and without attention, each with --decoder-graphs off and on, and fairseq lstm, side by side,
#   4. a short scripts/train.sh run (the attention preset, --decoder-graphs on) and its beam-5
#      decoding of the test split with fairseq-generate.
# Each stage has its own time limit and log; one failing does not stop the next.
#
# Usage: bash lab/gpu_check.sh [DATA_BIN [LOG_DIR]]
#   bash lab/gpu_check.sh                                  # toy data (data/toy), logs in $OUT
#   bash lab/gpu_check.sh runs/multi30k/de-en/bin runs/gpu # prepared data (a Multi30k bin)
# LOG_DIR (default $OUT, else runs/gpu_check) gets summary.txt, {install,prepare,tests,bench,train,
# generate}.log, bench/benchmark.json and test.gen (fairseq-generate's S/T/H/D lines).
# Env: GPU_CHECK_CPU=1 runs the same stages tiny on this machine's CPU in .venv (a dry run of the
# script; also what happens where torch sees no CUDA), WHEELS (default lab/wheels), BENCH_ARGS
# (replace the benchmark's sizes), TRAIN_HOURS (the training's wall-clock limit on a GPU; default 0.01).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-}" in -h|--help) sed -n '2,21p' "$0"; exit 0;; esac
data="${1:-}" out="${2:-${OUT:-$root/runs/gpu_check}}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start_all=$SECONDS

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, output to LOG_DIR/NAME.log
    local name="$1" limit="$2" start=$SECONDS rc=0; shift 2
    timeout -k 5 "$limit" "$@" > "$out/$name.log" 2>&1 || rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s; log $out/$name.log)" | tee -a "$out/summary.txt"
    return "$rc"
}

: > "$out/summary.txt"
cpu="${GPU_CHECK_CPU:-}"
if [ -z "$cpu" ]; then
    python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2> /dev/null && cpu=0 || cpu=1
fi
if [ "$cpu" = 1 ]; then
    echo "no CUDA (or GPU_CHECK_CPU=1): the stages run tiny on the CPU, in .venv" | tee -a "$out/summary.txt"
    source "$root/scripts/env.sh" || exit 1
    export OMP_NUM_THREADS="${GPU_CHECK_THREADS:-1}" AMP=0  # AMP=0: train.sh skips its precision probe
else
    if ! python3 -c 'import fairseq' 2> /dev/null; then
        wheels="${WHEELS:-$root/lab/wheels}" site="$work/site"
        compgen -G "$wheels/*.whl" > /dev/null ||
            { echo "error: no wheels in $wheels: run 'bash lab/gpu_wheels.sh $wheels' where PyPI is reachable" >&2; exit 2; }
        stage install 40 python3 -m pip install --no-index --no-deps --target "$site" "$wheels"/*.whl || exit 1
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
        python3 -c 'import fairseq' > "$out/import.log" 2>&1 || {
            echo "error: fairseq does not import after installing $wheels: $(tail -n 1 "$out/import.log")" \
                 "(add that package's wheel to $wheels; log $out/import.log)" >&2; exit 1; }
    fi
    mkdir -p "$work/bin" && printf '#!/bin/sh\nexec python3 "$@"\n' > "$work/bin/python" && chmod +x "$work/bin/python"
    export PATH="$work/bin:$PATH"  # python is python3: a script, as a link would lose python3's environment
    export VENV=0 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # the plugin, as pip install -e . would give it
    source "$root/scripts/env.sh" || exit 1
    nvidia-smi -L | tee -a "$out/summary.txt"
fi
python -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")' | tee -a "$out/summary.txt"
cd "$root" || exit 1

if [ -z "$data" ]; then  # the toy corpus, binarized here
    data="$work/toy-bin"
    stage prepare 25 fairseq-preprocess --source-lang src --target-lang tgt --joined-dictionary \
        --trainpref data/toy/train --validpref data/toy/valid --testpref data/toy/test --destdir "$data" --workers 2
fi

stage tests 165 python -m pytest -q -rfs -p no:cacheprovider tests/unit/test_gpu.py tests/unit/test_graphs.py \
    tests/e2e/test_gpu_cli.py

if [ "$cpu" = 1 ]; then
    bench=(--emb 16 --hidden 32 --max-tokens 400 --warmup-batches 1 --train-batches 2 --decode-sentences 8
           --decode-len 4)
    train=(--arch rnn_seq2seq --decoder-attention additive --encoder-embed-dim 16 --decoder-embed-dim 16
           --encoder-hidden-size 32 --decoder-hidden-size 32 --max-tokens 400 --max-update 6)
    generate=(--cpu)
else
    bench=(--half --train-batches 20 --decode-sentences 128)
    train=(--arch rnn_seq2seq_attention_multi30k)
    generate=(--fp16)
fi
# shellcheck disable=SC2206  # BENCH_ARGS: several options
[ -n "${BENCH_ARGS:-}" ] && bench=(${BENCH_ARGS})
stage bench 140 python lab/benchmark.py --data "$data" --repeats 1 --graphs "${bench[@]}" --out "$out/bench"

budget=()
[ "$cpu" = 0 ] && budget=(BUDGET_HOURS="${TRAIN_HOURS:-0.01}")
stage train 75 env "${budget[@]}" PATIENCE=0 bash scripts/train.sh "$data" "$work/ckpt" "${train[@]}" \
    --decoder-graphs on --no-epoch-checkpoints
remove_bpe=()
grep -q "▁" "$data"/dict.*.txt && remove_bpe=(--remove-bpe sentencepiece)
stage generate 25 fairseq-generate "$data" --user-dir user_dir --path "$work/ckpt/checkpoint_best.pt" \
    --gen-subset test --beam 5 --batch-size 128 "${remove_bpe[@]}" "${generate[@]}"
grep -E '^[STHD]-' "$out/generate.log" > "$out/test.gen"

echo "--- tests:" && tail -n 4 "$out/tests.log"
echo "--- benchmark:" && sed -n '/^device:/,$p' "$out/bench.log"
echo "--- train:" && grep -E "valid on|done training" "$out/train.log" | tail -n 3
echo "--- generate:" && tail -n 1 "$out/generate.log"
echo "gpu_check: $(grep -c 'exit 0 ' "$out/summary.txt") of $(grep -c ': exit ' "$out/summary.txt") stages passed in" \
    "$((SECONDS - start_all)) s; logs in $out" | tee -a "$out/summary.txt"
