/* generate_image.c — between 8-bit images and the model's space, for generate.c: init images
 * and masks sampled onto the model's grid (encoded with the SD-VAE for latent models), and
 * finished samples decoded back to images (with the VAE, or the approximate linear
 * latent→RGB map for previews and runs without one).
 */
#include "context.h"
#include "generate.h"
#include "generate_parts.h"
#include "internal.h"
#include "model.h"
#include "vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The commonly used approximate SD latent → RGB matrix (rows: latent channels 0-3). */
static const float latent_to_rgb[4][3] = {
    {0.298f, 0.207f, 0.208f},
    {0.187f, 0.286f, 0.173f},
    {-0.158f, 0.189f, 0.264f},
    {-0.184f, -0.271f, -0.473f},
};

/* ---- image ↔ model space -------------------------------------------------------------- */

/* Bilinear sample of channel `ch` of an 8-bit image at continuous pixel coordinates
 * (pixel centres at integer + 0.5), clamped at the border; result in [0, 1]. */
static float sample_bilinear(const moire_image *img, int ch, float fx, float fy)
{
    float x = fx - 0.5f, y = fy - 0.5f;
    int x0 = (int)floorf(x), y0 = (int)floorf(y);
    float ax = x - x0, ay = y - y0;
    int x1 = x0 + 1, y1 = y0 + 1;
    x0 = x0 < 0 ? 0 : (x0 >= img->width ? img->width - 1 : x0);
    x1 = x1 < 0 ? 0 : (x1 >= img->width ? img->width - 1 : x1);
    y0 = y0 < 0 ? 0 : (y0 >= img->height ? img->height - 1 : y0);
    y1 = y1 < 0 ? 0 : (y1 >= img->height ? img->height - 1 : y1);
    const int c = img->channels;
#define PX(xx, yy) (img->pixels[((size_t)(yy) * img->width + (xx)) * c + ch] / 255.0f)
    return (1 - ay) * ((1 - ax) * PX(x0, y0) + ax * PX(x1, y0)) +
           ay * ((1 - ax) * PX(x0, y1) + ax * PX(x1, y1));
#undef PX
}

/* Mean of channel `ch` over the image area that maps to cell (gx, gy) of a gw × gh grid:
 * area averaging, so downscaling a mask or image does not alias. Result in [0, 1]. */
float generate_sample_area(const moire_image *img, int ch, int gx, int gy, int gw, int gh)
{
    const float sx = (float)img->width / gw, sy = (float)img->height / gh;
    const int steps = 4; /* 4×4 bilinear taps per cell */
    float sum = 0.0f;
    for (int j = 0; j < steps; j++)
        for (int i = 0; i < steps; i++)
            sum += sample_bilinear(img, ch, (gx + (i + 0.5f) / steps) * sx,
                                   (gy + (j + 0.5f) / steps) * sy);
    return sum / (steps * steps);
}

/* RGB value of image pixel area (gx, gy) in [-1, 1] for channel rgb (0..2); gray images
 * repeat their one channel; alpha is composited over mid-gray for models without alpha. */
static float image_channel(const moire_image *img, int rgb, int gx, int gy, int gw, int gh,
                           bool model_has_alpha)
{
    int src = img->channels >= 3 ? rgb : 0;
    float v = generate_sample_area(img, src, gx, gy, gw, gh);
    if (!model_has_alpha && (img->channels == 4 || img->channels == 2)) {
        float a = generate_sample_area(img, img->channels - 1, gx, gy, gw, gh);
        v = a * v + (1 - a) * 0.5f;
    }
    return 2.0f * v - 1.0f;
}

/* Converts the init image into model space: x[C, h, w]. Pixel models take the image
 * directly; latent models go through the SD-VAE encoder when one is given (the image is
 * area-resampled to the VAE's f·h × f·w grid first), otherwise they get the least-squares
 * inverse of the latent→RGB preview map applied to the image averaged over 8×8 blocks. */
