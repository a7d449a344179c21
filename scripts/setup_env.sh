#!/usr/bin/env bash
# Creates .venv/ with this project and its test dependencies installed, once;
# reinstalls only when setup.cfg or pyproject.toml change.
#   bash scripts/setup_env.sh --bench   also installs mrcnn bench's runtime peers
#                                        (ONNX Runtime, OpenVINO: the "bench" extra)
set -euo pipefail
extras=test
if [ "${1:-}" = "--bench" ]; then extras=test,bench; fi
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mrcnn_installed
want=$( (cat setup.cfg pyproject.toml; echo "$extras") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing mrcnn_plugin and its dependencies into .venv (first time: a few minutes)"
  # pip's notes about this machine's local package indexes are noise: show its log only on failure.
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]" > .venv/pip.log 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" .venv/pip.log >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
