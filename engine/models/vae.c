/* vae.c — the SD-VAE (AutoencoderKL, KL-f8: sd-vae-ft-mse / sd-vae-ft-ema): loading, and the
 * decoder and encoder as a straight sequence of backend ops (ops.h), fp32, so it runs on the
 * CPU reference or on CUDA alike.
 *
 * docs/VAE.md is its spec; tools/golden/vae_ref.py the float64 PyTorch reference it is tested
 * against. The ops it needs: conv2d (im2col + GEMM in bands on the CPU), GroupNorm as
 * statistics + apply, nearest ×2 upsampling, and the mid block's single-head attention as the
 * backend's attention over [T, C] rows (transposed in and out).
 *
 * Weights are plain structs named after the diffusers keys; both key layouts (diffusers and the
 * original LDM one, optionally under first_stage_model.) bind to the same structs. F32 weights
 * point into the mmapped file, F16/BF16 ones are converted once into an owned arena.
 *
 * Layout of one image's activations: planar [C, H, W], row-major.
 *
 * Loading and binding the weights is vae_load.c; vae_parts.h holds what the two share.
 */
#include "bind.h"
#include "context.h"
#include "dit_common.h"
#include "file_guard.h"
#include "internal.h"
#include "json_guard.h"
#include "ops.h"
#include "safetensors.h"
#include "vae.h"
#include "vae_parts.h"
#include "weight_binding.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------------------------
 * Compute: a straight sequence of op calls (ops.h) on the context's backend. Activations are
 * backend buffers from mem_alloc, one per live tensor, freed as soon as it is dead (a decode
 * runs once per image, so unlike the sampling step it may allocate).
 * ---------------------------------------------------------------------------------------- */

/* A tiled decode's whole-image GroupNorm statistics (see vae_decode_image). Each tile runs
 * the up path once per GroupNorm in it: the pass for GroupNorm `target` applies the already
 * known whole-image statistics of the GroupNorms before it, gathers the target's input over
 * the pixels the tile owns (its core) into `partial`, and stops there; after the last tile
 * the merged statistics become known. A final pass applies all of them. Memory stays one
 * tile's activations plus a few numbers per GroupNorm. */
typedef struct vae_tiled_norms {
    int seen;        /* GroupNorms of the up path met so far in this tile's pass             */
    int target;      /* the GroupNorm whose statistics this pass gathers; −1: final pass     */
    int tile_h, tile_w;  /* the tile, latent pixels                                          */
    int core[4];     /* the latent pixels the tile owns: rows [0], [1]), columns [2], [3])  */
    float *known;    /* [up-path GroupNorms, groups, 2] whole-image mean and 1/σ (host)     */
    double *partial; /* [groups, 3] pixel count, mean and M2 of the target so far (host)    */
    float *host_stats; /* [groups, 2] one tile's statistics, downloaded (host)              */
} vae_tiled_norms;

/* What group_norm returns once the target GroupNorm's statistics are gathered: the tile's
 * pass stops there (never returned by the public functions). */
#define VAE_GATHERED ((moire_status)0x7fff)

typedef struct vae_run {
    moire_ctx *ctx;
    const moire_ops *ops;
    const moire_tensor *bound; /* the VAE's weights on the backend: 2·slot, 2·slot + 1 */
    float *stats;              /* [groups, 2] GroupNorm statistics (backend)            */
    int groups;
    bool emit; /* send intermediates to the debug callback (off for tiles) */
    vae_tiled_norms *tiled;    /* set while the up path runs on a tile                  */
} vae_run;

static float *alloc_floats(const vae_run *r, size_t count, moire_status *status)
{
    if (*status != MOIRE_OK)
        return NULL;
    float *p = count <= SIZE_MAX / sizeof(float)
                   ? r->ops->mem_alloc(r->ops, count * sizeof(float))
                   : NULL;
    if (!p)
        *status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                             "the VAE needs %.1f MB more memory; decode a smaller image (or "
                             "let it tile: moire_vae_decode tiles above %d latent pixels)",
                             (double)count * sizeof(float) / 1e6, MOIRE_VAE_TILE);
    return p;
}

