/* test_safetensors.c — the safetensors writer and reader: a round trip in F32/F16/BF16 with
 * metadata, the F16/BF16 rounding edge cases, and one hand-built hostile file per check the
 * reader makes (each must fail with the right status and a telling message, never crash). */
#include "internal.h"
#include "safetensors.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tmp_path(const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    return path;
}

/* ------------------------------------------------------------------------------------------
 * Round trip
 * ---------------------------------------------------------------------------------------- */

static void test_round_trip(void)
{
    /* [3, 5] random F32, [8] edge values stored as F16 and as BF16, a scalar, an empty one */
    float weights[15];
    test_fill_random(weights, 15, 1, -2.0f, 2.0f);
    const float edges[8] = {0.1f, 65504.0f, 1e-8f, INFINITY, -INFINITY, 65520.0f, -0.0f, 1e-5f};
    float scalar = 3.25f;
    const int64_t shape_weights[2] = {3, 5}, shape_edges[1] = {8}, shape_empty[2] = {0, 4};

    st_writer *writer = st_writer_new();
    CHECK(writer != NULL, "st_writer_new");
    CHECK(st_writer_add_f32(writer, "weights", ST_F32, 2, shape_weights, weights) == MOIRE_OK,
          "%s", moire_last_error());
    CHECK(st_writer_add_f32(writer, "edges.f16", ST_F16, 1, shape_edges, edges) == MOIRE_OK,
          "%s", moire_last_error());
    CHECK(st_writer_add_f32(writer, "edges.bf16", ST_BF16, 1, shape_edges, edges) == MOIRE_OK,
          "%s", moire_last_error());
    CHECK(st_writer_add_f32(writer, "scalar", ST_F32, 0, NULL, &scalar) == MOIRE_OK, "%s",
          moire_last_error());
    CHECK(st_writer_add_f32(writer, "empty", ST_F32, 2, shape_empty, NULL) == MOIRE_OK, "%s",
          moire_last_error());
    CHECK(st_writer_add_f32(writer, "weights", ST_F32, 2, shape_weights, weights) ==
              MOIRE_ERROR_INVALID_ARGUMENT, "duplicate name accepted");
    st_writer_set_metadata(writer, "format", "pt");
    st_writer_set_metadata(writer, "quote", "say \"hi\"\n\\ ünï");
    st_writer_set_metadata(writer, "format", "moire"); /* last value wins */
    const char *path = tmp_path("round_trip.safetensors");
    CHECK(st_writer_save(writer, path) == MOIRE_OK, "%s", moire_last_error());
    st_writer_free(writer);

    /* the temporary file is gone and the header length is a multiple of 8 */
    FILE *stream = fopen(path, "rb");
    unsigned char length_bytes[8] = {0};
    CHECK(stream && fread(length_bytes, 1, 8, stream) == 8, "read header length");
    if (stream)
        fclose(stream);
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--)
        header_length = header_length << 8 | length_bytes[i];
    CHECK(header_length % 8 == 0, "header length %llu is not a multiple of 8",
          (unsigned long long)header_length);

    st_file *file = NULL;
    CHECK(st_open(path, &file) == MOIRE_OK, "%s", moire_last_error());
    if (!file)
        return;
    CHECK(st_tensor_count(file) == 5, "tensor count %d", st_tensor_count(file));
    /* sorted by name, so the layout is deterministic */
    CHECK(strcmp(st_tensor_at(file, 0)->name, "edges.bf16") == 0, "first tensor %s",
          st_tensor_at(file, 0)->name);

    const st_tensor *t = st_find(file, "weights");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 5 &&
              t->numel == 15 && t->nbytes == 60, "weights entry");
    if (t) {
        float back[15];
        st_convert_to_f32(back, t->data, t->dtype, t->numel);
        CHECK(memcmp(back, weights, sizeof back) == 0, "F32 values differ");
    }
    t = st_find(file, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1, "scalar entry");
    if (t) {
        float back;
        st_convert_to_f32(&back, t->data, ST_F32, 1);
        CHECK(back == 3.25f, "scalar %g", (double)back);
    }
    t = st_find(file, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0, "empty entry");
    CHECK(st_find(file, "absent") == NULL, "found an absent tensor");

    t = st_find(file, "edges.f16");
    CHECK(t && t->dtype == ST_F16 && t->nbytes == 16, "f16 entry");
    if (t) {
        float back[8];
        uint16_t raw[8];
        memcpy(raw, t->data, sizeof raw);
        st_convert_to_f32(back, t->data, ST_F16, 8);
        CHECK(raw[0] == 0x2e66, "0.1 → F16 0x%04x, want 0x2e66 (nearest even)", raw[0]);
        CHECK(back[0] == 0.0999755859375f, "0.1 → %.10g", (double)back[0]);
        CHECK(raw[1] == 0x7bff && back[1] == 65504.0f, "65504 → 0x%04x", raw[1]);
        /* 1e-8 is below the smallest half subnormal 2^-24 ≈ 5.96e-8 but above half of it */
        CHECK(raw[2] == 0x0000 && back[2] == 0.0f, "1e-8 rounds to 0 (< 2^-25): 0x%04x",
              raw[2]);
        CHECK(raw[3] == 0x7c00 && isinf(back[3]) && back[3] > 0, "inf → 0x%04x", raw[3]);
        CHECK(raw[4] == 0xfc00 && isinf(back[4]) && back[4] < 0, "-inf → 0x%04x", raw[4]);
        CHECK(raw[5] == 0x7c00, "65520 (tie) → inf, got 0x%04x", raw[5]);
        CHECK(raw[6] == 0x8000 && signbit(back[6]), "-0 → 0x%04x", raw[6]);
        /* 1e-5 / 2^-24 = 167.77 → the subnormal 168 */
        CHECK(raw[7] == 168 && back[7] == 168 * 0x1p-24f, "1e-5 → subnormal 0x%04x", raw[7]);
    }
    t = st_find(file, "edges.bf16");
    CHECK(t && t->dtype == ST_BF16, "bf16 entry");
    if (t) {
        float back[8];
        uint16_t raw[8];
        memcpy(raw, t->data, sizeof raw);
        st_convert_to_f32(back, t->data, ST_BF16, 8);
        CHECK(raw[0] == 0x3dcd, "0.1 → BF16 0x%04x, want 0x3dcd", raw[0]);
        CHECK(fabsf(back[0] - 0.1f) < 1e-3f, "0.1 → %g", (double)back[0]);
        CHECK(raw[1] == 0x4780 && back[1] == 65536.0f, "65504 → BF16 0x%04x", raw[1]);
        CHECK(fabsf(back[2] - 1e-8f) < 1e-10f, "1e-8 → %g", (double)back[2]);
        CHECK(isinf(back[3]) && isinf(back[4]), "inf through BF16");
    }

    CHECK(st_metadata_count(file) == 2, "metadata count %d", st_metadata_count(file));
    const char *format = st_metadata_get(file, "format");
    CHECK(format && strcmp(format, "moire") == 0, "format = %s", format ? format : "(null)");
    const char *quote = st_metadata_get(file, "quote");
    CHECK(quote && strcmp(quote, "say \"hi\"\n\\ ünï") == 0, "escaped metadata: %s",
          quote ? quote : "(null)");
    CHECK(st_metadata_get(file, "nothing") == NULL, "absent metadata key");
    st_close(file);
    st_close(NULL);
}

