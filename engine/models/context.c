/* context.c — moire_ctx: picks the backend, holds the cancel flag and the debug callback,
 * and checks the arguments of moire_forward() before handing over to forward.c. */
#include "context.h"
#include "ecdit.h"
#include "internal.h"
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moire_ctx_params moire_ctx_params_default(void)
{
    moire_ctx_params params = {
        .device = MOIRE_DEVICE_AUTO,
        .n_threads = 0,
        .log = NULL,
        .log_user_data = NULL,
    };
    return params;
}

void ctx_log(const moire_ctx *ctx, moire_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->params.log)
        return;
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    ctx->params.log(level, message, ctx->params.log_user_data);
}

/* The context's arena and binding cache live beside the op table (ops.h, bind.h). */
static void ctx_attach(moire_ctx *ctx)
{
    arena_init(&ctx->arena, &ctx->ops);
    ctx->ops.arena = &ctx->arena;
}

/* Releases everything the backend holds for this context, then the backend. */
static void ctx_detach(moire_ctx *ctx)
{
    bindings_free_all(ctx);
    arena_destroy(&ctx->arena);
    if (ctx->ops.destroy)
        ctx->ops.destroy(&ctx->ops);
    memset(&ctx->ops, 0, sizeof ctx->ops);
}

#ifdef MOIRE_HAVE_CUDA
/* The known-answer check: the first CUDA context of a process runs a tiny random DiT-MoE
 * forward on the device and on the CPU reference and compares them. A driver, toolkit or
 * GPU that computes wrong results is caught here, once, before it can hand an artist a
 * silently wrong image; the verdict is kept for the process (a few milliseconds once). */
