/* backend_loader.c — ops_cuda_init / ops_cuda_stats (ops.h) for builds with the
 * CUDA backend: the backend lives in the shared module libmoire-cuda.so (kernels/), loaded
 * with dlopen() the first time a CUDA context is asked for (engine/backend/backend_module.h says why;
 * docs/CUDA.md, "Loading", for users).
 *
 * Where the module is looked for, first match wins:
 *   1. $MOIRE_CUDA_MODULE, a path to the file — if set, nothing else is tried;
 *   2. beside the running executable (/proc/self/exe's directory);
 *   3. the build tree's engine/ directory when the executable runs from the build tree
 *      (tests, the studio, the GIMP plug-in before installation), else the installed
 *      LIBDIR/moire/ directory (both fixed at configure time: MOIRE_CUDA_MODULE_BUILD_PATH,
 *      MOIRE_CUDA_MODULE_INSTALL_PATH, MOIRE_BUILD_ROOT from kernels/meson.build).
 * The first attempt decides for the process (pthread_once): a module that is missing or does
 * not load gives the same message to every later CUDA request, and `auto` falls back to the
 * CPU (context.c), saying why once. The status tells how loudly: MOIRE_ERROR_UNSUPPORTED
 * (an info line for `auto`) when CUDA is simply not installed here — no module where it
 * would be installed, or no CUDA runtime libraries for it, like a machine without a driver;
 * MOIRE_ERROR_BACKEND (a warning) when an installation is broken — MOIRE_CUDA_MODULE names
 * no file, the file is not a library, or it is not a module of this build. A loaded module
 * is never unloaded.
 *
 * The CUDA emulator's build (MOIRE_CUDA_EMU, tests/cuda-emu/) links kernels/ops_cuda.c into
 * the engine and calls it directly: no module there.
 */
#include "backend_module.h"
#include "internal.h"
#include "ops.h"

#ifdef MOIRE_HAVE_CUDA

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- loading ------------------------------------------------------------------------- */

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
/* NULL until a module is loaded and checked; atomic because ops_cuda_stats reads it
 * without going through pthread_once. */
static _Atomic(const moire_backend_module *) loaded;
static moire_status load_status = MOIRE_ERROR_UNSUPPORTED;
static char load_message[2048];                 /* why it did not load                    */

#ifdef MOIRE_CUDA_EMU

static void load_module(void)
{
    static const moire_backend_module linked = {
        MOIRE_BACKEND_MODULE_LAYOUT,
        .init = cuda_backend_init,
        .stats = cuda_backend_stats,
    };
    atomic_store(&loaded, &linked);
}

#else

/* ---- the host table: libmoire's services for the module ------------------------------ */

static moire_status host_fail_v(moire_status status, const char *fmt, va_list args)
{
    char message[2048];
    vsnprintf(message, sizeof message, fmt, args);
    return error_fail(status, "%s", message);
}

static void host_error_prefix_v(const char *fmt, va_list args)
{
    char prefix[2048];
    vsnprintf(prefix, sizeof prefix, fmt, args);
    error_prefix("%s", prefix);
}

static const moire_backend_host host_table = {
    .abi = MOIRE_BACKEND_MODULE_ABI,
    .fail_v = host_fail_v,
    .error_prefix_v = host_error_prefix_v,
    .error_clear = error_clear,
    .arena_take = arena_take,
    .arena_release = arena_release,
};