static void release(const vae_run *r, float *p)
{
    if (p)
        r->ops->mem_free(r->ops, p);
}

static moire_status check_cancel(const vae_run *r)
{
    if (atomic_load(&r->ctx->cancel_requested))
        return error_fail(MOIRE_ERROR_CANCELLED, "VAE cancelled");
    return MOIRE_OK;
}

static void emit(const vae_run *r, const char *name, int layer, const float *x, int C, int H,
                 int W)
{
    if (!r->emit || !r->ctx->debug_fn)
        return;
    moire_status status;
    float *host = dit_download_copy(r->ops, x, (size_t)C * H * W * sizeof(float), &status);
    if (!host)
        return;
    const int64_t shape[4] = {1, C, H, W};
    r->ctx->debug_fn(name, layer, host, 4, shape, r->ctx->debug_user_data);
    free(host);
}

/* out[co, Ho, Wo] = conv(x[ci, H, W]) + bias. Stride 1: k/2 zero padding on every side.
 * Stride 2 (the encoder's downsampler): one zero row/column on the bottom/right only. */
static moire_status conv2d(const vae_run *r, const vae_conv *c, const float *x, int H, int W,
                           int stride, float *out)
{
    const int k = c->k, pad_lo = stride == 1 ? k / 2 : 0, pad_hi = stride == 1 ? k / 2 : 1;
    return r->ops->conv2d(r->ops, out, x, &r->bound[2 * c->slot], &r->bound[2 * c->slot + 1],
                          c->ci, H, W, c->co, k, stride, pad_lo, pad_hi);
}

/* Merges the statistics of the target GroupNorm's input x [C, H, W] (a tile's activations,
 * H = s·tile_h) over the tile's core into t->partial (Chan et al.'s pairwise update, in
 * double). The backend reduces the core; only [groups, 2] numbers come back. */
static moire_status gather_core_stats(const vae_run *r, const float *x, int C, size_t HW)
{
    vae_tiled_norms *t = r->tiled;
    int s = 1; /* this activation's pixels per latent pixel */
    while ((size_t)s * s * t->tile_h * t->tile_w < HW)
        s *= 2;
    const int W = s * t->tile_w, rows = s * (t->core[1] - t->core[0]);
    const int cols = s * (t->core[3] - t->core[2]);
    const size_t plane = (size_t)rows * cols;
    moire_status status = MOIRE_OK;
    float *core = alloc_floats(r, (size_t)C * plane, &status); /* [C, rows, cols] */
    for (int c = 0; c < C && status == MOIRE_OK; c++)
        status = r->ops->copy_2d(r->ops, core + c * plane, cols,
                                 x + c * HW + (size_t)s * t->core[0] * W + (size_t)s * t->core[2],
                                 W, rows, cols);
    if (status == MOIRE_OK)
        status = r->ops->group_norm_stats(r->ops, r->stats, core, C, (int64_t)plane, r->groups,
                                          (float)VAE_GN_EPS);
    if (status == MOIRE_OK)
        status = r->ops->download(r->ops, t->host_stats, r->stats,
                                  (size_t)2 * r->groups * sizeof(float));
    release(r, core);
    if (status != MOIRE_OK)
        return status;
    const double n_b = (double)(C / r->groups) * plane;
    for (int g = 0; g < r->groups && n_b > 0; g++) {
        double *p = t->partial + 3 * g; /* count, mean, M2 */
        const double mean_b = t->host_stats[2 * g], inv = t->host_stats[2 * g + 1];
        double var_b = 1.0 / (inv * inv) - VAE_GN_EPS;
        var_b = var_b > 0.0 ? var_b : 0.0;
        const double n = p[0] + n_b, delta = mean_b - p[1];
        p[2] += var_b * n_b + delta * delta * p[0] * n_b / n;
        p[1] += delta * n_b / n;
        p[0] = n;
    }
    return VAE_GATHERED;
}

