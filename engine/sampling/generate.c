/* generate.c — moire_generate(): from a prompt and settings to finished 8-bit images.
 *
 * It resolves defaults against the model, turns the prompt into conditioning, wraps the
 * forward pass as the classifier-free-guided model function the samplers call (conditional
 * and unconditional halves in one batched forward), converts init images and masks into
 * model space, reports progress and previews, and converts the samples into images.
 *
 * Latent-space models (DiT-MoE's SD-VAE latents) are decoded with the SD-VAE when
 * params->vae is set (vae.c; init images are encoded with it). Without one, and for per-step
 * previews, a fixed linear latent→RGB map is used; it gives recognisable colours and layout
 * but not the real detail, and moire_generate logs a warning saying so.
 *
 * Split by job: this file resolves the parameters, runs the sampler over chunks and opens
 * the DMCMC chains; generate_image.c converts between images and model space;
 * generate_stream.c is the public stream API. generate_parts.h is what they share.
 */
#include "context.h"
#include "dmcmc.h"
#include "ecdit.h"
#include "generate.h"
#include "generate_parts.h"
#include "internal.h"
#include "memory_estimate.h"
#include "model.h"
#include "routing_map.h"
#include "sampler.h"
#include "vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Images are made in chunks of this many so memory stays bounded for big batches. */
#define GENERATE_CHUNK 8
#define GENERATE_MAX_BATCH 1000
#define GENERATE_MAX_SIDE 8192
/* Latent-space models work on SD-VAE latents, 8 pixels per latent pixel. */
#define LATENT_DOWNSCALE 8

moire_generate_params moire_generate_params_default(void)
{
    moire_generate_params params;
    memset(&params, 0, sizeof params);
    params.class_id = -1;
    params.seed = 42;
    params.steps = 0;
    params.cfg_scale = -1.0f;
    params.cfg_mode = MOIRE_CFG_DEFAULT;
    params.sampler = MOIRE_SAMPLER_DEFAULT;
    params.schedule = MOIRE_SCHEDULE_DEFAULT;
    params.batch_count = 1;
    params.strength = 0.75f;
    return params;
}

static int scale_of(const moire_model *model)
{
    return model->config.space == MOIRE_SPACE_LATENT ? LATENT_DOWNSCALE : 1;
}

