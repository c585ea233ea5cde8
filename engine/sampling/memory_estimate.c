/* memory_estimate.c — how much memory a generation needs beyond the loaded weights, checked
 * before the first step so that a 4096² job is refused in a millisecond with the largest size
 * that fits, instead of growing to 10.8 GB (issue 19, item 7).
 *
 * The estimate follows the allocations of forward.c / ecdit.c and ops_cpu.c for one chunk of
 * n images (B = 2n forward rows with classifier-free guidance), T = (h/p)·(w/p) tokens each,
 * N = B·T rows, D = hidden size:
 *   forward buffers   N·(7D + C_in·p² + C_out·p² + E + 2k) floats
 *   attention scratch T² + 4·T·D/H floats (one image and head at a time; the T² scores
 *                     dominate: 65,536 tokens = 17 GB)
 *   MoE scratch       2·N·D + 2·N·F floats (F: the widest expert)
 *   sampler state     ~8 copies of the n·C_in·h·w latents
 *   result            width·height·4 bytes per image, and 3·width·height floats for a VAE
 *                     decode (the VAE checks its own tiled working memory, vae.c)
 * It errs on the high side by a few percent; the check refuses only when the estimate
 * exceeds what is available: MemAvailable (and the cgroup limit, when one is set) on the
 * CPU; on CUDA, device memory less what the context has already allocated.
 */
#include "memory_estimate.h"

#include "context.h"
#include "internal.h"
#include "model.h"

#include <stdio.h>
#include <string.h>

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

double memory_estimate_bytes(const moire_model *model, int n, int width, int height,
                             int model_h, int model_w, bool guided, bool vae)
{
    const moire_model_config *c = &model->config;
    const double p = c->patch_size > 0 ? c->patch_size : 1;
    const double T = (model_h / p) * (model_w / p);
    const double B = (guided ? 2.0 : 1.0) * n;
    const double N = B * T, D = c->hidden_size;
    const double head_dim = c->num_heads > 0 ? D / c->num_heads : D;
    const double F = max_int(max_int(c->expert_hidden, c->shared_expert_hidden),
                             c->dense_hidden);
    const double forward = N * (7 * D + (c->in_channels + c->out_channels) * p * p +
                                c->num_experts + 2.0 * max_int(c->top_k, 1));
    const double attention = T * T + 4 * T * head_dim;
    const double moe = 2 * N * D + 2 * N * F;
    const double latents = (double)c->in_channels * model_h * model_w;
    const double sampler = 8 * n * latents + 2 * B * (double)max_int(c->out_channels, 1) *
                                                 model_h * model_w;
    const double result = (double)n * width * height * 4 / 4.0 /* bytes → floats */ +
                          (vae ? 3.0 * width * height : 0);
    return 4.0 * (forward + attention + moe + sampler + result);
}

/* Bytes the process may still allocate on the host: MemAvailable, or less under a cgroup
 * memory limit. 0 when unknown (no check then). */
static double host_available_bytes(void)
{
    double available = 0;
    FILE *meminfo = fopen("/proc/meminfo", "r");
    if (meminfo) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, meminfo))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                available = (double)kb * 1024;
                break;
            }
        fclose(meminfo);
    }
    FILE *limit = fopen("/sys/fs/cgroup/memory.max", "r");
    FILE *current = fopen("/sys/fs/cgroup/memory.current", "r");
    unsigned long long max_bytes = 0, used = 0;
    if (limit && current && fscanf(limit, "%llu", &max_bytes) == 1 &&
        fscanf(current, "%llu", &used) == 1 && max_bytes > used) {
        double room = (double)(max_bytes - used);
        if (available == 0 || room < available)
            available = room;
    }
    if (limit)
        fclose(limit);
    if (current)
        fclose(current);
    return available;
}

static double device_available_bytes(const moire_ctx *ctx)
{
#ifdef MOIRE_HAVE_CUDA
    if (strcmp(ctx->ops.name, "cuda") == 0) {
        moire_ops_stats stats;
        memset(&stats, 0, sizeof stats);
        if (ops_cuda_stats(&ctx->ops, &stats, false) == MOIRE_OK &&
            stats.memory_total_bytes > stats.memory_peak_bytes)
            return stats.memory_total_bytes - stats.memory_peak_bytes;
    }
#else
    (void)ctx;
#endif
    return 0;
}

moire_status memory_estimate_check(const moire_ctx *ctx, const moire_model *model,
                                   int n, int width, int height, int model_h,
                                   int model_w, bool guided, bool vae)
{
    const bool on_device = strcmp(ctx->ops.name, "cpu") != 0;
    double available = on_device ? device_available_bytes(ctx) : host_available_bytes();
    if (available <= 0)
        return MOIRE_OK; /* unknown: nothing to compare with */
    const double need = memory_estimate_bytes(model, n, width, height, model_h,
                                              model_w, guided, vae);
    if (need <= available)
        return MOIRE_OK;
    /* the largest size of the same shape that fits: both sides scaled down together, in
       steps of the model's size multiple */
    const int scale = model_h > 0 ? width / model_w : 1;
    const int multiple = model->config.patch_size * (scale > 0 ? scale : 1);
    int fit_w = 0, fit_h = 0;
    for (double f = 0.95; f > 0.01; f -= 0.01) {
        int w = (int)(width * f) / multiple * multiple;
        int h = (int)(height * f) / multiple * multiple;
        if (w < multiple || h < multiple)
            break;
        if (memory_estimate_bytes(model, n, w, h, h / scale, w / scale, guided, vae) <=
            available) {
            fit_w = w;
            fit_h = h;
            break;
        }
    }
    const char *where = on_device ? "device memory" : "memory";
    if (fit_w > 0) {
        error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                   "%dx%d with %s needs about %.0f MB of %s but %.0f MB are available; at most "
                   "about %dx%d fits (or make fewer images at once)",
                   width, height, model->name, need / 1e6, where, available / 1e6, fit_w, fit_h);
        error_set_fitting_size(fit_w, fit_h); /* moire_last_error_fitting_size */
        return MOIRE_ERROR_OUT_OF_MEMORY;
    }
    return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                      "%dx%d with %s needs about %.0f MB of %s but %.0f MB are available; free "
                      "some memory", width, height, model->name, need / 1e6, where,
                      available / 1e6);
}
