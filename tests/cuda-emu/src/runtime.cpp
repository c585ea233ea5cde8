/* runtime.cpp — the CUDA runtime API on the CPU, with the device's rules.
 *
 * Streams. Work (kernels, cuBLASLt matmuls, async copies and memsets, event records) is queued
 * per stream and runs when the host waits for it (stream, event or device synchronisation, a
 * blocking copy, cudaFree), in stream order. So a host that reads the destination of an async
 * device-to-host copy into pinned memory before synchronising sees stale bytes, as it might
 * on the device. A copy from pageable host memory takes its bytes at the call (the runtime
 * stages them), a copy into pageable memory completes before the call returns (it
 * synchronises the stream). Work on the legacy default stream (0) first completes the other
 * blocking streams, and vice versa.
 *
 * Memory. Every pointer is classified by where it really lives (memory.cpp): device (inside
 * one live cudaMalloc allocation), pinned host (cudaMallocHost/cudaHostAlloc) or pageable
 * host. A copy whose direction does not match, or whose range leaves its allocation, is
 * refused with cudaErrorInvalidValue and a message.
 *
 * Graph capture. Between cudaStreamBeginCapture and cudaStreamEndCapture the stream's work is
 * recorded, not run. A synchronisation, cudaMalloc/cudaFree/cudaMallocHost/cudaFreeHost
 * (except in relaxed mode), a copy to or from pageable memory, or work on the legacy stream
 * during capture is an error that invalidates the capture, as on the device: the call
 * returns cudaErrorStreamCaptureUnsupported (or …Implicit), later work on the stream
 * cudaErrorStreamCaptureInvalidated, and cudaStreamEndCapture returns no graph. A graph
 * launch queues the recorded work again (kernels with the arguments they were captured with).
 *
 * Errors found in device code (out of bounds, divergent collectives, deadlocks) stop the
 * program with a report (internal.h: fatal): on the device they are sticky errors or hangs. */
#include "internal.h"

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <set>

struct cuda_emu_graph {
    std::vector<cuda_emu::work_item> nodes;
};
struct cuda_emu_graph_exec {
    std::vector<cuda_emu::work_item> nodes;
};
struct cuda_emu_stream {
    unsigned flags = 0;
    std::deque<cuda_emu::work_item> queue;
    bool capturing = false, capture_invalidated = false;
    cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
    cuda_emu_graph *capture = nullptr;
};
struct cuda_emu_event {
    unsigned flags = 0;
    bool recorded = false, completed = false, captured = false;
    double time_ms = 0;
    cuda_emu_stream *stream = nullptr;
};

namespace cuda_emu {

namespace {

cuda_emu_stream legacy_stream;
std::set<cuda_emu_stream *> streams;
std::set<cuda_emu_event *> events;
std::set<cuda_emu_graph *> graphs;
std::set<cuda_emu_graph_exec *> graph_execs;
cudaError_t last_error = cudaSuccess;
int current_device = 0;
const auto clock_start = std::chrono::steady_clock::now();

double now_ms()
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - clock_start)
        .count();
}

cuda_emu_stream *resolve(cudaStream_t s)
{
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return &legacy_stream;
    if (!streams.count(s))
        return nullptr;
    return s;
}

void flush(cuda_emu_stream *s)
{
    if (s->queue.empty())
        return;
    device_memory_open();
    while (!s->queue.empty()) {
        work_item item = std::move(s->queue.front());
        s->queue.pop_front();
        item.run();
    }
    device_memory_close();
}

void flush_all()
{
    flush(&legacy_stream);
    for (cuda_emu_stream *s : streams)
        flush(s);
}

/* Is any stream capturing in a mode that forbids `unsafe` calls (allocation and the like)? */
bool capture_forbids(bool allocation)
{
    for (cuda_emu_stream *s : streams)
        if (s->capturing && !(allocation && s->capture_mode == cudaStreamCaptureModeRelaxed))
            return true;
    return false;
}

void invalidate_captures(const char *call, const char *why)
{
    for (cuda_emu_stream *s : streams)
        if (s->capturing && !s->capture_invalidated) {
            s->capture_invalidated = true;
            complain("%s during stream capture: %s; the capture is invalidated "
                     "(cudaStreamEndCapture will fail), as on the device",
                     call, why);
        }
}

