/* counters.cpp — what the emulator counted (cuda_emu.h): totals and one row per kernel name,
 * and the table CUDA_EMU_STATS=1 prints at exit. */
#include "internal.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cuda_emu {

cuda_emu_counters totals;
kernel_stats *running_stats = nullptr;

/* Never destroyed: the table is printed by a static destructor. */
static std::map<std::string, kernel_stats> &table()
{
    static auto *rows = new std::map<std::string, kernel_stats>;
    return *rows;
}

kernel_stats &stats_for(const std::string &name)
{
    kernel_stats &row = table()[name];
    if (row.name.empty())
        row.name = name;
    return row;
}

void count_bytes(uint64_t read, uint64_t written)
{
    totals.bytes_read += read;
    totals.bytes_written += written;
    if (running_stats)
        running_stats->bytes_read += read, running_stats->bytes_written += written;
}

namespace {
struct stats_at_exit {
    ~stats_at_exit()
    {
        const char *env = getenv("CUDA_EMU_STATS");
        if (env && strcmp(env, "0"))
            cuda_emu_print_stats(stderr);
    }
} print_at_exit;
} // namespace

} // namespace cuda_emu

extern "C" void cuda_emu_counters_get(cuda_emu_counters *out)
{
    std::lock_guard<std::recursive_mutex> lock(cuda_emu::api_lock());
    *out = cuda_emu::totals;
}

extern "C" void cuda_emu_counters_reset(void)
{
    std::lock_guard<std::recursive_mutex> lock(cuda_emu::api_lock());
    cuda_emu::totals = cuda_emu_counters{};
    for (auto &kv : cuda_emu::table()) {
        const std::string name = kv.second.name;
        kv.second = cuda_emu::kernel_stats{};
        kv.second.name = name;
    }
}

extern "C" int cuda_emu_kernel_counters_get(cuda_emu_kernel_counters *rows, int capacity)
{
    std::lock_guard<std::recursive_mutex> lock(cuda_emu::api_lock());
    int n = 0;
    for (auto &kv : cuda_emu::table()) {
        if (n < capacity) {
            const cuda_emu::kernel_stats &s = kv.second;
            rows[n] = {s.name.c_str(), s.launches,   s.blocks,
                       s.threads,      s.bytes_read, s.bytes_written};
        }
        n++;
    }
    return n;
}

extern "C" void cuda_emu_print_stats(FILE *out)
{
    std::lock_guard<std::recursive_mutex> lock(cuda_emu::api_lock());
    const cuda_emu_counters &t = cuda_emu::totals;
    fprintf(out,
            "cuda-emu: %llu launches (%llu graph launches), %llu host synchronisations, "
            "%llu device allocations, %llu frees, %.3f MB read, %.3f MB written in global "
            "memory, %llu copies to the device, %llu to the host\n",
            (unsigned long long)t.launches, (unsigned long long)t.graph_launches,
            (unsigned long long)t.host_syncs, (unsigned long long)t.device_allocs,
            (unsigned long long)t.device_frees, t.bytes_read / 1e6, t.bytes_written / 1e6,
            (unsigned long long)t.copies_to_device, (unsigned long long)t.copies_to_host);
    fprintf(out, "  %10s %12s %14s %12s %12s  %s\n", "launches", "blocks", "threads", "MB read",
            "MB written", "kernel");
    for (auto &kv : cuda_emu::table()) {
        const cuda_emu::kernel_stats &s = kv.second;
        if (!s.launches)
            continue;
        fprintf(out, "  %10llu %12llu %14llu %12.3f %12.3f  %s\n", (unsigned long long)s.launches,
                (unsigned long long)s.blocks, (unsigned long long)s.threads, s.bytes_read / 1e6,
                s.bytes_written / 1e6, s.name.c_str());
    }
}
