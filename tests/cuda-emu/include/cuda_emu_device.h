/* cuda_emu_device.h (CUDA emulator) — the device side of CUDA for kernels compiled by g++ as
 * C++17: qualifiers, the built-in indices, barriers, warp collectives, atomics and the device
 * math the project's kernels use. Included by cuda_runtime.h in C++.
 *
 * Execution model (src/scheduler.cpp): every CUDA thread of a block is a fiber with its own
 * stack; the fibers of a block run one at a time on the launching host thread and switch only
 * at __syncthreads and at warp collectives. A warp collective is a real rendezvous of the lanes
 * its mask names: the call returns once every named lane has reached the same collective with
 * the same mask, and a named lane that has exited, sits at another collective or at a barrier
 * is reported as an error (on the device: undefined behaviour or a hang).
 *
 * Shared memory: `__shared__` variables are function-local statics (one block runs at a time,
 * and the emulator fills them with 0xff bytes before each block: the device does not zero
 * them). Dynamic shared memory cannot be spelled `extern __shared__` here (a function-local
 * static cannot have an unknown size); kernels use MK_DYNAMIC_SHARED(type, name) from
 * kernels/launch.h, or cuda_emu::dynamic_shared() directly.
 */
#ifndef CUDA_EMU_DEVICE_H
#define CUDA_EMU_DEVICE_H

#ifndef __cplusplus
#error "cuda_emu_device.h is C++: compile .cu files with g++ -x c++ -std=c++17"
#endif

#include "cuda_runtime_api.h"

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
/* __restrict__ is a g++ keyword already. */

#define warpSize 32

namespace cuda_emu {

/* What a running CUDA thread can see of itself (the rest is the scheduler's). */
struct thread_view {
    uint3 thread_idx;
    unsigned lane;
};
extern thread_view *current_thread; /* the fiber now running; null on the host */
extern uint3 block_index;
extern dim3 block_dim, grid_dim;

enum collective : int {
    COLLECTIVE_SYNCWARP,
    COLLECTIVE_SHFL,
    COLLECTIVE_SHFL_UP,
    COLLECTIVE_SHFL_DOWN,
    COLLECTIVE_SHFL_XOR,
    COLLECTIVE_BALLOT,
    COLLECTIVE_ANY,
    COLLECTIVE_ALL,
    COLLECTIVE_MATCH_ANY,
    COLLECTIVE_MATCH_ALL,
    COLLECTIVE_REDUCE_ADD,
    COLLECTIVE_REDUCE_MIN_SIGNED,
    COLLECTIVE_REDUCE_MAX_SIGNED,
    COLLECTIVE_REDUCE_MIN_UNSIGNED,
    COLLECTIVE_REDUCE_MAX_UNSIGNED,
    COLLECTIVE_REDUCE_AND,
    COLLECTIVE_REDUCE_OR,
    COLLECTIVE_REDUCE_XOR,
};

enum barrier_reduce : int { BARRIER_PLAIN, BARRIER_COUNT, BARRIER_AND, BARRIER_OR };

/* Rendezvous of the lanes of `mask` (see the file comment); returns this lane's result: the
 * source lane's value for shuffles, a lane mask for ballot/match, 0/1 for any/all, the
 * reduction for __reduce_*_sync. `arg` is the source lane, delta or lane mask of a shuffle,
 * `width` its segment width. */
uint64_t warp_collective(collective kind, unsigned mask, uint64_t value, int arg, int width);
/* __syncthreads and its counting forms; the call site (this function's return address, in
 * the kernel) identifies the barrier. */
__attribute__((noinline)) int block_barrier(barrier_reduce reduce, int predicate);
/* The dynamic shared memory of the running block (the launch's shared_bytes). */
void *dynamic_shared();
/* Mask of this warp's lanes that have not exited. */
unsigned active_mask();
/* Reports a device-side error (file:line) like the device would, then stops the program. */
[[noreturn]] void device_trap(const char *what);

template <class T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp collectives move values of at most 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof v);
    return u;
}
template <class T> inline T from_bits(uint64_t u)
{
    T v;
    std::memcpy(&v, &u, sizeof v);
    return v;
}

} // namespace cuda_emu

#define threadIdx (::cuda_emu::current_thread->thread_idx)
#define blockIdx (::cuda_emu::block_index)
#define blockDim (::cuda_emu::block_dim)
#define gridDim (::cuda_emu::grid_dim)