/* The check at the top of every call that a capture forbids. */
bool refused_during_capture(const char *call, bool allocation, const char *why)
{
    if (!capture_forbids(allocation))
        return false;
    invalidate_captures(call, why);
    return true;
}

enum where { PAGEABLE, PINNED, DEVICE, DEVICE_OUT_OF_RANGE };

where classify(const void *p, size_t bytes)
{
    if (in_device_space(p))
        return device_range(p, bytes) ? DEVICE : DEVICE_OUT_OF_RANGE;
    return is_pinned_host(p, bytes) ? PINNED : PAGEABLE;
}

const char *where_name(where w)
{
    return w == DEVICE     ? "device memory"
           : w == PINNED   ? "pinned host memory"
           : w == PAGEABLE ? "pageable host memory"
                           : "device memory outside any allocation";
}

} // namespace

/* ---- reporting ------------------------------------------------------------------------- */

std::recursive_mutex &api_lock()
{
    static std::recursive_mutex m;
    return m;
}

void fatal(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const std::string where = kernel_context();
    fprintf(stderr, "\ncuda-emu: error: %s%s%s\n", where.c_str(), where.empty() ? "" : ": ", msg);
    fflush(stderr);
    abort();
}

void complain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda-emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

void set_last_error(cudaError_t error) { last_error = error; }

cudaError_t enqueue(cudaStream_t stream, work_item item)
{
    cuda_emu_stream *s = resolve(stream);
    if (!s) {
        complain("%s on stream %p: not a live stream", item.what, (void *)stream);
        return cudaErrorInvalidResourceHandle;
    }
    if (s->capturing) {
        if (s->capture_invalidated)
            return cudaErrorStreamCaptureInvalidated;
        s->capture->nodes.push_back(std::move(item));
        return cudaSuccess;
    }
    if (s == &legacy_stream) {
        if (capture_forbids(false)) {
            invalidate_captures(item.what, "work on the legacy default stream (stream 0) "
                                           "would synchronise with the capturing stream");
            return cudaErrorStreamCaptureImplicit;
        }
        for (cuda_emu_stream *o : streams)
            if (!(o->flags & cudaStreamNonBlocking))
                flush(o);
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        flush(&legacy_stream);
    }
    s->queue.push_back(std::move(item));
    return cudaSuccess;
}

/* ---- launches (cuda_emu_launch.h) ------------------------------------------------------ */

void submit_launch(const launch_request &request, std::shared_ptr<const kernel_body> body)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    kernel_info &info = kernel_info_for(request.kernel, request.spelled);
    const dim3 g = request.grid, b = request.block;
    const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    const char *problem = nullptr;
    cudaError_t error = cudaErrorInvalidConfiguration;
    if (!b.x || !b.y || !b.z || b.x > 1024 || b.y > 1024 || b.z > 64)
        problem = "block dimensions out of range (x, y ≤ 1024, z ≤ 64, none 0)";
    else if (threads > 1024)
        problem = "more than 1024 threads per block";
    else if (!g.x || !g.y || !g.z || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
        problem = "grid dimensions out of range (x < 2^31, y, z ≤ 65535, none 0)";
    else if (info.static_shared_bytes > 48 * 1024)
        problem = "more than 48 KB of static shared memory", error = cudaErrorInvalidValue;
    else if (request.shared_bytes > (size_t)info.max_dynamic_shared_bytes)
        problem = "more dynamic shared memory than allowed (48 KB, or what "
                  "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) opted in)",
        error = cudaErrorInvalidValue;
    else if (info.static_shared_bytes + request.shared_bytes > 227 * 1024)
        problem = "more than 227 KB of shared memory per block", error = cudaErrorInvalidValue;
    if (problem) {
        complain("launch of %s with grid (%u,%u,%u), block (%u,%u,%u), %zu bytes of dynamic "
                 "shared memory (%zu static): %s",
                 info.name.c_str(), g.x, g.y, g.z, b.x, b.y, b.z, request.shared_bytes,
                 info.static_shared_bytes, problem);
        last_error = error;
        return;
    }
    launch_request copy = request;
    kernel_info *ip = &info;
    cudaError_t e = enqueue(
        request.stream, {"a kernel launch", [copy, body, ip] { run_kernel(copy, *body, *ip); }});
    if (e != cudaSuccess)
        last_error = e;
}

} // namespace cuda_emu

