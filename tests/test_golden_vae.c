/* test_golden_vae.c — the SD-VAE (engine/vae.c) against the float64 PyTorch reference files
 * written by tools/golden/make_golden_vae.py (tests/golden/tiny_vae*.safetensors).
 *
 *  - decode of two 8×8 latents (→ 16×16) with the decoder's mid-block output, encode of a
 *    16×16 image with the encoder's mid-block output: relative error ≤ 1e-4 (fp32 engine vs
 *    float64 reference, weights exact in both);
 *  - the LDM-layout file (BF16, first_stage_model., 1×1-conv attention, extra SD keys) and an
 *    F32 diffusers directory with config.json and the pre-0.15 attention names give results
 *    bit-identical to the diffusers F16 file (the weights are the same values);
 *  - tiled decode: identical when one tile covers the latent, equal to float rounding when
 *    the overlap covers the decoder's reach (whole-image GroupNorm statistics), and within a
 *    measured bound of the untiled decode with less overlap;
 *  - loading errors (missing tensor, wrong shape, NaN, not a VAE) and decoder-only files;
 *  - cancel between blocks; moire_generate with a latent test model and the VAE (txt2img and
 *    img2img) gives images of the requested size and no approximate-preview warning.
 * MOIRE_VAE_BENCH=1 also times the real KL-f8 decoder geometry on random weights (32×32 latent
 * → 256×256); it is not part of the normal run.
 */
#include "internal.h"
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOLERANCE 1e-4

static moire_ctx *ctx;

/* Every reference tensor this test asks for must be there. */
static float *ref_tensor(const st_file *ref, const char *name, int64_t *numel)
{
    float *data = test_ref_tensor(ref, name, numel);
    if (!data) {
        fprintf(stderr, "reference tensor %s is missing\n", name);
        exit(1);
    }
    return data;
}

static moire_vae *load_vae(const char *path)
{
    moire_vae *vae = NULL;
    moire_status status = moire_vae_load(path, &vae);
    CHECK(status == MOIRE_OK, "loading %s: %s", path, moire_last_error());
    return vae;
}

/* Collects one named intermediate over the images of a batch. */
typedef struct capture {
    const char *name;
    float *data;
    int64_t filled, capacity;
} capture;

static void on_debug(const char *name, int layer, const float *data, int ndim,
                     const int64_t *shape, void *user_data)
{
    capture *cap = user_data;
    if (strcmp(name, cap->name) != 0)
        return;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    if (cap->filled + numel <= cap->capacity)
        memcpy(cap->data + cap->filled, data, (size_t)numel * sizeof(float));
    cap->filled += numel;
}

typedef struct vae_results {
    float *rgb;     /* [2, 3, 16, 16] */
    float *latents; /* [1, 4, 8, 8]   */
} vae_results;

static vae_results run_reference_cases(const moire_vae *vae, const st_file *ref, const char *label,
                                       bool compare)
{
    vae_results res = {0};
    int64_t n_lat, n_mid, n_out, n_img, n_enc, n_emid;
    float *latents = ref_tensor(ref, "decode.latents", &n_lat);
    float *mid_want = ref_tensor(ref, "decode.mid_out", &n_mid);
    float *rgb_want = ref_tensor(ref, "decode.output", &n_out);
    float *image = ref_tensor(ref, "encode.image", &n_img);
    float *enc_want = ref_tensor(ref, "encode.latents", &n_enc);
    float *emid_want = ref_tensor(ref, "encode.mid_out", &n_emid);
    char name[128];

    capture cap = {.name = "vae.decoder.mid_out", .data = malloc(n_mid * sizeof(float)),
                   .capacity = n_mid};
    res.rgb = malloc(n_out * sizeof(float));
    moire_ctx_set_debug_callback(ctx, on_debug, &cap);
    double started = clock_now_seconds();
    moire_status status = moire_vae_decode(ctx, vae, 2, 8, 8, latents, res.rgb);
    double took = clock_now_seconds() - started;
    CHECK(status == MOIRE_OK, "%s decode: %s", label, moire_last_error());
    if (compare && status == MOIRE_OK) {
        CHECK(cap.filled == n_mid, "decoder mid_out: %lld values captured, want %lld",
              (long long)cap.filled, (long long)n_mid);
        snprintf(name, sizeof name, "%s decode mid_out", label);
        test_check_tensor(name, cap.data, mid_want, n_mid, TOLERANCE);
        snprintf(name, sizeof name, "%s decode output", label);
        test_check_tensor(name, res.rgb, rgb_want, n_out, TOLERANCE);
        printf("       decode of 2 latents 8x8 -> 16x16: %.2f ms\n", took * 1e3);
    }

    cap = (capture){.name = "vae.encoder.mid_out", .data = cap.data, .capacity = n_mid};
    res.latents = malloc(n_enc * sizeof(float));
    status = moire_vae_encode(ctx, vae, 1, 16, 16, image, res.latents);
    moire_ctx_set_debug_callback(ctx, NULL, NULL);
    CHECK(status == MOIRE_OK, "%s encode: %s", label, moire_last_error());
    if (compare && status == MOIRE_OK) {
        CHECK(cap.filled == n_emid, "encoder mid_out: %lld values captured, want %lld",
              (long long)cap.filled, (long long)n_emid);
        snprintf(name, sizeof name, "%s encode mid_out", label);
        test_check_tensor(name, cap.data, emid_want, n_emid, TOLERANCE);
        snprintf(name, sizeof name, "%s encode latents", label);
        test_check_tensor(name, res.latents, enc_want, n_enc, TOLERANCE);
    }
    free(cap.data), free(latents), free(mid_want), free(rgb_want), free(image), free(enc_want);
    free(emid_want);
    return res;
}

