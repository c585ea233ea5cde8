#!/bin/bash
# check_engine_includes.sh — the engine's layering (docs/ENGINE.md, "Layers"), checked three ways:
#  1. the engine includes no GTK, GIMP, GLib GUI stack or CUDA header: it is the library every
#     host links, and the CPU build must stand alone;
#  2. every #include "X.h" in engine/, kernels/ and the hosts (engine/cli/, gui/, plugin/)
#     names a header of a layer the includer may use (the LAYERS map below, the same as
#     docs/ENGINE.md's): the hosts see include/ only, io/ never sees models/, and so on;
#  3. (with LIBMOIRE, the built libmoire.a) no import cycle between the engine's source files:
#     file A imports file B when A's object uses a symbol B's object defines (nm), and
#     `tsort` must order that graph. Anyone can run it on a build:
#         tests/check_engine_includes.sh engine build/engine/libmoire.a
# Usage: check_engine_includes.sh ENGINE_DIR [LIBMOIRE]
set -u
dir=${1:?engine directory}
lib=${2:-}
root=$(cd "$dir/.." && pwd)
checks=0
failures=0

fail() { failures=$((failures + 1)); echo "$1"; }

# 1. no host or CUDA header in the engine
checks=$((checks + 1))
bad=$(grep -rnE '#\s*include\s*[<"](gtk/|gdk/|gio/gio|libgimp|gegl|cuda|cublas|cuda_runtime)' \
      "$dir" --include='*.c' --include='*.h' || true)
if [ -n "$bad" ]; then
    fail "engine includes a host or CUDA header:"
    echo "$bad"
fi

# 2. the layer map: which layer's headers each folder may include (its own always)
declare -A LAYERS=(
    [engine/include]="include"
    [engine/base]="include base"
    [engine/io]="include base io"
    [engine/backend]="include base backend"
    [engine/models]="include base io backend models"
    [engine/sampling]="include base io backend models sampling"
    [kernels]="include base backend"
    [engine/cli]="include"
    [gui]="include"
    [gui/studio]="include"
    [plugin]="include"
)
# header name → the engine layer that holds it
declare -A HEADER_LAYER=()
for layer_dir in "$dir"/*/; do
    layer=$(basename "$layer_dir")
    [ "$layer" = cli ] && continue
    for h in "$layer_dir"*.h; do
        [ -e "$h" ] && HEADER_LAYER[$(basename "$h")]=$layer
    done
done
checks=$((checks + 1))
for folder in "${!LAYERS[@]}"; do
    [ -d "$root/$folder" ] || continue
    allowed=" ${LAYERS[$folder]} "
    for src in "$root/$folder"/*.c "$root/$folder"/*.h "$root/$folder"/*.cu "$root/$folder"/*.cuh; do
        [ -e "$src" ] || continue
        while IFS= read -r header; do
            layer=${HEADER_LAYER[$header]:-}
            [ -z "$layer" ] && continue # not an engine header (the folder's own, config.h, …)
            if [[ "$allowed" != *" $layer "* ]]; then
                fail "${src#"$root"/} includes $header (engine/$layer/): $folder may include only: ${LAYERS[$folder]}"
            fi
        done < <(sed -nE 's/^\s*#\s*include\s*"([^"]+)".*/\1/p' "$src")
    done
done
# every source is in a layer folder (a file at engine/'s root would be in no layer)
for src in "$dir"/*.c "$dir"/*.h; do
    [ -e "$src" ] && fail "engine/$(basename "$src") is in no layer: move it into the layer folder it belongs to (docs/ENGINE.md)"
done
# every engine folder is in the map, so a new layer cannot slip past the check
for layer_dir in "$dir"/*/; do
    folder=engine/$(basename "$layer_dir")
    [ -n "${LAYERS[$folder]:-}" ] || fail "$folder/ is not in the layer map of $0 (and docs/ENGINE.md)"
done

# 3. no import cycle between the engine's files (symbol level, from the built library)
if [ -n "$lib" ]; then
    checks=$((checks + 1))
    if ! command -v nm >/dev/null || ! command -v tsort >/dev/null; then
        echo "nm or tsort not found: the import-cycle check needs binutils and coreutils"
        exit 77
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # "member symbol" lines; members are named LAYER_FILE.c.o by meson
    nm -A --defined-only -g "$lib" 2>/dev/null |
        awk '$(NF-1) ~ /^[TDBRVW]$/ { split($1, p, ":"); sub(/.*\//, "", p[2]); print $NF, p[2] }' | sort -u > "$tmp/defs"
    nm -A -u "$lib" 2>/dev/null | awk '{ split($1, p, ":"); sub(/.*\//, "", p[2]); print $NF, p[2] }' | sort -u > "$tmp/uses"
    join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 { print $2, $3 }' | sort -u > "$tmp/edges"
    if [ ! -s "$tmp/edges" ]; then
        fail "no import edges read from $lib (is it the built libmoire.a?)"
    elif ! tsort "$tmp/edges" > /dev/null 2> "$tmp/loops"; then
        fail "import cycle between engine files (A B = A uses a symbol B defines):"
        sed -n 's/^tsort: //p' "$tmp/loops" | grep -v 'input contains a loop'
        echo "(the edges: nm -A --defined-only -g / nm -A -u on $lib, as in $0)"
    fi
fi

echo "engine_includes: checks: $checks, failures: $failures"
[ "$failures" -eq 0 ]