/* Converting every half bit pattern and back reproduces it (NaNs stay NaN). */
static void test_f16_exhaustive(void)
{
    static uint16_t all[65536];
    static float as_float[65536];
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    st_convert_to_f32(as_float, all, ST_F16, 65536);
    int64_t shape = 65536;
    st_writer *writer = st_writer_new();
    st_writer_add_f32(writer, "all", ST_F16, 1, &shape, as_float);
    const char *path = tmp_path("f16_all.safetensors");
    CHECK(st_writer_save(writer, path) == MOIRE_OK, "%s", moire_last_error());
    st_writer_free(writer);
    st_file *file = NULL;
    CHECK(st_open(path, &file) == MOIRE_OK, "%s", moire_last_error());
    if (!file)
        return;
    const uint16_t *back = st_find(file, "all")->data;
    int mismatches = 0;
    for (int i = 0; i < 65536; i++) {
        bool is_nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff);
        uint16_t got;
        memcpy(&got, &back[i], 2);
        if (is_nan ? !((got & 0x7c00) == 0x7c00 && (got & 0x3ff)) : got != all[i])
            mismatches++;
    }
    CHECK(mismatches == 0, "%d half values do not round-trip", mismatches);
    /* subnormal conversion is exact */
    CHECK(as_float[1] == 0x1p-24f && as_float[0x3ff] == 1023 * 0x1p-24f, "subnormals");
    st_close(file);
}

