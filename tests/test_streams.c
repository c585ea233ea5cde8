/* test_streams.c — the artist's streams of moire_stream_open (moire.h, docs/DMCMC.md
 * "Streams") on the embedded model (skipped when data/models/ lacks it): NFE accounting
 * (what info reports = the model evaluations the progress callback saw), variations move
 * further from their picture as the strength grows (in the embedded classifier's feature
 * space), the diversity guard fires on a frozen chain and only then, seeded streams repeat
 * exactly, and argument errors. */
#include "moire.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static moire_ctx *ctx;
static moire_model *model;
static moire_classifier *classifier;

typedef struct counter {
    int evaluations; /* progress reports = model evaluations (one per report) */
} counter;

static bool count_progress(const moire_progress *p, void *user)
{
    (void)p;
    ((counter *)user)->evaluations++;
    return true;
}

static bool same_image(const moire_image *a, const moire_image *b)
{
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           memcmp(a->pixels, b->pixels, (size_t)a->width * a->height * a->channels) == 0;
}

/* RMS difference of two images in [-1, 1] units (the model space of a pixel model). */
static double rms_distance(const moire_image *a, const moire_image *b)
{
    const size_t n = (size_t)a->width * a->height * a->channels;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (a->pixels[i] - b->pixels[i]) / 127.5;
        sum += d * d;
    }
    return sqrt(sum / (double)n);
}

static moire_generate_params base_params(int chains, uint64_t seed)
{
    moire_generate_params p = moire_generate_params_default();
    p.prompt = "red apple";
    p.seed = seed;
    p.batch_count = chains;
    return p;
}

/* Opens a stream and takes `rounds` rounds; images[r * chains + i]. Returns false on error. */
static bool take(const moire_generate_params *p, const moire_stream_params *sp, int rounds,
                 moire_image **images, moire_stream_info *info, int *evaluations)
{
    counter seen = {0};
    moire_callbacks cb = {.progress = count_progress, .user_data = &seen};
    moire_stream *stream = NULL;
    moire_status status = moire_stream_open(ctx, model, p, sp, &cb, &stream);
    CHECK(status == MOIRE_OK, "stream_open (mode %d): %s", (int)sp->mode, moire_last_error());
    for (int r = 0; status == MOIRE_OK && r < rounds; r++) {
        moire_image **batch = NULL;
        int n = 0;
        status = moire_stream_next(stream, &batch, &n);
        CHECK(status == MOIRE_OK && n == p->batch_count, "round %d: %s", r, moire_last_error());
        for (int i = 0; status == MOIRE_OK && i < n; i++) {
            images[r * n + i] = batch[i];
            batch[i] = NULL;
        }
        moire_images_free(batch, n);
    }
    if (info)
        moire_stream_get_info(stream, info);
    if (evaluations)
        *evaluations = seen.evaluations;
    moire_stream_free(stream);
    return status == MOIRE_OK;
}

static void free_all(moire_image **images, int count)
{
    for (int i = 0; i < count; i++)
        moire_image_free(images[i]);
}

static moire_image *source_picture(void)
{
    moire_generate_params p = base_params(1, 7);
    p.sampler = MOIRE_SAMPLER_EULER;
    p.steps = 12;
    moire_image **images = NULL;
    int n = 0;
    CHECK(moire_generate(ctx, model, &p, NULL, &images, &n) == MOIRE_OK && n == 1,
          "source picture: %s", moire_last_error());
    moire_image *img = n == 1 ? images[0] : NULL;
    if (images)
        images[0] = NULL;
    moire_images_free(images, n);
    return img;
}

