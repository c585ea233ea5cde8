/* test_emu_planted.cu — the emulator must catch planted bugs. Each bug is a small kernel or
 * host sequence run in a child process (this program with the bug's name as argument); the
 * test passes when every child is caught the way the device would catch it, or worse:
 *   missing_syncthreads   a tree reduction without its barrier: results differ between the
 *                         fwd, rev and random thread orders (the fixed kernel: they agree);
 *   off_by_one            `i <= n`: the read past the end is reported (out of bounds);
 *   divergent_shuffle     __shfl_xor_sync with a full mask inside `if (lane < 16)`;
 *   divergent_syncthreads two different __syncthreads in the branches of an if;
 *   collective_vs_barrier lane 0 at __syncthreads while its warp waits in __syncwarp (a hang on
 *                         the device, a deadlock report here);
 *   partial_warp_mask     a full mask in the last warp of a 48-thread block;
 *   use_after_free        a kernel reads a buffer after cudaFree;
 *   misaligned            a float read 2 bytes off its alignment (the device faults);
 *   dynamic_shared_oob    an index past the launch's dynamic shared memory;
 *   host_deref            host code reads device memory through a pointer;
 *   sync_in_capture       a "forward" that synchronises its stream inside graph capture. */
#include <cuda_runtime.h>

#include "emu_check.h"
#include "launch.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define FULL 0xffffffffu

/* ---- the bugs ------------------------------------------------------------------------------ */

template <bool BARRIER> static __global__ void tree_sum_kernel(float *out, const float *in)
{
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = in[t];
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (t < stride)
            s[t] += s[t + stride];
        if (BARRIER)
            __syncthreads();
    }
    if (t == 0)
        out[0] = s[0];
}

template <bool BARRIER> static int run_tree_sum()
{
    float h[256], *in, *out, r = 0;
    for (int i = 0; i < 256; i++)
        h[i] = (float)(i % 13);
    cudaMalloc((void **)&in, sizeof h);
    cudaMalloc((void **)&out, sizeof(float));
    cudaMemcpy(in, h, sizeof h, cudaMemcpyHostToDevice);
    MK_LAUNCH(1, 256, 0, 0, tree_sum_kernel<BARRIER>)(out, in);
    cudaMemcpy(&r, out, sizeof r, cudaMemcpyDeviceToHost);
    printf("sum %.1f\n", r);
    return 0;
}

static __global__ void copy_kernel(float *y, const float *x, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) /* the bug: < n */
        y[i] = x[i];
}

static int off_by_one()
{
    const int n = 256;
    float *x, *y;
    cudaMalloc((void **)&x, n * sizeof(float));
    cudaMalloc((void **)&y, n * sizeof(float));
    MK_LAUNCH(3, 128, 0, 0, copy_kernel)(y, x, n);
    return cudaDeviceSynchronize() != cudaSuccess;
}

static __global__ void divergent_shuffle_kernel(int *out)
{
    int v = threadIdx.x;
    if ((threadIdx.x & 31) < 16)
        v += __shfl_xor_sync(FULL, v, 8); /* lanes 16..31 never come */
    out[threadIdx.x] = v;
}

static __global__ void divergent_syncthreads_kernel(int *out)
{
    __shared__ int s[64];
    s[threadIdx.x] = (int)threadIdx.x;
    if (threadIdx.x < 32) {
        __syncthreads();
        out[threadIdx.x] = s[63 - threadIdx.x];
    } else {
        __syncthreads();
        out[threadIdx.x] = -s[63 - threadIdx.x];
    }
}

static __global__ void collective_vs_barrier_kernel(int *out)
{
    if (threadIdx.x == 0)
        __syncthreads();
    else
        __syncwarp();
    out[threadIdx.x] = 1;
}

static __global__ void partial_warp_kernel(int *out)
{
    out[threadIdx.x] = __shfl_down_sync(FULL, (int)threadIdx.x, 1);
}

