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
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "json_guard.h"
#include "moire-metadata.h"
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
    /* the memory budget: 1 MB of "{}," would cost json-glib ~100 MB (~290 bytes a node) */
    size_t n = 1 << 20;
    char *objects = malloc(n + 1);
    objects[0] = '[';
    for (size_t i = 1; i + 3 < n; i += 3)
        memcpy(objects + i, "{},", 3);
    size_t used = 1 + (n - 4) / 3 * 3;
    memcpy(objects + used - 1, "]", 2);
    CHECK(!moire_json_check(objects, -1, why, sizeof why) && strstr(why, "budget"),
          "1 MB of empty objects accepted (%s)", why);
    printf("ok     %-36s %s\n", "1 MB of empty objects", why);
    free(objects);
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

/* ---- 2: linear-time parameters parsing ---------------------------------------------- */

static void time_parameters(const char *what, const char *text)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    moire_parameters parameters;
    moire_status status = moire_parse_parameters(text, &parameters);
    double seconds = seconds_since(start);
    CHECK(status == MOIRE_OK, "%s: %s", what, moire_last_error());
    moire_parameters_clear(&parameters);
    /* was 11 s for 256 KiB and minutes for 1 MiB; linear now: milliseconds */
    CHECK(seconds < 1.0, "%s: %.2f s", what, seconds);
    printf("ok     %-36s %zu bytes in %.3f s\n", what, strlen(text), seconds);
}

static char *repeat_text(const char *head, const char *unit, size_t total)
{
    size_t head_len = strlen(head), unit_len = strlen(unit);
    char *text = malloc(head_len + total + 1);
    memcpy(text, head, head_len);
    size_t n = head_len;
    while (n + unit_len <= head_len + total) {
        memcpy(text + n, unit, unit_len);
        n += unit_len;
    }
    text[n] = '\0';
    return text;
}

static void test_parameters_linear(void)
{
    const size_t mib = 1u << 20;
    char *text = repeat_text("prompt\nSteps: 20, Seed: 1, Size: 8x8, ", "word ", mib);
    time_parameters("1 MiB of words without ':'", text);
    free(text);
    text = repeat_text("x\n", "a-", mib);
    time_parameters("1 MiB of 'a-' (the 1,181-byte PNG)", text);
    free(text);
    text = repeat_text("p\nSteps: 20, Seed: 1, Size: 8x8, ", "k: \"x\\\", ", mib);
    time_parameters("1 MiB of unterminated quotes", text);
    free(text);
    /* the same answers as before on a normal line */
    moire_parameters p;
    CHECK(moire_parse_parameters("cat\nSteps: 20, Sampler: Euler a, Lora: \"a, \\\"b\\\"\", "
                                 "Seed: 5, Size: 64x32", &p) == MOIRE_OK, "parse");
    CHECK(p.steps == 20 && p.seed == 5 && p.width == 64 && p.height == 32 && p.sampler &&
              strcmp(p.sampler, "Euler a") == 0 && p.pair_count == 5,
          "steps %d seed %llu size %dx%d pairs %d", p.steps, (unsigned long long)p.seed,
          p.width, p.height, p.pair_count);
    moire_parameters_clear(&p);
}

/* ---- 3: pickle objects bounded by the file's size ---------------------------------- */

static void test_pickle_budget(void)
{
    /* 300,000 EMPTY_DICT opcodes: what a 32 KB DEFLATE-packed data.pkl can inflate to */
    size_t n = 300000;
    uint8_t *pickle = malloc(n + 1);
    memset(pickle, '}', n);
    pickle[n] = '.';
    pk_state_dict state_dict;
    moire_status status = pk_load_state_dict_from_file("small.pt", pickle, n + 1, 32768, NULL,
                                                       NULL, &state_dict);
    CHECK(status != MOIRE_OK && strstr(moire_last_error(), "objects"),
          "300,000 objects from a 32 KB file: %s", moire_last_error());
    printf("ok     %-36s %s\n", "300,000 objects from 32 KB", moire_last_error());
    CHECK(pk_object_budget(32768) == PK_MIN_OBJECTS + 4096, "budget %zu",
          pk_object_budget(32768));
    CHECK(pk_object_budget((size_t)1 << 40) == PK_MAX_OBJECTS, "budget cap");
    free(pickle);
}

/* ---- 5: only regular files are read ------------------------------------------------- */

