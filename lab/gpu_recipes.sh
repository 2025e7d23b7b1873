#!/usr/bin/env bash
# The README's Multi30k recipes on a GPU, by the same updates as on the CPU: each recipe trains
# with scripts/train.sh (on a GPU its precision is --fp16) and is scored by scripts/evaluate.py on
# the validation and test splits (beam 5; the no-attention pair as an ensemble, beam 10). The
# recipes run one after another, so each one's training time is its own; RECIPES_PARALLEL=1 trains
# them all at once instead (each uses a few percent of a GPU: one visit gets every row's scores, and
# each training's seconds, taken under the others' load, are an upper bound of its own).
#   attn          rnn_seq2seq_attention_multi30k, 2,563 updates
#   pair          rnn_seq2seq_multi30k, seeds 1 and 2, 2,300 updates each: seed 1 alone and the ensemble
#   lstm          fairseq lstm with attention at matched sizes, 2,411 updates
#   transformer   fairseq transformer_iwslt_de_en, 3+3 layers, 256 wide, lr 1e-3, 2,563 updates
#
# Usage: bash lab/gpu_recipes.sh PREPARED RECIPE...
#   bash lab/gpu_recipes.sh runs/multi30k/de-en attn       # PREPARED: made by scripts/prepare.py
#   GPU_CHECK_CPU=1 bash lab/gpu_recipes.sh "" attn pair   # a dry run on this CPU: the toy corpus, 3 updates
#   bash lab/gpu_recipes.sh --list                         # each training's train.sh options
# LOG_DIR (env; new or empty, default runs/gpu_recipes/DATE-TIME) gets summary.txt, one log per
# stage, NAME_{valid,test}.json and NAME_{valid,test}.hyp; where $OUT is set (the device tool),
# $OUT/gpu_recipes.tar.gz holds them all and $OUT/gpu_recipes.summary.txt the summary.
# Env: LOG_DIR, RECIPES_UPDATES (every recipe stops there instead: a dry run), RECIPES_PARALLEL=1,
# GPU_DEADLINE_S (default 560: inside one 600-second device call; 0: none), WHEELS, GPU_CHECK_CPU.
set -uo pipefail
declare -A train_args=(  # results.md, "Reproducing the headline"
    [attn]="--arch rnn_seq2seq_attention_multi30k --max-update 2563"
    [s1]="--max-update 2300"
    [s2]="--max-update 2300 --seed 2"
    [lstm]="--arch lstm --criterion label_smoothed_cross_entropy --encoder-embed-dim 256 --encoder-hidden-size 512
            --decoder-embed-dim 256 --decoder-hidden-size 512 --decoder-out-embed-dim 512 --max-update 2411"
    [transformer]="--arch transformer_iwslt_de_en --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256
                   --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024
                   --share-decoder-input-output-embed --lr 1e-3 --max-update 2563"
)
case "${1-}" in
    -h|--help) sed -n '2,21p' "$0"; exit 0;;
    # shellcheck disable=SC2086  # the options, one line
    --list) for name in attn s1 s2 lstm transformer; do echo "$name:" ${train_args[$name]}; done; exit 0;;
esac
[ $# -ge 2 ] || { echo "error: give PREPARED (\"\" for the toy corpus) and one or more recipes (attn, pair, lstm," \
                       "transformer): bash $0 PREPARED RECIPE... (--help: more)" >&2; exit 2; }
data="$1"; shift
recipes=("$@")
for name in "${recipes[@]}"; do
    case "$name" in attn|pair|lstm|transformer) ;;
        *) echo "error: unknown recipe '$name': choose from attn, pair, lstm, transformer" >&2; exit 2;; esac
done
parallel="${RECIPES_PARALLEL:-0}"
case "$parallel" in 0|1) ;;
    *) echo "error: RECIPES_PARALLEL=${RECIPES_PARALLEL}: 1 trains the recipes at once, 0 one after another" >&2
       exit 2;; esac
