/* png_info.c — a PNG's size and its "parameters" / "moire" texts without decoding a pixel.
 *
 * `moire info --image`, the studio's and the plug-in's "open PNG" and moire_png_load all
 * take their texts from here: a walk over the chunk list (length, type, data, CRC) that
 * reads IHDR and the tEXt / zTXt / iTXt chunks and seeks past everything else, IDAT
 * included. Bounds, so that a small hostile file costs little (docs/ENGINE.md, "Hostile
 * files"):
 *   - a text chunk is read only when it is at most PNG_TEXT_MAX_BYTES long, and inflates
 *     (zTXt, compressed iTXt) into at most PNG_TEXT_MAX_BYTES: a larger one is refused as a
 *     decompression bomb (A1111's texts are a few KB);
 *   - memory is one text chunk at a time plus the two kept texts; time is linear in the
 *     number of chunks, and each chunk is at least 12 bytes of the file.
 * CRCs of text chunks are checked; a text chunk with a bad CRC is skipped (as libpng does
 * with ancillary chunks). The first chunk with a given key wins.
 */
#include "file_guard.h"
#include "internal.h"
#include "zip_reader.h"

#include <errno.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PNG_TEXT_MAX_BYTES (1u << 20)

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* iTXt is UTF-8 by definition; tEXt/zTXt are Latin-1 per the spec, but many writers (sd.cpp)
 * put UTF-8 there, so valid UTF-8 is kept as is. Stops at a NUL, as libpng's strings do. */
static char *text_to_utf8(const uint8_t *s, size_t n, bool is_utf8)
{
    const uint8_t *nul = memchr(s, 0, n);
    if (nul)
        n = (size_t)(nul - s);
    if (is_utf8 || g_utf8_validate((const char *)s, (gssize)n, NULL)) {
        if (!g_utf8_validate((const char *)s, (gssize)n, NULL))
            return g_utf8_make_valid((const char *)s, (gssize)n); /* g_free == free here */
        char *copy = malloc(n + 1);
        if (copy) {
            memcpy(copy, s, n);
            copy[n] = '\0';
        }
        return copy;
    }
    char *copy = malloc(2 * n + 1); /* Latin-1 → UTF-8 at most doubles */
    if (!copy)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            copy[j++] = (char)s[i];
        } else {
            copy[j++] = (char)(0xC0 | (s[i] >> 6));
            copy[j++] = (char)(0x80 | (s[i] & 0x3F));
        }
    }
    copy[j] = '\0';
    return copy;
}

/* A zlib stream (RFC 1950: 2-byte header, DEFLATE, Adler-32) inflated into a fresh buffer
 * of at most PNG_TEXT_MAX_BYTES. Returns false with *too_large set for a bomb. */
static bool inflate_zlib(const uint8_t *src, size_t n, uint8_t **out, size_t *out_size,
                         bool *too_large)
{
    *too_large = false;
    if (n < 2 || (src[0] & 0x0F) != 8 || ((unsigned)src[0] << 8 | src[1]) % 31 != 0 ||
        (src[1] & 0x20))
        return false;
    uint8_t *buffer = malloc(PNG_TEXT_MAX_BYTES);
    if (!buffer)
        return false;
    size_t written = 0;
    zip_inflate_result result = zip_inflate(src + 2, n - 2, buffer, PNG_TEXT_MAX_BYTES,
                                            &written);
    if (result != ZIP_INFLATE_OK) {
        *too_large = result == ZIP_INFLATE_TOO_LARGE;
        free(buffer);
        return false;
    }
    *out = buffer;
    *out_size = written;
    return true;
}

typedef enum text_result { TEXT_SKIP, TEXT_OK, TEXT_BOMB, TEXT_OOM } text_result;

/* Decodes one text chunk's data into its keyword and UTF-8 text (malloc'd). */
static text_result decode_text_chunk(const uint8_t type[4], const uint8_t *data, size_t n,
                                     char keyword[80], char **text)
{
    *text = NULL;
    const uint8_t *nul = memchr(data, 0, n < 80 ? n : 80);
    if (!nul || nul == data)
        return TEXT_SKIP;
    size_t key_len = (size_t)(nul - data);
    memcpy(keyword, data, key_len);
    keyword[key_len] = '\0';
    const uint8_t *p = nul + 1, *end = data + n;
    bool compressed = false, utf8 = false;
    if (memcmp(type, "zTXt", 4) == 0) {
        if (p >= end || *p != 0)
            return TEXT_SKIP;
        p++;
        compressed = true;
    } else if (memcmp(type, "iTXt", 4) == 0) {
        if (end - p < 2 || p[1] != 0)
            return TEXT_SKIP;
        compressed = p[0] != 0;
        p += 2;
        for (int field = 0; field < 2; field++) { /* language tag, translated keyword */
            const uint8_t *z = memchr(p, 0, (size_t)(end - p));
            if (!z)
                return TEXT_SKIP;
            p = z + 1;
        }
        utf8 = true;
    }
    if (!compressed) {
        *text = text_to_utf8(p, (size_t)(end - p), utf8);
        return *text ? TEXT_OK : TEXT_OOM;
    }
    uint8_t *inflated = NULL;
    size_t inflated_size = 0;
    bool too_large = false;
    if (!inflate_zlib(p, (size_t)(end - p), &inflated, &inflated_size, &too_large))
        return too_large ? TEXT_BOMB : TEXT_SKIP;
    *text = text_to_utf8(inflated, inflated_size, utf8);
    free(inflated);
    return *text ? TEXT_OK : TEXT_OOM;
}

