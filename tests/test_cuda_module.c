/* test_cuda_module.c — the CUDA backend is a module loaded at the first CUDA context, and
 * every way it can be missing ends in the CPU (auto) or in a message naming the fix (cuda)
 * (engine/backend/backend_loader.c; docs/CUDA.md, "Loading"). Runs in every CUDA build, GPU or not:
 * CI has nvcc but no GPU, so there the real module loads and the driver says no.
 *
 *   test_cuda_module            loading, in this order: model loads and CPU contexts map no
 *                               CUDA library; `auto` loads the module, then either uses the
 *                               GPU or falls back with one info line; `cuda` uses it or
 *                               fails saying why. Then runs itself in the modes below.
 *   test_cuda_module missing    MOIRE_CUDA_MODULE names no file
 *   test_cuda_module notelf     MOIRE_CUDA_MODULE names a file that is not a library
 *   test_cuda_module noentry    MOIRE_CUDA_MODULE names a library without the entry point
 * In each of those: auto uses the CPU and says so in one warning; cuda fails with a message
 * naming MOIRE_CUDA_MODULE and `--device cpu`; cuBLAS is never mapped.
 *
 * Exits 77 (skip) in builds without the CUDA backend and in the emulator's build (which
 * links the backend in: there is no module to load). */
#include "moire.h"
#include "test_util.h"

#ifdef MOIRE_HAVE_CUDA
#include "backend_module.h"
#endif

#include <dlfcn.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(MOIRE_HAVE_CUDA) && !defined(MOIRE_CUDA_EMU)

extern char **environ;

typedef struct log_capture {
    int warnings, infos;
    char last[1024];
} log_capture;

static void capture(moire_log_level level, const char *message, void *user_data)
{
    log_capture *c = user_data;
    if (level == MOIRE_LOG_WARNING)
        c->warnings++;
    else if (level == MOIRE_LOG_INFO)
        c->infos++;
    snprintf(c->last, sizeof c->last, "%s", message);
}

static moire_ctx *make(moire_device device, log_capture *log, moire_status *status)
{
    moire_ctx_params p = moire_ctx_params_default();
    p.device = device;
    p.n_threads = 1;
    p.log = capture;
    p.log_user_data = log;
    moire_ctx *ctx = NULL;
    *status = moire_ctx_new(&p, &ctx);
    return ctx;
}

/* Whether a mapped file of this process has `name` in its path. */
static bool mapped(const char *name)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, maps))
        found = strstr(line, name) != NULL;
    fclose(maps);
    return found;
}

/* The tiny golden model through `ctx`: it loads and runs (the CPU fallback works). */
static void check_forward(moire_ctx *ctx, const char *what)
{
    moire_model *model = NULL;
    CHECK(moire_model_load(test_data_path("golden/tiny_qkv.safetensors"), &model) == MOIRE_OK,
          "%s", moire_last_error());
    if (!model)
        return;
    const moire_model_config *cfg = moire_model_get_config(model);
    const int side = cfg->input_size;
    const size_t in = (size_t)cfg->in_channels * side * side;
    const size_t out = (size_t)cfg->out_channels * side * side;
    float *x = malloc(in * sizeof *x), *y = malloc(out * sizeof *y);
    test_fill_random(x, (int64_t)in, 7, -1, 1);
    const float t = 0.5f;
    const int32_t class_id = 1;
    const moire_status status = moire_forward(ctx, model, 1, side, side, x, &t, &class_id, y);
    bool finite = status == MOIRE_OK;
    for (size_t i = 0; finite && i < out; i++)
        finite = isfinite(y[i]);
    CHECK(finite, "%s: a forward on %s: %s", what, moire_ctx_backend_name(ctx),
          moire_last_error());
    free(x), free(y);
    moire_model_free(model);
}

/* A module that cannot be used: auto → CPU said once, cuda → the reason and the fix. */
static int broken_module(const char *mode)
{
    log_capture log = {0};
    moire_status status;
    moire_ctx *ctx = make(MOIRE_DEVICE_AUTO, &log, &status);
    CHECK(ctx && status == MOIRE_OK, "%s: auto must still work: %s", mode, moire_last_error());
    if (ctx) {
        CHECK(strcmp(moire_ctx_backend_name(ctx), "cpu") == 0, "%s: auto used %s", mode,
              moire_ctx_backend_name(ctx));
        /* MOIRE_CUDA_MODULE set to something unusable is a broken installation: one
         * warning (no module where it is installed by default is an info line, like a
         * machine without a driver). */
        CHECK(log.warnings == 1 && log.infos == 0,
              "%s: %d warnings, %d infos: \"%s\"", mode, log.warnings, log.infos, log.last);
        CHECK(strstr(log.last, "CPU") && strstr(log.last, "MOIRE_CUDA_MODULE"),
              "%s: the line says the CPU is used and why: \"%s\"", mode, log.last);
        printf("       auto, module %s: %s\n", mode, log.last);
        check_forward(ctx, mode);
    }
    moire_ctx_free(ctx);

    log_capture again = {0};
    ctx = make(MOIRE_DEVICE_AUTO, &again, &status);
    CHECK(ctx && again.warnings == 0 && again.infos == 0,
          "%s: the fallback is said once per process, got \"%s\"", mode, again.last);
    moire_ctx_free(ctx);

    log_capture explicit_log = {0};
    ctx = make(MOIRE_DEVICE_CUDA, &explicit_log, &status);
    const char *message = moire_last_error();
    CHECK(!ctx && status == MOIRE_ERROR_BACKEND,
          "%s: --device cuda must fail (status %d)", mode, (int)status);
    CHECK(strstr(message, "MOIRE_CUDA_MODULE") && strstr(message, "--device cpu"),
          "%s: the message names the variable and the fix: \"%s\"", mode, message);
    printf("       cuda, module %s: %s\n", mode, message);
    moire_ctx_free(ctx);
    CHECK(!cuda_module_loaded(), "%s: no module counts as loaded", mode);
    CHECK(!mapped("libcublas"), "%s: cuBLAS was mapped", mode);
    return test_finish(mode);
}

