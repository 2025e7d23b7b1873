#!/usr/bin/env bash
# Set up the environment (first run) and run the tests.
#
#   bash scripts/test.sh tests/unit     fast: model, criterion, patches, no CLI subprocess (about a minute)
#   bash scripts/test.sh                full: tests/unit (stops here if it fails), then tests/e2e in two
#                                       processes of one thread each (the fairseq CLIs and scripts end to end)
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

if [ $# -gt 0 ]; then
    tier "$@"
else
    tier -v tests/unit
    OMP_NUM_THREADS=1 tier -v tests/e2e -n 2  # most of an e2e test is single-threaded process start-up
fi