/* out[C, HW] = GroupNorm(x) · weight + bias, then SiLU when asked. out may be x. In a tiled
 * decode's up path the statistics are the whole image's (vae_tiled_norms). */
static moire_status group_norm(const vae_run *r, const vae_norm *nrm, const float *x, int C,
                               size_t HW, bool with_silu, float *out)
{
    moire_status status = MOIRE_OK;
    if (r->tiled) {
        vae_tiled_norms *t = r->tiled;
        const int index = t->seen++;
        if (index == t->target)
            return gather_core_stats(r, x, C, HW);
        status = r->ops->upload(r->ops, r->stats, t->known + (size_t)2 * r->groups * index,
                                (size_t)2 * r->groups * sizeof(float));
    } else {
        status = r->ops->group_norm_stats(r->ops, r->stats, x, C, (int64_t)HW, r->groups,
                                          (float)VAE_GN_EPS);
    }
    if (status == MOIRE_OK)
        status = r->ops->group_norm_apply(r->ops, out, x, r->stats, &r->bound[2 * nrm->slot],
                                          &r->bound[2 * nrm->slot + 1], C, (int64_t)HW,
                                          r->groups, with_silu);
    return status;
}

/* *x [ci, H, W] → [co, H, W]: norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus the input
 * (through the 1×1 shortcut when ci ≠ co). Replaces *x. */
static moire_status resnet(const vae_run *r, const vae_resnet *b, float **x, int H, int W)
{
    const int ci = b->conv1.ci, co = b->conv1.co;
    const size_t HW = (size_t)H * W, widest = (size_t)(ci > co ? ci : co) * HW;
    moire_status status = MOIRE_OK;
    float *h = alloc_floats(r, widest, &status), *t = alloc_floats(r, (size_t)co * HW, &status);
    float *out = alloc_floats(r, (size_t)co * HW, &status);
    if (status == MOIRE_OK)
        status = group_norm(r, &b->norm1, *x, ci, HW, true, h);
    if (status == MOIRE_OK)
        status = conv2d(r, &b->conv1, h, H, W, 1, t);
    if (status == MOIRE_OK)
        status = group_norm(r, &b->norm2, t, co, HW, true, h);
    if (status == MOIRE_OK)
        status = conv2d(r, &b->conv2, h, H, W, 1, out);
    if (status == MOIRE_OK && b->shortcut.weight) {
        status = conv2d(r, &b->shortcut, *x, H, W, 1, t);
        if (status == MOIRE_OK)
            status = r->ops->add(r->ops, out, out, t, (int64_t)co * HW);
    } else if (status == MOIRE_OK) {
        status = r->ops->add(r->ops, out, out, *x, (int64_t)co * HW);
    }
    release(r, h), release(r, t);
    if (status != MOIRE_OK) {
        release(r, out);
        return status;
    }
    release(r, *x);
    *x = out;
    return check_cancel(r);
}

/* x[C, T] += proj(softmax(q kᵀ / √C) v) with q, k, v = 1×1 projections of GroupNorm(x):
 * one head over the T = H·W positions, as the backend's attention over [T, C] rows. */
