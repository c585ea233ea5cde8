/* image.c — 8-bit images and PNG files (libpng).
 *
 * Saving writes to "<path>.XXXXXX" in the destination directory, fsyncs and renames, so a
 * failure (full disk, unwritable directory, libpng error) never leaves a partial file.
 * Texts go into uncompressed UTF-8 iTXt chunks ("parameters", "moire").
 *
 * libpng reports errors by longjmp. Every setjmp lives in a small function that owns no
 * resources of its own: state sits in a struct owned by the caller, which frees it after
 * the jump, so nothing is ever jumped over while allocated or freed.
 */
#include "file_guard.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMAGE_MAX_SIDE   32768
#define IMAGE_MAX_PIXELS (1ll << 28)

moire_image *moire_image_new(int width, int height, int channels)
{
    if (width <= 0 || height <= 0 || width > IMAGE_MAX_SIDE || height > IMAGE_MAX_SIDE ||
        (int64_t)width * height > IMAGE_MAX_PIXELS) {
        error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                   "image size %dx%d is out of range (1..%d a side, at most %lld pixels)",
                   width, height, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
        return NULL;
    }
    if (channels != 1 && channels != 3 && channels != 4) {
        error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                   "an image has 1, 3 or 4 channels, not %d", channels);
        return NULL;
    }
    moire_image *image = calloc(1, sizeof *image);
    if (image)
        image->pixels = calloc_array((size_t)width * (size_t)height, (size_t)channels);
    if (!image || !image->pixels) {
        free(image);
        error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a %dx%d image", width,
                   height);
        return NULL;
    }
    image->width = width;
    image->height = height;
    image->channels = channels;
    return image;
}

void moire_image_free(moire_image *image)
{
    if (!image)
        return;
    free(image->pixels);
    free(image);
}

/* ------------------------------------------------------------------------------------------
 * libpng error plumbing
 * ---------------------------------------------------------------------------------------- */

typedef struct png_errors {
    char message[256]; /* libpng's error message                                          */
    int os_errno;      /* errno of a failed write, 0 if the failure was not the OS's       */
} png_errors;

static void png_error_cb(png_structp png, png_const_charp message)
{
    png_errors *errors = png_get_error_ptr(png);
    if (errors && !errors->message[0])
        snprintf(errors->message, sizeof errors->message, "%s", message);
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp message)
{
    (void)png;
    (void)message; /* warnings (bad ancillary chunks, …) are not fatal and not printed */
}

/* ------------------------------------------------------------------------------------------
 * Saving
 * ---------------------------------------------------------------------------------------- */

typedef struct png_writer {
    png_errors errors;
    FILE *file;
    const moire_image *image;
    png_bytep *rows;   /* [height], allocated by the caller */
    png_text texts[2];
    int text_count;
} png_writer;

static void png_write_cb(png_structp png, png_bytep data, size_t length)
{
    png_writer *writer = png_get_io_ptr(png);
    if (fwrite(data, 1, length, writer->file) != length) {
        writer->errors.os_errno = errno ? errno : EIO;
        png_error(png, "write failed");
    }
}

static void png_flush_cb(png_structp png)
{
    png_writer *writer = png_get_io_ptr(png);
    if (fflush(writer->file) != 0) {
        writer->errors.os_errno = errno ? errno : EIO;
        png_error(png, "write failed");
    }
}

/* Returns 0 on success. The only function that calls setjmp for writing. */
static int png_write_inner(png_structp png, png_infop info, png_writer *writer)
{
    if (setjmp(png_jmpbuf(png)))
        return -1;
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, 0, PNG_COLOR_TYPE_RGB,
                                       PNG_COLOR_TYPE_RGB_ALPHA};
    const moire_image *image = writer->image;
    png_set_write_fn(png, writer, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)image->width, (png_uint_32)image->height, 8,
                 color_types[image->channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (writer->text_count > 0)
        png_set_text(png, info, writer->texts, writer->text_count);
    png_write_info(png, info);
    png_write_image(png, writer->rows);
    png_write_end(png, info);
    return 0;
}

/* Opens a fresh "<path>.XXXXXX" next to `path` with O_EXCL (mode 0666 less the umask, like
 * any new file). Returns the descriptor or -1 with errno set. */
