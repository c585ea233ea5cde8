/* routing_map.c — the adaptive-compute map (moire.h, "Routing maps"; docs/ECDIT.md): the
 * recorder the forward passes report to during a generate run, and the map's accessors and
 * rendering as an image (the paper's heat-maps, for the apps' routing overlay).
 *
 * Recording sums, per MoE layer, image, token and expert, how many evaluations the expert
 * processed the token in; finishing divides by the evaluations, so a value is a frequency in
 * [0, 1] and the sum over experts is the mean number of experts per token.
 */
#include "routing_map.h"

#include "ecdit.h"
#include "internal.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct routing_recorder {
    moire_routing_map *map;  /* token_experts holds sums until finish                  */
    int *layer_of_block;     /* [depth] map layer of a block, −1 for dense blocks        */
    int depth;
    int *evaluations;        /* [image_count] evaluations recorded per image             */
    int first, count;        /* the current chunk                                        */
};

void moire_routing_map_free(moire_routing_map *map)
{
    if (!map)
        return;
    free(map->layers), free(map->token_experts), free(map->expert_load);
    free(map);
}

void routing_recorder_free(routing_recorder *r)
{
    if (!r)
        return;
    moire_routing_map_free(r->map);
    free(r->layer_of_block), free(r->evaluations);
    free(r);
}

routing_recorder *routing_recorder_new(const moire_model *model, int images, int grid_h,
                                       int grid_w)
{
    const moire_model_config *c = &model->config;
    routing_recorder *r = calloc(1, sizeof *r);
    moire_routing_map *map = calloc(1, sizeof *map);
    if (!r || !map) {
        free(r), free(map);
        return NULL;
    }
    r->map = map;
    r->depth = c->depth;
    map->image_count = images;
    map->grid_h = grid_h;
    map->grid_w = grid_w;
    map->num_experts = c->num_experts;
    map->expert_choice = model->family == MOIRE_FAMILY_EC_DIT;
    r->layer_of_block = malloc_array((size_t)c->depth, sizeof(int));
    map->layers = malloc_array((size_t)c->depth, sizeof(int));
    r->evaluations = calloc_array((size_t)images, sizeof(int));
    if (!r->layer_of_block || !map->layers || !r->evaluations) {
        routing_recorder_free(r);
        return NULL;
    }
    for (int b = 0; b < c->depth; b++) {
        bool moe = !map->expert_choice || ecdit_block_is_moe(c, b);
        r->layer_of_block[b] = moe ? map->layer_count : -1;
        if (moe)
            map->layers[map->layer_count++] = b;
    }
    const size_t cells = (size_t)map->layer_count * images * grid_h * grid_w * map->num_experts;
    map->token_experts = calloc_array(cells ? cells : 1, sizeof(float));
    map->expert_load = calloc_array((size_t)map->layer_count * map->num_experts + 1,
                                    sizeof(float));
    if (!map->token_experts || !map->expert_load) {
        routing_recorder_free(r);
        return NULL;
    }
    return r;
}

void routing_recorder_set_chunk(routing_recorder *r, int first, int count)
{
    r->first = first;
    r->count = count;
}

void routing_recorder_count_evaluation(routing_recorder *r)
{
    for (int i = 0; i < r->count && r->first + i < r->map->image_count; i++)
        r->evaluations[r->first + i]++;
}

/* The sum cell of (layer of block, image of forward row, expert), or NULL when the row is
 * not recorded (unconditional half, another grid). */
static float *cell(routing_recorder *r, int block, int T, int64_t row, int expert)
{
    const moire_routing_map *m = r->map;
    if (block < 0 || block >= r->depth || r->layer_of_block[block] < 0 ||
        T != m->grid_h * m->grid_w || expert < 0 || expert >= m->num_experts)
        return NULL;
    const int64_t image = row / T, token = row % T;
    if (image >= r->count || r->first + image >= m->image_count)
        return NULL;
    const size_t index =
        (((size_t)r->layer_of_block[block] * m->image_count + (size_t)(r->first + image)) * T +
         (size_t)token) * m->num_experts + (size_t)expert;
    return &m->token_experts[index];
}

void routing_record_topk(routing_recorder *r, int block, int T, const int32_t *top_ids, int k)
{
    for (int64_t row = 0; row < (int64_t)r->count * T; row++)
        for (int j = 0; j < k; j++) {
            float *sum = cell(r, block, T, row, top_ids[row * k + j]);
            if (sum)
                *sum += 1.0f;
        }
}