moire_status generate_resolve_params(const moire_model *model, const moire_generate_params *params,
                                     moire_resolved_params *out)
{
    const moire_model_config *cfg = &model->config;
    memset(out, 0, sizeof *out);

    moire_sampler default_sampler;
    int default_steps;
    float default_cfg;
    moire_model_get_defaults(model, &default_sampler, &default_steps, &default_cfg);
    out->sampler = params->sampler == MOIRE_SAMPLER_DEFAULT ? default_sampler : params->sampler;
    if ((int)out->sampler < 0 || out->sampler >= MOIRE_SAMPLER_COUNT_)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown sampler %d", (int)out->sampler);
    out->schedule = params->schedule == MOIRE_SCHEDULE_DEFAULT ? MOIRE_SCHEDULE_UNIFORM
                                                               : params->schedule;
    if ((int)out->schedule < 0 || out->schedule >= MOIRE_SCHEDULE_COUNT_)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown schedule %d", (int)out->schedule);
    out->steps = params->steps > 0 ? params->steps : default_steps;
    if (params->steps < 0 || out->steps > 10000)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "steps %d is out of range: use 1..10000 (0 = the model default, %d)",
                          params->steps, default_steps);
    if (out->sampler == MOIRE_SAMPLER_DMCMC) /* its steps are the integrator's */
        out->steps = params->dmcmc ? params->dmcmc->integrator_steps
                                   : moire_dmcmc_params_default().integrator_steps;
    out->cfg_scale = params->cfg_scale < 0.0f ? default_cfg : params->cfg_scale;
    if (!isfinite(params->cfg_scale) || out->cfg_scale > 100.0f)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CFG scale %g is out of range: use 0..100 (1 = no guidance)",
                          (double)params->cfg_scale);

    out->cfg_mode = params->cfg_mode;
    if (out->cfg_mode == MOIRE_CFG_DEFAULT)
        out->cfg_mode = cfg->objective == MOIRE_OBJECTIVE_DDPM_EPS ? MOIRE_CFG_FIRST_THREE
                                                                   : MOIRE_CFG_ALL_CHANNELS;
    if (out->cfg_mode != MOIRE_CFG_FIRST_THREE && out->cfg_mode != MOIRE_CFG_ALL_CHANNELS)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown CFG mode %d", (int)params->cfg_mode);
    out->guided_channels = out->cfg_mode == MOIRE_CFG_FIRST_THREE && cfg->in_channels > 3
                               ? 3
                               : cfg->in_channels;

    /* Conditioning. Text models (EC-DiT) take the prompt and the negative prompt as they are
       (run_chunk encodes them; the empty prompt is the unconditional one); class models
       resolve them to class ids. */
    if (model->family == MOIRE_FAMILY_EC_DIT) {
        if (params->class_id >= 0)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "model %s is text-conditioned: give a prompt, not a class number",
                              model->name);
    } else if (params->class_id >= 0) {
        if (params->class_id >= cfg->num_classes)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "class %d is out of range: this model has classes 0..%d",
                              params->class_id, cfg->num_classes - 1);
        out->class_id = params->class_id;
    } else if (params->prompt && params->prompt[0]) {
        moire_status status = moire_model_resolve_class(model, params->prompt, &out->class_id);
        if (status != MOIRE_OK)
            return status;
    } else {
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "no prompt: give a prompt (a class name of this model) or a class "
                          "number");
    }
    out->uncond_class_id = cfg->num_classes; /* the null class */
    if (model->family != MOIRE_FAMILY_EC_DIT && params->negative_prompt &&
        params->negative_prompt[0]) {
        moire_status status =
            moire_model_resolve_class(model, params->negative_prompt, &out->uncond_class_id);
        if (status != MOIRE_OK) {
            error_prefix("negative prompt");
            return status;
        }
    }

    /* Size: pixels for the user, the model grid for the sampler. */
    const int scale = scale_of(model);
    out->width = params->width > 0 ? params->width : cfg->input_size * scale;
    out->height = params->height > 0 ? params->height : cfg->input_size * scale;
    const int multiple = cfg->patch_size * scale;
    if (params->width < 0 || params->height < 0 || out->width > GENERATE_MAX_SIDE ||
        out->height > GENERATE_MAX_SIDE)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "size %dx%d is out of range: use 1..%d pixels per side", params->width,
                          params->height, GENERATE_MAX_SIDE);
    if (out->width % multiple || out->height % multiple)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "size %dx%d is not a multiple of %d: this model needs width and height "
                          "divisible by %d (e.g. %dx%d)",
                          out->width, out->height, multiple, multiple,
                          (out->width / multiple + 1) * multiple,
                          (out->height / multiple + 1) * multiple);
    out->model_w = out->width / scale;
    out->model_h = out->height / scale;

    if (params->batch_count < 1 || params->batch_count > GENERATE_MAX_BATCH)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch count %d is out of range (1..%d)",
                          params->batch_count, GENERATE_MAX_BATCH);
    if (params->mask && !params->init_image)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "a mask needs an init image (inpainting keeps the unmasked part of it)");
    if (params->init_image) {
        if (!(params->strength > 0.0f && params->strength <= 1.0f))
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "strength %g is out of range: use a value in (0, 1]",
                              (double)params->strength);
    }
    if (!(params->eta >= 0.0f && params->eta <= 1.0f))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "eta %g is out of range (0..1)",
                          (double)params->eta);
    return MOIRE_OK;
}

/* ---- the guided model function ------------------------------------------------------- */

