/* internal.h — what the parts of the CUDA emulator share: reporting, device memory, counters,
 * kernel identities and the stream work queues. Not part of the emulated API. */
#ifndef CUDA_EMU_INTERNAL_H
#define CUDA_EMU_INTERNAL_H

#include "cuda_emu.h"
#include "cuda_emu_launch.h"
#include "cuda_runtime_api.h"

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace cuda_emu {

/* ---- reporting ------------------------------------------------------------------------- */

/* A bug in the program under test that the device would turn into undefined behaviour, a hang
 * or a sticky error: printed with the kernel, block and thread it happened in, then abort(). */
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A misuse the API reports through its return value: printed (the project's errors name the
 * call, not the cause), and the caller returns the error. */
void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The big lock: the emulated device runs one piece of work at a time. */
std::recursive_mutex &api_lock();

/* ---- device memory (memory.cpp) -------------------------------------------------------- */

struct allocation {
    uintptr_t base;
    size_t bytes;
};
/* Whether [p, p + bytes) lies in one live device allocation (out: it). */
bool device_range(const void *p, size_t bytes, allocation *out = nullptr);
/* Whether p points anywhere into the device address range (live, freed or between). */
bool in_device_space(const void *p);
bool is_pinned_host(const void *p, size_t bytes);
std::map<uintptr_t, size_t> &pinned_registry(); /* base → bytes */
cudaError_t device_malloc(void **ptr, size_t bytes);
cudaError_t device_free(void *ptr);
size_t device_bytes_in_use();
size_t device_memory_total();
/* While device work runs the device range is readable and writable; outside it, host code
 * that dereferences a device pointer faults and is reported (CUDA_EMU_PROTECT=0: off). */
void device_memory_open();
void device_memory_close();
/* For the access hooks (access_hooks.cpp): the device range, the recently hit allocations,
 * the running block's dynamic shared memory, and the report of a bad access. */
constexpr size_t allocation_gap = 4096;
constexpr int recent_count = 4;
extern uintptr_t space_base, space_end;
extern allocation recent[recent_count];
extern int recent_next;
extern uintptr_t dynamic_shared_base, dynamic_shared_capacity;
extern size_t dynamic_shared_bytes;
[[noreturn]] void bad_access(uintptr_t address, size_t size, bool write);

/* ---- counters (counters.cpp) ----------------------------------------------------------- */

struct kernel_stats {
    std::string name;
    uint64_t launches = 0, blocks = 0, threads = 0, bytes_read = 0, bytes_written = 0;
};
extern cuda_emu_counters totals;
kernel_stats &stats_for(const std::string &name);
/* The kernel whose threads run now (bytes go to it); null outside kernels. */
extern kernel_stats *running_stats;
void count_bytes(uint64_t read, uint64_t written);

/* ---- kernels (symbols.cpp, scheduler.cpp) ---------------------------------------------- */

struct shared_variable {
    void *address;
    size_t bytes;
};
struct kernel_info {
    std::string name;                    /* demangled, no parameter list             */
    std::vector<shared_variable> shared; /* its __shared__ statics                   */
    size_t static_shared_bytes = 0;
    int max_dynamic_shared_bytes = 48 * 1024; /* cudaFuncAttributeMaxDynamicSharedMemorySize */
};
kernel_info &kernel_info_for(const void *kernel, const char *spelled);
/* Names a code address (function+offset) for reports. */
std::string describe_code_address(const void *address);
/* Runs every block of a launch on this thread (checks done by the caller). */
void run_kernel(const launch_request &request, const kernel_body &body, kernel_info &info);
/* Context of the running kernel for reports ("" outside kernels). */
std::string kernel_context();

/* ---- streams and graphs (runtime.cpp) -------------------------------------------------- */

struct work_item {
    const char *what; /* for capture errors: "kernel", "memcpy", ... */
    std::function<void()> run;
};
/* Queues work on a stream (or records it into the stream's capture). */
cudaError_t enqueue(cudaStream_t stream, work_item item);
void set_last_error(cudaError_t error);

} // namespace cuda_emu

#endif