static moire_status cuda_known_answer_run(moire_ctx *cuda_ctx, bool bf16)
{
    static const moire_bench_geometry geometry = {
        .name = "self-check", .depth = 2, .hidden = 64, .heads = 4, .experts = 4, .top_k = 2,
        .rectified_flow = true,
    };
    moire_model *model = NULL;
    moire_ctx *cpu = NULL;
    moire_ctx_params params = moire_ctx_params_default();
    params.device = MOIRE_DEVICE_CPU;
    params.n_threads = 1;
    moire_status status = moire_bench_model_new(&geometry, 64, &model);
    if (status == MOIRE_OK)
        status = moire_ctx_new(&params, &cpu);
    enum { N = 2, SIDE = 8, C = 4 };
    float x[N * C * SIDE * SIDE], t[N] = {0.25f, 0.75f};
    float want[N * C * SIDE * SIDE], got[N * C * SIDE * SIDE];
    int32_t classes[N] = {3, 1000};
    uint64_t state = 42;
    for (int i = 0; i < N * C * SIDE * SIDE; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(state >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    if (status == MOIRE_OK)
        status = moire_forward(cpu, model, N, SIDE, SIDE, x, t, classes, want);
    if (status == MOIRE_OK) {
        status = moire_forward(cuda_ctx, model, N, SIDE, SIDE, x, t, classes, got);
        if (status != MOIRE_OK)
            error_prefix("the GPU failed a self-check forward");
    }
    if (status == MOIRE_OK) {
        double err = 0.0, ref = 0.0;
        bool finite = true;
        for (int i = 0; i < N * C * SIDE * SIDE; i++) {
            finite = finite && isfinite(got[i]);
            err += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
            ref += (double)want[i] * want[i];
        }
        const double rel = sqrt(err / (ref > 0.0 ? ref : 1.0));
        const double limit = bf16 ? 3e-2 : 1e-3;
        if (!finite || !(rel <= limit))
            status = error_fail(MOIRE_ERROR_BACKEND,
                                "the GPU gave wrong results in a self-check (relative error "
                                "%.2g, allowed %.0g): its driver or CUDA installation may be "
                                "broken; update the NVIDIA driver, or use --device cpu",
                                rel, limit);
    }
    moire_ctx_free(cpu);
    moire_model_free(model);
    return status;
}

static moire_status cuda_known_answer(moire_ctx *ctx, bool bf16)
{
    /* One verdict per process and precision; MOIRE_CUDA_SELF_CHECK=0 skips it (benchmarks
     * that start many contexts). */
    static _Atomic int verdict[2]; /* 0 unknown, 1 passed, 2 failed */
    static char message[2][512];
    const char *env = getenv("MOIRE_CUDA_SELF_CHECK");
    if (env && strcmp(env, "0") == 0)
        return MOIRE_OK;
    const int v = atomic_load(&verdict[bf16]);
    if (v == 1)
        return MOIRE_OK;
    if (v == 2)
        return error_fail(MOIRE_ERROR_BACKEND, "%s", message[bf16]);
    moire_status status = cuda_known_answer_run(ctx, bf16);
    if (status == MOIRE_OK) {
        atomic_store(&verdict[bf16], 1);
    } else {
        snprintf(message[bf16], sizeof message[bf16], "%s", moire_last_error());
        atomic_store(&verdict[bf16], 2);
    }
    return status;
}
#endif

moire_status moire_ctx_new(const moire_ctx_params *params, moire_ctx **out_ctx)
{
    if (!out_ctx)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_ctx_new: out_ctx is NULL");
    *out_ctx = NULL;
    moire_ctx_params p = params ? *params : moire_ctx_params_default();
    if (p.n_threads < 0 || p.n_threads > 1024)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "thread count %d is out of range (0 = all cores, up to 1024)",
                          p.n_threads);
    if (p.device != MOIRE_DEVICE_AUTO && p.device != MOIRE_DEVICE_CPU &&
        p.device != MOIRE_DEVICE_CUDA)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown device %d", (int)p.device);
    /* MOIRE_DEVICE=cpu|cuda in the environment decides for `auto` (the CPU test suites set
     * cpu: they check the reference backend, the gpu suite asks for CUDA explicitly). */
    const char *env_device = getenv("MOIRE_DEVICE");
    if (p.device == MOIRE_DEVICE_AUTO && env_device) {
        if (strcmp(env_device, "cpu") == 0)
            p.device = MOIRE_DEVICE_CPU;
        else if (strcmp(env_device, "cuda") == 0)
            p.device = MOIRE_DEVICE_CUDA;
    }
#ifndef MOIRE_HAVE_CUDA
    if (p.device == MOIRE_DEVICE_CUDA)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "this build of Moiré has no CUDA backend; rebuild with "
                          "`meson setup -Dcuda=enabled` on a machine with the CUDA toolkit, "
                          "or use the CPU (--device cpu)");
#endif

    moire_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory creating a context");
    ctx->params = p;
    atomic_init(&ctx->cancel_requested, 0);
#ifdef OPENBLAS_VERSION
    /* OpenMP owns the threads; see ops_cpu.c. */
    openblas_set_num_threads(1);
#endif
#ifdef MOIRE_HAVE_CUDA
    if (p.device == MOIRE_DEVICE_CUDA || p.device == MOIRE_DEVICE_AUTO) {
        /* MOIRE_CUDA_PRECISION=bf16 stores the GEMM weights as bf16 (docs/CUDA.md). */
        const char *precision = getenv("MOIRE_CUDA_PRECISION");
        const bool bf16 = precision && strcmp(precision, "bf16") == 0;
        moire_status status = ops_cuda_init(&ctx->ops, p.n_threads, bf16);
        if (status == MOIRE_OK) {
            ctx_attach(ctx);
            status = cuda_known_answer(ctx, bf16);
            if (status == MOIRE_OK) {
                ctx_log(ctx, MOIRE_LOG_INFO, "using the CUDA backend (%s)",
                        bf16 ? "bf16 weights" : "fp32");
                *out_ctx = ctx;
                return MOIRE_OK;
            }
            ctx_detach(ctx);
        }
        if (p.device == MOIRE_DEVICE_CUDA) {
            free(ctx);
            return status;
        }
        /* auto: say it once per process, in words a user can act on, then use the CPU. */
        static atomic_flag told = ATOMIC_FLAG_INIT;
        if (!atomic_flag_test_and_set(&told))
            ctx_log(ctx, status == MOIRE_ERROR_UNSUPPORTED ? MOIRE_LOG_INFO
                                                                  : MOIRE_LOG_WARNING,
                          "using the CPU backend: %s", moire_last_error());
        error_clear();
    }
#endif
    ops_cpu_init(&ctx->ops, p.n_threads);
    ctx_attach(ctx);
#ifndef MOIRE_HAVE_CUDA
    if (p.device == MOIRE_DEVICE_AUTO)
        ctx_log(ctx, MOIRE_LOG_INFO,
                "using the CPU backend with %d threads (this build has no CUDA backend)",
                ctx->ops.n_threads);
#endif
    *out_ctx = ctx;
    return MOIRE_OK;
}