static void on_alarm(int signal_number)
{
    (void)signal_number;
    static const char message[] = "FAIL: a reader blocked on a FIFO (5 s)\n";
    if (write(2, message, sizeof message - 1) < 0) {
    }
    _exit(1);
}

static void test_not_regular(void)
{
    signal(SIGALRM, on_alarm);
    alarm(5); /* before the fix, opening the FIFO waited for a writer forever */
    const char *fifo = tmp_file("fifo.safetensors");
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
    expect_open_fails("a FIFO as a model", fifo, "FIFO");
    moire_model *model = NULL;
    CHECK(moire_model_load(fifo, &model) != MOIRE_OK && strstr(moire_last_error(), "FIFO"),
          "model load on a FIFO: %s", moire_last_error());
    moire_npy npy;
    CHECK(moire_npy_load(fifo, &npy) != MOIRE_OK && strstr(moire_last_error(), "FIFO"),
          ".npy on a FIFO: %s", moire_last_error());
    moire_image *image = NULL;
    CHECK(moire_png_load(fifo, &image, NULL, NULL) != MOIRE_OK &&
              strstr(moire_last_error(), "FIFO"), "PNG on a FIFO: %s", moire_last_error());
    moire_png_info info;
    CHECK(moire_png_read_info(fifo, &info) != MOIRE_OK && strstr(moire_last_error(), "FIFO"),
          "PNG info on a FIFO: %s", moire_last_error());
    expect_open_fails("a directory as a model", test_tmp_dir(), "directory");
    expect_open_fails("a device as a model", "/dev/zero", "character device");

    /* a FIFO planted beside a model as its noise-level companion */
    const char *model_path = model_with_metadata("planted.safetensors", "x", "y");
    const char *companion = tmp_file("planted-levels.safetensors");
    unlink(companion);
    CHECK(mkfifo(companion, 0600) == 0, "mkfifo: %s", strerror(errno));
    CHECK(moire_model_load(model_path, &model) != MOIRE_OK &&
              strstr(moire_last_error(), "FIFO"),
          "a FIFO companion: %s", moire_last_error());
    printf("ok     %-36s %s\n", "a FIFO beside a model", moire_last_error());
    moire_model_free(model);
    alarm(0);
}

/* ---- 4: outputs replace only regular files ------------------------------------------ */

static void test_output_paths(void)
{
    moire_image *image = moire_image_new(2, 2, 3);
    const char *fifo = tmp_file("out_fifo.png");
    unlink(fifo);
    mkfifo(fifo, 0600);
    CHECK(moire_png_save(fifo, image, NULL, NULL) != MOIRE_OK &&
              strstr(moire_last_error(), "FIFO"), "saved over a FIFO: %s", moire_last_error());
    struct stat info;
    CHECK(lstat(fifo, &info) == 0 && S_ISFIFO(info.st_mode), "the FIFO was replaced");
    const char *target = tmp_file("real.png"), *link = tmp_file("link.png");
    unlink(link);
    CHECK(symlink(target, link) == 0, "symlink");
    CHECK(moire_png_save(link, image, NULL, NULL) != MOIRE_OK &&
              strstr(moire_last_error(), "symbolic link"),
          "saved over a symlink: %s", moire_last_error());
    CHECK(lstat(link, &info) == 0 && S_ISLNK(info.st_mode), "the link was replaced");
    printf("ok     %-36s %s\n", "a PNG over a symbolic link", moire_last_error());
    CHECK(moire_png_save(target, image, NULL, NULL) == MOIRE_OK, "%s", moire_last_error());
    CHECK(moire_png_save(target, image, NULL, NULL) == MOIRE_OK, "over a regular file: %s",
          moire_last_error());
    int64_t shape[1] = {2};
    float values[2] = {1, 2};
    CHECK(moire_npy_save(fifo, 1, shape, values) != MOIRE_OK, ".npy over a FIFO");
    CHECK(moire_png_save("/proc/x.png", image, NULL, NULL) != MOIRE_OK &&
              !strstr(moire_last_error(), "create the directory"),
          "/proc/x.png: %s", moire_last_error());
    printf("ok     %-36s %s\n", "/proc/x.png", moire_last_error());
    moire_image_free(image);
}

/* ---- 6: non-finite numbers ---------------------------------------------------------- */

