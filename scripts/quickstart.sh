#!/usr/bin/env bash
# The main job: sets up .venv, trains the Shapes recipe, evaluates, exports, builds and runs the
# C++ program on held-out images, and writes outputs/quickstart/ (metrics, AP table, curves,
# pictures from Python and C++, model.ts).
#   bash scripts/quickstart.sh [--iters N] [KEY VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python projects/Shapes/quickstart.py "$@"
