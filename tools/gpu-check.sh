#!/bin/bash
# gpu-check.sh — the first thing to run on a machine with a GPU (an H100 with 16 cores, no
# network, the toolkit installed): one call that answers "does the CUDA backend build, pass
# and how fast is it". It
#   1. records the device (nvidia-smi, nvcc) and stops cleanly with "no device" where none is;
#   2. configures a CUDA build for the device's own architecture (build-cuda, release);
#   3. builds it;
#   4. runs the gpu suite on the device (tests/gpu: cuda_kernels, cuda_ops, cuda_golden,
#      cuda_auto against the CPU reference);
#   5. runs `moire bench` for every geometry (bf16, CFG; XL also with 8 images) and puts the
#      measured ms/step beside the performance model's prediction (moire-perf-model);
#   6. runs compute-sanitizer memcheck on the small cases (if compute-sanitizer exists);
#   7. if time is left and nsys exists, profiles three XL steps (per-kernel device times);
# and writes every log and a summary.md under $OUT (default ./gpu-check-out). It fails
# soft: every step runs under its own timeout, within a total budget (GPU_CHECK_BUDGET_S,
# default 570 s, so that the whole call stays under 10 minutes), and the summary records each
# step's exit status and time (124 = its timeout). The script's exit status is 0 when every
# step that ran passed, 1 otherwise, 3 when there is no device.
#   tools/gpu-check.sh
#   OUT=/tmp/x GPU_CHECK_QUICK=1 tools/gpu-check.sh   no sanitizer, no 8-image bench
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-$PWD/gpu-check-out}
BUILD=${BUILD_DIR:-build-cuda}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
export PATH="$PATH:/usr/local/cuda/bin"
START=$SECONDS
SUMMARY=$OUT/summary.md
STEPS=()    # names, in order
declare -A RC SECS NOTE
failed=0

remaining() { echo $((BUDGET - (SECONDS - START))); }

# skip NAME WHY: a step that cannot run, recorded as skipped.
skip() {
    STEPS+=("$1")
    RC[$1]=skipped SECS[$1]=0 NOTE[$1]=$2
    echo "== $1: skipped ($2)"
}

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with its output in $OUT/NAME.log, under
# min(TIMEOUT_S, what is left of the budget); records its exit status and time.
step() {
    local name=$1 limit=$2
    shift 2
    local left
    left=$(remaining)
    STEPS+=("$name")
    if [ "$left" -lt 5 ]; then
        RC[$name]=skipped SECS[$name]=0 NOTE[$name]="no time left in the ${BUDGET} s budget"
        echo "== $name: skipped (budget spent)"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit} s): $*"
    local t0=$SECONDS
    { echo "\$ $*"; echo; } >"$OUT/$name.log"
    timeout --kill-after=10 "$limit" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    RC[$name]=$rc SECS[$name]=$((SECONDS - t0))
    [ "$rc" = 124 ] && NOTE[$name]="timed out after ${limit} s"
    [ "$rc" != 0 ] && failed=1
    echo "   rc=$rc (${SECS[$name]} s), $OUT/$name.log"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'
    return "$rc"
}

write_summary() {
    {
        echo "# gpu-check $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
        echo "- device: ${DEVICE_LINE:-none}"
        echo "- total: $((SECONDS - START)) s of a ${BUDGET} s budget; logs in this folder"
        echo
        echo "| step | status | seconds | note |"
        echo "|---|---|---:|---|"
        local s status
        for s in "${STEPS[@]}"; do
            case "${RC[$s]}" in
            0) status=ok ;;
            77) status="skipped (77)" ;;
            3) status="no device" ;;
            skipped) status=skipped ;;
            *) status="FAILED (rc ${RC[$s]})" ;;
            esac
            echo "| $s | $status | ${SECS[$s]} | ${NOTE[$s]:-} |"
        done
        if [ -s "$OUT/perf-table.txt" ]; then
            echo
            echo "## Predicted (engine/models/perf_model.c, H100 SXM) beside measured (moire bench)"
            echo
            echo '```'
            cat "$OUT/perf-table.txt"
            echo '```'
        fi
        if [ -s "$OUT/gpu-suite-results.txt" ]; then
            echo
            echo "## gpu suite"
            echo
            echo '```'
            cat "$OUT/gpu-suite-results.txt"
            echo '```'
        fi
    } >"$SUMMARY"
}

# ---- 1. the device -------------------------------------------------------------------------
{
    echo "\$ nvidia-smi"; timeout 20 nvidia-smi 2>&1
    echo; echo "\$ nvidia-smi -q"; timeout 20 nvidia-smi -q 2>&1
    echo; echo "\$ nvcc --version"; timeout 20 nvcc --version 2>&1
    echo; echo "\$ compute-sanitizer --version"; timeout 20 compute-sanitizer --version 2>&1
    echo; echo "\$ nproc; free -g"; nproc; free -g
} >"$OUT/device.txt" 2>&1
DEVICE_LINE=$(timeout 20 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version \
    --format=csv,noheader 2>/dev/null | head -n 1)
STEPS+=(device)
SECS[device]=$((SECONDS - START))
if [ -z "$DEVICE_LINE" ]; then
    RC[device]=3 NOTE[device]="no device: nvidia-smi is missing or sees no GPU (device.txt); nothing else was run"
    echo "gpu-check: no device (nvidia-smi found no GPU); summary in $SUMMARY"
    write_summary
    exit 3