/* ------------------------------------------------------------------------------------------
 * Hostile files, built byte by byte
 * ---------------------------------------------------------------------------------------- */

/* Writes an 8-byte length (declared_length, or the real one when negative), the header
 * text and `data_bytes` bytes of data. */
static const char *write_raw(const char *name, long long declared_length, const char *header,
                             size_t data_bytes)
{
    const char *path = tmp_path(name);
    FILE *stream = fopen(path, "wb");
    uint64_t length = declared_length < 0 ? strlen(header) : (uint64_t)declared_length;
    for (int i = 0; i < 8; i++)
        fputc((int)((length >> (8 * i)) & 0xff), stream);
    fputs(header, stream);
    for (size_t i = 0; i < data_bytes; i++)
        fputc(0, stream);
    fclose(stream);
    return path;
}

static void expect_failure(const char *what, const char *path, moire_status want_status,
                           const char *want_word)
{
    st_file *file = NULL;
    error_clear();
    moire_status status = st_open(path, &file);
    const char *message = moire_last_error();
    CHECK(status == want_status, "%s: status %s, want %s (%s)", what,
          moire_status_to_string(status), moire_status_to_string(want_status), message);
    CHECK(file == NULL, "%s: a file came back", what);
    CHECK(strstr(message, want_word) != NULL, "%s: message lacks \"%s\": %s", what, want_word,
          message);
    CHECK(strstr(message, path) != NULL, "%s: message does not name the file: %s", what,
          message);
    printf("ok     %-28s %s\n", what, message);
    st_close(file);
}

