/* test_pt_hostile.c — hostile and broken .pt files are refused with the right status and a
 * message naming the problem, never crash, and never run anything: the os.system / eval
 * payloads would create MARKER, which must not exist afterwards.
 *
 * Fixtures from tools/golden/make_pt_fixtures.py, plus mutations made here of a valid file
 * (every truncation length on a grid, a byte flipped at every position of the zip central
 * directory and of the pickle), which must fail or load cleanly — under ASan/UBSan that is
 * a small deterministic fuzz pass. */
#include "internal.h"
#include "model.h"
#include "pt_reader.h"
#include "test_util.h"
#include "zip_reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MARKER "/tmp/moire-pt-hostile-marker"

static const char *fixture(const char *name)
{
    static char buffer[512];
    snprintf(buffer, sizeof buffer, "%s/%s", test_data_path("fixtures/pt"), name);
    return buffer;
}

static const struct {
    const char *file;
    moire_status status;
    const char *word; /* must appear in the message */
} cases[] = {
    {"hostile_os_system.pt", MOIRE_ERROR_UNSUPPORTED, "calls os.system"},
    {"hostile_eval.pt", MOIRE_ERROR_UNSUPPORTED, "calls builtins.eval"},
    {"hostile_stack_global.pt", MOIRE_ERROR_UNSUPPORTED, "calls posix.system"},
    {"hostile_reduce_storage.pt", MOIRE_ERROR_UNSUPPORTED, "torch.FloatStorage"},
    {"hostile_huge_size.pt", MOIRE_ERROR_FORMAT, "impossible size"},
    {"hostile_huge_storage.pt", MOIRE_ERROR_FORMAT, "past the end"},
    {"hostile_offset.pt", MOIRE_ERROR_FORMAT, "past the end of its storage"},
    {"hostile_zipbomb.pt", MOIRE_ERROR_FORMAT, "zip bomb"},
    {"hostile_zipbomb_lying.pt", MOIRE_ERROR_FORMAT, "zip bomb"},
    {"broken_overlap.pt", MOIRE_ERROR_FORMAT, "overlap"},
    {"broken_out_of_range.pt", MOIRE_ERROR_FORMAT, "outside"},
    {"broken_crc.pt", MOIRE_ERROR_FORMAT, "CRC-32"},
    {"broken_encrypted.pt", MOIRE_ERROR_UNSUPPORTED, "encrypted"},
    {"broken_noncontiguous.pt", MOIRE_ERROR_UNSUPPORTED, "not contiguous"},
    {"broken_legacy.pt", MOIRE_ERROR_UNSUPPORTED, "old (pre-1.6)"},
    {"broken_truncated.pt", MOIRE_ERROR_FORMAT, "truncated"},
};

static void check_fixtures(void)
{
    unlink(MARKER);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moire_model *model = NULL;
        moire_status status = moire_model_load(fixture(cases[i].file), &model);
        const char *message = moire_last_error();
        bool ok = status == cases[i].status && !model && strstr(message, cases[i].word) &&
                  strstr(message, cases[i].file);
        CHECK(ok, "%s: status %s (want %s), message: %s", cases[i].file,
              moire_status_to_string(status), moire_status_to_string(cases[i].status), message);
        printf("%s %s: %s\n", ok ? "OK" : "NOT OK", cases[i].file, message);
        moire_model_free(model);
        /* convert refuses it too and leaves no output */
        char out[600];
        snprintf(out, sizeof out, "%s/%s.safetensors", test_tmp_dir(), cases[i].file);
        CHECK(pt_convert(fixture(cases[i].file), out, NULL) == cases[i].status,
              "convert %s", cases[i].file);
        CHECK(access(out, F_OK) != 0, "convert %s left %s", cases[i].file, out);
    }
    CHECK(access(MARKER, F_OK) != 0, "%s exists: a payload ran!", MARKER);
    /* the messages say how to proceed with a genuine file */
    moire_model *model = NULL;
    moire_model_load(fixture("hostile_os_system.pt"), &model);
    CHECK(strstr(moire_last_error(), "nothing in the file was run") &&
          strstr(moire_last_error(), "docs/CHECKPOINTS.md"), "hint: %s", moire_last_error());
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long length = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)length);
    if (data && fread(data, 1, (size_t)length, f) != (size_t)length) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = (size_t)length;
    return data;
}