/* ---- barriers and warp collectives ----------------------------------------------------- */

inline __attribute__((always_inline)) void __syncthreads()
{
    (void)cuda_emu::block_barrier(cuda_emu::BARRIER_PLAIN, 0);
}
inline __attribute__((always_inline)) int __syncthreads_count(int p)
{
    return cuda_emu::block_barrier(cuda_emu::BARRIER_COUNT, p);
}
inline __attribute__((always_inline)) int __syncthreads_and(int p)
{
    return cuda_emu::block_barrier(cuda_emu::BARRIER_AND, p);
}
inline __attribute__((always_inline)) int __syncthreads_or(int p)
{
    return cuda_emu::block_barrier(cuda_emu::BARRIER_OR, p);
}
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_SYNCWARP, mask, 0, 0, 32);
}
inline unsigned __activemask() { return cuda_emu::active_mask(); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <class T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize)
{
    return cuda_emu::from_bits<T>(cuda_emu::warp_collective(cuda_emu::COLLECTIVE_SHFL, mask,
                                                            cuda_emu::to_bits(v), src_lane, width));
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    return cuda_emu::from_bits<T>(cuda_emu::warp_collective(
        cuda_emu::COLLECTIVE_SHFL_UP, mask, cuda_emu::to_bits(v), (int)delta, width));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    return cuda_emu::from_bits<T>(cuda_emu::warp_collective(
        cuda_emu::COLLECTIVE_SHFL_DOWN, mask, cuda_emu::to_bits(v), (int)delta, width));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize)
{
    return cuda_emu::from_bits<T>(cuda_emu::warp_collective(
        cuda_emu::COLLECTIVE_SHFL_XOR, mask, cuda_emu::to_bits(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_BALLOT, mask, predicate != 0, 0,
                                               32);
}
inline int __any_sync(unsigned mask, int predicate)
{
    return (int)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_ANY, mask, predicate != 0, 0, 32);
}
inline int __all_sync(unsigned mask, int predicate)
{
    return (int)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_ALL, mask, predicate != 0, 0, 32);
}
template <class T> inline unsigned __match_any_sync(unsigned mask, T v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_MATCH_ANY, mask,
                                               cuda_emu::to_bits(v), 0, 32);
}
template <class T> inline unsigned __match_all_sync(unsigned mask, T v, int *pred)
{
    const unsigned r = (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_MATCH_ALL, mask,
                                                           cuda_emu::to_bits(v), 0, 32);
    *pred = r != 0;
    return r;
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_ADD, mask, v, 0, 32);
}
inline int __reduce_add_sync(unsigned mask, int v)
{
    return (int)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_ADD, mask, (uint32_t)v, 0,
                                          32);
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_MIN_UNSIGNED, mask, v, 0,
                                               32);
}
inline int __reduce_min_sync(unsigned mask, int v)
{
    return (int)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_MIN_SIGNED, mask, (uint32_t)v,
                                          0, 32);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_MAX_UNSIGNED, mask, v, 0,
                                               32);
}
inline int __reduce_max_sync(unsigned mask, int v)
{
    return (int)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_MAX_SIGNED, mask, (uint32_t)v,
                                          0, 32);
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_AND, mask, v, 0, 32);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_OR, mask, v, 0, 32);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v)
{
    return (unsigned)cuda_emu::warp_collective(cuda_emu::COLLECTIVE_REDUCE_XOR, mask, v, 0, 32);
}

/* ---- atomics: fibers switch only at sync points, so a read-modify-write is atomic here ---- */