static void check_identical(const char *what, const vae_results *a, const vae_results *b)
{
    const size_t n_rgb = 2 * 3 * 16 * 16, n_lat = 4 * 8 * 8;
    bool rgb_same = a->rgb && b->rgb && memcmp(a->rgb, b->rgb, n_rgb * sizeof(float)) == 0;
    bool lat_same = a->latents && b->latents &&
                    memcmp(a->latents, b->latents, n_lat * sizeof(float)) == 0;
    CHECK(rgb_same && lat_same, "%s: decode %s, encode %s", what,
          rgb_same ? "identical" : "differs", lat_same ? "identical" : "differs");
    printf("%s %-40s bit-identical decode and encode\n", rgb_same && lat_same ? "OK    " : "NOT OK",
           what);
}

/* ---- variants of the diffusers file, written with the engine's safetensors writer ---- */

typedef struct variant {
    const char *drop;         /* leave this tensor out                          */
    const char *drop_prefix;  /* leave out every tensor whose name starts so    */
    const char *reshape;      /* write this one as [rows/2, cols] (wrong shape) */
    const char *poison;       /* put a NaN into this one                        */
    bool old_attention;       /* to_q → query, …, to_out.0 → proj_attn          */
} variant;

static const char *rename_attention(const char *name, char *buf, size_t size)
{
    static const char *const from[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
    static const char *const to[] = {".query.", ".key.", ".value.", ".proj_attn."};
    for (int i = 0; i < 4; i++) {
        const char *at = strstr(name, from[i]);
        if (at) {
            snprintf(buf, size, "%.*s%s%s", (int)(at - name), name, to[i], at + strlen(from[i]));
            return buf;
        }
    }
    return name;
}

static bool write_variant(const st_file *src, const char *path, const variant *v)
{
    st_writer *writer = st_writer_new();
    const int count = st_tensor_count(src);
    float **buffers = calloc((size_t)count, sizeof *buffers);
    bool ok = true;
    for (int i = 0; i < count && ok; i++) {
        const st_tensor *t = st_tensor_at(src, i);
        if ((v->drop && strcmp(t->name, v->drop) == 0) ||
            (v->drop_prefix && strncmp(t->name, v->drop_prefix, strlen(v->drop_prefix)) == 0))
            continue;
        buffers[i] = malloc((size_t)t->numel * sizeof(float));
        st_convert_to_f32(buffers[i], t->data, t->dtype, t->numel);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (v->reshape && strcmp(t->name, v->reshape) == 0)
            shape[0] /= 2;
        if (v->poison && strcmp(t->name, v->poison) == 0)
            buffers[i][3] = NAN;
        char renamed[256];
        const char *name = v->old_attention ? rename_attention(t->name, renamed, sizeof renamed)
                                            : t->name;
        ok = st_writer_add_f32(writer, name, ST_F32, t->ndim, shape, buffers[i]) == MOIRE_OK;
    }
    ok = ok && st_writer_save(writer, path) == MOIRE_OK;
    CHECK(ok, "writing %s: %s", path, moire_last_error());
    st_writer_free(writer);
    for (int i = 0; i < count; i++)
        free(buffers[i]);
    free(buffers);
    return ok;
}

static void expect_load_error(const st_file *src, const char *file, const variant *v,
                              const char *needle, const char *needle2)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), file);
    if (!write_variant(src, path, v))
        return;
    moire_vae *vae = NULL;
    moire_status status = moire_vae_load(path, &vae);
    const char *message = moire_last_error();
    bool ok = status == MOIRE_ERROR_FORMAT && !vae && strstr(message, needle) &&
              (!needle2 || strstr(message, needle2));
    CHECK(ok, "%s: status %s, message: %s", file, moire_status_to_string(status), message);
    printf("%s %-40s %s\n", ok ? "OK    " : "NOT OK", file, message);
    moire_vae_free(vae);
}

