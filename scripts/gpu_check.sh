#!/usr/bin/env bash
# Every GPU check of the deployment and the GPU benchmarks, in one run on a CUDA machine
# (budget: under 8 minutes on one H100, the build included):
#   1. the CUDA tests: exported model, mrcnn_infer, mrcnn_serve and the Triton wrapper on the
#      GPU equal to the CPU (tests/export/test_gpu.py), the library's CUDA GoogleTest
#      (tests/export/test_cpp_library.py, whose CUDA case runs on the GPU when there is one);
#   2. mrcnn bench --device cuda (inference candidates against torchvision, no training step);
#   3. scripts/bench_serve.py --device cuda (the service against the library loop).
# Writes outputs/gpu_check/{tests.log,bench/,bench_serve/} and a summary; exit status 0 only
# when every part passed.
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT_DIR:-outputs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU is visible to torch ($PY); nothing was run" >&2
  exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(), 'torch', torch.__version__)" | tee "$OUT/summary.txt"
status=0
step() {  # step NAME COMMAND...: runs it, records its exit status and time in the summary
  local name=$1 start=$SECONDS
  shift
  "$@"
  local rc=$?
  echo "gpu_check: $name: $([ $rc = 0 ] && echo PASS || echo "FAIL ($rc)") in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  [ $rc = 0 ] || status=1
}
step build bash scripts/build_cpp.sh
cuda_tests() {
  "$PY" -m pytest -q -rs -p no:cacheprovider -k "not without_gpu" tests/export/test_gpu.py \
    "tests/export/test_cpp_library.py::test_gtest_suite_passes" > "$OUT/tests.log" 2>&1
  local rc=$?
  tail -n 15 "$OUT/tests.log"
  # A skipped GPU test on a GPU machine is a failure of this check.
  if grep -q "SKIPPED" "$OUT/tests.log"; then echo "gpu_check: a CUDA test was skipped"; return 1; fi
  return $rc
}
step "CUDA tests" cuda_tests
step "mrcnn bench --device cuda" "$PY" -m mrcnn_plugin.cli bench --device cuda --rounds 5 --skip-training \
  --skip-stages --no-memory --output "$OUT/bench"
step "bench_serve --device cuda" "$PY" scripts/bench_serve.py --device cuda --calls 16 --requests 8 \
  --output "$OUT/bench_serve"
echo "gpu_check: wrote $OUT (summary.txt, tests.log, bench/, bench_serve/)"
exit $status
