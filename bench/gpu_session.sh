#!/usr/bin/env bash
# One GPU session for verispec: build with the CUDA kernels for sm_90, run every GPU test, time every
# GPU path, and leave the evidence under $OUT. Written for the lent H100 machine (no internet, python3
# with torch/triton/pytest preinstalled); CONTRIBUTING.md ("GPU sessions") gives the exact call.
#
#   bash bench/gpu_session.sh               # "all": build, GPU tests, backend test files, then benchmarks while time lasts
#   bash bench/gpu_session.sh bench         # build, then the benchmarks only (the second call)
#   bash bench/gpu_session.sh tests         # build, then the tests only
#   bash bench/gpu_session.sh gpu_tests tree_b1   # build, then the named steps (names: see STEP TABLE below)
#
# Environment: OUT (where the evidence goes; default ./gpu_out), VS_BUDGET_S (default 540: the script
# is done by then, well inside a 600 s device call), VS_COMMIT (recorded when the copy has no .git),
# PYTHON (default python3), VS_CUDA_ARCHS (default 90), VS_SKIP_BUILD=1 (use the verispec already
# importable: for dry runs on a CPU machine, where every GPU test skips and the benches run their CPU checks).
#
# $OUT afterwards: session.log (everything, live), steps.tsv (each step's outcome), env.json (versions,
# GPU, build, source digest), <step>.json and <step>.xml per test step (pytest --evidence-json: each
# test's op, backend and outcome; junit), bench/<step>/ (the bench scripts' own JSON and markdown),
# summary.md (tools/gpu_evidence.py summary), logs.tar.gz (per-step logs).
# Every step runs under `timeout` inside the overall budget; a failing step never stops the session.
# Nothing here changes the GPU's settings (clocks, power, persistence, MIG) or resets it.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-$REPO/gpu_out}
BUDGET=${VS_BUDGET_S:-540}
ARCHS=${VS_CUDA_ARCHS:-90}
RESERVE=20                       # seconds kept for the final packing
START=$(date +%s)
DEADLINE=$((START + BUDGET))
WORK=$(mktemp -d /tmp/verispec-gpu.XXXXXX)
VS_SITE=$WORK/site               # used only when an editable install is impossible
LOG=$OUT/session.log
BUILD_MODE=none
mkdir -p "$OUT" "$WORK/logs" "$WORK/bench"
: >"$WORK/steps.tsv"
: >>"$LOG"

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export VERISPEC_CUDA=ON        # what the build asks for (tests/test_native_module.py checks it held)
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
export PY WORK VS_SITE ARCHS

MODE=${1:-all}
case "$MODE" in
  all)   STEPS="gpu_tests backend_tests bench_tests verify_quick tree_quick commit_quick tree_b1" ;;
  tests) STEPS="gpu_tests backend_tests bench_tests" ;;
  bench) STEPS="verify_quick tree_quick commit_quick tree_b1 verify_full tree_b8_32 commit_full" ;;
  *)     STEPS="$*"; MODE=custom ;;
esac

