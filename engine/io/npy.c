/* npy.c — NumPy .npy reading and writing (see npy.h).
 *
 * The header is a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * parsed here by a small tokenizer that accepts either quote style, any spacing, keys in any
 * order and trailing commas. The data size implied by the shape is checked against the file
 * size before anything is converted.
 */
#include "npy.h"

#include "file_guard.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NPY_MAGIC     "\x93NUMPY"
#define NPY_MAGIC_LEN 6

typedef enum npy_dtype { NPY_F4, NPY_F8, NPY_F2, NPY_I4, NPY_I8 } npy_dtype;

typedef struct npy_header {
    char descr[32];
    int fortran_order;          /* -1 = absent */
    int ndim;                   /* -1 = absent */
    int64_t shape[NPY_MAX_DIMS];
} npy_header;

/* ------------------------------------------------------------------------------------------
 * Header dict parser
 * ---------------------------------------------------------------------------------------- */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool take(cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string ('…' or "…", no escapes needed for npy keys/descr). */
static bool parse_string(cursor *c, char *out, size_t size)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (n + 1 >= size)
            return false;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return false;
    c->p++;
    out[n] = '\0';
    return true;
}

static bool parse_word(cursor *c, const char *word)
{
    skip_space(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, word, n) == 0) {
        c->p += n;
        return true;
    }
    return false;
}

/* (d0, d1, …) with an optional trailing comma; () is a scalar. */
static bool parse_shape(cursor *c, npy_header *h)
{
    if (!take(c, '('))
        return false;
    h->ndim = 0;
    for (;;) {
        if (take(c, ')'))
            return true;
        skip_space(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return false;
        int64_t value = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (value > (INT64_MAX - 9) / 10)
                return false;
            value = value * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L')
            c->p++; /* Python 2 long */
        if (h->ndim >= NPY_MAX_DIMS) {
            h->ndim = NPY_MAX_DIMS + 1;
            return true; /* reported by the caller */
        }
        h->shape[h->ndim++] = value;
        if (!take(c, ','))
            return take(c, ')');
    }
}

static moire_status parse_header(const char *path, const char *text, size_t length,
                                 npy_header *h)
{
    memset(h, 0, sizeof *h);
    h->fortran_order = -1;
    h->ndim = -1;
    cursor c = {text, text + length};
    if (!take(&c, '{'))
        goto bad;
    for (;;) {
        if (take(&c, '}'))
            break;
        char key[32];
        if (!parse_string(&c, key, sizeof key) || !take(&c, ':'))
            goto bad;
        if (strcmp(key, "descr") == 0) {
            skip_space(&c);
            if (c.p < c.end && *c.p == '[')
                return error_fail(MOIRE_ERROR_UNSUPPORTED,
                                  "%s: structured arrays (record dtypes) are not supported; "
                                  "save a plain float32 array",
                                  path);
            if (!parse_string(&c, h->descr, sizeof h->descr))
                goto bad;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (parse_word(&c, "True"))
                h->fortran_order = 1;
            else if (parse_word(&c, "False"))
                h->fortran_order = 0;
            else
                goto bad;
        } else if (strcmp(key, "shape") == 0) {
            if (!parse_shape(&c, h))
                goto bad;
        } else {
            goto bad;
        }
        if (!take(&c, ',')) {
            if (take(&c, '}'))
                break;
            goto bad;
        }
    }
    if (!h->descr[0] || h->fortran_order < 0 || h->ndim < 0)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the .npy header lacks 'descr', 'fortran_order' or 'shape'; "
                          "write the file with numpy.save",
                          path);
    if (h->ndim > NPY_MAX_DIMS)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: more than %d dimensions", path,
                          NPY_MAX_DIMS);
    return MOIRE_OK;
bad:
    return error_fail(MOIRE_ERROR_FORMAT,
                      "%s: the .npy header is not a valid dict at offset %d (\"%.*s\"); "
                      "write the file with numpy.save",
                      path, (int)(c.p - text), (int)(length < 60 ? length : 60), text);
}

