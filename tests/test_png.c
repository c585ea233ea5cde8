/* test_png.c — PNG save/load: round trips for 1/3/4 channels with both texts (UTF-8), a tEXt
 * PNG and a 16-bit gray+alpha PNG written by libpng directly, palette + tRNS, corrupt and
 * truncated files, and a failed save that must leave nothing behind. */
#include "moire.h"
#include "test_util.h"

#include <dirent.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *tmp_file(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    return path;
}

static void test_round_trip(int channels)
{
    moire_image *image = moire_image_new(37, 21, channels);
    CHECK(image != NULL, "moire_image_new: %s", moire_last_error());
    if (!image)
        return;
    size_t n = (size_t)image->width * image->height * channels;
    for (size_t i = 0; i < n; i++)
        image->pixels[i] = (uint8_t)(i * 7 + i / 13);
    const char *parameters = "Moir\xc3\xa9 \xe2\x80\x93 caf\xc3\xa9\nSteps: 5, Seed: 7";
    const char *json = "{\"prompt\": \"caf\xc3\xa9\"}";
    char name[64];
    snprintf(name, sizeof name, "rt%d.png", channels);
    const char *path = tmp_file(name);
    CHECK(moire_png_save(path, image, parameters, json) == MOIRE_OK, "save: %s",
          moire_last_error());
    moire_image *back = NULL;
    char *got_parameters = NULL, *got_json = NULL;
    CHECK(moire_png_load(path, &back, &got_parameters, &got_json) == MOIRE_OK, "load: %s",
          moire_last_error());
    if (back) {
        CHECK(back->width == 37 && back->height == 21 && back->channels == channels,
              "shape %dx%dx%d", back->width, back->height, back->channels);
        CHECK(back->channels == channels && memcmp(back->pixels, image->pixels, n) == 0,
              "pixels differ (%d channels)", channels);
    }
    CHECK(got_parameters && strcmp(got_parameters, parameters) == 0, "parameters: %s",
          got_parameters ? got_parameters : "(null)");
    CHECK(got_json && strcmp(got_json, json) == 0, "json: %s", got_json ? got_json : "(null)");
    free(got_parameters);
    free(got_json);
    moire_image_free(back);

    /* Texts are optional, and loading without asking for them works. */
    CHECK(moire_png_save(path, image, NULL, NULL) == MOIRE_OK, "save without texts");
    got_parameters = (char *)"sentinel";
    back = NULL;
    CHECK(moire_png_load(path, &back, &got_parameters, NULL) == MOIRE_OK && !got_parameters,
          "no parameters → NULL");
    moire_image_free(back);
    moire_image_free(image);
}

/* Writes a PNG with libpng directly. */
static bool write_png_raw(const char *path, int width, int height, int bit_depth,
                          int color_type, const uint8_t *data, size_t rowbytes,
                          png_text *texts, int text_count, const png_color *palette,
                          int palette_count, const png_byte *trans, int trans_count)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_bytep *rows = malloc(sizeof *rows * (size_t)height);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        free(rows);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, bit_depth, color_type,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette)
        png_set_PLTE(png, info, palette, palette_count);
    if (trans)
        png_set_tRNS(png, info, trans, trans_count, NULL);
    if (text_count)
        png_set_text(png, info, texts, text_count);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        rows[y] = (png_bytep)data + (size_t)y * rowbytes;
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return fclose(f) == 0;
}

