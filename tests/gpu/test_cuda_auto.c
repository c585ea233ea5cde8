/* test_cuda_auto.c — `--device auto` never hurts a user (docs/CUDA.md, "Known-answer check").
 *
 *   test_cuda_auto            a working device: auto picks CUDA, the self-check passes quietly
 *   test_cuda_auto wrong      (emulator only) CUDA_EMU_FAULT=matmul makes every GEMM of the
 *                             device a little wrong, like a broken driver or library: auto
 *                             says so once, in words a user can act on, and uses the CPU;
 *                             --device cuda refuses with the same words; images are right
 *   test_cuda_auto nodevice   (emulator only) CUDA_EMU_FAULT=nodevice: no usable device; auto
 *                             uses the CPU and says why (info, not a warning)
 *
 * Each mode is its own process: the verdict of the check is kept for the process.
 * Exits 77 (skip) without a device (first mode) or without the emulator (the others). */
#include "moire.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

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
    p.n_threads = 2;
    p.log = capture;
    p.log_user_data = log;
    moire_ctx *ctx = NULL;
    *status = moire_ctx_new(&p, &ctx);
    return ctx;
}

/* The tiny DiT-MoE golden model on `ctx` and on the CPU: the same image. */
static void check_right_images(moire_ctx *ctx)
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
    float *x = malloc(in * 4), *a = malloc(out * 4), *b = malloc(out * 4);
    test_fill_random(x, (int64_t)in, 3, -1, 1);
    const float t = 0.4f;
    const int32_t y = 1;
    moire_ctx_params p = moire_ctx_params_default();
    p.device = MOIRE_DEVICE_CPU;
    moire_ctx *cpu = NULL;
    CHECK(moire_ctx_new(&p, &cpu) == MOIRE_OK, "%s", moire_last_error());
    CHECK(moire_forward(cpu, model, 1, side, side, x, &t, &y, a) == MOIRE_OK, "%s",
          moire_last_error());
    CHECK(moire_forward(ctx, model, 1, side, side, x, &t, &y, b) == MOIRE_OK, "%s",
          moire_last_error());
    test_check_tensor("auto's result equals the CPU's", b, a, (int64_t)out, 1e-4);
    moire_ctx_free(cpu);
    free(x), free(a), free(b);
    moire_model_free(model);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "working";
    log_capture log = {0};
    moire_status status;
    if (strcmp(mode, "working") == 0) {
        moire_ctx *probe = make(MOIRE_DEVICE_CUDA, &log, &status);
        if (!probe) {
            printf("SKIP: no CUDA device (%s)\n", moire_last_error());
            return 77;
        }
        moire_ctx_free(probe);
        memset(&log, 0, sizeof log);
        moire_ctx *ctx = make(MOIRE_DEVICE_AUTO, &log, &status);
        CHECK(ctx && strcmp(moire_ctx_backend_name(ctx), "cuda") == 0,
              "auto on a working device: backend %s", ctx ? moire_ctx_backend_name(ctx) : "-");
        CHECK(log.warnings == 0, "a working device gave a warning: %s", log.last);
        if (ctx)
            check_right_images(ctx);
        moire_ctx_free(ctx);
        return test_finish("cuda_auto");
    }
#ifndef MOIRE_CUDA_EMU
    printf("SKIP: mode %s needs the CUDA emulator's fault injection\n", mode);
    return 77;
#else
    const bool wrong = strcmp(mode, "wrong") == 0;
    setenv("CUDA_EMU_FAULT", wrong ? "matmul" : "nodevice", 1);
    moire_ctx *ctx = make(MOIRE_DEVICE_AUTO, &log, &status);
    CHECK(ctx != NULL && status == MOIRE_OK, "auto with a %s device must still work: %s", mode,
          moire_last_error());
    if (!ctx)
        return test_finish("cuda_auto");
    CHECK(strcmp(moire_ctx_backend_name(ctx), "cpu") == 0, "auto with a %s device: backend %s",
          mode, moire_ctx_backend_name(ctx));
    if (wrong) {
        CHECK(log.warnings == 1 && strstr(log.last, "wrong results") &&
                  strstr(log.last, "driver") && strstr(log.last, "--device cpu"),
              "one warning naming the problem and the fix, got %d: \"%s\"", log.warnings,
              log.last);
    } else {
        CHECK(log.warnings == 0 && log.infos >= 1 && strstr(log.last, "CPU"),
              "no device: an info line saying the CPU is used, got \"%s\"", log.last);
    }
    printf("       auto with a %s device said: %s\n", mode, log.last);
    check_right_images(ctx);
    moire_ctx_free(ctx);

    /* said once per process, not at every context */
    log_capture again = {0};
    moire_ctx *second = make(MOIRE_DEVICE_AUTO, &again, &status);
    CHECK(second && strcmp(moire_ctx_backend_name(second), "cpu") == 0, "second auto context");
    CHECK(again.warnings == 0, "the warning came again: %s", again.last);
    moire_ctx_free(second);

    /* asked for explicitly, CUDA is refused with the reason, never silently wrong */
    log_capture explicit_log = {0};
    moire_ctx *cuda = make(MOIRE_DEVICE_CUDA, &explicit_log, &status);
    CHECK(cuda == NULL && status != MOIRE_OK, "--device cuda with a %s device must fail", mode);
    if (wrong)
        CHECK(strstr(moire_last_error(), "wrong results") != NULL, "the reason: %s",
              moire_last_error());
    printf("       --device cuda with a %s device: %s\n", mode, moire_last_error());
    moire_ctx_free(cuda);
    return test_finish(wrong ? "cuda_auto_wrong" : "cuda_auto_nodevice");
#endif
}