void moire_png_info_clear(moire_png_info *info)
{
    if (!info)
        return;
    free(info->parameters);
    free(info->moire_json);
    memset(info, 0, sizeof *info);
}

moire_status moire_png_read_info(const char *path, moire_png_info *out)
{
    if (!out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_png_read_info: no output");
    memset(out, 0, sizeof *out);
    FILE *stream = NULL;
    uint64_t file_size = 0;
    moire_status status = file_fopen_input(path, "a PNG image", &stream, &file_size);
    if (status != MOIRE_OK)
        return status;

    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    uint8_t head[8];
    if (fread(head, 1, 8, stream) != 8 || memcmp(head, signature, 8) != 0) {
        fclose(stream);
        return error_fail(MOIRE_ERROR_FORMAT, "%s: not a PNG file (the PNG signature is "
                          "missing); convert the image to PNG first", path);
    }
    uint64_t offset = 8;
    bool seen_ihdr = false, seen_iend = false, has_trns = false;
    int color_type = -1;
    uint8_t *chunk = NULL; /* type + data of the current text chunk */
    while (status == MOIRE_OK && !seen_iend) {
        uint8_t header[8];
        if (fread(header, 1, 8, stream) != 8)
            break; /* truncated: reported below */
        uint32_t length = be32(header);
        const uint8_t *type = header + 4;
        offset += 8;
        if (length > 0x7FFFFFFFu || length > file_size - offset) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: the PNG is truncated or corrupt (a "
                                "%.4s chunk of %u bytes at byte %llu runs past the end); save "
                                "or download it again", path, (const char *)type,
                                (unsigned)length, (unsigned long long)offset - 8);
            break;
        }
        bool is_text = memcmp(type, "tEXt", 4) == 0 || memcmp(type, "zTXt", 4) == 0 ||
                       memcmp(type, "iTXt", 4) == 0;
        bool is_ihdr = memcmp(type, "IHDR", 4) == 0;
        if (!seen_ihdr && !is_ihdr) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: the PNG is corrupt (it does not "
                                "start with IHDR); save or download it again", path);
            break;
        }
        if (is_ihdr || (is_text && length <= PNG_TEXT_MAX_BYTES)) {
            free(chunk);
            chunk = malloc((size_t)length + 4);
            uint8_t crc_bytes[4];
            if (!chunk) {
                status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
                break;
            }
            memcpy(chunk, type, 4);
            if (fread(chunk + 4, 1, length, stream) != length ||
                fread(crc_bytes, 1, 4, stream) != 4)
                break;
            offset += (uint64_t)length + 4;
            bool crc_ok = zip_crc32(chunk, (size_t)length + 4) == be32(crc_bytes);
            if (is_ihdr) {
                if (seen_ihdr || length != 13 || !crc_ok) {
                    status = error_fail(MOIRE_ERROR_FORMAT, "%s: the PNG is corrupt (a bad "
                                        "IHDR chunk); save or download it again", path);
                    break;
                }
                seen_ihdr = true;
                uint32_t width = be32(chunk + 4), height = be32(chunk + 8);
                if (width == 0 || height == 0 || width > 0x7FFFFFFFu || height > 0x7FFFFFFFu) {
                    status = error_fail(MOIRE_ERROR_FORMAT, "%s: the PNG is corrupt (size "
                                        "%ux%u); save or download it again", path,
                                        (unsigned)width, (unsigned)height);
                    break;
                }
                out->width = (int)width;
                out->height = (int)height;
                color_type = chunk[4 + 9];
                continue;
            }
            if (!crc_ok)
                continue;
            char keyword[80];
            char *text = NULL;
            text_result result = decode_text_chunk(type, chunk + 4, length, keyword, &text);
            if (result == TEXT_BOMB) {
                status = error_fail(MOIRE_ERROR_FORMAT, "%s: a %.4s text chunk inflates past "
                                    "%u bytes; refusing it (a decompression bomb?)", path,
                                    (const char *)type, PNG_TEXT_MAX_BYTES);
                break;
            }
            if (result == TEXT_OOM) {
                status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
                break;
            }
            if (result != TEXT_OK)
                continue;
            char **slot = strcmp(keyword, "parameters") == 0 ? &out->parameters
                        : strcmp(keyword, "moire") == 0      ? &out->moire_json
                                                             : NULL;
            if (slot && !*slot)
                *slot = text; /* the first chunk with a key wins */
            else
                free(text);
            continue;
        }
        if (memcmp(type, "tRNS", 4) == 0)
            has_trns = true;
        if (memcmp(type, "IEND", 4) == 0)
            seen_iend = true;
        if (fseeko(stream, (off_t)length + 4, SEEK_CUR) != 0)
            break;
        offset += (uint64_t)length + 4;
    }
    free(chunk);
    fclose(stream);
    if (status == MOIRE_OK && !seen_iend)
        status = error_fail(MOIRE_ERROR_FORMAT, "%s: the PNG is truncated (the file ends "
                            "early); save or download it again", path);
    if (status != MOIRE_OK) {
        moire_png_info_clear(out);
        return status;
    }
    /* the channel count moire_png_load converts to: gray 1, RGB 3, with alpha (or a tRNS
       transparency) 4 — gray + alpha becomes RGBA, there are no 2-channel images */
    bool alpha = (color_type & 4) != 0 || has_trns;
    out->channels = alpha ? 4 : (color_type & 2) ? 3 : 1;
    return MOIRE_OK;
}
