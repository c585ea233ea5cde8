/* test_npy.c — .npy round trip, hand-written '<f8' / '<i8' / '<f2' / v2.0 files, and the
 * refusals: Fortran order, big-endian, object dtype, truncated data, header past the end. */
#include "npy.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tmp_file(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    return path;
}

/* Writes a v1.0 file with `dict` as header (padded to 64) followed by `data`. */
static void write_npy(const char *path, const char *dict, const void *data, size_t size,
                      int major)
{
    size_t prefix = major == 1 ? 10 : 12;
    size_t total = (prefix + strlen(dict) + 1 + 63) / 64 * 64;
    size_t header_len = total - prefix;
    unsigned char head[1024];
    memcpy(head, "\x93NUMPY", 6);
    head[6] = (unsigned char)major;
    head[7] = 0;
    head[8] = (unsigned char)(header_len & 0xFF);
    head[9] = (unsigned char)(header_len >> 8);
    if (major != 1) {
        head[10] = 0;
        head[11] = 0;
    }
    memset(head + prefix, ' ', header_len);
    memcpy(head + prefix, dict, strlen(dict));
    head[total - 1] = '\n';
    FILE *f = fopen(path, "wb");
    fwrite(head, 1, total, f);
    if (size)
        fwrite(data, 1, size, f);
    fclose(f);
}

static void test_round_trip(void)
{
    float data[2 * 3 * 4];
    test_fill_random(data, 24, 1, -2.0f, 2.0f);
    int64_t shape[3] = {2, 3, 4};
    const char *path = tmp_file("rt.npy");
    CHECK(moire_npy_save(path, 3, shape, data) == MOIRE_OK, "save: %s", moire_last_error());
    moire_npy npy;
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK, "load: %s", moire_last_error());
    CHECK(npy.ndim == 3 && npy.shape[0] == 2 && npy.shape[1] == 3 && npy.shape[2] == 4 &&
              npy.numel == 24,
          "shape");
    CHECK(npy.data && memcmp(npy.data, data, sizeof data) == 0, "data");
    moire_npy_free(&npy);

    /* The header is padded so the data starts at a multiple of 64. */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK((size - (long)sizeof data) % 64 == 0, "data offset %ld is 64-aligned",
          size - (long)sizeof data);

    /* 1-D (trailing comma in the tuple) and 0-D. */
    int64_t one[1] = {5};
    CHECK(moire_npy_save(path, 1, one, data) == MOIRE_OK, "save 1-D");
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK && npy.ndim == 1 && npy.shape[0] == 5,
          "load 1-D: %s", moire_last_error());
    moire_npy_free(&npy);
    CHECK(moire_npy_save(path, 0, NULL, data) == MOIRE_OK, "save 0-D");
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK && npy.ndim == 0 && npy.numel == 1 &&
              npy.data[0] == data[0],
          "load 0-D");
    moire_npy_free(&npy);

    CHECK(moire_npy_save(tmp_file("missing-dir/x.npy"), 1, one, data) == MOIRE_ERROR_IO,
          "save into a missing directory fails");
    CHECK(access(tmp_file("missing-dir/x.npy"), F_OK) != 0, "and leaves nothing");
}