static moire_status guided_model_call(void *user_data, const float *x_in, const float *t,
                                      float *out)
{
    guided_model *g = user_data;
    const moire_model_config *cfg = &g->model->config;
    const size_t in_size = (size_t)cfg->in_channels * g->h * g->w;
    const size_t out_size = (size_t)cfg->out_channels * g->h * g->w;
    const bool guided = g->resolved->cfg_scale != 1.0f;
    const int n = g->n, batch = guided ? 2 * n : n;

    memcpy(g->x2, x_in, n * in_size * sizeof(float));
    memcpy(g->t2, t, n * sizeof(float));
    for (int i = 0; i < n; i++)
        g->y2[i] = g->resolved->class_id;
    if (guided) {
        memcpy(g->x2 + n * in_size, x_in, n * in_size * sizeof(float));
        memcpy(g->t2 + n, t, n * sizeof(float));
        for (int i = 0; i < n; i++)
            g->y2[n + i] = g->resolved->uncond_class_id;
    }
    g->nfe++;
    if (g->ctx->routing)
        routing_recorder_count_evaluation(g->ctx->routing);
    moire_status status = g->text ? ecdit_forward(g->ctx, g->model, batch, g->h, g->w, g->x2,
                                                  g->t2, g->text, g->prompt_of, g->out2)
                                  : dit_forward(g->ctx, g->model, batch, g->h, g->w, g->x2,
                                                g->t2, g->y2, g->out2);
    if (status != MOIRE_OK)
        return status;
    /* a NaN or an infinity here (damaged weights, or finite ones so large they overflow)
       would end as a garbage image with exit status 0: stop with the model's name instead */
    status = numeric_check_finite(g->out2, (size_t)batch * out_size, g->model->name,
                                  "the model's output");
    if (status != MOIRE_OK)
        return status;

    memcpy(out, g->out2, n * out_size * sizeof(float));
    if (guided) {
        /* out = uncond + s·(cond − uncond) on the guided channels; the rest (variance, and
         * channel 3 in the official DDPM mode) come from the conditional half. */
        const float s = g->resolved->cfg_scale;
        const size_t plane = (size_t)g->h * g->w;
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < g->resolved->guided_channels; ch++) {
                float *o = out + i * out_size + ch * plane;
                const float *u = g->out2 + (n + i) * out_size + ch * plane;
                for (size_t j = 0; j < plane; j++)
                    o[j] = u[j] + s * (o[j] - u[j]);
            }
    }
    return MOIRE_OK;
}

/* The guided model on backend arrays (sampler.h's device_model): x_in [n, C, h, w], t [n]
 * and out [n, Co, h, w] live in the context's backend, and so does everything here — the
 * CFG batch, the forward and the guidance — so the sampler can record the whole step as one
 * graph. The CPU table runs the same ops on host memory, with the same numbers as
 * guided_model_call. The per-step finiteness check of guided_model_call would need a
 * download; here the finished sample is checked instead (generate_decode_result). */
static moire_status guided_model_call_on_backend(void *user_data, const float *x_in,
                                                 const float *t, float *out)
{
    guided_model *g = user_data;
    const moire_ops *ops = &g->ctx->ops;
    const moire_model_config *cfg = &g->model->config;
    const int64_t in_size = (int64_t)cfg->in_channels * g->h * g->w;
    const int64_t out_size = (int64_t)cfg->out_channels * g->h * g->w;
    const bool guided = g->resolved->cfg_scale != 1.0f;
    const int n = g->n, batch = guided ? 2 * n : n;
    moire_status status = MOIRE_OK;
    for (int half = 0; half < (guided ? 2 : 1) && status == MOIRE_OK; half++) {
        status = ops->copy_2d(ops, g->dev_x2 + half * n * in_size, 0, x_in, 0, 1, n * in_size);
        if (status == MOIRE_OK)
            status = ops->copy_2d(ops, g->dev_t2 + half * n, 0, t, 0, 1, n);
    }
    g->nfe++;
    if (status == MOIRE_OK)
        status = g->text ? ecdit_forward_on_backend(g->ctx, g->model, batch, g->h, g->w,
                                                    g->dev_x2, g->dev_t2, g->text, g->prompt_of,
                                                    g->dev_positions, g->dev_out2)
                         : dit_forward_on_backend(g->ctx, g->model, batch, g->h, g->w,
                                                  g->dev_x2, g->dev_t2, g->dev_y2,
                                                  g->dev_positions, g->dev_out2);
    /* out = uncond + s·(cond − uncond) on the guided channels, as guided_model_call */
    if (status == MOIRE_OK)
        status = ops->guidance_combine(
            ops, out, g->dev_out2, n, out_size,
            guided ? (int64_t)g->resolved->guided_channels * g->h * g->w : 0,
            g->resolved->cfg_scale);
    return status;
}

