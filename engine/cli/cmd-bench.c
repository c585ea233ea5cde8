/* cmd-bench.c — `moire bench`: ms per step of random-weight models of the released
 * geometries. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------
 * bench
 * ---------------------------------------------------------------------------------------- */

double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One row: a geometry at a resolution. Returns 0, or EXIT_ERROR after printing the row's
 * error (the table goes on with the next row). */
static int bench_row(moire_ctx *ctx, const moire_bench_geometry *g, int resolution, int batch,
                     int steps)
{
    moire_model *model = NULL;
    if (moire_bench_model_new(g, resolution, &model) != MOIRE_OK)
        return engine_error(g->name);
    const moire_model_config *c = moire_model_get_config(model);
    const int n = 2 * batch, side = resolution / 8;
    const size_t in_size = (size_t)c->in_channels * side * side;
    float *x = malloc((size_t)n * in_size * sizeof(float));
    float *out = malloc((size_t)n * c->out_channels * side * side * sizeof(float));
    float *t = malloc((size_t)n * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    int rc = 0;
    if (!x || !out || !t || !y) {
        error_line("out of memory");
        rc = EXIT_ERROR;
        goto done;
    }
    uint32_t state = 12345;
    for (size_t i = 0; i < (size_t)n * in_size; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(state >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    for (int i = 0; i < n; i++) {
        t[i] = c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW ? 0.5f : 500.0f;
        y[i] = i < batch ? 207 : c->num_classes; /* conditional half, then the null class */
    }
    /* Warm-up: uploads the weights, sizes the buffers, picks the GEMM algorithms. */
    if (moire_forward(ctx, model, n, side, side, x, t, y, out) != MOIRE_OK) {
        rc = engine_error(g->name);
        goto done;
    }
    const double start = wall_seconds();
    for (int s = 0; s < steps; s++)
        if (moire_forward(ctx, model, n, side, side, x, t, y, out) != MOIRE_OK) {
            rc = engine_error(g->name);
            goto done;
        }
    const double step = (wall_seconds() - start) / steps;
    moire_bench_stats stats;
    if (moire_bench_stats_get(ctx, &stats) != MOIRE_OK) {
        rc = engine_error("bench");
        goto done;
    }
    const int run_steps = c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW ? 50 : 250;
    const double weight_bytes =
        (double)moire_model_parameter_count(model) * stats.weight_bytes_per_parameter;
    const double gbps = weight_bytes / step / 1e9;
    char label[32];
    snprintf(label, sizeof label, "%s-%dE%dA", g->name, g->experts, g->top_k);
    printf("%-14s %5d %6d %9.2f %5d %9.3f %9.3f %10.2f %8.1f %6.0f%%\n", label, resolution,
           batch, step * 1e3, run_steps, step * run_steps, batch / (step * run_steps),
           stats.memory_peak_bytes / 1e9, gbps,
           stats.copy_bytes_per_s > 0 ? 100.0 * gbps * 1e9 / stats.copy_bytes_per_s : 0.0);
    fflush(stdout);
done:
    free(x), free(out), free(t), free(y);
    moire_model_free(model);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    const char *geometry_text = NULL, *resolution_text = NULL, *batch_text = NULL,
               *steps_text = NULL, *device_text = NULL, *precision = NULL,
               *threads_text = NULL;
    const option_spec specs[] = {
        {"geometry", true, &geometry_text}, {"resolution", true, &resolution_text},
        {"batch", true, &batch_text},       {"steps", true, &steps_text},
        {"device", true, &device_text},     {"precision", true, &precision},
        {"threads", true, &threads_text},
    };
    int rc = parse_options("bench", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;
    int resolution = 256, batch = 1, steps = 0;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log;
    if ((resolution_text && (rc = parse_int("resolution", resolution_text, 16, 4096, &resolution))) ||
        (batch_text && (rc = parse_int("batch", batch_text, 1, 1024, &batch))) ||
        (steps_text && (rc = parse_int("steps", steps_text, 1, 100000, &steps))) ||
        (rc = parse_context_options(threads_text, device_text, &ctx_params)))
        return rc;
    if (precision && strcmp(precision, "bf16") != 0 && strcmp(precision, "fp32") != 0) {
        error_line("--precision: use bf16 or fp32");
        return EXIT_USAGE;
    }
    /* The CUDA backend reads its weight storage when the context starts (docs/CUDA.md). */
    setenv("MOIRE_CUDA_PRECISION", precision ? precision : "bf16", 1);
    moire_ctx *ctx = NULL;
    if (moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK)
        return engine_error("--device");
    const bool cuda = strcmp(moire_ctx_backend_name(ctx), "cuda") == 0;
    if (!steps)
        steps = cuda ? 10 : 1;
    const char *list = geometry_text ? geometry_text
                                     : cuda ? "S/2,B/2,XL/2,G/2,XL/2@512" : "S/2";
    moire_bench_stats stats;
    if (moire_bench_stats_get(ctx, &stats) != MOIRE_OK) {
        moire_ctx_free(ctx);
        return engine_error("bench");
    }
    printf("moire bench: %s backend, %s%s; copy %.0f GB/s; CFG batched, %d timed step(s)\n",
           moire_ctx_backend_name(ctx), stats.device_name,
           cuda ? (stats.weight_bytes_per_parameter == 2 ? ", bf16 weights" : ", fp32 weights")
                : "",
           stats.copy_bytes_per_s / 1e9, steps);
    printf("%-14s %5s %6s %9s %5s %9s %9s %10s %8s %7s\n", "model", "res", "batch", "ms/step",
           "steps", "s/run", "images/s", "peak GB", "GB/s", "of copy");
    char *copy = strdup(list);
    int failures = 0;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        int res = resolution;
        char *at = strchr(item, '@');
        if (at) {
            *at = '\0';
            if ((rc = parse_int("geometry", at + 1, 16, 4096, &res))) {
                free(copy);
                moire_ctx_free(ctx);
                return rc;
            }
        }
        const moire_bench_geometry *g = moire_bench_geometry_find(item);
        if (!g) {
            error_line("--geometry: unknown geometry '%s'; use S/2, B/2, XL/2, G/2 or tiny", item);
            free(copy);
            moire_ctx_free(ctx);
            return EXIT_USAGE;
        }
        failures += bench_row(ctx, g, res, batch, steps) != 0;
    }
    free(copy);
    moire_ctx_free(ctx);
    return failures ? EXIT_ERROR : 0;
}
