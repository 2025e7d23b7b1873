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

workers() {  # one per CPU this shell may use (affinity, cgroup quota), at least 2, at most one per 2 GiB available
    python -c '
import os
from pathlib import Path

def read(path):
    try:
        return Path(path).read_text().split()
    except OSError:
        return []

cpus = len(os.sched_getaffinity(0))
quota = read("/sys/fs/cgroup/cpu.max") or read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
if len(quota) == 2 and quota[0] not in ("max", "-1"):
    cpus = min(cpus, -(-int(quota[0]) // int(quota[1])))
meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
available = int(meminfo["MemAvailable"].split()[0]) * 1024
limit, used = read("/sys/fs/cgroup/memory.max"), read("/sys/fs/cgroup/memory.current")
if limit and limit[0] != "max" and used:
    available = min(available, int(limit[0]) - int(used[0]))
print(max(2, min(cpus, available // 2**31)))'
}

if [ $# -gt 0 ]; then
    tier "$@"
else
    tier -v tests/unit
    # most of an e2e test is single-threaded process start-up; worksteal: no worker idles while another has a queue
    OMP_NUM_THREADS=1 tier -v tests/e2e -n "$(workers)" --dist worksteal
fi
