/* test_golden_ecdit.c — the CPU EC-DiT against the PyTorch reference files written by
 * tools/golden/make_golden_ecdit.py (tests/golden/M.ref.safetensors, M.safetensors).
 *
 * For each tiny model (pixel RGBA fp32 with MoE at blocks 1 and 3; latent fp16 with qk-norm,
 * a shared expert, every block MoE and routing groups of 6 tokens):
 *   tokenizer: the ids of a few awkward prompts (case, punctuation, UTF-8, unknown words,
 *           truncation, empty);
 *   case a: two images (a prompt and the empty prompt) through moire_forward_text, every
 *           named intermediate: text encoder output and pooled embedding, adaLN, attention
 *           and cross-attention, router scores, the tokens each expert took (exact), gates,
 *           experts per token (exact), FFN and block outputs, the output;
 *   case b: a non-square grid;
 *   routing (op level): exact ties (the lower token index wins, a token no expert takes),
 *           C clamped to the group size, a small capacity;
 *   sampler runs through generate_samples with prompt, negative prompt and CFG.
 * Tolerance: relative error ≤ 1e-4 (fp32 engine vs float64 reference); indices exact.
 */
#include "context.h"
#include "ecdit.h"
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE 1e-4

static const char **string_array(JsonObject *root, const char *member, int *count)
{
    JsonArray *array = json_object_get_array_member(root, member);
    *count = (int)json_array_get_length(array);
    const char **out = calloc((size_t)*count, sizeof *out);
    for (int i = 0; i < *count; i++)
        out[i] = json_array_get_string_element(array, (guint)i);
    return out;
}

static void check_tokenizer(const moire_model *model, const st_file *ref, JsonObject *root)
{
    int count;
    const char **prompts = string_array(root, "tokenizer_prompts", &count);
    const int L = model->config.text_max_tokens;
    int32_t *ids = malloc((size_t)L * sizeof(int32_t));
    float *got = malloc((size_t)L * sizeof(float));
    for (int j = 0; j < count; j++) {
        char key[32], label[160];
        snprintf(key, sizeof key, "tok.%d", j);
        int64_t numel;
        float *want = test_ref_tensor(ref, key, &numel);
        CHECK(want && numel == L, "%s missing", key);
        if (!want || numel != L) {
            free(want);
            continue;
        }
        ecdit_tokenize(&model->ecdit->vocab, prompts[j], L, ids, NULL);
        for (int i = 0; i < L; i++)
            got[i] = (float)ids[i];
        snprintf(label, sizeof label, "tokenize \"%.30s\"", prompts[j]);
        test_check_exact(label, got, want, L);
        free(want);
    }
    free(ids), free(got), free(prompts);
}

static void check_forward_case(moire_ctx *ctx, const moire_model *model, const st_file *ref,
                               JsonObject *root, const char *prefix, bool intermediates)
{
    char name[64];
    int64_t nx, nt, nout;
    snprintf(name, sizeof name, "%s.input", prefix);
    const st_tensor *xt = st_find(ref, name);
    float *x = test_ref_tensor(ref, name, &nx);
    snprintf(name, sizeof name, "%s.t", prefix);
    float *t = test_ref_tensor(ref, name, &nt);
    snprintf(name, sizeof name, "%s.output", prefix);
    float *want = test_ref_tensor(ref, name, &nout);
    snprintf(name, sizeof name, "%s_prompts", prefix);
    int prompt_count;
    const char **prompts = string_array(root, name, &prompt_count);
    CHECK(x && t && want && xt, "reference case %s incomplete", prefix);
    if (!(x && t && want && xt))
        return;
    const int n = (int)xt->shape[0], h = (int)xt->shape[2], w = (int)xt->shape[3];
    CHECK(prompt_count == n, "case %s: %d prompts for %d images", prefix, prompt_count, n);
    float *out = malloc((size_t)nout * sizeof(float));

    test_intermediates cap = {.ref = ref, .prefix = prefix, .tolerance = TOLERANCE};
    if (intermediates)
        moire_ctx_set_debug_callback(ctx, test_compare_intermediate, &cap);
    moire_status status = moire_forward_text(ctx, model, n, h, w, x, t, prompts, out);
    moire_ctx_set_debug_callback(ctx, NULL, NULL);
    double best = 1e30;
    for (int rep = 0; rep < 5 && status == MOIRE_OK; rep++) {
        double started = clock_now_seconds();
        status = moire_forward_text(ctx, model, n, h, w, x, t, prompts, out);
        double took = clock_now_seconds() - started;
        best = took < best ? took : best;
    }
    CHECK(status == MOIRE_OK, "forward failed: %s", moire_last_error());
    if (status == MOIRE_OK) {
        snprintf(name, sizeof name, "%s %s output", moire_model_name(model), prefix);
        test_check_tensor(name, out, want, nout, TOLERANCE);
        printf("       forward of %d image(s) at %dx%d (text encoder included): %.2f ms\n", n,
               w, h, best * 1e3);
    }
    if (intermediates)
        CHECK(cap.compared >= 20, "only %d intermediates were compared", cap.compared);
    free(x), free(t), free(want), free(out), free(prompts);
}

