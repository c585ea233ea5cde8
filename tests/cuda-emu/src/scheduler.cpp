/* scheduler.cpp — runs a kernel launch: every CUDA thread of a block is a fiber (fiber.h), the
 * fibers of a block take turns on the launching host thread, and a fiber gives up its turn
 * only at __syncthreads or a warp collective. Blocks run one after another.
 *
 * A pass runs every runnable fiber until it blocks, in the order CUDA_EMU_ORDER asks for:
 *   fwd    thread 0, 1, 2, …      rev    the reverse      random  a fresh shuffle every pass
 *          (CUDA_EMU_SEED, default 1)
 * A kernel whose results differ between orders lets threads communicate without the barrier
 * or collective that would order them on the device.
 *
 * After a pass nothing is runnable. Then, in this order:
 *   1. every warp collective whose named lanes have all arrived (same collective, same mask)
 *      completes, and its lanes become runnable; a named lane that exited, that waits at a
 *      different collective or mask, or a mask without the caller, is an error;
 *   2. if every live thread waits at __syncthreads, the barrier opens; threads waiting at
 *      different __syncthreads call sites (divergent barriers) are an error, and a barrier
 *      that some threads of the block never reach because they exited is a warning
 *      (CUDA_EMU_STRICT=1: an error);
 *   3. otherwise the block is deadlocked (e.g. a collective whose lanes sit at a barrier):
 *      an error that names who waits for whom. Nothing ever hangs. */
#include "fiber.h"
#include "internal.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda_emu_device.h"

