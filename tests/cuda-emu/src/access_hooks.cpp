/* access_hooks.cpp — the hooks that kernel files built with -fsanitize=thread call before
 * every memory access (no ThreadSanitizer runtime is linked: these are its entry points), and
 * the atomics such files may call. This file is compiled without sanitizers even in the ASan
 * build: it runs for every load and store of every emulated thread, and an address outside
 * the device range (locals, shared memory, host memory) must cost two comparisons. Device
 * addresses are checked against their allocation (memory.cpp reports what is wrong) and their
 * bytes counted for the running kernel. */
#include "internal.h"

namespace cuda_emu {

/* Shared with the scheduler: the running block's dynamic shared memory. */
uintptr_t dynamic_shared_base = 0, dynamic_shared_capacity = 0;
size_t dynamic_shared_bytes = 0;

static inline void on_access(const void *p, size_t size, bool write)
{
    const uintptr_t a = (uintptr_t)p;
    if (__builtin_expect(a - dynamic_shared_base < dynamic_shared_capacity, 0)) {
        if (a + size > dynamic_shared_base + dynamic_shared_bytes)
            fatal("%s of %zu bytes at offset %zu of dynamic shared memory: the launch asked "
                  "for %zu bytes",
                  write ? "write" : "read", size, (size_t)(a - dynamic_shared_base),
                  dynamic_shared_bytes);
        return;
    }
    if (__builtin_expect(a - space_base >= space_end - space_base, 1))
        return;
    if (!running_stats || (size <= 16 && !(size & (size - 1)) && (a & (size - 1))))
        bad_access(a, size, write); /* host code, or misaligned: the device faults on both */
    bool cached = false;
    for (const allocation &r : recent)
        cached |= a - r.base < r.bytes && a + size <= r.base + r.bytes;
    if (!cached) {
        allocation hit;
        if (!device_range(p, size, &hit))
            bad_access(a, size, write);
        recent[recent_next] = hit;
        recent_next = (recent_next + 1) % recent_count;
    }
    if (write)
        running_stats->bytes_written += size, totals.bytes_written += size;
    else
        running_stats->bytes_read += size, totals.bytes_read += size;
}

} // namespace cuda_emu

/* ---- ThreadSanitizer's instrumentation interface, served without its runtime ------------- */

#define CUDA_EMU_TSAN_ACCESS(n)                                                                    \
    extern "C" void __tsan_read##n(void *p) { cuda_emu::on_access(p, n, false); }                  \
    extern "C" void __tsan_write##n(void *p) { cuda_emu::on_access(p, n, true); }                  \
    extern "C" void __tsan_unaligned_read##n(void *p) { cuda_emu::on_access(p, n, false); }        \
    extern "C" void __tsan_unaligned_write##n(void *p) { cuda_emu::on_access(p, n, true); }        \
    extern "C" void __tsan_volatile_read##n(void *p) { cuda_emu::on_access(p, n, false); }         \
    extern "C" void __tsan_volatile_write##n(void *p) { cuda_emu::on_access(p, n, true); }
CUDA_EMU_TSAN_ACCESS(1)
CUDA_EMU_TSAN_ACCESS(2)
CUDA_EMU_TSAN_ACCESS(4)
CUDA_EMU_TSAN_ACCESS(8)
CUDA_EMU_TSAN_ACCESS(16)
extern "C" void __tsan_read_range(void *p, unsigned long size)
{
    if (size)
        cuda_emu::on_access(p, size, false);
}
extern "C" void __tsan_write_range(void *p, unsigned long size)
{
    if (size)
        cuda_emu::on_access(p, size, true);
}
extern "C" void __tsan_init(void) {}
extern "C" void __tsan_func_entry(void *) {}
extern "C" void __tsan_func_exit(void) {}
extern "C" void __tsan_vptr_update(void **, void *) {}
extern "C" void __tsan_vptr_read(void **) {}
extern "C" void __tsan_atomic_thread_fence(int) {}
extern "C" void __tsan_atomic_signal_fence(int) {}

/* Atomics in instrumented files (shared_ptr reference counts in the launch code): performed
 * for real, never counted (they touch host memory). */
#define CUDA_EMU_TSAN_ATOMICS(bits, type)                                                          \
    extern "C" type __tsan_atomic##bits##_load(const volatile type *a, int)                        \
    {                                                                                              \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                               \
    }                                                                                              \
    extern "C" void __tsan_atomic##bits##_store(volatile type *a, type v, int)                     \
    {                                                                                              \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                  \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_exchange(volatile type *a, type v, int)                  \
    {                                                                                              \
        return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                        \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_fetch_add(volatile type *a, type v, int)                 \
    {                                                                                              \
        return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                         \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_fetch_sub(volatile type *a, type v, int)                 \
    {                                                                                              \
        return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                         \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_fetch_and(volatile type *a, type v, int)                 \
    {                                                                                              \
        return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                         \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_fetch_or(volatile type *a, type v, int)                  \
    {                                                                                              \
        return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                          \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_fetch_xor(volatile type *a, type v, int)                 \
    {                                                                                              \
        return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                         \
    }                                                                                              \
    extern "C" int __tsan_atomic##bits##_compare_exchange_strong(volatile type *a, type *c,        \
                                                                 type v, int, int)                 \
    {                                                                                              \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);    \
    }                                                                                              \
    extern "C" int __tsan_atomic##bits##_compare_exchange_weak(volatile type *a, type *c, type v,  \
                                                               int, int)                           \
    {                                                                                              \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);    \
    }                                                                                              \
    extern "C" type __tsan_atomic##bits##_compare_exchange_val(volatile type *a, type c, type v,   \
                                                               int, int)                           \
    {                                                                                              \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);          \
        return c;                                                                                  \
    }
CUDA_EMU_TSAN_ATOMICS(8, int8_t)
CUDA_EMU_TSAN_ATOMICS(16, int16_t)
CUDA_EMU_TSAN_ATOMICS(32, int32_t)
CUDA_EMU_TSAN_ATOMICS(64, int64_t)