static void guided_model_release_backend(guided_model *g)
{
    if (!g->ctx)
        return;
    const moire_ops *ops = &g->ctx->ops;
    void *bufs[] = {g->dev_x2, g->dev_t2, g->dev_out2, g->dev_positions, g->dev_y2};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i])
            ops->mem_free(ops, bufs[i]);
    g->dev_x2 = g->dev_t2 = g->dev_out2 = g->dev_positions = NULL;
    g->dev_y2 = NULL;
}

/* Allocates the backend batch, uploads the class ids and the position table (once per
 * chunk; the steps then upload nothing). */
static moire_status guided_model_bind_backend(guided_model *g)
{
    const moire_ops *ops = &g->ctx->ops;
    const moire_model_config *cfg = &g->model->config;
    const size_t in_size = (size_t)cfg->in_channels * g->h * g->w;
    const size_t out_size = (size_t)cfg->out_channels * g->h * g->w;
    const size_t batch = 2 * (size_t)g->n;
    g->dev_x2 = ops->mem_alloc(ops, batch * in_size * sizeof(float));
    g->dev_t2 = g->dev_x2 ? ops->mem_alloc(ops, batch * sizeof(float)) : NULL;
    g->dev_out2 = g->dev_t2 ? ops->mem_alloc(ops, batch * out_size * sizeof(float)) : NULL;
    g->dev_y2 = g->dev_out2 ? ops->mem_alloc(ops, batch * sizeof(int32_t)) : NULL;
    const float *pos_embed = g->text ? g->model->ecdit->weights.pos_embed
                                     : g->model->weights.pos_embed;
    g->dev_positions = g->dev_y2 ? dit_positions_on_backend(ops, cfg, pos_embed, g->h, g->w)
                                 : NULL;
    moire_status status = g->dev_positions ? MOIRE_OK : MOIRE_ERROR_OUT_OF_MEMORY;
    if (status == MOIRE_OK && !g->text) {
        for (int i = 0; i < g->n; i++) {
            g->y2[i] = g->resolved->class_id;
            g->y2[g->n + i] = g->resolved->uncond_class_id;
        }
        status = ops->upload(ops, g->dev_y2, g->y2, batch * sizeof(int32_t));
    }
    if (status != MOIRE_OK)
        guided_model_release_backend(g);
    return status;
}

/* ---- the sampling run ------------------------------------------------------------------ */

typedef struct step_reporter {
    moire_ctx *ctx;
    const moire_model *model;
    const moire_callbacks *callbacks;
    const moire_resolved_params *resolved;
    int first, count, batch_count;
    int steps_done_before; /* steps of earlier chunks, for the time estimate */
    int total_steps;
    double started;
} step_reporter;

static bool on_step(void *user_data, int step, int step_count, int nfe, const float *x0)
{
    step_reporter *r = user_data;
    if (atomic_load(&r->ctx->cancel_requested))
        return false;
    const moire_callbacks *cb = r->callbacks;
    if (!cb)
        return true;
    moire_progress progress = {
        .image_index = r->first,
        .image_count = r->batch_count,
        .step = step,
        .step_count = step_count,
        .nfe = nfe,
        .elapsed_s = clock_now_seconds() - r->started,
        .remaining_s = -1.0,
    };
    const int done = r->steps_done_before + step;
    if (done > 0)
        progress.remaining_s = progress.elapsed_s / done * (r->total_steps - done);
    if (cb->preview && cb->preview_interval > 0 && x0 &&
        (step % cb->preview_interval == 0 || step == step_count)) {
        moire_image *img = generate_decode_to_image(r->model, x0, r->resolved->model_h,
                                                    r->resolved->model_w, r->resolved->width,
                                                    r->resolved->height);
        if (img) {
            cb->preview(&progress, img, cb->user_data);
            moire_image_free(img);
        }
    }
    if (cb->progress && !cb->progress(&progress, cb->user_data))
        return false;
    return !atomic_load(&r->ctx->cancel_requested);
}

static void chunk_setup_free(chunk_setup *c)
{
    guided_model_release_backend(&c->g);
    free(c->g.x2), free(c->g.t2), free(c->g.y2), free(c->g.out2), free(c->g.prompt_of);
    free(c->seeds);
    ecdit_text_cond_free(&c->text);
    memset(c, 0, sizeof *c);
}

