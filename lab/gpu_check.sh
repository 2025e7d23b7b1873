#!/usr/bin/env bash
# The GPU check, one command, under 8 minutes on a machine with a CUDA GPU and no network:
#   1. install fairseq from lab/wheels (lab/gpu_wheels.sh builds it) unless python3 has it,
#   2. the GPU unit tests (tests/unit/test_gpu.py): CUDA against CPU, --decoder-graphs on against off
#      (loss, gradients, beam hypotheses),
#   3. lab/benchmark.py in train.sh's GPU precision (--half: fairseq-train --fp16): rnn_seq2seq with
#      and without attention, each with --decoder-graphs off and on, and fairseq lstm, side by side
#      (a model whose worker fails or passes 45 s is listed as failed; the others are measured),
#   4. fairseq-train on the GPU (tests/e2e/test_gpu_cli.py), with and without --decoder-graphs,
#   5. a short scripts/train.sh run (the attention preset, --decoder-graphs on) and its beam-5
#      decoding of the test split with fairseq-generate.
# Each stage has its own time limit and log; one failing does not stop the next; no stage runs past
# GPU_DEADLINE_S (default 470) seconds after the start.
#
# Usage: bash lab/gpu_check.sh [DATA_BIN [LOG_DIR]]
#   bash lab/gpu_check.sh                                  # toy data (data/toy)
#   bash lab/gpu_check.sh runs/multi30k/de-en/bin runs/gpu # prepared data (a Multi30k bin)
# LOG_DIR (new or empty; default runs/gpu_check/DATE-TIME) gets summary.txt,
# {install,prepare,tests,bench,cli_tests,train,generate}.log, bench/benchmark.json and test.gen
# (fairseq-generate's S/T/H/D lines); where $OUT is set (a job runner's results), $OUT/gpu_check.tar.gz
# holds them all and $OUT/gpu_check.summary.txt the summary.
# Env: GPU_CHECK_CPU=1 runs the same stages tiny on this machine's CPU in .venv (a dry run of the
# script; also what happens where torch sees no CUDA), WHEELS (default lab/wheels), BENCH_ARGS
# (replace the benchmark's sizes), TRAIN_HOURS (the training's wall-clock limit on a GPU; default
# 0.01), GPU_DEADLINE_S (0: none).
set -uo pipefail
case "${1:-}" in -h|--help) sed -n '2,25p' "$0"; exit 0;; esac
source "$(dirname "$0")/gpu_env.sh"
data="${1:-}"
if [ -n "$data" ]; then
    compgen -G "$data/dict.*.txt" > /dev/null && data="$(cd "$data" && pwd)" ||
        { echo "error: $data holds no fairseq-preprocess output (dict.*.txt): give PREPARED/bin" >&2; exit 2; }
fi
: "${GPU_DEADLINE_S:=470}"  # under 8 minutes, whatever each stage takes
gpu_setup gpu_check "${2:-}"

if [ -z "$data" ]; then  # the toy corpus, binarized here
    data="$work/toy-bin"
    stage prepare 25 fairseq-preprocess --source-lang src --target-lang tgt --joined-dictionary \
        --trainpref data/toy/train --validpref data/toy/valid --testpref data/toy/test --destdir "$data" --workers 2
fi

# -v: a stage stopped at its limit still names the tests that ran; on a GPU in parallel processes (pytest-xdist,
# from the wheels where the image lacks it), which share the GPU
parallel=()
[ "$cpu" = 0 ] && python -c 'import xdist' 2> /dev/null && parallel=(-n 4 --dist worksteal)
stage tests 100 python -m pytest -v -rfs "${parallel[@]}" -p no:cacheprovider tests/unit/test_gpu.py

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
# a worker that hangs (a capture, say) loses its own model's figures only: runs.jsonl keeps the others'
stage bench 130 python lab/benchmark.py --data "$data" --repeats 1 --graphs --worker-timeout 45 "${bench[@]}" \
    --out "$out/bench"

stage cli_tests 120 python -m pytest -v -rfs --durations=0 "${parallel[@]}" -p no:cacheprovider \
    tests/e2e/test_gpu_cli.py

budget=()
[ "$cpu" = 0 ] && budget=(BUDGET_HOURS="${TRAIN_HOURS:-0.01}")
stage train 75 env "${budget[@]}" PATIENCE=0 bash scripts/train.sh "$data" "$work/ckpt" "${train[@]}" \
    --decoder-graphs on --no-epoch-checkpoints
remove_bpe=()
grep -q "▁" "$data"/dict.*.txt && remove_bpe=(--remove-bpe sentencepiece)
stage generate 25 fairseq-generate "$data" --user-dir user_dir --path "$work/ckpt/checkpoint_best.pt" \
    --gen-subset test --beam 5 --batch-size 128 "${remove_bpe[@]}" "${generate[@]}"
grep -E '^[STHD]-' "$out/generate.log" > "$out/test.gen"

echo "--- tests:" && tail -n 1 "$out/tests.log" "$out/cli_tests.log"
echo "--- benchmark:" && sed -n '/^device:/,$p' "$out/bench.log"
echo "--- train:" && grep -E "valid on|done training" "$out/train.log" | tail -n 3
echo "--- generate:" && tail -n 1 "$out/generate.log"
finish
