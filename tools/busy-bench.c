/* busy-bench.c — how much slower a generation gets when other programs keep the CPU busy.
 *
 * An artist always has GIMP or a browser running; a generation must share the cores
 * gracefully (issue 18). This program times one generation (best of N runs) alone, then
 * beside 1 and 2 CPU-bound processes (plain busy loops, same priority), and prints each time
 * and its ratio to the time alone. It is a measuring tool, not a test: it prints figures.
 *
 *   build/tools/moire-busy-bench [--model FILE] [--prompt TEXT] [--steps N] [--runs N]
 *                                [--threads N] [--hogs LIST] [--device cpu|cuda]
 *
 * Defaults: the embedded model (data/models/moire-emoji.safetensors, its own steps),
 * prompt "red apple", 3 runs, all cores, hogs "0,1,2". The levels are interleaved — round r
 * times one generation at each level in turn (alone, beside 1, beside 2), and each level's
 * figure is its best over the rounds — so when the rest of the machine gets busier or quieter
 * during the measurement, every level sees the change alike instead of one level taking it
 * all. The load average before and after is printed: other programs count as neighbours too. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "moire.h"

#define MAX_HOGS 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A CPU-bound process: a busy loop until killed. */
static pid_t start_hog(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        volatile unsigned long x = 1;
        for (;;)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
    }
    return pid;
}

static void stop_hogs(pid_t *hogs, int count)
{
    for (int i = 0; i < count; i++)
        if (hogs[i] > 0) {
            kill(hogs[i], SIGKILL);
            waitpid(hogs[i], NULL, 0);
            hogs[i] = 0;
        }
}

typedef struct run_stats {
    double best, worst, median;
} run_stats;

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs the generation `runs` times beside `hog_count` busy processes. */
static moire_status time_runs(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params, int runs, int hog_count,
                              run_stats *stats)
{
    pid_t hogs[MAX_HOGS] = {0};
    double times[64];
    moire_status status = MOIRE_OK;
    for (int i = 0; i < hog_count; i++)
        if ((hogs[i] = start_hog()) < 0) {
            stop_hogs(hogs, i);
            fprintf(stderr, "moire-busy-bench: fork: %s\n", strerror(errno));
            return MOIRE_ERROR_BACKEND;
        }
    if (hog_count > 0) {
        /* let the scheduler settle the hogs on the cores first */
        const struct timespec settle = {0, 300000000};
        nanosleep(&settle, NULL);
    }
    for (int r = 0; r < runs && status == MOIRE_OK; r++) {
        moire_image **images = NULL;
        int count = 0;
        double t0 = now_s();
        status = moire_generate(ctx, model, params, NULL, &images, &count);
        times[r] = now_s() - t0;
        moire_images_free(images, count);
    }
    stop_hogs(hogs, hog_count);
    if (status != MOIRE_OK)
        return status;
    qsort(times, (size_t)runs, sizeof times[0], compare_double);
    stats->best = times[0];
    stats->worst = times[runs - 1];
    stats->median = times[runs / 2];
    return MOIRE_OK;
}

static void usage(FILE *to)
{
    fputs("Usage: moire-busy-bench [--model FILE] [--prompt TEXT] [--steps N] [--runs N]\n"
          "                        [--threads N] [--hogs LIST] [--device cpu|cuda]\n"
          "Times one generation alone and beside LIST (default 0,1,2) CPU-bound processes,\n"
          "best of --runs (default 3) each, and prints the ratios to the time alone.\n",
          to);
}