static moire_status attention(const vae_run *r, const vae_attention *a, float *x, int C, int T)
{
    const size_t CT = (size_t)C * T;
    const moire_ops *ops = r->ops;
    moire_status status = MOIRE_OK;
    float *h = alloc_floats(r, CT, &status), *q = alloc_floats(r, CT, &status);
    float *k = alloc_floats(r, CT, &status), *v = alloc_floats(r, CT, &status);
    float *qkv_t = alloc_floats(r, 3 * CT, &status), *o = alloc_floats(r, CT, &status);
    if (status == MOIRE_OK)
        status = group_norm(r, &a->norm, x, C, (size_t)T, false, h);
    const vae_conv *proj[3] = {&a->q, &a->k, &a->v};
    float *dst[3] = {q, k, v};
    for (int i = 0; i < 3 && status == MOIRE_OK; i++)
        status = conv2d(r, proj[i], h, 1, T, 1, dst[i]);
    /* qkv_t[3][T, C] = qᵀ, kᵀ, vᵀ: attention wants token rows */
    for (int i = 0; i < 3 && status == MOIRE_OK; i++)
        status = ops->transpose(ops, qkv_t + i * CT, dst[i], C, T);
    if (status == MOIRE_OK)
        status = ops->cross_attention(ops, h, qkv_t, C, qkv_t + CT, qkv_t + 2 * CT, C, T, T, 1,
                                      C);
    if (status == MOIRE_OK) /* h[T, C] → o[C, T] */
        status = ops->transpose(ops, o, h, T, C);
    if (status == MOIRE_OK)
        status = conv2d(r, &a->proj, o, 1, T, 1, h);
    if (status == MOIRE_OK)
        status = ops->add(ops, x, x, h, (int64_t)CT);
    release(r, h), release(r, q), release(r, k), release(r, v), release(r, qkv_t);
    release(r, o);
    return status == MOIRE_OK ? check_cancel(r) : status;
}

static moire_status mid_block(const vae_run *r, const vae_mid *m, float **x, int C, int H,
                              int W)
{
    moire_status status = resnet(r, &m->resnet1, x, H, W);
    if (status == MOIRE_OK)
        status = attention(r, &m->attn, *x, C, H * W);
    if (status == MOIRE_OK)
        status = resnet(r, &m->resnet2, x, H, W);
    return status;
}

/* Replaces *x [C, H, W] with conv(*x) (stride 1 or 2). */
static moire_status conv_replace(const vae_run *r, const vae_conv *c, float **x, int H, int W,
                                 int stride)
{
    const size_t out_plane = stride == 1 ? (size_t)H * W : (size_t)(H / 2) * (W / 2);
    moire_status status = MOIRE_OK;
    float *out = alloc_floats(r, (size_t)c->co * out_plane, &status);
    if (out)
        status = conv2d(r, c, *x, H, W, stride, out);
    if (status != MOIRE_OK) {
        release(r, out);
        return status;
    }
    release(r, *x);
    *x = out;
    return MOIRE_OK;
}

static moire_status run_init(vae_run *r, moire_ctx *ctx, const moire_vae *vae,
                             bool emit_tensors)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->ops = &ctx->ops;
    r->groups = vae->info.norm_num_groups;
    r->emit = emit_tensors;
    moire_status status = vae_bind(ctx, vae, &r->bound);
    r->stats = alloc_floats(r, (size_t)2 * r->groups, &status);
    return status;
}

static void run_done(vae_run *r)
{
    release(r, r->stats);
    r->stats = NULL;
}

/* The decoder up to its mid block, at latent resolution: latent [z, h, w] (host, model space)
 * → *out [top, h, w] (backend, owned by the caller). */
static moire_status decode_mid(const vae_run *r, const moire_vae *vae, int h, int w,
                               const float *latent, float **out)
{
    const moire_vae_info *info = &vae->info;
    const vae_coder *d = &vae->decoder;
    const int z = info->latent_channels, top = info->block_out_channels[info->levels - 1];
    const size_t count = (size_t)z * h * w;
    moire_status status = MOIRE_OK;
    float *x = alloc_floats(r, count, &status);
    if (!x)
        return status;
    status = r->ops->upload(r->ops, x, latent, count * sizeof(float));
    if (status == MOIRE_OK)
        status = r->ops->scale(r->ops, x, x, 1.0f / info->scaling_factor, (int64_t)count);
    if (status == MOIRE_OK)
        status = conv_replace(r, &vae->post_quant_conv, &x, h, w, 1);
    if (status == MOIRE_OK)
        status = conv_replace(r, &d->conv_in, &x, h, w, 1);
    if (status == MOIRE_OK)
        status = mid_block(r, &d->mid, &x, top, h, w);
    if (status != MOIRE_OK) {
        release(r, x);
        return status;
    }
    emit(r, "vae.decoder.mid_out", -1, x, top, h, w);
    *out = x;
    return MOIRE_OK;
}