namespace cuda_emu {


thread_view *current_thread = nullptr;
uint3 block_index = {0, 0, 0};
dim3 block_dim, grid_dim;

namespace {

enum fiber_state { RUNNABLE, AT_BARRIER, AT_COLLECTIVE, EXITED };

struct cuda_thread : thread_view {
    fiber_context context;
    fiber_state state = EXITED;
    unsigned linear = 0, warp = 0;
    /* at a collective */
    collective kind = COLLECTIVE_SYNCWARP;
    unsigned mask = 0;
    uint64_t value = 0, result = 0;
    int arg = 0, width = 32;
    /* at a barrier */
    const void *site = nullptr;
    barrier_reduce reduce = BARRIER_PLAIN;
    int predicate = 0;
};

constexpr int max_threads = 1024;
constexpr size_t dynamic_shared_max = 227 * 1024;

cuda_thread *threads = nullptr;
fiber_context host;
const kernel_body *running_body = nullptr;
const kernel_info *running_info = nullptr;
int thread_count = 0;
int order_mode = -1; /* 0 fwd, 1 rev, 2 random */
uint64_t seed = 1;
std::mt19937_64 rng;
bool strict = false;
std::vector<int> order;

const char *order_name() { return order_mode == 1 ? "rev" : order_mode == 2 ? "random" : "fwd"; }

void read_settings()
{
    if (order_mode >= 0)
        return;
    const char *o = getenv("CUDA_EMU_ORDER");
    order_mode = 0;
    if (o && !strcmp(o, "rev"))
        order_mode = 1;
    else if (o && !strcmp(o, "random"))
        order_mode = 2;
    else if (o && *o && strcmp(o, "fwd"))
        fprintf(stderr, "cuda-emu: CUDA_EMU_ORDER=%s is not fwd, rev or random; using fwd\n", o);
    const char *s = getenv("CUDA_EMU_SEED");
    seed = s ? strtoull(s, nullptr, 0) : 1;
    rng.seed(seed);
    const char *st = getenv("CUDA_EMU_STRICT");
    strict = st && strcmp(st, "0");
}

const char *collective_name(collective k)
{
    static const char *names[] = {"__syncwarp",        "__shfl_sync",       "__shfl_up_sync",
                                  "__shfl_down_sync",  "__shfl_xor_sync",   "__ballot_sync",
                                  "__any_sync",        "__all_sync",        "__match_any_sync",
                                  "__match_all_sync",  "__reduce_add_sync", "__reduce_min_sync",
                                  "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync",
                                  "__reduce_and_sync", "__reduce_or_sync",  "__reduce_xor_sync"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "a warp collective";
}

/* A pass hands the turn from thread to thread directly, in `order`, without going back to
 * the scheduler in between (half the switches); the last runnable thread of the pass returns
 * to it. Equivalent to resuming each runnable thread of `order` in turn: during a pass only
 * the scheduler makes threads runnable, and it does so between passes. */
int pass_position = -1; /* index in `order` of the thread that has the turn */

cuda_thread *next_runnable()
{
    for (int k = pass_position + 1; k < thread_count; k++) {
        cuda_thread *t = &threads[order[k]];
        if (t->state == RUNNABLE) {
            pass_position = k;
            return t;
        }
    }
    return nullptr;
}

/* Gives the turn to the next runnable thread of the pass (or back to the scheduler); returns
 * when this thread gets a turn again (never when it has finished). */
void pass_turn(cuda_thread *self, bool finished)
{
    cuda_thread *next = next_runnable();
    current_thread = next;
    fiber_switch(self->context, next ? next->context : host, finished);
}

void thread_main()
{
    cuda_thread *self = static_cast<cuda_thread *>(current_thread);
    fiber_arrived(self->context);
    running_body->run();
    self->state = EXITED;
    pass_turn(self, true);
    __builtin_unreachable();
}

/* One pass; false when no thread was runnable. */
bool run_pass()
{
    pass_position = -1;
    cuda_thread *first = next_runnable();
    if (!first)
        return false;
    current_thread = first;
    fiber_switch(host, first->context);
    current_thread = nullptr;
    return true;
}

void allocate_threads()
{
    if (threads)
        return;
    const char *kb = getenv("CUDA_EMU_STACK_KB");
    const size_t stack_size = (kb ? (size_t)atoi(kb) : 256) << 10;
    threads = new cuda_thread[max_threads];
    char *stacks = fiber_stacks(max_threads, stack_size);
    const size_t span = stack_size + (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < max_threads; i++) {
        threads[i].context.stack = stacks + i * span + (span - stack_size);
        threads[i].context.stack_size = stack_size;
    }
    void *m = mmap(nullptr, dynamic_shared_max + 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        fatal("could not map dynamic shared memory");
    dynamic_shared_base = (uintptr_t)m;
    dynamic_shared_capacity = dynamic_shared_max + 4096;
}

std::string thread_name(const cuda_thread &t)
{
    char buf[96];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u) (warp %u lane %u)", t.thread_idx.x, t.thread_idx.y,
             t.thread_idx.z, t.warp, t.lane);
    return buf;
}

[[noreturn]] void fail_at(const cuda_thread &t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void fail_at(const cuda_thread &t, const char *fmt, ...)
{
    current_thread = const_cast<cuda_thread *>(&t);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fatal("%s", msg);
}

/* Step 1: completes the collectives whose lanes have all arrived. */
bool complete_collectives()
{
    bool released = false;
    const int warps = (thread_count + 31) / 32;
    for (int w = 0; w < warps; w++) {
        cuda_thread *lane0 = &threads[w * 32];
        const int lanes = std::min(32, thread_count - w * 32);
        unsigned done = 0; /* lanes handled this round */
        for (int l = 0; l < lanes; l++) {
            const cuda_thread &t = lane0[l];
            if (t.state != AT_COLLECTIVE || (done >> l & 1u))
                continue;
            const unsigned m = t.mask;
            const char *name = collective_name(t.kind);
            if (!(m >> l & 1u))
                fail_at(t, "%s with mask 0x%08x, which does not name the calling lane %d", name, m,
                        l);
            bool ready = true;
            for (int j = 0; j < 32; j++) {
                if (!(m >> j & 1u))
                    continue;
                if (j >= lanes)
                    fail_at(t,
                            "%s with mask 0x%08x names lane %d, but this warp has only %d "
                            "lanes (block of %d threads)",
                            name, m, j, lanes, thread_count);
                const cuda_thread &o = lane0[j];
                if (o.state == EXITED)
                    fail_at(t,
                            "%s with mask 0x%08x names lane %d, which has exited: a warp "
                            "collective in divergent code (undefined behaviour on the device)",
                            name, m, j);
                if (o.state == AT_COLLECTIVE && (o.mask != m || o.kind != t.kind))
                    fail_at(t,
                            "lanes of warp %d meet at different warp collectives: lane %d "
                            "at %s (mask 0x%08x), lane %d at %s (mask 0x%08x): divergent code",
                            w, l, name, m, j, collective_name(o.kind), o.mask);
                if (o.state != AT_COLLECTIVE)
                    ready = false;
            }
            if (!ready)
                continue;
            /* All named lanes are here: compute every lane's result. */
            uint64_t values[32];
            for (int j = 0; j < 32; j++)
                values[j] = (m >> j & 1u) ? lane0[j].value : 0;
            for (int j = 0; j < 32; j++) {
                if (!(m >> j & 1u))
                    continue;
                cuda_thread &me = lane0[j];
                const int width = me.width;
                if (width < 1 || width > 32 || (width & (width - 1)))
                    fail_at(me, "%s with width %d: the width must be a power of two up to 32", name,
                            width);
                const int seg = j & ~(width - 1);
                int src = j;
                uint64_t r = 0;
                switch (me.kind) {
                case COLLECTIVE_SYNCWARP: break;
                case COLLECTIVE_SHFL: src = seg + (me.arg & (width - 1)); goto shuffle;
                case COLLECTIVE_SHFL_UP: src = j - me.arg >= seg ? j - me.arg : j; goto shuffle;
                case COLLECTIVE_SHFL_DOWN:
                    src = j + me.arg < seg + width ? j + me.arg : j;
                    goto shuffle;
                case COLLECTIVE_SHFL_XOR:
                    src = j ^ me.arg;
                    if (src >= seg + width || src > 31 || src < 0)
                        src = j;
                shuffle:
                    if (!(m >> src & 1u))
                        fail_at(me,
                                "%s reads lane %d, which is not in the mask 0x%08x "
                                "(the result is undefined on the device)",
                                name, src, m);
                    r = values[src];
                    break;
                case COLLECTIVE_BALLOT:
                case COLLECTIVE_ANY:
                case COLLECTIVE_ALL: {
                    unsigned bits = 0;
                    for (int k = 0; k < 32; k++)
                        if ((m >> k & 1u) && values[k])
                            bits |= 1u << k;
                    r = me.kind == COLLECTIVE_BALLOT ? bits
                        : me.kind == COLLECTIVE_ANY  ? bits != 0
                                                     : bits == m;
                    break;
                }
                case COLLECTIVE_MATCH_ANY:
                case COLLECTIVE_MATCH_ALL: {
                    unsigned same = 0;
                    for (int k = 0; k < 32; k++)
                        if ((m >> k & 1u) && values[k] == values[j])
                            same |= 1u << k;
                    r = me.kind == COLLECTIVE_MATCH_ANY ? same : (same == m ? m : 0);
                    break;
                }
                default: {
                    uint32_t acc = 0;
                    bool first = true;
                    for (int k = 0; k < 32; k++) {
                        if (!(m >> k & 1u))
                            continue;
                        const uint32_t v = (uint32_t)values[k];
                        if (first) {
                            acc = v, first = false;
                            continue;
                        }
                        switch (me.kind) {
                        case COLLECTIVE_REDUCE_ADD: acc += v; break;
                        case COLLECTIVE_REDUCE_MIN_SIGNED:
                            acc = (int32_t)v < (int32_t)acc ? v : acc;
                            break;
                        case COLLECTIVE_REDUCE_MAX_SIGNED:
                            acc = (int32_t)v > (int32_t)acc ? v : acc;
                            break;
                        case COLLECTIVE_REDUCE_MIN_UNSIGNED: acc = v < acc ? v : acc; break;
                        case COLLECTIVE_REDUCE_MAX_UNSIGNED: acc = v > acc ? v : acc; break;
                        case COLLECTIVE_REDUCE_AND: acc &= v; break;
                        case COLLECTIVE_REDUCE_OR: acc |= v; break;
                        default: acc ^= v; break;
                        }
                    }
                    r = acc;
                }
                }
                me.result = r;
            }
            for (int j = 0; j < 32; j++)
                if (m >> j & 1u)
                    lane0[j].state = RUNNABLE;
            done |= m;
            released = true;
        }
    }
    return released;
}

/* Steps 2 and 3. Returns false when every thread has exited. */
bool open_barrier_or_fail()
{
    int live = 0, at_barrier = 0, exited = 0;
    const cuda_thread *first_barrier = nullptr, *first_collective = nullptr;
    for (int i = 0; i < thread_count; i++) {
        const cuda_thread &t = threads[i];
        if (t.state == EXITED) {
            exited++;
            continue;
        }
        live++;
        if (t.state == AT_BARRIER) {
            at_barrier++;
            if (!first_barrier)
                first_barrier = &t;
            else if (t.site != first_barrier->site)
                fail_at(t,
                        "divergent __syncthreads: %s waits at %s, %s at %s; every thread of "
                        "the block must reach the same barrier",
                        thread_name(*first_barrier).c_str(),
                        describe_code_address(first_barrier->site).c_str(), thread_name(t).c_str(),
                        describe_code_address(t.site).c_str());
        } else if (t.state == AT_COLLECTIVE && !first_collective) {
            first_collective = &t;
        }
    }
    if (live == 0)
        return false;
    if (at_barrier == live) {
        if (exited) {
            static std::map<std::string, bool> warned;
            if (strict)
                fail_at(*first_barrier,
                        "__syncthreads at %s after %d thread(s) of the block "
                        "exited (undefined behaviour by the CUDA programming guide)",
                        describe_code_address(first_barrier->site).c_str(), exited);
            if (!warned[running_info->name]) {
                warned[running_info->name] = true;
                fprintf(stderr,
                        "cuda-emu: warning: kernel %s: __syncthreads at %s after %d "
                        "thread(s) exited (undefined by the programming guide; "
                        "CUDA_EMU_STRICT=1 makes this an error)\n",
                        running_info->name.c_str(),
                        describe_code_address(first_barrier->site).c_str(), exited);
            }
        }
        int count = 0, all = 1, any = 0;
        for (int i = 0; i < thread_count; i++)
            if (threads[i].state == AT_BARRIER) {
                count += threads[i].predicate != 0;
                all &= threads[i].predicate != 0;
                any |= threads[i].predicate != 0;
            }
        for (int i = 0; i < thread_count; i++)
            if (threads[i].state == AT_BARRIER) {
                cuda_thread &t = threads[i];
                t.predicate = t.reduce == BARRIER_COUNT ? count
                              : t.reduce == BARRIER_AND ? all
                              : t.reduce == BARRIER_OR  ? any
                                                        : 0;
                t.state = RUNNABLE;
            }
        return true;
    }
    /* Deadlock: name a collective that waits and the lane it waits for. */
    if (first_collective) {
        const cuda_thread &t = *first_collective;
        const cuda_thread *lane0 = &threads[t.warp * 32];
        for (int j = 0; j < 32; j++)
            if ((t.mask >> j & 1u) && lane0[j].state == AT_BARRIER)
                fail_at(t,
                        "deadlock: %s (mask 0x%08x) waits for lane %d, which waits at "
                        "__syncthreads (%s) for this lane: a warp collective or barrier in "
                        "divergent code",
                        collective_name(t.kind), t.mask, j,
                        describe_code_address(lane0[j].site).c_str());
        fail_at(t, "deadlock: %s (mask 0x%08x) can never complete", collective_name(t.kind),
                t.mask);
    }
    fatal("deadlock: %d live threads, %d at __syncthreads", live, at_barrier);
}

void run_block()
{
    const int n = thread_count;
    for (int i = 0; i < n; i++) {
        cuda_thread &t = threads[i];
        t.thread_idx = {(unsigned)(i % block_dim.x), (unsigned)(i / block_dim.x % block_dim.y),
                        (unsigned)(i / (block_dim.x * block_dim.y))};
        t.linear = (unsigned)i;
        t.lane = (unsigned)(i & 31);
        t.warp = (unsigned)(i >> 5);
        t.state = RUNNABLE;
        fiber_prepare(t.context, thread_main);
    }
    /* The device does not clear shared memory between blocks: neither do we, and a fresh
     * block sees 0xff bytes (NaN as float, -1 as int), not the previous block's values. */
    for (const shared_variable &v : running_info->shared)
        memset(v.address, 0xff, v.bytes);
    memset((void *)dynamic_shared_base, 0xff, dynamic_shared_bytes);
    order.resize(n);
    for (int i = 0; i < n; i++)
        order[i] = order_mode == 1 ? n - 1 - i : i;
    for (;;) {
        if (order_mode == 2)
            std::shuffle(order.begin(), order.end(), rng);
        if (run_pass())
            continue;
        if (complete_collectives())
            continue;
        if (!open_barrier_or_fail())
            break;
    }
}

} // namespace

std::string kernel_context()
{
    if (!running_info)
        return "";
    char buf[512];
    int n = snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u) of (%u,%u,%u)",
                     running_info->name.c_str(), block_index.x, block_index.y, block_index.z,
                     grid_dim.x, grid_dim.y, grid_dim.z);
    if (current_thread && n > 0 && n < (int)sizeof buf)
        snprintf(buf + n, sizeof buf - n, ", %s",
                 thread_name(*static_cast<cuda_thread *>(current_thread)).c_str());
    std::string s = buf;
    char o[64];
    snprintf(o, sizeof o, " [CUDA_EMU_ORDER=%s", order_name());
    s += o;
    if (order_mode == 2) {
        snprintf(o, sizeof o, " CUDA_EMU_SEED=%" PRIu64, seed);
        s += o;
    }
    return s + "]";
}

