#!/bin/bash
# check_engine_includes.sh — the engine must not include GTK, GIMP, GLib's GUI stack or CUDA:
# it is the library every host links, and the CPU build must stand alone.
# Usage: check_engine_includes.sh ENGINE_DIR
set -u
dir=${1:?engine directory}
bad=$(grep -rnE '#\s*include\s*[<"](gtk/|gdk/|gio/gio|libgimp|gegl|cuda|cublas|cuda_runtime)' "$dir" --include='*.c' --include='*.h' || true)
if [ -n "$bad" ]; then
    echo "engine includes a host or CUDA header:"
    echo "$bad"
    echo "engine_includes: checks: 1, failures: 1"
    exit 1
fi
echo "engine_includes: checks: 1, failures: 0"