/* The rest of the decoder: x [top, h, w] (backend, freed here) → rgb [image_channels, f·h,
 * f·w] (host). */
static moire_status decode_up(const vae_run *r, const moire_vae *vae, int h, int w, float *x,
                              float *rgb)
{
    const moire_vae_info *info = &vae->info;
    const vae_coder *d = &vae->decoder;
    int H = h, W = w, C = info->block_out_channels[info->levels - 1];
    moire_status status = MOIRE_OK;
    for (int i = 0; i < info->levels && status == MOIRE_OK; i++) {
        const vae_level *level = &d->levels[i];
        for (int j = 0; j < level->resnet_count && status == MOIRE_OK; j++)
            status = resnet(r, &level->resnets[j], &x, H, W);
        C = level->resnets[level->resnet_count - 1].conv1.co;
        if (status == MOIRE_OK && level->resample.weight) {
            /* nearest-neighbour ×2, then a 3×3 conv */
            float *up = alloc_floats(r, (size_t)C * 4 * H * W, &status);
            if (up)
                status = r->ops->upsample_nearest2x(r->ops, up, x, C, H, W);
            if (status == MOIRE_OK) {
                release(r, x);
                x = up;
                H *= 2, W *= 2;
                status = conv_replace(r, &level->resample, &x, H, W, 1);
            } else {
                release(r, up);
            }
        }
        if (status == MOIRE_OK)
            emit(r, "vae.decoder.up_out", i, x, C, H, W);
    }
    const int out_channels = info->image_channels;
    float *rgb_dev = alloc_floats(r, (size_t)out_channels * H * W, &status);
    if (status == MOIRE_OK)
        status = group_norm(r, &d->norm_out, x, C, (size_t)H * W, true, x);
    if (status == MOIRE_OK)
        status = conv2d(r, &d->conv_out, x, H, W, 1, rgb_dev);
    if (status == MOIRE_OK)
        status = r->ops->download(r->ops, rgb, rgb_dev,
                                  (size_t)out_channels * H * W * sizeof(float));
    release(r, x), release(r, rgb_dev);
    return status;
}

/* latent [z, h, w] → rgb [image_channels, f·h, f·w], one image, no tiling (host arrays). */
static moire_status decode_one(const vae_run *r, const moire_vae *vae, int h, int w,
                               const float *latent, float *rgb)
{
    float *x = NULL;
    moire_status status = decode_mid(r, vae, h, w, latent, &x);
    return status == MOIRE_OK ? decode_up(r, vae, h, w, x, rgb) : status;
}

/* Tile origins along one axis of n latent pixels: tiles of `size` (≤ n), evenly spread with
 * at least `overlap` shared pixels between neighbours, the first at 0 and the last at n − size. */
static int tile_origins(int n, int size, int overlap, int *origins, int max_count)
{
    if (n <= size) {
        origins[0] = 0;
        return 1;
    }
    const int step = size - overlap;
    int count = (n - overlap + step - 1) / step;
    count = count < 2 ? 2 : (count > max_count ? max_count : count);
    for (int i = 0; i < count; i++)
        origins[i] = (int)((int64_t)i * (n - size) / (count - 1));
    return count;
}

/* Where each tile's own pixels begin along one axis: cuts[i] for tile i (cuts[0] = 0,
 * cuts[count] = n), in the middle of the overlap with the previous tile, so a tile owns the
 * pixels at least overlap/2 away from its neighbours' edges, and the cores partition the axis. */
static void tile_cuts(const int *origins, int count, int size, int n, int *cuts)
{
    cuts[0] = 0;
    for (int i = 1; i < count; i++)
        cuts[i] = (origins[i] + origins[i - 1] + size) / 2;
    cuts[count] = n;
}

