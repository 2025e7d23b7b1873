#!/usr/bin/env bash
# Set up the environment (first run) and run the tests.
#
#   bash scripts/test.sh tests/unit     fast: model, criterion, patches, no CLI subprocess (about a minute)
#   bash scripts/test.sh                full: tests/unit (stops here if it fails), then tests/e2e in one
#                                       process of one thread per CPU, at least two (the CLIs and scripts end to end)
#   bash scripts/test.sh tests/e2e -k recorded     any pytest arguments, e.g. one tier, -k, -x, -v
#
# tests/helpers.py holds what the tests share (paths, the tiny model, CLI runners); tests/conftest.py the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

tier() {  # pytest exits 5 when it collects no test: a tier that lost its tests is a failure too
    local rc=0
    python -m pytest "$@" || rc=$?
    if [ "$rc" = 5 ]; then echo "error: no tests collected in $*" >&2; fi
    return "$rc"
}

workers() {  # one per CPU this shell may use (affinity, cgroup quota), at least 2, at most one per 2 GiB free
    python -c '
import os
cpus = len(os.sched_getaffinity(0))
try:
    quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
    cpus = cpus if quota == "max" else min(cpus, -(-int(quota) // int(period)))
except (OSError, ValueError):
    pass
free_gib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
print(max(2, min(cpus, int(free_gib // 2))))'
}

if [ $# -gt 0 ]; then
    tier "$@"
else
    tier -v tests/unit
    # most of an e2e test is single-threaded process start-up; worksteal: no worker idles while another has a queue
    OMP_NUM_THREADS=1 tier -v tests/e2e -n "$(workers)" --dist worksteal
fi