int main(int argc, char **argv)
{
    const char *model_path = MOIRE_SOURCE_DATADIR "/models/moire-emoji.safetensors";
    const char *prompt = "red apple";
    const char *hog_list = "0,1,2";
    const char *device = "cpu";
    int steps = 0, runs = 3, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--model") == 0)
            model_path = v;
        else if (strcmp(a, "--prompt") == 0)
            prompt = v;
        else if (strcmp(a, "--steps") == 0)
            steps = atoi(v);
        else if (strcmp(a, "--runs") == 0)
            runs = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            threads = atoi(v);
        else if (strcmp(a, "--hogs") == 0)
            hog_list = v;
        else if (strcmp(a, "--device") == 0)
            device = v;
        else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (runs < 1 || runs > 64) {
        fprintf(stderr, "moire-busy-bench: --runs must be 1-64\n");
        return 2;
    }
    int hog_counts[8], levels = 0;
    for (const char *p = hog_list; *p && levels < 8;) {
        char *end;
        long n = strtol(p, &end, 10);
        if (end == p || n < 0 || n > MAX_HOGS) {
            fprintf(stderr, "moire-busy-bench: --hogs wants numbers 0-%d, like 0,1,2\n",
                    MAX_HOGS);
            return 2;
        }
        hog_counts[levels++] = (int)n;
        p = *end == ',' ? end + 1 : end;
    }

    moire_model *model = NULL;
    moire_ctx *ctx = NULL;
    moire_ctx_params cp = moire_ctx_params_default();
    cp.n_threads = threads;
    cp.device = strcmp(device, "cuda") == 0 ? MOIRE_DEVICE_CUDA : MOIRE_DEVICE_CPU;
    if (moire_model_load(model_path, &model) != MOIRE_OK ||
        moire_ctx_new(&cp, &ctx) != MOIRE_OK) {
        fprintf(stderr, "moire-busy-bench: %s\n", moire_last_error());
        moire_model_free(model);
        return 1;
    }
    moire_generate_params params = moire_generate_params_default();
    params.prompt = prompt;
    params.steps = steps;
    params.seed = 42;

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("model %s, prompt \"%s\", backend %s, %ld cores online, threads %s, best of %d\n",
           moire_model_name(model), prompt, moire_ctx_backend_name(ctx), cores,
           threads > 0 ? "as given" : "all cores", runs);
    printf("OpenMP waiting: %s\n", moire_thread_wait_policy());
    double load[3] = {0};
    if (getloadavg(load, 3) > 0)
        printf("load average before: %.2f %.2f %.2f (other programs already running count "
               "as busy neighbours too)\n", load[0], load[1], load[2]);

    /* warm-up: first-touch page faults, thread start */
    run_stats warm;
    moire_status status = time_runs(ctx, model, &params, 1, 0, &warm);
    double best[8], worst[8], sum[8];
    for (int l = 0; l < levels; l++) {
        best[l] = 1e300;
        worst[l] = sum[l] = 0.0;
    }
    for (int r = 0; r < runs && status == MOIRE_OK; r++)
        for (int l = 0; l < levels && status == MOIRE_OK; l++) {
            run_stats one;
            status = time_runs(ctx, model, &params, 1, hog_counts[l], &one);
            best[l] = one.best < best[l] ? one.best : best[l];
            worst[l] = one.best > worst[l] ? one.best : worst[l];
            sum[l] += one.best;
        }
    if (status != MOIRE_OK) {
        fprintf(stderr, "moire-busy-bench: %s\n", moire_last_error());
        moire_ctx_free(ctx);
        moire_model_free(model);
        return 1;
    }
    double base = 0.0;
    for (int l = 0; l < levels; l++)
        if (hog_counts[l] == 0)
            base = best[l];
    printf("%-24s %8s %8s %8s %8s\n", "", "best s", "mean", "worst", "ratio");
    for (int l = 0; l < levels; l++) {
        char label[64];
        if (hog_counts[l] == 0)
            snprintf(label, sizeof label, "alone");
        else
            snprintf(label, sizeof label, "beside %d busy process%s", hog_counts[l],
                     hog_counts[l] == 1 ? "" : "es");
        if (base > 0.0)
            printf("%-24s %8.3f %8.3f %8.3f %8.2f\n", label, best[l], sum[l] / runs, worst[l],
                   best[l] / base);
        else
            printf("%-24s %8.3f %8.3f %8.3f\n", label, best[l], sum[l] / runs, worst[l]);
    }
    if (getloadavg(load, 3) > 0)
        printf("load average after: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    printf("ratio = best beside ÷ best alone, best of %d interleaved rounds\n", runs);
    moire_ctx_free(ctx);
    moire_model_free(model);
    return 0;
}