void moire_ctx_free(moire_ctx *ctx)
{
    if (!ctx)
        return;
    ctx_detach(ctx);
    free(ctx);
}

const char *moire_ctx_backend_name(const moire_ctx *ctx)
{
    return ctx ? ctx->ops.name : "none";
}

void moire_ctx_cancel(moire_ctx *ctx)
{
    if (ctx)
        atomic_store(&ctx->cancel_requested, 1);
}

void moire_ctx_set_debug_callback(moire_ctx *ctx, moire_debug_tensor_fn fn, void *user_data)
{
    if (!ctx)
        return;
    ctx->debug_fn = fn;
    ctx->debug_user_data = user_data;
}

/* Largest spatial side accepted: 4096 latent pixels (32768 image pixels at /8) keeps token
 * counts and index arithmetic far from overflow. */
#define FORWARD_MAX_SIDE 4096

/* The checks moire_forward and moire_forward_text share. */
static moire_status check_forward_input(const moire_model *model, int n, int h, int w,
                                        const float *t)
{
    const moire_model_config *cfg = &model->config;
    if (n < 1 || n > 4096)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch size %d is out of range (1..4096)", n);
    if (h < 1 || w < 1 || h > FORWARD_MAX_SIDE || w > FORWARD_MAX_SIDE)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "input size %dx%d is out of range (1..%d per side)", w, h,
                          FORWARD_MAX_SIDE);
    if (h % cfg->patch_size || w % cfg->patch_size)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "input size %dx%d is not a multiple of the patch size %d", w, h,
                          cfg->patch_size);
    for (int i = 0; i < n; i++)
        if (!isfinite(t[i]))
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "timestep %d is not finite", i);
    return MOIRE_OK;
}

moire_status moire_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                           const float *x, const float *t, const int32_t *class_ids,
                           float *out)
{
    if (!ctx || !model || !x || !t || !class_ids || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_forward: a required pointer is NULL");
    const moire_model_config *cfg = &model->config;
    if (model->family == MOIRE_FAMILY_EC_DIT)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s is text-conditioned (EC-DiT): give prompts "
                          "(moire_forward_text), not class ids", model->name);
    moire_status status = check_forward_input(model, n, h, w, t);
    if (status != MOIRE_OK)
        return status;
    for (int i = 0; i < n; i++) {
        if (class_ids[i] < 0 || class_ids[i] > cfg->num_classes)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "class id %d is out of range: this model has classes 0..%d and "
                              "the null class %d",
                              (int)class_ids[i], cfg->num_classes - 1, cfg->num_classes);
    }
    atomic_store(&ctx->cancel_requested, 0);
    return dit_forward(ctx, model, n, h, w, x, t, class_ids, out);
}

moire_status moire_forward_text(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                                const float *x, const float *t, const char *const *prompts,
                                float *out)
{
    if (!ctx || !model || !x || !t || !prompts || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_forward_text: a required pointer is NULL");
    if (model->family != MOIRE_FAMILY_EC_DIT)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s is class-conditional: give class ids (moire_forward)",
                          model->name);
    moire_status status = check_forward_input(model, n, h, w, t);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    int *prompt_of = malloc_array((size_t)n, sizeof(int));
    if (!prompt_of)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < n; i++)
        prompt_of[i] = i;
    ecdit_text_cond text;
    status = ecdit_text_encode(ctx, model, n, prompts, &text);
    if (status == MOIRE_OK)
        status = ecdit_forward(ctx, model, n, h, w, x, t, &text, prompt_of, out);
    ecdit_text_cond_free(&text);
    free(prompt_of);
    return status;
}
