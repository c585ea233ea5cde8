/* memory.cpp — the emulated device's memory: one large reserved address range that every
 * cudaMalloc comes from, pinned host memory, and the access hooks that count and check the
 * kernels' global-memory traffic.
 *
 * Device address space. Allocations are carved from a private mapping reserved at the first
 * use (MAP_NORESERVE: only touched pages cost memory), so "is this a device pointer" is one
 * range test. Addresses are handed out by a bump pointer with a 4 KB gap after every
 * allocation and are not reused until the range is exhausted, so a stale pointer into freed
 * memory and an access just past the end never land in another live allocation: both are
 * reported. Fresh allocations are filled with 0xa5 bytes (cudaMalloc does not zero).
 * Outside device work the range is mprotect'ed PROT_NONE, so host code that dereferences a
 * device pointer faults, and the SIGSEGV handler says so (CUDA_EMU_PROTECT=0 turns it off).
 *
 * Access hooks. Kernel files built with -fsanitize=thread call __tsan_read4(addr) etc. before
 * every memory access; no ThreadSanitizer runtime is linked: the hooks are defined here. An
 * address outside the device range (locals, shared memory, host memory) returns at once; a
 * device address is checked against its allocation (out of bounds and use after free are
 * reported with the kernel, block and thread) and its bytes are counted for the kernel. */
#include "internal.h"

#include <algorithm>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace cuda_emu {

namespace {

constexpr size_t allocation_alignment = 256;

constexpr size_t reported_total = (size_t)80 << 30; /* an H100's 80 GB */

} // namespace

uintptr_t space_base = 0, space_end = 0; /* the reserved range (access_hooks.cpp reads it) */
allocation recent[recent_count] = {};    /* the hooks' cache of recently hit allocations */
int recent_next = 0;

namespace {

uintptr_t bump = 0;                      /* next fresh address */
std::map<uintptr_t, size_t> live;        /* base → bytes */
std::map<uintptr_t, size_t> freed;       /* base → bytes, for reports (until reused) */
std::map<uintptr_t, size_t> reusable;    /* freed ranges (with gap), used once bump runs out */
size_t live_bytes = 0;
bool protect = true;
int open_depth = 0;
struct sigaction previous_segv;

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

void segv_handler(int sig, siginfo_t *info, void *context)
{
    const uintptr_t a = (uintptr_t)info->si_addr;
    if (a >= space_base && a < space_end) {
        char buf[512];
        auto it = live.upper_bound(a);
        const char *where = "outside every allocation";
        if (it != live.begin() && a < std::prev(it)->first + std::prev(it)->second)
            where = "inside a live cudaMalloc allocation";
        int n = snprintf(buf, sizeof buf,
                         "\ncuda-emu: error: host code dereferenced device memory at %p (%s). "
                         "Device memory is not accessible from the CPU: copy it with "
                         "cudaMemcpy, or use pinned host memory (cudaMallocHost).\n",
                         (void *)a, where);
        if (n > 0)
            (void)!write(2, buf, (size_t)n);
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    /* Not ours: hand it to whoever was there before (AddressSanitizer, or the default). */
    if (previous_segv.sa_flags & SA_SIGINFO)
        previous_segv.sa_sigaction(sig, info, context);
    else if (previous_segv.sa_handler != SIG_IGN && previous_segv.sa_handler != SIG_DFL)
        previous_segv.sa_handler(sig);
    else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

void reserve_space()
{
    if (space_base)
        return;
    const char *p = getenv("CUDA_EMU_PROTECT");
    protect = !(p && !strcmp(p, "0"));
    for (size_t size = (size_t)256 << 30; size >= ((size_t)1 << 30); size /= 2) {
        void *m = mmap(nullptr, size, protect ? PROT_NONE : PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m != MAP_FAILED) {
            space_base = (uintptr_t)m;
            space_end = space_base + size;
            bump = space_base;
            break;
        }
    }
    if (!space_base)
        fatal("could not reserve an address range for device memory (mmap failed)");
    if (protect) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = segv_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &previous_segv);
    }
}

/* First fit among freed ranges, for when the fresh range is used up. */
uintptr_t take_reusable(size_t span)
{
    for (auto it = reusable.begin(); it != reusable.end(); ++it) {
        if (it->second < span)
            continue;
        const uintptr_t base = it->first;
        const size_t rest = it->second - span;
        reusable.erase(it);
        if (rest)
            reusable[base + span] = rest;
        return base;
    }
    return 0;
}

void set_protection(uintptr_t base, size_t bytes, bool open)
{
    if (protect && bytes)
        mprotect((void *)base, bytes, open ? PROT_READ | PROT_WRITE : PROT_NONE);
}

} // namespace

void device_memory_open()
{
    if (open_depth++ == 0 && protect && space_base)
        set_protection(space_base, bump - space_base, true);
}

void device_memory_close()
{
    if (--open_depth == 0 && protect && space_base)
        set_protection(space_base, bump - space_base, false);
}

