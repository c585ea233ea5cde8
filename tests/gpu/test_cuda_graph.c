/* test_cuda_graph.c — the sampling step on the device (issue 16): the sampler arithmetic as
 * backend ops, and the whole step (CFG forward + guidance + sampler update) recorded once as
 * a CUDA graph and replayed.
 *  - Every piece of engine/ops.h `sampler_op` (model input, denoiser, DDPM, RF Euler, Euler,
 *    Heun predictor/corrector, DDIM, DPM++ 2M, to-float, advance), guidance_combine,
 *    patchify both ways and the timestep features: CUDA against the CPU table on random
 *    inputs of awkward sizes (double state: relative error ≤ 1e-12; patches exact).
 *  - Whole generations of the tiny DiT-MoE golden model with CFG on the CUDA table against
 *    the CPU table, for the official samplers and DDIM / DPM++ 2M / Heun / Euler a (≤ 1e-3).
 *  - Per step (from the progress callback): from the second step on, exactly one graph
 *    launch, no host wait and no device allocation (the backend's counters; the emulator's
 *    too where built with it); the first step runs directly.
 *  - A replayed run is bit-identical to the same run with every step issued directly
 *    (MOIRE_CUDA_GRAPH=0).
 *  - While recording, upload, download and allocation are refused; a recorded ×2 replays.
 *  - On the CPU table, the forward on backend arrays equals the host forward bit for bit.
 * Exits 77 (skip) when no CUDA device is visible. */
#include "context.h"
#include "dit_common.h"
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "ops.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOIRE_CUDA_EMU
#include "cuda_emu.h"
#endif

/* The emulator runs every GPU thread on the CPU: fewer steps there. */
#ifdef MOIRE_CUDA_EMU
#define STEPS 4
#else
#define STEPS 12
#endif

/* ---- the ops against the CPU table ------------------------------------------------------- */

static void fill_doubles(double *x, size_t n, uint64_t seed, double lo, double hi)
{
    float *f = malloc(n * sizeof(float));
    test_fill_random(f, (int64_t)n, seed, (float)lo, (float)hi);
    for (size_t i = 0; i < n; i++)
        x[i] = (double)f[i] + (double)f[(i * 7 + 3) % n] * 1e-7; /* use all 53 bits */
    free(f);
}