static void test_errors_and_decoder_only(const st_file *src)
{
    expect_load_error(src, "vae_missing.safetensors",
                      &(variant){.drop = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"},
                      "decoder.up_blocks.1.resnets.0.conv_shortcut.weight", "missing");
    expect_load_error(src, "vae_shape.safetensors",
                      &(variant){.reshape = "decoder.mid_block.attentions.0.to_k.weight"},
                      "decoder.mid_block.attentions.0.to_k.weight", "[32, 64]");
    expect_load_error(src, "vae_nan.safetensors",
                      &(variant){.poison = "encoder.down_blocks.0.resnets.0.conv2.weight"},
                      "encoder.down_blocks.0.resnets.0.conv2.weight", "non-finite");
    expect_load_error(src, "vae_missing_encoder_part.safetensors",
                      &(variant){.drop = "quant_conv.bias"}, "quant_conv.bias", "missing");

    /* not a VAE at all */
    moire_vae *vae = NULL;
    moire_status status = moire_vae_load(test_data_path("golden/tiny_qkv.safetensors"), &vae);
    CHECK(status == MOIRE_ERROR_FORMAT && strstr(moire_last_error(), "not an SD-VAE"),
          "DiT model as VAE: %s", moire_last_error());
    printf("OK     %-40s %s\n", "DiT file as VAE", moire_last_error());
    status = moire_vae_load("/nonexistent/vae", &vae);
    CHECK(status == MOIRE_ERROR_IO, "missing file: %s", moire_last_error());

    /* decoder-only: loads, decodes, refuses to encode with a clear message */
    char path[1024];
    snprintf(path, sizeof path, "%s/vae_decoder_only.safetensors", test_tmp_dir());
    if (!write_variant(src, path, &(variant){.drop_prefix = "encoder."}))
        return;
    /* quant_conv belongs to the encoder side too */
    st_file *partial = NULL;
    st_open(path, &partial);
    char path2[1024];
    snprintf(path2, sizeof path2, "%s/vae_decoder_only2.safetensors", test_tmp_dir());
    bool written = partial && write_variant(partial, path2, &(variant){.drop_prefix = "quant_conv."});
    st_close(partial);
    if (!written)
        return;
    vae = load_vae(path2);
    if (!vae)
        return;
    CHECK(!moire_vae_get_info(vae)->has_encoder, "decoder-only file claims an encoder");
    float latent[4 * 4 * 4], rgb[3 * 8 * 8], back[4 * 4 * 4];
    test_fill_random(latent, 64, 5, -1.0f, 1.0f);
    CHECK(moire_vae_decode(ctx, vae, 1, 4, 4, latent, rgb) == MOIRE_OK, "decoder-only decode: %s",
          moire_last_error());
    status = moire_vae_encode(ctx, vae, 1, 8, 8, rgb, back);
    CHECK(status == MOIRE_ERROR_UNSUPPORTED && strstr(moire_last_error(), "only the VAE decoder"),
          "decoder-only encode: %s", moire_last_error());
    printf("OK     %-40s %s\n", "decoder-only encode", moire_last_error());
    moire_vae_free(vae);
}

/* An F32 diffusers directory with config.json (scaling_factor 0.5) and the old attention
 * names: same results once the latents are rescaled. */
static void test_directory_f32(const st_file *src, const st_file *ref, const vae_results *want)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/vae_dir", test_tmp_dir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!write_variant(src, path, &(variant){.old_attention = true}))
        return;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"_class_name\": \"AutoencoderKL\", \"latent_channels\": 4, \"layers_per_block\": 1,"
          " \"norm_num_groups\": 32, \"scaling_factor\": 0.5, \"shift_factor\": null}\n", f);
    fclose(f);
    moire_vae *vae = load_vae(dir);
    if (!vae)
        return;
    const moire_vae_info *info = moire_vae_get_info(vae);
    CHECK(info->scaling_factor == 0.5f, "scaling_factor from config.json: %g",
          (double)info->scaling_factor);
    int64_t n;
    float *latents = ref_tensor(ref, "decode.latents", &n);
    for (int64_t i = 0; i < n; i++)
        latents[i] *= 0.5f / MOIRE_VAE_SCALING_FACTOR;
    float *rgb = malloc(2 * 3 * 16 * 16 * sizeof(float));
    CHECK(moire_vae_decode(ctx, vae, 2, 8, 8, latents, rgb) == MOIRE_OK, "dir decode: %s",
          moire_last_error());
    test_check_tensor("F32 dir, query/key names, scale 0.5", rgb, want->rgb, 2 * 3 * 16 * 16, 1e-6);
    free(latents), free(rgb);
    moire_vae_free(vae);

    /* a config.json that contradicts the weights */
    f = fopen(path, "w");
    fputs("{\"_class_name\": \"AutoencoderKL\", \"layers_per_block\": 2}\n", f);
    fclose(f);
    vae = NULL;
    moire_status status = moire_vae_load(dir, &vae);
    CHECK(status == MOIRE_ERROR_FORMAT && strstr(moire_last_error(), "layers_per_block"),
          "contradicting config.json: %s", moire_last_error());
    moire_vae_free(vae);
}