static void test_hostile_files(void)
{
    /* shorter than 8 bytes */
    const char *path = tmp_path("short.safetensors");
    FILE *stream = fopen(path, "wb");
    fputs("abc", stream);
    fclose(stream);
    expect_failure("shorter than 8 bytes", path, MOIRE_ERROR_FORMAT, "truncated");

    expect_failure("header length past the end",
                   write_raw("past_end.safetensors", 9999999, "{}", 0), MOIRE_ERROR_FORMAT,
                   "past the end");
    expect_failure("header length zero", write_raw("zero.safetensors", 0, "{}", 0),
                   MOIRE_ERROR_FORMAT, "header length 0");
    expect_failure("header not JSON",
                   write_raw("not_json.safetensors", -1, "{\"a\": [1, 2", 0),
                   MOIRE_ERROR_FORMAT, "not valid JSON");
    expect_failure("header not an object", write_raw("array.safetensors", -1, "[1, 2]", 0),
                   MOIRE_ERROR_FORMAT, "not an object");
    expect_failure("entry not an object",
                   write_raw("entry.safetensors", -1, "{\"w\": 5}", 0), MOIRE_ERROR_FORMAT,
                   "not a JSON object");
    expect_failure("entry without shape",
                   write_raw("no_shape.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4),
                   MOIRE_ERROR_FORMAT, "shape");
    expect_failure("unknown dtype",
                   write_raw("dtype.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F8_E9M9\", \"shape\": [1], "
                             "\"data_offsets\": [0, 1]}}", 1),
                   MOIRE_ERROR_UNSUPPORTED, "dtype");
    expect_failure("negative dimension",
                   write_raw("negative.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -3], "
                             "\"data_offsets\": [0, 24]}}", 24),
                   MOIRE_ERROR_FORMAT, "negative");
    expect_failure("too many dimensions",
                   write_raw("ndim.safetensors", -1,
                             "{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                             "\"data_offsets\": [0, 1]}}", 1),
                   MOIRE_ERROR_UNSUPPORTED, "dimensions");
    expect_failure("shape numel overflow",
                   write_raw("overflow.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"shape\": [1099511627776, "
                             "1099511627776], \"data_offsets\": [0, 4]}}", 4),
                   MOIRE_ERROR_FORMAT, "overflow");
    expect_failure("fractional dimension",
                   write_raw("fraction.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], "
                             "\"data_offsets\": [0, 4]}}", 4),
                   MOIRE_ERROR_FORMAT, "integer");
    expect_failure("offsets end past the data",
                   write_raw("end_past.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], "
                             "\"data_offsets\": [0, 16]}}", 8),
                   MOIRE_ERROR_FORMAT, "past the end");
    expect_failure("offsets begin after end",
                   write_raw("reversed.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], "
                             "\"data_offsets\": [8, 4]}}", 8),
                   MOIRE_ERROR_FORMAT, "after");
    expect_failure("offsets not 2 integers",
                   write_raw("three.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], "
                             "\"data_offsets\": [0, 4, 8]}}", 8),
                   MOIRE_ERROR_FORMAT, "data_offsets");
    expect_failure("offsets size mismatch",
                   write_raw("mismatch.safetensors", -1,
                             "{\"w\": {\"dtype\": \"F16\", \"shape\": [2, 3], "
                             "\"data_offsets\": [0, 24]}}", 24),
                   MOIRE_ERROR_FORMAT, "need 12");
    expect_failure("overlapping tensors",
                   write_raw("overlap.safetensors", -1,
                             "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], "
                             "\"data_offsets\": [0, 16]}, "
                             "\"b\": {\"dtype\": \"F32\", \"shape\": [2], "
                             "\"data_offsets\": [12, 20]}}", 20),
                   MOIRE_ERROR_FORMAT, "overlap");
    expect_failure("metadata value not a string",
                   write_raw("metadata.safetensors", -1,
                             "{\"__metadata__\": {\"ok\": \"yes\", \"n\": 5}}", 0),
                   MOIRE_ERROR_FORMAT, "not a string");
    expect_failure("metadata not an object",
                   write_raw("metadata_array.safetensors", -1, "{\"__metadata__\": [1]}", 0),
                   MOIRE_ERROR_FORMAT, "__metadata__");

    /* A missing file is an I/O error, not a format one. */
    expect_failure("missing file", tmp_path("does_not_exist.safetensors"), MOIRE_ERROR_IO,
                   "cannot open");

    /* Not hostile: an odd header length leaves F32 data misaligned, which must still load
       (the reader hands out pointers, st_convert_to_f32 copies safely). */
    float value = 0;
    path = write_raw("odd.safetensors", -1,
                     "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                     4);
    st_file *file = NULL;
    CHECK(st_open(path, &file) == MOIRE_OK, "odd header length: %s", moire_last_error());
    if (file) {
        st_convert_to_f32(&value, st_find(file, "w")->data, ST_F32, 1);
        CHECK(value == 0.0f, "misaligned value %g", (double)value);
        st_close(file);
    }
}

/* The writer leaves nothing behind when it cannot write. */
static void test_writer_failure(void)
{
    float x = 1.0f;
    int64_t shape = 1;
    st_writer *writer = st_writer_new();
    st_writer_add_f32(writer, "x", ST_F32, 1, &shape, &x);
    char path[4200];
    snprintf(path, sizeof path, "%s/no/such/dir/out.safetensors", test_tmp_dir());
    moire_status status = st_writer_save(writer, path);
    CHECK(status == MOIRE_ERROR_IO, "save into a missing directory: %s",
          moire_status_to_string(status));
    CHECK(strstr(moire_last_error(), "out.safetensors") != NULL, "message: %s",
          moire_last_error());
    CHECK(access(path, F_OK) != 0, "a file was left at %s", path);
    st_writer_free(writer);
}

int main(void)
{
    test_round_trip();
    test_f16_exhaustive();
    test_hostile_files();
    test_writer_failure();
    return test_finish("safetensors");
}