/* The GroupNorms of the decoder's up path, in execution order: two per ResNet, plus norm_out. */
static int up_path_norms(const moire_vae *vae)
{
    int count = 1;
    for (int i = 0; i < vae->info.levels; i++)
        count += 2 * vae->decoder.levels[i].resnet_count;
    return count;
}

/* One pass over the tiles of mid [top, h, w] (backend): the up path of each, with t->target
 * set. A gathering pass (target ≥ 0) stops each tile at the target GroupNorm; the final pass
 * (target −1) writes each tile's core of the image into rgb [image_channels, f·h, f·w]. */
static moire_status tiles_pass(vae_run *r, const moire_vae *vae, int h, int w, const float *mid,
                               const int *ys, const int *cut_y, int ny, const int *xs,
                               const int *cut_x, int nx, float *tile_rgb, float *rgb)
{
    vae_tiled_norms *t = r->tiled;
    const int f = vae->info.downscale, top = vae->info.block_out_channels[vae->info.levels - 1];
    const int th = t->tile_h, tw = t->tile_w;
    const size_t plane = (size_t)f * h * f * w, tile_plane = (size_t)f * th * f * tw;
    moire_status status = MOIRE_OK;
    for (int ty = 0; ty < ny && status == MOIRE_OK; ty++)
        for (int tx = 0; tx < nx && status == MOIRE_OK; tx++) {
            t->seen = 0;
            t->core[0] = cut_y[ty] - ys[ty], t->core[1] = cut_y[ty + 1] - ys[ty];
            t->core[2] = cut_x[tx] - xs[tx], t->core[3] = cut_x[tx + 1] - xs[tx];
            float *tile_in = alloc_floats(r, (size_t)top * th * tw, &status);
            for (int c = 0; c < top && status == MOIRE_OK; c++)
                status = r->ops->copy_2d(r->ops, tile_in + (size_t)c * th * tw, tw,
                                         mid + ((size_t)c * h + ys[ty]) * w + xs[tx], w, th, tw);
            if (status != MOIRE_OK) {
                release(r, tile_in);
                break;
            }
            status = decode_up(r, vae, th, tw, tile_in, tile_rgb); /* frees tile_in */
            if (t->target >= 0) {
                if (status == VAE_GATHERED)
                    status = MOIRE_OK;
                else if (status == MOIRE_OK) /* cannot happen: the up path has the target */
                    status = error_fail(MOIRE_ERROR_BACKEND, "tiled VAE: GroupNorm %d not met",
                                        t->target);
                continue;
            }
            if (status != MOIRE_OK)
                break;
            const int W = f * w, TW = f * tw;
            for (int c = 0; c < vae->info.image_channels; c++)
                for (int y = f * t->core[0]; y < f * t->core[1]; y++)
                    memcpy(rgb + c * plane + (size_t)(f * ys[ty] + y) * W + f * cut_x[tx],
                           tile_rgb + c * tile_plane + (size_t)y * TW + f * t->core[2],
                           (size_t)f * (t->core[3] - t->core[2]) * sizeof(float));
        }
    return status;
}

/* Turns the merged partial sums of GroupNorm `index` into its whole-image mean and 1/σ. */
static void finish_norm_stats(vae_tiled_norms *t, int groups, int index)
{
    float *known = t->known + (size_t)2 * groups * index;
    for (int g = 0; g < groups; g++) {
        const double *p = t->partial + 3 * g;
        known[2 * g] = (float)p[1];
        known[2 * g + 1] = (float)(1.0 / sqrt(p[2] / p[0] + VAE_GN_EPS));
    }
}