/* A random latent [4, h, w], smoothed along x so it looks like an image's, not white noise. */
static void smooth_latent(float *latent, int h, int w, uint64_t seed)
{
    test_fill_random(latent, (int64_t)4 * h * w, seed, -1.5f, 1.5f);
    for (int c = 0; c < 4; c++)
        for (int y = 0; y < h; y++)
            for (int x = 1; x < w; x++)
                latent[((size_t)c * h + y) * w + x] = 0.6f * latent[((size_t)c * h + y) * w + x - 1] +
                                                      0.4f * latent[((size_t)c * h + y) * w + x];
}

/* Tiled vs untiled. The mid block runs on the whole latent and the up path's GroupNorms use
 * the whole image's statistics, so with overlap/2 ≥ the decoder's reach (this model: 2 ResNets
 * of two 3×3 convs at latent resolution, the upsampler's conv, 2 more ResNets and conv_out at
 * ×2 = 7 latent pixels) tiling changes nothing but float rounding: 40×32 latent, tile 24,
 * overlap 16 = 3×2 tiles. With less overlap only the pixels near the cuts differ: measured
 * rel 2.6e-4 (tile 16, overlap 8) and 1.6e-3 (tile 12, overlap 4) on this random-weight model,
 * where per-tile statistics gave 8.3e-2 and 1.28e-1; the bounds are 1.5× those. */
#define BOUND_SHORT_OVERLAP_8 3.9e-4 /* 1.5 × measured, see above */
#define BOUND_SHORT_OVERLAP_4 2.4e-3
static void test_tiling(const moire_vae *vae)
{
    {
        const int h = 40, w = 32;
        const size_t n_lat = (size_t)4 * h * w, n_rgb = (size_t)3 * (2 * h) * (2 * w);
        float *latent = malloc(n_lat * sizeof(float));
        float *full = malloc(n_rgb * sizeof(float)), *tiled = malloc(n_rgb * sizeof(float));
        smooth_latent(latent, h, w, 17);
        CHECK(moire_vae_decode_tiled(ctx, vae, 1, h, w, 0, 0, latent, full) == MOIRE_OK,
              "untiled: %s", moire_last_error());
        CHECK(moire_vae_decode_tiled(ctx, vae, 1, h, w, 24, 16, latent, tiled) == MOIRE_OK,
              "tiled: %s", moire_last_error());
        const double rel = test_rel_error(tiled, full, (int64_t)n_rgb);
        const double mad = test_max_abs_diff(tiled, full, (int64_t)n_rgb);
        CHECK(rel <= 1e-4, "tiled 40x32 latent, tile 24 overlap 16: rel %.3e > 1e-4", rel);
        printf("%s tiled %dx%d latent, tile 24 overlap 16 (3x2 tiles) rel=%.3e maxabs=%.3e "
               "(bound 1e-4)\n", rel <= 1e-4 ? "OK    " : "NOT OK", w, h, rel, mad);
        free(latent), free(full), free(tiled);
    }
    const int s = 24, px = s * 2;
    const size_t n_lat = (size_t)4 * s * s, n_rgb = (size_t)3 * px * px;
    float *latent = malloc(n_lat * sizeof(float));
    float *full = malloc(n_rgb * sizeof(float)), *tiled = malloc(n_rgb * sizeof(float));
    smooth_latent(latent, s, s, 11);
    CHECK(moire_vae_decode_tiled(ctx, vae, 1, s, s, 0, 0, latent, full) == MOIRE_OK,
          "untiled: %s", moire_last_error());
    CHECK(moire_vae_decode_tiled(ctx, vae, 1, s, s, s, 4, latent, tiled) == MOIRE_OK,
          "one tile: %s", moire_last_error());
    CHECK(memcmp(full, tiled, n_rgb * sizeof(float)) == 0, "one tile differs from untiled");
    static const int cases[][2] = {{16, 8}, {12, 4}};
    static const double bounds[] = {BOUND_SHORT_OVERLAP_8, BOUND_SHORT_OVERLAP_4};
    for (int i = 0; i < 2; i++) {
        CHECK(moire_vae_decode_tiled(ctx, vae, 1, s, s, cases[i][0], cases[i][1], latent,
                                     tiled) == MOIRE_OK, "tiled: %s", moire_last_error());
        double rel = test_rel_error(tiled, full, (int64_t)n_rgb);
        double mad = test_max_abs_diff(tiled, full, (int64_t)n_rgb);
        bool ok = rel <= bounds[i];
        CHECK(ok, "tile %d overlap %d: rel %.3e > %.2e", cases[i][0], cases[i][1], rel, bounds[i]);
        printf("%s tiled %dx%d latent, tile %d overlap %-9d rel=%.3e maxabs=%.3e (bound %.2e)\n",
               ok ? "OK    " : "NOT OK", s, s, cases[i][0], cases[i][1], rel, mad, bounds[i]);
    }
    CHECK(moire_vae_decode_tiled(ctx, vae, 1, s, s, 8, 8, latent, tiled) ==
              MOIRE_ERROR_INVALID_ARGUMENT, "overlap == tile accepted");
    free(latent), free(full), free(tiled);
}