static void test_nfe_accounting(const moire_image *source)
{
    moire_image *images[8] = {0};
    moire_stream_info info;
    int seen = 0;

    /* plain new pictures: euler 6 steps = 6 NFE per round, nothing one-off */
    moire_generate_params p = base_params(2, 1);
    p.sampler = MOIRE_SAMPLER_EULER;
    p.steps = 6;
    moire_stream_params sp = moire_stream_params_default();
    if (take(&p, &sp, 3, images, &info, &seen)) {
        CHECK(!info.chains && info.emitted == 3 && info.nfe_per_image == 6 &&
                  info.nfe_one_off == 0 && info.nfe_total == 18,
              "plain stream: chains %d emitted %d nfe %d one-off %d total %d", info.chains,
              info.emitted, info.nfe_per_image, info.nfe_one_off, info.nfe_total);
        CHECK(seen == info.nfe_total, "plain stream: %d evaluations reported, info says %d",
              seen, info.nfe_total);
        printf("OK new pictures (euler 6): %d NFE per image, %d in 3 rounds\n",
               info.nfe_per_image, info.nfe_total);
    }
    free_all(images, 6);

    /* DMCMC new pictures: burn-in 24 + 8 (the level classifier needs no calibration), then
       skip 4 + dpm++2m 5 + Tweedie 1 = 10 per round */
    p = base_params(2, 1);
    p.sampler = MOIRE_SAMPLER_DMCMC;
    if (take(&p, &sp, 3, images, &info, &seen)) {
        const int expect_one_off = info.level == MOIRE_DMCMC_LEVEL_CLASSIFIER ? 32 : 38;
        CHECK(info.chains && info.nfe_per_image == 10 && info.nfe_one_off == expect_one_off,
              "dmcmc stream: nfe %d one-off %d", info.nfe_per_image, info.nfe_one_off);
        CHECK(info.nfe_total == info.nfe_one_off + info.nfe_reseed + 3 * 10,
              "dmcmc stream: total %d", info.nfe_total);
        CHECK(seen == info.nfe_total, "dmcmc stream: %d evaluations reported, info says %d",
              seen, info.nfe_total);
        printf("OK new pictures (dmcmc): %d NFE per image + %d once; %d in all\n",
               info.nfe_per_image, info.nfe_one_off, info.nfe_total);
    }
    free_all(images, 6);

    /* variations: no burn-in at all (the picture is the clean start) */
    sp.mode = MOIRE_STREAM_VARIATIONS;
    sp.source = source;
    p = base_params(2, 1);
    if (take(&p, &sp, 2, images, &info, &seen)) {
        const int expect_one_off = info.level == MOIRE_DMCMC_LEVEL_CLASSIFIER ? 0 : 6;
        CHECK(info.nfe_one_off == expect_one_off && info.nfe_per_image == 10 &&
                  info.nfe_total == expect_one_off + info.nfe_reseed + 20 && seen == info.nfe_total,
              "variations: one-off %d nfe %d total %d seen %d", info.nfe_one_off,
              info.nfe_per_image, info.nfe_total, seen);
        printf("OK variations: %d NFE per image, %d once\n", info.nfe_per_image,
               info.nfe_one_off);
    }
    free_all(images, 4);
}

/* Mean feature distance of `count` variations from the source. */
static double feature_distance(const moire_image *source, moire_image **images, int count)
{
    const int D = moire_classifier_feature_dim(classifier);
    float *f = calloc((size_t)(count + 1) * D, sizeof(float));
    const moire_image *all[9];
    all[0] = source;
    for (int i = 0; i < count; i++)
        all[i + 1] = images[i];
    double mean = NAN;
    if (f && moire_classifier_run(classifier, all, count + 1, f, NULL) == MOIRE_OK) {
        mean = 0.0;
        for (int i = 1; i <= count; i++) {
            double sum = 0.0;
            for (int d = 0; d < D; d++) {
                double diff = f[(size_t)i * D + d] - f[d];
                sum += diff * diff;
            }
            mean += sqrt(sum) / count;
        }
    }
    free(f);
    return mean;
}