static void test_non_finite(void)
{
    /* .npy inputs with NaN / Inf */
    const char *path = tmp_file("nan.npy");
    int64_t shape[1] = {3};
    float values[3] = {1.0f, NAN, 2.0f};
    CHECK(moire_npy_save(path, 1, shape, values) == MOIRE_OK, "%s", moire_last_error());
    moire_npy npy;
    CHECK(moire_npy_load(path, &npy) != MOIRE_OK && strstr(moire_last_error(), "NaN"),
          "a NaN .npy loaded: %s", moire_last_error());
    values[1] = INFINITY;
    moire_npy_save(path, 1, shape, values);
    CHECK(moire_npy_load(path, &npy) != MOIRE_OK && strstr(moire_last_error(), "infinite"),
          "an infinite .npy loaded: %s", moire_last_error());

    /* finite but huge weights (3e38): the forward pass overflows; was a garbage image */
    st_file *source = NULL;
    CHECK(st_open(test_data_path("golden/tiny_qknorm.safetensors"), &source) == MOIRE_OK,
          "%s", moire_last_error());
    if (!source)
        return;
    st_writer *writer = st_writer_new();
    float **copies = calloc((size_t)st_tensor_count(source), sizeof *copies);
    for (int i = 0; i < st_tensor_count(source); i++) {
        const st_tensor *t = st_tensor_at(source, i);
        copies[i] = malloc((size_t)t->numel * sizeof(float) + 1);
        st_convert_to_f32(copies[i], t->data, t->dtype, t->numel);
        if (strcmp(t->name, "x_embedder.proj.weight") == 0)
            for (int64_t j = 0; j < t->numel; j++)
                copies[i][j] = 3e38f;
        st_writer_add_f32(writer, t->name, ST_F32, t->ndim, t->shape, copies[i]);
    }
    for (int i = 0; i < st_metadata_count(source); i++) {
        const char *k = st_metadata_key_at(source, i);
        st_writer_set_metadata(writer, k, st_metadata_get(source, k));
    }
    path = tmp_file("huge_weights.safetensors");
    CHECK(st_writer_save(writer, path) == MOIRE_OK, "%s", moire_last_error());
    st_writer_free(writer);
    for (int i = 0; i < st_tensor_count(source); i++)
        free(copies[i]);
    free(copies);
    st_close(source);

    moire_model *model = NULL;
    CHECK(moire_model_load(path, &model) == MOIRE_OK, "%s", moire_last_error());
    moire_ctx_params cp = moire_ctx_params_default();
    cp.device = MOIRE_DEVICE_CPU;
    cp.n_threads = 2;
    moire_ctx *ctx = NULL;
    CHECK(moire_ctx_new(&cp, &ctx) == MOIRE_OK, "%s", moire_last_error());
    if (model && ctx) {
        moire_generate_params params = moire_generate_params_default();
        params.prompt = "goldfish";
        params.steps = 2;
        params.seed = 1;
        moire_image **images = NULL;
        int count = 0;
        moire_status status = moire_generate(ctx, model, &params, NULL, &images, &count);
        CHECK(status != MOIRE_OK && strstr(moire_last_error(), "huge_weights") &&
                  (strstr(moire_last_error(), "NaN") || strstr(moire_last_error(), "infinity")),
              "3e38 weights: status %s, %d image(s): %s", moire_status_to_string(status), count,
              moire_last_error());
        printf("ok     %-36s %s\n", "3e38 weights", moire_last_error());
        for (int i = 0; i < count; i++)
            moire_image_free(images[i]);
        free(images);

        /* NaN → byte: was undefined behaviour (UBSan: float-cast-overflow); now 0 */
        const moire_model_config *c = &model->config;
        size_t n = (size_t)c->in_channels * c->input_size * c->input_size;
        float *x = malloc(n * sizeof(float));
        for (size_t j = 0; j < n; j++)
            x[j] = NAN;
        moire_image *image = generate_decode_to_image(model, x, c->input_size, c->input_size,
                                                      c->input_size, c->input_size);
        CHECK(image != NULL, "decode");
        bool zeros = image != NULL;
        for (size_t j = 0; image && j < (size_t)image->width * image->height * image->channels;
             j++)
            zeros = zeros && image->pixels[j] == 0;
        CHECK(zeros, "NaN did not become 0");
        moire_image_free(image);
        free(x);
    }
    moire_ctx_free(ctx);
    moire_model_free(model);
}

int main(void)
{
    test_json_guard();
    test_deep_safetensors_header();
    test_deep_metadata();
    test_parameters_linear();
    test_pickle_budget();
    test_not_regular();
    test_output_paths();
    test_non_finite();
    return test_finish("hostile");
}
