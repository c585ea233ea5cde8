/* test_perf_model.c — engine/models/perf_model.c against the kernels it describes: one warmed-up
 * CFG forward of small random-weight DiT-MoE models (bf16 weights, both attention layouts,
 * head sizes 32 / 64 / 72) on the CUDA emulator, whose per-kernel counters (launches, global
 * bytes read and written, tests/cuda-emu/include/cuda_emu.h) must match the model's rows
 * for the same kernel names within 1 % (today they agree to the byte) — every kernel the emulator saw must be in the model
 * and every kernel of the model must have run. A kernel change that moves its traffic
 * (a new pass, a re-read, a different tile) fails here until perf_model.c follows.
 *
 * Routing: the model spreads the (token, expert) pairs evenly; with at most 128 tokens per
 * forward no expert can get more than one 128-row tile, so the tensor-core GEMMs' traffic
 * does not depend on the routing as long as no expert is left empty (true for these seeds).
 *
 * Needs the emulator's counters: elsewhere (a real device, the CPU build) it exits 77. */
#include "moire.h"
#include "context.h"
#include "perf_model.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOIRE_CUDA_EMU
#include "cuda_emu.h"

#define MAX_KERNELS 128
#define TOLERANCE 0.01

typedef struct model_sum {
    const char *kernel;
    int64_t launches;
    double read, written;
} model_sum;

/* The model's rows summed per kernel name. */
static int sum_model(const moire_perf_kernel *rows, int count, model_sum *sums)
{
    int n = 0;
    for (int i = 0; i < count; i++) {
        if (rows[i].unit == MOIRE_PERF_COPY)
            continue;
        int j = 0;
        while (j < n && strcmp(sums[j].kernel, rows[i].kernel) != 0)
            j++;
        if (j == n)
            sums[n++] = (model_sum){rows[i].kernel, 0, 0, 0};
        sums[j].launches += rows[i].launches;
        sums[j].read += rows[i].bytes_read;
        sums[j].written += rows[i].bytes_written;
    }
    return n;
}

static bool close_enough(double model, double counted)
{
    if (counted == 0)
        return model == 0;
    return fabs(model - counted) <= TOLERANCE * counted;
}

