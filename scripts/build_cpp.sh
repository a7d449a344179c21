#!/usr/bin/env bash
# Builds export/cpp (mrcnn_infer) into build/cpp against the torch installed in .venv.
#   bash scripts/build_cpp.sh
# Needs g++ (C++20), cmake and OpenCV's core/imgproc/imgcodecs development files; on
# Debian/Ubuntu these are installed when missing (as root): libopencv-{core,imgproc,imgcodecs}-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! ls /usr/include/opencv4/opencv2/imgcodecs.hpp >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[build_cpp] installing OpenCV development packages"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev >/dev/null
  else
    echo "[build_cpp] OpenCV headers not found: install libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev" >&2
    exit 1
  fi
fi
TORCH_DIR=$("$PY" -c "import os, torch; print(os.path.dirname(torch.__file__))")
# The CUDA build of the torch wheel only configures through find_package(Torch) with a CUDA
# toolkit; linking the wheel's libraries directly works everywhere, with or without one.
cmake -S export/cpp -B build/cpp -DMRCNN_TORCH_DIR="$TORCH_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/cpp -j2 >/dev/null
echo "[build_cpp] built build/cpp/mrcnn_infer"