void routing_record_expert_choice(routing_recorder *r, int block, int T, const int32_t *tokens,
                                  int E, int M)
{
    for (int e = 0; e < E; e++)
        for (int j = 0; j < M; j++) {
            float *sum = cell(r, block, T, tokens[(size_t)e * M + j], e);
            if (sum)
                *sum += 1.0f;
        }
}

moire_routing_map *routing_recorder_finish(routing_recorder *r)
{
    if (!r)
        return NULL;
    moire_routing_map *m = r->map;
    const int T = m->grid_h * m->grid_w, E = m->num_experts;
    m->evaluations = r->evaluations[0];
    for (int l = 0; l < m->layer_count; l++)
        for (int i = 0; i < m->image_count; i++) {
            const float inv = r->evaluations[i] ? 1.0f / (float)r->evaluations[i] : 0.0f;
            float *sums = m->token_experts + ((size_t)l * m->image_count + i) * T * E;
            for (size_t j = 0; j < (size_t)T * E; j++) {
                sums[j] *= inv;
                m->expert_load[(size_t)l * E + j % E] += sums[j] / (float)m->image_count;
            }
        }
    r->map = NULL;
    routing_recorder_free(r);
    return m;
}

/* ---- accessors and rendering -------------------------------------------------------------- */

moire_status moire_routing_map_token_counts(const moire_routing_map *map, int image, int layer,
                                            float *out)
{
    if (!map || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "routing map: a required pointer is NULL");
    if (image < 0 || image >= map->image_count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "routing map: image %d is out of range (0..%d)", image,
                          map->image_count - 1);
    if (layer < MOIRE_ROUTING_LAYER_MEAN || layer >= map->layer_count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "routing map: layer %d is out of range (-1 = mean, 0..%d)", layer,
                          map->layer_count - 1);
    const int T = map->grid_h * map->grid_w, E = map->num_experts;
    const int first = layer < 0 ? 0 : layer, last = layer < 0 ? map->layer_count : layer + 1;
    for (int t = 0; t < T; t++) {
        double sum = 0.0;
        for (int l = first; l < last; l++) {
            const float *row =
                map->token_experts + (((size_t)l * map->image_count + image) * T + t) * E;
            for (int e = 0; e < E; e++)
                sum += row[e];
        }
        out[t] = last > first ? (float)(sum / (last - first)) : 0.0f;
    }
    return MOIRE_OK;
}

/* Viridis, sampled at 0, 1/8, …, 1 (matplotlib's table), linearly interpolated. */
static void viridis(float v, uint8_t rgb[3])
{
    static const uint8_t stops[9][3] = {
        {68, 1, 84},    {71, 44, 122},  {59, 81, 139},   {44, 113, 142}, {33, 144, 141},
        {39, 173, 129}, {92, 200, 99},  {170, 220, 50},  {253, 231, 37},
    };
    v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    float x = v * 8.0f;
    int i = (int)x < 8 ? (int)x : 7;
    float a = x - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lrintf((1.0f - a) * stops[i][c] + a * stops[i + 1][c]);
}

/* A distinct, bright colour per expert: hues a golden angle apart. */
static void expert_colour(int e, float rgb[3])
{
    float h = fmodf((float)e * 137.50776f, 360.0f) / 60.0f, s = 0.75f, v = 0.95f;
    int sector = (int)h % 6;
    float f = h - floorf(h), p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    const float table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    memcpy(rgb, table[sector], sizeof table[sector]);
}

