/* test_model_load.c — the model loader on tiny DiT-MoE checkpoints built here with the
 * safetensors writer: both attention layouts, with "moire.config" metadata and inferred from
 * the keys, F32 (zero copy), F16/BF16 and misaligned F32 (converted), then one broken file
 * per check (missing, misshapen or non-finite tensor, inconsistent metadata), and class
 * prompt resolution. The key list here is written independently of model.c's table, from
 * the checkpoint key reference, so the two check each other. */
#include "internal.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Building tiny checkpoints
 * ---------------------------------------------------------------------------------------- */

typedef struct tiny_model {
    moire_attention_layout layout;
    int depth, hidden, heads, experts, top_k, expert_hidden, shared_hidden;
    int patch, in_channels, out_channels, classes, input_size;
    st_dtype dtype;            /* storage of every weight                                 */
    const char *bf16_key;      /* this one weight stored as BF16 instead (a "mixed" file)  */
    bool with_pos_embed;
    bool with_metadata;        /* write "moire.config" from the fields above               */
    const char *config_json;   /* … or exactly this text                                   */
    const char *class_names;   /* "moire.class_names" JSON, or NULL                        */
    const char *defaults_json; /* "moire.defaults" JSON, or NULL                           */
    /* damage, for the failure tests */
    const char *skip_key;      /* leave this tensor out                                    */
    const char *misshape_key;  /* this tensor gets one more row                            */
    const char *nan_key;       /* this tensor gets a NaN at index 5                        */
    const char *extra_key;     /* one more [4] tensor the model does not use               */
} tiny_model;

/* The geometry the brief asks for: head_dim 18 (not a power of two). */
static tiny_model tiny_default(moire_attention_layout layout)
{
    return (tiny_model){
        .layout = layout, .depth = 2, .hidden = 72, .heads = 4, .experts = 4, .top_k = 2,
        .expert_hidden = 4 * 72, .shared_hidden = 2 * 72, .patch = 2, .in_channels = 4,
        .out_channels = 8, .classes = 10, .input_size = 8, .dtype = ST_F32,
        .with_pos_embed = true, .with_metadata = true,
    };
}

typedef struct builder {
    const tiny_model *spec;
    st_writer *writer;
    float **buffers;   /* kept alive until the writer has saved */
    int buffer_count;
    int64_t parameter_count; /* numel of every weight but pos_embed */
    bool failed;
} builder;

/* Deterministic values per tensor name, so a test can regenerate what was written. */
static uint64_t name_seed(const char *name)
{
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */
    for (const char *c = name; *c; c++)
        hash = (hash ^ (unsigned char)*c) * 1099511628211ull;
    return hash;
}

static void fill_values(float *x, int64_t n, const char *name)
{
    test_fill_random(x, n, name_seed(name), -0.5f, 0.5f);
}

static void add_tensor(builder *b, const char *name, int ndim, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3)
{
    const tiny_model *m = b->spec;
    if (m->skip_key && strcmp(name, m->skip_key) == 0)
        return;
    int64_t shape[4] = {d0, d1, d2, d3};
    if (m->misshape_key && strcmp(name, m->misshape_key) == 0)
        shape[0] += 1;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        numel *= shape[d];
    float *data = malloc((size_t)numel * sizeof(float));
    fill_values(data, numel, name);
    if (m->nan_key && strcmp(name, m->nan_key) == 0)
        data[5] = NAN;
    b->buffers = realloc(b->buffers, (size_t)(b->buffer_count + 1) * sizeof(float *));
    b->buffers[b->buffer_count++] = data;
    st_dtype dtype = m->bf16_key && strcmp(name, m->bf16_key) == 0 ? ST_BF16 : m->dtype;
    if (st_writer_add_f32(b->writer, name, dtype, ndim, shape, data) != MOIRE_OK)
        b->failed = true;
    if (strcmp(name, "pos_embed") != 0)
        b->parameter_count += numel;
}

static void add_swiglu(builder *b, const char *prefix, int width, int hidden)
{
    char name[160];
    snprintf(name, sizeof name, "%sgate_proj.weight", prefix);
    add_tensor(b, name, 2, width, hidden, 0, 0);
    snprintf(name, sizeof name, "%sup_proj.weight", prefix);
    add_tensor(b, name, 2, width, hidden, 0, 0);
    snprintf(name, sizeof name, "%sdown_proj.weight", prefix);
    add_tensor(b, name, 2, hidden, width, 0, 0);
}

