/* test_routing_map.c — the adaptive-compute map of a generate run (moire.h, "Routing maps")
 * for both families: its shape, that expert choice fills every expert to exactly its
 * capacity, that token choice gives every token top_k experts, that the map averages over
 * the evaluations, and that it renders (tiles, views, argument errors). */
#include "moire.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static moire_routing_map *run(moire_ctx *ctx, const moire_model *model, const char *prompt,
                              int steps, int batch)
{
    moire_routing_map *map = NULL;
    moire_image **images = NULL;
    int count = 0;
    moire_generate_params params = moire_generate_params_default();
    params.prompt = prompt;
    params.steps = steps;
    params.cfg_scale = 3.0f;
    params.batch_count = batch;
    params.routing_map = &map;
    moire_status status = moire_generate(ctx, model, &params, NULL, &images, &count);
    CHECK(status == MOIRE_OK, "generate: %s", moire_last_error());
    moire_images_free(images, count);
    return map;
}

static void check_render(const moire_routing_map *map)
{
    moire_image *img = NULL;
    CHECK(moire_routing_map_render(map, 0, MOIRE_ROUTING_LAYER_TILED, MOIRE_ROUTING_VIEW_DEFAULT,
                                   32, 16, &img) == MOIRE_OK, "%s", moire_last_error());
    const int tiles = map->layer_count > 1 ? map->layer_count + 1 : 1;
    const int cols = (int)ceil(sqrt((double)tiles)), rows = (tiles + cols - 1) / cols;
    CHECK(img && img->channels == 3 && img->width == cols * 32 + (cols - 1) * 4 &&
              img->height == rows * 16 + (rows - 1) * 4,
          "tiled map is %dx%d", img ? img->width : 0, img ? img->height : 0);
    moire_image_free(img);
    for (int view = MOIRE_ROUTING_VIEW_COUNT; view <= MOIRE_ROUTING_VIEW_EXPERTS; view++) {
        CHECK(moire_routing_map_render(map, map->image_count - 1, 0, (moire_routing_view)view,
                                       7, 5, &img) == MOIRE_OK, "%s", moire_last_error());
        CHECK(img && img->width == 7 && img->height == 5, "single layer size");
        moire_image_free(img);
    }
    img = NULL;
    CHECK(moire_routing_map_render(map, map->image_count, 0, MOIRE_ROUTING_VIEW_DEFAULT, 8, 8,
                                   &img) == MOIRE_ERROR_INVALID_ARGUMENT && !img,
          "image out of range accepted");
    CHECK(moire_routing_map_render(map, 0, map->layer_count, MOIRE_ROUTING_VIEW_DEFAULT, 8, 8,
                                   &img) == MOIRE_ERROR_INVALID_ARGUMENT, "layer out of range");
    CHECK(moire_routing_map_render(map, 0, -1, MOIRE_ROUTING_VIEW_DEFAULT, 0, 8, &img) ==
              MOIRE_ERROR_INVALID_ARGUMENT, "zero tile size accepted");
}

int main(void)
{
    moire_ctx *ctx = NULL;
    moire_ctx_params cp = moire_ctx_params_default();
    cp.device = MOIRE_DEVICE_CPU;
    if (moire_ctx_new(&cp, &ctx) != MOIRE_OK)
        return 1;

    /* Expert choice: 16x16 RGBA, patch 2 → 64 tokens, E = 4, f_c = 2 → C = 32 per expert. */
    moire_model *ec = load("tiny_ecdit");
    moire_routing_map *map = run(ctx, ec, "red apple", 3, 2);
    CHECK(map != NULL, "no routing map");
    if (map) {
        const int T = map->grid_h * map->grid_w, E = map->num_experts;
        CHECK(map->expert_choice && map->grid_h == 8 && map->grid_w == 8 && map->image_count == 2,
              "map geometry %dx%d, %d images", map->grid_w, map->grid_h, map->image_count);
        CHECK(map->layer_count == 2 && map->layers[0] == 1 && map->layers[1] == 3,
              "MoE layers %d: %d, %d", map->layer_count, map->layers[0], map->layers[1]);
        CHECK(map->evaluations == 3, "%d evaluations averaged, want 3", map->evaluations);
        for (int l = 0; l < map->layer_count; l++)
            for (int e = 0; e < E; e++)
                CHECK(fabsf(map->expert_load[l * E + e] - 32.0f) < 1e-4f,
                      "layer %d expert %d load %g, want its capacity 32", l, e,
                      (double)map->expert_load[l * E + e]);
        float *counts = malloc((size_t)T * sizeof(float));
        CHECK(moire_routing_map_token_counts(map, 1, MOIRE_ROUTING_LAYER_MEAN, counts) ==
                  MOIRE_OK, "%s", moire_last_error());
        double sum = 0, low = 1e9, high = 0;
        for (int t = 0; t < T; t++) {
            sum += counts[t];
            low = counts[t] < low ? counts[t] : low;
            high = counts[t] > high ? counts[t] : high;
        }
        CHECK(fabs(sum / T - 2.0) < 1e-4, "mean experts per token %g, want f_c = 2", sum / T);
        CHECK(low >= 0.0 && high <= E && high > low, "experts per token in [%g, %g]", low, high);
        printf("OK     EC-DiT map: experts per token %.2f..%.2f (mean %.3f)\n", low, high, sum / T);
        free(counts);
        check_render(map);
    }
    moire_routing_map_free(map);
    moire_model_free(ec);

    /* Token choice: every token has exactly top_k = 2 experts in every layer. */
    moire_model *tc = load("tiny_qknorm");
    map = run(ctx, tc, "3", 2, 1);
    CHECK(map != NULL, "no routing map");
    if (map) {
        const int T = map->grid_h * map->grid_w;
        CHECK(!map->expert_choice && map->layer_count == 2 && map->evaluations == 2,
              "token-choice map: %d layers, %d evaluations", map->layer_count, map->evaluations);
        float *counts = malloc((size_t)T * sizeof(float));
        int bad = 0;
        for (int l = 0; l < map->layer_count; l++) {
            moire_routing_map_token_counts(map, 0, l, counts);
            for (int t = 0; t < T; t++)
                bad += fabsf(counts[t] - 2.0f) > 1e-5f;
            double load = 0;
            for (int e = 0; e < map->num_experts; e++)
                load += map->expert_load[l * map->num_experts + e];
            CHECK(fabs(load - 2.0 * T) < 1e-3, "layer %d: total load %g, want 2T", l, load);
        }
        CHECK(bad == 0, "%d tokens without exactly 2 experts", bad);
        free(counts);
        check_render(map);
    }
    moire_routing_map_free(map);
    moire_model_free(tc);
    moire_ctx_free(ctx);
    return test_finish("routing_map");
}
