/* launch.h — the one spelling of a kernel launch in kernels/, so the same .cu files compile
 * under nvcc and under the project's CUDA emulator (tests/cuda-emu/), with no rewriting of
 * the sources:
 *
 *     MK_LAUNCH(grid, block, shared_bytes, stream, kernel)(arguments...);
 *
 * The kernel comes last so a template with several arguments needs no extra parentheses:
 * MK_LAUNCH(grid, 256, 0, stream, gemm_kernel<uint16_t, true>)(out, a, w). Under nvcc it is
 * the <<< >>> launch; under the emulator (MOIRE_CUDA_EMU) the emulator's launcher, which runs
 * every thread of the grid as a fiber and checks the configuration like the device does.
 *
 *     MK_DYNAMIC_SHARED(float, tile);   (in a kernel: tile[i] is the launch's shared_bytes)
 *
 * is `extern __shared__ float tile[]` under nvcc. The emulator cannot take that spelling (a
 * __shared__ variable is a function-local static there, and a static needs a size), so
 * dynamic shared memory is always declared through this macro.
 */
#ifndef MOIRE_KERNELS_LAUNCH_H
#define MOIRE_KERNELS_LAUNCH_H

#ifdef MOIRE_CUDA_EMU
#include "cuda_emu_launch.h" /* tests/cuda-emu/include: defines CUDA_EMU_LAUNCH */
#define MK_LAUNCH(grid, block, shared_bytes, stream, ...)                                  \
    CUDA_EMU_LAUNCH(grid, block, shared_bytes, stream, __VA_ARGS__)
#define MK_DYNAMIC_SHARED(type, name) type *const name = (type *)::cuda_emu::dynamic_shared()
#else
#define MK_LAUNCH(grid, block, shared_bytes, stream, ...)                                  \
    __VA_ARGS__<<<(grid), (block), (shared_bytes), (stream)>>>
#define MK_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#endif /* MOIRE_KERNELS_LAUNCH_H */