static char *config_json_of(const tiny_model *m)
{
    char *json = malloc(1024);
    snprintf(json, 1024,
             "{\"family\": \"dit-moe\", \"depth\": %d, \"hidden_size\": %d, \"num_heads\": %d, "
             "\"patch_size\": %d, \"in_channels\": %d, \"out_channels\": %d, "
             "\"num_experts\": %d, \"top_k\": %d, \"expert_hidden\": %d, "
             "\"shared_expert_hidden\": %d, \"attention_layout\": \"%s\", \"num_classes\": %d, "
             "\"learn_sigma\": %s, \"input_size\": %d, \"objective\": \"%s\", "
             "\"num_train_timesteps\": 1000, \"beta_start\": 0.0001, \"beta_end\": 0.02, "
             "\"space\": \"latent\", \"layernorm_eps\": 1e-06}",
             m->depth, m->hidden, m->heads, m->patch, m->in_channels, m->out_channels,
             m->experts, m->top_k, m->expert_hidden, m->shared_hidden,
             m->layout == MOIRE_ATTENTION_QK_NORM ? "qk_norm" : "qkv", m->classes,
             m->out_channels == 2 * m->in_channels ? "true" : "false", m->input_size,
             m->layout == MOIRE_ATTENTION_QK_NORM ? "rectified_flow" : "ddpm_eps");
    return json;
}

/* Writes the checkpoint to test_tmp_dir()/file_name; returns its path (static buffer) and
 * the parameter count it holds. */
static const char *build_model(const tiny_model *m, const char *file_name,
                               int64_t *parameter_count)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), file_name);
    builder b = {.spec = m, .writer = st_writer_new()};
    int64_t D = m->hidden, p = m->patch, tokens = (m->input_size / p) * (m->input_size / p);

    if (m->with_pos_embed)
        add_tensor(&b, "pos_embed", 3, 1, tokens, D, 0);
    add_tensor(&b, "x_embedder.proj.weight", 4, D, m->in_channels, p, p);
    add_tensor(&b, "x_embedder.proj.bias", 1, D, 0, 0, 0);
    add_tensor(&b, "t_embedder.mlp.0.weight", 2, D, 256, 0, 0);
    add_tensor(&b, "t_embedder.mlp.0.bias", 1, D, 0, 0, 0);
    add_tensor(&b, "t_embedder.mlp.2.weight", 2, D, D, 0, 0);
    add_tensor(&b, "t_embedder.mlp.2.bias", 1, D, 0, 0, 0);
    add_tensor(&b, "y_embedder.embedding_table.weight", 2, m->classes + 1, D, 0, 0);
    add_tensor(&b, "final_layer.adaLN_modulation.1.weight", 2, 2 * D, D, 0, 0);
    add_tensor(&b, "final_layer.adaLN_modulation.1.bias", 1, 2 * D, 0, 0, 0);
    add_tensor(&b, "final_layer.linear.weight", 2, p * p * m->out_channels, D, 0, 0);
    add_tensor(&b, "final_layer.linear.bias", 1, p * p * m->out_channels, 0, 0, 0);
    for (int i = 0; i < m->depth; i++) {
        char name[160], prefix[96];
#define BLOCK_TENSOR(suffix, ndim, d0, d1)                                                 \
        snprintf(name, sizeof name, "blocks.%d." suffix, i);                                 \
        add_tensor(&b, name, ndim, d0, d1, 0, 0)
        BLOCK_TENSOR("adaLN_modulation.1.weight", 2, 6 * D, D);
        BLOCK_TENSOR("adaLN_modulation.1.bias", 1, 6 * D, 0);
        if (m->layout == MOIRE_ATTENTION_QKV) {
            BLOCK_TENSOR("attn.qkv.weight", 2, 3 * D, D);
            BLOCK_TENSOR("attn.qkv.bias", 1, 3 * D, 0);
            BLOCK_TENSOR("attn.proj.weight", 2, D, D);
            BLOCK_TENSOR("attn.proj.bias", 1, D, 0);
        } else {
            int64_t head_dim = D / m->heads;
            BLOCK_TENSOR("attn.Wqkv.weight", 2, 3 * D, D);
            BLOCK_TENSOR("attn.Wqkv.bias", 1, 3 * D, 0);
            BLOCK_TENSOR("attn.q_norm.weight", 1, head_dim, 0);
            BLOCK_TENSOR("attn.q_norm.bias", 1, head_dim, 0);
            BLOCK_TENSOR("attn.k_norm.weight", 1, head_dim, 0);
            BLOCK_TENSOR("attn.k_norm.bias", 1, head_dim, 0);
            BLOCK_TENSOR("attn.out_proj.weight", 2, D, D);
            BLOCK_TENSOR("attn.out_proj.bias", 1, D, 0);
        }
        BLOCK_TENSOR("moe.gate.weight", 2, m->experts, D);
#undef BLOCK_TENSOR
        for (int e = 0; e < m->experts; e++) {
            snprintf(prefix, sizeof prefix, "blocks.%d.moe.experts.%d.", i, e);
            add_swiglu(&b, prefix, m->expert_hidden, m->hidden);
        }
        if (m->shared_hidden > 0) {
            snprintf(prefix, sizeof prefix, "blocks.%d.moe.shared_experts.", i);
            add_swiglu(&b, prefix, m->shared_hidden, m->hidden);
        }
    }
    if (m->extra_key) {
        add_tensor(&b, m->extra_key, 1, 4, 0, 0, 0);
        b.parameter_count -= 4;
    }

    if (m->config_json) {
        st_writer_set_metadata(b.writer, "moire.config", m->config_json);
    } else if (m->with_metadata) {
        char *json = config_json_of(m);
        st_writer_set_metadata(b.writer, "moire.config", json);
        free(json);
    }
    if (m->class_names)
        st_writer_set_metadata(b.writer, "moire.class_names", m->class_names);
    if (m->defaults_json)
        st_writer_set_metadata(b.writer, "moire.defaults", m->defaults_json);
    st_writer_set_metadata(b.writer, "format", "pt"); /* foreign metadata is ignored */

    CHECK(!b.failed, "adding tensors for %s: %s", file_name, moire_last_error());
    moire_status status = st_writer_save(b.writer, path);
    CHECK(status == MOIRE_OK, "saving %s: %s", file_name, moire_last_error());
    st_writer_free(b.writer);
    for (int i = 0; i < b.buffer_count; i++)
        free(b.buffers[i]);
    free(b.buffers);
    if (parameter_count)
        *parameter_count = b.parameter_count;
    return path;
}

