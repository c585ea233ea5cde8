#!/bin/bash
# fuzz.sh — builds tests/fuzz/fuzz_readers.c (libFuzzer + ASan + UBSan, clang) against the
# engine's untrusted-input readers and runs it. Not part of CI.
#
# Usage: tools/fuzz.sh [SECONDS] [extra libFuzzer flags…]      (default 600 s, one job)
# Needs: clang and libclang-rt-14-dev (provides -fsanitize=fuzzer), plus the engine's
# build dependencies (glib, json-glib). Output: build-fuzz/fuzz_readers, the growing corpus
# in build-fuzz/corpus (seeded from tests/fuzz/corpus and tests/fixtures/pt), crash files
# in build-fuzz/artifacts/, and the run log in build-fuzz/fuzz.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build-fuzz"
seconds=${1:-600}
shift || true
mkdir -p "$out/corpus" "$out/artifacts"

cc=${CC_FUZZ:-clang}
flags=(-g -O1 -std=c11 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -I"$root/engine")
pkg=$(pkg-config --cflags --libs glib-2.0 json-glib-1.0 libpng)
blas=$(pkg-config --cflags --libs openblas 2>/dev/null || pkg-config --cflags --libs cblas)
# the whole engine (pt_reader.c pulls in model.c for convert, which pulls in the rest);
# no OpenMP, so the fuzzer runs single-threaded
srcs=("$root"/engine/*.c)
pkg="$pkg $blas"
# shellcheck disable=SC2086
"$cc" "${flags[@]}" -DMOIRE_DATADIR='""' -DMOIRE_SOURCE_DATADIR="\"$root/data\"" \
    "$root/tests/fuzz/fuzz_readers.c" "${srcs[@]}" $pkg -lm -o "$out/fuzz_readers"

# seeds: the committed corpus plus the fixtures (small files only)
for f in "$root"/tests/fuzz/corpus/* "$root"/tests/fixtures/pt/*; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp -n "$f" "$out/corpus/" || true
done

cd "$out"
"$out/fuzz_readers" -max_total_time="$seconds" -jobs=1 -workers=1 -max_len=65536 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
    "$@" "$out/corpus" 2>&1 | tee "$out/fuzz.log"