static void test_foreign_pngs(void)
{
    /* 8-bit RGB with tEXt "parameters" (Latin-1 é) and zTXt "moire". */
    uint8_t rgb[4 * 3 * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 11);
    png_text texts[2];
    memset(texts, 0, sizeof texts);
    texts[0].compression = PNG_TEXT_COMPRESSION_NONE;
    texts[0].key = (char *)"parameters";
    texts[0].text = (char *)"caf\xe9 prompt\nSteps: 20, Sampler: Euler, Seed: 1";
    texts[1].compression = PNG_TEXT_COMPRESSION_zTXt;
    texts[1].key = (char *)"moire";
    texts[1].text = (char *)"{\"seed\": 1}";
    const char *path = tmp_file("text.png");
    CHECK(write_png_raw(path, 4, 3, 8, PNG_COLOR_TYPE_RGB, rgb, 12, texts, 2, NULL, 0, NULL, 0),
          "write tEXt png");
    moire_image *image = NULL;
    char *parameters = NULL, *json = NULL;
    CHECK(moire_png_load(path, &image, &parameters, &json) == MOIRE_OK, "load: %s",
          moire_last_error());
    CHECK(parameters && strcmp(parameters, "caf\xc3\xa9 prompt\nSteps: 20, Sampler: Euler, "
                                           "Seed: 1") == 0,
          "tEXt parameters (Latin-1 → UTF-8): %s", parameters ? parameters : "(null)");
    CHECK(json && strcmp(json, "{\"seed\": 1}") == 0, "zTXt moire");
    CHECK(image && image->channels == 3 && memcmp(image->pixels, rgb, sizeof rgb) == 0,
          "rgb pixels");
    free(parameters);
    free(json);
    moire_image_free(image);

    /* 16-bit gray + alpha → 8-bit RGBA. */
    uint8_t ga16[2 * 2 * 4];
    for (int i = 0; i < 4; i++) {
        ga16[4 * i + 0] = (uint8_t)(60 * i); /* gray, big-endian 16 bit */
        ga16[4 * i + 1] = (uint8_t)(60 * i);
        ga16[4 * i + 2] = 0xFF;              /* alpha */
        ga16[4 * i + 3] = 0xFF;
    }
    path = tmp_file("ga16.png");
    CHECK(write_png_raw(path, 2, 2, 16, PNG_COLOR_TYPE_GRAY_ALPHA, ga16, 8, NULL, 0, NULL, 0,
                        NULL, 0),
          "write ga16");
    image = NULL;
    CHECK(moire_png_load(path, &image, NULL, NULL) == MOIRE_OK, "load ga16: %s",
          moire_last_error());
    CHECK(image && image->channels == 4 && image->pixels[4] == 60 && image->pixels[5] == 60 &&
              image->pixels[6] == 60 && image->pixels[7] == 255,
          "ga16 → RGBA");
    moire_image_free(image);

    /* 2-bit palette with tRNS → RGBA. */
    png_color palette[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 9, 9}};
    png_byte trans[4] = {255, 128, 0, 255};
    uint8_t indices[1] = {0x1B}; /* 00 01 10 11 */
    path = tmp_file("palette.png");
    CHECK(write_png_raw(path, 4, 1, 2, PNG_COLOR_TYPE_PALETTE, indices, 1, NULL, 0, palette, 4,
                        trans, 4),
          "write palette");
    image = NULL;
    CHECK(moire_png_load(path, &image, NULL, NULL) == MOIRE_OK, "load palette: %s",
          moire_last_error());
    static const uint8_t want[16] = {255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 9, 9, 9, 255};
    CHECK(image && image->channels == 4 && image->width == 4 &&
              memcmp(image->pixels, want, 16) == 0,
          "palette + tRNS → RGBA");
    moire_image_free(image);
}

