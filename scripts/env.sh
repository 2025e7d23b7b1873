# Source me: creates .venv on first use (the exact versions of constraints.txt), then activates it.
#   source scripts/env.sh
# Re-installs when setup.cfg or constraints.txt changes. PYTHON picks the interpreter (default python3; 3.11 or 3.12).
# VENV=0 uses the Python environment already on PATH instead (a cluster's, with fairseq and this package: pip install -e .).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="$_root/.venv"
_stamp="$_venv/.installed-$(cat "$_root/setup.cfg" "$_root/constraints.txt" | sha1sum | cut -c1-12)"
if [ "${VENV:-1}" = 0 ]; then
    (cd / && python3 -c "import fairseq, user_dir") 2> /dev/null ||
        { echo "error: VENV=0 but python3 cannot import fairseq and user_dir: run python3 -m pip install -e $_root" >&2; return 1; }
else
    if [ ! -f "$_stamp" ]; then
        # ve-fairseq has wheels for CPython 3.11 and 3.12 only: any other fails deep in pip, so say it first
        _version="$("${PYTHON:-python3}" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2> /dev/null || :)"
        case "$_version" in
            3.11|3.12) ;;
            *) echo "error: ${PYTHON:-python3} is ${_version:+Python }${_version:-not a Python found on PATH}; fairseq" \
                    "(ve-fairseq) installs on Python 3.11 or 3.12: give one, e.g. PYTHON=python3.12 source scripts/env.sh" >&2
               unset _root _venv _stamp _version; return 1 ;;
        esac
        echo "setting up $_venv (first run: about a minute)" >&2
        "${PYTHON:-python3}" -m venv "$_venv" || return 1
        "$_venv/bin/python" -m pip install -q --upgrade pip || return 1
        "$_venv/bin/python" -m pip install -q -c "$_root/constraints.txt" -e "$_root[test,plot,tensorboard,wandb]" || return 1
        rm -f "$_venv"/.installed-* && touch "$_stamp"
    fi
    source "$_venv/bin/activate"
fi
# torch's default threading is far slower on few cores; use every core, no more. RNN_SEQ2SEQ_THREADS
# marks the value as set here, not by the user: train.sh shares the cores among NPROC processes then.
if [ -z "${OMP_NUM_THREADS:-}" ] || [ "$OMP_NUM_THREADS" = "${RNN_SEQ2SEQ_THREADS:-}" ]; then
    export OMP_NUM_THREADS="$(nproc)" RNN_SEQ2SEQ_THREADS="$(nproc)"
fi
# torch's OpenMP (GNU libgomp) spins long before a thread sleeps: on a core another program uses, training
# ran 22-33x slower; a short spin costs nothing idle (docs/results/threads/). A GOMP_SPINCOUNT or OMP_WAIT_POLICY
# of yours wins (libgomp reads a set spin count whatever the policy: env.sh's own, marked, goes).
if [ -n "${OMP_WAIT_POLICY:-}" ] && [ "${GOMP_SPINCOUNT:-}" = "${RNN_SEQ2SEQ_SPIN:-}" ]; then
    unset GOMP_SPINCOUNT RNN_SEQ2SEQ_SPIN
elif [ -z "${GOMP_SPINCOUNT:-}" ] && [ -z "${OMP_WAIT_POLICY:-}" ]; then
    export GOMP_SPINCOUNT=10000 RNN_SEQ2SEQ_SPIN=10000
fi
unset _root _venv _stamp _version
if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced: the shell that ran it is not set up
    echo "scripts/env.sh: the environment is ready; to use it in your shell: source scripts/env.sh" >&2
fi
