/* test_golden.c — the CPU reference engine against the PyTorch reference files written by
 * tools/golden/make_golden.py (tests/golden/M.ref.safetensors, M.safetensors).
 *
 * For each tiny model (timm qkv + DDPM fp32; qk-norm + rectified flow fp16):
 *   case a: two images on the trained grid, every named intermediate the debug callback
 *           emits (timestep embedding, adaLN output, router logits, top-k ids and weights,
 *           attention, MoE and block outputs, final output) and the model output;
 *   case b: a non-square grid (positions recomputed);
 *   sampler runs: every sampler for the model's objective, 5 steps with CFG, through
 *           generate_samples (resolution of defaults + batched CFG + sampler); the
 *           img2img case through sampler_run with a CFG wrapper written here.
 * Tolerance: relative error ≤ 1e-4 (fp32 engine vs float64 reference); top-k ids exact.
 */
#include "context.h"
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "safetensors.h"
#include "sampler.h"
#include "test_util.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE 1e-4

static void check_forward_case(moire_ctx *ctx, const moire_model *model, const st_file *ref,
                               const char *prefix, bool capture_intermediates)
{
    char name[64];
    int64_t nx, nt, ny, nout;
    snprintf(name, sizeof name, "%s.input", prefix);
    float *x = test_ref_tensor(ref, name, &nx);
    snprintf(name, sizeof name, "%s.t", prefix);
    float *t = test_ref_tensor(ref, name, &nt);
    snprintf(name, sizeof name, "%s.y", prefix);
    float *yf = test_ref_tensor(ref, name, &ny);
    snprintf(name, sizeof name, "%s.output", prefix);
    float *want = test_ref_tensor(ref, name, &nout);
    const st_tensor *xt = st_find(ref, prefix[0] == 'a' ? "a.input" : "b.input");
    CHECK(x && t && yf && want && xt, "reference case %s incomplete", prefix);
    if (!(x && t && yf && want && xt))
        return;
    const int n = (int)xt->shape[0], h = (int)xt->shape[2], w = (int)xt->shape[3];
    int32_t *y = malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++)
        y[i] = (int32_t)yf[i];
    float *out = malloc((size_t)nout * sizeof(float));

    test_intermediates cap = {.ref = ref, .prefix = prefix, .tolerance = TOLERANCE};
    if (capture_intermediates)
        moire_ctx_set_debug_callback(ctx, test_compare_intermediate, &cap);
    moire_status status = moire_forward(ctx, model, n, h, w, x, t, y, out);
    moire_ctx_set_debug_callback(ctx, NULL, NULL);
    /* Timing for the record (not asserted): the best of a few runs without the callback. */
    double elapsed = 1e30;
    for (int rep = 0; rep < 5 && status == MOIRE_OK; rep++) {
        double started = clock_now_seconds();
        status = moire_forward(ctx, model, n, h, w, x, t, y, out);
        double took = clock_now_seconds() - started;
        elapsed = took < elapsed ? took : elapsed;
    }
    CHECK(status == MOIRE_OK, "forward failed: %s", moire_last_error());
    if (status == MOIRE_OK) {
        snprintf(name, sizeof name, "%s %s output", moire_model_name(model), prefix);
        test_check_tensor(name, out, want, nout, TOLERANCE);
        printf("       forward of %d image(s) at %dx%d: %.2f ms\n", n, w, h, elapsed * 1e3);
    }
    if (capture_intermediates)
        CHECK(cap.compared >= 10, "only %d intermediates were compared", cap.compared);
    free(x), free(t), free(yf), free(want), free(y), free(out);
}

/* CFG wrapper for the img2img case (the same rule as generate.c, written independently). */
typedef struct cfg_wrapper {
    moire_ctx *ctx;
    const moire_model *model;
    int n, h, w, cls;
    float scale;
    int guided_channels;
} cfg_wrapper;