static moire_status chunk_setup_init(moire_ctx *ctx, const moire_model *model,
                                     const moire_generate_params *params,
                                     const moire_resolved_params *resolved, int first, int count,
                                     chunk_setup *c)
{
    const moire_model_config *cfg = &model->config;
    const int h = resolved->model_h, w = resolved->model_w;
    const size_t in_size = (size_t)cfg->in_channels * h * w;
    const size_t out_size = (size_t)cfg->out_channels * h * w;
    const int batch = 2 * count;
    memset(c, 0, sizeof *c);
    guided_model *g = &c->g;
    *g = (guided_model){.ctx = ctx, .model = model, .resolved = resolved, .n = count, .h = h,
                        .w = w};
    g->x2 = malloc_array(batch * in_size, sizeof(float));
    g->t2 = malloc_array(batch, sizeof(float));
    g->y2 = malloc_array(batch, sizeof(int32_t));
    g->out2 = malloc_array(batch * out_size, sizeof(float));
    c->seeds = malloc_array(count, sizeof(uint64_t));
    if (!g->x2 || !g->t2 || !g->y2 || !g->out2 || !c->seeds) {
        chunk_setup_free(c);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "out of memory for %d image(s) of %dx%d; use a smaller batch or size",
                          count, resolved->width, resolved->height);
    }
    for (int i = 0; i < count; i++)
        c->seeds[i] = params->seed + (uint64_t)(first + i);
    if (model->family == MOIRE_FAMILY_EC_DIT) {
        /* the text does not change between steps: encode the two prompts once */
        const char *texts[2] = {params->prompt ? params->prompt : "",
                                params->negative_prompt ? params->negative_prompt : ""};
        g->prompt_of = malloc_array(batch, sizeof(int));
        moire_status status = g->prompt_of ? ecdit_text_encode(ctx, model, 2, texts, &c->text)
                                           : error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
        if (status != MOIRE_OK) {
            chunk_setup_free(c);
            return status;
        }
        for (int i = 0; i < batch; i++)
            g->prompt_of[i] = i < count ? 0 : 1;
        g->text = &c->text;
        if (first == 0 && (c->text.unknown_words || c->text.dropped_words))
            ctx_log(ctx, MOIRE_LOG_WARNING,
                    "%d word(s) of the prompts are not in the vocabulary of %s (they "
                    "count as [UNK]) and %d are past its %d-token limit (dropped)",
                          c->text.unknown_words, model->name, c->text.dropped_words,
                          model->config.text_max_tokens);
    }
    return MOIRE_OK;
}

static moire_status run_chunk(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params,
                              const moire_resolved_params *resolved, int first, int count,
                              step_reporter *reporter, float *out)
{
    const moire_model_config *cfg = &model->config;
    const int h = resolved->model_h, w = resolved->model_w;
    const size_t in_size = (size_t)cfg->in_channels * h * w;
    if (ctx->routing)
        routing_recorder_set_chunk(ctx->routing, first, count);
    chunk_setup setup;
    moire_status status = chunk_setup_init(ctx, model, params, resolved, first, count, &setup);
    if (status != MOIRE_OK)
        return status;
    float *init = params->init_image ? malloc_array(count * in_size, sizeof(float)) : NULL;
    float *mask = params->mask ? malloc_array((size_t)h * w, sizeof(float)) : NULL;
    if ((params->init_image && !init) || (params->mask && !mask)) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the init image");
        goto done;
    }
    if (init) {
        status = generate_check_vae(model, params->vae);
        if (status == MOIRE_OK)
            status = generate_encode_image(ctx, model, params->vae, params->init_image, init, h, w);
        if (status != MOIRE_OK)
            goto done;
        for (int i = 1; i < count; i++)
            memcpy(init + i * in_size, init, in_size * sizeof(float));
    }
    if (mask) {
        for (int gy = 0; gy < h; gy++)
            for (int gx = 0; gx < w; gx++)
                mask[(size_t)gy * w + gx] = generate_sample_area(params->mask, 0, gx, gy, w, h);
    }

    moire_sample_request request = {
        .config = cfg,
        .sampler = resolved->sampler,
        .schedule = resolved->schedule,
        .steps = resolved->steps,
        .eta = params->eta,
        .n = count,
        .h = h,
        .w = w,
        .seeds = setup.seeds,
        .init = init,
        .strength = params->strength,
        .mask = mask,
        .model = guided_model_call,
        .model_user_data = &setup.g,
        .on_step = reporter ? on_step : NULL,
        .on_step_user_data = reporter,
        .x0_every = -1,
    };
    const moire_callbacks *cb = reporter ? reporter->callbacks : NULL;
    if (cb && cb->preview && cb->preview_interval > 0)
        request.x0_every = cb->preview_interval; /* the previews' steps only */
    /* The step on the context's backend (device model, graphs on CUDA) unless something
     * needs the host in the middle of a forward: the routing map and the debug callback. */
    if (!ctx->routing && !ctx->debug_fn) {
        status = guided_model_bind_backend(&setup.g);
        if (status != MOIRE_OK)
            goto done;
        request.ops = &ctx->ops;
        request.device_model = guided_model_call_on_backend;
    }
    status = sampler_run(&request, out, NULL);
