/* cuda_runtime.h (CUDA emulator) — the runtime API, plus the device side when compiled as
 * C++ (the .cu files, built by g++ -x c++ against tests/cuda-emu/). */
#ifndef CUDA_EMU_CUDA_RUNTIME_H
#define CUDA_EMU_CUDA_RUNTIME_H

#include "cuda_runtime_api.h"
#ifdef __cplusplus
#include "cuda_emu_device.h"
#include "cuda_emu_launch.h"
#endif

#endif