/* Checks a loaded weight against the values written under `name`. */
static void check_weight(const char *what, const float *got, const char *name, int64_t n,
                         double tolerance)
{
    CHECK(got != NULL, "%s: %s is not bound", what, name);
    if (!got)
        return;
    float *want = malloc((size_t)n * sizeof(float));
    fill_values(want, n, name);
    char label[192];
    snprintf(label, sizeof label, "%s %s", what, name);
    test_check_tensor(label, got, want, n, tolerance);
    free(want);
}

static bool points_into(const moire_model *model, const float *pointer)
{
    return model->arena && pointer >= model->arena &&
           pointer < model->arena + model->arena_floats;
}

/* ------------------------------------------------------------------------------------------
 * Loading good files
 * ---------------------------------------------------------------------------------------- */

static void check_config_matches(const char *what, const moire_model_config *c,
                                 const tiny_model *m)
{
    CHECK(strcmp(c->family, "dit-moe") == 0, "%s: family %s", what, c->family);
    CHECK(c->depth == m->depth, "%s: depth %d", what, c->depth);
    CHECK(c->hidden_size == m->hidden, "%s: hidden %d", what, c->hidden_size);
    CHECK(c->num_heads == m->heads, "%s: heads %d, want %d", what, c->num_heads, m->heads);
    CHECK(c->patch_size == m->patch, "%s: patch %d", what, c->patch_size);
    CHECK(c->in_channels == m->in_channels, "%s: in %d", what, c->in_channels);
    CHECK(c->out_channels == m->out_channels, "%s: out %d", what, c->out_channels);
    CHECK(c->num_experts == m->experts, "%s: experts %d", what, c->num_experts);
    CHECK(c->top_k == m->top_k, "%s: top_k %d", what, c->top_k);
    CHECK(c->expert_hidden == m->expert_hidden, "%s: F %d", what, c->expert_hidden);
    CHECK(c->shared_expert_hidden == m->shared_hidden, "%s: S %d", what,
          c->shared_expert_hidden);
    CHECK(c->attention_layout == m->layout, "%s: layout %d", what, (int)c->attention_layout);
    CHECK(c->num_classes == m->classes, "%s: classes %d", what, c->num_classes);
    CHECK(c->learn_sigma == (m->out_channels == 2 * m->in_channels), "%s: learn_sigma", what);
    CHECK(c->input_size == (m->with_pos_embed || m->with_metadata ? m->input_size : 32),
          "%s: input_size %d", what, c->input_size);
    moire_objective objective = m->layout == MOIRE_ATTENTION_QK_NORM
                                    ? MOIRE_OBJECTIVE_RECTIFIED_FLOW : MOIRE_OBJECTIVE_DDPM_EPS;
    CHECK(c->objective == objective, "%s: objective %d", what, (int)c->objective);
    CHECK(c->num_train_timesteps == 1000, "%s: T %d", what, c->num_train_timesteps);
    CHECK(c->beta_start == 1e-4f && c->beta_end == 0.02f, "%s: betas %g %g", what,
          (double)c->beta_start, (double)c->beta_end);
    CHECK(c->space == MOIRE_SPACE_LATENT, "%s: space", what);
    CHECK(c->layernorm_eps == 1e-6f, "%s: eps %g", what, (double)c->layernorm_eps);
}

