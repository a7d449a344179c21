#!/usr/bin/env bash
# The test command: sets up .venv from this repository's files and runs the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --bench  # the bench extra: tests/test_bench_peers.py runs ONNX Runtime and OpenVINO
bash scripts/build_cpp.sh  # the C++ library's tests need build/cpp (and the Debian packages it installs)
exec .venv/bin/python -m pytest -q --durations=15 "$@"