static void test_strength(const moire_image *source)
{
    const float strengths[] = {0.1f, 0.5f, 1.0f};
    double distance[3];
    for (int k = 0; k < 3; k++) {
        moire_image *images[4] = {0};
        moire_stream_params sp = moire_stream_params_default();
        sp.mode = MOIRE_STREAM_VARIATIONS;
        sp.source = source;
        sp.variation_strength = strengths[k];
        moire_generate_params p = base_params(4, 100);
        distance[k] = take(&p, &sp, 1, images, NULL, NULL) ? feature_distance(source, images, 4)
                                                           : NAN;
        float sigma, eta;
        moire_variation_settings(strengths[k], &sigma, &eta);
        printf("strength %.1f (σ %.3f, η %.4f): mean feature distance from the picture %.3f\n",
               (double)strengths[k], (double)sigma, (double)eta, distance[k]);
        free_all(images, 4);
    }
    CHECK(distance[0] < distance[1] && distance[1] < distance[2],
          "variation distance does not grow with strength: %.3f %.3f %.3f", distance[0],
          distance[1], distance[2]);
}

static void test_guard(void)
{
    /* A frozen chain: a Langevin step of 1e-6 does not move it, so the deterministic
       integrator repeats its picture. */
    moire_dmcmc_params d = moire_dmcmc_params_default();
    d.eta = 1e-6f;
    moire_generate_params p = base_params(2, 5);
    p.sampler = MOIRE_SAMPLER_DMCMC;
    p.dmcmc = &d;
    moire_stream_params sp = moire_stream_params_default();
    moire_image *off[8] = {0}, *on[8] = {0};
    moire_stream_info info_off, info_on;
    sp.guard_distance = 0.0f;
    bool ok = take(&p, &sp, 3, off, &info_off, NULL);
    sp.guard_distance = MOIRE_STREAM_GUARD_DEFAULT;
    ok = take(&p, &sp, 3, on, &info_on, NULL) && ok;
    if (ok) {
        const double frozen = rms_distance(off[2], off[0]), frozen2 = rms_distance(off[4], off[2]);
        CHECK(info_off.kicks == 0, "guard off kicked %d times", info_off.kicks);
        CHECK(frozen < MOIRE_STREAM_GUARD_DEFAULT && frozen2 < MOIRE_STREAM_GUARD_DEFAULT,
              "the frozen chain moved: %.4f, %.4f", frozen, frozen2);
        /* rounds 1 and 2 as without the guard; the kick after round 2 moves round 3 */
        CHECK(same_image(on[0], off[0]) && same_image(on[2], off[2]),
              "the guard changed the rounds before its kick");
        CHECK(info_on.kicks >= 2, "guard on a frozen chain: %d kicks (2 chains)",
              info_on.kicks);
        const double kicked = rms_distance(on[4], on[2]);
        CHECK(kicked > MOIRE_STREAM_GUARD_DEFAULT,
              "after the kick the chain still repeats itself: %.4f", kicked);
        printf("OK guard: frozen chain repeats itself (RMS %.4f, %.4f); guard on: %d kicks, "
               "next picture RMS %.3f away\n", frozen, frozen2, info_on.kicks, kicked);
    }
    free_all(off, 6);
    free_all(on, 6);
}

static void test_reproducible(const moire_image *source)
{
    const moire_stream_mode modes[] = {MOIRE_STREAM_NEW_PICTURES, MOIRE_STREAM_NEW_PICTURES,
                                       MOIRE_STREAM_VARIATIONS};
    const moire_sampler samplers[] = {MOIRE_SAMPLER_HEUN, MOIRE_SAMPLER_DMCMC,
                                      MOIRE_SAMPLER_DEFAULT};
    for (int k = 0; k < 3; k++) {
        moire_stream_params sp = moire_stream_params_default();
        sp.mode = modes[k];
        sp.source = source;
        moire_generate_params p = base_params(2, 11);
        p.sampler = samplers[k];
        p.steps = samplers[k] == MOIRE_SAMPLER_HEUN ? 4 : 0;
        moire_image *a[4] = {0}, *b[4] = {0}, *c[4] = {0};
        bool ok = take(&p, &sp, 2, a, NULL, NULL) && take(&p, &sp, 2, b, NULL, NULL);
        p.seed = 12;
        ok = take(&p, &sp, 2, c, NULL, NULL) && ok;
        if (ok) {
            bool same = true;
            for (int i = 0; i < 4; i++)
                same = same && same_image(a[i], b[i]);
            CHECK(same, "stream %d (%s): the same seed gave different pictures", k,
                  moire_sampler_name(samplers[k]));
            CHECK(!same_image(a[0], c[0]) && !same_image(a[2], c[2]),
                  "stream %d: another seed gave the same pictures", k);
            CHECK(!same_image(a[0], a[2]), "stream %d: round 2 repeats round 1", k);
            printf("%s stream %d (%s): reproducible\n", same ? "OK" : "NOT OK", k,
                   sp.mode == MOIRE_STREAM_VARIATIONS ? "variations"
                                                      : moire_sampler_name(samplers[k]));
        }
        free_all(a, 4), free_all(b, 4), free_all(c, 4);
    }
}

