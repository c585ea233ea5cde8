/* perf-model.c — `moire-perf-model`: the predicted milliseconds per sampling step of every
 * `moire bench` geometry on an H100 SXM (engine/models/perf_model.c), optionally beside the
 * measured column of a `moire bench` run (tools/gpu-check.sh passes its log).
 *
 *   moire-perf-model                         the table (bf16, CFG, batch 1; XL also at 512²
 *                                            and batch 8)
 *   moire-perf-model --markdown              the same as a Markdown table (docs/PERFORMANCE.md)
 *   moire-perf-model --kernels XL/2[@512]    one geometry kernel by kernel
 *   moire-perf-model --measured bench.log    a "measured" column from `moire bench` output
 */
#include "moire.h"
#include "perf_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROWS 64

typedef struct row_spec {
    const char *geometry;
    int resolution, batch;
} row_spec;

/* moire bench's default list (engine/cli: "S/2,B/2,XL/2,G/2,XL/2@512") and the 8-image row
 * of tools/gpu-check.sh. */
static const row_spec table_rows[] = {
    {"S/2", 256, 1}, {"B/2", 256, 1}, {"XL/2", 256, 1},
    {"G/2", 256, 1}, {"XL/2", 512, 1}, {"XL/2", 256, 8},
};

static moire_perf_step predict(moire_perf_shape s, moire_perf_kernel *rows, int *count)
{
    moire_perf_kernel local[MAX_ROWS];
    if (!rows)
        rows = local;
    int n = perf_step_kernels(&s, rows, MAX_ROWS);
    if (n > MAX_ROWS)
        n = MAX_ROWS;
    moire_perf_step step;
    perf_step_time(rows, n, perf_h100_sxm(), &step);
    if (count)
        *count = n;
    return step;
}

/* ms per step for (label, res, batch) in a `moire bench` log, or a negative value. Its rows
 * read "XL/2-8E2A   256  1   12.34 …" (engine/cli/moire-cli.c, bench_row). */
static double measured_ms(const char *log_path, const char *geometry, int resolution, int batch)
{
    if (!log_path)
        return -1.0;
    FILE *f = fopen(log_path, "r");
    if (!f)
        return -1.0;
    char line[512];
    double found = -1.0;
    const size_t glen = strlen(geometry);
    while (fgets(line, sizeof line, f)) {
        char label[64];
        int res, b;
        double ms;
        if (sscanf(line, "%63s %d %d %lf", label, &res, &b, &ms) == 4 &&
            strncmp(label, geometry, glen) == 0 && label[glen] == '-' && res == resolution &&
            b == batch)
            found = ms;
    }
    fclose(f);
    return found;
}

static void print_kernels(const char *spec)
{
    char name[32];
    int resolution = 256, batch = 1;
    snprintf(name, sizeof name, "%s", spec);
    char *at = strchr(name, '@');
    if (at)
        *at = '\0', resolution = atoi(at + 1);
    const moire_bench_geometry *g = moire_bench_geometry_find(name);
    if (!g || resolution < 16 || resolution % 16) {
        fprintf(stderr, "moire-perf-model: unknown geometry '%s' (S/2, B/2, XL/2, G/2, @RES)\n",
                spec);
        exit(2);
    }
    const moire_perf_device *d = perf_h100_sxm();
    for (int act16 = 0; act16 < 2; act16++) {
        moire_perf_shape s = perf_shape_for_bench(g, resolution, batch);
        s.bf16_activations = act16;
        moire_perf_kernel rows[MAX_ROWS];
        int n;
        moire_perf_step step = predict(s, rows, &n);
        printf("%s-%dE%dA %d², %d images per forward (CFG), bf16 weights%s: %lld launches, %.2f ms device, "
               "%.2f ms eager, %.2f ms as one graph; %.2f GB HBM, %.3f TFLOP\n",
               g->name, g->experts, g->top_k, resolution, s.images,
               act16 ? ", bf16 activations (expected)" : "", (long long)step.launches,
               step.device_s * 1e3, step.eager_s * 1e3, step.graph_s * 1e3, step.hbm_bytes / 1e9,
               step.flops / 1e12);
        printf("  %-38s %-36s %6s %10s %10s %9s %9s\n", "op", "kernel", "launch", "MB issued",
               "MB HBM", "GFLOP", "µs");
        for (int i = 0; i < n; i++) {
            const moire_perf_kernel *r = &rows[i];
            printf("  %-38s %-36s %6lld %10.2f %10.2f %9.2f %9.1f%s\n", r->op, r->kernel,
                   (long long)r->launches, (r->bytes_read + r->bytes_written) / 1e6,
                   r->hbm_bytes / 1e6, r->flops / 1e9, perf_kernel_seconds(r, d) * 1e6,
                   r->expected ? "  (expected)" : "");
        }
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    const char *measured = NULL;
    bool markdown = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--markdown") == 0)
            markdown = true;
        else if (strcmp(argv[i], "--measured") == 0 && i + 1 < argc)
            measured = argv[++i];
        else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
            print_kernels(argv[++i]);
            return 0;
        } else {
            fprintf(stderr, "usage: moire-perf-model [--markdown] [--measured BENCH_LOG] "
                            "[--kernels GEOMETRY[@RES]]\n");
            return 2;
        }
    }
    const moire_perf_device *d = perf_h100_sxm();
    if (markdown) {
        printf("| model | res | batch | launches | today, eager | today, one graph | + bf16 "
               "activations *(expected)* | measured |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    } else {
        printf("predicted ms per CFG step on the %s (engine/models/perf_model.c); measured from %s\n",
               d->name, measured ? measured : "(none)");
        printf("%-14s %5s %5s %8s %9s %9s %9s %9s\n", "model", "res", "batch",
               "launches", "eager", "graph", "+bf16act", "measured");
    }
    for (size_t i = 0; i < sizeof table_rows / sizeof *table_rows; i++) {
        const row_spec *rs = &table_rows[i];
        const moire_bench_geometry *g = moire_bench_geometry_find(rs->geometry);
        moire_perf_shape s = perf_shape_for_bench(g, rs->resolution, rs->batch);
        const moire_perf_step today = predict(s, NULL, NULL);
        s.bf16_activations = true;
        const moire_perf_step act16 = predict(s, NULL, NULL);
        const double ms = measured_ms(measured, rs->geometry, rs->resolution, rs->batch);
        char label[32], meas[32];
        snprintf(label, sizeof label, "%s-%dE%dA", g->name, g->experts, g->top_k);
        if (ms >= 0)
            snprintf(meas, sizeof meas, "%.2f", ms);
        else
            snprintf(meas, sizeof meas, markdown ? "" : "-");
        if (markdown)
            printf("| %s | %d² | %d | %lld | %.2f | %.2f | %.2f | %s |\n", label,
                   rs->resolution, rs->batch, (long long)today.launches, today.eager_s * 1e3,
                   today.graph_s * 1e3, act16.graph_s * 1e3, meas);
        else
            printf("%-14s %5d %5d %8lld %9.2f %9.2f %9.2f %9s\n", label,
                   rs->resolution, rs->batch, (long long)today.launches, today.eager_s * 1e3,
                   today.graph_s * 1e3, act16.graph_s * 1e3, meas);
    }
    return 0;
}
