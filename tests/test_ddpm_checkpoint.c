/* test_ddpm_checkpoint.c — the training checkpoint that tools/train/train_ditmoe_ddpm.py
 * writes (exactly train.py's torch.save({"model", "ema", "opt", "args"}) of the official
 * DiT-MoE code) loads as it is: the pickle's optimiser state (int-keyed dicts, 0-dim step
 * tensors, betas tuples, None) and its argparse.Namespace are read as inert data, the EMA
 * weights are the ones used, the geometry is inferred from the shapes (released S/B layout),
 * and the forward pass is bit-identical to the trainer's fp32 safetensors export of the same
 * EMA. The export itself (pixel space, 147 emoji classes, learned σ) samples with the ddpm and
 * dmcmc samplers and resolves "red apple" by name.
 *
 * Fixture: tests/fixtures/ddpm/tiny.{pt,safetensors,train.json}, 3 steps of the trainer's
 * "tiny" configuration at a large learning rate, so that "model" and "ema" differ (the
 * command is in tiny.train.json). */
#include "internal.h"
#include "model.h"
#include "pt_reader.h"
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 2
#define S 32

static const char *fixture(const char *name)
{
    static char buffer[600];
    snprintf(buffer, sizeof buffer, "%s/%s", test_data_path("fixtures/ddpm"), name);
    return buffer;
}

static moire_model *load(const char *path)
{
    moire_model *model = NULL;
    moire_status status = moire_model_load(path, &model);
    CHECK(status == MOIRE_OK, "load %s: %s", path, moire_last_error());
    return model;
}

/* One forward pass of N images with fixed inputs into out [N, Co, S, S]. */
static bool run_forward(moire_ctx *ctx, const moire_model *model, float *out)
{
    const moire_model_config *c = moire_model_get_config(model);
    float x[N * 4 * S * S];
    test_fill_random(x, N * c->in_channels * S * S, 77, -1.5f, 1.5f);
    float t[N] = {600.0f, 15.0f};
    int32_t classes[N] = {3, c->num_classes}; /* a class and the CFG null class */
    moire_status status = moire_forward(ctx, model, N, S, S, x, t, classes, out);
    CHECK(status == MOIRE_OK, "forward %s: %s", moire_model_name(model), moire_last_error());
    return status == MOIRE_OK;
}

/* The .pt against the safetensors export: wrapper, inferred geometry, bits. */
static void check_checkpoint(moire_ctx *ctx)
{
    st_file *file = NULL;
    pt_info info;
    moire_status status = pt_open(fixture("tiny.pt"), &file, &info);
    CHECK(status == MOIRE_OK, "pt_open: %s", moire_last_error());
    if (status != MOIRE_OK)
        return;
    CHECK(strcmp(info.wrapper, "ema") == 0, "unwrapped '%s', expected the EMA", info.wrapper);
    CHECK(!info.stripped_prefix, "no module. prefix in a single-process checkpoint");
    st_close(file);

    moire_model *pt = load(fixture("tiny.pt"));
    moire_model *st = load(fixture("tiny.safetensors"));
    if (!pt || !st)
        goto done;
    const moire_model_config *a = moire_model_get_config(pt), *b = moire_model_get_config(st);
    /* inferred from the shapes alone (no metadata in a .pt) … */
    CHECK(a->attention_layout == MOIRE_ATTENTION_QKV && a->objective == MOIRE_OBJECTIVE_DDPM_EPS,
          "released S/B family: layout %d objective %d", a->attention_layout, a->objective);
    CHECK(a->depth == 1 && a->hidden_size == 64 && a->num_heads == 1 && a->patch_size == 4 &&
              a->num_experts == 4 && a->top_k == 2 && a->expert_hidden == 16 &&
              a->shared_expert_hidden == 16 && a->num_classes == 147 && a->learn_sigma &&
              a->in_channels == 4 && a->out_channels == 8 && a->input_size == 32,
          "inferred geometry: depth %d D %d heads %d p %d E %d F %d S %d K %d", a->depth,
          a->hidden_size, a->num_heads, a->patch_size, a->num_experts, a->expert_hidden,
          a->shared_expert_hidden, a->num_classes);
    /* … equals what the export's moire.config says, except the space, which a bare .pt
     * cannot tell (the released ones are latent; ours is pixel) */
    moire_model_config same = *a;
    same.space = b->space;
    char *ja = dit_config_to_json(&same), *jb = dit_config_to_json(b);
    CHECK(ja && jb && strcmp(ja, jb) == 0, "configs differ:\n  %s\n  %s", ja, jb);
    free(ja);
    free(jb);
    CHECK(b->space == MOIRE_SPACE_PIXEL, "the export is a pixel-space model");
    CHECK(moire_model_parameter_count(pt) == moire_model_parameter_count(st), "parameter count");

    float *ya = calloc((size_t)N * 8 * S * S, sizeof(float));
    float *yb = calloc((size_t)N * 8 * S * S, sizeof(float));
    if (ya && yb && run_forward(ctx, pt, ya) && run_forward(ctx, st, yb)) {
        bool identical = memcmp(ya, yb, (size_t)N * 8 * S * S * sizeof(float)) == 0;
        CHECK(identical, "the .pt's forward differs from the EMA export (max |d| %g)",
              test_max_abs_diff(ya, yb, (int64_t)N * 8 * S * S));
        printf("%s tiny.pt: train.py checkpoint (model, ema, opt, args), EMA weights used, "
               "forward bit-identical to the safetensors export\n", identical ? "OK" : "NOT OK");
    }
    free(ya);
    free(yb);
done:
    moire_model_free(pt);
    moire_model_free(st);
}