static double max_rel_error(const double *got, const double *want, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / fmax(fabs(want[i]), 1e-3);
        if (!(e <= worst))
            worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

/* The arrays one sampler_op may touch, on the host and on the device. */
enum { N_IMAGES = 3, CHW = 1000, ROWS = 2, NOISE_ROWS = 2 };
#define TOTAL ((size_t)N_IMAGES * CHW)
#define OUT_STRIDE ((int64_t)2 * CHW) /* ε then the variance interpolation */

typedef struct op_arrays {
    double *y, *y2, *den, *old, *coef;
    float *x_in, *t_in, *x0, *out, *noise;
    int32_t *step;
} op_arrays;

static void arrays_alloc(const moire_ops *ops, op_arrays *a)
{
    a->y = ops->mem_alloc(ops, TOTAL * 8);
    a->y2 = ops->mem_alloc(ops, TOTAL * 8);
    a->den = ops->mem_alloc(ops, TOTAL * 8);
    a->old = ops->mem_alloc(ops, TOTAL * 8);
    a->coef = ops->mem_alloc(ops, ROWS * MOIRE_SAMPLER_COEFS * 8);
    a->x_in = ops->mem_alloc(ops, TOTAL * 4);
    a->t_in = ops->mem_alloc(ops, N_IMAGES * 4);
    a->x0 = ops->mem_alloc(ops, TOTAL * 4);
    a->out = ops->mem_alloc(ops, N_IMAGES * OUT_STRIDE * 4);
    a->noise = ops->mem_alloc(ops, NOISE_ROWS * TOTAL * 4);
    a->step = ops->mem_alloc(ops, 4);
}

static void arrays_free(const moire_ops *ops, op_arrays *a)
{
    void *all[] = {a->y, a->y2, a->den, a->old, a->coef, a->x_in,
                   a->t_in, a->x0, a->out, a->noise, a->step};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        ops->mem_free(ops, all[i]);
}

/* The same random contents everywhere (host source arrays, uploaded to each backend). */
typedef struct op_inputs {
    double y[TOTAL], y2[TOTAL], den[TOTAL], old[TOTAL];
    double coef[ROWS * MOIRE_SAMPLER_COEFS];
    float out[N_IMAGES * 2 * CHW], noise[NOISE_ROWS * TOTAL];
} op_inputs;

static void arrays_load(const moire_ops *ops, op_arrays *a, const op_inputs *in, int32_t row)
{
    ops->upload(ops, a->y, in->y, sizeof in->y);
    ops->upload(ops, a->y2, in->y2, sizeof in->y2);
    ops->upload(ops, a->den, in->den, sizeof in->den);
    ops->upload(ops, a->old, in->old, sizeof in->old);
    ops->upload(ops, a->coef, in->coef, sizeof in->coef);
    ops->upload(ops, a->out, in->out, sizeof in->out);
    ops->upload(ops, a->noise, in->noise, sizeof in->noise);
    ops->upload(ops, a->step, &row, sizeof row);
    static const float zeros[TOTAL];
    ops->upload(ops, a->x_in, zeros, sizeof zeros);
    ops->upload(ops, a->x0, zeros, sizeof zeros);
    ops->upload(ops, a->t_in, zeros, N_IMAGES * sizeof(float));
}

static moire_status run_op(const moire_ops *ops, op_arrays *a, moire_sampler_op op, int slot,
                           int learned, int src_which)
{
    moire_sampler_args args = {
        .op = op, .slot = slot, .n = N_IMAGES, .chw = CHW, .out_stride = OUT_STRIDE,
        .learned_variance = learned,
        .y = a->y, .y2 = a->y2, .den = a->den, .old = a->old,
        .src = src_which ? a->y2 : a->y, .dst = src_which ? a->old : a->den,
        .x_in = a->x_in, .t_in = a->t_in, .x0 = a->x0,
        .model_out = a->out, .noise = a->noise, .coef = a->coef, .step = a->step,
    };
    return ops->sampler_op(ops, &args);
}

typedef struct op_result {
    double y[TOTAL], y2[TOTAL], den[TOTAL], old[TOTAL];
    float x_in[TOTAL], t_in[N_IMAGES], x0[TOTAL];
    int32_t step;
} op_result;

static void arrays_read(const moire_ops *ops, op_arrays *a, op_result *r)
{
    ops->download(ops, r->y, a->y, sizeof r->y);
    ops->download(ops, r->y2, a->y2, sizeof r->y2);
    ops->download(ops, r->den, a->den, sizeof r->den);
    ops->download(ops, r->old, a->old, sizeof r->old);
    ops->download(ops, r->x_in, a->x_in, sizeof r->x_in);
    ops->download(ops, r->t_in, a->t_in, sizeof r->t_in);
    ops->download(ops, r->x0, a->x0, sizeof r->x0);
    ops->download(ops, &r->step, a->step, sizeof r->step);
}

static void check_sampler_ops(const moire_ops *gpu)
{
    moire_ops cpu;
    CHECK(ops_cpu_init(&cpu, 1) == MOIRE_OK, "cpu table");
    op_inputs *in = calloc(1, sizeof *in);
    op_result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    fill_doubles(in->y, TOTAL, 1, -2, 2);
    fill_doubles(in->y2, TOTAL, 2, -2, 2);
    fill_doubles(in->den, TOTAL, 3, -1, 1);
    fill_doubles(in->old, TOTAL, 4, -1, 1);
    test_fill_random(in->out, N_IMAGES * 2 * CHW, 5, -1.5f, 1.5f);
    test_fill_random(in->noise, NOISE_ROWS * TOTAL, 6, -3, 3);
    /* row 0: no noise, DPM++ 2M's last step; row 1: noise row 1, a second-order step */
    fill_doubles(in->coef, ROWS * MOIRE_SAMPLER_COEFS, 7, 0.2, 1.5);
    double *r0 = in->coef, *r1 = in->coef + MOIRE_SAMPLER_COEFS;
    r0[MOIRE_COEF_NOISE] = 0.0, r0[MOIRE_COEF_NOISE_ROW] = 0.0, r0[MOIRE_COEF_FLAG] = 1.0;
    r1[MOIRE_COEF_NOISE] = 1.0, r1[MOIRE_COEF_NOISE_ROW] = 1.0, r1[MOIRE_COEF_FLAG] = 0.0;
    r1[MOIRE_COEF_E] = -3.0, r1[MOIRE_COEF_F] = -4.0; /* log variances */
    op_arrays on_cpu, on_gpu;
    arrays_alloc(&cpu, &on_cpu);
    arrays_alloc(gpu, &on_gpu);
    static const struct {
        moire_sampler_op op;
        const char *name;
        int slot, learned, src;
    } cases[] = {
        {MOIRE_SAMPLER_OP_MODEL_INPUT, "model input slot 0", 0, 0, 0},
        {MOIRE_SAMPLER_OP_MODEL_INPUT, "model input slot 1 (y2)", 1, 0, 1},
        {MOIRE_SAMPLER_OP_DENOISE, "denoise y → den", 0, 0, 0},
        {MOIRE_SAMPLER_OP_DENOISE, "denoise y2 → old", 1, 0, 1},
        {MOIRE_SAMPLER_OP_DDPM, "ddpm", 0, 0, 0},
        {MOIRE_SAMPLER_OP_DDPM, "ddpm learned variance", 0, 1, 0},
        {MOIRE_SAMPLER_OP_RF_EULER, "rf euler", 0, 0, 0},
        {MOIRE_SAMPLER_OP_EULER, "euler", 0, 0, 0},
        {MOIRE_SAMPLER_OP_HEUN_PREDICT, "heun predict", 0, 0, 0},
        {MOIRE_SAMPLER_OP_HEUN_CORRECT, "heun correct", 0, 0, 0},
        {MOIRE_SAMPLER_OP_DDIM, "ddim", 0, 0, 0},
        {MOIRE_SAMPLER_OP_DPMPP_2M, "dpm++ 2m", 0, 0, 0},
        {MOIRE_SAMPLER_OP_TO_FLOAT, "to float", 0, 0, 0},
        {MOIRE_SAMPLER_OP_ADVANCE, "advance", 0, 0, 0},
    };
    for (int row = 0; row < ROWS; row++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            arrays_load(&cpu, &on_cpu, in, row);
            arrays_load(gpu, &on_gpu, in, row);
            moire_status a = run_op(&cpu, &on_cpu, cases[c].op, cases[c].slot, cases[c].learned,
                                    cases[c].src);
            moire_status b = run_op(gpu, &on_gpu, cases[c].op, cases[c].slot, cases[c].learned,
                                    cases[c].src);
            CHECK(a == MOIRE_OK && b == MOIRE_OK, "%s row %d: %s", cases[c].name, row,
                  moire_last_error());
            arrays_read(&cpu, &on_cpu, want);
            arrays_read(gpu, &on_gpu, got);
            double worst = 0.0;
            const double *pairs[4][2] = {{got->y, want->y}, {got->y2, want->y2},
                                         {got->den, want->den}, {got->old, want->old}};
            for (int k = 0; k < 4; k++)
                worst = fmax(worst, max_rel_error(pairs[k][0], pairs[k][1], TOTAL));
            CHECK(worst <= 1e-12, "sampler_op %s, row %d: relative error %.3g (≤ 1e-12)",
                  cases[c].name, row, worst);
            CHECK(memcmp(got->t_in, want->t_in, sizeof got->t_in) == 0 &&
                      got->step == want->step,
                  "sampler_op %s, row %d: t_in or the step counter differ", cases[c].name, row);
            int64_t float_mismatch = 0;
            for (size_t j = 0; j < TOTAL; j++)
                float_mismatch += fabsf(got->x_in[j] - want->x_in[j]) >
                                          1e-6f * fmaxf(fabsf(want->x_in[j]), 1.0f) ||
                                  got->x0[j] != want->x0[j];
            CHECK(float_mismatch == 0, "sampler_op %s, row %d: %lld float outputs differ",
                  cases[c].name, row, (long long)float_mismatch);
        }
    printf("       sampler_op: %zu cases × %d coefficient rows\n",
               sizeof cases / sizeof *cases, ROWS);
    arrays_free(&cpu, &on_cpu);
    arrays_free(gpu, &on_gpu);

    /* guidance: 2 images of 777 floats, the first 500 guided */
    {
        const int n = 2;
        const int64_t image = 777, guided = 500;
        float *both = malloc(2 * n * image * 4), *a = malloc(n * image * 4),
              *b = malloc(n * image * 4);
        test_fill_random(both, 2 * n * image, 8, -2, 2);
        float *d_both = gpu->mem_alloc(gpu, 2 * n * image * 4);
        float *d_out = gpu->mem_alloc(gpu, n * image * 4);
        gpu->upload(gpu, d_both, both, 2 * n * image * 4);
        CHECK(cpu.guidance_combine(&cpu, a, both, n, image, guided, 4.5f) == MOIRE_OK &&
                  gpu->guidance_combine(gpu, d_out, d_both, n, image, guided, 4.5f) ==
                      MOIRE_OK &&
                  gpu->download(gpu, b, d_out, n * image * 4) == MOIRE_OK,
              "guidance: %s", moire_last_error());
        CHECK(memcmp(a, b, n * image * 4) == 0, "guidance_combine: cuda differs from the CPU");
        gpu->mem_free(gpu, d_both), gpu->mem_free(gpu, d_out);
        free(both), free(a), free(b);
    }
    /* patchify both ways: 2 images of 3 × 8 × 12, p 2 */
    {
        const int n = 2, C = 3, h = 8, w = 12, p = 2;
        const int64_t count = (int64_t)n * C * h * w;
        float *x = malloc(count * 4), *a = malloc(count * 4), *b = malloc(count * 4);
        test_fill_random(x, count, 9, -1, 1);
        float *d_x = gpu->mem_alloc(gpu, count * 4), *d_y = gpu->mem_alloc(gpu, count * 4);
        gpu->upload(gpu, d_x, x, count * 4);
        for (int inverse = 0; inverse < 2; inverse++) {
            CHECK(cpu.patchify(&cpu, a, x, n, C, h, w, p, inverse) == MOIRE_OK &&
                      gpu->patchify(gpu, d_y, d_x, n, C, h, w, p, inverse) == MOIRE_OK &&
                      gpu->download(gpu, b, d_y, count * 4) == MOIRE_OK,
                  "patchify: %s", moire_last_error());
            CHECK(memcmp(a, b, count * 4) == 0, "patchify (inverse %d): cuda differs", inverse);
        }
        gpu->mem_free(gpu, d_x), gpu->mem_free(gpu, d_y);
        free(x), free(a), free(b);
    }
    /* timestep features of 5 times in [0, 999] */
    {
        const int n = 5;
        float t[5], a[5 * 256], b[5 * 256];
        test_fill_random(t, n, 10, 0, 999);
        float *d_t = gpu->mem_alloc(gpu, sizeof t), *d_f = gpu->mem_alloc(gpu, sizeof b);
        gpu->upload(gpu, d_t, t, sizeof t);
        CHECK(cpu.timestep_frequencies(&cpu, a, t, n) == MOIRE_OK &&
                  gpu->timestep_frequencies(gpu, d_f, d_t, n) == MOIRE_OK &&
                  gpu->download(gpu, b, d_f, sizeof b) == MOIRE_OK,
              "timestep features: %s", moire_last_error());
        float worst = 0.0f;
        for (int i = 0; i < n * 256; i++)
            worst = fmaxf(worst, fabsf(a[i] - b[i]));
        CHECK(worst <= 1e-6f, "timestep features: cuda differs by %g (≤ 1e-6)", (double)worst);
        gpu->mem_free(gpu, d_t), gpu->mem_free(gpu, d_f);
    }
    free(in), free(want), free(got);
}

/* ---- whole generations, step costs, replay ------------------------------------------------ */

#define MAX_STEPS 64

typedef struct step_costs {
    moire_ctx *ctx;
    int steps;
    uint64_t allocations[MAX_STEPS], synchronizations[MAX_STEPS];
#ifdef MOIRE_CUDA_EMU
    cuda_emu_counters emu[MAX_STEPS];
#endif
} step_costs;

static void costs_record(step_costs *c)
{
    if (c->steps >= MAX_STEPS)
        return;
    moire_ops_stats stats;
    ops_cuda_stats(&c->ctx->ops, &stats, false);
    c->allocations[c->steps] = stats.allocations;
    c->synchronizations[c->steps] = stats.synchronizations;
#ifdef MOIRE_CUDA_EMU
    cuda_emu_counters_get(&c->emu[c->steps]);
#endif
    c->steps++;
}

static bool on_progress(const moire_progress *progress, void *user_data)
{
    (void)progress;
    costs_record(user_data);
    return true;
}

static void check_generation(moire_ctx *cpu, moire_ctx *gpu, const moire_model *model,
                             moire_sampler sampler, float cfg)
{
    const moire_model_config *cfg_m = moire_model_get_config(model);
    const int count = 2;
    const size_t numel = (size_t)count * cfg_m->in_channels * cfg_m->input_size *
                         cfg_m->input_size;
    moire_generate_params params = moire_generate_params_default();
    params.steps = STEPS;
    params.seed = 21;
    params.class_id = 1;
    params.batch_count = count;
    params.sampler = sampler;
    params.cfg_scale = cfg;
    params.eta = 0.5f;
    float *a = calloc(numel, 4), *b = calloc(numel, 4), *c = calloc(numel, 4);
    char label[160];
    snprintf(label, sizeof label, "%s, cfg %.1f, %d steps", moire_sampler_name(sampler),
             (double)cfg, STEPS);

    CHECK(generate_samples(cpu, model, &params, 0, count, NULL, a) == MOIRE_OK,
          "cpu %s: %s", label, moire_last_error());
    step_costs costs = {.ctx = gpu};
    moire_callbacks callbacks = {.progress = on_progress, .user_data = &costs};
    costs_record(&costs); /* before the run */
    const uint64_t cpu_calls = ops_cpu_calls();
    CHECK(generate_samples(gpu, model, &params, 0, count, &callbacks, b) == MOIRE_OK,
          "cuda %s: %s", label, moire_last_error());
    CHECK(ops_cpu_calls() == cpu_calls, "%s: %llu ops ran on the CPU", label,
          (unsigned long long)(ops_cpu_calls() - cpu_calls));
    char what[200];
    snprintf(what, sizeof what, "generation %s: cuda vs cpu", label);
    test_check_tensor(what, b, a, (int64_t)numel, 1e-3);

    /* per step, after the first: one graph launch, nothing allocated, nothing waited for */
    CHECK(costs.steps == STEPS + 1, "%s: %d progress calls for %d steps", label,
          costs.steps - 1, STEPS);
    for (int s = 2; s < costs.steps; s++) {
        const uint64_t allocs = costs.allocations[s] - costs.allocations[s - 1];
        const uint64_t syncs = costs.synchronizations[s] - costs.synchronizations[s - 1];
        CHECK(allocs == 0 && syncs == 0,
              "%s step %d: %llu allocations, %llu host waits (0 expected)", label, s,
              (unsigned long long)allocs, (unsigned long long)syncs);
#ifdef MOIRE_CUDA_EMU
        const cuda_emu_counters *now = &costs.emu[s], *was = &costs.emu[s - 1];
        CHECK(now->graph_launches - was->graph_launches == 1,
              "%s step %d: %llu graph launches (1 expected)", label, s,
              (unsigned long long)(now->graph_launches - was->graph_launches));
        CHECK(now->host_syncs == was->host_syncs && now->device_allocs == was->device_allocs &&
                  now->copies_to_device == was->copies_to_device &&
                  now->copies_to_host == was->copies_to_host,
              "%s step %d: the emulator saw %llu waits, %llu cudaMalloc, %llu + %llu copies",
              label, s, (unsigned long long)(now->host_syncs - was->host_syncs),
              (unsigned long long)(now->device_allocs - was->device_allocs),
              (unsigned long long)(now->copies_to_device - was->copies_to_device),
              (unsigned long long)(now->copies_to_host - was->copies_to_host));
        if (s == costs.steps - 1)
            printf("       %s: the last step = %llu graph launch, %llu host waits, %llu "
                   "device allocations\n",
                   label, (unsigned long long)(now->graph_launches - was->graph_launches),
                   (unsigned long long)(now->host_syncs - was->host_syncs),
                   (unsigned long long)(now->device_allocs - was->device_allocs));
#endif
    }
#ifdef MOIRE_CUDA_EMU
    CHECK(costs.emu[1].graph_launches == costs.emu[0].graph_launches,
          "%s: the first step should run directly (it sizes the arena)", label);
#endif

    /* the replayed run is bit-identical to every step issued directly */
    setenv("MOIRE_CUDA_GRAPH", "0", 1);
    CHECK(generate_samples(gpu, model, &params, 0, count, NULL, c) == MOIRE_OK,
          "cuda %s without graphs: %s", label, moire_last_error());
    unsetenv("MOIRE_CUDA_GRAPH");
    CHECK(memcmp(b, c, numel * 4) == 0, "%s: the replayed run differs from the direct one",
          label);
    free(a), free(b), free(c);
}

/* While a step is being recorded nothing may allocate, copy from or to the host, or wait:
 * the CUDA table refuses (an error naming the call), and the recording still ends cleanly. */
static void check_recording_refusals(moire_ctx *gpu)
{
    const moire_ops *ops = &gpu->ops;
    float host[4] = {1, 2, 3, 4};
    float *dev = ops->mem_alloc(ops, sizeof host);
    CHECK(dev && ops->upload(ops, dev, host, sizeof host) == MOIRE_OK &&
              ops->graph_begin(ops) == MOIRE_OK,
          "graph_begin: %s", moire_last_error());
    CHECK(ops->upload(ops, dev, host, sizeof host) != MOIRE_OK &&
              strstr(moire_last_error(), "recorded"),
          "an upload while recording was not refused (%s)", moire_last_error());
    CHECK(ops->download(ops, host, dev, sizeof host) != MOIRE_OK &&
              strstr(moire_last_error(), "recorded"),
          "a download while recording was not refused (%s)", moire_last_error());
    CHECK(ops->mem_alloc(ops, 64) == NULL && strstr(moire_last_error(), "recorded"),
          "an allocation while recording was not refused (%s)", moire_last_error());
    CHECK(ops->scale(ops, dev, dev, 2.0f, 4) == MOIRE_OK, "scale while recording: %s",
          moire_last_error());
    moire_graph *graph = NULL;
    CHECK(ops->graph_end(ops, &graph) == MOIRE_OK && graph, "graph_end: %s",
          moire_last_error());
    /* the recording ran nothing; two replays double twice */
    CHECK(ops->graph_launch(ops, graph) == MOIRE_OK &&
              ops->graph_launch(ops, graph) == MOIRE_OK &&
              ops->graph_launch(ops, graph) == MOIRE_OK,
          "graph_launch: %s", moire_last_error());
    float back[4] = {0};
    CHECK(ops->download(ops, back, dev, sizeof back) == MOIRE_OK && back[0] == 8.0f &&
              back[3] == 32.0f,
          "three replays of ×2 gave %g … %g (8 … 32 expected)", (double)back[0],
          (double)back[3]);
    ops->graph_free(ops, graph);
    ops->mem_free(ops, dev);
}

/* On the CPU table the forward on backend arrays is the host forward, bit for bit (what keeps
 * the CPU images unchanged now that generate.c uses it). */
static void check_cpu_forward_identity(moire_ctx *cpu, const moire_model *model)
{
    const moire_model_config *cfg = moire_model_get_config(model);
    const int n = 2, side = cfg->input_size;
    const size_t in = (size_t)n * cfg->in_channels * side * side;
    const size_t out = (size_t)n * cfg->out_channels * side * side;
    float *x = malloc(in * 4), *a = malloc(out * 4), *b = malloc(out * 4);
    test_fill_random(x, (int64_t)in, 31, -1, 1);
    const float t[2] = {0.25f, 731.0f};
    const int32_t y[2] = {1, cfg->num_classes};
    const float *pos_embed = model->weights.pos_embed;
    float *positions = dit_positions_on_backend(&cpu->ops, cfg, pos_embed, side, side);
    CHECK(positions && moire_forward(cpu, model, n, side, side, x, t, y, a) == MOIRE_OK &&
              dit_forward_on_backend(cpu, model, n, side, side, x, t, y, positions, b) ==
                  MOIRE_OK,
          "cpu forwards: %s", moire_last_error());
    CHECK(memcmp(a, b, out * 4) == 0, "cpu: the forward on backend arrays differs from the "
                                      "host forward");
    cpu->ops.mem_free(&cpu->ops, positions);
    free(x), free(a), free(b);
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
    params.device = MOIRE_DEVICE_CPU;
    params.n_threads = 2;
    if (moire_ctx_new(&params, &cpu) != MOIRE_OK)
        return 1;
    check_sampler_ops(&gpu->ops);
    check_recording_refusals(gpu);

    moire_model *model = NULL;
    const char *file = test_data_path("golden/tiny_qkv.safetensors");
    CHECK(moire_model_load(file, &model) == MOIRE_OK, "%s: %s", file, moire_last_error());
    if (model) {
        const bool ddpm = moire_model_get_config(model)->objective == MOIRE_OBJECTIVE_DDPM_EPS;
        check_cpu_forward_identity(cpu, model);
        check_generation(cpu, gpu, model, MOIRE_SAMPLER_DEFAULT, 4.0f);
        check_generation(cpu, gpu, model, MOIRE_SAMPLER_DDIM, 4.0f);
        check_generation(cpu, gpu, model, MOIRE_SAMPLER_DPMPP_2M, 1.0f);
        check_generation(cpu, gpu, model, MOIRE_SAMPLER_HEUN, 2.0f);
        check_generation(cpu, gpu, model, ddpm ? MOIRE_SAMPLER_EULER_ANCESTRAL
                                               : MOIRE_SAMPLER_EULER,
                         3.0f);
        moire_model_free(model);
    }
    moire_ctx_free(gpu);
    moire_ctx_free(cpu);
    return test_finish("cuda_graph");
}
