#!/usr/bin/env bash
# Train on data made by scripts/prepare.py, selecting the checkpoint by validation BLEU.
#
# Usage: bash scripts/train.sh DATA_BIN SAVE_DIR [EXTRA fairseq-train ARGS...]
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt
#   BUDGET_HOURS=0.25 bash scripts/train.sh runs/multi30k/de-en/bin runs/x --arch rnn_seq2seq_d2l
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/lstm --arch lstm --criterion label_smoothed_cross_entropy
# Env: BUDGET_HOURS wall-clock budget (default 0.5), PATIENCE early stop after this many
# validations without a better BLEU (default 5). Later EXTRA args override the defaults below.
# AMP=0 trains in float32 (default: --fp16 on a GPU, --amp = bfloat16 autocast on a CPU that
# multiplies bfloat16 natively, else float32). Keeps the last 5 epoch checkpoints for
# scripts/average_checkpoints.py. Resumes from SAVE_DIR/checkpoint_last.pt when it exists.
# Paths are relative to the folder it is run from; a second run on one SAVE_DIR is refused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 2 ] || { sed -n '2,14p' "$0"; exit 2; }
source "$root/scripts/env.sh"
data="$1" save="$2"; shift 2
compgen -G "$data/dict.*.txt" > /dev/null ||
    { echo "error: $data holds no fairseq-preprocess output (dict.*.txt); scripts/prepare.py makes it" >&2; exit 2; }
mkdir -p "$save"
precision=$(AMP="${AMP:-1}" python -c '
import os, torch
amp = os.environ["AMP"] != "0"
if torch.cuda.is_available(): print("--fp16" if amp else "")
else: print("--cpu --amp" if amp and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "--cpu")')
fairseq-train "$data" --user-dir "$root/user_dir" $precision \
    --arch rnn_seq2seq_multi30k \
    --criterion masked_ce --label-smoothing 0.1 \
    --optimizer adam --adam-betas '(0.9, 0.98)' --lr 2e-3 --warmup-updates 100 \
    --lr-scheduler reduce_lr_on_plateau --lr-shrink 0.5 --lr-patience 0 \
    --clip-norm 1.0 --max-tokens 2048 --required-batch-size-multiple 1 \
    --eval-bleu --eval-bleu-args '{"beam": 1}' --eval-bleu-remove-bpe sentencepiece \
    --best-checkpoint-metric bleu --maximize-best-checkpoint-metric \
    --patience "${PATIENCE:-5}" --stop-time-hours "${BUDGET_HOURS:-0.5}" \
    --save-dir "$save" --keep-last-epochs 5 --seed 1 \
    --num-workers 0 --log-format simple --log-interval 50 \
    "$@" 2>&1 | tee -a "$save/train.log"
