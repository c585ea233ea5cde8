/* test_emu_device.cu — the emulator's device side does what CUDA documents: shuffles (all four,
 * with widths), ballot/any/all, match_any/match_all, warp reductions, barriers with counts,
 * atomics, static and dynamic shared memory (with the opt-in above 48 KB), launch limits, and a
 * block reduction that gives the same result in every schedule order. Compiled as C++ against
 * tests/cuda-emu/include, like the files in kernels/. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_emu.h"
#include "emu_check.h"
#include "launch.h"

#include <cmath>
#include <cstring>
#include <vector>

#define FULL 0xffffffffu

static __global__ void shuffle_kernel(int *out)
{
    const int lane = threadIdx.x & 31, t = threadIdx.x;
    int *o = out + t * 8;
    o[0] = __shfl_sync(FULL, lane * 10, 3);           /* broadcast lane 3 */
    o[1] = __shfl_sync(FULL, lane * 10, lane + 1, 8); /* rotate inside groups of 8 */
    o[2] = __shfl_up_sync(FULL, lane, 2);             /* lanes 0, 1 keep theirs */
    o[3] = __shfl_down_sync(FULL, lane, 5, 16);       /* no crossing of 16-lane halves */
    o[4] = __shfl_xor_sync(FULL, lane, 1);
    o[5] = (int)__shfl_xor_sync(FULL, (float)lane + 0.5f, 16);
    o[6] = __reduce_add_sync(FULL, (unsigned)lane);
    o[7] = __reduce_max_sync(FULL, lane % 7 - 3);
}

static void test_shuffles()
{
    int *d;
    CUDA_OK(cudaMalloc((void **)&d, 64 * 8 * sizeof(int)));
    MK_LAUNCH(1, 64, 0, 0, shuffle_kernel)(d);
    CUDA_OK(cudaGetLastError());
    std::vector<int> h(64 * 8);
    CUDA_OK(cudaMemcpy(h.data(), d, h.size() * sizeof(int), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int t = 0; t < 64; t++) {
        const int lane = t & 31, *o = &h[t * 8];
        bad += o[0] != 30;
        bad += o[1] != ((lane & ~7) + ((lane + 1) & 7)) * 10;
        bad += o[2] != (lane >= 2 ? lane - 2 : lane);
        bad += o[3] != ((lane & 15) + 5 < 16 ? lane + 5 : lane);
        bad += o[4] != (lane ^ 1);
        bad += o[5] != (lane ^ 16);
        bad += o[6] != 496;
        bad += o[7] != 3;
    }
    CHECK(bad == 0, "shuffles and reductions: %d wrong values", bad);
    cudaFree(d);
}

static __global__ void vote_kernel(unsigned *out, const int *keys)
{
    const int t = threadIdx.x, lane = t & 31;
    unsigned *o = out + t * 6;
    o[0] = __ballot_sync(FULL, lane % 3 == 0);
    o[1] = __any_sync(FULL, lane == 17);
    o[2] = __all_sync(FULL, lane < 31);
    o[3] = __match_any_sync(FULL, keys[t]);
    int pred = -1;
    o[4] = __match_all_sync(FULL, keys[t] / 100, &pred);
    o[5] = (unsigned)pred;
    if (lane < 16 && __ballot_sync(0x0000ffffu, 1) != 0x0000ffffu) /* a half-warp collective */
        o[4] |= 0x80000000u;
}

static void test_votes()
{
    std::vector<int> keys(32);
    for (int i = 0; i < 32; i++)
        keys[i] = (i * 7) % 5; /* 5 groups */
    int *dk;
    unsigned *d;
    CUDA_OK(cudaMalloc((void **)&dk, 32 * sizeof(int)));
    CUDA_OK(cudaMalloc((void **)&d, 32 * 6 * sizeof(unsigned)));
    CUDA_OK(cudaMemcpy(dk, keys.data(), 32 * sizeof(int), cudaMemcpyHostToDevice));
    MK_LAUNCH(1, 32, 0, 0, vote_kernel)(d, dk);
    std::vector<unsigned> h(32 * 6);
    CUDA_OK(cudaMemcpy(h.data(), d, h.size() * sizeof(unsigned), cudaMemcpyDeviceToHost));
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3)
        ballot |= 1u << l;
    int bad = 0;
    for (int t = 0; t < 32; t++) {
        unsigned same = 0;
        for (int j = 0; j < 32; j++)
            same |= (unsigned)(keys[j] == keys[t]) << j;
        bad += h[t * 6] != ballot;
        bad += h[t * 6 + 1] != 1;
        bad += h[t * 6 + 2] != 0;
        bad += h[t * 6 + 3] != same;
        bad += h[t * 6 + 4] != FULL; /* all keys / 100 == 0 */
        bad += h[t * 6 + 5] != 1;
    }
    CHECK(bad == 0, "ballot/any/all/match: %d wrong values", bad);
    cudaFree(dk);
    cudaFree(d);
}