static void cancel_on_mid(const char *name, int layer, const float *data, int ndim,
                          const int64_t *shape, void *user_data)
{
    if (strcmp(name, "vae.decoder.mid_out") == 0)
        moire_ctx_cancel(user_data);
}

static void test_cancel(const moire_vae *vae)
{
    float latent[4 * 8 * 8], rgb[3 * 16 * 16];
    test_fill_random(latent, 4 * 8 * 8, 3, -1.0f, 1.0f);
    moire_ctx_set_debug_callback(ctx, cancel_on_mid, ctx);
    moire_status status = moire_vae_decode(ctx, vae, 1, 8, 8, latent, rgb);
    moire_ctx_set_debug_callback(ctx, NULL, NULL);
    CHECK(status == MOIRE_ERROR_CANCELLED, "cancel during decode gave %s",
          moire_status_to_string(status));
    CHECK(moire_vae_decode(ctx, vae, 1, 8, 8, latent, rgb) == MOIRE_OK,
          "decode after a cancel: %s", moire_last_error());
}

static int approximate_warnings;

static void on_log(moire_log_level level, const char *message, void *user_data)
{
    if (level >= MOIRE_LOG_WARNING && strstr(message, "approximate"))
        approximate_warnings++;
}

static void test_generate(const moire_vae *vae)
{
    moire_model *model = NULL;
    if (moire_model_load(test_data_path("golden/tiny_qkv.safetensors"), &model) != MOIRE_OK) {
        CHECK(false, "tiny_qkv: %s", moire_last_error());
        return;
    }
    moire_ctx_params cp = moire_ctx_params_default();
    cp.device = MOIRE_DEVICE_CPU;
    cp.log = on_log;
    moire_ctx *gctx = NULL;
    moire_ctx_new(&cp, &gctx);
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 3;
    params.steps = 3;
    params.vae = vae;
    moire_image **images = NULL;
    int count = 0;
    moire_status status = moire_generate(gctx, model, &params, NULL, &images, &count);
    CHECK(status == MOIRE_OK && count == 1, "generate with VAE: %s", moire_last_error());
    if (status == MOIRE_OK) {
        CHECK(images[0]->width == 64 && images[0]->height == 64 && images[0]->channels == 3,
              "image %dx%dx%d, want 64x64x3", images[0]->width, images[0]->height,
              images[0]->channels);
        CHECK(approximate_warnings == 0, "the approximate-preview warning was logged with a VAE");
        printf("OK     %-40s %dx%d\n", "generate tiny_qkv + VAE", images[0]->width,
               images[0]->height);
    }
    /* img2img: the init image goes through the VAE encoder */
    moire_image *init = moire_image_new(48, 32, 3);
    for (int i = 0; i < 48 * 32 * 3; i++)
        init->pixels[i] = (uint8_t)(i * 7 % 251);
    params.init_image = init;
    params.strength = 0.5f;
    params.width = 32, params.height = 48;
    moire_image **images2 = NULL;
    int count2 = 0;
    status = moire_generate(gctx, model, &params, NULL, &images2, &count2);
    CHECK(status == MOIRE_OK && count2 == 1 && images2[0]->width == 32 &&
          images2[0]->height == 48, "img2img with VAE: %s", moire_last_error());
    moire_images_free(images2, count2);

    /* without the VAE the warning is back */
    params.vae = NULL;
    params.init_image = NULL;
    status = moire_generate(gctx, model, &params, NULL, &images2, &count2);
    CHECK(status == MOIRE_OK && approximate_warnings == 1, "warning without VAE: %d",
          approximate_warnings);
    moire_images_free(images2, count2);
    moire_image_free(init);
    moire_images_free(images, count);
    moire_ctx_free(gctx);
    moire_model_free(model);
}

/* ---- MOIRE_VAE_BENCH: the real KL-f8 decoder geometry on random weights --------------- */