done:
    free(init), free(mask);
    chunk_setup_free(&setup);
    return status;
}

/* ---- DMCMC chains and streams (docs/DMCMC.md) ------------------------------------------- */

/* DMCMC progress: one "step" per model evaluation of the current phase. */
static bool stream_progress(void *user_data, int done, int total)
{
    moire_stream *st = user_data;
    if (atomic_load(&st->ctx->cancel_requested))
        return false;
    if (!st->has_callbacks || !st->callbacks.progress)
        return true;
    moire_progress progress = {
        .image_index = st->first,
        .image_count = st->params.batch_count,
        .step = done,
        .step_count = total,
        .nfe = done,
        .elapsed_s = clock_now_seconds() - st->started,
        .remaining_s = -1.0,
    };
    if (!st->callbacks.progress(&progress, st->callbacks.user_data))
        return false;
    return !atomic_load(&st->ctx->cancel_requested);
}

/* The dmcmc level hook over the model's noise-level classifier. */
static moire_status classifier_level(void *user_data, const float *states, int n, double *sigma)
{
    return moire_classifier_estimate_sigma(user_data, states, n, sigma);
}

/* The classifier the chains read their levels from (NULL: the residual estimate), for the
 * run's params->level; an error when CLASSIFIER is asked for and cannot be honoured. */
static moire_status choose_level_classifier(const moire_model *model,
                                            const moire_dmcmc_params *params,
                                            const moire_resolved_params *resolved,
                                            const moire_classifier **out)
{
    *out = NULL;
    const moire_classifier *levels = model->level_classifier;
    const int size = levels ? moire_classifier_input_size(levels) : 0;
    const bool fits = levels && resolved->model_h == size && resolved->model_w == size;
    if (params->level == MOIRE_DMCMC_LEVEL_CLASSIFIER) {
        if (!levels)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "the model %s has no noise-level classifier (MODEL-levels"
                              ".safetensors beside it): use the residual level estimate, or "
                              "train one with tools/train/train_level_classifier.py",
                              model->name);
        if (!fits)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "the noise-level classifier of %s reads %d×%d states but this "
                              "run's are %d×%d: generate at the model's size, or use the "
                              "residual level estimate", model->name, size, size,
                              resolved->model_w, resolved->model_h);
    }
    if (params->level != MOIRE_DMCMC_LEVEL_RESIDUAL && fits)
        *out = levels;
    return MOIRE_OK;
}

moire_dmcmc_level generate_resolve_dmcmc_level(const moire_model *model,
                                               const moire_dmcmc_params *params,
                                               const moire_resolved_params *resolved)
{
    if (params->level != MOIRE_DMCMC_LEVEL_AUTO)
        return params->level;
    const moire_classifier *levels = NULL;
    return choose_level_classifier(model, params, resolved, &levels) == MOIRE_OK && levels
               ? MOIRE_DMCMC_LEVEL_CLASSIFIER
               : MOIRE_DMCMC_LEVEL_RESIDUAL;
}

/* Chains for images [first, first + count): from noise, or from `source` [count, C, h, w]
 * (model space) when it is given. */
