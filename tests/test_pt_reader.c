/* test_pt_reader.c — PyTorch checkpoints (.pt) written by torch.save load through the
 * model loader exactly like the same weights in safetensors: every wrapper form
 * ({"ema"}, {"model"}, {"state_dict"}, {"module"}, a full train.py checkpoint with opt and
 * args, the "module." prefix), fp32/fp16/bf16, both families. The config must equal the
 * safetensors model's and moire_forward outputs must be bit-identical (memcmp). Then
 * `convert` round trips, and the ImageNet class names apply to the 1000-class model.
 *
 * Fixtures: tests/fixtures/pt/, made by tools/golden/make_pt_fixtures.py. The fp16/bf16
 * references are written here from the fp32 reference with the safetensors writer (round to
 * nearest even, as torch's .half()/.bfloat16()). */
#include "internal.h"
#include "model.h"
#include "pt_reader.h"
#include "safetensors.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 2
#define H 8
#define W 8

static char *fixture(const char *name)
{
    static char buffers[4][512];
    static int next;
    char *buffer = buffers[next++ % 4];
    snprintf(buffer, sizeof buffers[0], "%s", test_data_path("fixtures/pt"));
    size_t used = strlen(buffer);
    snprintf(buffer + used, sizeof buffers[0] - used, "/%s", name);
    return buffer;
}

/* Rewrites the fp32 reference `src` as `dtype` at `dst` (no metadata: inferred config). */
static bool write_cast_reference(const char *src, const char *dst, st_dtype dtype)
{
    st_file *file = NULL;
    if (st_open(src, &file) != MOIRE_OK) {
        fprintf(stderr, "%s\n", moire_last_error());
        return false;
    }
    st_writer *writer = st_writer_new();
    int count = st_tensor_count(file);
    float **buffers = calloc((size_t)count, sizeof(float *));
    bool ok = writer && buffers;
    for (int i = 0; ok && i < count; i++) {
        const st_tensor *t = st_tensor_at(file, i);
        buffers[i] = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        ok = buffers[i] != NULL;
        if (ok) {
            st_convert_to_f32(buffers[i], t->data, t->dtype, t->numel);
            ok = st_writer_add_f32(writer, t->name, dtype, t->ndim, t->shape, buffers[i]) ==
                 MOIRE_OK;
        }
    }
    ok = ok && st_writer_save(writer, dst) == MOIRE_OK;
    for (int i = 0; buffers && i < count; i++)
        free(buffers[i]);
    free(buffers);
    st_writer_free(writer);
    st_close(file);
    return ok;
}

typedef struct outputs {
    float *y;
    size_t count;
} outputs;

/* One forward pass of N images with fixed inputs; false (and a FAIL) on error. */
static bool run_forward(moire_ctx *ctx, const moire_model *model, outputs *out)
{
    const moire_model_config *c = moire_model_get_config(model);
    size_t in_count = (size_t)N * c->in_channels * H * W;
    out->count = (size_t)N * c->out_channels * H * W;
    float *x = malloc(in_count * sizeof(float));
    out->y = calloc(out->count, sizeof(float));
    float t[N];
    int32_t classes[N] = {c->num_classes > 207 ? 207 : 3, c->num_classes};
    if (c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW) {
        t[0] = 0.5f;
        t[1] = 0.9f;
    } else {
        t[0] = 500.0f;
        t[1] = 20.0f;
    }
    test_fill_random(x, (int64_t)in_count, 1234, -1.5f, 1.5f);
    moire_status status = moire_forward(ctx, model, N, H, W, x, t, classes, out->y);
    free(x);
    CHECK(status == MOIRE_OK, "forward %s: %s", moire_model_name(model), moire_last_error());
    return status == MOIRE_OK;
}

static moire_model *load(const char *path)
{
    moire_model *model = NULL;
    moire_status status = moire_model_load(path, &model);
    CHECK(status == MOIRE_OK, "load %s: %s", path, moire_last_error());
    return model;
}