void run_kernel(const launch_request &request, const kernel_body &body, kernel_info &info)
{
    read_settings();
    allocate_threads();
    kernel_stats &stats = stats_for(info.name);
    const unsigned long long n =
        (unsigned long long)request.block.x * request.block.y * request.block.z;
    stats.launches++;
    totals.launches++;
    stats.blocks += (unsigned long long)request.grid.x * request.grid.y * request.grid.z;
    stats.threads += n * request.grid.x * request.grid.y * request.grid.z;
    running_body = &body;
    running_info = &info;
    running_stats = &stats;
    grid_dim = request.grid;
    block_dim = request.block;
    thread_count = (int)n;
    dynamic_shared_bytes = request.shared_bytes;
    for (unsigned z = 0; z < request.grid.z; z++)
        for (unsigned y = 0; y < request.grid.y; y++)
            for (unsigned x = 0; x < request.grid.x; x++) {
                block_index = {x, y, z};
                run_block();
            }
    dynamic_shared_bytes = 0;
    running_body = nullptr;
    running_info = nullptr;
    running_stats = nullptr;
}

/* ---- the device side's entry points (cuda_emu_device.h) -------------------------------- */

uint64_t warp_collective(collective kind, unsigned mask, uint64_t value, int arg, int width)
{
    cuda_thread *self = static_cast<cuda_thread *>(current_thread);
    if (!self)
        fatal("%s called from host code", collective_name(kind));
    self->kind = kind;
    self->mask = mask;
    self->value = value;
    self->arg = arg;
    self->width = width;
    self->state = AT_COLLECTIVE;
    pass_turn(self, false);
    return self->result;
}

int block_barrier(barrier_reduce reduce, int predicate)
{
    cuda_thread *self = static_cast<cuda_thread *>(current_thread);
    if (!self)
        fatal("__syncthreads called from host code");
    self->site = __builtin_return_address(0); /* the call site in the kernel */
    self->reduce = reduce;
    self->predicate = predicate;
    self->state = AT_BARRIER;
    pass_turn(self, false);
    self->site = nullptr;
    return self->predicate;
}

void *dynamic_shared()
{
    if (!current_thread)
        fatal("dynamic shared memory used from host code");
    return (void *)dynamic_shared_base;
}

unsigned active_mask()
{
    cuda_thread *self = static_cast<cuda_thread *>(current_thread);
    const cuda_thread *lane0 = &threads[self->warp * 32];
    unsigned m = 0;
    for (int j = 0; j < 32 && (int)(self->warp * 32) + j < thread_count; j++)
        if (lane0[j].state != EXITED)
            m |= 1u << j;
    return m;
}

void device_trap(const char *what) { fatal("%s", what); }

} // namespace cuda_emu