static void test_errors(const moire_image *source)
{
    moire_generate_params p = base_params(1, 1);
    moire_stream_params sp = moire_stream_params_default();
    moire_stream *stream = NULL;
    sp.mode = MOIRE_STREAM_VARIATIONS;
    CHECK(moire_stream_open(ctx, model, &p, &sp, NULL, &stream) == MOIRE_ERROR_INVALID_ARGUMENT &&
              strstr(moire_last_error(), "source"),
          "variations without a picture: %s", moire_last_error());
    sp.source = source;
    sp.variation_strength = 1.5f;
    CHECK(moire_stream_open(ctx, model, &p, &sp, NULL, &stream) == MOIRE_ERROR_INVALID_ARGUMENT &&
              strstr(moire_last_error(), "strength"),
          "strength 1.5: %s", moire_last_error());
    sp.variation_strength = 0.5f;
    sp.guard_distance = NAN;
    CHECK(moire_stream_open(ctx, model, &p, &sp, NULL, &stream) == MOIRE_ERROR_INVALID_ARGUMENT,
          "guard NaN accepted");
    sp.guard_distance = -1.0f;
    p.init_image = source;
    CHECK(moire_stream_open(ctx, model, &p, &sp, NULL, &stream) == MOIRE_ERROR_INVALID_ARGUMENT &&
              strstr(moire_last_error(), "source"),
          "init image on a stream: %s", moire_last_error());
    CHECK(stream == NULL, "a failed open returned a stream");
    float s0, s1, e0, e1;
    moire_variation_settings(0.0f, &s0, &e0);
    moire_variation_settings(1.0f, &s1, &e1);
    CHECK(fabsf(s0 - 0.05f) < 1e-6f && fabsf(s1 - 3.0f) < 1e-5f && e0 > 0.0f && e1 == 4.5f,
          "variation settings: σ %g..%g, η %g..%g", (double)s0, (double)s1, (double)e0,
          (double)e1);
}

int main(void)
{
    char model_path[4096], classifier_path[4096];
    snprintf(model_path, sizeof model_path, "%s",
             test_data_path("../data/models/moire-emoji.safetensors"));
    snprintf(classifier_path, sizeof classifier_path, "%s",
             test_data_path("../data/models/moire-emoji-features.safetensors"));
    if (access(model_path, R_OK) != 0 || access(classifier_path, R_OK) != 0) {
        printf("SKIP: no embedded model in data/models/\n");
        return 77;
    }
    moire_ctx_params params = moire_ctx_params_default();
    params.device = MOIRE_DEVICE_CPU;
    params.n_threads = 2;
    if (moire_ctx_new(&params, &ctx) != MOIRE_OK || moire_model_load(model_path, &model) != MOIRE_OK ||
        moire_classifier_load(classifier_path, &classifier) != MOIRE_OK) {
        fprintf(stderr, "setup: %s\n", moire_last_error());
        return 1;
    }
    moire_image *source = source_picture();
    if (source) {
        test_nfe_accounting(source);
        test_strength(source);
        test_guard();
        test_reproducible(source);
        test_errors(source);
    }
    moire_image_free(source);
    moire_classifier_free(classifier);
    moire_model_free(model);
    moire_ctx_free(ctx);
    return test_finish("streams");
}
