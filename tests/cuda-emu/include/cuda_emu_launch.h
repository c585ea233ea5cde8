/* cuda_emu_launch.h (CUDA emulator) — CUDA_EMU_LAUNCH, the emulator's spelling of
 * `kernel<<<grid, block, shared_bytes, stream>>>(args...)`, used by kernels/launch.h:
 *
 *     CUDA_EMU_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...);
 *
 * `kernel` may be a template-id with commas (gemm<uint16_t, true>). The arguments are
 * converted to the kernel's parameter types and copied at the launch, as on the device; the
 * launch is checked (block and grid limits, shared memory) and queued on the stream, or
 * recorded when the stream is capturing a graph. Errors are returned by cudaGetLastError(). */
#ifndef CUDA_EMU_LAUNCH_H
#define CUDA_EMU_LAUNCH_H

#include "cuda_runtime_api.h"

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace cuda_emu {

/* The body every CUDA thread of the launch runs (the kernel with its copied arguments). */
struct kernel_body {
    virtual ~kernel_body() = default;
    virtual void run() const = 0;
};

struct launch_request {
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    const void *kernel;  /* identity: attributes, static shared memory, the name        */
    const char *spelled; /* the kernel as written at the launch (fallback name)        */
};

void submit_launch(const launch_request &request, std::shared_ptr<const kernel_body> body);
/* The running block's dynamic shared memory (MK_DYNAMIC_SHARED in kernels/launch.h). */
void *dynamic_shared();

template <class... P> struct bound_kernel final : kernel_body {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> args;
    template <class... A>
    explicit bound_kernel(void (*k)(P...), A &&...a) : kernel(k), args(std::forward<A>(a)...)
    {
    }
    void run() const override { std::apply(kernel, args); }
};

template <class... P> struct launcher {
    launch_request request;
    void (*kernel)(P...);
    template <class... A> void operator()(A &&...a) const
    {
        static_assert(sizeof...(A) == sizeof...(P),
                      "kernel launched with the wrong number of arguments");
        submit_launch(request,
                      std::make_shared<const bound_kernel<P...>>(kernel, std::forward<A>(a)...));
    }
};

template <class... P>
inline launcher<P...> make_launcher(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                                    void (*kernel)(P...), const char *spelled)
{
    return launcher<P...>{
        {grid, block, shared_bytes, stream, reinterpret_cast<const void *>(kernel), spelled},
        kernel};
}

} // namespace cuda_emu

#define CUDA_EMU_LAUNCH(grid, block, shared_bytes, stream, ...)                                    \
    ::cuda_emu::make_launcher((grid), (block), (size_t)(shared_bytes), (stream), &__VA_ARGS__,     \
                              #__VA_ARGS__)

#endif