say() { printf '[%s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - START))" "$*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - $(date +%s) - RESERVE)); }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$WORK/steps.tsv"; }

write_meta() {
  printf '{"mode": "%s", "steps": "%s", "budget_s": %s, "build_mode": "%s", "start_epoch": %s, "elapsed_s": %s, "archs": "%s"}\n' \
    "$MODE" "$STEPS" "$BUDGET" "$BUILD_MODE" "$START" "$(($(date +%s) - START))" "$ARCHS" >"$WORK/meta.json"
}

pack() {  # everything else already lies in $OUT: the logs, the step table and the summary
  write_meta
  cp "$WORK/steps.tsv" "$WORK/meta.json" "$OUT"/ 2>/dev/null
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs meta.json 2>/dev/null
  timeout 60 "$PY" tools/gpu_evidence.py summary "$OUT" --out "$OUT/summary.md" >>"$WORK/logs/pack.log" 2>&1 ||
    say "summary failed (see logs.tar.gz:logs/pack.log)"
}

# step NAME MAX_SECONDS MIN_SECONDS COMMAND...: runs COMMAND under timeout within the budget, logs it
# to $OUT/session.log and $WORK/logs/NAME.log, records the outcome, never fails the script.
step() {
  local name=$1 max=$2 min=$3 t rc t0 status
  shift 3
  t=$(left)
  if ((t < min)); then
    say "=== $name: SKIPPED (budget: ${t}s left, needs ${min}s)"
    record "$name" skipped "" 0 "budget: ${t}s left, needs ${min}s"
    return 0
  fi
  ((t > max)) && t=$max
  say "=== $name (timeout ${t}s): $*"
  t0=$(date +%s)
  timeout -k 10 "$t" "$@" 2>&1 | tee "$WORK/logs/$name.log" >>"$LOG"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  [ "$name" = build ] && [ "$rc" = 3 ] && status=degraded   # built, but without the CUDA kernels
  say "=== $name: $status (rc $rc, $(($(date +%s) - t0))s)"
  record "$name" "$status" "$rc" "$(($(date +%s) - t0))" "timeout ${t}s"
  pack
  return 0
}

# ---- the build, as its own script so it can run under timeout ------------------------------------
cat >"$WORK/build.sh" <<'EOF'
set -u -o pipefail
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; break; fi
  done
fi
echo "nvcc: $(command -v nvcc || echo 'not found')"
nvcc --version 2>/dev/null | tail -n 2
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
mkdir -p build
"$PY" -m pip --version
attempt() {  # attempt NAME VERISPEC_CUDA PIP-ARGS...; its output also goes to $WORK/logs/build-NAME.log
  local name=$1 cuda=$2
  shift 2
  echo "--- build attempt $name: VERISPEC_CUDA=$cuda VERISPEC_CUDA_ARCHS=$ARCHS pip install $*"
  if VERISPEC_CUDA=$cuda VERISPEC_CUDA_ARCHS=$ARCHS "$PY" -m pip install --no-build-isolation --no-deps \
      --no-index --no-compile -v "$@" 2>&1 | tee "$WORK/logs/build-$name.log"; then
    echo "$name" >"$WORK/build_mode"
    return 0
  fi
  return 1
}
compile_failed() {  # the sources did not compile: another install method will not help
  grep -q -E '^[[:space:]]*FAILED: |ninja: build stopped|CMake Error' "$WORK/logs/build-$1.log"
}
# 1. editable, as `make build` does; 2. into $VS_SITE (site-packages not writable); 3. editable with
# pip's defaults (a pip too old for --config-settings); 4. without the CUDA kernels, so the Triton
# paths still get their evidence (exit 3: degraded; no CUDA pair can be verified then).
attempt editable-cudaON ON -e . --config-settings=build-dir=build/gpu-editable \
  --config-settings=editable.rebuild=false && exit 0
if ! compile_failed editable-cudaON; then
  attempt target-cudaON ON --target "$VS_SITE" --config-settings=build-dir=build/gpu-target . && exit 0
  attempt plain-cudaON ON -e . && exit 0
fi
attempt editable-cudaOFF OFF -e . --config-settings=build-dir=build/gpu-editable-nocuda \
  --config-settings=editable.rebuild=false && exit 3
exit 1
EOF

# ---- pytest options that depend on the installed plugins -----------------------------------------
PYTEST=("$PY" -m pytest -v -rfEs --tb=short --durations=15 -p no:cacheprovider)
if ! "$PY" -c "import pytest_benchmark" >/dev/null 2>&1; then
  PYTEST+=(-o "addopts=-ra")       # pyproject's addopts name --benchmark-disable
  HAVE_BENCH_PLUGIN=0
else
  HAVE_BENCH_PLUGIN=1
fi
if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then
  PYTEST+=(--timeout=240 -o timeout_method=signal)
fi

run_step() {
  local b=$OUT/bench
  case $1 in
    gpu_tests)
      step gpu_tests 330 60 "${PYTEST[@]}" tests -m gpu --continue-on-collection-errors \
        --junitxml="$OUT/gpu_tests.xml" --evidence-json="$OUT/gpu_tests.json" ;;
    backend_tests)
      # Tests without the gpu mark that do use the GPU when one is visible: every verify backend test
      # (they put their tensors on the GPU), the build facts, one Llama-3-8B-sized tree attention call.
      # (The unmarked tests of test_tree_attention_triton.py and test_commit_kv.py hand CPU tensors to
      # Triton: they need the interpreter, which conftest turns on only without a GPU; CI runs them.)
      step backend_tests 240 45 "${PYTEST[@]}" -m "not gpu" tests/test_verify_backends.py \
        tests/test_backends.py tests/test_native_module.py bench/bench_tree_attention.py::test_gpu_llama3_shape \
        --continue-on-collection-errors --junitxml="$OUT/backend_tests.xml" --evidence-json="$OUT/backend_tests.json" ;;
    bench_tests)
      if ((HAVE_BENCH_PLUGIN == 0)); then
        say "=== bench_tests: SKIPPED (pytest-benchmark not installed)"
        record bench_tests skipped "" 0 "pytest-benchmark not installed"
        return 0
      fi
      mkdir -p "$b/bench_tests"
      # pytest-benchmark at the issue's verify shape (B=64, K=4, V=128256), every backend and case;
      # each test also checks the GPU backends' tokens against the torch backend.
      step bench_tests 120 40 "${PYTEST[@]}" bench/bench_verify.py -k "64-4-128256" --benchmark-enable \
        --benchmark-json="$b/bench_tests/pytest_benchmark.json" --benchmark-columns=min,median,max,rounds \
        --junitxml="$OUT/bench_tests.xml" --evidence-json="$OUT/bench_tests.json" ;;
    verify_quick)
      mkdir -p "$b/verify_quick"
      step verify_quick 150 40 "$PY" bench/bench_verify.py --quick --out "$b/verify_quick" ;;
    verify_full)
      mkdir -p "$b/verify_full"
      step verify_full 300 60 "$PY" bench/bench_verify.py --out "$b/verify_full" ;;
    tree_quick)
      mkdir -p "$b/tree_quick"
      step tree_quick 240 60 "$PY" bench/bench_tree_attention.py --quick --out "$b/tree_quick" ;;
    tree_b1)
      mkdir -p "$b/tree_b1"
      step tree_b1 300 60 "$PY" bench/bench_tree_attention.py --B 1 \
        --peers verispec_triton,verispec_triton_tuned,verispec_cuda,sdpa_dense,sdpa_causal --out "$b/tree_b1" ;;
    tree_b8_32)
      mkdir -p "$b/tree_b8_32"
      step tree_b8_32 400 60 "$PY" bench/bench_tree_attention.py --B 8,32 \
        --peers verispec_triton,verispec_cuda,sdpa_dense,sdpa_causal --out "$b/tree_b8_32" ;;
    commit_quick)
      mkdir -p "$b/commit_quick"
      step commit_quick 150 60 "$PY" bench/bench_commit_kv.py --quick --out "$b/commit_quick" ;;
    commit_full)
      mkdir -p "$b/commit_full"
      step commit_full 400 60 "$PY" bench/bench_commit_kv.py --out "$b/commit_full" ;;
    *)
      say "=== $1: unknown step (known: gpu_tests backend_tests bench_tests verify_quick verify_full tree_quick tree_b1 tree_b8_32 commit_quick commit_full)"
      record "$1" unknown "" 0 "unknown step name" ;;
  esac
}

