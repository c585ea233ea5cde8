#!/bin/bash
# fuzz.sh — builds the libFuzzer targets of tests/fuzz/ (clang, libFuzzer + ASan + UBSan,
# -fno-sanitize-recover) against the engine's readers and runs them.
#
#   tools/fuzz.sh build                      build every target into $FUZZ_OUT (build-fuzz/)
#   tools/fuzz.sh run TARGET SECONDS [flags] fuzz one target, growing $FUZZ_OUT/corpus/TARGET
#   tools/fuzz.sh ci [SECONDS]               build, then run each target SECONDS (default 30)
#                                            over a copy of the committed corpus; exit 0 when
#                                            nothing was found, 1 on a finding, 77 when clang
#                                            or libFuzzer is missing (meson's "skip")
#
# Targets (tests/fuzz/fuzz_TARGET.c): readers (.pt / zip / pickle / safetensors), json (the
# JSON gate, safetensors headers, A1111 parameters text), png (texts without pixels, the
# decoder), npy, model (a whole model load with its -levels companion). Each runs with
# -max_len=524288 and its dictionary tests/fuzz/dict/TARGET.dict. Seeds:
# tests/fuzz/corpus/TARGET/. Crashes land in $FUZZ_OUT/artifacts/TARGET/, logs in
# $FUZZ_OUT/TARGET.log. Needs clang and libclang-rt-14-dev (tools/bootstrap.sh installs them)
# plus the engine's build dependencies.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
targets=(readers json png npy model)
max_len=524288

have_libfuzzer() {
    command -v "${CC_FUZZ:-clang}" >/dev/null 2>&1 || return 1
    local probe
    probe=$(mktemp -d)
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){return 0;}\n' \
        >"$probe/p.c"
    "${CC_FUZZ:-clang}" -fsanitize=fuzzer,address "$probe/p.c" -o "$probe/p" >/dev/null 2>&1
    local rc=$?
    rm -rf "$probe"
    return $rc
}

build() {
    local cc=${CC_FUZZ:-clang}
    local flags=(-g -O1 -std=c11 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
                 -fsanitize=address,undefined -fno-sanitize-recover=undefined
                 -fno-omit-frame-pointer
                 -DMOIRE_DATADIR='""' -DMOIRE_SOURCE_DATADIR="\"$root/data\"")
    # every layer of the engine (engine/meson.build's engine_inc)
    local layer
    for layer in include base io backend models sampling; do flags+=(-I"$root/engine/$layer"); done
    local pkg libs blas blas_libs
    pkg=$(pkg-config --cflags glib-2.0 json-glib-1.0 libpng)
    libs=$(pkg-config --libs glib-2.0 json-glib-1.0 libpng)
    blas=$(pkg-config --cflags openblas 2>/dev/null || pkg-config --cflags cblas)
    blas_libs=$(pkg-config --libs openblas 2>/dev/null || pkg-config --libs cblas)
    mkdir -p "$out/obj"
    # the whole engine, no OpenMP (the fuzzer runs single-threaded); objects are rebuilt only
    # when their source or a header is newer, two at a time
    local newest_header
    newest_header=$(ls -t "$root"/engine/*/*.h | head -n 1)
    local objs=() pids=()
    for src in "$root"/engine/{base,io,backend,models,sampling}/*.c; do
        local obj="$out/obj/$(basename "${src%.c}").o"
        objs+=("$obj")
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then
            # shellcheck disable=SC2086
            "$cc" "${flags[@]}" -fsanitize=fuzzer-no-link $pkg $blas -c "$src" -o "$obj" &
            pids+=($!)
            if ((${#pids[@]} >= 2)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    for target in "${targets[@]}"; do
        # shellcheck disable=SC2086
        "$cc" "${flags[@]}" -fsanitize=fuzzer $pkg $blas "$root/tests/fuzz/fuzz_$target.c" \
            "${objs[@]}" $libs $blas_libs -lm -o "$out/fuzz_$target"
    done
}

run() {
    local target=$1 seconds=$2
    shift 2
    local corpus="$out/corpus/$target"
    mkdir -p "$corpus" "$out/artifacts/$target"
    for f in "$root/tests/fuzz/corpus/$target"/*; do
        [ -f "$f" ] && cp -n "$f" "$corpus/" || true
    done
    if [ "$target" = readers ]; then # the .pt fixtures (small ones) seed the readers too
        for f in "$root"/tests/fixtures/pt/*; do
            [ -f "$f" ] && [ "$(stat -c %s "$f")" -le $max_len ] && cp -n "$f" "$corpus/" || true
        done
    fi
    (cd "$out" && "$out/fuzz_$target" -max_total_time="$seconds" -max_len=$max_len \
        -dict="$root/tests/fuzz/dict/$target.dict" -timeout=60 -len_control=0 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$target/" "$@" "$corpus" \
        2>&1 | tee "$out/$target.log")
}

case ${1:-} in
build)
    build
    ;;
run)
    [ $# -ge 3 ] || { echo "usage: tools/fuzz.sh run TARGET SECONDS [libFuzzer flags]" >&2; exit 2; }
    run "${@:2}"
    ;;
ci)
    seconds=${2:-30}
    if ! have_libfuzzer; then
        echo "fuzz: clang with libFuzzer is not installed (apt-get install clang libclang-rt-14-dev); skipping"
        exit 77
    fi
    build
    failures=0
    for target in "${targets[@]}"; do
        # a fresh copy of the committed corpus, so CI never grows tests/ or reuses old state
        rm -rf "$out/corpus/$target" "$out/artifacts/$target"
        if run "$target" "$seconds" >/dev/null 2>&1; then
            echo "OK     fuzz $target: $(grep -E '^stat::number_of_executed_units' "$out/$target.log" | awk '{print $2}') executions in ${seconds} s, $(grep -oE 'cov: [0-9]+' "$out/$target.log" | tail -n 1)"
        else
            failures=$((failures + 1))
            echo "NOT OK fuzz $target: a finding, see $out/$target.log and $out/artifacts/$target/"
            tail -n 40 "$out/$target.log"
        fi
    done
    echo "fuzz: checks: ${#targets[@]}, failures: $failures"
    [ $failures -eq 0 ]
    ;;
*)
    echo "usage: tools/fuzz.sh build | run TARGET SECONDS [flags] | ci [SECONDS]" >&2
    exit 2
    ;;
esac
