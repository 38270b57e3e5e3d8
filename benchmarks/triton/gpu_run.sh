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
# Every step has a timeout (the whole script stays under ~5 minutes; TEST_LIMIT, BENCH_LIMIT,
# BENCH_BUDGET and BENCH_ARGS, e.g. "--sections ssm,decode", narrow a rerun); a failing step does
# not stop the later ones. Full logs go to $OUT (at most 8 files); stdout keeps a short digest and
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

# ----- 1. the machine (appended to setup.log: the reply brings back at most 8 files) -----
{
  date -u
  nvidia-smi || true
  python3 - <<'PY'
import importlib, torch
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for m in ("triton", "numpy", "transformers", "fla", "xdist", "bmojo", "bmojo_triton"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "not installed:", type(e).__name__, e)
PY
} >> "$OUT/setup.log" 2>&1
grep -E "^(python|device|triton|fla|xdist) " "$OUT/setup.log" | sed 's/^/   | /'

# ----- 2-4. conformance on CUDA, kernel tests, model-level test: concurrently -----
# Each test's first launch JIT-compiles its kernel variants (CPU-bound, cold cache on a fresh
# machine): the first H200 run spent its whole 125 s conformance timeout compiling. The machine has
# 16 cores, so the four test steps run at once, each spread over pytest-xdist workers when present.
XD() { python3 -c "import xdist" 2>/dev/null && echo "-n $1"; }
# NVIDIA_TF32_OVERRIDE=0: cuBLAS/cuDNN keep float32 in full precision (cuDNN allows TF32 by
# default, which would make the reference's float32 convolution the imprecise side of a test)
PYT=(env NVIDIA_TF32_OVERRIDE=0 python3 -m pytest -q -p no:cacheprovider -rfE --tb=short)
CONF=(env BMOJO_BACKEND=triton "${PYT[@]}" --pyargs bmojo.testing.conformance --bmojo-backend=triton --bmojo-device=cuda)
TEST_LIMIT=${TEST_LIMIT:-150}
step conformance "$TEST_LIMIT" conformance.log "${CONF[@]}" $(XD 6) --bmojo-dtypes=float32,float64 &
step conf_half "$TEST_LIMIT" conformance_half.log "${CONF[@]}" $(XD 3) --bmojo-dtypes=bfloat16,float16 &
step kernel_tests "$TEST_LIMIT" kernel_tests.log "${PYT[@]}" tests/triton_backend $(XD 4) --bmojo-device=cuda --ignore=tests/triton_backend/test_triton_model.py &
step model_test "$TEST_LIMIT" model_test.log "${PYT[@]}" tests/triton_backend/test_triton_model.py $(XD 2) --bmojo-device=cuda &
wait
for log in conformance.log conformance_half.log kernel_tests.log model_test.log; do
  echo "-- $log"
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/$log" | tail -n 12 | cut -c1-220 | sed 's/^/   | /'
done

# ----- 5. benchmark (alone on the machine, so its timings are not disturbed) -----
BENCH_ARGS=${BENCH_ARGS:-}
step benchmark "${BENCH_LIMIT:-130}" bench.log python3 -m benchmarks.triton --budget "${BENCH_BUDGET:-110}" --out "$OUT/bench.json" $BENCH_ARGS
grep -E "^ceilings|ratio|error|^done" "$OUT/bench.log" | head -40 | cut -c1-200 | sed 's/^/   | /'
digest bench.log 2

echo "== summary (total $(( $(date +%s) - T_ALL ))s; logs in $OUT)"
cat "$SUMMARY"