static bool same_config(const moire_model *a, const moire_model *b)
{
    char *ja = dit_config_to_json(moire_model_get_config(a));
    char *jb = dit_config_to_json(moire_model_get_config(b));
    bool same = ja && jb && strcmp(ja, jb) == 0;
    if (!same)
        fprintf(stderr, "  config %s\n  vs     %s\n", ja, jb);
    free(ja);
    free(jb);
    return same;
}

/* Loads `pt`, checks wrapper info, config, dtype and bit-identical outputs against `ref`. */
static void check_against(moire_ctx *ctx, const char *pt_name, const moire_model *ref,
                          const outputs *ref_out, const char *dtype, const char *wrapper,
                          bool prefix)
{
    const char *path = fixture(pt_name);
    st_file *file = NULL;
    pt_info info;
    moire_status status = pt_open(path, &file, &info);
    CHECK(status == MOIRE_OK, "pt_open %s: %s", pt_name, moire_last_error());
    if (status == MOIRE_OK) {
        CHECK(strcmp(info.wrapper, wrapper) == 0, "%s: unwrapped '%s', expected '%s'", pt_name,
              info.wrapper, wrapper);
        CHECK(info.stripped_prefix == prefix, "%s: stripped_prefix %d", pt_name,
              info.stripped_prefix);
        CHECK(st_tensor_count(file) == st_tensor_count(ref->file), "%s: %d tensors, not %d",
              pt_name, st_tensor_count(file), st_tensor_count(ref->file));
        st_close(file);
    }
    moire_model *model = load(path);
    if (!model)
        return;
    CHECK(same_config(model, ref), "%s: config differs from the safetensors model", pt_name);
    CHECK(strcmp(moire_model_dtype_name(model), dtype) == 0, "%s: dtype %s, expected %s",
          pt_name, moire_model_dtype_name(model), dtype);
    CHECK(moire_model_parameter_count(model) == moire_model_parameter_count(ref),
          "%s: parameter count", pt_name);
    outputs out = {0};
    if (run_forward(ctx, model, &out)) {
        bool identical = out.count == ref_out->count &&
                         memcmp(out.y, ref_out->y, out.count * sizeof(float)) == 0;
        CHECK(identical, "%s: forward output differs from the safetensors model (max |d| %g)",
              pt_name, test_max_abs_diff(out.y, ref_out->y, (int64_t)out.count));
        printf("%s %s: %s, wrapper '%s'%s, outputs bit-identical\n", identical ? "OK" : "NOT OK",
               pt_name, dtype, wrapper, prefix ? ", module. prefix" : "");
    }
    free(out.y);

    /* convert → safetensors → load: same bits again, config in the metadata */
    char converted[600];
    snprintf(converted, sizeof converted, "%s/%s.safetensors", test_tmp_dir(), pt_name);
    pt_convert_report report;
    status = pt_convert(path, converted, &report);
    CHECK(status == MOIRE_OK, "convert %s: %s", pt_name, moire_last_error());
    if (status == MOIRE_OK) {
        CHECK(strcmp(report.dtype_name, dtype) == 0, "convert %s: dtype %s", pt_name,
              report.dtype_name);
        st_file *written = NULL;
        if (st_open(converted, &written) == MOIRE_OK) {
            CHECK(st_metadata_get(written, "moire.config") != NULL, "%s: no moire.config",
                  converted);
            for (int i = 0; i < st_tensor_count(written); i++) {
                const st_tensor *a = st_tensor_at(written, i);
                const st_tensor *b = st_find(model->file, a->name);
                CHECK(b && a->dtype == b->dtype && a->nbytes == b->nbytes &&
                      memcmp(a->data, b->data, a->nbytes) == 0,
                      "%s: tensor %s not copied bit for bit", converted, a->name);
            }
            st_close(written);
        }
        moire_model *round_trip = load(converted);
        outputs again = {0};
        if (round_trip && run_forward(ctx, round_trip, &again)) {
            CHECK(same_config(round_trip, model), "%s: converted config differs", pt_name);
            CHECK(memcmp(again.y, ref_out->y, again.count * sizeof(float)) == 0,
                  "%s: converted model's output differs", pt_name);
        }
        free(again.y);
        moire_model_free(round_trip);
    }
    moire_model_free(model);
}

