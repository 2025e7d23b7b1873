# Sourced by lab/gpu_check.sh and lab/gpu_recipes.sh: the environment of a short visit to a GPU
# machine with no network, and each stage's time limit and log.
#   gpu_setup NAME LOG_DIR     fairseq from lab/wheels (WHEELS) where python3 lacks it (installed
#                              once into runs/gpu_site, git-ignored, reused while its wheels are the
#                              same), `python` running python3, the plugin on PYTHONPATH; without
#                              CUDA, or with GPU_CHECK_CPU=1, .venv instead (cpu=1: the callers run
#                              tiny stages). LOG_DIR (default runs/NAME/DATE-TIME), new or empty,
#                              gets summary.txt and one log per stage.
#   stage NAME SECONDS CMD...  CMD with a time limit, its output in LOG_DIR/NAME.log; no stage runs
#                              past GPU_DEADLINE_S seconds after the start (0: no deadline), so a run
#                              ends inside the device call that started it. After each stage, and at
#                              exit, LOG_DIR is packed into $OUT/NAME.tar.gz with $OUT/NAME.summary.txt
#                              beside it, where $OUT is set (a device call returns at most 8 files).
# Sets root, out (LOG_DIR), work (a temporary folder, removed at exit once every stage still running in
# the background, and what it started, is stopped: stop_jobs) and cpu.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start_all=$SECONDS

gpu_setup() {
    run_name="$1" out="${2:-$root/runs/$1/$(date +%Y%m%d-%H%M%S)}"
    if [ -d "$out" ] && [ -n "$(ls -A "$out")" ]; then
        echo "error: $out is not empty: give a new or empty folder for the logs" >&2; exit 2
    fi
    mkdir -p "$out" && out="$(cd "$out" && pwd)" && work="$(mktemp -d)" || exit 1
    trap 'stop_jobs; pack; rm -rf "$work"' EXIT
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
        install_wheels
        mkdir -p "$work/bin" && printf '#!/bin/sh\nexec python3 "$@"\n' > "$work/bin/python" && chmod +x "$work/bin/python"
        export PATH="$work/bin:$PATH"  # python is python3: a script, as a link would lose python3's environment
        export VENV=0 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # the plugin, as pip install -e . would give it
        source "$root/scripts/env.sh" || exit 1
        nvidia-smi -L | tee -a "$out/summary.txt"
    fi
    python -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")' | tee -a "$out/summary.txt"
    cd "$root" || exit 1
}

install_wheels() {  # fairseq and what a CUDA image lacks, from the wheels folder, unless python3 has them
    python3 -c 'import fairseq, xdist' 2> /dev/null && return  # xdist: the GPU tests in parallel processes
    local wheels="${WHEELS:-$root/lab/wheels}" site="$root/runs/gpu_site"
    compgen -G "$wheels/*.whl" > /dev/null ||
        { echo "error: no wheels in $wheels: run 'bash lab/gpu_wheels.sh $wheels' where PyPI is reachable" >&2; exit 2; }
    if [ -e "$site" ] && [ ! -f "$site/.wheels" ]; then
        echo "error: $site was not made by lab/gpu_env.sh (no .wheels in it): move it away" >&2; exit 2
    fi
    if [ "$(cat "$site/.wheels" 2> /dev/null)" != "$(cd "$wheels" && ls ./*.whl)" ]; then
        rm -rf "$site" && mkdir -p "$site" && echo "installing" > "$site/.wheels" || exit 1
        stage install 90 python3 -m pip install --no-index --no-deps --no-compile -q --target "$site" \
            "$wheels"/*.whl || exit 1
        (cd "$wheels" && ls ./*.whl) > "$site/.wheels"
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
    python3 -c 'import fairseq' > "$out/import.log" 2>&1 || {
        echo "error: fairseq does not import after installing $wheels: $(tail -n 1 "$out/import.log")" \
             "(add that package's wheel to $wheels; log $out/import.log)" >&2; exit 1; }
}

stage() {  # stage NAME SECONDS COMMAND...
    local name="$1" limit="$2" start=$SECONDS rc=0 deadline="${GPU_DEADLINE_S:-0}"; shift 2
    if [ "$deadline" -gt 0 ] && [ $((start_all + deadline - SECONDS)) -lt "$limit" ]; then
        limit=$((start_all + deadline - SECONDS))
    fi
    if [ "$limit" -lt 5 ]; then
        echo "$name: not run: the run's deadline (GPU_DEADLINE_S $deadline s) is reached" | tee -a "$out/summary.txt"
        return 124
    fi
    timeout -k 5 "$limit" "$@" > "$out/$name.log" 2>&1 || rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s; log $out/$name.log)" | tee -a "$out/summary.txt"
    pack
    return "$rc"
}

pack() {  # LOG_DIR into $OUT/NAME.tar.gz, whole or not at all; stages run at once take turns (a lock on $OUT)
    [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ -n "${out:-}" ] || return 0
    (
        ! command -v flock > /dev/null || flock 9
        part="$OUT/.$run_name.$BASHPID" rc=0
        # tar's exit 1: a log grew while it was read (a stage still running); the archive holds what was read
        tar czf "$part.tar.gz" --warning=no-file-changed -C "$out" . || rc=$?
        if [ "$rc" -le 1 ]; then mv "$part.tar.gz" "$OUT/$run_name.tar.gz"; else rm -f "$part.tar.gz"; fi
        cp "$out/summary.txt" "$part.txt" && mv "$part.txt" "$OUT/$run_name.summary.txt"
    ) 9< "$OUT"
}

stop_jobs() {  # at exit: the recipes still running in the background (RECIPES_PARALLEL), and every process
    # they started (each stage's `timeout` leads a process group of its own): stopped, then up to 10 s to end
    local pids="" pid
    for pid in $(jobs -p); do pids+=" $pid $(descendants "$pid")"; done
    [ -n "${pids// /}" ] || return 0
    # shellcheck disable=SC2086  # the pids, one word each; a recipe first, so it starts no next stage
    kill -TERM $pids 2> /dev/null
    wait
    for _ in $(seq 50); do
        # shellcheck disable=SC2086
        any_alive $pids || return 0
        sleep 0.2
    done
}

any_alive() {  # any_alive PID...: whether one of them still runs
    local pid
    for pid in "$@"; do kill -0 "$pid" 2> /dev/null && return 0; done
    return 1
}

descendants() {  # descendants PID: its children, theirs and so on, parents first
    local child
    for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done
}

finish() {  # the closing line: stages passed, seconds, where the logs are
    echo "$run_name: $(grep -c 'exit 0 ' "$out/summary.txt") of $(grep -c -e ': exit ' -e ': not run' "$out/summary.txt")" \
         "stages passed in $((SECONDS - start_all)) s; logs in $out" | tee -a "$out/summary.txt"
}