/* Loads the model described by `m` and checks its config and a sample of its weights. */
static void check_good_model(const char *what, const tiny_model *m, const char *file_name,
                             const char *want_dtype, double tolerance)
{
    int64_t parameters = 0;
    const char *path = build_model(m, file_name, &parameters);
    moire_model *model = NULL;
    moire_status status = moire_model_load(path, &model);
    CHECK(status == MOIRE_OK, "%s: load: %s", what, moire_last_error());
    if (!model)
        return;
    const moire_model_config *c = moire_model_get_config(model);
    check_config_matches(what, c, m);
    CHECK(moire_model_parameter_count(model) == parameters, "%s: %lld parameters, want %lld",
          what, (long long)moire_model_parameter_count(model), (long long)parameters);
    CHECK(strcmp(moire_model_dtype_name(model), want_dtype) == 0, "%s: dtype %s, want %s",
          what, moire_model_dtype_name(model), want_dtype);
    CHECK(strcmp(moire_model_name(model), file_name) == 0, "%s: name %s", what,
          moire_model_name(model));

    const dit_weights *w = &model->weights;
    int64_t D = m->hidden, hd = D / m->heads;
    if (m->with_pos_embed)
        check_weight(what, w->pos_embed, "pos_embed",
                     D * (m->input_size / m->patch) * (m->input_size / m->patch), tolerance);
    else
        CHECK(w->pos_embed == NULL, "%s: pos_embed bound without a tensor", what);
    check_weight(what, w->x_embedder_proj_weight, "x_embedder.proj.weight",
                 D * m->in_channels * m->patch * m->patch, tolerance);
    check_weight(what, w->t_embedder_mlp0_weight, "t_embedder.mlp.0.weight", D * 256,
                 tolerance);
    check_weight(what, w->y_embedder_table, "y_embedder.embedding_table.weight",
                 (m->classes + 1) * D, tolerance);
    check_weight(what, w->final_linear_bias, "final_layer.linear.bias",
                 m->patch * m->patch * m->out_channels, tolerance);
    const dit_block_weights *last = &w->blocks[m->depth - 1];
    char name[160];
    bool qk_norm = m->layout == MOIRE_ATTENTION_QK_NORM;
    snprintf(name, sizeof name, "blocks.%d.attn.%s.weight", m->depth - 1,
             qk_norm ? "Wqkv" : "qkv");
    check_weight(what, last->attn.qkv_weight, name, 3 * D * D, tolerance);
    snprintf(name, sizeof name, "blocks.%d.attn.%s.bias", m->depth - 1,
             qk_norm ? "out_proj" : "proj");
    check_weight(what, last->attn.proj_bias, name, D, tolerance);
    if (qk_norm) {
        snprintf(name, sizeof name, "blocks.%d.attn.k_norm.bias", m->depth - 1);
        check_weight(what, last->attn.k_norm_bias, name, hd, tolerance);
    } else {
        CHECK(last->attn.q_norm_weight == NULL, "%s: q_norm bound in the qkv layout", what);
    }
    snprintf(name, sizeof name, "blocks.%d.moe.gate.weight", m->depth - 1);
    check_weight(what, last->moe_gate_weight, name, m->experts * D, tolerance);
    snprintf(name, sizeof name, "blocks.%d.moe.experts.%d.down_proj.weight", m->depth - 1,
             m->experts - 1);
    check_weight(what, last->experts[m->experts - 1].down_proj_weight, name,
                 D * m->expert_hidden, tolerance);
    CHECK(last->experts[0].hidden == m->expert_hidden, "%s: expert width", what);
    CHECK(last->shared_experts.hidden == m->shared_hidden, "%s: shared width", what);
    if (m->shared_hidden > 0) {
        snprintf(name, sizeof name, "blocks.%d.moe.shared_experts.up_proj.weight",
                 m->depth - 1);
        check_weight(what, last->shared_experts.up_proj_weight, name, m->shared_hidden * D,
                     tolerance);
    } else {
        CHECK(last->shared_experts.gate_proj_weight == NULL, "%s: shared bound", what);
    }

    /* F32 weights stay in the mapping; everything else lives in the arena */
    if (m->dtype == ST_F32 && !m->bf16_key) {
        CHECK(model->arena == NULL, "%s: an F32 file needed an arena", what);
    } else {
        CHECK(points_into(model, w->x_embedder_proj_weight), "%s: converted weight is not in "
              "the arena", what);
    }
    moire_model_free(model);
}