static bool write_all(const char *path, const unsigned char *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

/* Loads a mutated file: it must fail with a message, or load (some flips are harmless). */
static int try_mutation(const char *path, const unsigned char *data, size_t size)
{
    if (!write_all(path, data, size))
        return -1;
    moire_model *model = NULL;
    moire_status status = moire_model_load(path, &model);
    CHECK(status == MOIRE_OK ? model != NULL : (model == NULL && moire_last_error()[0]),
          "mutation: status %d without a message", status);
    moire_model_free(model);
    return status == MOIRE_OK;
}

static void check_mutations(void)
{
    size_t size = 0;
    unsigned char *original = read_all(fixture("qknorm_raw_f16.pt"), &size);
    CHECK(original != NULL, "read qknorm_raw_f16.pt");
    if (!original)
        return;
    char path[600];
    snprintf(path, sizeof path, "%s/mutated.pt", test_tmp_dir());
    unsigned char *copy = malloc(size);

    /* truncations: every length in the last 1 KB (central directory end and EOCD), and a
       grid over the rest */
    int truncations = 0, loaded = 0;
    for (size_t length = 0; length < size; length += length + 1024 < size ? 997 : 1) {
        loaded += try_mutation(path, original, length) == 1;
        truncations++;
    }
    CHECK(loaded == 0, "%d truncated files loaded", loaded);

    /* one bit flipped at every other byte of the central directory + EOCD and of data.pkl
       (the bit cycles with the position) */
    size_t eocd = size - 22;
    size_t cd_offset = (size_t)original[eocd + 16] | (size_t)original[eocd + 17] << 8 |
                       (size_t)original[eocd + 18] << 16 | (size_t)original[eocd + 19] << 24;
    int flips = 0;
    for (size_t pos = 0; pos < size; pos += 2) {
        bool in_pickle = pos < 1200; /* the local header + pickle of archive/data.pkl */
        if (pos < cd_offset && !in_pickle)
            continue;
        memcpy(copy, original, size);
        copy[pos] ^= (unsigned char)(1u << (pos / 2 % 8));
        try_mutation(path, copy, size);
        flips++;
    }
    CHECK(access(MARKER, F_OK) != 0, "%s exists after mutations", MARKER);
    printf("OK mutations: %d truncations, %d bit flips, no crash\n", truncations, flips);
    unlink(path);
    free(copy);
    free(original);
}

static void check_inflate(void)
{
    /* a stored block and a fixed-Huffman block ("hello" from zlib -15), and the output cap */
    static const unsigned char stored[] = {0x01, 0x05, 0x00, 0xfa, 0xff, 'h', 'e', 'l', 'l', 'o'};
    static const unsigned char fixed[] = {0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    unsigned char out[16];
    size_t written = 0;
    CHECK(zip_inflate(stored, sizeof stored, out, sizeof out, &written) == ZIP_INFLATE_OK &&
          written == 5 && memcmp(out, "hello", 5) == 0, "stored block");
    CHECK(zip_inflate(fixed, sizeof fixed, out, sizeof out, &written) == ZIP_INFLATE_OK &&
          written == 5 && memcmp(out, "hello", 5) == 0, "fixed block");
    CHECK(zip_inflate(fixed, sizeof fixed, out, 4, &written) == ZIP_INFLATE_TOO_LARGE,
          "output cap");
    CHECK(zip_inflate(fixed, 3, out, sizeof out, &written) == ZIP_INFLATE_CORRUPT, "truncated");
    CHECK(zip_crc32((const uint8_t *)"123456789", 9) == 0xcbf43926u, "CRC-32 check value");
}

int main(void)
{
    check_inflate();
    check_fixtures();
    check_mutations();
    return test_finish("pt_hostile");
}
