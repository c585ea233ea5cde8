/* test_cuda_golden.c — whole models on the CUDA backend, fp32 (relative error ≤ 1e-4):
 *  - the tiny DiT-MoE golden models of both layouts (tests/golden/tiny_qkv, tiny_qknorm)
 *    against the PyTorch reference files (output and every named intermediate, like
 *    tests/test_golden.c) and against the CPU forward; a 5-step sampler run with CFG;
 *  - the tiny EC-DiT models (text encoder, expert choice) and the embedded model
 *    (data/models/moire-emoji) against the CPU, forward and a short generation;
 *  - the tiny SD-VAE and the tiny RGBA one, decode (whole and tiled) and encode, against the CPU;
 *  - for every model: no op ran on the CPU while the CUDA context worked (the CPU table's
 *    call counter did not move: no host fallback), and after a warm-up one CFG forward
 *    allocates nothing and synchronises once, to download its result (the backend's
 *    counters; the emulator's launch counter, where built with it, is printed per step).
 * Exits 77 (skip) when no CUDA device is visible. */
#include "context.h"
#include "ecdit.h"
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOIRE_CUDA_EMU
#include "cuda_emu.h"
#endif

#define TOLERANCE 1e-4

/* The emulator runs every GPU thread on the CPU (under ASan in CI): the sampler runs there
 * are shortened to what still covers every path (CFG, the sampler update, previews). */
#ifdef MOIRE_CUDA_EMU
#define STEPS(n) 2
#else
#define STEPS(n) (n)
#endif

/* What one CFG forward (batch n) costs the backend once warmed up: device allocations and
 * host synchronisations (the backend's own counters, on a real GPU too) and, under the
 * emulator, kernel launches. `run` is called three times: warm-up, then measured. */
typedef moire_status (*forward_fn)(moire_ctx *ctx, void *user_data);

static void check_step_costs(moire_ctx *gpu, const char *label, forward_fn run, void *user_data)
{
    CHECK(run(gpu, user_data) == MOIRE_OK, "%s warm-up: %s", label, moire_last_error());
    moire_ops_stats before, after;
    ops_cuda_stats(&gpu->ops, &before, false);
#ifdef MOIRE_CUDA_EMU
    cuda_emu_counters emu_before, emu_after;
    cuda_emu_counters_get(&emu_before);
#endif
    const uint64_t cpu_calls = ops_cpu_calls();
    CHECK(run(gpu, user_data) == MOIRE_OK, "%s: %s", label, moire_last_error());
    ops_cuda_stats(&gpu->ops, &after, false);
    const uint64_t allocations = after.allocations - before.allocations;
    const uint64_t syncs = after.synchronizations - before.synchronizations;
    CHECK(allocations == 0, "%s: %llu device allocations in a warmed-up forward", label,
          (unsigned long long)allocations);
    CHECK(syncs == 1, "%s: %llu host synchronisations in a forward (1 expected: the result)",
          label, (unsigned long long)syncs);
    CHECK(ops_cpu_calls() == cpu_calls, "%s: %llu ops fell back to the CPU", label,
          (unsigned long long)(ops_cpu_calls() - cpu_calls));
#ifdef MOIRE_CUDA_EMU
    cuda_emu_counters_get(&emu_after);
    const uint64_t emu_allocs = emu_after.device_allocs - emu_before.device_allocs;
    const uint64_t emu_syncs = emu_after.host_syncs - emu_before.host_syncs;
    CHECK(emu_allocs == 0 && emu_syncs == 1,
          "%s: the emulator saw %llu cudaMalloc and %llu host waits in a warmed-up forward",
          label, (unsigned long long)emu_allocs, (unsigned long long)emu_syncs);
    printf("       %s: one CFG forward = %llu launches (kernels + cuBLASLt), %llu device "
           "allocations, %llu host waits, %.2f MB read, %.2f MB written\n",
           label, (unsigned long long)(emu_after.launches - emu_before.launches),
           (unsigned long long)emu_allocs, (unsigned long long)emu_syncs,
           (emu_after.bytes_read - emu_before.bytes_read) / 1e6,
           (emu_after.bytes_written - emu_before.bytes_written) / 1e6);
#else
    printf("       %s: one CFG forward = %llu allocations, %llu synchronisations\n", label,
           (unsigned long long)allocations, (unsigned long long)syncs);
#endif
}