cudaError_t device_malloc(void **ptr, size_t bytes)
{
    reserve_space();
    *ptr = nullptr;
    const size_t size = bytes ? bytes : 1;
    if (live_bytes + size > reported_total)
        return cudaErrorMemoryAllocation;
    const size_t span = round_up(size, allocation_alignment) + allocation_gap;
    uintptr_t base = 0;
    if (bump + span <= space_end) {
        base = bump;
        bump += span;
    } else {
        base = take_reusable(span);
        if (!base)
            return cudaErrorMemoryAllocation;
    }
    for (auto it = freed.lower_bound(base); it != freed.end() && it->first < base + span;)
        it = freed.erase(it);
    live[base] = size;
    live_bytes += size;
    device_memory_open();
    memset((void *)base, 0xa5, size);
    device_memory_close();
    *ptr = (void *)base;
    totals.device_allocs++;
    return cudaSuccess;
}

cudaError_t device_free(void *ptr)
{
    const uintptr_t base = (uintptr_t)ptr;
    auto it = live.find(base);
    if (it == live.end()) {
        if (freed.count(base))
            complain("cudaFree(%p): freed twice", ptr);
        else if (in_device_space(ptr))
            complain("cudaFree(%p): not the start of a cudaMalloc allocation", ptr);
        else
            complain("cudaFree(%p): not device memory (host memory is freed with free or "
                     "cudaFreeHost)",
                     ptr);
        return cudaErrorInvalidValue;
    }
    const size_t size = it->second;
    live.erase(it);
    live_bytes -= size;
    freed[base] = size;
    for (allocation &r : recent)
        if (r.base == base)
            r = {0, 0};
    const size_t span = round_up(size, allocation_alignment) + allocation_gap;
    /* Give whole pages back; their contents are gone (0 when touched again). */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = round_up(base, page), hi = (base + span) / page * page;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
    reusable[base] = span;
    totals.device_frees++;
    return cudaSuccess;
}

bool in_device_space(const void *p)
{
    return (uintptr_t)p >= space_base && (uintptr_t)p < space_end;
}

bool device_range(const void *p, size_t bytes, allocation *out)
{
    const uintptr_t a = (uintptr_t)p;
    if (a < space_base || a >= space_end)
        return false;
    auto it = live.upper_bound(a);
    if (it == live.begin())
        return false;
    --it;
    if (a + bytes > it->first + it->second || a < it->first)
        return false;
    if (out)
        *out = {it->first, it->second};
    return true;
}

std::map<uintptr_t, size_t> &pinned_registry()
{
    static std::map<uintptr_t, size_t> pinned; /* cudaMallocHost / cudaHostAlloc */
    return pinned;
}

bool is_pinned_host(const void *p, size_t bytes)
{
    std::map<uintptr_t, size_t> &pinned = pinned_registry();
    const uintptr_t a = (uintptr_t)p;
    auto it = pinned.upper_bound(a);
    if (it == pinned.begin())
        return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

size_t device_bytes_in_use() { return live_bytes; }
size_t device_memory_total() { return reported_total; }

/* ---- the access hooks ------------------------------------------------------------------ */

void bad_access(uintptr_t a, size_t size, bool write)
{
    const char *op = write ? "write" : "read";
    if (!running_stats)
        fatal("host code in a kernel file %ss %zu bytes of device memory at %p: device memory "
              "is only for kernels and copies",
              op, size, (void *)a);
    if (size <= 16 && !(size & (size - 1)) && (a & (size - 1)))
        fatal("misaligned %s of %zu bytes at %p: the device requires %zu-byte alignment "
              "(cudaErrorMisalignedAddress)",
              op, size, (void *)a, size);
    auto it = live.upper_bound(a);
    if (it != live.begin()) {
        --it;
        if (a >= it->first && a < it->first + it->second)
            fatal("out-of-bounds %s of %zu bytes at %p: it runs %zu bytes past the end of a "
                  "%zu-byte allocation at %p",
                  op, size, (void *)a, (size_t)(a + size - (it->first + it->second)), it->second,
                  (void *)it->first);
        if (a >= it->first + it->second && a < it->first + it->second + allocation_gap)
            fatal("out-of-bounds %s of %zu bytes at %p: %zu bytes past the end of a %zu-byte "
                  "allocation at %p (index off by %zu elements of %zu bytes?)",
                  op, size, (void *)a, (size_t)(a - (it->first + it->second)), it->second,
                  (void *)it->first, (size_t)(a - (it->first + it->second)) / size + 1, size);
    }
    auto f = freed.upper_bound(a);
    if (f != freed.begin()) {
        --f;
        if (a >= f->first && a < f->first + f->second)
            fatal("%s of %zu bytes at %p: use after cudaFree (inside a freed %zu-byte "
                  "allocation at %p)",
                  op, size, (void *)a, f->second, (void *)f->first);
    }
    auto next = live.upper_bound(a);
    if (next != live.end() && next->first - a < allocation_gap)
        fatal("out-of-bounds %s of %zu bytes at %p: %zu bytes before the start of a %zu-byte "
              "allocation at %p (negative index?)",
              op, size, (void *)a, (size_t)(next->first - a), next->second, (void *)next->first);
    fatal("%s of %zu bytes at %p: not inside any device allocation", op, size, (void *)a);
}

} // namespace cuda_emu
