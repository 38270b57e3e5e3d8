#!/usr/bin/env bash
# One prepared GPU run of the triton backend, sized for ONE call of <= ~6.5 minutes (cold Triton
# cache, H100/H200): install, the benchmark first, then the tests with the time that is left.
# Run from the repository root:
#
#     OUT=/some/dir bash benchmarks/triton/gpu_run.sh      # OUT defaults to ./gpu-out
#
# Expects python3 with torch (CUDA), triton, pytest, hypothesis, pluggy, safetensors, tqdm,
# matplotlib, numpy already installed, and no network: wheels the run needs beyond those
# (hatchling + trove-classifiers to build the editable installs; optionally fla-core +
# flash-linear-attention for the ssm peer) are taken from ./.whl/ if present.
#
# Order (BENCH_SECTIONS; each section has its own budget in seconds after ':' and is stopped when
# it runs out, keeping what it measured; the JSON is rewritten after every section):
#   1. ssm (2k/8k/32k: defaults, fla's forward, the [parallel] and [recompute] options, the
#      reference; fla's slow autotuned backward last), then attention at 8k (the
#      size the issue's targets are read at; its kernels changed since the last GPU run: Δ kernel,
#      exp2, interior option, unpipelined eidetic loop), then what no GPU run has measured yet:
#      decode, norm_conv, eidetic, attention at 32k (the two-call peer never ran there);
#   2. tune: the launch-config grid (benchmarks/triton/tune.py); then tuned: per table slot the
#      config tune found best (adopted when it beats the default by >= 3 %, geometric mean over the
#      slot's groups), the lines to paste, and attention and the scan at 8k re-timed with them in
#      force, peers included (rows tagged [tuned]) — the targets as a commit of those lines gives them.
# The budgets sum to BENCH_BUDGET (265 s): attention at 2k is no longer in the list (it ran on the
# first H200 run; the targets are read at 8k), so tuned is not squeezed out by the budget.
# Then the tests, all at once, each limited to the time left before TOTAL_LIMIT (at least
# TEST_MIN): the benchmark never waits for them. A failing step does not stop the later ones.
# Full logs go to $OUT (at most 8 files); stdout keeps a short digest and ends with a summary
# table (step, rc, seconds). Narrow a rerun with BENCH_SECTIONS (e.g. "tune:150"), BENCH_LIMIT,
# BENCH_BUDGET, TOTAL_LIMIT, TEST_MIN, or SKIP_TESTS=1.
#
# The tune results: bench.log ends the tune section with, per kernel, a ranked table and lines
#     (64, 2): AttnTiles(block_m=.., block_n=.., num_warps=.., num_stages=..),  # -> bmojo_attention TILES gpu['fwd']
# Paste each chosen line into that kernel's dict in TILES (packages/bmojo-triton/src/bmojo_triton/
# ops/<op>/__init__.py; the key is (head-dim block, dtype itemsize) for attention, (P block, N
# block) for the scan), only where the speed-up is clear (> ~3 %, consistent between window-only and
# w+f), then run the interpreter tests (tests/triton_backend/test_triton_tiles.py runs every table
# entry), `python -m bmojo_triton.aot`, and the next GPU run's conformance. Every config timed was
# first checked against the default config's output (rows marked WRONG were not timed).
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

# ----- 2. benchmark (alone on the machine, so its timings are not disturbed) -----
BENCH_SECTIONS=${BENCH_SECTIONS:-ssm:60,attention@8192:35,decode:20,norm_conv:10,eidetic:20,attention@32768:35,tune:60,tuned:25}
step benchmark "${BENCH_LIMIT:-275}" bench.log python3 -m benchmarks.triton --budget "${BENCH_BUDGET:-265}" \
  --sections "$BENCH_SECTIONS" --out "$OUT/bench.json"
grep -E "^ceilings|^\[|ratio|share of|paste|^    \(|^  tuned |WRONG|illegal|error|stopped|^done" "$OUT/bench.log" \
  | cut -c1-200 | head -110 | sed 's/^/   | /'

# ----- 3. tests: conformance on CUDA, kernel tests, model-level test, concurrently -----
# Each test's first launch JIT-compiles its kernel variants (CPU-bound, cold cache on a fresh
# machine): the first H200 run spent its whole 125 s conformance timeout compiling. The machine has
# 16 cores, so the test steps run at once, each spread over pytest-xdist workers when present.
# Their limit is what is left of TOTAL_LIMIT (never less than TEST_MIN), so they cannot take the
# benchmark's time. The kernel tests come in two steps: what no GPU has run yet (conv backward,
# in-place steps, the tile tables: test_triton_ops.py, test_triton_tiles.py), and the model-level
# test with the attention's and the plugin's kernel tests.
if [ -z "${SKIP_TESTS:-}" ]; then
  LEFT=$(( ${TOTAL_LIMIT:-370} - ($(date +%s) - T_ALL) ))
  TEST_LIMIT=$(( LEFT > ${TEST_MIN:-60} ? LEFT : ${TEST_MIN:-60} ))
  XD() { python3 -c "import xdist" 2>/dev/null && echo "-n $1"; }
  # NVIDIA_TF32_OVERRIDE=0: cuBLAS/cuDNN keep float32 in full precision (cuDNN allows TF32 by
  # default, which would make the reference's float32 convolution the imprecise side of a test)
  PYT=(env NVIDIA_TF32_OVERRIDE=0 python3 -m pytest -q -p no:cacheprovider -rfE --tb=short)
  CONF=(env BMOJO_BACKEND=triton "${PYT[@]}" --pyargs bmojo.testing.conformance --bmojo-backend=triton --bmojo-device=cuda)
  KT=tests/triton_backend
  step conformance "$TEST_LIMIT" conformance.log "${CONF[@]}" $(XD 5) --bmojo-dtypes=float32,float64 &
  step conf_half "$TEST_LIMIT" conformance_half.log "${CONF[@]}" $(XD 3) --bmojo-dtypes=bfloat16,float16 &
  step kernel_new "$TEST_LIMIT" kernel_tests.log "${PYT[@]}" $KT/test_triton_ops.py $KT/test_triton_tiles.py \
    $KT/test_triton_offsets.py $(XD 3) --bmojo-device=cuda &  # offsets: ~40 GB for one test, freed after it
  # (one log for these two: the reply brings back at most 8 files)
  step kernel_model "$TEST_LIMIT" kernel_model.log "${PYT[@]}" $KT/test_triton_model.py $KT/test_triton_attention.py \
    $KT/test_triton_plugin.py $(XD 5) --bmojo-device=cuda &
  wait
  for log in conformance.log conformance_half.log kernel_tests.log kernel_model.log; do
    echo "-- $log"
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/$log" | tail -n 12 | cut -c1-220 | sed 's/^/   | /'
  done
fi

echo "== summary (total $(( $(date +%s) - T_ALL ))s; logs in $OUT)"
cat "$SUMMARY"