template <class T> inline T cuda_emu_atomic_update(T *p, T v, int op)
{
    const T old = *p;
    switch (op) {
    case 0: *p = old + v; break;
    case 1: *p = old - v; break;
    case 2: *p = v < old ? v : old; break;
    case 3: *p = v > old ? v : old; break;
    case 4: *p = v; break;
    }
    return old;
}
inline int atomicAdd(int *p, int v) { return cuda_emu_atomic_update(p, v, 0); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return cuda_emu_atomic_update(p, v, 0); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    return cuda_emu_atomic_update(p, v, 0);
}
inline float atomicAdd(float *p, float v) { return cuda_emu_atomic_update(p, v, 0); }
inline double atomicAdd(double *p, double v) { return cuda_emu_atomic_update(p, v, 0); }
inline int atomicSub(int *p, int v) { return cuda_emu_atomic_update(p, v, 1); }
inline unsigned atomicSub(unsigned *p, unsigned v) { return cuda_emu_atomic_update(p, v, 1); }
inline int atomicMin(int *p, int v) { return cuda_emu_atomic_update(p, v, 2); }
inline unsigned atomicMin(unsigned *p, unsigned v) { return cuda_emu_atomic_update(p, v, 2); }
inline long long atomicMin(long long *p, long long v) { return cuda_emu_atomic_update(p, v, 2); }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v)
{
    return cuda_emu_atomic_update(p, v, 2);
}
inline int atomicMax(int *p, int v) { return cuda_emu_atomic_update(p, v, 3); }
inline unsigned atomicMax(unsigned *p, unsigned v) { return cuda_emu_atomic_update(p, v, 3); }
inline long long atomicMax(long long *p, long long v) { return cuda_emu_atomic_update(p, v, 3); }
inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v)
{
    return cuda_emu_atomic_update(p, v, 3);
}
inline int atomicExch(int *p, int v) { return cuda_emu_atomic_update(p, v, 4); }
inline unsigned atomicExch(unsigned *p, unsigned v) { return cuda_emu_atomic_update(p, v, 4); }
inline unsigned long long atomicExch(unsigned long long *p, unsigned long long v)
{
    return cuda_emu_atomic_update(p, v, 4);
}
inline float atomicExch(float *p, float v) { return cuda_emu_atomic_update(p, v, 4); }
template <class T> inline T cuda_emu_atomic_cas(T *p, T compare, T v)
{
    const T old = *p;
    if (old == compare)
        *p = v;
    return old;
}
inline int atomicCAS(int *p, int c, int v) { return cuda_emu_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned *p, unsigned c, unsigned v)
{
    return cuda_emu_atomic_cas(p, c, v);
}
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long c,
                                    unsigned long long v)
{
    return cuda_emu_atomic_cas(p, c, v);
}
inline unsigned short atomicCAS(unsigned short *p, unsigned short c, unsigned short v)
{
    return cuda_emu_atomic_cas(p, c, v);
}
inline int atomicAnd(int *p, int v)
{
    const int o = *p;
    *p = o & v;
    return o;
}
inline unsigned atomicAnd(unsigned *p, unsigned v)
{
    const unsigned o = *p;
    *p = o & v;
    return o;
}
inline int atomicOr(int *p, int v)
{
    const int o = *p;
    *p = o | v;
    return o;
}
inline unsigned atomicOr(unsigned *p, unsigned v)
{
    const unsigned o = *p;
    *p = o | v;
    return o;
}
inline int atomicXor(int *p, int v)
{
    const int o = *p;
    *p = o ^ v;
    return o;
}
inline unsigned atomicXor(unsigned *p, unsigned v)
{
    const unsigned o = *p;
    *p = o ^ v;
    return o;
}
inline unsigned atomicInc(unsigned *p, unsigned limit)
{
    const unsigned o = *p;
    *p = o >= limit ? 0 : o + 1;
    return o;
}
inline unsigned atomicDec(unsigned *p, unsigned limit)
{
    const unsigned o = *p;
    *p = (o == 0 || o > limit) ? limit : o - 1;
    return o;
}

/* ---- integer and bit intrinsics -------------------------------------------------------- */

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; i++)
        r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

/* ---- float intrinsics: IEEE rounding, no contraction (kernels are built -ffp-contract=off) */

inline float __uint_as_float(unsigned u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f)
{
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i)
{
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f)
{
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float __fadd_rn(float a, float b)
{
    volatile float r = a + b;
    return r;
}
inline float __fsub_rn(float a, float b)
{
    volatile float r = a - b;
    return r;
}
inline float __fmul_rn(float a, float b)
{
    volatile float r = a * b;
    return r;
}
inline float __fdiv_rn(float a, float b)
{
    volatile float r = a / b;
    return r;
}
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
/* The fast device approximations are computed exactly here: a kernel that only passes with
 * the approximation (or only without it) is not caught. */
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline float __int2float_rn(int x) { return (float)x; }
template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline void __stcs(T *p, T v) { *p = v; }

inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w)
{
    return uint4{x, y, z, w};
}
inline dim3 make_dim3(unsigned x, unsigned y, unsigned z) { return dim3(x, y, z); }

/* ---- cudaFuncSetAttribute for a kernel (the toolkit's template form) ------------------- */
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), enum cudaFuncAttribute attr,
                                        int value)
{
    return cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel), attr, value);
}

#endif