typedef struct dit_step {
    const moire_model *model;
    int n, h, w;
    const float *x, *t;
    const int32_t *y;
    float *out;
} dit_step;

static moire_status run_dit_step(moire_ctx *ctx, void *user_data)
{
    const dit_step *s = user_data;
    return moire_forward(ctx, s->model, s->n, s->h, s->w, s->x, s->t, s->y, s->out);
}

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
            double started = clock_now_seconds();
            if (st == MOIRE_OK)
                st = moire_forward(gpu, model, n, h, w, x, t, y, out_gpu);
            const double took = clock_now_seconds() - started;
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
    params.steps = STEPS(5);
    params.seed = 11;
    params.class_id = 1;
    params.batch_count = 2;
    const moire_model_config *cfg = moire_model_get_config(model);
    const size_t numel = (size_t)2 * cfg->in_channels * cfg->input_size * cfg->input_size;
    float *a = calloc(numel, 4), *b = calloc(numel, 4);
    CHECK(generate_samples(cpu, model, &params, 0, 2, NULL, a) == MOIRE_OK, "cpu: %s",
          moire_last_error());
    CHECK(generate_samples(gpu, model, &params, 0, 2, NULL, b) == MOIRE_OK, "cuda: %s",
          moire_last_error());
    char label[128];
    snprintf(label, sizeof label, "%s sampler %d steps CFG: cuda vs cpu", name, params.steps);
    test_check_tensor(label, b, a, (int64_t)numel, 1e-3);
    free(a), free(b);

    /* one CFG step: batch 2 (conditional and null class) */
    const int side = cfg->input_size;
    const size_t per = (size_t)cfg->in_channels * side * side;
    float *x2 = malloc(2 * per * 4), *out2 = malloc(2 * per * 4 * 2);
    test_fill_random(x2, (int64_t)(2 * per), 77, -1, 1);
    const float t2[2] = {0.5f, 0.5f};
    const int32_t y2[2] = {1, cfg->num_classes};
    dit_step step = {model, 2, side, side, x2, t2, y2, out2};
    snprintf(label, sizeof label, "%s", name);
    check_step_costs(gpu, label, run_dit_step, &step);
    free(x2), free(out2);
    st_close(ref);
    moire_model_free(model);
}

/* A sampling step of an EC-DiT model, as generate.c runs it: the prompts are encoded once
 * per generation (ecdit_text_encode), each step is one forward of the CFG pair. */
typedef struct ec_step {
    const moire_model *model;
    int n, side;
    const float *x, *t;
    const ecdit_text_cond *text;
    const int *prompt_of;
    float *out;
} ec_step;

static moire_status run_ec_step(moire_ctx *ctx, void *user_data)
{
    const ec_step *s = user_data;
    return ecdit_forward(ctx, s->model, s->n, s->side, s->side, s->x, s->t, s->text,
                         s->prompt_of, s->out);
}

/* An EC-DiT model (text encoder + expert choice) on the device against the CPU: a forward
 * of a CFG pair (prompt and empty prompt) and a short generation. */
