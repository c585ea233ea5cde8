/* test_cuda_golden.c — whole models on the CUDA backend: the tiny golden models
 * (tests/golden/tiny_qkv and tiny_qknorm) against the PyTorch reference files (output and
 * every named intermediate, like tests/test_golden.c) and against the CPU forward on the same
 * input; then a 5-step sampler run with CFG, CPU vs GPU. fp32 mode: relative error ≤ 1e-4.
 * Exits 77 (skip) when no CUDA device is visible. */
#include "context.h"
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE 1e-4

static void check_model(moire_ctx *cpu, moire_ctx *gpu, const char *name)
{
    char path[256], file[256];
    snprintf(path, sizeof path, "golden/%s.safetensors", name);
    snprintf(file, sizeof file, "%s", test_data_path(path));
    moire_model *model = NULL;
    CHECK(moire_model_load(file, &model) == MOIRE_OK, "%s: %s", file, moire_last_error());
    if (!model)
        return;
    snprintf(path, sizeof path, "golden/%s.ref.safetensors", name);
    st_file *ref = NULL;
    CHECK(st_open(test_data_path(path), &ref) == MOIRE_OK, "%s", moire_last_error());
    if (!ref) {
        moire_model_free(model);
        return;
    }
    for (int c = 0; c < 2; c++) {
        const char *prefix = c ? "b" : "a";
        char key[32];
        int64_t nx, nt, ny, nout;
        snprintf(key, sizeof key, "%s.input", prefix);
        float *x = test_ref_tensor(ref, key, &nx);
        const st_tensor *xt = st_find(ref, key);
        snprintf(key, sizeof key, "%s.t", prefix);
        float *t = test_ref_tensor(ref, key, &nt);
        snprintf(key, sizeof key, "%s.y", prefix);
        float *yf = test_ref_tensor(ref, key, &ny);
        snprintf(key, sizeof key, "%s.output", prefix);
        float *want = test_ref_tensor(ref, key, &nout);
        CHECK(x && t && yf && want && xt, "%s: reference case %s incomplete", name, prefix);
        if (x && t && yf && want && xt) {
            const int n = (int)xt->shape[0], h = (int)xt->shape[2], w = (int)xt->shape[3];
            int32_t *y = malloc(n * sizeof(int32_t));
            for (int i = 0; i < n; i++)
                y[i] = (int32_t)yf[i];
            float *out_cpu = malloc((size_t)nout * 4), *out_gpu = malloc((size_t)nout * 4);
            test_intermediates cap = {.ref = ref, .prefix = "a", .label = "cuda ",
                                      .tolerance = TOLERANCE};
            if (c == 0)
                moire_ctx_set_debug_callback(gpu, test_compare_intermediate, &cap);
            moire_status st = moire_forward(gpu, model, n, h, w, x, t, y, out_gpu);
            moire_ctx_set_debug_callback(gpu, NULL, NULL);
            CHECK(st == MOIRE_OK, "cuda forward: %s", moire_last_error());
            /* a second call reuses the cached weights and buffers: same result */
            double started = moire_now_seconds();
            if (st == MOIRE_OK)
                st = moire_forward(gpu, model, n, h, w, x, t, y, out_gpu);
            const double took = moire_now_seconds() - started;
            CHECK(moire_forward(cpu, model, n, h, w, x, t, y, out_cpu) == MOIRE_OK, "cpu: %s",
                  moire_last_error());
            char label[128];
            snprintf(label, sizeof label, "%s %s: cuda vs reference", name, prefix);
            test_check_tensor(label, out_gpu, want, nout, TOLERANCE);
            snprintf(label, sizeof label, "%s %s: cuda vs cpu", name, prefix);
            test_check_tensor(label, out_gpu, out_cpu, nout, TOLERANCE);
            printf("       cuda forward of %d image(s) at %dx%d: %.2f ms\n", n, w, h,
                   took * 1e3);
            if (c == 0)
                CHECK(cap.compared >= 10, "only %d intermediates compared", cap.compared);
            free(y), free(out_cpu), free(out_gpu);
        }
        free(x), free(t), free(yf), free(want);
    }

    /* Sampler run with CFG, CPU vs GPU (the model's default sampler, 5 steps, 2 images). */
    moire_generate_params params = moire_generate_params_default();
    params.steps = 5;
    params.seed = 11;
    params.class_id = 1;
    params.batch_count = 2;
    const moire_model_config *cfg = moire_model_get_config(model);
    const size_t numel = (size_t)2 * cfg->in_channels * cfg->input_size * cfg->input_size;
    float *a = calloc(numel, 4), *b = calloc(numel, 4);
    CHECK(moire_generate_samples(cpu, model, &params, 0, 2, NULL, a) == MOIRE_OK, "cpu: %s",
          moire_last_error());
    CHECK(moire_generate_samples(gpu, model, &params, 0, 2, NULL, b) == MOIRE_OK, "cuda: %s",
          moire_last_error());
    char label[128];
    snprintf(label, sizeof label, "%s sampler 5 steps CFG: cuda vs cpu", name);
    test_check_tensor(label, b, a, (int64_t)numel, 1e-3);
    free(a), free(b);
    st_close(ref);
    moire_model_free(model);
}

int main(void)
{
    moire_ctx_params params = moire_ctx_params_default();
    params.device = MOIRE_DEVICE_CUDA;
    moire_ctx *gpu = NULL, *cpu = NULL;
    if (moire_ctx_new(&params, &gpu) != MOIRE_OK) {
        printf("SKIP: %s\n", moire_last_error());
        return 77;
    }
    CHECK(strcmp(moire_ctx_backend_name(gpu), "cuda") == 0, "backend %s",
          moire_ctx_backend_name(gpu));
    params.device = MOIRE_DEVICE_CPU;
    params.n_threads = 2;
    if (moire_ctx_new(&params, &cpu) != MOIRE_OK)
        return 1;
    check_model(cpu, gpu, "tiny_qkv");
    check_model(cpu, gpu, "tiny_qknorm");
    moire_ctx_free(gpu);
    moire_ctx_free(cpu);
    return test_finish("cuda_golden");
}