typedef struct bench_writer {
    st_writer *writer;
    float **buffers;
    int count;
    uint64_t seed;
} bench_writer;

static void bench_add(bench_writer *b, const char *name, int ndim, int64_t d0, int64_t d1,
                      int64_t d2, int64_t d3, float scale, float base)
{
    const int64_t shape[4] = {d0, d1, d2, d3};
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    float *data = malloc((size_t)numel * sizeof(float));
    test_fill_random(data, numel, ++b->seed, base - scale, base + scale);
    b->buffers = realloc(b->buffers, (size_t)(b->count + 1) * sizeof *b->buffers);
    b->buffers[b->count++] = data;
    st_writer_add_f32(b->writer, name, ST_F32, ndim, shape, data);
}

static void bench_conv(bench_writer *b, const char *name, int co, int ci, int k)
{
    char key[192];
    snprintf(key, sizeof key, "%s.weight", name);
    bench_add(b, key, 4, co, ci, k, k, 1.7f / sqrtf((float)ci * k * k), 0.0f);
    snprintf(key, sizeof key, "%s.bias", name);
    bench_add(b, key, 1, co, 0, 0, 0, 0.1f, 0.0f);
}

static void bench_norm(bench_writer *b, const char *name, int c)
{
    char key[192];
    snprintf(key, sizeof key, "%s.weight", name);
    bench_add(b, key, 1, c, 0, 0, 0, 0.1f, 1.0f);
    snprintf(key, sizeof key, "%s.bias", name);
    bench_add(b, key, 1, c, 0, 0, 0, 0.1f, 0.0f);
}

static void bench_resnet(bench_writer *b, const char *name, int ci, int co)
{
    char key[192];
    snprintf(key, sizeof key, "%s.norm1", name), bench_norm(b, key, ci);
    snprintf(key, sizeof key, "%s.conv1", name), bench_conv(b, key, co, ci, 3);
    snprintf(key, sizeof key, "%s.norm2", name), bench_norm(b, key, co);
    snprintf(key, sizeof key, "%s.conv2", name), bench_conv(b, key, co, co, 3);
    if (ci != co)
        snprintf(key, sizeof key, "%s.conv_shortcut", name), bench_conv(b, key, co, ci, 1);
}

static void run_bench(void)
{
    static const int ch[4] = {128, 256, 512, 512};
    char path[1024], key[192];
    snprintf(path, sizeof path, "%s/bench_vae_decoder.safetensors", test_tmp_dir());
    bench_writer b = {.writer = st_writer_new()};
    bench_conv(&b, "post_quant_conv", 4, 4, 1);
    bench_conv(&b, "decoder.conv_in", 512, 4, 3);
    bench_resnet(&b, "decoder.mid_block.resnets.0", 512, 512);
    bench_resnet(&b, "decoder.mid_block.resnets.1", 512, 512);
    bench_norm(&b, "decoder.mid_block.attentions.0.group_norm", 512);
    static const char *const proj[] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "decoder.mid_block.attentions.0.%s.weight", proj[i]);
        bench_add(&b, key, 2, 512, 512, 0, 0, 0.07f, 0.0f);
        snprintf(key, sizeof key, "decoder.mid_block.attentions.0.%s.bias", proj[i]);
        bench_add(&b, key, 1, 512, 0, 0, 0, 0.1f, 0.0f);
    }
    int cin = 512;
    for (int i = 0; i < 4; i++) {
        const int out = ch[3 - i];
        for (int j = 0; j < 3; j++) {
            snprintf(key, sizeof key, "decoder.up_blocks.%d.resnets.%d", i, j);
            bench_resnet(&b, key, cin, out);
            cin = out;
        }
        if (i < 3) {
            snprintf(key, sizeof key, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            bench_conv(&b, key, out, out, 3);
        }
    }
    bench_norm(&b, "decoder.conv_norm_out", 128);
    bench_conv(&b, "decoder.conv_out", 3, 128, 3);
    CHECK(st_writer_save(b.writer, path) == MOIRE_OK, "bench file: %s", moire_last_error());
    st_writer_free(b.writer);
    for (int i = 0; i < b.count; i++)
        free(b.buffers[i]);
    free(b.buffers);
    moire_vae *vae = load_vae(path);
    if (!vae)
        return;
    float *latent = malloc(4 * 32 * 32 * sizeof(float));
    float *rgb = malloc(3 * 256 * 256 * sizeof(float));
    test_fill_random(latent, 4 * 32 * 32, 1, -1.0f, 1.0f);
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double started = clock_now_seconds();
        CHECK(moire_vae_decode(ctx, vae, 1, 32, 32, latent, rgb) == MOIRE_OK, "bench decode: %s",
              moire_last_error());
        double took = clock_now_seconds() - started;
        best = took < best ? took : best;
    }
    printf("BENCH  KL-f8 decoder (128,256,512,512), 32x32 latent -> 256x256, %s threads: "
           "%.3f s (best of 3)\n", getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "all",
           best);
    free(latent), free(rgb);
    moire_vae_free(vae);
    remove(path);
}

