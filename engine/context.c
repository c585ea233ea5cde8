/* context.c — moire_ctx: picks the backend, holds the cancel flag and the debug callback,
 * and checks the arguments of moire_forward() before handing over to forward.c. */
#include "context.h"
#include "ecdit.h"
#include "internal.h"
#include "model.h"

#include <cblas.h>
#include <math.h>
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

void moire_ctx_log(const moire_ctx *ctx, moire_log_level level, const char *fmt, ...)
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

moire_status moire_ctx_new(const moire_ctx_params *params, moire_ctx **out_ctx)
{
    if (!out_ctx)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_ctx_new: out_ctx is NULL");
    *out_ctx = NULL;
    moire_ctx_params p = params ? *params : moire_ctx_params_default();
    if (p.n_threads < 0 || p.n_threads > 1024)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "thread count %d is out of range (0 = all cores, up to 1024)",
                          p.n_threads);
    if (p.device != MOIRE_DEVICE_AUTO && p.device != MOIRE_DEVICE_CPU &&
        p.device != MOIRE_DEVICE_CUDA)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown device %d", (int)p.device);
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
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "this build of Moiré has no CUDA backend; rebuild with "
                          "`meson setup -Dcuda=enabled` on a machine with the CUDA toolkit, "
                          "or use the CPU (--device cpu)");
#endif

    moire_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory creating a context");
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
        moire_status status = moire_ops_cuda_init(&ctx->ops, p.n_threads, bf16);
        if (status == MOIRE_OK) {
            moire_ctx_log(ctx, MOIRE_LOG_INFO, "using the CUDA backend (%s)",
                          bf16 ? "bf16 weights" : "fp32");
            *out_ctx = ctx;
            return MOIRE_OK;
        }
        if (p.device == MOIRE_DEVICE_CUDA) {
            free(ctx);
            return status;
        }
        moire_ctx_log(ctx, MOIRE_LOG_INFO, "using the CPU backend: %s", moire_last_error());
        moire_error_clear();
    }
#endif
    moire_ops_cpu_init(&ctx->ops, p.n_threads);
#ifndef MOIRE_HAVE_CUDA
    if (p.device == MOIRE_DEVICE_AUTO)
        moire_ctx_log(ctx, MOIRE_LOG_INFO,
                      "using the CPU backend with %d threads (this build has no CUDA backend)",
                      ctx->ops.n_threads);
#endif
    *out_ctx = ctx;
    return MOIRE_OK;
}

void moire_ctx_free(moire_ctx *ctx)
{
    if (ctx && ctx->ops.destroy)
        ctx->ops.destroy(&ctx->ops);
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
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch size %d is out of range (1..4096)", n);
    if (h < 1 || w < 1 || h > FORWARD_MAX_SIDE || w > FORWARD_MAX_SIDE)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "input size %dx%d is out of range (1..%d per side)", w, h,
                          FORWARD_MAX_SIDE);
    if (h % cfg->patch_size || w % cfg->patch_size)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "input size %dx%d is not a multiple of the patch size %d", w, h,
                          cfg->patch_size);
    for (int i = 0; i < n; i++)
        if (!isfinite(t[i]))
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "timestep %d is not finite", i);
    return MOIRE_OK;
}

moire_status moire_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                           const float *x, const float *t, const int32_t *class_ids,
                           float *out)
{
    if (!ctx || !model || !x || !t || !class_ids || !out)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_forward: a required pointer is NULL");
    const moire_model_config *cfg = &model->config;
    if (model->family == MOIRE_FAMILY_EC_DIT)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s is text-conditioned (EC-DiT): give prompts "
                          "(moire_forward_text), not class ids", model->name);
    moire_status status = check_forward_input(model, n, h, w, t);
    if (status != MOIRE_OK)
        return status;
    for (int i = 0; i < n; i++) {
        if (class_ids[i] < 0 || class_ids[i] > cfg->num_classes)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
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
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_forward_text: a required pointer is NULL");
    if (model->family != MOIRE_FAMILY_EC_DIT)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s is class-conditional: give class ids (moire_forward)",
                          model->name);
    moire_status status = check_forward_input(model, n, h, w, t);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    int *prompt_of = moire_malloc_array((size_t)n, sizeof(int));
    if (!prompt_of)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
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