/* The selection op on its own: ties, clamped capacity, a token no expert takes. */
static void check_routing_cases(moire_ctx *ctx, const st_file *ref, JsonObject *root)
{
    if (!json_object_has_member(root, "routing_cases"))
        return;
    JsonArray *cases = json_object_get_array_member(root, "routing_cases");
    for (guint c = 0; c < json_array_get_length(cases); c++) {
        JsonObject *rc = json_array_get_object_element(cases, c);
        const char *key = json_object_get_string_member(rc, "key");
        const float fc = (float)json_object_get_double_member(rc, "capacity_factor");
        const int C = (int)json_object_get_int_member(rc, "capacity");
        char name[96];
        int64_t nh, nw, ntok, ngate, nscore;
        snprintf(name, sizeof name, "%s.h", key);
        const st_tensor *ht = st_find(ref, name);
        float *h = test_ref_tensor(ref, name, &nh);
        snprintf(name, sizeof name, "%s.w", key);
        float *w = test_ref_tensor(ref, name, &nw);
        snprintf(name, sizeof name, "%s.tokens", key);
        float *want_tokens = test_ref_tensor(ref, name, &ntok);
        snprintf(name, sizeof name, "%s.gates", key);
        float *want_gates = test_ref_tensor(ref, name, &ngate);
        snprintf(name, sizeof name, "%s.scores", key);
        float *want_scores = test_ref_tensor(ref, name, &nscore);
        CHECK(h && w && want_tokens && want_gates && want_scores && ht, "%s incomplete", key);
        if (!(h && w && want_tokens && want_gates && want_scores && ht))
            continue;
        const int S = (int)ht->shape[0], D = (int)ht->shape[1], E = (int)(nw / D);
        const int M = moire_ec_slots_per_image(S, 0, E, fc);
        CHECK(M == C && ntok == (int64_t)E * C, "%s: capacity %d, reference %d", key, M, C);
        float *scores = malloc((size_t)S * E * sizeof(float));
        int32_t *tokens = malloc((size_t)E * M * sizeof(int32_t));
        float *gates = malloc((size_t)E * M * sizeof(float));
        float *as_float = malloc((size_t)E * M * sizeof(float));
        moire_tensor wt;
        const float *w_part = w;
        CHECK(ctx->ops.weight_upload(&ctx->ops, &wt, &w_part, 1, E, D, MOIRE_WEIGHT_EXACT) ==
                  MOIRE_OK, "%s: %s", key, moire_last_error());
        moire_status status = ctx->ops.router_expert_choice(&ctx->ops, scores, tokens, gates, h,
                                                            &wt, 1, S, 0, D, E, fc);
        ctx->ops.weight_free(&ctx->ops, &wt);
        CHECK(status == MOIRE_OK, "%s: %s", key, moire_last_error());
        for (int i = 0; i < E * M; i++)
            as_float[i] = (float)tokens[i];
        snprintf(name, sizeof name, "%s tokens (C=%d of S=%d)", key, M, S);
        if (ntok == (int64_t)E * M) {
            test_check_exact(name, as_float, want_tokens, ntok);
            snprintf(name, sizeof name, "%s gates", key);
            test_check_tensor(name, gates, want_gates, ngate, TOLERANCE);
        }
        snprintf(name, sizeof name, "%s scores", key);
        test_check_tensor(name, scores, want_scores, nscore, TOLERANCE);
        JsonArray *unchosen = json_object_get_array_member(rc, "unchosen");
        for (guint u = 0; u < json_array_get_length(unchosen); u++) {
            int token = (int)json_array_get_int_element(unchosen, u);
            bool taken = false;
            for (int i = 0; i < E * M; i++)
                taken |= tokens[i] == token;
            CHECK(!taken, "%s: token %d should be chosen by no expert", key, token);
        }
        free(h), free(w), free(want_tokens), free(want_gates), free(want_scores);
        free(scores), free(tokens), free(gates), free(as_float);
    }
}