moire_status generate_stream_open(moire_ctx *ctx, const moire_model *model,
                                  const moire_generate_params *params,
                                  const moire_resolved_params *resolved,
                                  const moire_callbacks *callbacks, int first, int count,
                                  const float *source, moire_stream **out)
{
    *out = NULL;
    if (params->init_image || params->mask)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the dmcmc sampler makes new images from its chains; img2img and "
                          "inpainting need one of the other samplers (e.g. euler)");
    moire_stream *st = calloc(1, sizeof *st);
    if (!st)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a DMCMC stream");
    st->ctx = ctx;
    st->model = model;
    st->params = *params;
    st->dmcmc = params->dmcmc ? *params->dmcmc : moire_dmcmc_params_default();
    st->params.dmcmc = &st->dmcmc;
    st->resolved = *resolved;
    if (callbacks) {
        st->callbacks = *callbacks;
        st->has_callbacks = true;
    }
    st->first = first;
    st->count = count;
    st->started = clock_now_seconds();
    const moire_model_config *cfg = &model->config;
    const size_t in_size = (size_t)cfg->in_channels * resolved->model_h * resolved->model_w;
    moire_status status = chunk_setup_init(ctx, model, &st->params, &st->resolved, first, count,
                                           &st->setup);
    if (status != MOIRE_OK) {
        free(st);
        return status;
    }
    st->setup.g.resolved = &st->resolved; /* the stream's own copy outlives the caller's */
    st->samples = malloc_array(count * in_size, sizeof(float));
    if (!st->samples)
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a DMCMC stream");
    const moire_classifier *levels = NULL;
    if (status == MOIRE_OK)
        status = choose_level_classifier(model, &st->dmcmc, resolved, &levels);
    if (status == MOIRE_OK) {
        const moire_dmcmc_hooks hooks = {
            .progress = stream_progress,
            .progress_user_data = st,
            .level = levels ? classifier_level : NULL,
            /* estimate_sigma only reads the classifier: the cast drops no promise. */
            .level_user_data = (void *)levels,
        };
        status = source ? dmcmc_new_from_states(cfg, &st->dmcmc, count, resolved->model_h,
                                                resolved->model_w, st->setup.seeds, source,
                                                guided_model_call, &st->setup.g, &hooks,
                                                &st->chains)
                        : dmcmc_new_with_hooks(cfg, &st->dmcmc, count, resolved->model_h,
                                               resolved->model_w, st->setup.seeds,
                                               guided_model_call, &st->setup.g, &hooks,
                                               &st->chains);
    }
    if (status != MOIRE_OK) {
        moire_stream_free(st);
        return status;
    }
    *out = st;
    return MOIRE_OK;
}

/* One emission into st->samples. */
moire_status generate_stream_emit(moire_stream *st)
{
    st->phase++;
    return dmcmc_next(st->chains, st->samples);
}

void moire_stream_free(moire_stream *st)
{
    if (!st)
        return;
    dmcmc_free(st->chains);
    chunk_setup_free(&st->setup);
    free(st->samples);
    free(st);
}

/* moire_generate with the dmcmc sampler: fresh chains for the chunk, one emission. */
static moire_status run_chunk_dmcmc(moire_ctx *ctx, const moire_model *model,
                                    const moire_generate_params *params,
                                    const moire_resolved_params *resolved, int first, int count,
                                    const moire_callbacks *callbacks, float *out)
{
    if (ctx->routing)
        routing_recorder_set_chunk(ctx->routing, first, count);
    moire_stream *st = NULL;
    moire_status status = generate_stream_open(ctx, model, params, resolved, callbacks, first, count, NULL,
                                               &st);
    if (status == MOIRE_OK)
        status = generate_stream_emit(st);
    if (status == MOIRE_OK)
        memcpy(out, st->samples,
               (size_t)count * model->config.in_channels * resolved->model_h * resolved->model_w *
                   sizeof(float));
    moire_stream_free(st);
    return status;
}

moire_status generate_samples(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params, int first, int count,
                              const moire_callbacks *callbacks, float *out)
{
    if (!ctx || !model || !params || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "a required pointer is NULL");
    moire_resolved_params resolved;
    moire_status status = generate_resolve_params(model, params, &resolved);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    if (resolved.sampler == MOIRE_SAMPLER_DMCMC)
        return run_chunk_dmcmc(ctx, model, params, &resolved, first, count, callbacks, out);
    step_reporter reporter = {.ctx = ctx, .model = model, .callbacks = callbacks,
                              .resolved = &resolved, .first = first, .count = count,
                              .batch_count = count, .total_steps = resolved.steps,
                              .started = clock_now_seconds()};
    return run_chunk(ctx, model, params, &resolved, first, count, &reporter, out);
}