static void test_good_models(void)
{
    tiny_model m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    check_good_model("qk_norm+metadata", &m, "qk_norm_meta.safetensors", "F32", 0.0);

    m = tiny_default(MOIRE_ATTENTION_QKV);
    check_good_model("qkv+metadata", &m, "qkv_meta.safetensors", "F32", 0.0);

    /* inferred: heads from q_norm's length (72 / 18 = 4) */
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.with_metadata = false;
    check_good_model("qk_norm inferred", &m, "qk_norm_infer.safetensors", "F32", 0.0);

    /* inferred qkv: the head count is D/64 by DiT convention, so use D = 128 → 2 heads */
    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.with_metadata = false;
    m.hidden = 128;
    m.heads = 2;
    m.expert_hidden = 4 * 128;
    m.shared_hidden = 2 * 128;
    check_good_model("qkv inferred", &m, "qkv_infer.safetensors", "F32", 0.0);

    /* inferred without pos_embed (input_size 32) and without a shared expert */
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.with_metadata = false;
    m.with_pos_embed = false;
    m.shared_hidden = 0;
    check_good_model("inferred, no pos_embed/shared", &m, "bare.safetensors", "F32", 0.0);

    /* half storage: converted into the arena; relative error of fp16 rounding ≈ 2^-11 */
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.dtype = ST_F16;
    check_good_model("F16", &m, "f16.safetensors", "F16", 1e-3);
    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.dtype = ST_BF16;
    check_good_model("BF16", &m, "bf16.safetensors", "BF16", 8e-3);
    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.dtype = ST_F16;
    m.bf16_key = "blocks.1.moe.gate.weight";
    check_good_model("mixed", &m, "mixed.safetensors", "mixed", 8e-3);
}

/* An odd header length puts F32 data off 4-byte alignment: it must be copied, not aliased. */
static void test_misaligned_f32(void)
{
    tiny_model m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    const char *aligned = build_model(&m, "aligned.safetensors", NULL);
    FILE *in = fopen(aligned, "rb");
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)size);
    CHECK(fread(bytes, 1, (size_t)size, in) == (size_t)size, "read back");
    fclose(in);
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--)
        header_length = header_length << 8 | bytes[i];

    char path[4096];
    snprintf(path, sizeof path, "%s/misaligned.safetensors", test_tmp_dir());
    FILE *out = fopen(path, "wb");
    for (int i = 0; i < 8; i++) /* one more header byte: a trailing space */
        fputc((int)(((header_length + 1) >> (8 * i)) & 0xff), out);
    fwrite(bytes + 8, 1, header_length, out);
    fputc(' ', out);
    fwrite(bytes + 8 + header_length, 1, (size_t)size - 8 - header_length, out);
    fclose(out);
    free(bytes);

    moire_model *model = NULL;
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "misaligned: %s", moire_last_error());
    if (!model)
        return;
    CHECK(strcmp(moire_model_dtype_name(model), "F32") == 0, "misaligned dtype %s",
          moire_model_dtype_name(model));
    CHECK(points_into(model, model->weights.t_embedder_mlp2_weight),
          "misaligned F32 was not copied into the arena");
    check_weight("misaligned", model->weights.t_embedder_mlp2_weight, "t_embedder.mlp.2.weight",
                 72 * 72, 0.0);
    moire_model_free(model);
}

static void test_metadata_extras(void)
{
    tiny_model m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.defaults_json = "{\"sampler\": \"euler\", \"steps\": 30, \"cfg\": 2.5}";
    m.extra_key = "ema.decay_buffer";
    const char *path = build_model(&m, "extras.safetensors", NULL);
    moire_model *model = NULL;
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "extras: %s", moire_last_error());
    if (model) {
        moire_sampler sampler;
        int steps;
        float cfg;
        moire_model_get_defaults(model, &sampler, &steps, &cfg);
        CHECK(sampler == MOIRE_SAMPLER_EULER && steps == 30 && cfg == 2.5f,
              "moire.defaults: sampler %d steps %d cfg %g", (int)sampler, steps, (double)cfg);
        CHECK(model->unused_tensor_count == 1, "unused tensors %d", model->unused_tensor_count);
        CHECK(moire_model_class_name(model, 0) == NULL, "class name without names");

        /* the config survives JSON both ways */
        char *json = dit_config_to_json(moire_model_get_config(model));
        moire_model_config back;
        memset(&back, 0, sizeof back);
        CHECK(dit_config_from_json(&back, json) == MOIRE_OK, "from_json: %s",
              moire_last_error());
        CHECK(memcmp(&back, moire_model_get_config(model), sizeof back) == 0,
              "config JSON round trip differs: %s", json);
        CHECK(strstr(json, "\"beta_start\": 0.0001") != NULL, "float formatting: %s", json);
        free(json);
        moire_model_free(model);
    }

    /* the family defaults without moire.defaults */
    m = tiny_default(MOIRE_ATTENTION_QKV);
    path = build_model(&m, "plain_defaults.safetensors", NULL);
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "defaults: %s", moire_last_error());
    if (model) {
        moire_sampler sampler;
        int steps;
        float cfg;
        moire_model_get_defaults(model, &sampler, &steps, &cfg);
        CHECK(sampler == MOIRE_SAMPLER_DDPM && steps == 250 && cfg == 4.0f,
              "DDPM defaults: %d %d %g", (int)sampler, steps, (double)cfg);
        moire_model_free(model);
    }
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    path = build_model(&m, "rf_defaults.safetensors", NULL);
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "defaults: %s", moire_last_error());
    if (model) {
        moire_sampler sampler;
        int steps;
        float cfg;
        moire_model_get_defaults(model, &sampler, &steps, &cfg);
        CHECK(sampler == MOIRE_SAMPLER_RF_EULER && steps == 50 && cfg == 7.0f,
              "RF defaults: %d %d %g", (int)sampler, steps, (double)cfg);
        moire_model_free(model);
    }
    moire_model_free(NULL);
}