static void check_sampler_cases(moire_ctx *ctx, const moire_model *model, const st_file *ref,
                                JsonObject *root)
{
    JsonArray *cases = json_object_get_array_member(root, "sampler_cases");
    const int count = (int)json_array_get_length(cases);
    CHECK(count >= 5, "only %d sampler cases in the reference", count);
    for (int i = 0; i < count; i++) {
        JsonObject *c = json_array_get_object_element(cases, i);
        const char *sampler = json_object_get_string_member(c, "sampler");
        const char *schedule = json_object_get_string_member(c, "schedule");
        JsonArray *seeds = json_object_get_array_member(c, "seeds");
        const int n = (int)json_array_get_length(seeds);
        int64_t numel;
        float *want = test_ref_tensor(ref, json_object_get_string_member(c, "key"), &numel);
        float *got = calloc((size_t)numel, sizeof(float));
        moire_generate_params params = moire_generate_params_default();
        CHECK(moire_sampler_from_name(sampler, &params.sampler) == MOIRE_OK, "%s", sampler);
        CHECK(moire_schedule_from_name(schedule, &params.schedule) == MOIRE_OK, "%s", schedule);
        params.steps = (int)json_object_get_int_member(c, "steps");
        params.eta = (float)json_object_get_double_member(c, "eta");
        params.cfg_scale = (float)json_object_get_double_member(c, "cfg");
        params.seed = (uint64_t)json_array_get_int_element(seeds, 0);
        params.prompt = json_object_get_string_member(c, "prompt");
        params.negative_prompt = json_object_get_string_member(c, "negative");
        params.batch_count = n;
        moire_status status = generate_samples(ctx, model, &params, 0, n, NULL, got);
        CHECK(status == MOIRE_OK, "%s/%s failed: %s", sampler, schedule, moire_last_error());
        char label[160];
        snprintf(label, sizeof label, "%s %s/%s cfg=%g eta=%g \"%s\" neg \"%s\"",
                 moire_model_name(model), sampler, schedule, (double)params.cfg_scale,
                 (double)params.eta, params.prompt, params.negative_prompt);
        if (status == MOIRE_OK && want)
            test_check_tensor(label, got, want, numel, TOLERANCE);
        free(want), free(got);
    }
}

static void check_model(moire_ctx *ctx, const char *name)
{
    char rel[128];
    snprintf(rel, sizeof rel, "golden/%s.safetensors", name);
    moire_model *model = NULL;
    moire_status status = moire_model_load(test_data_path(rel), &model);
    CHECK(status == MOIRE_OK, "loading %s: %s", rel, moire_last_error());
    if (status != MOIRE_OK)
        return;
    CHECK(model->family == MOIRE_FAMILY_EC_DIT, "%s is not loaded as EC-DiT", name);
    snprintf(rel, sizeof rel, "golden/%s.ref.safetensors", name);
    st_file *ref = NULL;
    status = st_open(test_data_path(rel), &ref);
    CHECK(status == MOIRE_OK, "opening reference: %s", moire_last_error());
    const char *json = ref ? st_metadata_get(ref, "moire.golden") : NULL;
    JsonParser *parser = json_parser_new();
    if (json && json_parser_load_from_data(parser, json, -1, NULL)) {
        JsonObject *root = json_node_get_object(json_parser_get_root(parser));
        check_tokenizer(model, ref, root);
        check_forward_case(ctx, model, ref, root, "a", true);
        check_forward_case(ctx, model, ref, root, "b", false);
        check_routing_cases(ctx, ref, root);
        check_sampler_cases(ctx, model, ref, root);
    } else {
        CHECK(false, "%s has no readable moire.golden metadata", rel);
    }
    g_object_unref(parser);
    st_close(ref);
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
    check_model(ctx, "tiny_ecdit");
    check_model(ctx, "tiny_ecdit_latent");
    moire_ctx_free(ctx);
    return test_finish("golden_ecdit");
}