moire_status generate_encode_image(moire_ctx *ctx, const moire_model *model, const moire_vae *vae,
                                   const moire_image *img, float *x, int h, int w)
{
    const moire_model_config *cfg = &model->config;
    const size_t plane = (size_t)h * w;
    if (vae && cfg->space == MOIRE_SPACE_LATENT) {
        const moire_vae_info *info = moire_vae_get_info(vae);
        const int f = info->downscale, H = f * h, W = f * w, C = info->image_channels;
        const bool rgba = C == 4, img_alpha = img->channels == 4 || img->channels == 2;
        float *rgb = malloc_array((size_t)C * H * W, sizeof(float));
        if (!rgb)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the init image");
        for (int c = 0; c < C; c++) /* an RGBA VAE gets straight alpha (opaque without one) */
            for (int gy = 0; gy < H; gy++)
                for (int gx = 0; gx < W; gx++)
                    rgb[((size_t)c * H + gy) * W + gx] =
                        c < 3 ? image_channel(img, c, gx, gy, W, H, rgba)
                              : img_alpha ? 2.0f * generate_sample_area(img, img->channels - 1, gx, gy,
                                                                        W, H) - 1.0f
                                          : 1.0f;
        moire_status status = vae_encode_image(ctx, vae, H, W, rgb, x);
        free(rgb);
        if (status != MOIRE_OK)
            error_prefix("init image");
        return status;
    }
    if (cfg->space == MOIRE_SPACE_PIXEL) {
        const bool has_alpha = cfg->in_channels == 4;
        for (int gy = 0; gy < h; gy++)
            for (int gx = 0; gx < w; gx++)
                for (int ch = 0; ch < cfg->in_channels; ch++) {
                    float v;
                    if (ch < 3)
                        v = image_channel(img, cfg->in_channels == 1 ? 0 : ch, gx, gy, w, h,
                                          has_alpha);
                    else
                        v = (img->channels == 4 || img->channels == 2)
                                ? 2.0f * generate_sample_area(img, img->channels - 1, gx, gy, w, h) - 1.0f
                                : 1.0f;
                    x[ch * plane + (size_t)gy * w + gx] = v;
                }
        return MOIRE_OK;
    }
    /* pinv(M) for M = latent_to_rgb (4×3): latent = M (MᵀM)⁻¹ rgb. */
    double mtm[3][3] = {{0}};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int l = 0; l < 4; l++)
                mtm[a][b] += (double)latent_to_rgb[l][a] * latent_to_rgb[l][b];
    double det = mtm[0][0] * (mtm[1][1] * mtm[2][2] - mtm[1][2] * mtm[2][1]) -
                 mtm[0][1] * (mtm[1][0] * mtm[2][2] - mtm[1][2] * mtm[2][0]) +
                 mtm[0][2] * (mtm[1][0] * mtm[2][1] - mtm[1][1] * mtm[2][0]);
    double inv[3][3];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            int a1 = (b + 1) % 3, a2 = (b + 2) % 3, b1 = (a + 1) % 3, b2 = (a + 2) % 3;
            inv[a][b] = (mtm[a1][b1] * mtm[a2][b2] - mtm[a1][b2] * mtm[a2][b1]) / det;
        }
    for (int gy = 0; gy < h; gy++)
        for (int gx = 0; gx < w; gx++) {
            float rgb[3];
            for (int c = 0; c < 3; c++)
                rgb[c] = image_channel(img, c, gx, gy, w, h, false);
            for (int l = 0; l < cfg->in_channels; l++) {
                double v = 0.0;
                if (l < 4)
                    for (int a = 0; a < 3; a++)
                        for (int b = 0; b < 3; b++)
                            v += latent_to_rgb[l][a] * inv[a][b] * rgb[b];
                x[l * plane + (size_t)gy * w + gx] = (float)v;
            }
        }
    return MOIRE_OK;
}

static uint8_t to_byte(float v) /* v in [-1, 1] */
{
    float u = (v + 1.0f) * 127.5f + 0.5f;
    /* !(u >= 0) also catches NaN, whose conversion to an integer is undefined behaviour */
    return (uint8_t)(!(u >= 0.0f) ? 0.0f : (u > 255.0f ? 255.0f : u));
}