static int open_temporary(const char *path, char *tmp_path, size_t tmp_size)
{
    static unsigned counter;
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned r = seed + __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 40503u;
        r ^= r >> 13;
        r *= 0x5bd1e995u;
        r ^= r >> 15;
        static const char alphabet[] =
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        char suffix[7];
        for (int i = 0; i < 6; i++) {
            suffix[i] = alphabet[r % 62u];
            r = r / 62u + (unsigned)attempt * 7919u;
        }
        suffix[6] = '\0';
        if ((size_t)snprintf(tmp_path, tmp_size, "%s.%s", path, suffix) >= tmp_size) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

static moire_status io_failure(const char *path, int err, const char *what)
{
    return error_fail(MOIRE_ERROR_IO, "%s: cannot %s: %s%s", path, what, strerror(err),
                      file_output_hint(path, err));
}

moire_status moire_png_save(const char *path, const moire_image *image,
                            const char *parameters, const char *moire_json)
{
    if (!path || !path[0])
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_png_save: no path given");
    if (!image || !image->pixels || image->width <= 0 || image->height <= 0 ||
        image->width > IMAGE_MAX_SIDE || image->height > IMAGE_MAX_SIDE)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "%s: no image or an empty image to save",
                          path);
    if (image->channels != 1 && image->channels != 3 && image->channels != 4)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "%s: cannot save an image with %d channels (1, 3 or 4)", path,
                          image->channels);

    png_writer writer;
    memset(&writer, 0, sizeof writer);
    writer.image = image;
    static char key_parameters[] = "parameters", key_moire[] = "moire", empty[] = "";
    const char *texts[2] = {parameters, moire_json};
    char *keys[2] = {key_parameters, key_moire};
    for (int i = 0; i < 2; i++) {
        if (!texts[i])
            continue;
        if (!g_utf8_validate(texts[i], -1, NULL))
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "%s: the \"%s\" text is not valid UTF-8", path, keys[i]);
        png_text *text = &writer.texts[writer.text_count++];
        text->compression = PNG_ITXT_COMPRESSION_NONE;
        text->key = keys[i];
        text->text = (char *)texts[i];
        text->itxt_length = strlen(texts[i]);
        text->lang = empty;
        text->lang_key = empty;
    }

    writer.rows = malloc_array((size_t)image->height, sizeof *writer.rows);
    if (!writer.rows)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    size_t stride = (size_t)image->width * (size_t)image->channels;
    for (int y = 0; y < image->height; y++)
        writer.rows[y] = image->pixels + (size_t)y * stride;

    char tmp_path[4096 + 16];
    int fd = open_temporary(path, tmp_path, sizeof tmp_path);
    if (fd < 0) {
        int err = errno;
        free(writer.rows);
        return io_failure(path, err, "create the file");
    }
    writer.file = fdopen(fd, "wb");
    if (!writer.file) {
        int err = errno;
        close(fd);
        unlink(tmp_path);
        free(writer.rows);
        return io_failure(path, err, "open the file");
    }

    moire_status status = MOIRE_OK;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &writer.errors,
                                              png_error_cb, png_warning_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory (libpng)", path);
    } else if (png_write_inner(png, info, &writer) != 0) {
        if (writer.errors.os_errno)
            status = io_failure(path, writer.errors.os_errno, "write the file");
        else
            status = error_fail(MOIRE_ERROR_IO, "%s: cannot write the PNG: %s", path,
                                writer.errors.message);
    }
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);

    if (status == MOIRE_OK && (fflush(writer.file) != 0 || fsync(fileno(writer.file)) != 0))
        status = io_failure(path, errno, "write the file");
    if (fclose(writer.file) != 0 && status == MOIRE_OK)
        status = io_failure(path, errno, "write the file");
    if (status == MOIRE_OK)
        status = moire_output_replace(tmp_path, path);
    if (status != MOIRE_OK)
        unlink(tmp_path);
    free(writer.rows);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------------------------- */

typedef struct png_reader {
    png_errors errors;
    FILE *file;
    moire_image *image;    /* allocated inside, freed by the caller on failure */
    png_bytep *rows;       /* same                                              */
    bool too_large;
    png_uint_32 width, height;
} png_reader;

