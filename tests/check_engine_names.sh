#!/usr/bin/env bash
# check_engine_names.sh — the naming rule of docs/ENGINE.md ("Names"): `moire_` is the public
# API only. Fails when the built libmoire defines a global function whose name starts with
# `moire_` but no header of engine/include declares it (an internal function must carry its
# module's prefix instead: error_, arena_, ops_cpu_, sampler_, generate_, …).
#
#   tests/check_engine_names.sh ENGINE_DIR LIBMOIRE   (e.g. engine build/engine/libmoire.a)
set -u
engine=${1:?usage: $0 ENGINE_DIR LIBMOIRE}
lib=${2:?usage: $0 ENGINE_DIR LIBMOIRE}
if ! command -v nm >/dev/null; then
    echo "nm not found: the name check needs binutils"
    exit 77
fi
[ -f "$lib" ] || { echo "FAIL: $lib not found (build libmoire first)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# every identifier that engine/include declares as a function: NAME followed by "("
cat "$engine"/include/*.h | grep -oE '\bmoire_[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' |
    sort -u > "$tmp/public"
# the global functions the library defines
nm --defined-only -g "$lib" 2>/dev/null | awk '$2 == "T" && $3 ~ /^moire_/ { print $3 }' |
    sort -u > "$tmp/defined"
if [ ! -s "$tmp/public" ]; then
    echo "FAIL: no moire_ functions read from $engine/include/*.h"
    exit 1
fi
comm -23 "$tmp/defined" "$tmp/public" > "$tmp/internal"
if [ -s "$tmp/internal" ]; then
    echo "FAIL: internal functions named moire_* (not declared in $engine/include); give them"
    echo "their module's prefix (docs/ENGINE.md, \"Names\"):"
    sed 's/^/  /' "$tmp/internal"
    exit 1
fi
echo "engine_names: $(wc -l < "$tmp/defined") public moire_ functions defined, none internal"