/* moire_generate through an RGBA VAE: the result has an alpha channel, and an RGBA init
 * image goes through the 4-channel encoder (img2img). */
static void test_generate_rgba(const moire_vae *vae)
{
    moire_model *model = NULL;
    if (moire_model_load(test_data_path("golden/tiny_qkv.safetensors"), &model) != MOIRE_OK) {
        CHECK(false, "tiny_qkv: %s", moire_last_error());
        return;
    }
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 3;
    params.steps = 2;
    params.vae = vae;
    moire_image **images = NULL;
    int count = 0;
    moire_status status = moire_generate(ctx, model, &params, NULL, &images, &count);
    CHECK(status == MOIRE_OK && count == 1 && images[0]->channels == 4,
          "generate with an RGBA VAE: %s", status == MOIRE_OK ? "not 4 channels" : moire_last_error());
    moire_images_free(images, count);
    moire_image *init = moire_image_new(32, 32, 4);
    for (int i = 0; i < 32 * 32 * 4; i++)
        init->pixels[i] = (uint8_t)(i * 13 % 251);
    params.init_image = init;
    params.strength = 0.5f;
    params.width = params.height = 32;
    status = moire_generate(ctx, model, &params, NULL, &images, &count);
    CHECK(status == MOIRE_OK && count == 1 && images[0]->channels == 4 &&
              images[0]->width == 32, "img2img with an RGBA VAE: %s", moire_last_error());
    if (status == MOIRE_OK)
        printf("OK     %-40s %dx%dx%d\n", "generate + img2img, RGBA VAE", images[0]->width,
               images[0]->height, images[0]->channels);
    moire_images_free(images, count);
    moire_image_free(init);
    moire_model_free(model);
}

/* The RGBA autoencoder of the 128-px embedded model, as tools/train/train_vae128.py exports
 * it (a diffusers directory with config.json; here a tiny one from 2 training steps, made by
 * tools/golden/make_golden_vae128.py): 4 image channels, f = 8, 4 groups, scaling factor from
 * config.json. Decode and encode against the float64 PyTorch reference, and a tiled decode
 * (4 image channels through the tile cores) against the untiled one. */
static void test_rgba_vae128(void)
{
    moire_vae *vae = load_vae(test_data_path("golden/vae128_tiny"));
    st_file *ref = NULL;
    if (!vae || st_open(test_data_path("golden/vae128_tiny.ref.safetensors"), &ref) != MOIRE_OK) {
        CHECK(false, "vae128_tiny: %s (run tools/golden/make_golden_vae128.py)", moire_last_error());
        moire_vae_free(vae);
        return;
    }
    const moire_vae_info *info = moire_vae_get_info(vae);
    CHECK(info->image_channels == 4 && info->levels == 4 && info->downscale == 8 &&
          info->latent_channels == 4 && info->norm_num_groups == 4 && info->has_encoder &&
          info->block_out_channels[0] == 8 && info->block_out_channels[3] == 16 &&
          fabsf(info->scaling_factor - MOIRE_VAE_SCALING_FACTOR) > 0.01f,
          "vae128_tiny: structure inferred wrong (image channels %d, groups %d, scale %g)",
          info->image_channels, info->norm_num_groups, info->scaling_factor);
    int64_t n_lat, n_dec, n_img, n_enc;
    float *latents = ref_tensor(ref, "latents", &n_lat);      /* [1, 4, 4, 6]   */
    float *dec_want = ref_tensor(ref, "decoded", &n_dec);     /* [1, 4, 32, 48] */
    float *image = ref_tensor(ref, "image", &n_img);          /* [1, 4, 32, 48] */
    float *enc_want = ref_tensor(ref, "encoded", &n_enc);     /* [1, 4, 4, 6]   */
    float *dec = malloc(n_dec * sizeof(float)), *enc = malloc(n_enc * sizeof(float));
    CHECK(n_dec == 4 * 32 * 48 && n_enc == 4 * 4 * 6, "vae128_tiny reference shapes");
    CHECK(moire_vae_decode(ctx, vae, 1, 4, 6, latents, dec) == MOIRE_OK, "RGBA decode: %s",
          moire_last_error());
    test_check_tensor("RGBA vae128 (trainer's export) decode", dec, dec_want, n_dec, TOLERANCE);
    CHECK(moire_vae_encode(ctx, vae, 1, 32, 48, image, enc) == MOIRE_OK, "RGBA encode: %s",
          moire_last_error());
    test_check_tensor("RGBA vae128 (trainer's export) encode", enc, enc_want, n_enc, TOLERANCE);
    /* Tiled against untiled, four channels through the tile cores: this decoder reaches 8.5
     * latent pixels (two ResNets a level: 4 + ½ + 2 + ¼ + 1 + ⅛ + ½ + ⅛), so a 24×24 latent in
     * 3×3 tiles of 20 with overlap 18 (cores ≥ 9 from the inner edges) must give the untiled
     * result to float rounding. */
    {
        const int s = 24;
        const size_t n_rgba = (size_t)4 * 8 * s * 8 * s;
        float *big = malloc((size_t)4 * s * s * sizeof(float));
        float *whole = malloc(n_rgba * sizeof(float)), *tiles = malloc(n_rgba * sizeof(float));
        smooth_latent(big, s, s, 23);
        CHECK(moire_vae_decode_tiled(ctx, vae, 1, s, s, 0, 0, big, whole) == MOIRE_OK &&
                  moire_vae_decode_tiled(ctx, vae, 1, s, s, 20, 18, big, tiles) == MOIRE_OK,
              "RGBA tiled decode: %s", moire_last_error());
        const double rel = test_rel_error(tiles, whole, (int64_t)n_rgba);
        CHECK(rel <= 1e-4, "RGBA tiled decode: rel %.3e to the untiled one", rel);
        printf("%s RGBA vae128 24x24 latent in 3x3 tiles (20, overlap 18) vs untiled rel=%.3e "
               "(bound 1e-4)\n", rel <= 1e-4 ? "OK    " : "NOT OK", rel);
        free(big), free(whole), free(tiles);
    }
    test_generate_rgba(vae);
    free(dec), free(enc), free(latents), free(dec_want), free(image), free(enc_want);
    st_close(ref);
    moire_vae_free(vae);
}

