#!/usr/bin/env bash
# Train on data made by scripts/prepare.py, selecting the checkpoint by validation BLEU.
#
# Usage: bash scripts/train.sh DATA_BIN SAVE_DIR [EXTRA fairseq-train ARGS...]
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt
#   BUDGET_HOURS=0.25 bash scripts/train.sh runs/multi30k/de-en/bin runs/x --arch rnn_seq2seq_d2l
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/lstm --arch lstm --criterion label_smoothed_cross_entropy
# Env: BUDGET_HOURS wall-clock budget (default 0.5), PATIENCE early stop after this many
# validations without a better BLEU (default 5). Later EXTRA args override the defaults below;
# another --criterion, --optimizer or --lr-scheduler keeps only the defaults' options it defines.
# AMP=0 trains in float32 (default: --fp16 on a GPU, --amp = bfloat16 autocast on a CPU that
# multiplies bfloat16 natively, else float32). Keeps the last 5 epoch checkpoints for
# scripts/average_checkpoints.py. Resumes from SAVE_DIR/checkpoint_last.pt when it exists.
# Paths are relative to the folder it is run from; a second run on one SAVE_DIR is refused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 2 ] || { sed -n '2,15p' "$0"; exit 2; }
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
# The criterion, optimizer and scheduler, with options of theirs. EXTRA may choose another one
# (e.g. --lr-scheduler inverse_sqrt): then only the options that one defines are kept, since
# fairseq-train refuses the others ("unrecognized arguments").
components=$(python - "$@" <<'PY'
import argparse
import sys

from fairseq import criterions, optim  # noqa: F401 (registers fairseq's components)
from fairseq.optim import lr_scheduler  # noqa: F401
from fairseq.registry import REGISTRIES

OURS = {
    "criterion": ("masked_ce", {"--label-smoothing": "0.1"}),
    "optimizer": ("adam", {"--adam-betas": "(0.9, 0.98)"}),
    "lr-scheduler": ("reduce_lr_on_plateau", {"--lr-shrink": "0.5", "--lr-patience": "0", "--warmup-updates": "100"}),
}
extra = sys.argv[1:]
for kind, (ours, options) in OURS.items():
    flag = f"--{kind}"
    chosen = [b for a, b in zip(extra, extra[1:]) if a == flag] + [a.split("=", 1)[1] for a in extra if a.startswith(flag + "=")]
    if not chosen:
        print(flag, ours, sep="\n")
    elif (component := REGISTRIES[kind.replace("-", "_")]["registry"].get(chosen[-1])) is not None:
        parser = argparse.ArgumentParser()
        component.add_args(parser)  # fairseq's own way to list a component's options
        defined = {option for action in parser._actions for option in action.option_strings}
        options = {k: v for k, v in options.items() if k in defined}
    for key, value in options.items():
        print(key, value, sep="\n")
PY
)
mapfile -t components <<< "$components"
fairseq-train "$data" --user-dir "$root/user_dir" $precision \
    --arch rnn_seq2seq_multi30k "${components[@]}" --lr 2e-3 \
    --clip-norm 1.0 --max-tokens 2048 --required-batch-size-multiple 1 \
    --eval-bleu --eval-bleu-args '{"beam": 1}' --eval-bleu-remove-bpe sentencepiece \
    --best-checkpoint-metric bleu --maximize-best-checkpoint-metric \
    --patience "${PATIENCE:-5}" --stop-time-hours "${BUDGET_HOURS:-0.5}" \
    --save-dir "$save" --keep-last-epochs 5 --seed 1 \
    --num-workers 0 --log-format simple --log-interval 50 \
    "$@" 2>&1 | tee -a "$save/train.log"