using namespace cuda_emu;

#define API_LOCK std::lock_guard<std::recursive_mutex> lock_(api_lock())

extern "C" {

/* ---- errors ---------------------------------------------------------------------------- */

cudaError_t cudaGetLastError(void)
{
    API_LOCK;
    const cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    API_LOCK;
    return last_error;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
#define NAME(x)                                                                                    \
    case x: return #x;
        NAME(cudaSuccess)
        NAME(cudaErrorInvalidValue) NAME(cudaErrorMemoryAllocation)
            NAME(cudaErrorInitializationError) NAME(cudaErrorInvalidConfiguration)
                NAME(cudaErrorInvalidDevicePointer) NAME(cudaErrorInvalidMemcpyDirection)
                    NAME(cudaErrorNoDevice) NAME(cudaErrorInvalidDevice)
                        NAME(cudaErrorInvalidResourceHandle) NAME(cudaErrorIllegalState)
                            NAME(cudaErrorNotReady) NAME(cudaErrorIllegalAddress)
                                NAME(cudaErrorLaunchOutOfResources) NAME(cudaErrorLaunchFailure)
                                    NAME(cudaErrorNotSupported)
                                        NAME(cudaErrorStreamCaptureUnsupported)
                                            NAME(cudaErrorStreamCaptureInvalidated)
                                                NAME(cudaErrorStreamCaptureUnmatched)
                                                    NAME(cudaErrorStreamCaptureImplicit)
                                                        NAME(cudaErrorUnknown)
#undef NAME
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    default: return cudaGetErrorName(e);
    }
}

/* ---- device ---------------------------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *count)
{
    /* CUDA_EMU_FAULT=nodevice: what a machine without a usable driver answers. */
    const char *fault = getenv("CUDA_EMU_FAULT");
    if (fault && strcmp(fault, "nodevice") == 0) {
        *count = 0;
        return cudaErrorNoDevice;
    }
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (device != 0)
        return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CUDA emulator (H100-like)");
    p->totalGlobalMem = device_memory_total();
    p->sharedMemPerBlock = 48 * 1024;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9, p->minor = 0;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->sharedMemPerMultiprocessor = 228 * 1024;
    p->l2CacheSize = 50 << 20;
    p->memoryBusWidth = 5120;
    p->clockRate = 1980000;
    p->memoryClockRate = 2619000;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device != 0) {
        complain("cudaSetDevice(%d): the emulator has one device (0)", device);
        return cudaErrorInvalidDevice;
    }
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    API_LOCK;
    if (refused_during_capture("cudaDeviceSynchronize", false,
                               "it would wait for the capturing stream"))
        return cudaErrorStreamCaptureUnsupported;
    totals.host_syncs++;
    flush_all();
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    API_LOCK;
    *total_bytes = device_memory_total();
    *free_bytes = device_memory_total() - device_bytes_in_use();
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    API_LOCK;
    kernel_info &info = kernel_info_for(func, "a kernel");
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value + info.static_shared_bytes > 227 * 1024) {
            complain("cudaFuncSetAttribute(%s, MaxDynamicSharedMemorySize, %d): at most %zu "
                     "bytes (227 KB less %zu static)",
                     info.name.c_str(), value, 227 * 1024 - info.static_shared_bytes,
                     info.static_shared_bytes);
            return cudaErrorInvalidValue;
        }
        info.max_dynamic_shared_bytes = value;
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return value >= -1 && value <= 100 ? cudaSuccess : cudaErrorInvalidValue;
    return cudaErrorInvalidValue;
}

/* ---- memory ---------------------------------------------------------------------------- */

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    API_LOCK;
    if (!ptr)
        return cudaErrorInvalidValue;
    if (refused_during_capture("cudaMalloc", true,
                               "allocation is not allowed (use "
                               "cudaMallocAsync, or allocate before capturing)"))
        return cudaErrorStreamCaptureUnsupported;
    return device_malloc(ptr, bytes);
}