static int launch_int_kernel(void (*kernel)(int *), int threads)
{
    int *d;
    cudaMalloc((void **)&d, 1024 * sizeof(int));
    if (kernel == divergent_shuffle_kernel)
        MK_LAUNCH(1, threads, 0, 0, divergent_shuffle_kernel)(d);
    else if (kernel == divergent_syncthreads_kernel)
        MK_LAUNCH(1, threads, 0, 0, divergent_syncthreads_kernel)(d);
    else if (kernel == collective_vs_barrier_kernel)
        MK_LAUNCH(1, threads, 0, 0, collective_vs_barrier_kernel)(d);
    else
        MK_LAUNCH(1, threads, 0, 0, partial_warp_kernel)(d);
    return cudaDeviceSynchronize() != cudaSuccess;
}

static int use_after_free()
{
    float *x, *y;
    cudaMalloc((void **)&x, 256 * sizeof(float));
    cudaMalloc((void **)&y, 256 * sizeof(float));
    cudaFree(x);
    MK_LAUNCH(2, 128, 0, 0, copy_kernel)(y, x, 255);
    return cudaDeviceSynchronize() != cudaSuccess;
}

static __global__ void misaligned_kernel(float *y, const char *bytes)
{
    y[threadIdx.x] = *(const float *)(bytes + 4 * threadIdx.x + 2); /* the bug */
}

static int misaligned()
{
    float *y;
    char *x;
    cudaMalloc((void **)&y, 32 * sizeof(float));
    cudaMalloc((void **)&x, 256);
    MK_LAUNCH(1, 32, 0, 0, misaligned_kernel)(y, x);
    return cudaDeviceSynchronize() != cudaSuccess;
}

static __global__ void stage_kernel(float *y, int n)
{
    MK_DYNAMIC_SHARED(float, tile);
    tile[threadIdx.x * 2] = 1.0f; /* the bug: the launch gave one float per thread */
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x];
}

static int dynamic_shared_oob()
{
    float *y;
    cudaMalloc((void **)&y, 128 * sizeof(float));
    MK_LAUNCH(1, 128, 128 * sizeof(float), 0, stage_kernel)(y, 128);
    return cudaDeviceSynchronize() != cudaSuccess;
}

static int host_deref()
{
    float *d;
    cudaMalloc((void **)&d, 64 * sizeof(float));
    /* The bug: a device pointer dereferenced on the host, here by libc (not instrumented:
     * the page protection catches it; in a kernel file the access hooks would). */
    float v = 0;
    volatile size_t bytes = sizeof v;
    memcpy(&v, d + 3, bytes);
    printf("%g\n", (double)v);
    return 0;
}

static __global__ void scale_kernel(float *y, float s, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] *= s;
}

/* A "forward" that hides a synchronisation: fine when run directly, an error in a capture. */
static cudaError_t forward(float *y, int n, cudaStream_t s)
{
    MK_LAUNCH(1, n, 0, s, scale_kernel)(y, 2.0f, n);
    cudaError_t e = cudaStreamSynchronize(s); /* the bug */
    if (e != cudaSuccess)
        return e;
    MK_LAUNCH(1, n, 0, s, scale_kernel)(y, 0.5f, n);
    return cudaGetLastError();
}

static int sync_in_capture()
{
    float *y;
    cudaStream_t s;
    cudaGraph_t graph = nullptr;
    cudaMalloc((void **)&y, 64 * sizeof(float));
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (forward(y, 64, s) != cudaSuccess) /* direct: fine */
        return 2;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    cudaError_t e = forward(y, 64, s);
    cudaError_t end = cudaStreamEndCapture(s, &graph);
    if (e != cudaSuccess || end != cudaSuccess || !graph) {
        fprintf(stderr, "forward in capture: %s, end capture: %s\n", cudaGetErrorName(e),
                cudaGetErrorName(end));
        return 1;
    }
    return 0;
}

