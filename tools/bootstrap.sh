#!/bin/bash
# bootstrap.sh — installs what Moiré needs on Debian 12 (apt) and builds it into build/.
# Idempotent: re-running only rebuilds what changed. Used by the README commands and CI.
#   tools/bootstrap.sh            CPU build with the GTK studio app (gui=auto)
#   MOIRE_NO_GUI=1 MOIRE_MESON_ARGS="-Dgui=disabled" tools/bootstrap.sh   CPU-only, no GTK/GIMP
#   MOIRE_MESON_ARGS="-Dcuda=enabled" tools/bootstrap.sh   require the CUDA backend
#   MOIRE_MESON_ARGS="-Dcuda=disabled" tools/bootstrap.sh  no CUDA (default: auto, built when nvcc is found)
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: the CUDA emulator (tests/cuda-emu/, suite gpu-emu) that runs the CUDA backend on the CPU.
PACKAGES=(meson ninja-build pkg-config gcc g++ libc6-dev
          libopenblas-dev libjson-glib-dev libpng-dev libglib2.0-dev
          python3 python3-numpy)
# Moiré Studio (gui/) and its tests: GTK 4, translations, desktop-data validators, Xvfb for
# the `gui` suite, fonts and icons for screenshots. MOIRE_NO_GUI=1 skips them (CPU-only).
if [ -z "${MOIRE_NO_GUI:-}" ]; then
    PACKAGES+=(libgtk-4-dev gettext appstream desktop-file-utils xvfb xauth
               fonts-dejavu-core adwaita-icon-theme librsvg2-common)
    # The GIMP 2.10 plug-in (plugin/) and its `gimp` suite, which runs it in a real GIMP
    # (xdotool: gimp-undo presses Ctrl+Z in GUI GIMP).
    PACKAGES+=(gimp libgimp2.0-dev libgegl-dev xdotool)
fi

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

# The CUDA backend (kernels/) is compiled whenever nvcc is there (-Dcuda=auto), even on
# machines without a GPU (CI): the engine then falls back to the CPU and the gpu suite
# skips. nvcc is looked up on PATH, then in /usr/local/cuda/bin (through a native file:
# meson records the absolute path, so later `ninja` runs need no PATH change).
CUDA_NATIVE=()
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_NATIVE=(--native-file tools/cuda-native.ini)
fi

BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    # -Dgui=auto: the studio app is built when GTK 4 is there (MOIRE_NO_GUI=1 or
    # MOIRE_MESON_ARGS=-Dgui=disabled for the CPU-only build); -Dgimp=auto: the GIMP plug-in
    # when libgimp-2.0 and GEGL are there too.
    # shellcheck disable=SC2086
    meson setup "$BUILD_DIR" "${CUDA_NATIVE[@]}" -Dcuda=auto -Dgui=auto -Dgimp=auto ${MOIRE_MESON_ARGS:-} >&2
fi
ninja -C "$BUILD_DIR" >&2