static void check_family(moire_ctx *ctx, const char *ref_name, const char *const *f32_files,
                         const char *const *f16_files, const char *const *bf16_files,
                         const char *const *wrappers_f32, const char *const *wrappers_f16,
                         const char *const *wrappers_bf16, const bool *prefix_f16)
{
    char path16[600], pathbf[600];
    snprintf(path16, sizeof path16, "%s/%s.f16.safetensors", test_tmp_dir(), ref_name);
    snprintf(pathbf, sizeof pathbf, "%s/%s.bf16.safetensors", test_tmp_dir(), ref_name);
    const char *ref_path = fixture(ref_name);
    CHECK(write_cast_reference(ref_path, path16, ST_F16), "f16 reference of %s", ref_name);
    CHECK(write_cast_reference(ref_path, pathbf, ST_BF16), "bf16 reference of %s", ref_name);
    const char *refs[3] = {ref_path, path16, pathbf};
    const char *dtypes[3] = {"F32", "F16", "BF16"};
    const char *const *files[3] = {f32_files, f16_files, bf16_files};
    const char *const *wrappers[3] = {wrappers_f32, wrappers_f16, wrappers_bf16};
    for (int d = 0; d < 3; d++) {
        if (!files[d] || !files[d][0])
            continue;
        moire_model *ref = load(refs[d]);
        outputs ref_out = {0};
        if (ref && run_forward(ctx, ref, &ref_out)) {
            for (int i = 0; files[d][i]; i++)
                check_against(ctx, files[d][i], ref, &ref_out, dtypes[d], wrappers[d][i],
                              d == 1 && prefix_f16 ? prefix_f16[i] : false);
        }
        free(ref_out.y);
        moire_model_free(ref);
    }
}

