#!/bin/bash
# gpu-check.sh — the first thing to run on a machine with a GPU (H100): builds the CUDA
# backend, runs the gpu suite, compute-sanitizer memcheck on it, and `moire bench`, writing
# everything under $OUT (default: ./gpu-check-out). Each step goes on after a failure; the
# summary at the end says which passed.
#   tools/gpu-check.sh                 all steps
#   GPU_CHECK_QUICK=1 tools/gpu-check.sh   skip the sanitizer and the big bench rows
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
BUILD=${BUILD_DIR:-build-cuda}
mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
declare -A result

step() { # name, command...
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    local start=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    result[$name]=$rc
    echo "   rc=$rc ($((SECONDS - start)) s), log: $OUT/$name.log" | tee -a "$OUT/summary.txt"
    tail -n 15 "$OUT/$name.log"
    return 0
}

: >"$OUT/summary.txt"
{ nvidia-smi; nvcc --version; } >"$OUT/device.txt" 2>&1
if [ ! -f "$BUILD/build.ninja" ]; then
    step configure meson setup "$BUILD" -Dcuda=enabled -Dgui=disabled -Dgimp=disabled
fi
step build ninja -C "$BUILD"
step gpu_suite meson test -C "$BUILD" --suite gpu --print-errorlogs -v
cp "$BUILD/meson-logs/testlog.txt" "$OUT/gpu-testlog.txt" 2>/dev/null
step all_suites meson test -C "$BUILD" --print-errorlogs
if [ -z "${GPU_CHECK_QUICK:-}" ] && command -v compute-sanitizer >/dev/null; then
    export MOIRE_TEST_DATA=$PWD/tests
    step memcheck_ops compute-sanitizer --tool memcheck --leak-check full --error-exitcode 1 \
        "$BUILD/tests/gpu/test_cuda_ops"
    step memcheck_golden compute-sanitizer --tool memcheck --error-exitcode 1 \
        "$BUILD/tests/gpu/test_cuda_golden"
    step memcheck_graph compute-sanitizer --tool memcheck --error-exitcode 1 \
        "$BUILD/tests/gpu/test_cuda_graph"
    step racecheck_route compute-sanitizer --tool racecheck --error-exitcode 1 \
        "$BUILD/tests/gpu/test_cuda_ops"
fi
step bench_fp32_small "$BUILD/engine/moire" bench --device cuda --precision fp32 \
    --geometry S/2,B/2 --steps 5
if [ -z "${GPU_CHECK_QUICK:-}" ]; then
    step bench_bf16 "$BUILD/engine/moire" bench --device cuda --precision bf16
    step bench_bf16_batch8 "$BUILD/engine/moire" bench --device cuda --precision bf16 \
        --geometry XL/2 --batch 8 --steps 5
    if command -v nsys >/dev/null; then
        step nsys_xl nsys profile -o "$OUT/xl" --force-overwrite true \
            "$BUILD/engine/moire" bench --device cuda --geometry XL/2 --steps 3
    fi
fi
echo "== summary" | tee -a "$OUT/summary.txt"
for name in "${!result[@]}"; do
    printf '%-20s %s\n' "$name" "$([ "${result[$name]}" = 0 ] && echo ok || echo "FAILED (${result[$name]})")"
done | sort | tee -a "$OUT/summary.txt"