static int png_read_inner(png_structp png, png_infop info, png_reader *reader)
{
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_init_io(png, reader->file);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* our own, clearer check below */
    /* Ancillary chunks are buffered whole by libpng: bound each (8 MB; real iCCP profiles
       are under 1 MB) and their number, so a small file cannot ask for gigabytes. The
       texts are read by moire_png_read_info (png_info.c, its own bounds); libpng skips
       them. */
    png_set_chunk_malloc_max(png, 8u << 20);
    png_set_chunk_cache_max(png, 256);
    static const png_byte text_chunks[] = {'t', 'E', 'X', 't', '\0', 'z', 'T', 'X', 't', '\0',
                                           'i', 'T', 'X', 't', '\0'};
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, text_chunks, 3);
    png_read_info(png, info);

    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0;
    png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, NULL, NULL, NULL);
    reader->width = width;
    reader->height = height;
    if (width > IMAGE_MAX_SIDE || height > IMAGE_MAX_SIDE ||
        (int64_t)width * (int64_t)height > IMAGE_MAX_PIXELS) {
        reader->too_large = true;
        return -1;
    }

    bool has_trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    bool has_alpha = (color_type & PNG_COLOR_MASK_ALPHA) != 0 || has_trns;
    png_set_expand(png); /* palette → RGB, gray < 8 bit → 8 bit, tRNS → alpha */
    if (bit_depth == 16)
        png_set_scale_16(png);
    if (!(color_type & PNG_COLOR_MASK_COLOR) && has_alpha)
        png_set_gray_to_rgb(png); /* gray + alpha → RGBA: we have no 2-channel images */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    if (channels != 1 && channels != 3 && channels != 4)
        png_error(png, "unexpected channel count after conversion");
    if (png_get_rowbytes(png, info) != (size_t)width * (size_t)channels)
        png_error(png, "unexpected row size after conversion");

    reader->image = moire_image_new((int)width, (int)height, channels);
    reader->rows = malloc_array(height, sizeof *reader->rows);
    if (!reader->image || !reader->rows)
        png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++)
        reader->rows[y] = reader->image->pixels + (size_t)y * width * (size_t)channels;
    png_read_image(png, reader->rows);
    png_read_end(png, info); /* texts after IDAT land in `info` too */
    return 0;
}

moire_status moire_png_load(const char *path, moire_image **out_image, char **out_parameters,
                            char **out_moire_json)
{
    if (out_image)
        *out_image = NULL;
    if (out_parameters)
        *out_parameters = NULL;
    if (out_moire_json)
        *out_moire_json = NULL;
    if (!path || !out_image)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_png_load: path and out_image are required");

    png_reader reader;
    memset(&reader, 0, sizeof reader);
    moire_status open_status = file_fopen_input(path, "a PNG image", &reader.file, NULL);
    if (open_status != MOIRE_OK)
        return open_status;
    unsigned char signature[8];
    size_t got = fread(signature, 1, sizeof signature, reader.file);
    if (got != sizeof signature || png_sig_cmp(signature, 0, sizeof signature) != 0) {
        fclose(reader.file);
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: not a PNG file (the PNG signature is missing); convert the "
                          "image to PNG first",
                          path);
    }

    moire_status status = MOIRE_OK;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader.errors,
                                             png_error_cb, png_warning_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory (libpng)", path);
    } else if (png_read_inner(png, info, &reader) != 0) {
        if (reader.too_large)
            status = error_fail(MOIRE_ERROR_UNSUPPORTED,
                                "%s: the image is %ux%u pixels; at most %d a side and %lld "
                                "pixels in all are supported: scale it down first",
                                path, (unsigned)reader.width, (unsigned)reader.height,
                                IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
        else if (strcmp(reader.errors.message, "out of memory") == 0)
            status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory for a %ux%u "
                                "image", path, (unsigned)reader.width,
                                (unsigned)reader.height);
        else if (strcmp(reader.errors.message, "Read Error") == 0)
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: the PNG is truncated (the file ends early); save or "
                                "download it again",
                                path);
        else
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: the PNG is corrupt (%s); save or download it again", path,
                                reader.errors.message[0] ? reader.errors.message
                                : "unknown libpng error");
    }

    if (status == MOIRE_OK && (out_parameters || out_moire_json)) {
        moire_png_info texts;
        status = moire_png_read_info(path, &texts);
        if (status == MOIRE_OK) {
            if (out_parameters) {
                *out_parameters = texts.parameters;
                texts.parameters = NULL;
            }
            if (out_moire_json) {
                *out_moire_json = texts.moire_json;
                texts.moire_json = NULL;
            }
            moire_png_info_clear(&texts);
        }
    }
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    fclose(reader.file);
    free(reader.rows);
    if (status != MOIRE_OK) {
        moire_image_free(reader.image);
        if (out_parameters) {
            free(*out_parameters);
            *out_parameters = NULL;
        }
        if (out_moire_json) {
            free(*out_moire_json);
            *out_moire_json = NULL;
        }
        return status;
    }
    *out_image = reader.image;
    return MOIRE_OK;
}