static void test_other_dtypes(void)
{
    moire_npy npy;
    double f8[3] = {1.5, -2.25, 1e10};
    const char *path = tmp_file("f8.npy");
    write_npy(path, "{\"descr\": \"<f8\", \"shape\": (3,), \"fortran_order\": False}", f8,
              sizeof f8, 1);
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK, "f8: %s", moire_last_error());
    CHECK(npy.numel == 3 && npy.data[0] == 1.5f && npy.data[1] == -2.25f &&
              npy.data[2] == 1e10f,
          "f8 values");
    moire_npy_free(&npy);

    int64_t i8[2 * 2] = {1, -2, 3, 1000000};
    path = tmp_file("i8.npy");
    write_npy(path, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", i8,
              sizeof i8, 2);
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK, "i8 v2.0: %s", moire_last_error());
    CHECK(npy.ndim == 2 && npy.data[1] == -2.0f && npy.data[3] == 1e6f, "i8 values");
    moire_npy_free(&npy);

    uint16_t f2[3] = {0x3C00, 0xC000, 0x3555}; /* 1, -2, 0.33325 */
    path = tmp_file("f2.npy");
    write_npy(path, "{'descr':'<f2','fortran_order':False,'shape':(3,)}", f2, sizeof f2, 1);
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK, "f2: %s", moire_last_error());
    CHECK(npy.numel == 3 && npy.data[0] == 1.0f && npy.data[1] == -2.0f &&
              npy.data[2] > 0.3332f && npy.data[2] < 0.3334f,
          "f2 values");
    moire_npy_free(&npy);

    int32_t i4[2] = {7, -7};
    path = tmp_file("i4.npy");
    write_npy(path, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", i4, sizeof i4,
              1);
    CHECK(moire_npy_load(path, &npy) == MOIRE_OK && npy.data[1] == -7.0f, "i4");
    moire_npy_free(&npy);
}

static void expect_failure(const char *name, const char *dict, size_t data_size,
                           moire_status want, const char *words)
{
    static unsigned char zeros[256];
    const char *path = tmp_file("bad.npy");
    write_npy(path, dict, zeros, data_size, 1);
    moire_npy npy;
    moire_status status = moire_npy_load(path, &npy);
    CHECK(status == want, "%s: status %d (%s), want %d", name, status, moire_last_error(),
          want);
    CHECK(strstr(moire_last_error(), words) != NULL, "%s: message \"%s\" lacks \"%s\"", name,
          moire_last_error(), words);
    CHECK(npy.data == NULL, "%s: no data on failure", name);
}

static void test_refusals(void)
{
    expect_failure("fortran", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16,
                   MOIRE_ERROR_UNSUPPORTED, "Fortran");
    expect_failure("big-endian", "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
                   16, MOIRE_ERROR_UNSUPPORTED, "big-endian");
    expect_failure("object", "{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", 32,
                   MOIRE_ERROR_UNSUPPORTED, "object");
    expect_failure("complex", "{'descr': '<c8', 'fortran_order': False, 'shape': (4,), }", 32,
                   MOIRE_ERROR_UNSUPPORTED, "not supported");
    expect_failure("truncated data",
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20,
                   MOIRE_ERROR_FORMAT, "truncated");
    expect_failure("garbage header", "{'descr': '<f4', 'fortran_order': Maybe}", 0,
                   MOIRE_ERROR_FORMAT, "header");
    expect_failure("missing shape", "{'descr': '<f4', 'fortran_order': False}", 0,
                   MOIRE_ERROR_FORMAT, "shape");
    expect_failure("structured", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                   4, MOIRE_ERROR_UNSUPPORTED, "structured");

    /* Header length past the end of the file. */
    const char *path = tmp_file("short.npy");
    FILE *f = fopen(path, "wb");
    fwrite("\x93NUMPY\x01\x00\xff\x7f{'descr'", 1, 18, f);
    fclose(f);
    moire_npy npy;
    CHECK(moire_npy_load(path, &npy) == MOIRE_ERROR_FORMAT &&
              strstr(moire_last_error(), "past the end"),
          "header past end: %s", moire_last_error());
    /* Not an npy at all. */
    f = fopen(path, "wb");
    fputs("hello, this is not numpy", f);
    fclose(f);
    CHECK(moire_npy_load(path, &npy) == MOIRE_ERROR_FORMAT, "not npy: %s", moire_last_error());
    CHECK(moire_npy_load(tmp_file("nope.npy"), &npy) == MOIRE_ERROR_IO, "missing file");
}

int main(void)
{
    test_round_trip();
    test_other_dtypes();
    test_refusals();
    return test_finish("npy");
}