static void check_geometry(moire_ctx *gpu, const moire_bench_geometry *g, int resolution)
{
    moire_model *model = NULL;
    CHECK(moire_bench_model_new(g, resolution, &model) == MOIRE_OK, "%s: %s", g->name,
          moire_last_error());
    if (!model)
        return;
    const moire_model_config *c = moire_model_get_config(model);
    const int n = 2, side = resolution / 8;
    const size_t in = (size_t)c->in_channels * side * side;
    float *x = malloc(n * in * sizeof(float));
    float *out = malloc((size_t)n * c->out_channels * side * side * sizeof(float));
    float t[2] = {0.5f, 0.5f};
    int32_t y[2] = {7, c->num_classes};
    for (size_t i = 0; i < n * in; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;

    /* The warm-up binds the weights and makes the GEMM plans; then one counted forward. */
    CHECK(moire_forward(gpu, model, n, side, side, x, t, y, out) == MOIRE_OK, "%s warm-up: %s",
          g->name, moire_last_error());
    cuda_emu_counters_reset();
    CHECK(moire_forward(gpu, model, n, side, side, x, t, y, out) == MOIRE_OK, "%s: %s", g->name,
          moire_last_error());
    cuda_emu_kernel_counters counted[MAX_KERNELS];
    int counted_n = cuda_emu_kernel_counters_get(counted, MAX_KERNELS);
    counted_n = counted_n < MAX_KERNELS ? counted_n : MAX_KERNELS;

    const moire_perf_shape shape = perf_shape_for_bench(g, resolution, 1);
    moire_perf_kernel rows[MAX_KERNELS];
    int rows_n = perf_step_kernels(&shape, rows, MAX_KERNELS);
    CHECK(rows_n <= MAX_KERNELS, "%s: %d model rows", g->name, rows_n);
    rows_n = rows_n < MAX_KERNELS ? rows_n : MAX_KERNELS;
    model_sum sums[MAX_KERNELS];
    const int sums_n = sum_model(rows, rows_n, sums);

    printf("       %s at %d² (hd %d, %s): kernel, launches and MB read / written, model vs "
           "emulator\n",
           g->name, resolution, g->hidden / g->heads, g->rectified_flow ? "qk-norm" : "qkv");
    for (int i = 0; i < sums_n; i++) {
        const cuda_emu_kernel_counters *k = NULL;
        for (int j = 0; j < counted_n; j++)
            if (counted[j].launches && strcmp(counted[j].name, sums[i].kernel) == 0)
                k = &counted[j];
        CHECK(k != NULL, "%s: the model's kernel %s did not run", g->name, sums[i].kernel);
        if (!k)
            continue;
        printf("       %-36s %4lld/%-4llu %9.4f/%-9.4f %9.4f/%-9.4f\n", sums[i].kernel,
               (long long)sums[i].launches, (unsigned long long)k->launches, sums[i].read / 1e6,
               k->bytes_read / 1e6, sums[i].written / 1e6, k->bytes_written / 1e6);
        CHECK((uint64_t)sums[i].launches == k->launches, "%s: %s: %lld launches modelled, %llu ran",
              g->name, sums[i].kernel, (long long)sums[i].launches,
              (unsigned long long)k->launches);
        CHECK(close_enough(sums[i].read, (double)k->bytes_read),
              "%s: %s reads %.0f bytes in the model, %llu in the emulator", g->name,
              sums[i].kernel, sums[i].read, (unsigned long long)k->bytes_read);
        CHECK(close_enough(sums[i].written, (double)k->bytes_written),
              "%s: %s writes %.0f bytes in the model, %llu in the emulator", g->name,
              sums[i].kernel, sums[i].written, (unsigned long long)k->bytes_written);
    }
    for (int j = 0; j < counted_n; j++) {
        if (!counted[j].launches)
            continue;
        bool known = false;
        for (int i = 0; i < sums_n; i++)
            known |= strcmp(counted[j].name, sums[i].kernel) == 0;
        CHECK(known, "%s: %s ran %llu times but is not in the model", g->name, counted[j].name,
              (unsigned long long)counted[j].launches);
    }
    free(x), free(out);
    moire_model_free(model);
}
#endif

int main(void)
{
#ifndef MOIRE_CUDA_EMU
    printf("SKIP: the performance model is checked against the CUDA emulator's counters\n");
    return 77;
#else
    setenv("MOIRE_CUDA_PRECISION", "bf16", 1);
    setenv("MOIRE_CUDA_SELF_CHECK", "0", 1); /* not what is measured here */
    moire_ctx_params params = moire_ctx_params_default();
    params.device = MOIRE_DEVICE_CUDA;
    moire_ctx *gpu = NULL;
    if (moire_ctx_new(&params, &gpu) != MOIRE_OK) {
        printf("SKIP: %s\n", moire_last_error());
        return 77;
    }
    /* name, depth, hidden, heads, experts, top-k, rectified flow (qk-norm layout) */
    const moire_bench_geometry shapes[] = {
        {"xl-like", 1, 144, 2, 4, 2, true}, /* hd 72: attention_small_kernel<3>, qk-norm */
        {"s-like", 2, 128, 2, 4, 2, false}, /* hd 64, qkv layout, 8 output channels, 2 blocks */
        {"wide-e", 1, 96, 3, 8, 2, true},   /* hd 32, 8 experts                          */
    };
    const int resolutions[] = {128, 64, 96}; /* 64, 16 and 36 tokens per image */
    for (int i = 0; i < 3; i++)
        check_geometry(gpu, &shapes[i], resolutions[i]);
    moire_ctx_free(gpu);
    return test_finish("perf_model");
#endif
}