static moire_status parse_descr(const char *path, const char *descr, npy_dtype *dtype,
                                size_t *itemsize)
{
    static const struct {
        const char *name;
        npy_dtype dtype;
        size_t size;
    } known[] = {{"f4", NPY_F4, 4}, {"f8", NPY_F8, 8}, {"f2", NPY_F2, 2},
                 {"i4", NPY_I4, 4}, {"i8", NPY_I8, 8}};
    char order = descr[0];
    const char *type = descr;
    if (order == '<' || order == '>' || order == '=' || order == '|')
        type++;
    if (strcmp(type, "O") == 0)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s: object arrays (dtype '%s') cannot be read; save a float32 "
                          "array",
                          path, descr);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(type, known[i].name) != 0)
            continue;
        if (order == '>')
            return error_fail(MOIRE_ERROR_UNSUPPORTED,
                              "%s: big-endian dtype '%s' is not supported; save with "
                              "arr.astype('<f4')",
                              path, descr);
        if (order == '|')
            break;
        *dtype = known[i].dtype;
        *itemsize = known[i].size;
        return MOIRE_OK;
    }
    return error_fail(MOIRE_ERROR_UNSUPPORTED,
                      "%s: dtype '%s' is not supported (use float32 '<f4'; '<f8', '<f2', '<i4' "
                      "and '<i8' are converted)",
                      path, descr);
}

static float half_to_float(uint16_t h)
{
    int sign = h >> 15, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    float value;
    if (exponent == 0)
        value = ldexpf((float)mantissa, -24);
    else if (exponent == 31)
        value = mantissa ? NAN : INFINITY;
    else
        value = ldexpf((float)(mantissa | 0x400), exponent - 25);
    return sign ? -value : value;
}

static void convert(const unsigned char *src, npy_dtype dtype, int64_t n, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        switch (dtype) {
        case NPY_F4: {
            float v;
            memcpy(&v, src + 4 * i, 4);
            dst[i] = v;
            break;
        }
        case NPY_F8: {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        case NPY_F2: {
            uint16_t v;
            memcpy(&v, src + 2 * i, 2);
            dst[i] = half_to_float(v);
            break;
        }
        case NPY_I4: {
            int32_t v;
            memcpy(&v, src + 4 * i, 4);
            dst[i] = (float)v;
            break;
        }
        case NPY_I8: {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------------------------- */

moire_status moire_npy_load(const char *path, moire_npy *out)
{
    if (!path || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_npy_load: NULL argument");
    memset(out, 0, sizeof *out);

    FILE *file = NULL;
    uint64_t size_on_disk = 0;
    moire_status status = file_fopen_input(path, "a .npy file", &file, &size_on_disk);
    if (status != MOIRE_OK)
        return status;
    unsigned char *bytes = NULL;
    size_t file_size = (size_t)size_on_disk;
    if (file_size < NPY_MAGIC_LEN + 4) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: %zu bytes is too short for a .npy file (truncated?)", path,
                            file_size);
        goto done;
    }
    bytes = malloc(file_size);
    if (!bytes) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", path,
                            file_size);
        goto done;
    }
    if (fread(bytes, 1, file_size, file) != file_size) {
        status = error_fail(MOIRE_ERROR_IO, "%s: read error: %s", path,
                            ferror(file) ? strerror(errno) : "the file shrank while reading");
        goto done;
    }
    if (memcmp(bytes, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: not a .npy file (the \\x93NUMPY magic is missing); write it "
                            "with numpy.save",
                            path);
        goto done;
    }
    int major = bytes[6];
    size_t header_len, header_start;
    if (major == 1) {
        header_len = (size_t)bytes[8] | (size_t)bytes[9] << 8;
        header_start = 10;
    } else if (major == 2 || major == 3) {
        if (file_size < 12) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: truncated .npy header", path);
            goto done;
        }
        header_len = (size_t)bytes[8] | (size_t)bytes[9] << 8 | (size_t)bytes[10] << 16 |
                     (size_t)bytes[11] << 24;
        header_start = 12;
    } else {
        status = error_fail(MOIRE_ERROR_UNSUPPORTED,
                            "%s: .npy format version %d.%d is not supported (1.0-3.0)", path,
                            major, bytes[7]);
        goto done;
    }
    if (header_len > file_size - header_start) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: the header length %zu is past the end of the file (%zu "
                            "bytes); the file is truncated",
                            path, header_len, file_size);
        goto done;
    }
    npy_header header;
    status = parse_header(path, (const char *)bytes + header_start, header_len, &header);
    if (status != MOIRE_OK)
        goto done;
    npy_dtype dtype = NPY_F4;
    size_t itemsize = 4;
    status = parse_descr(path, header.descr, &dtype, &itemsize);
    if (status != MOIRE_OK)
        goto done;
    if (header.fortran_order == 1) {
        status = error_fail(MOIRE_ERROR_UNSUPPORTED,
                            "%s: Fortran-order arrays are not supported; save "
                            "numpy.ascontiguousarray(arr)",
                            path);
        goto done;
    }
    int64_t numel = 1;
    for (int i = 0; i < header.ndim; i++) {
        if (header.shape[i] != 0 && numel > INT64_MAX / 8 / header.shape[i]) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: the shape is absurdly large", path);
            goto done;
        }
        numel *= header.shape[i];
    }
    size_t data_start = header_start + header_len;
    size_t available = file_size - data_start;
    if ((uint64_t)numel > available / itemsize) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: the shape needs %lld bytes of data but the file has %zu "
                            "after the header; the file is truncated",
                            path, (long long)numel * (long long)itemsize, available);
        goto done;
    }
    out->data = malloc_array((size_t)numel, sizeof(float));
    if (!out->data) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory for %lld values",
                            path, (long long)numel);
        goto done;
    }
    convert(bytes + data_start, dtype, numel, out->data);
    /* inputs are latents, timesteps and labels: a NaN or an infinity is never meant, and
       would come out as a silently wrong result */
    for (int64_t i = 0; i < numel; i++) {
        if (!isfinite(out->data[i])) {
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: value %lld is %s; .npy inputs must be finite: fix the "
                                "array (numpy.nan_to_num) and save it again", path,
                                (long long)i, isnan(out->data[i]) ? "NaN" : "infinite");
            goto done;
        }
    }
    out->ndim = header.ndim;
    memcpy(out->shape, header.shape, sizeof out->shape);
    out->numel = numel;