static void check_ecdit(moire_ctx *cpu, moire_ctx *gpu, const char *file, const char *prompt,
                        int steps)
{
    moire_model *model = NULL;
    CHECK(moire_model_load(file, &model) == MOIRE_OK, "%s: %s", file, moire_last_error());
    if (!model)
        return;
    const moire_model_config *cfg = moire_model_get_config(model);
    const int side = cfg->input_size;
    const size_t per = (size_t)cfg->in_channels * side * side;
    const size_t out_per = (size_t)cfg->out_channels * side * side;
    float *x = malloc(2 * per * 4), *a = malloc(2 * out_per * 4), *b = malloc(2 * out_per * 4);
    test_fill_random(x, (int64_t)(2 * per), 5, -1, 1);
    const float t[2] = {0.7f, 0.7f};
    const char *prompts[2] = {prompt, ""};
    CHECK(moire_forward_text(cpu, model, 2, side, side, x, t, prompts, a) == MOIRE_OK, "cpu: %s",
          moire_last_error());
    const uint64_t cpu_calls = ops_cpu_calls();
    CHECK(moire_forward_text(gpu, model, 2, side, side, x, t, prompts, b) == MOIRE_OK,
          "cuda: %s", moire_last_error());
    CHECK(ops_cpu_calls() == cpu_calls, "%s: %llu ops ran on the CPU in a CUDA context",
          file, (unsigned long long)(ops_cpu_calls() - cpu_calls));
    char label[256];
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    snprintf(label, sizeof label, "%s forward (text encoder, expert choice): cuda vs cpu", base);
    test_check_tensor(label, b, a, (int64_t)(2 * out_per), TOLERANCE);
    ecdit_text_cond text;
    const int prompt_of[2] = {0, 1};
    CHECK(ecdit_text_encode(gpu, model, 2, prompts, &text) == MOIRE_OK, "text: %s",
          moire_last_error());
    ec_step step = {model, 2, side, x, t, &text, prompt_of, b};
    check_step_costs(gpu, base, run_ec_step, &step);
    ecdit_text_cond_free(&text);

    if (steps <= 0) { /* forward and step costs only */
        free(x), free(a), free(b);
        moire_model_free(model);
        return;
    }
    moire_generate_params params = moire_generate_params_default();
    params.prompt = prompt;
    params.steps = steps;
    params.seed = 3;
    float *ga = calloc(per, 4), *gb = calloc(per, 4);
    CHECK(generate_samples(cpu, model, &params, 0, 1, NULL, ga) == MOIRE_OK, "cpu: %s",
          moire_last_error());
    const uint64_t before = ops_cpu_calls();
    CHECK(generate_samples(gpu, model, &params, 0, 1, NULL, gb) == MOIRE_OK, "cuda: %s",
          moire_last_error());
    CHECK(ops_cpu_calls() == before, "%s: a generation ran %llu ops on the CPU", base,
          (unsigned long long)(ops_cpu_calls() - before));
    snprintf(label, sizeof label, "%s \"%s\" %d steps: cuda vs cpu", base, prompt, steps);
    test_check_tensor(label, gb, ga, (int64_t)per, 1e-3);
    free(x), free(a), free(b), free(ga), free(gb);
    moire_model_free(model);
}

/* An SD-VAE on the device against the CPU: decode (whole, then in 4×4 tiles with overlap
 * 2, whole-image GroupNorm statistics gathered on the device) and encode. `name`: the RGB
 * tiny_vae.safetensors or the RGBA vae128_tiny directory (the 128-px trainer's export). */
