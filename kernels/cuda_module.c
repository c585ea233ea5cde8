/* cuda_module.c — the entry point of libmoire-cuda.so, the CUDA backend as a shared module
 * that libmoire loads at the first CUDA context (engine/backend/backend_module.h, docs/CUDA.md
 * "Loading"), and the few libmoire functions ops_cuda.c calls, forwarded to libmoire through
 * the host table it passes in.
 *
 * The module is compiled with hidden visibility: only moire_cuda_module_entry is exported,
 * so the forwarders below bind inside the module and can never interpose on (or be
 * interposed by) libmoire's own error_fail & co. in the executable. Not part of the CUDA
 * emulator's build, which links ops_cuda.c into the engine directly.
 */
#include "backend_module.h"
#include "internal.h"
#include "ops.h"

#include <stddef.h>

/* Set once by the entry point, before libmoire calls anything else in the module. */
static const moire_backend_host *host;

moire_status error_fail(moire_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    status = host->fail_v(status, fmt, args);
    va_end(args);
    return status;
}

void error_prefix(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    host->error_prefix_v(fmt, args);
    va_end(args);
}

void error_clear(void)
{
    host->error_clear();
}

void *arena_take(moire_arena *arena, size_t bytes)
{
    return host->arena_take(arena, bytes);
}

void arena_release(moire_arena *arena, size_t mark)
{
    host->arena_release(arena, mark);
}

__attribute__((visibility("default"))) const moire_backend_module *
moire_cuda_module_entry(const moire_backend_host *caller);

const moire_backend_module *moire_cuda_module_entry(const moire_backend_host *caller)
{
    static const moire_backend_module module = {
        MOIRE_BACKEND_MODULE_LAYOUT,
        .init = cuda_backend_init,
        .stats = cuda_backend_stats,
    };
    /* A host of another ABI cannot be called safely; the loader refuses the module when it
     * sees this table's abi differ from its own, before calling anything. */
    if (caller && caller->abi == MOIRE_BACKEND_MODULE_ABI)
        host = caller;
    return &module;
}