moire_image *generate_decode_to_image(const moire_model *model, const float *x, int model_h,
                                      int model_w, int width, int height)
{
    const moire_model_config *cfg = &model->config;
    const size_t plane = (size_t)model_h * model_w;
    if (cfg->space == MOIRE_SPACE_PIXEL) {
        int channels = cfg->in_channels >= 4 ? 4 : (cfg->in_channels == 3 ? 3 : 1);
        moire_image *img = moire_image_new(model_w, model_h, channels);
        if (!img)
            return NULL;
        for (size_t j = 0; j < plane; j++)
            for (int c = 0; c < channels; c++)
                img->pixels[j * channels + c] = to_byte(x[c * plane + j]);
        return img;
    }
    /* Latent: RGB at the latent grid, then bilinear upsampling to the requested size. */
    moire_image *small = moire_image_new(model_w, model_h, 3);
    moire_image *img = moire_image_new(width, height, 3);
    if (!small || !img) {
        moire_image_free(small), moire_image_free(img);
        return NULL;
    }
    for (size_t j = 0; j < plane; j++)
        for (int c = 0; c < 3; c++) {
            float v = 0.0f;
            for (int l = 0; l < 4 && l < cfg->in_channels; l++)
                v += latent_to_rgb[l][c] * x[l * plane + j];
            small->pixels[j * 3 + c] = to_byte(v);
        }
    for (int y = 0; y < height; y++)
        for (int xx = 0; xx < width; xx++)
            for (int c = 0; c < 3; c++) {
                float v = sample_bilinear(small, c, (xx + 0.5f) * model_w / width,
                                          (y + 0.5f) * model_h / height);
                img->pixels[((size_t)y * width + xx) * 3 + c] = (uint8_t)(v * 255.0f + 0.5f);
            }
    moire_image_free(small);
    return img;
}

/* The final image of a sample: through the SD-VAE decoder when one is given for a latent
 * model (tiled above MOIRE_VAE_TILE latent pixels; resampled to width × height when the VAE's
 * downscale is not the model's 8), otherwise generate_decode_to_image. x: [C, model_h, model_w]. */
moire_status generate_decode_result(moire_ctx *ctx, const moire_model *model, const moire_vae *vae,
                                    const float *x, const moire_resolved_params *resolved,
                                    moire_image **out)
{
    const int h = resolved->model_h, w = resolved->model_w;
    *out = NULL;
    moire_status finite = numeric_check_finite(x, (size_t)model->config.in_channels * h * w,
                                               model->name, "the sample");
    if (finite != MOIRE_OK)
        return finite;
    if (!vae || model->config.space != MOIRE_SPACE_LATENT) {
        *out = generate_decode_to_image(model, x, h, w, resolved->width, resolved->height);
        return *out ? MOIRE_OK
                    : error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the result image");
    }
    const moire_vae_info *info = moire_vae_get_info(vae);
    const int f = info->downscale, H = f * h, W = f * w, C = info->image_channels;
    const size_t plane = (size_t)H * W;
    float *rgb = malloc_array(C * plane, sizeof(float)); /* RGB or RGBA (straight) */
    moire_image *img = moire_image_new(W, H, C);
    moire_status status = rgb && img ? MOIRE_OK
                                     : error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                                                  "out of memory for the VAE decode of %dx%d", W, H);
    if (status == MOIRE_OK)
        status = vae_decode_image(ctx, vae, h, w, x, rgb, MOIRE_VAE_TILE, MOIRE_VAE_TILE_OVERLAP);
    if (status == MOIRE_OK)
        for (size_t j = 0; j < plane; j++)
            for (int c = 0; c < C; c++)
                img->pixels[j * C + c] = to_byte(rgb[c * plane + j]);
    free(rgb);
    if (status == MOIRE_OK && (W != resolved->width || H != resolved->height)) {
        moire_image *sized = moire_image_new(resolved->width, resolved->height, C);
        if (!sized)
            status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the result image");
        for (int y = 0; sized && y < sized->height; y++)
            for (int xx = 0; xx < sized->width; xx++)
                for (int c = 0; c < C; c++) {
                    float v = sample_bilinear(img, c, (xx + 0.5f) * W / sized->width,
                                              (y + 0.5f) * H / sized->height);
                    sized->pixels[((size_t)y * sized->width + xx) * C + c] =
                        (uint8_t)(v * 255.0f + 0.5f);
                }
        moire_image_free(img);
        img = sized;
    }
    if (status != MOIRE_OK) {
        moire_image_free(img);
        return status;
    }
    *out = img;
    return MOIRE_OK;
}

/* A VAE must produce the model's latent channels. */
moire_status generate_check_vae(const moire_model *model, const moire_vae *vae)
{
    if (!vae || model->config.space != MOIRE_SPACE_LATENT)
        return MOIRE_OK;
    const moire_vae_info *info = moire_vae_get_info(vae);
    if (info->latent_channels != model->config.in_channels)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "the VAE has %d latent channels but %s works on %d; use the SD KL-f8 "
                          "VAE (sd-vae-ft-mse) the model was trained with",
                          info->latent_channels, model->name, model->config.in_channels);
    return MOIRE_OK;
}