fi
RC[device]=0 NOTE[device]="$DEVICE_LINE"
echo "gpu-check: $DEVICE_LINE"

# ---- 2-3. configure and build for this device's architecture ------------------------------
# kernels/meson.build compiles sm_90 (+ compute_90 PTX); another GPU gets its own machine code
# through NVCC_APPEND_FLAGS (e.g. compute_cap 8.0 → sm_80), so the build tests what runs.
CAP=$(echo "$DEVICE_LINE" | awk -F', *' '{print $2}' | tr -d '.')
if [ -n "$CAP" ] && [ "$CAP" != 90 ]; then
    export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} -gencode=arch=compute_${CAP},code=sm_${CAP}"
    NOTE[device]="$DEVICE_LINE; built for sm_${CAP} too"
fi
NATIVE=()
if ! command -v nvcc >/dev/null 2>&1 || [ "$(command -v nvcc)" = /usr/local/cuda/bin/nvcc ]; then
    NATIVE=(--native-file tools/cuda-native.ini)
fi
if [ ! -f "$BUILD/build.ninja" ]; then
    step configure 120 meson setup "$BUILD" "${NATIVE[@]}" -Dcuda=enabled -Dgui=disabled \
        -Dgimp=disabled -Dgpu_emu=disabled -Dbuildtype=release
else # ninja re-runs meson itself when a meson.build changed
    skip configure "$BUILD exists (configured before; ninja reconfigures when needed)"
fi
step build 330 ninja -C "$BUILD" -j "$(nproc)"
MOIRE="$BUILD/engine/moire"
built=1
if [ "${RC[build]}" != 0 ] || [ ! -x "$MOIRE" ]; then
    built=0
    NOTE[build]="${NOTE[build]:+${NOTE[build]}; }the build did not finish: the steps after it are skipped"
fi

# ---- 4. the gpu suite on the device --------------------------------------------------------
export MOIRE_TEST_DATA=$PWD/tests
if [ "$built" = 1 ]; then
    step gpu_suite 180 meson test -C "$BUILD" --suite gpu --print-errorlogs --no-rebuild
    cp "$BUILD/meson-logs/testlog.txt" "$OUT/gpu-testlog.txt" 2>/dev/null
    grep -E '^ *[0-9]+/[0-9]+ ' "$OUT/gpu_suite.log" >"$OUT/gpu-suite-results.txt" 2>/dev/null
else
    skip gpu_suite "no build"
fi

# ---- 5. moire bench, beside the model's prediction ----------------------------------------
if [ "$built" = 1 ]; then
    step bench 150 "$MOIRE" bench --device cuda --precision bf16 --steps 10
else
    skip bench "no build"
fi
if [ "$built" = 1 ] && [ -z "${GPU_CHECK_QUICK:-}" ]; then
    step bench_batch8 60 "$MOIRE" bench --device cuda --precision bf16 --geometry XL/2 \
        --batch 8 --steps 5
fi
cat "$OUT/bench.log" "$OUT/bench_batch8.log" >"$OUT/bench-all.txt" 2>/dev/null
if [ -x "$BUILD/tools/moire-perf-model" ]; then
    step perf_model 20 "$BUILD/tools/moire-perf-model" --measured "$OUT/bench-all.txt"
    tail -n +3 "$OUT/perf_model.log" >"$OUT/perf-table.txt"
    "$BUILD/tools/moire-perf-model" --kernels XL/2 >"$OUT/perf-model-xl-kernels.txt" 2>&1
fi

# ---- 6. compute-sanitizer memcheck on the small cases (last: the slowest) ----------------
if [ "$built" = 1 ] && [ -z "${GPU_CHECK_QUICK:-}" ] && command -v compute-sanitizer >/dev/null 2>&1; then
    # the kernels' quick shape set (the one CI runs in the emulator) and the known-answer check
    step memcheck_kernels 120 env MOIRE_KERNELS_TEST_QUICK=1 compute-sanitizer \
        --tool memcheck --error-exitcode 1 "$BUILD/tests/gpu/test_cuda_kernels"
    step memcheck_auto 60 compute-sanitizer --tool memcheck --leak-check full \
        --error-exitcode 1 "$BUILD/tests/gpu/test_cuda_auto"
    # a whole generation replayed from CUDA graphs (the capture/replay path)
    step memcheck_graph 120 compute-sanitizer --tool memcheck --error-exitcode 1 \
        "$BUILD/tests/gpu/test_cuda_graph"
fi

# ---- 7. per-kernel device times (nsys), when there is time left -----------------------------
# What to hold against `moire-perf-model --kernels XL/2` (perf-model-xl-kernels.txt).
if [ "$built" = 1 ] && command -v nsys >/dev/null 2>&1 && [ "$(remaining)" -gt 60 ]; then
    step nsys_xl 90 nsys profile -o "$OUT/xl" --force-overwrite true --stats=true \
        "$MOIRE" bench --device cuda --precision bf16 --geometry XL/2 --steps 3
fi

write_summary
echo "gpu-check: done in $((SECONDS - START)) s; summary in $SUMMARY"
exit "$failed"