static moire_status cfg_wrapper_call(void *user_data, const float *x_in, const float *t,
                                     float *out)
{
    cfg_wrapper *c = user_data;
    const moire_model_config *cfg = moire_model_get_config(c->model);
    const size_t in = (size_t)cfg->in_channels * c->h * c->w;
    const size_t o = (size_t)cfg->out_channels * c->h * c->w, plane = (size_t)c->h * c->w;
    float *x2 = malloc(2 * c->n * in * sizeof(float)), *t2 = malloc(2 * c->n * sizeof(float));
    float *o2 = malloc(2 * c->n * o * sizeof(float));
    int32_t *y2 = malloc(2 * c->n * sizeof(int32_t));
    for (int i = 0; i < c->n; i++) {
        memcpy(x2 + i * in, x_in + i * in, in * sizeof(float));
        memcpy(x2 + (c->n + i) * in, x_in + i * in, in * sizeof(float));
        t2[i] = t2[c->n + i] = t[i];
        y2[i] = c->cls;
        y2[c->n + i] = cfg->num_classes;
    }
    moire_status status = moire_forward(c->ctx, c->model, 2 * c->n, c->h, c->w, x2, t2, y2, o2);
    for (int i = 0; i < c->n && status == MOIRE_OK; i++)
        for (size_t j = 0; j < o; j++) {
            float cond = o2[i * o + j], uncond = o2[(c->n + i) * o + j];
            out[i * o + j] = (int)(j / plane) < c->guided_channels
                                 ? uncond + c->scale * (cond - uncond)
                                 : cond;
        }
    free(x2), free(t2), free(o2), free(y2);
    return status;
}

static const char *member_string(JsonObject *o, const char *key)
{
    return json_object_has_member(o, key) ? json_object_get_string_member(o, key) : NULL;
}