cudaError_t cudaFree(void *ptr)
{
    API_LOCK;
    if (!ptr)
        return cudaSuccess;
    if (refused_during_capture("cudaFree", true, "freeing waits for the device"))
        return cudaErrorStreamCaptureUnsupported;
    /* cudaFree waits until the device is done with everything queued. */
    totals.host_syncs++;
    flush_all();
    return device_free(ptr);
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned int flags)
{
    API_LOCK;
    (void)flags;
    if (!ptr)
        return cudaErrorInvalidValue;
    if (refused_during_capture("cudaMallocHost", true, "pinned allocation is not allowed"))
        return cudaErrorStreamCaptureUnsupported;
    void *p = nullptr;
    if (posix_memalign(&p, 4096, bytes ? bytes : 1))
        return cudaErrorMemoryAllocation;
    pinned_registry()[(uintptr_t)p] = bytes ? bytes : 1;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes) { return cudaHostAlloc(ptr, bytes, 0); }

cudaError_t cudaFreeHost(void *ptr)
{
    API_LOCK;
    if (!ptr)
        return cudaSuccess;
    if (refused_during_capture("cudaFreeHost", true, "freeing waits for the device"))
        return cudaErrorStreamCaptureUnsupported;
    auto it = pinned_registry().find((uintptr_t)ptr);
    if (it == pinned_registry().end()) {
        complain("cudaFreeHost(%p): not memory from cudaMallocHost/cudaHostAlloc", ptr);
        return cudaErrorInvalidValue;
    }
    totals.host_syncs++;
    flush_all();
    pinned_registry().erase(it);
    free(ptr);
    return cudaSuccess;
}

