#!/usr/bin/env bash
# Set up the environment (first run) and run the tests; arguments go to pytest.
#
#   bash scripts/test.sh tests/unit     fast: model, criterion, patches, no CLI subprocess (about a minute)
#   bash scripts/test.sh                full: tests/unit, then tests/e2e (the fairseq CLIs and scripts end to end)
#   bash scripts/test.sh tests/e2e -k recorded     any pytest arguments, e.g. one tier, -k, -x, -v
#
# tests/helpers.py holds what the tests share (paths, the tiny model, CLI runners); tests/conftest.py the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python -m pytest "$@"