done:
    free(bytes);
    fclose(file);
    if (status != MOIRE_OK)
        moire_npy_free(out);
    return status;
}

void moire_npy_free(moire_npy *npy)
{
    if (!npy)
        return;
    free(npy->data);
    memset(npy, 0, sizeof *npy);
}

/* ------------------------------------------------------------------------------------------
 * Saving
 * ---------------------------------------------------------------------------------------- */

/* Opens a fresh "<path>.XXXXXX" with O_EXCL (mode 0666 less the umask). */
static int open_temporary(const char *path, char *tmp_path, size_t tmp_size)
{
    static unsigned counter;
    unsigned seed = (unsigned)getpid() * 2246822519u ^ (unsigned)time(NULL);
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned r = seed + __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 40503u;
        r ^= r >> 13;
        r *= 0x5bd1e995u;
        r ^= r >> 15;
        if ((size_t)snprintf(tmp_path, tmp_size, "%s.%06x", path, r & 0xFFFFFFu) >=
            tmp_size) {
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

static bool write_all(int fd, const void *data, size_t size)
{
    const char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += n;
        size -= (size_t)n;
    }
    return true;
}

moire_status moire_npy_save(const char *path, int ndim, const int64_t *shape,
                            const float *data)
{
    if (!path || ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !shape))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_npy_save: bad arguments (ndim %d, at most %d)", ndim,
                          NPY_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && numel > INT64_MAX / 4 / shape[i]))
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "%s: dimension %d of size %lld is out of range", path, i,
                              (long long)shape[i]);
        numel *= shape[i];
    }
    if (numel > 0 && !data)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "%s: no data to save", path);

    char dict[512];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld%s", (long long)shape[i],
                        ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
    len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
    /* magic + version + u16 length + dict + padding + '\n' ≡ 0 (mod 64) */
    size_t total = NPY_MAGIC_LEN + 4 + (size_t)len + 1;
    size_t padded = (total + 63) / 64 * 64;
    unsigned char header[640];
    size_t header_len = padded - (NPY_MAGIC_LEN + 4);
    memcpy(header, NPY_MAGIC, NPY_MAGIC_LEN);
    header[6] = 1;
    header[7] = 0;
    header[8] = (unsigned char)(header_len & 0xFF);
    header[9] = (unsigned char)(header_len >> 8);
    memcpy(header + 10, dict, (size_t)len);
    memset(header + 10 + len, ' ', padded - 10 - (size_t)len - 1);
    header[padded - 1] = '\n';

    char tmp_path[4096 + 16];
    int fd = open_temporary(path, tmp_path, sizeof tmp_path);
    if (fd < 0) {
        int err = errno;
        return error_fail(MOIRE_ERROR_IO, "%s: cannot create the file: %s%s", path,
                          strerror(err), file_output_hint(path, err));
    }
    bool ok = write_all(fd, header, padded) &&
              write_all(fd, data, (size_t)numel * sizeof(float)) && fsync(fd) == 0;
    int err = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        unlink(tmp_path);
        return error_fail(MOIRE_ERROR_IO, "%s: cannot write the file: %s%s", path,
                          strerror(err), file_output_hint(path, err));
    }
    moire_status status = moire_output_replace(tmp_path, path);
    if (status != MOIRE_OK)
        unlink(tmp_path);
    return status;
}
