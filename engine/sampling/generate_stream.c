/* generate_stream.c — the public stream API (moire_stream_new/open/next/get_info): the
 * DMCMC chain streams (chains and variations, over generate.c's generate_stream_open) and the
 * plain new-pictures stream (one moire_generate run per round). docs/DMCMC.md.
 */
#include "context.h"
#include "dmcmc.h"
#include "generate.h"
#include "generate_parts.h"
#include "internal.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

moire_status moire_stream_new(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params,
                              const moire_callbacks *callbacks, moire_stream **out_stream)
{
    if (!ctx || !model || !params || !out_stream)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_stream_new: a required pointer is NULL");
    *out_stream = NULL;
    moire_generate_params p = *params;
    p.sampler = MOIRE_SAMPLER_DMCMC;
    moire_resolved_params resolved;
    moire_status status = generate_resolve_params(model, &p, &resolved);
    if (status == MOIRE_OK)
        status = generate_check_vae(model, p.vae);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    return generate_stream_open(ctx, model, &p, &resolved, callbacks, 0, p.batch_count, NULL, out_stream);
}

moire_stream_params moire_stream_params_default(void)
{
    moire_stream_params p = {.mode = MOIRE_STREAM_NEW_PICTURES, .source = NULL,
                             .variation_strength = 0.5f, .guard_distance = -1.0f};
    return p;
}

void moire_variation_settings(float strength, float *sigma, float *eta)
{
    const double t = fmin(fmax((double)strength, 0.0), 1.0);
    const double s = 0.05 * pow(60.0, t); /* 0.05 … 3 */
    if (sigma)
        *sigma = (float)s;
    if (eta) /* a = η/(2σ²) = strength/4; a floor keeps the step legal at strength 0 */
        *eta = (float)fmax(0.5 * t * s * s, 1e-5);
}

/* The plain new-pictures stream: remembers the most NFE any progress report gave, and
 * passes the report on. */
static bool plain_stream_progress(const moire_progress *progress, void *user_data)
{
    moire_stream *st = user_data;
    if (progress->nfe > st->progress_nfe)
        st->progress_nfe = progress->nfe;
    if (st->has_callbacks && st->callbacks.progress)
        return st->callbacks.progress(progress, st->callbacks.user_data);
    return true;
}

static void plain_stream_preview(const moire_progress *progress, const moire_image *preview,
                                 void *user_data)
{
    moire_stream *st = user_data;
    if (st->has_callbacks && st->callbacks.preview)
        st->callbacks.preview(progress, preview, st->callbacks.user_data);
}

/* One round of the plain new-pictures stream: a moire_generate run with the round's seeds. */
static moire_status plain_stream_next(moire_stream *st, moire_image ***out_images, int *out_count)
{
    moire_generate_params p = st->params;
    p.seed = st->params.seed + (uint64_t)st->rounds * (uint64_t)st->count;
    p.batch_count = st->count;
    moire_callbacks cb = {.progress = plain_stream_progress,
                          .preview = st->has_callbacks ? plain_stream_preview : NULL,
                          .preview_interval = st->has_callbacks ? st->callbacks.preview_interval : 0,
                          .user_data = st};
    st->progress_nfe = 0;
    moire_status status = moire_generate(st->ctx, st->model, &p, &cb, out_images, out_count);
    if (status != MOIRE_OK)
        return status;
    st->rounds++;
    st->plain_nfe = st->progress_nfe;
    st->plain_nfe_total += st->progress_nfe;
    return MOIRE_OK;
}

