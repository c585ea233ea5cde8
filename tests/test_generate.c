/* test_generate.c — moire_generate end to end on the tiny test models: reproducibility,
 * batch seeds, progress and previews, cancel from another thread, img2img and inpainting
 * through images, and argument errors. */
#include "moire.h"
#include "test_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static moire_ctx *ctx;

static moire_model *load(const char *name)
{
    char rel[128];
    snprintf(rel, sizeof rel, "golden/%s.safetensors", name);
    moire_model *model = NULL;
    if (moire_model_load(test_data_path(rel), &model) != MOIRE_OK) {
        fprintf(stderr, "cannot load %s: %s\n", rel, moire_last_error());
        exit(1);
    }
    return model;
}

static bool same_image(const moire_image *a, const moire_image *b)
{
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           memcmp(a->pixels, b->pixels, (size_t)a->width * a->height * a->channels) == 0;
}

typedef struct counters {
    int progress_calls, preview_calls, last_step, last_count;
    int preview_width;
} counters;

static bool count_progress(const moire_progress *p, void *user)
{
    counters *c = user;
    c->progress_calls++;
    c->last_step = p->step;
    c->last_count = p->step_count;
    return true;
}

static void count_preview(const moire_progress *p, const moire_image *img, void *user)
{
    counters *c = user;
    c->preview_calls++;
    c->preview_width = img->width;
}

static void test_reproducible(const moire_model *model, const char *sampler)
{
    moire_generate_params params = moire_generate_params_default();
    params.prompt = "golden retriever";
    params.steps = 6;
    params.seed = 1234;
    params.cfg_scale = 3.0f;
    CHECK(moire_sampler_from_name(sampler, &params.sampler) == MOIRE_OK, "%s", sampler);
    moire_image **a = NULL, **b = NULL, **batch = NULL;
    int na = 0, nb = 0, nbatch = 0;
    counters c = {0};
    moire_callbacks cb = {.progress = count_progress, .preview = count_preview,
                          .preview_interval = 2, .user_data = &c};
    CHECK(moire_generate(ctx, model, &params, &cb, &a, &na) == MOIRE_OK, "%s", moire_last_error());
    CHECK(moire_generate(ctx, model, &params, NULL, &b, &nb) == MOIRE_OK, "%s", moire_last_error());
    CHECK(na == 1 && nb == 1, "counts %d %d", na, nb);
    if (na == 1 && nb == 1)
        CHECK(same_image(a[0], b[0]), "%s: same seed gave different images", sampler);
    CHECK(c.progress_calls == 6 && c.last_step == 6 && c.last_count == 6,
          "progress: %d calls, last %d/%d", c.progress_calls, c.last_step, c.last_count);
    CHECK(c.preview_calls == 3, "previews: %d", c.preview_calls);
    CHECK(a && a[0]->width == 64 && a[0]->height == 64 && a[0]->channels == 3,
          "default size: %dx%d", a ? a[0]->width : 0, a ? a[0]->height : 0);

    /* batch of 3: image i is the single run with seed + i */
    params.batch_count = 3;
    CHECK(moire_generate(ctx, model, &params, NULL, &batch, &nbatch) == MOIRE_OK, "%s",
          moire_last_error());
    if (nbatch == 3 && na == 1) {
        CHECK(same_image(batch[0], a[0]), "%s: batch image 0 differs from the single run", sampler);
        CHECK(!same_image(batch[1], a[0]), "%s: batch image 1 equals image 0", sampler);
        moire_image **single = NULL;
        int ns = 0;
        params.batch_count = 1;
        params.seed = 1236;
        CHECK(moire_generate(ctx, model, &params, NULL, &single, &ns) == MOIRE_OK, "%s",
              moire_last_error());
        if (ns == 1)
            CHECK(same_image(batch[2], single[0]), "%s: batch image 2 != seed+2 run", sampler);
        moire_images_free(single, ns);
    }
    moire_images_free(a, na);
    moire_images_free(b, nb);
    moire_images_free(batch, nbatch);
}