/* One tile: the token grid of `layer` (≥ 0 or MEAN) as RGB, nearest-upsampled. */
static void render_tile(const moire_routing_map *map, int image, int layer,
                        moire_routing_view view, const float *counts, float vmax,
                        moire_image *img, int x0, int y0, int tw, int th)
{
    const int T = map->grid_h * map->grid_w, E = map->num_experts;
    const int first = layer < 0 ? 0 : layer, last = layer < 0 ? map->layer_count : layer + 1;
    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++) {
            const int gy = (int)((int64_t)y * map->grid_h / th);
            const int gx = (int)((int64_t)x * map->grid_w / tw);
            const int t = gy * map->grid_w + gx;
            uint8_t *px = img->pixels + ((size_t)(y0 + y) * img->width + (x0 + x)) * 3;
            if (view == MOIRE_ROUTING_VIEW_COUNT) {
                viridis(vmax > 0.0f ? counts[t] / vmax : 0.0f, px);
                continue;
            }
            float mix[3] = {0, 0, 0}, total = 0.0f;
            for (int l = first; l < last; l++) {
                const float *row =
                    map->token_experts + (((size_t)l * map->image_count + image) * T + t) * E;
                for (int e = 0; e < E; e++) {
                    float colour[3];
                    expert_colour(e, colour);
                    for (int c = 0; c < 3; c++)
                        mix[c] += row[e] * colour[c];
                    total += row[e];
                }
            }
            for (int c = 0; c < 3; c++)
                px[c] = (uint8_t)lrintf(total > 0.0f ? 255.0f * mix[c] / total : 0.0f);
        }
}

moire_status moire_routing_map_render(const moire_routing_map *map, int image, int layer,
                                      moire_routing_view view, int tile_width, int tile_height,
                                      moire_image **out_image)
{
    if (!map || !out_image)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "routing map: a required pointer is NULL");
    *out_image = NULL;
    if (tile_width < 1 || tile_height < 1 || tile_width > 16384 || tile_height > 16384)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "routing map: tile size %dx%d is out of range (1..16384)", tile_width,
                          tile_height);
    if (layer < MOIRE_ROUTING_LAYER_TILED || layer >= map->layer_count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "routing map: layer %d is out of range (-2 = tiled, -1 = mean, 0..%d)",
                          layer, map->layer_count - 1);
    if (image < 0 || image >= map->image_count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "routing map: image %d is out of range (0..%d)", image,
                          map->image_count - 1);
    if (map->layer_count == 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "routing map: the model has no MoE layer");
    if (view == MOIRE_ROUTING_VIEW_DEFAULT)
        view = map->expert_choice ? MOIRE_ROUTING_VIEW_COUNT : MOIRE_ROUTING_VIEW_EXPERTS;
    if (view != MOIRE_ROUTING_VIEW_COUNT && view != MOIRE_ROUTING_VIEW_EXPERTS)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "routing map: unknown view %d", (int)view);

    /* tiles: the mean, then each layer (only the mean when there is one layer) */
    const bool tiled = layer == MOIRE_ROUTING_LAYER_TILED;
    const int tiles = tiled ? (map->layer_count > 1 ? map->layer_count + 1 : 1) : 1;
    const int cols = (int)ceil(sqrt((double)tiles)), rows = (tiles + cols - 1) / cols;
    const int gap = tiles > 1 ? 4 : 0;
    const int64_t width = (int64_t)cols * tile_width + (int64_t)(cols - 1) * gap;
    const int64_t height = (int64_t)rows * tile_height + (int64_t)(rows - 1) * gap;
    if (width > 32768 || height > 32768)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "routing map: %lldx%lld pixels is too large; use smaller tiles",
                          (long long)width, (long long)height);
    const int T = map->grid_h * map->grid_w;
    moire_image *img = moire_image_new((int)width, (int)height, 3);
    float *counts = malloc_array((size_t)T, sizeof(float));
    if (!img || !counts) {
        moire_image_free(img), free(counts);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory rendering a routing map");
    }
    memset(img->pixels, 32, (size_t)width * height * 3); /* the gaps: dark grey */
    /* COUNT scale: 0..E for expert choice; 0..2k for token choice (k in the middle) */
    float vmax = (float)map->num_experts;
    if (!map->expert_choice) {
        moire_routing_map_token_counts(map, image, MOIRE_ROUTING_LAYER_MEAN, counts);
        double mean = 0.0;
        for (int t = 0; t < T; t++)
            mean += counts[t];
        vmax = (float)(2.0 * mean / T);
    }
    for (int i = 0; i < tiles; i++) {
        const int tile_layer = tiled ? i - 1 : layer; /* −1 = mean first */
        moire_routing_map_token_counts(map, image, tile_layer, counts);
        render_tile(map, image, tile_layer, view, counts, vmax, img,
                    (i % cols) * (tile_width + gap), (i / cols) * (tile_height + gap),
                    tile_width, tile_height);
    }
    free(counts);
    *out_image = img;
    return MOIRE_OK;
}