static void check_sampler_cases(moire_ctx *ctx, const moire_model *model, const st_file *ref)
{
    const char *json = st_metadata_get(ref, "moire.golden");
    CHECK(json != NULL, "reference has no moire.golden metadata");
    if (!json)
        return;
    JsonParser *parser = json_parser_new();
    CHECK(json_parser_load_from_data(parser, json, -1, NULL), "bad golden JSON");
    JsonObject *root = json_node_get_object(json_parser_get_root(parser));
    JsonArray *cases = json_object_get_array_member(root, "sampler_cases");
    const int count = (int)json_array_get_length(cases);
    CHECK(count >= 8, "only %d sampler cases in the reference", count);
    const moire_model_config *cfg = moire_model_get_config(model);

    for (int i = 0; i < count; i++) {
        JsonObject *c = json_array_get_object_element(cases, i);
        const char *sampler_name = member_string(c, "sampler");
        const char *schedule_name = member_string(c, "schedule");
        const char *key = member_string(c, "key");
        JsonArray *seeds = json_object_get_array_member(c, "seeds");
        JsonArray *classes = json_object_get_array_member(c, "classes");
        const int n = (int)json_array_get_length(seeds);
        const int s = cfg->input_size;
        int64_t numel;
        float *want = test_ref_tensor(ref, key, &numel);
        float *got = calloc((size_t)numel, sizeof(float));

        moire_generate_params params = moire_generate_params_default();
        CHECK(moire_sampler_from_name(sampler_name, &params.sampler) == MOIRE_OK, "%s", sampler_name);
        CHECK(moire_schedule_from_name(schedule_name, &params.schedule) == MOIRE_OK, "%s",
              schedule_name);
        params.steps = (int)json_object_get_int_member(c, "steps");
        params.eta = (float)json_object_get_double_member(c, "eta");
        params.cfg_scale = (float)json_object_get_double_member(c, "cfg");
        params.cfg_mode = strcmp(member_string(c, "cfg_mode"), "all") == 0 ? MOIRE_CFG_ALL_CHANNELS
                                                                            : MOIRE_CFG_FIRST_THREE;
        params.seed = (uint64_t)json_array_get_int_element(seeds, 0);
        params.class_id = (int)json_array_get_int_element(classes, 0);
        params.batch_count = n;

        moire_status status;
        const bool img2img = json_object_has_member(c, "img2img");
        if (img2img) {
            int64_t ninit;
            float *init = test_ref_tensor(ref, "sampler.init", &ninit);
            int64_t nmask;
            float *mask = json_object_has_member(c, "mask") ? test_ref_tensor(ref, "sampler.mask", &nmask)
                                                            : NULL;
            uint64_t seed_list[16];
            for (int j = 0; j < n; j++)
                seed_list[j] = (uint64_t)json_array_get_int_element(seeds, j);
            cfg_wrapper wrapper = {.ctx = ctx, .model = model, .n = n, .h = s, .w = s,
                                   .cls = params.class_id, .scale = params.cfg_scale,
                                   .guided_channels = params.cfg_mode == MOIRE_CFG_ALL_CHANNELS
                                                          ? cfg->in_channels : 3};
            moire_sample_request request = {
                .config = cfg, .sampler = params.sampler, .schedule = params.schedule,
                .steps = params.steps, .eta = params.eta, .n = n, .h = s, .w = s,
                .seeds = seed_list, .init = init, .mask = mask,
                .strength = (float)json_object_get_double_member(c, "strength"),
                .model = cfg_wrapper_call, .model_user_data = &wrapper,
            };
            int nfe = 0;
            status = sampler_run(&request, got, &nfe);
            CHECK(nfe == (int)json_object_get_int_member(c, "nfe"), "%s img2img: nfe %d, reference %d",
                  sampler_name, nfe, (int)json_object_get_int_member(c, "nfe"));
            free(init), free(mask);
        } else {
            status = generate_samples(ctx, model, &params, 0, n, NULL, got);
        }
        CHECK(status == MOIRE_OK, "%s/%s failed: %s", sampler_name, schedule_name,
              moire_last_error());
        char label[128];
        snprintf(label, sizeof label, "%s %s/%s%s%s eta=%g cfg=%g", moire_model_name(model),
                 sampler_name, schedule_name, img2img ? " img2img" : "",
                 json_object_has_member(c, "mask") ? "+mask" : "", (double)params.eta,
                 (double)params.cfg_scale);
        if (status == MOIRE_OK)
            test_check_tensor(label, got, want, numel, TOLERANCE);
        free(want), free(got);
    }
    g_object_unref(parser);
}

static void check_model(moire_ctx *ctx, const char *name)
{
    char path[256], ref_path[256];
    snprintf(path, sizeof path, "golden/%s.safetensors", name);
    snprintf(ref_path, sizeof ref_path, "%s", test_data_path(path));
    moire_model *model = NULL;
    moire_status status = moire_model_load(ref_path, &model);
    CHECK(status == MOIRE_OK, "loading %s: %s", ref_path, moire_last_error());
    if (status != MOIRE_OK)
        return;
    snprintf(path, sizeof path, "golden/%s.ref.safetensors", name);
    st_file *ref = NULL;
    status = st_open(test_data_path(path), &ref);
    CHECK(status == MOIRE_OK, "opening reference: %s", moire_last_error());
    if (status == MOIRE_OK) {
        check_forward_case(ctx, model, ref, "a", true);
        check_forward_case(ctx, model, ref, "b", false);
        check_sampler_cases(ctx, model, ref);
        st_close(ref);
    }
    moire_model_free(model);
}

int main(void)
{
    moire_ctx *ctx = NULL;
    moire_ctx_params params = moire_ctx_params_default();
    params.device = MOIRE_DEVICE_CPU;
    if (moire_ctx_new(&params, &ctx) != MOIRE_OK) {
        fprintf(stderr, "context: %s\n", moire_last_error());
        return 1;
    }
    check_model(ctx, "tiny_qkv");
    check_model(ctx, "tiny_qknorm");
    moire_ctx_free(ctx);
    return test_finish("golden");
}