static void check_vae(moire_ctx *cpu, moire_ctx *gpu, const char *name)
{
    moire_vae *vae = NULL;
    char path[256], label[160];
    snprintf(path, sizeof path, "golden/%s", name);
    const char *file = test_data_path(path);
    CHECK(moire_vae_load(file, &vae) == MOIRE_OK, "%s: %s", file, moire_last_error());
    if (!vae)
        return;
    const moire_vae_info *info = moire_vae_get_info(vae);
    const int z = info->latent_channels, f = info->downscale, h = 8, w = 6;
    const size_t nl = (size_t)z * h * w, nr = (size_t)info->image_channels * f * h * f * w;
    float *lat = malloc(nl * 4), *ra = malloc(nr * 4), *rb = malloc(nr * 4);
    float *ea = malloc(nl * 4), *eb = malloc(nl * 4);
    test_fill_random(lat, (int64_t)nl, 9, -2, 2);
    for (int tiled = 0; tiled < 2; tiled++) {
        const int tile = tiled ? 4 : 0, overlap = tiled ? 2 : 0;
        CHECK(moire_vae_decode_tiled(cpu, vae, 1, h, w, tile, overlap, lat, ra) == MOIRE_OK,
              "cpu decode: %s", moire_last_error());
        const uint64_t calls = ops_cpu_calls();
        CHECK(moire_vae_decode_tiled(gpu, vae, 1, h, w, tile, overlap, lat, rb) == MOIRE_OK,
              "cuda decode: %s", moire_last_error());
        CHECK(ops_cpu_calls() == calls, "the VAE ran %llu ops on the CPU",
              (unsigned long long)(ops_cpu_calls() - calls));
        snprintf(label, sizeof label, "%s decode 8x6%s: cuda vs cpu", name,
                 tiled ? " in 4x4 tiles" : "");
        test_check_tensor(label, rb, ra, (int64_t)nr, TOLERANCE);
    }
    if (info->has_encoder) {
        CHECK(moire_vae_encode(cpu, vae, 1, f * h, f * w, ra, ea) == MOIRE_OK, "cpu encode: %s",
              moire_last_error());
        CHECK(moire_vae_encode(gpu, vae, 1, f * h, f * w, ra, eb) == MOIRE_OK, "cuda encode: %s",
              moire_last_error());
        snprintf(label, sizeof label, "%s encode: cuda vs cpu", name);
        test_check_tensor(label, eb, ea, (int64_t)nl, TOLERANCE);
    }
    free(lat), free(ra), free(rb), free(ea), free(eb);
    moire_vae_free(vae);
}

/* A model freed and another loaded (possibly at the same address) must get its own weights
 * on the device, never the first one's. */
static void check_rebind(moire_ctx *cpu, moire_ctx *gpu)
{
    const char *names[2] = {"golden/tiny_qkv.safetensors", "golden/tiny_qknorm.safetensors"};
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 2; i++) {
            moire_model *m = NULL;
            CHECK(moire_model_load(test_data_path(names[i]), &m) == MOIRE_OK, "%s",
                  moire_last_error());
            if (!m)
                continue;
            const moire_model_config *cfg = moire_model_get_config(m);
            const int side = cfg->input_size;
            const size_t per = (size_t)cfg->in_channels * side * side;
            const size_t out_per = (size_t)cfg->out_channels * side * side;
            float *x = malloc(per * 4), *a = malloc(out_per * 4), *b = malloc(out_per * 4);
            test_fill_random(x, (int64_t)per, 31 + i, -1, 1);
            const float t = 0.3f;
            const int32_t y = 2;
            moire_forward(cpu, m, 1, side, side, x, &t, &y, a);
            CHECK(moire_forward(gpu, m, 1, side, side, x, &t, &y, b) == MOIRE_OK, "%s",
                  moire_last_error());
            char label[128];
            snprintf(label, sizeof label, "reloaded %s (round %d): cuda vs cpu", names[i] + 7,
                     round);
            test_check_tensor(label, b, a, (int64_t)out_per, TOLERANCE);
            free(x), free(a), free(b);
            moire_model_free(m);
        }
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
    check_rebind(cpu, gpu);
    check_ecdit(cpu, gpu, test_data_path("golden/tiny_ecdit.safetensors"), "red apple",
                STEPS(4));
    check_vae(cpu, gpu, "tiny_vae.safetensors");
    check_vae(cpu, gpu, "vae128_tiny");
    char embedded[512];
    snprintf(embedded, sizeof embedded, "%s",
             test_data_path("../data/models/moire-emoji.safetensors"));
#ifdef MOIRE_CUDA_EMU
    check_ecdit(cpu, gpu, embedded, "red apple", 0); /* its generation: on a real GPU */
#else
    check_ecdit(cpu, gpu, embedded, "red apple", 3);
#endif
    moire_ctx_free(gpu);
    moire_ctx_free(cpu);
    return test_finish("cuda_golden");
}