/* Runs this program again in `mode` with MOIRE_CUDA_MODULE=module; true when it passed. */
static bool run_mode(const char *self, const char *mode, const char *module)
{
    setenv("MOIRE_CUDA_MODULE", module, 1);
    char *argv[] = {(char *)self, (char *)mode, NULL};
    pid_t pid;
    int wait_status = 0;
    fflush(stdout);
    const int err = posix_spawn(&pid, self, NULL, NULL, argv, environ);
    unsetenv("MOIRE_CUDA_MODULE");
    if (err != 0)
        return false;
    return waitpid(pid, &wait_status, 0) == pid && WIFEXITED(wait_status) &&
           WEXITSTATUS(wait_status) == 0;
}

int main(int argc, char **argv)
{
    /* The unit suite sets MOIRE_DEVICE=cpu, which decides for `auto`: this test asks. */
    unsetenv("MOIRE_DEVICE");
    if (argc > 1)
        return broken_module(argv[1]);
    unsetenv("MOIRE_CUDA_MODULE");

    /* Nothing of CUDA before a CUDA context: loading models, CPU contexts, CPU forwards. */
    CHECK(!mapped("libcublas") && !mapped(MOIRE_CUDA_MODULE_NAME),
          "CUDA libraries mapped at start");
    log_capture log = {0};
    moire_status status;
    moire_ctx *cpu = make(MOIRE_DEVICE_CPU, &log, &status);
    CHECK(cpu != NULL, "CPU context: %s", moire_last_error());
    if (cpu)
        check_forward(cpu, "cpu");
    moire_ctx_free(cpu);
    CHECK(!cuda_module_loaded() && !mapped("libcublas"),
          "a CPU context loaded the CUDA module");

    /* auto: loads the module; a GPU is used, or the CPU with one info line. */
    memset(&log, 0, sizeof log);
    moire_ctx *ctx = make(MOIRE_DEVICE_AUTO, &log, &status);
    CHECK(ctx && status == MOIRE_OK, "auto: %s", moire_last_error());
    CHECK(cuda_module_loaded() && mapped(MOIRE_CUDA_MODULE_NAME),
          "auto did not load the module (%s)", moire_last_error());
    const bool gpu = ctx && strcmp(moire_ctx_backend_name(ctx), "cuda") == 0;
    if (ctx && !gpu) {
        CHECK(log.warnings == 0 && log.infos == 1 && strstr(log.last, "CPU"),
              "auto without a GPU: one info line, got %d warnings: \"%s\"", log.warnings,
              log.last);
        printf("       auto without a GPU: %s\n", log.last);
    }
    if (ctx)
        check_forward(ctx, "auto");
    moire_ctx_free(ctx);

    /* cuda: the GPU, or a refusal saying why (no driver, no device). */
    ctx = make(MOIRE_DEVICE_CUDA, &log, &status);
    if (gpu) {
        CHECK(ctx != NULL, "cuda after auto found a GPU: %s", moire_last_error());
    } else {
        CHECK(!ctx && status == MOIRE_ERROR_UNSUPPORTED &&
                  (strstr(moire_last_error(), "driver") || strstr(moire_last_error(), "GPU")),
              "cuda without a GPU: status %d, \"%s\"", (int)status, moire_last_error());
        printf("       cuda without a GPU: %s\n", moire_last_error());
    }
    moire_ctx_free(ctx);

    /* The broken installations, each in its own process (the first load decides). */
    Dl_info libm;
    const bool have_libm = dladdr((void *)&cos, &libm) && libm.dli_fname;
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0, "readlink /proc/self/exe");
    if (n > 0) {
        self[n] = '\0';
        CHECK(run_mode(self, "missing", "/nonexistent/libmoire-cuda.so"), "mode missing");
        CHECK(run_mode(self, "notelf", test_data_path("golden/tiny_qkv.safetensors")),
              "mode notelf");
        CHECK(have_libm && run_mode(self, "noentry", libm.dli_fname), "mode noentry (%s)",
              have_libm ? libm.dli_fname : "libm not found");
    }
    return test_finish("cuda_module");
}

#else

int main(void)
{
    printf("SKIP: this build has no CUDA module to load (no CUDA backend, or the emulator's "
           "build, which links it in)\n");
    return 77;
}

#endif
