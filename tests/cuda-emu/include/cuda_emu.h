/* cuda_emu.h — what the CUDA emulator (tests/cuda-emu/) counted, for tests that assert on it
 * ("0 device allocations and 0 host synchronisations during this forward"). C11 and C++.
 *
 * Counted since the start or the last cuda_emu_counters_reset():
 *   launches          kernels and cuBLASLt matmuls that ran (graph replays included)
 *   host_syncs        calls that block the host until device work is done: stream, event and
 *                     device synchronisation, cudaMemcpy, a device-to-host copy into pageable
 *                     memory, cudaFree (which waits for the device)
 *   device_allocs/frees  cudaMalloc / cudaFree calls (not host or pinned memory)
 *   bytes_read/written   global (device) memory touched by kernels, cuBLASLt and copies; the
 *                     kernels' own accesses are counted when their files were built with
 *                     the emulator's access hooks (-fsanitize=thread, see docs/CUDA.md)
 * CUDA_EMU_STATS=1 prints the per-kernel table at exit. */
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuda_emu_counters {
    uint64_t launches;
    uint64_t graph_launches;
    uint64_t host_syncs;
    uint64_t device_allocs;
    uint64_t device_frees;
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t copies_to_device, copies_to_host; /* cudaMemcpy[Async] calls by direction */
} cuda_emu_counters;

typedef struct cuda_emu_kernel_counters {
    const char *name; /* demangled, without the parameter list */
    uint64_t launches, blocks, threads, bytes_read, bytes_written;
} cuda_emu_kernel_counters;

void cuda_emu_counters_get(cuda_emu_counters *out);
void cuda_emu_counters_reset(void);
/* The per-kernel rows (in name order); returns how many exist, fills at most `capacity`. */
int cuda_emu_kernel_counters_get(cuda_emu_kernel_counters *rows, int capacity);
/* The table CUDA_EMU_STATS=1 prints at exit. */
void cuda_emu_print_stats(FILE *out);

#ifdef __cplusplus
}
#endif

#endif