moire_status vae_decode_image(moire_ctx *ctx, const moire_vae *vae, int h, int w,
                              const float *latent, float *rgb, int tile, int overlap)
{
    vae_run r;
    moire_status status = run_init(&r, ctx, vae, true);
    if (status != MOIRE_OK) {
        run_done(&r);
        return status;
    }
    if (tile <= 0 || (h <= tile && w <= tile)) {
        status = decode_one(&r, vae, h, w, latent, rgb);
        run_done(&r);
        return status;
    }
    /* The mid block (with the only attention) runs once on the whole latent: it is cheap at
     * latent resolution and keeps the global attention exact. Only the up path is tiled, and
     * its GroupNorms use the whole image's statistics, gathered over the tiles one GroupNorm
     * at a time (vae_tiled_norms). Each output pixel comes from the one tile that owns it. */
    float *mid = NULL;
    status = decode_mid(&r, vae, h, w, latent, &mid);
    if (status != MOIRE_OK) {
        run_done(&r);
        return status;
    }
    r.emit = false;
    const int f = vae->info.downscale, norms = up_path_norms(vae);
    const int th = h < tile ? h : tile, tw = w < tile ? w : tile;
    int ys[VAE_MAX_SIDE], xs[VAE_MAX_SIDE], cut_y[VAE_MAX_SIDE + 1], cut_x[VAE_MAX_SIDE + 1];
    const int ny = tile_origins(h, th, overlap, ys, VAE_MAX_SIDE);
    const int nx = tile_origins(w, tw, overlap, xs, VAE_MAX_SIDE);
    tile_cuts(ys, ny, th, h, cut_y);
    tile_cuts(xs, nx, tw, w, cut_x);
    vae_tiled_norms t = {.tile_h = th, .tile_w = tw};
    t.known = malloc_array((size_t)2 * r.groups * norms, sizeof(float));
    t.partial = malloc_array((size_t)3 * r.groups, sizeof(double));
    t.host_stats = malloc_array((size_t)2 * r.groups, sizeof(float));
    float *tile_rgb = malloc_array((size_t)vae->info.image_channels * f * th * f * tw,
                                   sizeof(float));
    if (!t.known || !t.partial || !t.host_stats || !tile_rgb)
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the VAE tiles");
    r.tiled = &t;
    for (int target = 0; target <= norms && status == MOIRE_OK; target++) {
        t.target = target < norms ? target : -1;
        memset(t.partial, 0, (size_t)3 * r.groups * sizeof(double));
        status = tiles_pass(&r, vae, h, w, mid, ys, cut_y, ny, xs, cut_x, nx, tile_rgb, rgb);
        if (status == MOIRE_OK && target < norms)
            finish_norm_stats(&t, r.groups, target);
    }
    r.tiled = NULL;
    release(&r, mid);
    free(t.known), free(t.partial), free(t.host_stats), free(tile_rgb);
    run_done(&r);
    return status;
}

moire_status vae_encode_image(moire_ctx *ctx, const moire_vae *vae, int height, int width,
                              const float *rgb, float *latent)
{
    const moire_vae_info *info = &vae->info;
    if (!info->has_encoder)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s holds only the VAE decoder; encoding an image (img2img) needs "
                          "the full VAE: use the complete diffusion_pytorch_model.safetensors "
                          "of sd-vae-ft-mse", vae->path);
    vae_run r;
    moire_status status = run_init(&r, ctx, vae, true);
    const vae_coder *e = &vae->encoder;
    const int z = info->latent_channels;
    int H = height, W = width, C = info->image_channels;
    float *x = alloc_floats(&r, (size_t)C * H * W, &status);
    if (status == MOIRE_OK)
        status = r.ops->upload(r.ops, x, rgb, (size_t)C * H * W * sizeof(float));
    if (status == MOIRE_OK)
        status = conv_replace(&r, &e->conv_in, &x, H, W, 1);
    for (int i = 0; i < info->levels && status == MOIRE_OK; i++) {
        const vae_level *level = &e->levels[i];
        for (int j = 0; j < level->resnet_count && status == MOIRE_OK; j++)
            status = resnet(&r, &level->resnets[j], &x, H, W);
        if (status == MOIRE_OK && level->resample.weight) {
            status = conv_replace(&r, &level->resample, &x, H, W, 2);
            H /= 2, W /= 2;
        }
    }
    C = info->block_out_channels[info->levels - 1];
    if (status == MOIRE_OK)
        status = mid_block(&r, &e->mid, &x, C, H, W);
    if (status == MOIRE_OK) {
        emit(&r, "vae.encoder.mid_out", -1, x, C, H, W);
        status = group_norm(&r, &e->norm_out, x, C, (size_t)H * W, true, x);
    }
    if (status == MOIRE_OK)
        status = conv_replace(&r, &e->conv_out, &x, H, W, 1);
    if (status == MOIRE_OK)
        status = conv_replace(&r, &vae->quant_conv, &x, H, W, 1);
    /* moments = mean (first z channels), log-variance; img2img uses the mean */
    const size_t count = (size_t)z * H * W;
    if (status == MOIRE_OK)
        status = r.ops->scale(r.ops, x, x, info->scaling_factor, (int64_t)count);
    if (status == MOIRE_OK)
        status = r.ops->download(r.ops, latent, x, count * sizeof(float));
    release(&r, x);
    run_done(&r);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Public entry points: argument checks, batches
 * ---------------------------------------------------------------------------------------- */

