#!/usr/bin/env bash
# One prepared GPU run of the triton backend: install, conformance on CUDA, kernel tests, the
# model-level test, then the benchmark. Run from the repository root:
#
#     OUT=/some/dir bash benchmarks/triton/gpu_run.sh      # OUT defaults to ./gpu-out
#
# Expects python3 with torch (CUDA), triton, pytest, hypothesis, pluggy, safetensors, tqdm,
# matplotlib, numpy already installed, and no network: wheels the run needs beyond those
# (hatchling + trove-classifiers to build the editable installs; optionally fla-core +
# flash-linear-attention for the ssm peer) are taken from ./.whl/ if present.
# Every step has a timeout (the whole script stays under ~8 minutes); a failing step does not
# stop the later ones. Full logs go to $OUT (at most 8 files); stdout keeps a short digest and
# ends with a summary table (step, rc, seconds).
set -uo pipefail

OUT="${OUT:-./gpu-out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
T_ALL=$(date +%s)
export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
unset TRITON_INTERPRET

step() {  # step NAME TIMEOUT LOG CMD...
  local name=$1 limit=$2 log=$3
  shift 3
  local t0=$(date +%s)
  echo "== $name (timeout ${limit}s) -> $log"
  timeout -k 3 "$limit" "$@" >> "$OUT/$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  printf '%-14s rc=%-4s %5ss\n' "$name" "$rc" "$dt" >> "$SUMMARY"
  return $rc
}

digest() {  # the last N lines of a log, indented
  tail -n "$2" "$OUT/$1" | sed 's/^/   | /'
}

# ----- 0. install -----
setup() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    ls .whl
    rm -rf /tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || return 1
  fi
  local args=(--no-deps --no-build-isolation --no-index -e packages/bmojo-core -e packages/bmojo-triton)
  python3 -m pip install -q "${args[@]}" \
    || python3 -m pip install -q --break-system-packages "${args[@]}" \
    || return 1
  python3 - <<'PY'
import sys
from bmojo.cli import main
sys.exit(main(["backends", "-v"]))
PY
}
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export -f setup
step setup 45 setup.log bash -c setup
digest setup.log 14

# ----- 1. the machine -----
{
  date -u
  nvidia-smi || true
  python3 - <<'PY'
import importlib, torch
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for m in ("triton", "numpy", "transformers", "fla", "bmojo", "bmojo_triton"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "not installed:", type(e).__name__, e)
PY
} > "$OUT/env.txt" 2>&1
grep -E "^(python|device|triton|fla) " "$OUT/env.txt" | sed 's/^/   | /'

# ----- 2. conformance on CUDA -----
# NVIDIA_TF32_OVERRIDE=0: cuBLAS/cuDNN keep float32 in full precision (cuDNN allows TF32 by
# default, which would make the reference's float32 convolution the imprecise side of a test)
CONF=(env BMOJO_BACKEND=triton NVIDIA_TF32_OVERRIDE=0 python3 -m pytest --pyargs bmojo.testing.conformance --bmojo-backend=triton --bmojo-device=cuda -q -p no:cacheprovider)
step conformance 125 conformance.log "${CONF[@]}"
digest conformance.log 16
step conf_half 50 conformance_half.log "${CONF[@]}" --bmojo-dtypes=bfloat16,float16
digest conformance_half.log 16

# ----- 3. kernel tests, 4. model-level test -----
step kernel_tests 55 kernel_tests.log env NVIDIA_TF32_OVERRIDE=0 python3 -m pytest tests/triton -q -p no:cacheprovider --bmojo-device=cuda --ignore=tests/triton/test_triton_model.py
digest kernel_tests.log 6
step model_test 70 kernel_tests.log env NVIDIA_TF32_OVERRIDE=0 python3 -m pytest tests/triton/test_triton_model.py -q -p no:cacheprovider --bmojo-device=cuda
digest kernel_tests.log 4

# ----- 5. benchmark -----
step benchmark 130 bench.log python3 -m benchmarks.triton --budget 110 --out "$OUT/bench.json"
grep -E "^ceilings|ratio|error|^done" "$OUT/bench.log" | head -40 | sed 's/^/   | /'
digest bench.log 2

echo "== summary (total $(( $(date +%s) - T_ALL ))s; logs in $OUT)"
cat "$SUMMARY"