int main(void)
{
    moire_ctx_params cp = moire_ctx_params_default();
    cp.device = MOIRE_DEVICE_CPU;
    if (moire_ctx_new(&cp, &ctx) != MOIRE_OK) {
        fprintf(stderr, "context: %s\n", moire_last_error());
        return 1;
    }
    if (getenv("MOIRE_VAE_BENCH")) {
        run_bench();
        moire_ctx_free(ctx);
        return test_finish("golden_vae (bench)");
    }
    st_file *ref = NULL, *src = NULL;
    if (st_open(test_data_path("golden/tiny_vae.ref.safetensors"), &ref) != MOIRE_OK ||
        st_open(test_data_path("golden/tiny_vae.safetensors"), &src) != MOIRE_OK) {
        fprintf(stderr, "golden VAE files: %s (run tools/golden/make_golden_vae.py)\n",
                moire_last_error());
        return 1;
    }
    moire_vae *diffusers = load_vae(test_data_path("golden/tiny_vae.safetensors"));
    moire_vae *ldm = load_vae(test_data_path("golden/tiny_vae_ldm.safetensors"));
    if (!diffusers || !ldm)
        return test_finish("golden_vae");
    const moire_vae_info *info = moire_vae_get_info(diffusers);
    CHECK(strcmp(info->layout, "diffusers") == 0 && info->levels == 2 &&
          info->block_out_channels[0] == 32 && info->block_out_channels[1] == 64 &&
          info->layers_per_block == 1 && info->latent_channels == 4 && info->downscale == 2 &&
          info->norm_num_groups == 32 && info->has_encoder &&
          info->scaling_factor == MOIRE_VAE_SCALING_FACTOR, "diffusers structure inferred wrong");
    const moire_vae_info *info_ldm = moire_vae_get_info(ldm);
    CHECK(strcmp(info_ldm->layout, "ldm") == 0 && info_ldm->levels == 2 &&
          info_ldm->block_out_channels[0] == 32 && info_ldm->block_out_channels[1] == 64 &&
          info_ldm->layers_per_block == 1 && info_ldm->has_encoder,
          "LDM structure inferred wrong");

    vae_results a = run_reference_cases(diffusers, ref, "diffusers F16", true);
    vae_results b = run_reference_cases(ldm, ref, "LDM BF16", true);
    check_identical("LDM BF16 vs diffusers F16", &a, &b);
    test_directory_f32(src, ref, &a);
    test_tiling(diffusers);
    test_cancel(diffusers);
    test_errors_and_decoder_only(src);
    test_generate(diffusers);
    test_rgba_vae128();

    free(a.rgb), free(a.latents), free(b.rgb), free(b.latents);
    moire_vae_free(diffusers);
    moire_vae_free(ldm);
    st_close(ref);
    st_close(src);
    moire_ctx_free(ctx);
    return test_finish("golden_vae");
}
