#!/usr/bin/env bash
# Set up the environment (first run) and run the test suite (unit + end-to-end CLI on toy data).
#
# Usage: bash scripts/test.sh [PYTEST_ARGS...]      e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python -m pytest "$@"
