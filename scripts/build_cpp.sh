#!/usr/bin/env bash
# Builds export/cpp (the mrcnn::detector library, mrcnn_infer, mrcnn_serve and the GoogleTest
# tests) into build/cpp against the torch installed in .venv.
#   bash scripts/build_cpp.sh
# Needs g++ (C++20) and cmake, and Debian's development packages of OpenCV (core, imgproc,
# imgcodecs), nlohmann-json, cpp-httplib and GoogleTest; on Debian/Ubuntu the missing ones are
# installed (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PACKAGES=(libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev nlohmann-json3-dev libcpp-httplib-dev libgtest-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[build_cpp] installing ${missing[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[build_cpp] missing development packages: install ${missing[*]}" >&2
    exit 1
  fi
fi
TORCH_DIR=$("$PY" -c "import os, torch; print(os.path.dirname(torch.__file__))")
# The CUDA build of the torch wheel only configures through find_package(Torch) with a CUDA
# toolkit; linking the wheel's libraries directly works everywhere, with or without one.
cmake -S export/cpp -B build/cpp -DMRCNN_TORCH_DIR="$TORCH_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/cpp -j2 >/dev/null
echo "[build_cpp] built build/cpp: libmrcnn_detector.so, mrcnn_infer, mrcnn_serve, tests (ctest --test-dir build/cpp)"