moire_status moire_stream_open(moire_ctx *ctx, const moire_model *model,
                               const moire_generate_params *params,
                               const moire_stream_params *stream_params,
                               const moire_callbacks *callbacks, moire_stream **out_stream)
{
    if (!ctx || !model || !params || !out_stream)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_stream_open: a required pointer is NULL");
    *out_stream = NULL;
    const moire_stream_params sp = stream_params ? *stream_params : moire_stream_params_default();
    if (sp.mode == MOIRE_STREAM_CHAINS)
        return moire_stream_new(ctx, model, params, callbacks, out_stream);
    if (sp.mode != MOIRE_STREAM_NEW_PICTURES && sp.mode != MOIRE_STREAM_VARIATIONS)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown stream mode %d", (int)sp.mode);
    if (params->init_image || params->mask)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "a stream makes new pictures: leave out the init image and mask (for "
                          "variations of a picture, give it as the stream's source)");
    if (!(sp.guard_distance <= 10.0f)) /* NaN too */
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "stream guard distance %g is out of range: use 0 (off) .. 10, or < 0 "
                          "for the default", (double)sp.guard_distance);
    moire_generate_params p = *params;
    moire_resolved_params resolved;
    moire_status status;

    if (sp.mode == MOIRE_STREAM_NEW_PICTURES) {
        status = generate_resolve_params(model, &p, &resolved);
        if (status != MOIRE_OK)
            return status;
        if (resolved.sampler != MOIRE_SAMPLER_DMCMC) {
            status = generate_check_vae(model, p.vae);
            if (status != MOIRE_OK)
                return status;
            moire_stream *st = calloc(1, sizeof *st);
            if (!st)
                return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a stream");
            st->ctx = ctx;
            st->model = model;
            st->params = p;
            st->params.dmcmc = NULL;
            /* each round is a run of its own: a routing map per round would leak the last */
            st->params.routing_map = NULL;
            st->resolved = resolved;
            if (callbacks) {
                st->callbacks = *callbacks;
                st->has_callbacks = true;
            }
            st->count = p.batch_count;
            st->started = clock_now_seconds();
            st->mode = sp.mode;
            *out_stream = st;
            return MOIRE_OK;
        }
    } else if (!sp.source) {
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "a variations stream needs the picture to vary (its source)");
    } else if (!(sp.variation_strength >= 0.0f && sp.variation_strength <= 1.0f)) {
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "variation strength %g is out of range: use 0..1",
                          (double)sp.variation_strength);
    }

    /* The chain modes. */
    moire_dmcmc_params dmcmc = p.dmcmc ? *p.dmcmc : moire_dmcmc_params_default();
    dmcmc.guard_distance = sp.guard_distance < 0.0f ? MOIRE_STREAM_GUARD_DEFAULT : sp.guard_distance;
    if (sp.mode == MOIRE_STREAM_VARIATIONS) {
        float sigma, eta;
        moire_variation_settings(sp.variation_strength, &sigma, &eta);
        dmcmc.eta = eta;
        dmcmc.sigma_init = sigma;
        dmcmc.sigma_low = fminf(dmcmc.sigma_low, 0.5f * sigma);
        dmcmc.sigma_high = fmaxf(dmcmc.sigma_high, 2.0f * sigma);
        dmcmc.kick_sigma = fminf(2.0f * sigma, dmcmc.sigma_high);
        dmcmc.burn_in = 0;
    }
    p.sampler = MOIRE_SAMPLER_DMCMC;
    p.dmcmc = &dmcmc;
    status = generate_resolve_params(model, &p, &resolved);
    if (status == MOIRE_OK)
        status = generate_check_vae(model, p.vae);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    float *source = NULL;
    if (sp.mode == MOIRE_STREAM_VARIATIONS) {
        const size_t in_size =
            (size_t)model->config.in_channels * resolved.model_h * resolved.model_w;
        source = malloc_array((size_t)p.batch_count * in_size, sizeof(float));
        if (!source)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the source picture");
        status = generate_encode_image(ctx, model, p.vae, sp.source, source, resolved.model_h,
                                       resolved.model_w);
        for (int i = 1; status == MOIRE_OK && i < p.batch_count; i++)
            memcpy(source + i * in_size, source, in_size * sizeof(float));
        if (status != MOIRE_OK) {
            free(source);
            return status;
        }
    }
    status = generate_stream_open(ctx, model, &p, &resolved, callbacks, 0, p.batch_count, source,
                                  out_stream);
    free(source);
    if (status == MOIRE_OK)
        (*out_stream)->mode = sp.mode;
    return status;
}

moire_status moire_stream_next(moire_stream *st, moire_image ***out_images, int *out_count)
{
    if (!st || !out_images || !out_count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_stream_next: NULL argument");
    *out_images = NULL;
    *out_count = 0;
    if (!st->chains)
        return plain_stream_next(st, out_images, out_count);
    atomic_store(&st->ctx->cancel_requested, 0);
    moire_status status = generate_stream_emit(st);
    if (status != MOIRE_OK)
        return status;
    moire_image **images = calloc((size_t)st->count, sizeof *images);
    if (!images)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    const size_t in_size = (size_t)st->model->config.in_channels * st->resolved.model_h *
                           st->resolved.model_w;
    for (int i = 0; i < st->count && status == MOIRE_OK; i++)
        status = generate_decode_result(st->ctx, st->model, st->params.vae, st->samples + i * in_size,
                                        &st->resolved, &images[i]);
    if (status != MOIRE_OK) {
        moire_images_free(images, st->count);
        return status;
    }
    if (st->has_callbacks && st->callbacks.preview) {
        moire_progress progress = {.image_index = 0, .image_count = st->count,
                                   .step = 1, .step_count = 1,
                                   .nfe = dmcmc_get_stats(st->chains)->nfe_per_sample,
                                   .elapsed_s = clock_now_seconds() - st->started,
                                   .remaining_s = 0.0};
        st->callbacks.preview(&progress, images[0], st->callbacks.user_data);
    }
    *out_images = images;
    *out_count = st->count;
    return MOIRE_OK;
}

void moire_stream_get_info(const moire_stream *st, moire_stream_info *info)
{
    memset(info, 0, sizeof *info);
    if (st && !st->chains) { /* the plain new-pictures stream: nothing is paid once */
        info->emitted = st->rounds;
        info->nfe_per_image = st->plain_nfe;
        info->nfe_total = st->plain_nfe_total;
        return;
    }
    if (!st)
        return;
    const moire_dmcmc_stats *stats = dmcmc_get_stats(st->chains);
    info->emitted = stats->emitted;
    info->nfe_per_image = stats->nfe_per_sample;
    info->nfe_one_off = stats->nfe_burn_in;
    info->nfe_reseed = stats->nfe_reseed;
    info->reseeds = stats->reseeds;
    info->mean_start_sigma = stats->mean_start_sigma;
    info->level = stats->level_classifier ? MOIRE_DMCMC_LEVEL_CLASSIFIER
                                          : MOIRE_DMCMC_LEVEL_RESIDUAL;
    info->kicks = stats->kicks;
    info->nfe_total = stats->nfe_burn_in + stats->nfe_reseed +
                      stats->emitted * stats->nfe_per_sample;
    info->chains = true;
}