static void load_failed(moire_status status, const char *fmt, ...) MOIRE_PRINTF(2, 3);
static void load_failed(moire_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(load_message, sizeof load_message, fmt, args);
    va_end(args);
    load_status = status;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The running executable's directory, or "" when /proc is not there. */
static void executable_dir(char *dir, size_t size)
{
    dir[0] = '\0';
    char exe[PATH_MAX];
    const ssize_t length = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (length <= 0)
        return;
    exe[length] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = '\0';
    snprintf(dir, size, "%s", exe);
}

/* The candidate paths in order (see the top of the file); returns how many. */
static int candidate_paths(char paths[2][PATH_MAX])
{
    char dir[PATH_MAX];
    executable_dir(dir, sizeof dir);
    int n = 0;
    if (dir[0] && strlen(dir) + 1 + strlen(MOIRE_CUDA_MODULE_NAME) < PATH_MAX)
        snprintf(paths[n++], PATH_MAX, "%s/%s", dir, MOIRE_CUDA_MODULE_NAME);
    /* /proc/self/exe is a resolved path: compare it with the resolved build root. */
    char build_root[PATH_MAX];
    if (!realpath(MOIRE_BUILD_ROOT, build_root))
        snprintf(build_root, sizeof build_root, "%s", MOIRE_BUILD_ROOT);
    const size_t root = strlen(build_root);
    const bool in_build_tree = dir[0] && strncmp(dir, build_root, root) == 0 &&
                               (dir[root] == '/' || dir[root] == '\0');
    const char *fixed = in_build_tree ? MOIRE_CUDA_MODULE_BUILD_PATH
                                      : MOIRE_CUDA_MODULE_INSTALL_PATH;
    if (n == 0 || strcmp(paths[0], fixed) != 0)
        snprintf(paths[n++], PATH_MAX, "%s", fixed);
    return n;
}

/* dlopen + entry + layout check of one file; false with load_message set on failure. */
static bool load_from(const char *path, bool from_environment)
{
    /* RTLD_NOW: a missing cuBLAS symbol fails here, with its name, not in the middle of a
     * forward. RTLD_LOCAL: the CUDA libraries stay out of the global namespace. */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        if (!why)
            why = "unknown reason";
        /* dlerror names the file it could not open: the module itself (damaged, wrong
         * architecture) or one of its libraries (the CUDA runtime is not installed). */
        const bool module_itself = strncmp(why, path, strlen(path)) == 0;
        if (module_itself)
            load_failed(MOIRE_ERROR_BACKEND,
                        "the CUDA backend module %s%s is not a loadable library (%s): rebuild "
                        "or reinstall it from your Moiré build, point MOIRE_CUDA_MODULE at the "
                        "right file, or use --device cpu",
                        path, from_environment ? " (MOIRE_CUDA_MODULE)" : "", why);
        else
            load_failed(MOIRE_ERROR_UNSUPPORTED,
                        "the CUDA backend module %s%s could not be loaded (%s): the CUDA "
                        "runtime libraries it needs (libcudart, libcublas, libcublasLt of the "
                        "CUDA version Moiré was built with) are missing or not on the library "
                        "path; install them or add their directory to LD_LIBRARY_PATH, or use "
                        "--device cpu",
                        path, from_environment ? " (MOIRE_CUDA_MODULE)" : "", why);
        return false;
    }
    moire_backend_module_entry_fn entry;
    /* POSIX: dlsym's object pointer converts to a function pointer this way. */
    *(void **)&entry = dlsym(handle, MOIRE_CUDA_MODULE_ENTRY);
    const moire_backend_module *module = entry ? entry(&host_table) : NULL;
    if (!module) {
        load_failed(MOIRE_ERROR_BACKEND,
                    "%s is not a Moiré CUDA backend module (no %s): point MOIRE_CUDA_MODULE at "
                    "the %s of your Moiré build, or use --device cpu",
                    path, MOIRE_CUDA_MODULE_ENTRY, MOIRE_CUDA_MODULE_NAME);
        dlclose(handle);
        return false;
    }
    if (module->abi != MOIRE_BACKEND_MODULE_ABI || module->sizeof_ops != sizeof(moire_ops) ||
        module->sizeof_arena != sizeof(moire_arena) ||
        module->sizeof_tensor != sizeof(moire_tensor) ||
        module->sizeof_stats != sizeof(moire_ops_stats) || !module->init || !module->stats) {
        load_failed(MOIRE_ERROR_BACKEND,
                    "the CUDA backend module %s (Moiré %s, interface %u) comes from another "
                    "build than this program (Moiré %s, interface %u): reinstall both from one "
                    "build (`meson install`), point MOIRE_CUDA_MODULE at the right module, or "
                    "use --device cpu",
                    path, module->version ? module->version : "?", (unsigned)module->abi,
                    MOIRE_VERSION_STRING, (unsigned)MOIRE_BACKEND_MODULE_ABI);
        /* Not dlclose'd: its entry point ran and may have kept the host table. */
        return false;
    }
    atomic_store(&loaded, module);
    return true;
}

static void load_module(void)
{
    const char *env = getenv("MOIRE_CUDA_MODULE");
    if (env && env[0]) {
        if (!is_file(env)) {
            load_failed(MOIRE_ERROR_BACKEND,
                        "MOIRE_CUDA_MODULE=%s is not a file: point it at %s (built in the build "
                        "directory's engine/, installed in %s), unset it, or use --device cpu",
                        env, MOIRE_CUDA_MODULE_NAME, MOIRE_CUDA_MODULE_INSTALL_PATH);
            return;
        }
        load_from(env, true);
        return;
    }
    char paths[2][PATH_MAX];
    const int n = candidate_paths(paths);
    for (int i = 0; i < n; i++)
        if (is_file(paths[i])) {
            load_from(paths[i], false);
            return;
        }
    load_failed(MOIRE_ERROR_UNSUPPORTED,
                "this build of Moiré has a CUDA backend but its module %s is not installed "
                "(looked for %s%s%s): install it there (`meson install`), point "
                "MOIRE_CUDA_MODULE at it, or use --device cpu",
                MOIRE_CUDA_MODULE_NAME, paths[0], n > 1 ? " and " : "", n > 1 ? paths[1] : "");
}

#endif /* MOIRE_CUDA_EMU */

/* The module, loading it on the first call; NULL with error_fail set when there is none. */
static const moire_backend_module *cuda_module(void)
{
    pthread_once(&load_once, load_module);
    const moire_backend_module *module = atomic_load(&loaded);
    if (!module)
        error_fail(load_status, "%s", load_message);
    return module;
}

moire_status ops_cuda_init(moire_ops *ops, int n_threads, bool bf16)
{
    const moire_backend_module *module = cuda_module();
    return module ? module->init(ops, n_threads, bf16) : load_status;
}

moire_status ops_cuda_stats(const moire_ops *ops, moire_ops_stats *stats,
                            bool measure_bandwidth)
{
    /* A CUDA op table exists only once the module is loaded: never load it here. */
    const moire_backend_module *module = atomic_load(&loaded);
    if (!module) {
        memset(stats, 0, sizeof *stats);
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "not a CUDA op table");
    }
    return module->stats(ops, stats, measure_bandwidth);
}

bool cuda_module_loaded(void)
{
    return atomic_load(&loaded) != NULL;
}

#endif /* MOIRE_HAVE_CUDA */