/* ------------------------------------------------------------------------------------------
 * Broken files
 * ---------------------------------------------------------------------------------------- */

static void expect_load_failure(const char *what, const tiny_model *m, moire_status want,
                                const char *want_word)
{
    char file_name[128];
    snprintf(file_name, sizeof file_name, "bad_%d.safetensors", test_checks);
    const char *path = build_model(m, file_name, NULL);
    moire_model *model = (moire_model *)&model; /* must be reset to NULL */
    error_clear();
    moire_status status = moire_model_load(path, &model);
    const char *message = moire_last_error();
    CHECK(status == want, "%s: status %s, want %s (%s)", what, moire_status_to_string(status),
          moire_status_to_string(want), message);
    CHECK(model == NULL, "%s: a model came back", what);
    CHECK(strstr(message, want_word) != NULL, "%s: message lacks \"%s\": %s", what, want_word,
          message);
    printf("ok     %-30s %s\n", what, message);
    if (status == MOIRE_OK)
        moire_model_free(model);
}

static void test_broken_models(void)
{
    tiny_model m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.skip_key = "blocks.1.moe.gate.weight";
    expect_load_failure("missing tensor", &m, MOIRE_ERROR_FORMAT,
                        "'blocks.1.moe.gate.weight' is missing");

    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.skip_key = "blocks.0.moe.experts.3.up_proj.weight";
    expect_load_failure("missing expert tensor", &m, MOIRE_ERROR_FORMAT, "missing");

    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.misshape_key = "blocks.0.attn.proj.weight";
    expect_load_failure("misshapen tensor", &m, MOIRE_ERROR_FORMAT, "shape [73, 72]");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.nan_key = "blocks.1.moe.experts.2.down_proj.weight";
    expect_load_failure("NaN weight", &m, MOIRE_ERROR_FORMAT, "non-finite value (nan) at index 5");

    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.dtype = ST_F16;
    m.nan_key = "final_layer.linear.weight";
    expect_load_failure("NaN weight in F16", &m, MOIRE_ERROR_FORMAT, "non-finite");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.top_k = 5;
    expect_load_failure("top_k > experts", &m, MOIRE_ERROR_FORMAT, "top_k = 5");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.heads = 5; /* written as metadata; the tensors still have head_dim 72/4 */
    m.config_json = "{\"depth\": 2, \"hidden_size\": 72, \"num_heads\": 5, \"patch_size\": 2, "
                    "\"in_channels\": 4, \"out_channels\": 8, \"num_experts\": 4, "
                    "\"expert_hidden\": 288, \"shared_expert_hidden\": 144, "
                    "\"attention_layout\": \"qk_norm\", \"num_classes\": 10, "
                    "\"learn_sigma\": true, \"input_size\": 8, \"objective\": \"rectified_flow\"}";
    m.heads = 4;
    expect_load_failure("heads do not divide hidden", &m, MOIRE_ERROR_FORMAT, "num_heads = 5");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.config_json = "{\"depth\": 2, \"hidden_size\": 72}";
    expect_load_failure("config missing a key", &m, MOIRE_ERROR_FORMAT, "num_heads");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.config_json = "{\"depth\": 2, \"hidden_size\": \"72\"}";
    expect_load_failure("config wrong type", &m, MOIRE_ERROR_FORMAT, "hidden_size");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.config_json = "{\"family\": \"mm-dit\", \"depth\": 2}";
    expect_load_failure("unknown family", &m, MOIRE_ERROR_UNSUPPORTED, "mm-dit");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.config_json = "not json";
    expect_load_failure("config not JSON", &m, MOIRE_ERROR_FORMAT, "moire.config");

    /* metadata says one block, the file has two: silently dropping one would be wrong */
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.depth = 2;
    {
        char *json = config_json_of(&m);
        char *depth = strstr(json, "\"depth\": 2");
        depth[strlen("\"depth\": ")] = '1';
        m.config_json = json;
        expect_load_failure("depth below the file's", &m, MOIRE_ERROR_FORMAT, "depth 1");
        free(json);
    }

    /* metadata layout qkv on a qk_norm file */
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    {
        tiny_model other = m;
        other.layout = MOIRE_ATTENTION_QKV;
        char *json = config_json_of(&other);
        m.config_json = json;
        expect_load_failure("layout mismatch", &m, MOIRE_ERROR_FORMAT, "attn.qkv.weight");
        free(json);
    }

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.class_names = "[\"a\", \"b\"]";
    expect_load_failure("class name count", &m, MOIRE_ERROR_FORMAT, "10 classes");

    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.defaults_json = "{\"steps\": 0}";
    expect_load_failure("bad defaults", &m, MOIRE_ERROR_FORMAT, "steps");

    /* no metadata and the attention keys absent: not a DiT-MoE file */
    m = tiny_default(MOIRE_ATTENTION_QK_NORM);
    m.with_metadata = false;
    m.skip_key = "blocks.0.attn.Wqkv.weight";
    expect_load_failure("not DiT-MoE", &m, MOIRE_ERROR_FORMAT, "not a DiT-MoE");

    /* inference for the qkv layout needs hidden % 64 == 0 */
    m = tiny_default(MOIRE_ATTENTION_QKV);
    m.with_metadata = false;
    expect_load_failure("qkv heads not inferable", &m, MOIRE_ERROR_FORMAT, "num_heads");

    moire_model *model = (moire_model *)&model;
    CHECK(moire_model_load("/nonexistent/x.safetensors", &model) == MOIRE_ERROR_IO &&
              model == NULL, "missing file: %s", moire_last_error());
}