/* Barrier counts and atomics over a whole block of 1024 threads. */
static __global__ void atomics_kernel(int *ints, float *floats, unsigned long long *wide)
{
    __shared__ int shared_count;
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    if (t == 0)
        shared_count = 0;
    __syncthreads();
    atomicAdd(&shared_count, 2);
    const int evens = __syncthreads_count(t % 2 == 0);
    const int all_small = __syncthreads_and(t < 1024);
    const int any_big = __syncthreads_or(t == 1000);
    atomicAdd(&ints[0], 1);
    atomicMax(&ints[1], t);
    atomicMin(&ints[2], -t);
    atomicAdd(&floats[0], 0.5f);
    atomicExch(&ints[3], 7);
    atomicCAS(&ints[4], 0, t + 1); /* only the first thread to come finds 0 */
    atomicAdd(&wide[0], 1ull << 33);
    if (t == 0) {
        ints[5] = shared_count;
        ints[6] = evens;
        ints[7] = all_small + 2 * any_big;
    }
}

static void test_atomics()
{
    int *di;
    float *df;
    unsigned long long *dw;
    CUDA_OK(cudaMalloc((void **)&di, 8 * sizeof(int)));
    CUDA_OK(cudaMalloc((void **)&df, sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&dw, sizeof(unsigned long long)));
    CUDA_OK(cudaMemset(di, 0, 8 * sizeof(int)));
    CUDA_OK(cudaMemset(df, 0, sizeof(float)));
    CUDA_OK(cudaMemset(dw, 0, sizeof(unsigned long long)));
    MK_LAUNCH(dim3(2, 1, 1), dim3(32, 8, 4), 0, 0, atomics_kernel)(di, df, dw);
    CUDA_OK(cudaGetLastError());
    int h[8];
    float f;
    unsigned long long w;
    CUDA_OK(cudaMemcpy(h, di, sizeof h, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&f, df, sizeof f, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&w, dw, sizeof w, cudaMemcpyDeviceToHost));
    CHECK(h[0] == 2048 && h[1] == 1023 && h[2] == -1023 && h[3] == 7,
          "atomic add/max/min/exch: "
          "%d %d %d %d",
          h[0], h[1], h[2], h[3]);
    CHECK(h[4] >= 1 && h[4] <= 1024, "atomicCAS kept the first value: %d", h[4]);
    CHECK(f == 1024.0f && w == 2048ull << 33, "atomicAdd float %g, u64 %llu", f, w);
    CHECK(h[5] == 2048 && h[6] == 512 && h[7] == 3,
          "shared atomics %d, __syncthreads_count %d, "
          "and/or %d",
          h[5], h[6], h[7]);
    cudaFree(di);
    cudaFree(df);
    cudaFree(dw);
}

/* Dynamic shared memory: reverse a block's slice through it; above 48 KB only with the opt-in. */
static __global__ void reverse_kernel(float *data, int n)
{
    MK_DYNAMIC_SHARED(float, tile);
    const int t = threadIdx.x;
    for (int i = t; i < n; i += blockDim.x)
        tile[i] = data[blockIdx.x * n + i];
    __syncthreads();
    for (int i = t; i < n; i += blockDim.x)
        data[blockIdx.x * n + i] = tile[n - 1 - i];
}

