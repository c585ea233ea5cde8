/* backend_module.h — the interface between libmoire and a compute backend built as a
 * separately loaded shared module: the CUDA backend, kernels/ → libmoire-cuda.so
 * (docs/CUDA.md, "Loading").
 *
 * Why a module: the CUDA backend needs cuBLAS and cuBLASLt, whose mapping and relocation cost
 * every process ≈ 200 MB of memory and ≈ 0.3 s at start, whether it ever uses a GPU or not.
 * libmoire (backend_loader.c) dlopen()s the module the first time a CUDA context is asked for,
 * so `moire info`, `--help` and every CPU-only run never map those libraries.
 *
 * The module calls back into libmoire only through moire_backend_host (never by symbol): the
 * module is loaded RTLD_LOCAL into executables that do not export libmoire's symbols, and a
 * second copy of error.c or arena.c inside it would mean a second thread-local error message
 * that moire_last_error() never reads. Everything else the module needs (the op table, tensor
 * and arena layouts, inline helpers of ops.h) is shared through the headers, so module and
 * library must come from the same build: the layout fields below are checked at load.
 *
 * No CUDA header here: this file is part of the engine (tests/check_engine_includes.sh).
 */
#ifndef MOIRE_BACKEND_MODULE_H
#define MOIRE_BACKEND_MODULE_H

#include "ops.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

/* Bumped whenever moire_backend_host or moire_backend_module changes. */
#define MOIRE_BACKEND_MODULE_ABI 1

/* The one symbol a module exports (dlsym name and its type). */
#define MOIRE_CUDA_MODULE_ENTRY "moire_cuda_module_entry"
/* The module's file name; where it is looked for: backend_loader.c and docs/CUDA.md. */
#define MOIRE_CUDA_MODULE_NAME "libmoire-cuda.so"

/* libmoire's services the module calls (filled by backend_loader.c). */
typedef struct moire_backend_host {
    uint32_t abi; /* MOIRE_BACKEND_MODULE_ABI of libmoire's build */
    /* error_fail / error_prefix / error_clear (error.c, thread-local message) */
    moire_status (*fail_v)(moire_status status, const char *fmt, va_list args);
    void (*error_prefix_v)(const char *fmt, va_list args);
    void (*error_clear)(void);
    /* arena_take / arena_release (arena.c) on the context's arena */
    void *(*arena_take)(moire_arena *arena, size_t bytes);
    void (*arena_release)(moire_arena *arena, size_t mark);
} moire_backend_host;

/* What the module hands back: its build's ABI and struct layouts (checked by the loader
 * before anything is called) and the backend's two entry points (ops.h:
 * ops_cuda_init, ops_cuda_stats). */
typedef struct moire_backend_module {
    uint32_t abi;
    uint32_t sizeof_ops, sizeof_arena, sizeof_tensor, sizeof_stats;
    const char *version; /* MOIRE_VERSION_STRING of the module's build */
    moire_status (*init)(moire_ops *ops, int n_threads, bool bf16);
    moire_status (*stats)(const moire_ops *ops, moire_ops_stats *stats, bool measure_bandwidth);
} moire_backend_module;

/* The entry point's type: keeps `host` (static storage in the caller) and returns the
 * module's table (static storage in the module). */
typedef const moire_backend_module *(*moire_backend_module_entry_fn)(
    const moire_backend_host *host);

/* The layout fields a module fills and the loader compares. */
#define MOIRE_BACKEND_MODULE_LAYOUT                                                        \
    .abi = MOIRE_BACKEND_MODULE_ABI, .sizeof_ops = (uint32_t)sizeof(moire_ops),            \
    .sizeof_arena = (uint32_t)sizeof(moire_arena),                                         \
    .sizeof_tensor = (uint32_t)sizeof(moire_tensor),                                       \
    .sizeof_stats = (uint32_t)sizeof(moire_ops_stats), .version = MOIRE_VERSION_STRING

/* The CUDA backend's implementation (kernels/ops_cuda.c). libmoire calls these only through
 * the module's table; the CUDA emulator's build (tests/cuda-emu/), which links ops_cuda.c into
 * the engine statically, calls them directly. */
moire_status cuda_backend_init(moire_ops *ops, int n_threads, bool bf16);
moire_status cuda_backend_stats(const moire_ops *ops, moire_ops_stats *stats,
                                bool measure_bandwidth);

/* Whether this process has loaded the CUDA module (backend_loader.c; always true in the
 * emulator's build once a CUDA context was asked for). For tests: commands that never touch
 * a device must not load it. */
bool cuda_module_loaded(void);

#endif /* MOIRE_BACKEND_MODULE_H */
