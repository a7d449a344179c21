#!/usr/bin/env bash
# The test command: sets up .venv from this repository's files and runs the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q --durations=15 "$@"