finish() {
  trap - EXIT INT TERM
  say "=== done: mode $MODE, $(($(date +%s) - START))s of ${BUDGET}s"
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 | tee -a "$LOG"
  pack
  cat "$WORK/steps.tsv" "$OUT/summary.md" 2>/dev/null | head -c 9000
  echo
  ls -la "$OUT"
}
trap finish EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---- the session ----------------------------------------------------------------------------------
say "verispec GPU session: mode $MODE, steps: $STEPS; budget ${BUDGET}s; OUT=$OUT WORK=$WORK"
{
  echo "repo: $REPO ($(git rev-parse HEAD 2>/dev/null || echo "no .git; VS_COMMIT=${VS_COMMIT:-unset}"))"
  uname -a
  nvidia-smi 2>&1 || echo "nvidia-smi failed"
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], sys.executable); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None); print('triton', triton.__version__)" 2>&1
  df -h /tmp . 2>/dev/null | tail -n +1
} | tee -a "$LOG"

if [ "${VS_SKIP_BUILD:-0}" = 1 ]; then   # dry runs on a machine where verispec is already importable
  say "=== build: SKIPPED (VS_SKIP_BUILD=1)"
  record build skipped "" 0 "VS_SKIP_BUILD=1"
  echo "preinstalled" >"$WORK/build_mode"
else
  step build 330 0 bash "$WORK/build.sh"
fi
BUILD_MODE=$(cat "$WORK/build_mode" 2>/dev/null || echo failed)
case $BUILD_MODE in
  target-*) export PYTHONPATH="$VS_SITE${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
say "build mode: $BUILD_MODE"
step env 90 0 "$PY" tools/gpu_evidence.py env "$OUT/env.json"

for s in $STEPS; do
  run_step "$s"
done
# finish runs on EXIT