moire_status moire_vae_decode_tiled(moire_ctx *ctx, const moire_vae *vae, int n, int h, int w,
                                    int tile, int overlap, const float *latents, float *rgb)
{
    if (!ctx || !vae || !latents || !rgb)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_vae_decode: a required pointer is NULL");
    if (n < 1 || n > 4096)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch size %d is out of range (1..4096)", n);
    if (h < 1 || w < 1 || h > VAE_MAX_SIDE || w > VAE_MAX_SIDE)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "latent size %dx%d is out of range (1..%d per side)", w, h,
                          VAE_MAX_SIDE);
    if (tile < 0 || (tile > 0 && (overlap < 0 || overlap >= tile)))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "VAE tile %d with overlap %d: use tile > overlap >= 0 (tile 0 = no "
                          "tiling)", tile, overlap);
    atomic_store(&ctx->cancel_requested, 0);
    const moire_vae_info *info = &vae->info;
    const size_t in = (size_t)info->latent_channels * h * w;
    const size_t out = (size_t)info->image_channels * info->downscale * h * info->downscale * w;
    for (int i = 0; i < n; i++) {
        moire_status status =
            vae_decode_image(ctx, vae, h, w, latents + i * in, rgb + i * out, tile, overlap);
        if (status != MOIRE_OK)
            return status;
    }
    return MOIRE_OK;
}

moire_status moire_vae_decode(moire_ctx *ctx, const moire_vae *vae, int n, int h, int w,
                              const float *latents, float *rgb)
{
    return moire_vae_decode_tiled(ctx, vae, n, h, w, MOIRE_VAE_TILE, MOIRE_VAE_TILE_OVERLAP,
                                  latents, rgb);
}

moire_status moire_vae_encode(moire_ctx *ctx, const moire_vae *vae, int n, int height, int width,
                              const float *rgb, float *latents)
{
    if (!ctx || !vae || !rgb || !latents)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_vae_encode: a required pointer is NULL");
    const int f = vae->info.downscale;
    if (n < 1 || n > 4096)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch size %d is out of range (1..4096)", n);
    if (height < f || width < f || height > f * VAE_MAX_SIDE || width > f * VAE_MAX_SIDE ||
        height % f || width % f)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "image size %dx%d cannot be encoded: use multiples of %d up to %d "
                          "pixels per side", width, height, f, f * VAE_MAX_SIDE);
    atomic_store(&ctx->cancel_requested, 0);
    const size_t in = (size_t)vae->info.image_channels * height * width;
    const size_t out = (size_t)vae->info.latent_channels * (height / f) * (width / f);
    for (int i = 0; i < n; i++) {
        moire_status status = vae_encode_image(ctx, vae, height, width, rgb + i * in,
                                               latents + i * out);
        if (status != MOIRE_OK)
            return status;
    }
    return MOIRE_OK;
}