/* ------------------------------------------------------------------------------------------
 * Class prompts
 * ---------------------------------------------------------------------------------------- */

static void expect_class(const moire_model *model, const char *prompt, int want)
{
    int got = -1;
    moire_status status = moire_model_resolve_class(model, prompt, &got);
    CHECK(status == MOIRE_OK && got == want, "\"%s\" → %d (%s), want %d", prompt, got,
          status == MOIRE_OK ? "ok" : moire_last_error(), want);
}

static void expect_class_error(const moire_model *model, const char *prompt,
                               const char *want_word)
{
    int got = -1;
    moire_status status = moire_model_resolve_class(model, prompt, &got);
    CHECK(status == MOIRE_ERROR_INVALID_ARGUMENT, "\"%s\" resolved to %d", prompt, got);
    CHECK(strstr(moire_last_error(), want_word) != NULL, "\"%s\": message lacks \"%s\": %s",
          prompt, want_word, moire_last_error());
    printf("ok     %-30s %s\n", prompt, moire_last_error());
}

static void test_class_resolution(void)
{
    tiny_model m = tiny_default(MOIRE_ATTENTION_QKV);
    m.class_names = "[\"tench, Tinca tinca\", \"goldfish, Carassius auratus\", "
                    "\"golden retriever\", \"Labrador retriever\", "
                    "\"great white shark, white shark, man-eater\", "
                    "\"tiger shark, Galeocerdo cuvieri\", \"tabby, tabby cat\", \"tiger cat\", "
                    "\"Persian cat\", \"hammerhead, hammerhead shark\"]";
    const char *path = build_model(&m, "named.safetensors", NULL);
    moire_model *model = NULL;
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "named: %s", moire_last_error());
    if (!model)
        return;
    CHECK(strcmp(moire_model_class_name(model, 2), "golden retriever") == 0, "class_name(2)");
    CHECK(moire_model_class_name(model, 10) == NULL, "class_name(10)");
    CHECK(moire_model_class_name(model, -1) == NULL, "class_name(-1)");

    expect_class(model, "golden retriever", 2);
    expect_class(model, "Tinca tinca", 0);
    expect_class(model, "tench, Tinca tinca", 0);
    expect_class(model, "  GOLDFISH ", 1);
    expect_class(model, "man-eater", 4);
    expect_class(model, "goldn retriever", 2);
    expect_class(model, "labrador retreiver", 3);
    expect_class(model, "Persian", 8);
    expect_class(model, "3", 3);
    expect_class(model, "0", 0);
    expect_class_error(model, "zzzzqqq", "did you mean");
    expect_class(model, "goldn retrevr", 2); /* 3 edits in 13 characters: within a third */
    expect_class_error(model, "gldn rtrvr", "did you mean: golden retriever (2)");
    expect_class_error(model, "retriever", "ambiguous");
    expect_class_error(model, "shark", "ambiguous");
    expect_class_error(model, "10", "0..9");
    expect_class_error(model, "-1", "0..9");
    expect_class_error(model, "99999999999999999999999", "0..9");
    expect_class_error(model, "", "empty");
    moire_model_free(model);

    /* without names only numbers work, and the message says so */
    m = tiny_default(MOIRE_ATTENTION_QKV);
    path = build_model(&m, "unnamed.safetensors", NULL);
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "unnamed: %s", moire_last_error());
    if (!model)
        return;
    expect_class(model, "7", 7);
    expect_class_error(model, "golden retriever", "ships no class names");
    expect_class_error(model, "goldfish", "--class");
    moire_model_free(model);
}

/* The default-model rule shared by the CLI, the studio and the plug-in: a models folder holds
 * the embedded model next to its classifier; only the model may be picked. */