static void *cancel_soon(void *arg)
{
    usleep(20000);
    moire_ctx_cancel(arg);
    return NULL;
}

static void test_cancel(const moire_model *model)
{
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 2;
    params.steps = 5000; /* long enough that the cancel lands mid-run */
    params.sampler = MOIRE_SAMPLER_EULER;
    moire_image **images = NULL;
    int count = -1;
    pthread_t thread;
    pthread_create(&thread, NULL, cancel_soon, ctx);
    moire_status status = moire_generate(ctx, model, &params, NULL, &images, &count);
    pthread_join(thread, NULL);
    CHECK(status == MOIRE_ERROR_CANCELLED, "cancel: status %s", moire_status_to_string(status));
    CHECK(images == NULL && count == 0, "cancel returned output");
    /* the next call runs normally */
    params.steps = 2;
    status = moire_generate(ctx, model, &params, NULL, &images, &count);
    CHECK(status == MOIRE_OK && count == 1, "after cancel: %s", moire_last_error());
    moire_images_free(images, count);
}

static void test_img2img_and_mask(const moire_model *model)
{
    moire_image *init = moire_image_new(64, 64, 3);
    moire_image *mask = moire_image_new(64, 64, 1);
    for (int i = 0; i < 64 * 64; i++) {
        init->pixels[i * 3] = (uint8_t)(i % 251);
        init->pixels[i * 3 + 1] = 90;
        init->pixels[i * 3 + 2] = (uint8_t)(i / 64 * 4);
        mask->pixels[i] = (i % 64) < 32 ? 0 : 255; /* regenerate the right half */
    }
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 1;
    params.steps = 8;
    params.sampler = MOIRE_SAMPLER_EULER;
    params.init_image = init;
    params.strength = 0.5f;
    params.mask = mask;
    moire_image **out = NULL;
    int n = 0;
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_OK, "inpaint: %s",
          moire_last_error());
    moire_images_free(out, n);

    params.mask = NULL;
    params.strength = 1.5f;
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT,
          "strength 1.5 accepted");
    params.init_image = NULL;
    params.mask = mask;
    params.strength = 0.5f;
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT,
          "mask without init accepted");
    moire_image_free(init);
    moire_image_free(mask);
}

static void test_bad_arguments(const moire_model *model)
{
    moire_image **out = NULL;
    int n = 0;
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 1;
    params.width = 60; /* not a multiple of 16 */
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT &&
              strstr(moire_last_error(), "multiple"),
          "width 60: %s", moire_last_error());
    params = moire_generate_params_default();
    params.prompt = "qqqqzzzz";
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT,
          "unknown prompt accepted");
    params = moire_generate_params_default();
    params.class_id = 99;
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT,
          "class 99 accepted");
    params = moire_generate_params_default();
    params.class_id = 1;
    params.batch_count = 0;
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT,
          "batch 0 accepted");
    params.batch_count = 1;
    params.steps = -3;
    CHECK(moire_generate(ctx, model, &params, NULL, &out, &n) == MOIRE_ERROR_INVALID_ARGUMENT,
          "steps -3 accepted");
    moire_sampler s;
    CHECK(moire_sampler_from_name("warp-drive", &s) == MOIRE_ERROR_INVALID_ARGUMENT,
          "unknown sampler accepted");
    moire_ctx_params cp = moire_ctx_params_default();
    cp.device = MOIRE_DEVICE_CUDA;
    moire_ctx *cuda = NULL;
    CHECK(moire_ctx_new(&cp, &cuda) != MOIRE_OK && strstr(moire_last_error(), "CUDA"),
          "CUDA context in a CPU build: %s", moire_last_error());
}

/* DMCMC through moire_generate and as a stream: reproducible, new variations per round, NFE
 * reported, progress per model evaluation, cancel. */