static int run_case(const char *name)
{
    if (!strcmp(name, "missing_syncthreads"))
        return run_tree_sum<false>();
    if (!strcmp(name, "fixed_syncthreads"))
        return run_tree_sum<true>();
    if (!strcmp(name, "off_by_one"))
        return off_by_one();
    if (!strcmp(name, "divergent_shuffle"))
        return launch_int_kernel(divergent_shuffle_kernel, 64);
    if (!strcmp(name, "divergent_syncthreads"))
        return launch_int_kernel(divergent_syncthreads_kernel, 64);
    if (!strcmp(name, "collective_vs_barrier"))
        return launch_int_kernel(collective_vs_barrier_kernel, 32);
    if (!strcmp(name, "partial_warp_mask"))
        return launch_int_kernel(partial_warp_kernel, 48);
    if (!strcmp(name, "use_after_free"))
        return use_after_free();
    if (!strcmp(name, "misaligned"))
        return misaligned();
    if (!strcmp(name, "dynamic_shared_oob"))
        return dynamic_shared_oob();
    if (!strcmp(name, "host_deref"))
        return host_deref();
    if (!strcmp(name, "sync_in_capture"))
        return sync_in_capture();
    fprintf(stderr, "no case %s\n", name);
    return 3;
}

/* ---- the driver ---------------------------------------------------------------------------- */

struct outcome {
    int status; /* exit code, or 128 + signal */
    std::string output;
};

static outcome run_child(const char *name, const char *order)
{
    int fds[2];
    outcome o = {-1, ""};
    if (pipe(fds))
        return o;
    const pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        setenv("CUDA_EMU_ORDER", order, 1);
        execl("/proc/self/exe", "test_emu_planted", name, (char *)nullptr);
        _exit(127);
    }
    close(fds[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        o.output.append(buf, (size_t)n);
    close(fds[0]);
    int ws = 0;
    waitpid(pid, &ws, 0);
    o.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    return o;
}

static void expect_caught(const char *name, const char *message)
{
    const outcome o = run_child(name, "fwd");
    const bool caught = o.status != 0 && o.output.find(message) != std::string::npos;
    CHECK(caught, "planted bug %s not caught (exit %d; expected a report containing \"%s\"):\n%s",
          name, o.status, message, o.output.c_str());
    if (caught) {
        const size_t at = o.output.find("cuda-emu:");
        std::string line = o.output.substr(at == std::string::npos ? 0 : at);
        line = line.substr(0, line.find('\n'));
        printf("OK     caught %-22s %s\n", name, line.c_str());
    }
}

static void expect_order_dependent(const char *name, bool dependent)
{
    const outcome f = run_child(name, "fwd"), r = run_child(name, "rev"),
                  x = run_child(name, "random");
    const bool ran = f.status == 0 && r.status == 0 && x.status == 0;
    const bool differ = f.output != r.output || f.output != x.output;
    CHECK(ran && differ == dependent,
          "%s: fwd \"%s\", rev \"%s\", random \"%s\" (exit %d %d %d): "
          "%s",
          name, f.output.c_str(), r.output.c_str(), x.output.c_str(), f.status, r.status, x.status,
          dependent ? "the race was not caught" : "the correct kernel depends on the order");
    if (ran && differ == dependent)
        printf("OK     %-29s fwd/rev/random: %s\n", name,
               dependent ? "results differ (caught)" : "same result");
}

int main(int argc, char **argv)
{
    if (argc == 2)
        return run_case(argv[1]);
    expect_order_dependent("fixed_syncthreads", false);
    expect_order_dependent("missing_syncthreads", true);
    expect_caught("off_by_one", "out-of-bounds read");
    expect_caught("divergent_shuffle", "divergent code");
    expect_caught("divergent_syncthreads", "divergent __syncthreads");
    expect_caught("collective_vs_barrier", "deadlock");
    expect_caught("partial_warp_mask", "has only 16 lanes");
    expect_caught("use_after_free", "use after cudaFree");
    expect_caught("misaligned", "misaligned read");
    expect_caught("dynamic_shared_oob", "dynamic shared memory");
    expect_caught("host_deref", "host code dereferenced device memory");
    expect_caught("sync_in_capture", "during stream capture");
    return emu_check_summary("cuda_emu_planted");
}