static void test_model_file_names(void)
{
    static const struct { const char *name; bool model; } cases[] = {
        {"moire-emoji.safetensors", true},        {"dit_moe_s_8E2A.safetensors", true},
        {"moire-emoji-features.safetensors", false}, {"tiny.ref.safetensors", false},
        {"moire-emoji.snapshot.safetensors", false}, {".safetensors", false},
        {"moire-emoji.train.json", false},       {"model.pt", false},
        {"moire-emoji-levels.safetensors", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(moire_is_model_file_name(cases[i].name) == cases[i].model,
              "moire_is_model_file_name(\"%s\") should be %s", cases[i].name,
              cases[i].model ? "true" : "false");
    CHECK(!moire_is_model_file_name(NULL), "NULL is not a model file name");
}

/* ---- MODEL-levels.safetensors: the noise-level classifier loaded beside a model ------------ */

static bool copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    bool ok = in && out;
    char buffer[65536];
    size_t n;
    while (ok && (n = fread(buffer, 1, sizeof buffer, in)) > 0)
        ok = fwrite(buffer, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = false;
    CHECK(ok, "copying %s to %s", from, to);
    return ok;
}

/* Loads dir/m.safetensors (tiny_ecdit) with `companion` as dir/m-levels.safetensors (NULL =
 * none); returns the status, the model freed. *has_levels: a classifier came with it. */
static moire_status load_with_companion(const char *companion, bool *has_levels)
{
    char model_path[1024], level_path[1024];
    snprintf(model_path, sizeof model_path, "%s/m.safetensors", test_tmp_dir());
    snprintf(level_path, sizeof level_path, "%s/m-levels.safetensors", test_tmp_dir());
    char source[4096];
    snprintf(source, sizeof source, "%s", test_data_path("golden/tiny_ecdit.safetensors"));
    remove(level_path);
    if (!copy_file(source, model_path) || (companion && !copy_file(companion, level_path)))
        return MOIRE_ERROR_IO;
    moire_model *model = NULL;
    const moire_status status = moire_model_load(model_path, &model);
    *has_levels = model && moire_model_level_classifier(model) != NULL;
    moire_model_free(model);
    return status;
}

static void test_level_companion(void)
{
    bool has_levels = true;
    moire_status status = load_with_companion(NULL, &has_levels);
    CHECK(status == MOIRE_OK && !has_levels, "no companion: %s", moire_last_error());

    char level[4096], image_classifier[4096], broken[1024];
    snprintf(level, sizeof level, "%s", test_data_path("golden/level_tiny.safetensors"));
    status = load_with_companion(level, &has_levels);
    CHECK(status == MOIRE_OK && has_levels, "with level_tiny beside it: %s", moire_last_error());

    /* An image classifier under the companion's name, a damaged file, another model's size:
     * each fails the load, naming the file and the way out. */
    snprintf(image_classifier, sizeof image_classifier, "%s",
             test_data_path("golden/classifier_tiny.safetensors"));
    status = load_with_companion(image_classifier, &has_levels);
    CHECK(status == MOIRE_ERROR_FORMAT && strstr(moire_last_error(), "is an image classifier"),
          "an image classifier as the companion: %s", moire_last_error());
    snprintf(broken, sizeof broken, "%s/broken.safetensors", test_tmp_dir());
    FILE *f = fopen(broken, "wb");
    if (f) {
        fputs("not a safetensors file at all", f);
        fclose(f);
    }
    status = load_with_companion(broken, &has_levels);
    CHECK(status != MOIRE_OK &&
              strstr(moire_last_error(), "noise-level classifier beside the model does not load") &&
              strstr(moire_last_error(), "m-levels.safetensors") &&
              strstr(moire_last_error(), "remove it"),
          "a damaged companion: %s", moire_last_error());
    printf("damaged companion: %s\n", moire_last_error());
    char other_size[4096];
    snprintf(other_size, sizeof other_size, "%s",
             test_data_path("golden/tiny_ecdit_latent.safetensors"));
    moire_model *latent = NULL;
    if (moire_model_load(other_size, &latent) == MOIRE_OK) {
        /* tiny_ecdit_latent works on another size; give it the 16×16 level classifier. */
        const moire_model_config *c = moire_model_get_config(latent);
        char model_path[1024], level_path[1024];
        snprintf(model_path, sizeof model_path, "%s/latent.safetensors", test_tmp_dir());
        snprintf(level_path, sizeof level_path, "%s/latent-levels.safetensors", test_tmp_dir());
        if (c->input_size != 16 && copy_file(other_size, model_path) &&
            copy_file(level, level_path)) {
            moire_model *m = NULL;
            status = moire_model_load(model_path, &m);
            CHECK(status == MOIRE_ERROR_FORMAT && !m &&
                      strstr(moire_last_error(), "belongs to another model"),
                  "a companion of another size: %s", moire_last_error());
            moire_model_free(m);
        }
        moire_model_free(latent);
    }
}

int main(void)
{
    test_model_file_names();
    test_good_models();
    test_misaligned_f32();
    test_metadata_extras();
    test_broken_models();
    test_class_resolution();
    test_level_companion();
    return test_finish("model_load");
}
