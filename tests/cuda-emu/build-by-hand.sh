#!/bin/bash
# build-by-hand.sh — builds the CUDA emulator, kernels/*.cu, ops_cuda.c and the gpu suite's
# programs without meson (meson does the same with -Dcuda_emu=enabled: suite gpu-emu).
# Needs a CPU-only libmoire:  meson setup BUILD -Dcuda=disabled -Dgui=disabled -Dgimp=disabled
#                             && ninja -C BUILD engine/libmoire.a
# Usage: tests/cuda-emu/build-by-hand.sh BUILD OUT [extra flags, e.g. -fsanitize=address]
# Then:  MOIRE_TEST_DATA=$PWD/tests CUDA_EMU_ORDER=fwd|rev|random CUDA_EMU_STATS=1 OUT/test_cuda_ops
set -euo pipefail
R=$(cd "$(dirname "$0")/../.." && pwd)
B=$(cd "${1:?CPU-only build directory}" && pwd)
mkdir -p "${2:?output directory}"
O=$(cd "$2" && pwd)
shift 2
X="$*"
E=$R/tests/cuda-emu
CXXF="-std=c++17 -O2 -g -Wall -Wextra -Wno-unused-parameter -I$E/include $X"
# Kernel files: C++ with ThreadSanitizer's instrumentation only (no TSan runtime: the emulator
# defines the hooks, counts the global-memory bytes and checks every device access).
KF="-std=c++17 -O2 -g -ffp-contract=off -fno-thread-jumps -fsanitize=thread -Wall -Wno-unknown-pragmas -DMOIRE_CUDA_EMU -I$E/include -I$R/kernels -I$R/engine/backend"
CF="-std=c11 -O2 -g -D_GNU_SOURCE -fopenmp -DMOIRE_HAVE_CUDA=1 -DMOIRE_CUDA_EMU -I$E/include -I$R/kernels $(for l in include base io backend models sampling; do printf -- " -I$R/engine/%s" $l; done) -I$B/engine -I$R/tests $(pkg-config --cflags glib-2.0 json-glib-1.0) $X"
LIBS="$B/engine/libmoire.a -lopenblas $(pkg-config --libs glib-2.0 json-glib-1.0 libpng) -lm"
cd "$O"
for f in "$E"/src/*.cpp; do g++ $CXXF -c "$f" -o "emu_$(basename "$f" .cpp).o"; done
K=""
for f in "$R"/kernels/*.cu; do
    g++ $KF -x c++ -c "$f" -o "kernel_$(basename "$f" .cu).o"
    K="$K kernel_$(basename "$f" .cu).o"
done
gcc $CF -c "$R/kernels/ops_cuda.c" -o ops_cuda.o
gcc $CF -c "$R/kernels/ops_cuda_ops.c" -o ops_cuda_ops.o
gcc $CF -DMOIRE_DATADIR='"/nonexistent"' -DMOIRE_SOURCE_DATADIR="\"$R/data\"" -c "$R/engine/models/context.c" -o context_cuda.o
gcc $CF -c "$R/engine/models/bench.c" -o bench_cuda.o
gcc $CF -c "$R/engine/backend/backend_loader.c" -o backend_loader_cuda.o
gcc $CF -DMOIRE_TEST_DATA="\"$R/tests\"" -c "$R/tests/test_util.c" -o test_util.o
for t in ops golden kernels; do
    gcc $CF -DMOIRE_TEST_DATA="\"$R/tests\"" -c "$R/tests/gpu/test_cuda_$t.c" -o "test_cuda_$t.o"
    g++ -fopenmp $X -o "test_cuda_$t" "test_cuda_$t.o" test_util.o context_cuda.o bench_cuda.o \
        backend_loader_cuda.o ops_cuda.o ops_cuda_ops.o $K emu_*.o $LIBS
done
echo "built $O/test_cuda_ops $O/test_cuda_golden $O/test_cuda_kernels"
