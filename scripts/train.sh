#!/usr/bin/env bash
# Train on data made by scripts/prepare.py (or any fairseq-preprocess output), selecting the
# checkpoint by validation BLEU.
#
# Usage: bash scripts/train.sh DATA_BIN SAVE_DIR [EXTRA fairseq-train ARGS...]
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/multi30k/de-en/ckpt --max-update 2300
#   NPROC=2 bash scripts/train.sh runs/mine/de-en/bin runs/mine/de-en/ckpt
#   bash scripts/train.sh runs/multi30k/de-en/bin runs/lstm --arch lstm --criterion label_smoothed_cross_entropy
# What it picks from the data (tokenization, size), the machine and the environment is printed
# at the start (scripts/train_settings.py; docs/training.md), as fairseq-train reads the options.
# An explicit --max-update or --max-epoch is honoured exactly. Later EXTRA args override the defaults.
# EXTRA's options: fairseq-train --user-dir user_dir --arch rnn_seq2seq --help.
# Env: PATIENCE stop after this many validations without a better BLEU (0: never; default 5,
# none when EXTRA sizes the run), BUDGET_HOURS wall-clock limit in hours (default none),
# AMP=0/1 float32 / bfloat16 autocast on a CPU (default: the faster one, measured), AMP=0 for
# float32 on a GPU (default --fp16), NPROC=N processes via torchrun (gloo on CPU, NCCL on GPUs;
# unset: fairseq-train's own, one per GPU), NNODES machines of NPROC each with TORCHRUN_ARGS
# (torchrun's rendezvous options: docs/training.md).
# Resumes from SAVE_DIR/checkpoint_last.pt; a complete run is left as it is ("the run is complete").
# Exit status 0 exactly when training finished and saved its checkpoints (or was complete already);
# Ctrl-C 130. Stopping train.sh in any way (even SIGKILL) stops every training process it started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
for arg in "$@"; do case "$arg" in -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;; esac; done
[ $# -ge 2 ] || { echo "error: give DATA_BIN and SAVE_DIR: bash $0 DATA_BIN SAVE_DIR [EXTRA...] (--help: more)" >&2; exit 2; }
threads="${OMP_NUM_THREADS:-}"
[ "$threads" != "${RNN_SEQ2SEQ_THREADS:-}" ] || threads=""  # env.sh's every core, not the user's choice
source "$root/scripts/env.sh" || exit 2
data="$1" save="$2"; shift 2
if [ -z "$threads" ] && [[ "${NPROC:-1}" =~ ^[0-9]+$ ]] && [ "${NPROC:-1}" -gt 1 ]; then
    export OMP_NUM_THREADS=$(( ($(nproc) + NPROC - 1) / NPROC ))  # NPROC processes share the cores
fi
if [ ! -d "$data" ] && [[ "$data" == *:* ]]; then  # fairseq's epoch shards
    echo "error: DATA_BIN $data: train.sh trains on one folder, not fairseq's shards (a:b); give one, or run fairseq-train" >&2
    exit 2
fi
[ -d "$data" ] || { echo "error: DATA_BIN $data does not exist (or is not a folder); scripts/prepare.py makes it" >&2
                   exit 2; }
if ! compgen -G "$data/dict.*.txt" > /dev/null; then
    compgen -G "$data/bin/dict.*.txt" > /dev/null && made="; give its bin folder: ${data%/}/bin" ||
        made="; scripts/prepare.py makes it"
    echo "error: $data holds no fairseq-preprocess output (dict.*.txt)$made" >&2; exit 2
fi
tmp="$(mktemp -d)" launcher=""
exec 4>&2  # train.sh's own stderr, also inside stoppable's redirections
stop_launcher() {  # the running (unreaped) launcher and its process group (workers die with it: with_parent.py)
    [ -z "$launcher" ] || { kill -KILL -- "-$launcher" "$launcher"; wait "$launcher"; } 2> /dev/null || true
    launcher=""
}
stoppable() {  # CMD...: in a session of its own that dies with train.sh, so Ctrl-C reaches only train.sh
    WITH_PARENT_PID=$$ python "$root/scripts/with_parent.py" "$@" 3>&- 4>&- &
    launcher=$!
    local rc=0 group
    wait "$launcher" 2> /dev/null || rc=$?  # its status says it; not also bash's "Killed" notice
    group=$launcher launcher=""  # reaped: its pid is free for reuse, its group's id not while a member is left
    kill -KILL -- "-$group" 2> /dev/null || true
    return "$rc"
}
interrupted() {  # $1: the signal, $2: the exit status
    stop_launcher
    local stage=" before training started" next="starts from the beginning"
    [ ! -s "$tmp/args" ] || stage=": training stopped"  # train_settings.py writes it as training starts
    [ ! -f "$save/checkpoint_last.pt" ] || next="resumes from $save/checkpoint_last.pt"
    echo "error: interrupted ($1)$stage; the same command $next" >&4
    exit "$2"
}
log_lines() {  # stdin to stdout and SAVE/train.log, opened at the first byte: a refused or complete run writes none
    trap '' INT  # Ctrl-C: the log keeps the last lines
    local first
    IFS= read -r -N 1 first || exit 0
    { printf '%s' "$first"; exec cat; } | tee -p -a "$save/train.log"  # -p: the log goes on when stdout goes
}
trap 'stop_launcher; rm -rf "$tmp"' EXIT
trap 'interrupted SIGINT 130' INT
trap 'interrupted SIGTERM 143' TERM
trap 'interrupted SIGHUP 129' HUP
start=$(stat -c %s "$save/train.log" 2> /dev/null || echo 0)
touch "$tmp/start"
exec 3> >(log_lines)
logger=$!
rc=0
# The plan, and then (one process: no torchrun) the training itself, in one process that imports fairseq once
stoppable python "$root/scripts/train_settings.py" --log-fd 5 "$tmp/args" "$data" "$save" "$@" 5>&3 || rc=$?
if [ ! -s "$tmp/args" ]; then  # refused (its line says why) or complete (the plan says so): nothing trained
    exit $((rc == 0 ? 0 : 2))
fi
if [ "$rc" = 0 ] && [ "$(cat "$tmp/args.launcher")" = torchrun ]; then  # user_dir.machine.world's choice
    mapfile -t args < "$tmp/args"
    # shellcheck disable=SC2086  # TORCHRUN_ARGS: several options
    stoppable torchrun ${TORCHRUN_ARGS:---standalone} --nnodes "${NNODES:-1}" --nproc-per-node "$NPROC" \
        "$root/scripts/with_parent.py" fairseq-train "${args[@]}" >&3 2>&1 || rc=$?
fi
exec 3>&-
wait "$logger" || true
# This run's own lines: a finished run says "done training"; one that saves writes a checkpoint.
run_log=$(tail -c +$((start + 1)) "$save/train.log" 2> /dev/null || :)  # none: nothing reached it
if ! grep -q "done training" <<< "$run_log"; then
    echo "error: training did not finish (fairseq-train exit status $rc): see $save/train.log" >&2
elif [ "$rc" != 0 ]; then
    echo "error: fairseq-train exited with status $rc after training finished: see $save/train.log" >&2
elif ! grep -qx -- --no-save "$tmp/args" &&
        [ -z "$(find "$save" -maxdepth 1 -name 'checkpoint*.pt' -newer "$tmp/start")" ]; then
    echo "error: training finished but wrote no checkpoint to $save: see $save/train.log" >&2
else
    # del sys.path[0]: the working folder's, where a user_dir/ of another checkout could hide the plugin's
    stoppable python -c 'import sys; del sys.path[0]; from user_dir.workflow import record_finished
record_finished(*sys.argv[1:])' \
        "$tmp/args" "$save" || exit 2
    exit 0
fi
exit $((rc == 0 ? 1 : rc))