static void check_defaults_and_classes(void)
{
    /* S/B family: DDPM-ε, 250 steps, CFG 4; XL/G family: rectified flow, 50 steps, CFG 7 */
    moire_model *qkv = load(fixture("qkv_ema_f32.pt"));
    moire_model *qknorm = load(fixture("qknorm_raw_f16.pt"));
    if (!qkv || !qknorm)
        goto done;
    moire_sampler sampler;
    int steps;
    float cfg;
    const moire_model_config *c = moire_model_get_config(qkv);
    moire_model_get_defaults(qkv, &sampler, &steps, &cfg);
    CHECK(c->attention_layout == MOIRE_ATTENTION_QKV && c->objective == MOIRE_OBJECTIVE_DDPM_EPS,
          "qkv family: layout %d objective %d", c->attention_layout, c->objective);
    CHECK(sampler == MOIRE_SAMPLER_DDPM && steps == 250 && cfg == 4.0f,
          "qkv defaults: %d %d %g", sampler, steps, (double)cfg);
    CHECK(c->depth == 1 && c->hidden_size == 64 && c->num_experts == 2 && c->num_classes == 10,
          "qkv geometry");
    c = moire_model_get_config(qknorm);
    moire_model_get_defaults(qknorm, &sampler, &steps, &cfg);
    CHECK(c->attention_layout == MOIRE_ATTENTION_QK_NORM &&
          c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW, "qk_norm family");
    CHECK(sampler == MOIRE_SAMPLER_RF_EULER && steps == 50 && cfg == 7.0f,
          "qk_norm defaults: %d %d %g", sampler, steps, (double)cfg);
    CHECK(c->depth == 2 && c->hidden_size == 24 && c->num_heads == 2 && c->num_experts == 4 &&
          c->num_classes == 1000, "qk_norm geometry");

    /* the 1000-class model gets data/imagenet_classes.txt */
    const char *name = moire_model_class_name(qknorm, 207);
    CHECK(name && strcmp(name, "golden retriever") == 0, "class 207 is '%s'",
          name ? name : "(null)");
    int id = -1;
    CHECK(moire_model_resolve_class(qknorm, "golden retriever", &id) == MOIRE_OK && id == 207,
          "\"golden retriever\" → %d: %s", id, moire_last_error());
    CHECK(moire_model_resolve_class(qknorm, "Golden Retriever", &id) == MOIRE_OK && id == 207,
          "case-insensitive → %d", id);
    CHECK(moire_model_resolve_class(qknorm, "tench", &id) == MOIRE_OK && id == 0, "tench → %d", id);
    CHECK(moire_model_resolve_class(qknorm, "goldn retriever", &id) == MOIRE_OK && id == 207,
          "typo → %d: %s", id, moire_last_error());
    CHECK(moire_model_resolve_class(qknorm, "999", &id) == MOIRE_OK && id == 999, "number");
    /* 10-class model: no names, numbers work, the message says so */
    CHECK(moire_model_class_name(qkv, 3) == NULL, "qkv has no class names");
    CHECK(moire_model_resolve_class(qkv, "7", &id) == MOIRE_OK && id == 7, "number on qkv");
    CHECK(moire_model_resolve_class(qkv, "golden retriever", &id) != MOIRE_OK &&
          strstr(moire_last_error(), "--class"), "name on a model without names: %s",
          moire_last_error());

    /* convert writes the names into the file */
    char converted[600];
    snprintf(converted, sizeof converted, "%s/names.safetensors", test_tmp_dir());
    pt_convert_report report;
    CHECK(pt_convert(fixture("qknorm_raw_f16.pt"), converted, &report) == MOIRE_OK,
          "convert: %s", moire_last_error());
    CHECK(report.class_names_written, "convert wrote no class names");
    st_file *file = NULL;
    if (st_open(converted, &file) == MOIRE_OK) {
        const char *names = st_metadata_get(file, "moire.class_names");
        CHECK(names && strstr(names, "\"golden retriever\""), "moire.class_names in output");
        st_close(file);
    }
    /* same path in and out is refused, nothing written */
    CHECK(pt_convert(converted, converted, NULL) == MOIRE_ERROR_INVALID_ARGUMENT,
          "convert onto itself");
done:
    moire_model_free(qkv);
    moire_model_free(qknorm);
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

    static const char *const qkv_f32[] = {"qkv_ema_f32.pt", NULL};
    static const char *const qkv_f32_w[] = {"ema"};
    static const char *const qkv_f16[] = {"qkv_train_f16.pt", "qkv_module_f16.pt", NULL};
    static const char *const qkv_f16_w[] = {"ema", "module"};
    static const bool qkv_f16_prefix[] = {false, true};
    check_family(ctx, "qkv_ref_f32.safetensors", qkv_f32, qkv_f16, NULL, qkv_f32_w, qkv_f16_w,
                 NULL, qkv_f16_prefix);

    static const char *const qkn_f32[] = {"qknorm_model_f32.pt", NULL};
    static const char *const qkn_f32_w[] = {"model"};
    static const char *const qkn_f16[] = {"qknorm_raw_f16.pt", "qknorm_prefix_f16.pt", NULL};
    static const char *const qkn_f16_w[] = {"", ""};
    static const bool qkn_f16_prefix[] = {false, true};
    static const char *const qkn_bf16[] = {"qknorm_state_dict_bf16.pt", NULL};
    static const char *const qkn_bf16_w[] = {"state_dict"};
    check_family(ctx, "qknorm_ref_f32.safetensors", qkn_f32, qkn_f16, qkn_bf16, qkn_f32_w,
                 qkn_f16_w, qkn_bf16_w, qkn_f16_prefix);

    check_defaults_and_classes();
    moire_ctx_free(ctx);
    return test_finish("pt_reader");
}