static cudaError_t copy(const char *call, void *dst, const void *src, size_t bytes,
                        enum cudaMemcpyKind kind, cudaStream_t stream, bool blocking)
{
    if (bytes == 0)
        return cudaSuccess;
    const where d = classify(dst, bytes), s = classify(src, bytes);
    if (d == DEVICE_OUT_OF_RANGE || s == DEVICE_OUT_OF_RANGE) {
        complain("%s(%p ← %p, %zu bytes): the %s range is not inside one live device "
                 "allocation (out of bounds, or freed)",
                 call, dst, src, bytes, d == DEVICE_OUT_OF_RANGE ? "destination" : "source");
        return cudaErrorInvalidValue;
    }
    const bool dd = d == DEVICE, sd = s == DEVICE;
    if (kind == cudaMemcpyDefault)
        kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                  : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    const bool ok = kind == cudaMemcpyHostToDevice     ? dd && !sd
                    : kind == cudaMemcpyDeviceToHost   ? !dd && sd
                    : kind == cudaMemcpyDeviceToDevice ? dd && sd
                    : kind == cudaMemcpyHostToHost     ? !dd && !sd
                                                       : false;
    if (!ok) {
        static const char *kinds[] = {"HostToHost", "HostToDevice", "DeviceToHost",
                                      "DeviceToDevice", "Default"};
        complain("%s(kind cudaMemcpy%s): the destination %p is %s and the source %p is %s", call,
                 kinds[kind], dst, where_name(d), src, where_name(s));
        return cudaErrorInvalidValue;
    }
    const bool pageable = (!dd && d == PAGEABLE) || (!sd && s == PAGEABLE);
    if (pageable && refused_during_capture(call, false,
                                           "a copy to or from pageable host "
                                           "memory cannot be captured (use pinned memory)"))
        return cudaErrorStreamCaptureUnsupported;
    if (dd)
        totals.copies_to_device += !sd;
    if (sd)
        totals.copies_to_host += !dd;
    work_item item{"a copy", nullptr};
    if (kind == cudaMemcpyHostToDevice && s == PAGEABLE) {
        /* staged now: the caller may reuse or free src as soon as the call returns */
        auto staged =
            std::make_shared<std::vector<char>>((const char *)src, (const char *)src + bytes);
        item.run = [dst, staged, bytes] {
            memcpy(dst, staged->data(), bytes);
            count_bytes(0, bytes);
        };
    } else {
        item.run = [dst, src, bytes, dd, sd] {
            memcpy(dst, src, bytes);
            count_bytes(sd ? bytes : 0, dd ? bytes : 0);
        };
    }
    if (blocking) {
        if (refused_during_capture(call, false, "a synchronous copy waits for the device"))
            return cudaErrorStreamCaptureUnsupported;
    }
    cudaError_t e = enqueue(stream, std::move(item));
    if (e != cudaSuccess)
        return e;
    /* A blocking copy, or one into pageable memory, returns when it is done. */
    if (blocking || (kind == cudaMemcpyDeviceToHost && d == PAGEABLE)) {
        totals.host_syncs++;
        if (blocking)
            flush_all();
        else
            flush(resolve(stream));
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    API_LOCK;
    return copy("cudaMemcpyAsync", dst, src, bytes, kind, stream, false);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    API_LOCK;
    if (refused_during_capture("cudaMemcpy", false, "a synchronous copy waits for the device"))
        return cudaErrorStreamCaptureUnsupported;
    return copy("cudaMemcpy", dst, src, bytes, kind, nullptr, true);
}

static cudaError_t fill(const char *call, void *dst, int value, size_t bytes, cudaStream_t stream)
{
    if (bytes == 0)
        return cudaSuccess;
    if (!device_range(dst, bytes)) {
        complain("%s(%p, %zu bytes): not inside one live device allocation", call, dst, bytes);
        return cudaErrorInvalidValue;
    }
    return enqueue(stream, {"a memset", [dst, value, bytes] {
                                memset(dst, value, bytes);
                                count_bytes(0, bytes);
                            }});
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream)
{
    API_LOCK;
    return fill("cudaMemsetAsync", dst, value, bytes, stream);
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes)
{
    API_LOCK;
    if (refused_during_capture("cudaMemset", false, "a synchronous memset waits for the device"))
        return cudaErrorStreamCaptureUnsupported;
    cudaError_t e = fill("cudaMemset", dst, value, bytes, nullptr);
    totals.host_syncs++;
    flush_all();
    return e;
}

/* ---- streams --------------------------------------------------------------------------- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    API_LOCK;
    cuda_emu_stream *s = new cuda_emu_stream;
    s->flags = flags;
    streams.insert(s);
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    API_LOCK;
    cuda_emu_stream *s = resolve(stream);
    if (!s || s == &legacy_stream) {
        complain("cudaStreamDestroy(%p): not a stream created by cudaStreamCreate", (void *)stream);
        return cudaErrorInvalidResourceHandle;
    }
    if (s->capturing) {
        complain("cudaStreamDestroy of a stream that is capturing a graph");
        return cudaErrorStreamCaptureUnsupported;
    }
    flush(s); /* queued work still completes */
    for (cuda_emu_event *e : events)
        if (e->stream == s)
            e->stream = nullptr;
    streams.erase(s);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    API_LOCK;
    cuda_emu_stream *s = resolve(stream);
    if (!s)
        return cudaErrorInvalidResourceHandle;
    if (s->capturing || (s == &legacy_stream && capture_forbids(false))) {
        invalidate_captures("cudaStreamSynchronize",
                            "a stream cannot be waited for while it is being captured");
        return cudaErrorStreamCaptureUnsupported;
    }
    totals.host_syncs++;
    if (s == &legacy_stream)
        flush_all();
    else
        flush(s);
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    API_LOCK;
    cuda_emu_stream *s = resolve(stream);
    if (!s)
        return cudaErrorInvalidResourceHandle;
    if (s->capturing) {
        invalidate_captures("cudaStreamQuery", "a capturing stream cannot be queried");
        return cudaErrorStreamCaptureUnsupported;
    }
    flush(s); /* the emulated device is done the moment anyone asks */
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    API_LOCK;
    (void)flags;
    if (!events.count(event))
        return cudaErrorInvalidResourceHandle;
    cuda_emu_stream *other = event->stream;
    cuda_emu_stream *s = resolve(stream);
    if (!s)
        return cudaErrorInvalidResourceHandle;
    if (!other || other == s || !event->recorded)
        return cudaSuccess;
    return enqueue(stream, {"cudaStreamWaitEvent", [other] {
                                if (streams.count(other))
                                    flush(other);
                            }});
}