/* The export samples: prompt by name, ddpm and dmcmc, finite RGBA images of 32×32. */
static void check_sampling(moire_ctx *ctx)
{
    moire_model *model = load(fixture("tiny.safetensors"));
    if (!model)
        return;
    int id = -1;
    CHECK(moire_model_resolve_class(model, "red apple", &id) == MOIRE_OK && id >= 0 &&
              strcmp(moire_model_class_name(model, id), "red apple") == 0,
          "\"red apple\" → %d: %s", id, moire_last_error());
    moire_sampler sampler;
    int steps;
    float cfg;
    moire_model_get_defaults(model, &sampler, &steps, &cfg);
    CHECK(sampler == MOIRE_SAMPLER_DDPM && steps == 250 && cfg == 4.0f,
          "defaults written by the trainer: %s %d %g", moire_sampler_name(sampler), steps,
          (double)cfg);

    const moire_sampler samplers[] = {MOIRE_SAMPLER_DDPM, MOIRE_SAMPLER_DMCMC};
    for (int i = 0; i < 2; i++) {
        moire_generate_params p = moire_generate_params_default();
        p.prompt = "red apple";
        p.sampler = samplers[i];
        p.steps = samplers[i] == MOIRE_SAMPLER_DDPM ? 6 : 3;
        moire_dmcmc_params d = moire_dmcmc_params_default();
        d.burn_in_steps = 4;
        d.burn_in = 2;
        p.dmcmc = &d;
        moire_image **images = NULL;
        int count = 0;
        moire_status status = moire_generate(ctx, model, &p, NULL, &images, &count);
        CHECK(status == MOIRE_OK && count == 1, "generate with %s: %s",
              moire_sampler_name(samplers[i]), moire_last_error());
        if (status == MOIRE_OK && count == 1) {
            const moire_image *img = images[0];
            CHECK(img->width == 32 && img->height == 32 && img->channels == 4,
                  "%s: %dx%dx%d image", moire_sampler_name(samplers[i]), img->width,
                  img->height, img->channels);
            printf("OK generate %s: 32×32 RGBA\n", moire_sampler_name(samplers[i]));
        }
        moire_images_free(images, count);
    }
    moire_model_free(model);
}

int main(void)
{
    moire_ctx_params params = moire_ctx_params_default();
    params.device = MOIRE_DEVICE_CPU;
    params.n_threads = 2;
    moire_ctx *ctx = NULL;
    if (moire_ctx_new(&params, &ctx) != MOIRE_OK) {
        fprintf(stderr, "context: %s\n", moire_last_error());
        return 1;
    }
    check_checkpoint(ctx);
    check_sampling(ctx);
    moire_ctx_free(ctx);
    return test_finish("ddpm_checkpoint");
}