moire_status moire_generate(moire_ctx *ctx, const moire_model *model,
                            const moire_generate_params *params,
                            const moire_callbacks *callbacks, moire_image ***out_images,
                            int *out_count)
{
    if (!ctx || !model || !params || !out_images || !out_count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_generate: a required pointer is NULL");
    *out_images = NULL;
    *out_count = 0;
    moire_resolved_params resolved;
    moire_status status = generate_resolve_params(model, params, &resolved);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    status = generate_check_vae(model, params->vae);
    if (status != MOIRE_OK)
        return status;
    if (model->config.space == MOIRE_SPACE_LATENT && !params->vae)
        ctx_log(ctx, MOIRE_LOG_WARNING,
                "%s works in SD-VAE latent space; without the VAE decoder the image is an "
                "approximate colour preview of the latents",
                model->name);

    const moire_model_config *cfg = &model->config;
    const int batch = params->batch_count;
    const size_t in_size = (size_t)cfg->in_channels * resolved.model_h * resolved.model_w;
    const int chunk_max = batch < GENERATE_CHUNK ? batch : GENERATE_CHUNK;
    /* refuse a job that cannot fit before the first step (memory_estimate.c) */
    status = memory_estimate_check(ctx, model, chunk_max, resolved.width, resolved.height,
                                   resolved.model_h, resolved.model_w,
                                   resolved.cfg_scale != 1.0f, params->vae != NULL);
    if (status != MOIRE_OK)
        return status;
    float *samples = malloc_array(chunk_max * in_size, sizeof(float));
    moire_image **images = calloc((size_t)batch, sizeof *images);
    if (!samples || !images) {
        free(samples), free(images);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a batch of %d", batch);
    }
    step_reporter reporter = {.ctx = ctx, .model = model, .callbacks = callbacks,
                              .resolved = &resolved, .batch_count = batch,
                              .total_steps = resolved.steps * ((batch + chunk_max - 1) / chunk_max),
                              .started = clock_now_seconds()};
    /* The routing map (moire.h, "Routing maps"): the forward passes report to the recorder
       while it hangs on the context. */
    routing_recorder *recorder = NULL;
    if (params->routing_map) {
        *params->routing_map = NULL;
        recorder = routing_recorder_new(model, batch, resolved.model_h / cfg->patch_size,
                                        resolved.model_w / cfg->patch_size);
        if (!recorder) {
            free(samples), free(images);
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the routing map");
        }
    }
    ctx->routing = recorder;
    for (int first = 0; first < batch && status == MOIRE_OK; first += chunk_max) {
        const int count = batch - first < chunk_max ? batch - first : chunk_max;
        reporter.first = first;
        reporter.count = count;
        status = resolved.sampler == MOIRE_SAMPLER_DMCMC
                     ? run_chunk_dmcmc(ctx, model, params, &resolved, first, count, callbacks,
                                       samples)
                     : run_chunk(ctx, model, params, &resolved, first, count, &reporter, samples);
        reporter.steps_done_before += resolved.steps;
        for (int i = 0; i < count && status == MOIRE_OK; i++)
            status = generate_decode_result(ctx, model, params->vae, samples + i * in_size, &resolved,
                                            &images[first + i]);
    }
    free(samples);
    ctx->routing = NULL;
    if (recorder && status == MOIRE_OK) {
        *params->routing_map = routing_recorder_finish(recorder);
        if (!*params->routing_map)
            status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the routing map");
    } else {
        routing_recorder_free(recorder);
    }
    if (status != MOIRE_OK) {
        moire_images_free(images, batch);
        return status;
    }
    *out_images = images;
    *out_count = batch;
    return MOIRE_OK;
}

void moire_images_free(moire_image **images, int count)
{
    if (!images)
        return;
    for (int i = 0; i < count; i++)
        moire_image_free(images[i]);
    free(images);
}