/* ---- events ---------------------------------------------------------------------------- */

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    API_LOCK;
    cuda_emu_event *e = new cuda_emu_event;
    e->flags = flags;
    events.insert(e);
    *event = e;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    API_LOCK;
    if (!events.count(event))
        return cudaErrorInvalidResourceHandle;
    cuda_emu_stream *s = resolve(stream);
    if (!s)
        return cudaErrorInvalidResourceHandle;
    event->recorded = true;
    event->completed = false;
    event->captured = s->capturing;
    event->stream = s;
    return enqueue(stream, {"cudaEventRecord", [event] {
                                if (events.count(event)) {
                                    event->completed = true;
                                    event->time_ms = now_ms();
                                }
                            }});
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    API_LOCK;
    if (!events.count(event))
        return cudaErrorInvalidResourceHandle;
    if (event->captured || refused_during_capture("cudaEventSynchronize", false,
                                                  "the host cannot wait during a capture")) {
        complain("cudaEventSynchronize on an event recorded during stream capture");
        return cudaErrorStreamCaptureUnsupported;
    }
    totals.host_syncs++;
    if (event->recorded && event->stream &&
        (event->stream == &legacy_stream || streams.count(event->stream)))
        flush(event->stream);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event)
{
    API_LOCK;
    if (!events.count(event))
        return cudaErrorInvalidResourceHandle;
    if (event->recorded && event->stream && !event->captured)
        flush(event->stream);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    API_LOCK;
    if (!events.count(start) || !events.count(end))
        return cudaErrorInvalidResourceHandle;
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return cudaErrorInvalidResourceHandle;
    if (!start->completed || !end->completed)
        return start->recorded && end->recorded ? cudaErrorNotReady
                                                : cudaErrorInvalidResourceHandle;
    *ms = (float)(end->time_ms - start->time_ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    API_LOCK;
    if (!events.erase(event))
        return cudaErrorInvalidResourceHandle;
    delete event;
    return cudaSuccess;
}

/* ---- graphs ---------------------------------------------------------------------------- */

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    API_LOCK;
    cuda_emu_stream *s = resolve(stream);
    if (!s)
        return cudaErrorInvalidResourceHandle;
    if (s == &legacy_stream) {
        complain("cudaStreamBeginCapture on the legacy default stream: capture needs a "
                 "created stream");
        return cudaErrorStreamCaptureUnsupported;
    }
    if (s->capturing) {
        complain("cudaStreamBeginCapture: the stream is capturing already");
        return cudaErrorIllegalState;
    }
    flush(s); /* earlier work is not part of the graph */
    s->capturing = true;
    s->capture_invalidated = false;
    s->capture_mode = mode;
    s->capture = new cuda_emu_graph;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    API_LOCK;
    cuda_emu_stream *s = resolve(stream);
    *graph = nullptr;
    if (!s)
        return cudaErrorInvalidResourceHandle;
    if (!s->capturing)
        return cudaErrorIllegalState;
    s->capturing = false;
    if (s->capture_invalidated) {
        delete s->capture;
        s->capture = nullptr;
        s->capture_invalidated = false;
        return cudaErrorStreamCaptureInvalidated;
    }
    graphs.insert(s->capture);
    *graph = s->capture;
    s->capture = nullptr;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status)
{
    API_LOCK;
    cuda_emu_stream *s = resolve(stream);
    if (!s)
        return cudaErrorInvalidResourceHandle;
    *status = !s->capturing            ? cudaStreamCaptureStatusNone
              : s->capture_invalidated ? cudaStreamCaptureStatusInvalidated
                                       : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    API_LOCK;
    (void)flags;
    if (!graphs.count(graph))
        return cudaErrorInvalidResourceHandle;
    cuda_emu_graph_exec *x = new cuda_emu_graph_exec;
    x->nodes = graph->nodes;
    graph_execs.insert(x);
    *exec = x;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph,
                                          unsigned long long flags)
{
    return cudaGraphInstantiate(exec, graph, flags);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    API_LOCK;
    if (!graph_execs.count(exec))
        return cudaErrorInvalidResourceHandle;
    totals.graph_launches++;
    for (const work_item &node : exec->nodes) {
        cudaError_t e = enqueue(stream, node);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    API_LOCK;
    if (!graph_execs.erase(exec))
        return cudaErrorInvalidResourceHandle;
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    API_LOCK;
    if (!graphs.erase(graph))
        return cudaErrorInvalidResourceHandle;
    delete graph;
    return cudaSuccess;
}

} /* extern "C" */