if [ -n "$data" ]; then
    [ -f "$data/prepare.json" ] && data="$(cd "$data" && pwd)" ||
        { echo "error: $data has no prepare.json: give a folder made by scripts/prepare.py" >&2; exit 2; }
fi
source "$(dirname "$0")/gpu_env.sh"
: "${GPU_DEADLINE_S:=560}"
gpu_setup gpu_recipes "${LOG_DIR:-}"

updates=() decode=()
if [ "$cpu" = 1 ]; then
    updates=(--max-update "${RECIPES_UPDATES:-3}")
    decode=(-- --max-len-b 10)  # an untrained model: short hypotheses
elif [ -n "${RECIPES_UPDATES:-}" ]; then
    updates=(--max-update "$RECIPES_UPDATES")
fi
if [ -z "$data" ]; then  # the toy corpus, prepared here
    data="$work/toy"
    stage prepare 60 python scripts/prepare.py --raw-dir data/toy --src src --tgt tgt --vocab-size 60 \
        --splits train=train valid=valid test=test --out "$data" || exit 1
fi
echo "data: $data; recipes: ${recipes[*]}; ${updates[*]:---max-update as in each recipe}" | tee -a "$out/summary.txt"

train() {  # train NAME SECONDS: train.sh with the recipe's options, checkpoints in the work folder
    # shellcheck disable=SC2086  # the recipe's options, split on whitespace
    stage "train_$1" "$2" bash scripts/train.sh "$data/bin" "$work/$1" ${train_args[$1]} "${updates[@]}"
}

evaluate() {  # evaluate NAME CHECKPOINTS BEAM: valid and test scores and hypotheses
    local subset
    for subset in valid test; do
        stage "eval_${1}_$subset" 90 python scripts/evaluate.py "$data/bin" "$2" --subset "$subset" --beam "$3" \
            --json "$out/${1}_$subset.json" --hyp-out "$out/${1}_$subset.hyp" "${decode[@]}"
    done
}

seed1() {  # the pair's first seed, trained and scored alone
    train s1 270 && evaluate s1 "$work/s1/checkpoint_best.pt" 5
}

recipe() {  # recipe NAME: its training(s) and scores
    case "$1" in
        pair)
            local s2=0 first
            if [ "$parallel" = 1 ]; then
                seed1 & first=$!
                train s2 270 || s2=$?
                wait "$first"
            else
                seed1
                train s2 270 || s2=$?
            fi
            [ "$s2" = 0 ] && [ -f "$work/s1/checkpoint_best.pt" ] &&
                evaluate ensemble "$work/s1/checkpoint_best.pt:$work/s2/checkpoint_best.pt" 10;;
        *)
            train "$1" 330 && evaluate "$1" "$work/$1/checkpoint_best.pt" 5;;
    esac
}

if [ "$parallel" = 1 ]; then
    trainings=$(( ${#recipes[@]} + $(grep -o pair <<< "${recipes[*]}" | wc -l) ))  # pair: two
    [ "$cpu" = 1 ] || export OMP_NUM_THREADS=$(( $(nproc) / trainings > 0 ? $(nproc) / trainings : 1 ))
    echo "trained together: $trainings trainings at once, $OMP_NUM_THREADS threads each; each one's seconds" \
         "include the others' load" | tee -a "$out/summary.txt"
fi
for name in "${recipes[@]}"; do
    if [ "$parallel" = 1 ]; then recipe "$name" & else recipe "$name"; fi  # stopped at exit: stop_jobs
done
wait

for log in "$out"/train_*.log; do
    [ -f "$log" ] || continue
    echo "$(basename "$log" .log): $(grep -ho 'done training in [0-9.]* seconds' "$log" | tail -n 1)"
done | tee -a "$out/summary.txt"
for scores in "$out"/*_test.json "$out"/*_valid.json; do
    [ -f "$scores" ] || continue
    python -c 'import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], "BLEU", s["bleu"], "chrF2", s["chrf"])' \
        "$scores" "$(basename "$scores" .json)"
done | tee -a "$out/summary.txt"
finish