static void test_dmcmc(const moire_model *model)
{
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 4;
    params.sampler = MOIRE_SAMPLER_DMCMC;
    params.batch_count = 2;
    moire_image **a = NULL, **b = NULL;
    int na = 0, nb = 0;
    CHECK(moire_generate(ctx, model, &params, NULL, &a, &na) == MOIRE_OK, "dmcmc: %s",
          moire_last_error());
    CHECK(moire_generate(ctx, model, &params, NULL, &b, &nb) == MOIRE_OK, "dmcmc: %s",
          moire_last_error());
    if (na == 2 && nb == 2) {
        CHECK(same_image(a[0], b[0]) && same_image(a[1], b[1]), "dmcmc not reproducible");
        CHECK(!same_image(a[0], a[1]), "dmcmc chains 0 and 1 gave the same image");
    }

    counters c = {0};
    moire_callbacks cb = {.progress = count_progress, .user_data = &c};
    moire_stream *stream = NULL;
    params.sampler = MOIRE_SAMPLER_DEFAULT; /* a stream is DMCMC whatever the sampler says */
    CHECK(moire_stream_new(ctx, model, &params, &cb, &stream) == MOIRE_OK, "stream: %s",
          moire_last_error());
    const moire_dmcmc_params defaults = moire_dmcmc_params_default();
    CHECK(c.progress_calls == defaults.burn_in_steps + 6 + defaults.burn_in,
          "burn-in progress calls %d", c.progress_calls);
    moire_image **r1 = NULL, **r2 = NULL;
    int n1 = 0, n2 = 0;
    c.progress_calls = 0;
    CHECK(stream && moire_stream_next(stream, &r1, &n1) == MOIRE_OK, "round 1: %s",
          moire_last_error());
    moire_stream_info info;
    moire_stream_get_info(stream, &info);
    CHECK(info.nfe_per_image == 10 && info.emitted == 1, "stream info: nfe %d emitted %d",
          info.nfe_per_image, info.emitted);
    CHECK(c.progress_calls >= 10, "emission progress calls %d", c.progress_calls);
    CHECK(stream && moire_stream_next(stream, &r2, &n2) == MOIRE_OK, "round 2: %s",
          moire_last_error());
    if (n1 == 2 && n2 == 2 && na == 2) {
        CHECK(same_image(r1[0], a[0]), "stream round 1 differs from moire_generate");
        CHECK(!same_image(r1[0], r2[0]), "stream round 2 repeats round 1");
    }
    moire_images_free(r1, n1);
    moire_images_free(r2, n2);
    moire_stream_free(stream);
    moire_images_free(a, na);
    moire_images_free(b, nb);

    /* img2img is not what chains do */
    moire_image *init = moire_image_new(64, 64, 3);
    memset(init->pixels, 100, 64 * 64 * 3);
    params.sampler = MOIRE_SAMPLER_DMCMC;
    params.init_image = init;
    params.strength = 0.5f;
    CHECK(moire_generate(ctx, model, &params, NULL, &a, &na) == MOIRE_ERROR_UNSUPPORTED,
          "dmcmc img2img accepted");
    moire_image_free(init);
}

int main(void)
{
    moire_ctx_params cp = moire_ctx_params_default();
    cp.device = MOIRE_DEVICE_CPU;
    if (moire_ctx_new(&cp, &ctx) != MOIRE_OK)
        return 1;
    moire_model *ddpm = load("tiny_qkv");
    moire_model *rf = load("tiny_qknorm");
    test_reproducible(ddpm, "ddpm");
    test_reproducible(ddpm, "dpm++2m");
    test_reproducible(rf, "rf-euler");
    test_reproducible(rf, "euler-a");
    test_cancel(rf);
    test_img2img_and_mask(ddpm);
    test_img2img_and_mask(rf);
    test_bad_arguments(ddpm);
    test_dmcmc(ddpm);
    test_dmcmc(rf);
    moire_model_free(ddpm);
    moire_model_free(rf);
    moire_ctx_free(ctx);
    return test_finish("generate");
}