static void test_bad_files(void)
{
    moire_image *image = moire_image_new(64, 64, 3);
    for (int i = 0; i < 64 * 64 * 3; i++)
        image->pixels[i] = (uint8_t)(i * 31 ^ i >> 5);
    const char *good = tmp_file("good.png");
    CHECK(moire_png_save(good, image, "x", NULL) == MOIRE_OK, "save");
    moire_image_free(image);

    FILE *f = fopen(good, "rb");
    uint8_t bytes[65536];
    size_t size = fread(bytes, 1, sizeof bytes, f);
    fclose(f);

    const char *truncated = tmp_file("truncated.png");
    f = fopen(truncated, "wb");
    fwrite(bytes, 1, size / 2, f);
    fclose(f);
    moire_image *out = (moire_image *)1;
    moire_status status = moire_png_load(truncated, &out, NULL, NULL);
    CHECK(status == MOIRE_ERROR_FORMAT && out == NULL, "truncated: %d %s", status,
          moire_last_error());
    CHECK(strstr(moire_last_error(), "truncated.png") != NULL, "message names the file: %s",
          moire_last_error());

    const char *random_bytes = tmp_file("random.png");
    f = fopen(random_bytes, "wb");
    for (int i = 0; i < 1000; i++)
        fputc((i * 2654435761u) >> 13 & 0xFF, f);
    fclose(f);
    status = moire_png_load(random_bytes, &out, NULL, NULL);
    CHECK(status == MOIRE_ERROR_FORMAT, "random bytes: %d %s", status, moire_last_error());
    CHECK(strstr(moire_last_error(), "not a PNG") != NULL, "message: %s", moire_last_error());

    /* A corrupted byte inside IDAT (CRC mismatch on a critical chunk). */
    const char *corrupt = tmp_file("corrupt.png");
    bytes[size / 2] ^= 0x55;
    f = fopen(corrupt, "wb");
    fwrite(bytes, 1, size, f);
    fclose(f);
    status = moire_png_load(corrupt, &out, NULL, NULL);
    CHECK(status == MOIRE_ERROR_FORMAT, "corrupt: %d %s", status, moire_last_error());

    status = moire_png_load(tmp_file("does-not-exist.png"), &out, NULL, NULL);
    CHECK(status == MOIRE_ERROR_IO, "missing file: %d", status);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void test_failed_save(void)
{
    moire_image *image = moire_image_new(8, 8, 3);
    char path[512];
    snprintf(path, sizeof path, "%s/no-such-dir/out.png", test_tmp_dir());
    moire_status status = moire_png_save(path, image, "p", "{}");
    CHECK(status == MOIRE_ERROR_IO, "non-existent directory: %d", status);
    CHECK(strstr(moire_last_error(), "no-such-dir/out.png") &&
              strstr(moire_last_error(), "No such file"),
          "message: %s", moire_last_error());
    CHECK(access(path, F_OK) != 0, "no file left behind");

    /* An unwritable directory (skipped as root, who can write anywhere). */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/readonly", test_tmp_dir());
    mkdir(dir, 0555);
    snprintf(path, sizeof path, "%s/out.png", dir);
    if (geteuid() != 0) {
        status = moire_png_save(path, image, NULL, NULL);
        CHECK(status == MOIRE_ERROR_IO, "read-only directory: %d", status);
        CHECK(strstr(moire_last_error(), "Permission denied") != NULL, "message: %s",
              moire_last_error());
        CHECK(count_entries(dir) == 0, "nothing left in the read-only directory");
    }
    rmdir(dir);

    /* Bad arguments. */
    CHECK(moire_png_save(tmp_file("x.png"), NULL, NULL, NULL) == MOIRE_ERROR_INVALID_ARGUMENT,
          "NULL image");
    CHECK(moire_image_new(0, 5, 3) == NULL && moire_image_new(5, 5, 2) == NULL,
          "image_new refuses bad sizes/channels");
    /* A save over an existing file replaces it and leaves no temporary. */
    int before = count_entries(test_tmp_dir());
    CHECK(moire_png_save(tmp_file("good.png"), image, NULL, NULL) == MOIRE_OK, "overwrite");
    CHECK(count_entries(test_tmp_dir()) == before, "no temporary files left");
    moire_image_free(image);
}

int main(void)
{
    test_round_trip(1);
    test_round_trip(3);
    test_round_trip(4);
    test_foreign_pngs();
    test_bad_files();
    test_failed_save();
    return test_finish("png");
}
