#!/bin/bash
# bootstrap.sh — installs what Moiré needs on Debian 12 (apt) and builds it into build/.
# Idempotent: re-running only rebuilds what changed. Used by the README commands and CI.
#   tools/bootstrap.sh            CPU-only build (always works)
#   MOIRE_MESON_ARGS="-Dcuda=enabled" tools/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(meson ninja-build pkg-config gcc libc6-dev
          libopenblas-dev libjson-glib-dev libpng-dev libglib2.0-dev
          python3 python3-numpy)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "bootstrap: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    # shellcheck disable=SC2086
    meson setup "$BUILD_DIR" -Dcuda=disabled -Dgui=disabled -Dgimp=disabled ${MOIRE_MESON_ARGS:-} >&2
fi
ninja -C "$BUILD_DIR" >&2
