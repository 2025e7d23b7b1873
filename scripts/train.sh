#!/usr/bin/env bash
# Train on data made by scripts/prepare.py (or any fairseq-preprocess output), selecting the
# checkpoint by validation BLEU.
#
# Usage: bash scripts/train.sh DATA_BIN SAVE_DIR [EXTRA fairseq-train ARGS...]
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt --max-update 2300
#   NPROC=2 bash scripts/train.sh runs/mine/de-en/bin runs/mine/de-en/ckpt
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/lstm --arch lstm --criterion label_smoothed_cross_entropy
# What it picks from the data (tokenization, size), the machine and the environment is printed
# at the start (scripts/train_settings.py; docs/training.md). An explicit --max-update or
# --max-epoch is honoured exactly. Later EXTRA args override the defaults.
# Env: PATIENCE stop after this many validations without a better BLEU (0: never; default 5,
# none when EXTRA sizes the run), BUDGET_HOURS wall-clock limit in hours (default none),
# AMP=0/1 float32 / bfloat16 autocast on a CPU (default: the faster one, measured), AMP=0 for
# float32 on a GPU (default --fp16), NPROC=N processes via torchrun (gloo on CPU, NCCL on GPUs),
# TORCHRUN_ARGS more torchrun options (multi-node: docs/training.md) with NNODES.
# Resumes from SAVE_DIR/checkpoint_last.pt when it exists; a second run on one SAVE_DIR is
# refused. Exit status 0 exactly when training finished ("done training") and fairseq-train exited 0.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 2 ] || { sed -n '2,18p' "$0"; exit 2; }
threads="${OMP_NUM_THREADS:-}"
source "$root/scripts/env.sh"
data="$1" save="$2"; shift 2
if [ -z "$threads" ] && [[ "${NPROC:-1}" =~ ^[0-9]+$ ]] && [ "${NPROC:-1}" -gt 1 ]; then
    export OMP_NUM_THREADS=$(( ($(nproc) + NPROC - 1) / NPROC ))  # NPROC processes share the cores
fi
compgen -G "$data/dict.*.txt" > /dev/null ||
    { echo "error: $data holds no fairseq-preprocess output (dict.*.txt); scripts/prepare.py makes it" >&2; exit 2; }
mkdir -p "$save"
argfile="$(mktemp)"; trap 'rm -f "$argfile"' EXIT
python "$root/scripts/train_settings.py" "$argfile" "$data" "$save" "$@" | tee -a "$save/train.log" || exit 2
mapfile -t settings < "$argfile"
nproc="${NPROC:-1}"
if [ "$nproc" -gt 1 ]; then
    # shellcheck disable=SC2086  # TORCHRUN_ARGS: several options
    launch=(torchrun ${TORCHRUN_ARGS:---standalone} --nnodes "${NNODES:-1}" --nproc-per-node "$nproc" "$(command -v fairseq-train)")
else
    launch=(fairseq-train)
fi
start=$(stat -c %s "$save/train.log")
rc=0
"${launch[@]}" "${settings[@]}" --user-dir "$root/user_dir" "$@" 2>&1 | tee -a "$save/train.log" || rc=$?
# This run's own lines: a finished run says "done training".
run_log=$(tail -c +$((start + 1)) "$save/train.log")
if ! grep -q "done training" <<< "$run_log"; then
    echo "error: training did not finish (fairseq-train exit status $rc): see $save/train.log" >&2
elif [ "$rc" != 0 ]; then
    echo "error: fairseq-train exited with status $rc after training finished: see $save/train.log" >&2
else
    exit 0
fi
exit $((rc == 0 ? 1 : rc))