static void test_dynamic_shared()
{
    const int n = 20000; /* 80 000 bytes: needs the opt-in */
    std::vector<float> h(2 * n);
    for (int i = 0; i < 2 * n; i++)
        h[i] = (float)i;
    float *d;
    CUDA_OK(cudaMalloc((void **)&d, h.size() * sizeof(float)));
    CUDA_OK(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    MK_LAUNCH(2, 256, n * sizeof(float), 0, reverse_kernel)(d, n);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue,
          "80 KB of dynamic shared memory without cudaFuncSetAttribute must fail to launch");
    CUDA_OK(cudaFuncSetAttribute(reverse_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 n * sizeof(float)));
    CHECK(cudaFuncSetAttribute(reverse_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               228 * 1024) == cudaErrorInvalidValue,
          "more than 227 KB of shared memory must be refused");
    MK_LAUNCH(2, 256, n * sizeof(float), 0, reverse_kernel)(d, n);
    CUDA_OK(cudaGetLastError());
    std::vector<float> r(2 * n);
    CUDA_OK(cudaMemcpy(r.data(), d, r.size() * sizeof(float), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < n; i++)
            bad += r[b * n + i] != (float)(b * n + n - 1 - i);
    CHECK(bad == 0, "dynamic shared reverse: %d wrong", bad);
    cudaFree(d);
}

/* Static shared memory over 48 KB, 1025 threads, a 0 grid: refused at launch. */
static __global__ void big_shared_kernel(float *out)
{
    __shared__ float big[13 * 1024]; /* 52 KB */
    big[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}

static __global__ void noop_kernel(int *) {}

static void test_launch_limits()
{
    float *d;
    CUDA_OK(cudaMalloc((void **)&d, 1024 * sizeof(float)));
    MK_LAUNCH(1, 32, 0, 0, big_shared_kernel)(d);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "52 KB of static shared memory launched");
    MK_LAUNCH(1, 1025, 0, 0, noop_kernel)(nullptr);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block launched");
    MK_LAUNCH(1, dim3(1, 1, 65), 0, 0, noop_kernel)(nullptr);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "block z = 65 launched");
    MK_LAUNCH(dim3(1, 65536, 1), 1, 0, 0, noop_kernel)(nullptr);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid y = 65536 launched");
    MK_LAUNCH(0, 32, 0, 0, noop_kernel)(nullptr);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "an empty grid launched");
    CHECK(cudaGetLastError() == cudaSuccess, "launch errors are not sticky");
    cudaFree(d);
}

/* A tree reduction in shared memory, barriers in place: the same sum in every order. */
static __global__ void block_sum_kernel(float *out, const float *in)
{
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = in[blockIdx.x * 256 + t];
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (t < stride)
            s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0)
        out[blockIdx.x] = s[0];
}

static void test_block_sum()
{
    std::vector<float> h(4 * 256);
    for (size_t i = 0; i < h.size(); i++)
        h[i] = (float)(i % 17) - 8.0f;
    float *din, *dout;
    CUDA_OK(cudaMalloc((void **)&din, h.size() * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&dout, 4 * sizeof(float)));
    CUDA_OK(cudaMemcpy(din, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    MK_LAUNCH(4, 256, 0, 0, block_sum_kernel)(dout, din);
    float r[4];
    CUDA_OK(cudaMemcpy(r, dout, sizeof r, cudaMemcpyDeviceToHost));
    for (int b = 0; b < 4; b++) {
        float want = 0;
        for (int i = 0; i < 256; i++)
            want += h[b * 256 + i];
        CHECK(r[b] == want, "block %d sum %g, want %g", b, r[b], want);
    }
    cudaFree(din);
    cudaFree(dout);
}

/* The device's bf16 conversions (round to nearest even, NaN stays NaN). */
static void test_bf16()
{
    CHECK(__bfloat16_as_ushort(__float2bfloat16_rn(1.0f)) == 0x3f80, "bf16(1)");
    CHECK(__bfloat16_as_ushort(__float2bfloat16_rn(1.00390625f)) == 0x3f80, "ties to even (down)");
    CHECK(__bfloat16_as_ushort(__float2bfloat16_rn(1.01171875f)) == 0x3f82, "ties to even (up)");
    CHECK(std::isnan(__bfloat162float(__float2bfloat16_rn(NAN))), "NaN stays NaN");
    CHECK(__bfloat162float(__ushort_as_bfloat16(0xc040)) == -3.0f, "bf16 → float");
}

int main()
{
    test_shuffles();
    test_votes();
    test_atomics();
    test_dynamic_shared();
    test_launch_limits();
    test_block_sum();
    test_bf16();
    cuda_emu_counters c;
    cuda_emu_counters_get(&c);
    CHECK(c.launches == 5 && c.device_allocs == c.device_frees,
          "counters: %llu launches, %llu allocations, %llu frees", (unsigned long long)c.launches,
          (unsigned long long)c.device_allocs, (unsigned long long)c.device_frees);
    return emu_check_summary("cuda_emu_device");
}
