/* safetensors.c — the safetensors reader (mmap, hostile-file validation) and the atomic
 * writer. See safetensors.h for the layout.
 *
 * The reader trusts nothing in the file: every length, offset and shape is checked before a
 * pointer into the mapping is handed out, so a truncated or malicious file fails with a
 * message instead of a crash. Tensor data stays in the read-only mapping; F32 data may be
 * misaligned there (the header length need not be a multiple of 4), callers that need
 * aligned floats copy (st_convert_to_f32 is alignment-safe).
 *
 * The writer produces deterministic files: tensors sorted by name, contiguous offsets in
 * that order, header padded with spaces to a multiple of 8 so the data section is aligned.
 */
#include "safetensors.h"

#include "internal.h"
#include "file_guard.h"
#include "json_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is not a model header but an attack or garbage: the largest
 * real checkpoints (thousands of tensors) have headers of a few hundred KB. */
#define ST_HEADER_MAX_BYTES (100ull * 1000 * 1000)

struct st_file {
    char *path;
    const uint8_t *map;        /* whole file, read-only                                  */
    size_t map_size;
    const uint8_t *data;       /* data section: map + 8 + header length                  */
    size_t data_size;
    st_tensor *tensors;        /* [tensor_count], sorted by name (for st_find)           */
    int tensor_count;
    char **metadata_keys;      /* [metadata_count], sorted by key                        */
    char **metadata_values;
    int metadata_count;
};

/* ------------------------------------------------------------------------------------------
 * dtypes and conversion
 * ---------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4}, [ST_I64] = {"I64", 8}, [ST_U8] = {"U8", 1},
};
#define DTYPE_COUNT ((int)(sizeof dtype_table / sizeof dtype_table[0]))

size_t st_dtype_size(st_dtype dtype)
{
    return (int)dtype >= 0 && (int)dtype < DTYPE_COUNT ? dtype_table[dtype].size : 0;
}

const char *st_dtype_name(st_dtype dtype)
{
    return (int)dtype >= 0 && (int)dtype < DTYPE_COUNT ? dtype_table[dtype].name : "?";
}

static bool dtype_from_name(const char *name, st_dtype *out)
{
    for (int i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (st_dtype)i;
            return true;
        }
    }
    return false;
}

static float f32_from_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static uint32_t bits_from_f32(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* IEEE binary16 → binary32, exact for every input (subnormals, ±inf, NaN payloads).
 * Branch-free so the conversion loop vectorises (loading an F16 checkpoint is bound by it):
 * the half's exponent and mantissa bits, shifted into fp32 position, read as a float that
 * is exactly the half's magnitude · 2^-112 (subnormals included, they become fp32
 * subnormals), so one multiply by 2^112 rebiases. Inf/NaN get the all-ones exponent. */
static float f16_to_f32(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t magnitude_bits = (uint32_t)(half & 0x7fffu) << 13;
    float rebiased = f32_from_bits(magnitude_bits) * 0x1p112f;
    uint32_t finite = bits_from_f32(rebiased);
    uint32_t special = magnitude_bits | 0x7f800000u;
    uint32_t result = (half & 0x7c00u) == 0x7c00u ? special : finite;
    return f32_from_bits(result | sign);
}

/* binary32 → binary16 with round-to-nearest-even; overflow goes to ±inf, NaN stays NaN. */
static uint16_t f32_to_f16(float value)
{
    uint32_t bits = bits_from_f32(value);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;

    if (magnitude >= 0x7f800000u) { /* inf or NaN (keep it a quiet NaN) */
        if (magnitude == 0x7f800000u)
            return sign | 0x7c00u;
        return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
    }
    /* 65520 is halfway between 65504 (odd mantissa) and 2^16: ties-to-even gives inf */
    if (magnitude >= 0x477ff000u)
        return sign | 0x7c00u;
    if (magnitude < 0x38800000u) { /* below 2^-14: a subnormal half or zero */
        if (magnitude < 0x33000000u) /* below 2^-25, half of the smallest subnormal */
            return sign;
        uint32_t exponent = magnitude >> 23;                   /* 102 … 112            */
        uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exponent;                       /* to units of 2^-24     */
        uint32_t quotient = mantissa >> shift;
        uint32_t remainder = mantissa & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (remainder > halfway || (remainder == halfway && (quotient & 1u)))
            quotient++; /* may carry into the smallest normal, which is correct */
        return (uint16_t)(sign | quotient);
    }
    uint32_t half = (magnitude >> 13) - ((127u - 15u) << 10); /* rebias the exponent */
    uint32_t remainder = magnitude & 0x1fffu;
    if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u)))
        half++; /* a carry into the exponent is the correct rounding */
    return (uint16_t)(sign | half);
}

static float bf16_to_f32(uint16_t bf16)
{
    return f32_from_bits((uint32_t)bf16 << 16);
}

static uint16_t f32_to_bf16(float value)
{
    uint32_t bits = bits_from_f32(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) /* NaN: truncation could make it inf */
        return (uint16_t)((bits >> 16) | 0x40u);
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

void st_convert_to_f32(float *dst, const void *src, st_dtype dtype, int64_t count)
{
    const uint8_t *bytes = src;
    switch (dtype) {
    case ST_F32:
        memcpy(dst, src, (size_t)count * sizeof(float)); /* src may be misaligned */
        break;
    case ST_F16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t half;
            memcpy(&half, bytes + 2 * i, sizeof half);
            dst[i] = f16_to_f32(half);
        }
        break;
    case ST_BF16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t bf16;
            memcpy(&bf16, bytes + 2 * i, sizeof bf16);
            dst[i] = bf16_to_f32(bf16);
        }
        break;
    default: /* integer dtypes are never converted; callers check first */
        break;
    }
}

/* ------------------------------------------------------------------------------------------
 * Reader
 * ---------------------------------------------------------------------------------------- */

int st_tensor_count(const st_file *file)
{
    return file->tensor_count;
}

const st_tensor *st_tensor_at(const st_file *file, int index)
{
    return index >= 0 && index < file->tensor_count ? &file->tensors[index] : NULL;
}

static int compare_tensor_names(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

const st_tensor *st_find(const st_file *file, const char *name)
{
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, file->tensors, (size_t)file->tensor_count, sizeof(st_tensor),
                   compare_tensor_names);
}

const char *st_metadata_get(const st_file *file, const char *key)
{
    for (int i = 0; i < file->metadata_count; i++)
        if (strcmp(file->metadata_keys[i], key) == 0)
            return file->metadata_values[i];
    return NULL;
}

int st_metadata_count(const st_file *file)
{
    return file->metadata_count;
}

const char *st_metadata_key_at(const st_file *file, int index)
{
    return index >= 0 && index < file->metadata_count ? file->metadata_keys[index] : NULL;
}

void st_close(st_file *file)
{
    if (!file)
        return;
    if (file->map)
        munmap((void *)file->map, file->map_size);
    for (int i = 0; i < file->tensor_count; i++)
        free(file->tensors[i].name);
    free(file->tensors);
    for (int i = 0; i < file->metadata_count; i++) {
        free(file->metadata_keys[i]);
        free(file->metadata_values[i]);
    }
    free(file->metadata_keys);
    free(file->metadata_values);
    free(file->path);
    free(file);
}

/* A JSON integer that fits int64 (json-glib reads integers as G_TYPE_INT64 and anything
 * with a fraction or exponent as a double, which shapes and offsets must never be). */
static bool json_node_is_integer(JsonNode *node)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64;
}

static moire_status parse_metadata(st_file *file, JsonNode *node)
{
    if (!JSON_NODE_HOLDS_OBJECT(node))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: \"__metadata__\" is not a JSON object of strings; the file was "
                          "written by a broken exporter: export it again",
                          file->path);
    JsonObject *object = json_node_get_object(node);
    GList *members = json_object_get_members(object);
    members = g_list_sort(members, (GCompareFunc)strcmp);
    guint count = g_list_length(members);
    file->metadata_keys = calloc_array(count, sizeof(char *));
    file->metadata_values = calloc_array(count, sizeof(char *));
    if (!file->metadata_keys || !file->metadata_values) {
        g_list_free(members);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory reading metadata",
                          file->path);
    }
    for (GList *it = members; it; it = it->next) {
        const char *key = it->data;
        JsonNode *value = json_object_get_member(object, key);
        if (!JSON_NODE_HOLDS_VALUE(value) || json_node_get_value_type(value) != G_TYPE_STRING) {
            g_list_free(members);
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: metadata value for key \"%s\" is not a string (safetensors "
                              "metadata maps strings to strings); export the file again with "
                              "string values",
                              file->path, key);
        }
        int slot = file->metadata_count;
        file->metadata_keys[slot] = strdup(key);
        file->metadata_values[slot] = strdup(json_node_get_string(value));
        file->metadata_count++;
        if (!file->metadata_keys[slot] || !file->metadata_values[slot]) {
            g_list_free(members);
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory reading metadata",
                              file->path);
        }
    }
    g_list_free(members);
    return MOIRE_OK;
}

/* Fills `tensor` from its header entry, checking dtype, shape and offsets against the data
 * section; name is set by the caller. */
static moire_status parse_tensor_entry(const st_file *file, const char *name, JsonNode *node,
                                       st_tensor *tensor)
{
    const char *path = file->path;
    if (!JSON_NODE_HOLDS_OBJECT(node))
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: header entry for tensor '%s' is not a JSON object with dtype, "
                          "shape and data_offsets; the file is corrupt: export it again",
                          path, name);
    JsonObject *entry = json_node_get_object(node);
    JsonNode *dtype_node = json_object_get_member(entry, "dtype");
    JsonNode *shape_node = json_object_get_member(entry, "shape");
    JsonNode *offsets_node = json_object_get_member(entry, "data_offsets");
    const char *missing = !dtype_node ? "dtype" : !shape_node ? "shape"
                        : !offsets_node ? "data_offsets" : NULL;
    if (missing)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' has no \"%s\" in the header; the file is corrupt: "
                          "export it again",
                          path, name, missing);

    /* dtype */
    if (!JSON_NODE_HOLDS_VALUE(dtype_node) || json_node_get_value_type(dtype_node) != G_TYPE_STRING)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': \"dtype\" is not a string; the "
                          "file is corrupt: export it again", path, name);
    const char *dtype_name = json_node_get_string(dtype_node);
    if (!dtype_from_name(dtype_name, &tensor->dtype))
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s: tensor '%s' has dtype \"%s\", which is not supported (supported "
                          "dtypes: F32, F16, BF16, I32, I64, U8); convert the checkpoint to "
                          "F32, F16 or BF16",
                          path, name, dtype_name);
    size_t element_size = st_dtype_size(tensor->dtype);

    /* shape: up to ST_MAX_DIMS non-negative integers whose product fits int64 and size_t */
    if (!JSON_NODE_HOLDS_ARRAY(shape_node))
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': \"shape\" is not an array; the "
                          "file is corrupt: export it again", path, name);
    JsonArray *shape = json_node_get_array(shape_node);
    guint ndim = json_array_get_length(shape);
    if (ndim > ST_MAX_DIMS)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s: tensor '%s' has %u dimensions; at most %d are supported", path,
                          name, ndim, ST_MAX_DIMS);
    tensor->ndim = (int)ndim;
    int64_t numel = 1;
    bool overflow = false;
    for (guint d = 0; d < ndim; d++) {
        JsonNode *dim_node = json_array_get_element(shape, d);
        if (!json_node_is_integer(dim_node))
            return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': shape entry %u is not an "
                              "integer; the file is corrupt: export it again", path, name, d);
        int64_t dim = json_node_get_int(dim_node);
        if (dim < 0)
            /* json-glib wraps integers of 2^63 and more (2^64 - 1 reads as -1), so a
               negative value here may have been a huge one in the file */
            return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': shape entry %u is out of "
                              "range (negative, or 2^63 or more; read as %lld); the file is "
                              "corrupt or hostile: export it again", path, name, d,
                              (long long)dim);
        tensor->shape[d] = dim;
        if (dim != 0 && numel > INT64_MAX / dim)
            overflow = true;
        else
            numel *= dim;
    }
    /* a zero dimension makes the product 0 even after an "overflowing" partial product,
       but such a shape is still nonsense; reject it either way */
    if (overflow || (uint64_t)numel > SIZE_MAX / element_size)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': the element count of its shape "
                          "overflows; the header is corrupt or hostile: do not use this file",
                          path, name);
    tensor->numel = numel;
    tensor->nbytes = (size_t)numel * element_size;

    /* data_offsets: [begin, end] within the data section, matching dtype · shape */
    if (!JSON_NODE_HOLDS_ARRAY(offsets_node) ||
        json_array_get_length(json_node_get_array(offsets_node)) != 2)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': \"data_offsets\" is not an array "
                          "of 2 integers; the file is corrupt: export it again", path, name);
    JsonArray *offsets = json_node_get_array(offsets_node);
    JsonNode *begin_node = json_array_get_element(offsets, 0);
    JsonNode *end_node = json_array_get_element(offsets, 1);
    if (!json_node_is_integer(begin_node) || !json_node_is_integer(end_node) ||
        json_node_get_int(begin_node) < 0 || json_node_get_int(end_node) < 0)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be 2 "
                          "non-negative integers; the file is corrupt: export it again",
                          path, name);
    uint64_t begin = (uint64_t)json_node_get_int(begin_node);
    uint64_t end = (uint64_t)json_node_get_int(end_node);
    if (begin > end)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': data_offsets begin %llu is after "
                          "end %llu; the file is corrupt: export it again", path, name,
                          (unsigned long long)begin, (unsigned long long)end);
    if (end > file->data_size)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': data_offsets end %llu is past the "
                          "end of the data section (%zu bytes); the file is truncated: download "
                          "or export it again", path, name, (unsigned long long)end,
                          file->data_size);
    if (end - begin != tensor->nbytes)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes but "
                          "dtype %s and its shape need %zu; the file is corrupt: export it again",
                          path, name, (unsigned long long)(end - begin), dtype_name,
                          tensor->nbytes);
    tensor->data = file->data + begin;
    return MOIRE_OK;
}

static int compare_tensor_offsets(const void *a, const void *b)
{
    const uint8_t *pa = (*(const st_tensor *const *)a)->data;
    const uint8_t *pb = (*(const st_tensor *const *)b)->data;
    return pa < pb ? -1 : pa > pb;
}

/* Two tensors sharing bytes would let one write alias another after conversion and is
 * never produced by a correct writer. Empty tensors occupy nothing and cannot overlap. */
static moire_status check_no_overlap(const st_file *file)
{
    const st_tensor **by_offset = malloc_array((size_t)file->tensor_count,
                                               sizeof *by_offset);
    if (!by_offset)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", file->path);
    int count = 0;
    for (int i = 0; i < file->tensor_count; i++)
        if (file->tensors[i].nbytes > 0)
            by_offset[count++] = &file->tensors[i];
    qsort(by_offset, (size_t)count, sizeof *by_offset, compare_tensor_offsets);
    for (int i = 1; i < count; i++) {
        const st_tensor *previous = by_offset[i - 1], *current = by_offset[i];
        if ((const uint8_t *)previous->data + previous->nbytes > (const uint8_t *)current->data) {
            moire_status status = error_fail(
                                             MOIRE_ERROR_FORMAT,
                                             "%s: tensors '%s' and '%s' overlap in the data section (bytes %zu and %zu); "
                                             "the file is corrupt or hostile: export it again",
                                             file->path, previous->name, current->name,
                                             (size_t)((const uint8_t *)previous->data - file->data),
                                             (size_t)((const uint8_t *)current->data - file->data));
            free(by_offset);
            return status;
        }
    }
    free(by_offset);
    return MOIRE_OK;
}

static moire_status parse_header(st_file *file, const char *header, size_t header_size)
{
    const char *path = file->path;
    JsonParser *parser = json_parser_new();
    moire_status status = MOIRE_OK;
    if (json_guard_load(parser, "header", header, (long long)header_size) != MOIRE_OK) {
        char *why = strdup(moire_last_error());
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: the %s; the file is truncated, damaged or not a safetensors "
                            "file: download or export it again", path, why ? why : "header");
        free(why);
        g_object_unref(parser);
        return status;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_object_unref(parser);
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the header is JSON but not an object; this is not a safetensors "
                          "file", path);
    }
    JsonObject *object = json_node_get_object(root);
    GList *members = json_object_get_members(object);
    guint member_count = g_list_length(members);
    file->tensors = calloc_array(member_count, sizeof(st_tensor));
    if (!file->tensors) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory for %u tensors",
                            path, member_count);
        goto done;
    }
    for (GList *it = members; it; it = it->next) {
        const char *name = it->data;
        JsonNode *node = json_object_get_member(object, name);
        if (strcmp(name, "__metadata__") == 0) {
            status = parse_metadata(file, node);
        } else {
            st_tensor *tensor = &file->tensors[file->tensor_count];
            tensor->name = strdup(name);
            file->tensor_count++;
            if (!tensor->name)
                status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
            else
                status = parse_tensor_entry(file, name, node, tensor);
        }
        if (status != MOIRE_OK)
            goto done;
    }
    qsort(file->tensors, (size_t)file->tensor_count, sizeof(st_tensor), compare_tensor_names);
    /* json-glib keeps one member per name, but stay safe if a parser ever does not */
    for (int i = 1; i < file->tensor_count; i++) {
        if (strcmp(file->tensors[i - 1].name, file->tensors[i].name) == 0) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s' appears twice in the "
                                "header; the file is corrupt: export it again", path,
                                file->tensors[i].name);
            goto done;
        }
    }
    status = check_no_overlap(file);
done:
    g_list_free(members);
    g_object_unref(parser);
    return status;
}

moire_status st_open(const char *path, st_file **out)
{
    *out = NULL;
    if (!path)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "st_open: path is NULL");
    int fd;
    uint64_t size_on_disk = 0;
    moire_status open_status = file_open_input(path, "a .safetensors file", &fd, &size_on_disk);
    if (open_status != MOIRE_OK)
        return open_status;
    size_t file_size = (size_t)size_on_disk;
    if (file_size < 8) {
        close(fd);
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the file is %zu bytes, shorter than the 8-byte header length; "
                          "it is truncated or not a safetensors file: download or export it "
                          "again", path, file_size);
    }
    /* No MAP_POPULATE: a 33 GB checkpoint must not be forced into memory at open time (a
       header-only reader such as `moire info` touches a few pages). The loader, which does
       read every byte, asks for read-ahead with MADV_WILLNEED / MADV_SEQUENTIAL instead. */
    void *map = mmap(NULL, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED)
        return error_fail(MOIRE_ERROR_IO, "%s: cannot map the file (%zu bytes): %s", path,
                          file_size, strerror(map_errno));
    madvise(map, file_size, MADV_SEQUENTIAL);
    madvise(map, file_size, MADV_WILLNEED);

    st_file *file = calloc(1, sizeof *file);
    char *path_copy = strdup(path);
    if (!file || !path_copy) {
        free(file);
        free(path_copy);
        munmap(map, file_size);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    file->path = path_copy;
    file->map = map;
    file->map_size = file_size;

    uint64_t header_size = 0; /* little-endian u64, assembled bytewise for any host */
    for (int i = 7; i >= 0; i--)
        header_size = (header_size << 8) | file->map[i];
    moire_status status = MOIRE_OK;
    if (header_size == 0) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: header length 0 (a safetensors header is at least \"{}\"); "
                            "the file is truncated or not a safetensors file: download or "
                            "export it again", path);
    } else if (header_size > file_size - 8) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: header length %llu is past the end of the file (%zu bytes); "
                            "the file is truncated or not a safetensors file: download or "
                            "export it again", path, (unsigned long long)header_size, file_size);
    } else if (header_size > ST_HEADER_MAX_BYTES) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: header length %llu is over the %llu-byte limit; the file is "
                            "corrupt or not a safetensors file",
                            path, (unsigned long long)header_size, ST_HEADER_MAX_BYTES);
    } else {
        file->data = file->map + 8 + header_size;
        file->data_size = file_size - 8 - (size_t)header_size;
        status = parse_header(file, (const char *)file->map + 8, (size_t)header_size);
    }
    if (status != MOIRE_OK) {
        st_close(file);
        return status;
    }
    *out = file;
    return MOIRE_OK;
}

moire_status st_file_from_index(const char *path, const void *map, size_t map_size,
                                st_tensor *tensors, int tensor_count, st_file **out)
{
    *out = NULL;
    st_file *file = calloc(1, sizeof *file);
    char *path_copy = strdup(path ? path : "");
    if (!file || !path_copy) {
        free(file);
        free(path_copy);
        for (int i = 0; i < tensor_count; i++)
            free(tensors[i].name);
        free(tensors);
        if (map)
            munmap((void *)map, map_size);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    file->path = path_copy;
    file->map = map;
    file->map_size = map_size;
    file->data = map;
    file->data_size = map_size;
    file->tensors = tensors;
    file->tensor_count = tensor_count;
    moire_status status = MOIRE_OK;
    for (int i = 0; i < tensor_count && status == MOIRE_OK; i++) {
        const st_tensor *tensor = &tensors[i];
        const uint8_t *begin = tensor->data, *base = map;
        if (tensor->nbytes == 0)
            continue;
        if (!begin || begin < base || (size_t)(begin - base) > map_size ||
            tensor->nbytes > map_size - (size_t)(begin - base) ||
            tensor->nbytes != (size_t)tensor->numel * st_dtype_size(tensor->dtype))
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s' lies outside the file; "
                                "the file is corrupt", path, tensor->name);
    }
    if (status == MOIRE_OK && tensor_count > 0)
        qsort(file->tensors, (size_t)tensor_count, sizeof(st_tensor), compare_tensor_names);
    for (int i = 1; i < tensor_count && status == MOIRE_OK; i++)
        if (strcmp(file->tensors[i - 1].name, file->tensors[i].name) == 0)
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s' appears twice (after "
                                "removing a 'module.' prefix, if any); the file is corrupt",
                                path, file->tensors[i].name);
    if (status != MOIRE_OK) {
        st_close(file);
        return status;
    }
    *out = file;
    return MOIRE_OK;
}

/* ------------------------------------------------------------------------------------------
 * Writer
 * ---------------------------------------------------------------------------------------- */

typedef struct writer_tensor {
    char *name;
    st_dtype dtype;       /* as stored                                     */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const float *data;    /* caller's, referenced until st_writer_save     */
    const void *raw;      /* st_writer_add_raw: bytes written verbatim     */
} writer_tensor;

typedef struct writer_metadata {
    char *key;
    char *value;
} writer_metadata;

struct st_writer {
    writer_tensor *tensors;
    int tensor_count, tensor_capacity;
    writer_metadata *metadata;
    int metadata_count, metadata_capacity;
    bool out_of_memory; /* a set_metadata allocation failed; reported by save */
};

st_writer *st_writer_new(void)
{
    return calloc(1, sizeof(st_writer));
}

void st_writer_free(st_writer *writer)
{
    if (!writer)
        return;
    for (int i = 0; i < writer->tensor_count; i++)
        free(writer->tensors[i].name);
    free(writer->tensors);
    for (int i = 0; i < writer->metadata_count; i++) {
        free(writer->metadata[i].key);
        free(writer->metadata[i].value);
    }
    free(writer->metadata);
    free(writer);
}

/* Grows *array (of element_size items) so that one more fits. */
static bool grow(void **array, int *capacity, int count, size_t element_size)
{
    if (count < *capacity)
        return true;
    int new_capacity = *capacity ? 2 * *capacity : 16;
    void *grown = realloc(*array, (size_t)new_capacity * element_size);
    if (!grown)
        return false;
    *array = grown;
    *capacity = new_capacity;
    return true;
}

void st_writer_set_metadata(st_writer *writer, const char *key, const char *value)
{
    char *value_copy = strdup(value);
    if (!value_copy) {
        writer->out_of_memory = true;
        return;
    }
    for (int i = 0; i < writer->metadata_count; i++) {
        if (strcmp(writer->metadata[i].key, key) == 0) { /* last value wins */
            free(writer->metadata[i].value);
            writer->metadata[i].value = value_copy;
            return;
        }
    }
    char *key_copy = strdup(key);
    if (!key_copy || !grow((void **)&writer->metadata, &writer->metadata_capacity,
                           writer->metadata_count, sizeof(writer_metadata))) {
        free(key_copy);
        free(value_copy);
        writer->out_of_memory = true;
        return;
    }
    writer->metadata[writer->metadata_count++] = (writer_metadata){key_copy, value_copy};
}

moire_status st_writer_add_f32(st_writer *writer, const char *name, st_dtype stored_dtype,
                               int ndim, const int64_t *shape, const float *data)
{
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "st_writer_add_f32: tensor name \"%s\" is empty or reserved",
                          name ? name : "(null)");
    if (stored_dtype != ST_F32 && stored_dtype != ST_F16 && stored_dtype != ST_BF16)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "st_writer_add_f32: '%s': stored dtype %s is not F32, F16 or BF16",
                          name, st_dtype_name(stored_dtype));
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "st_writer_add_f32: '%s': %d dimensions (0..%d allowed)", name, ndim,
                          ST_MAX_DIMS);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] != 0 && numel > INT64_MAX / 4 / shape[d]))
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "st_writer_add_f32: '%s': dimension %d (%lld) is negative or "
                              "the shape is too large", name, d, (long long)shape[d]);
        numel *= shape[d];
    }
    if (numel > 0 && !data)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "st_writer_add_f32: '%s': data is NULL",
                          name);
    for (int i = 0; i < writer->tensor_count; i++)
        if (strcmp(writer->tensors[i].name, name) == 0)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "st_writer_add_f32: tensor '%s' was already added", name);
    char *name_copy = strdup(name);
    if (!name_copy || !grow((void **)&writer->tensors, &writer->tensor_capacity,
                            writer->tensor_count, sizeof(writer_tensor))) {
        free(name_copy);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "st_writer_add_f32: out of memory");
    }
    writer_tensor *tensor = &writer->tensors[writer->tensor_count++];
    *tensor = (writer_tensor){.name = name_copy, .dtype = stored_dtype, .ndim = ndim,
                              .numel = numel, .data = data};
    for (int d = 0; d < ndim; d++)
        tensor->shape[d] = shape[d];
    return MOIRE_OK;
}

moire_status st_writer_add_raw(st_writer *writer, const char *name, st_dtype dtype,
                               int ndim, const int64_t *shape, const void *bytes)
{
    if (st_dtype_size(dtype) == 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "st_writer_add_raw: '%s': unknown dtype %d", name ? name : "(null)",
                          (int)dtype);
    /* the F32 path checks the name, shape and duplicates; then the entry becomes raw */
    moire_status status = st_writer_add_f32(writer, name, ST_F32, ndim, shape,
                                            (const float *)bytes);
    if (status != MOIRE_OK)
        return status;
    writer_tensor *tensor = &writer->tensors[writer->tensor_count - 1];
    tensor->dtype = dtype;
    tensor->data = NULL;
    tensor->raw = bytes;
    return MOIRE_OK;
}

/* Appends `text` as a JSON string literal (quotes and escapes included). */
static void append_json_string(GString *out, const char *text)
{
    g_string_append_c(out, '"');
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        switch (*c) {
        case '"':  g_string_append(out, "\\\""); break;
        case '\\': g_string_append(out, "\\\\"); break;
        case '\n': g_string_append(out, "\\n"); break;
        case '\r': g_string_append(out, "\\r"); break;
        case '\t': g_string_append(out, "\\t"); break;
        default:
            if (*c < 0x20)
                g_string_append_printf(out, "\\u%04x", *c);
            else
                g_string_append_c(out, (char)*c); /* UTF-8 passes through */
        }
    }
    g_string_append_c(out, '"');
}

static int compare_writer_tensors(const void *a, const void *b)
{
    return strcmp(((const writer_tensor *)a)->name, ((const writer_tensor *)b)->name);
}

static int compare_writer_metadata(const void *a, const void *b)
{
    return strcmp(((const writer_metadata *)a)->key, ((const writer_metadata *)b)->key);
}

/* The header JSON (tensors already sorted), padded with spaces to a multiple of 8. */
static GString *build_header(const st_writer *writer)
{
    GString *header = g_string_new("{");
    bool first = true;
    if (writer->metadata_count > 0) {
        g_string_append(header, "\"__metadata__\":{");
        for (int i = 0; i < writer->metadata_count; i++) {
            if (i)
                g_string_append_c(header, ',');
            append_json_string(header, writer->metadata[i].key);
            g_string_append_c(header, ':');
            append_json_string(header, writer->metadata[i].value);
        }
        g_string_append_c(header, '}');
        first = false;
    }
    uint64_t offset = 0;
    for (int i = 0; i < writer->tensor_count; i++) {
        const writer_tensor *tensor = &writer->tensors[i];
        uint64_t nbytes = (uint64_t)tensor->numel * st_dtype_size(tensor->dtype);
        if (!first)
            g_string_append_c(header, ',');
        first = false;
        append_json_string(header, tensor->name);
        g_string_append_printf(header, ":{\"dtype\":\"%s\",\"shape\":[",
                               st_dtype_name(tensor->dtype));
        for (int d = 0; d < tensor->ndim; d++)
            g_string_append_printf(header, "%s%lld", d ? "," : "", (long long)tensor->shape[d]);
        g_string_append_printf(header, "],\"data_offsets\":[%llu,%llu]}",
                               (unsigned long long)offset,
                               (unsigned long long)(offset + nbytes));
        offset += nbytes;
    }
    g_string_append_c(header, '}');
    while (header->len % 8 != 0)
        g_string_append_c(header, ' ');
    return header;
}

/* Writes one tensor's data in its stored dtype, converting in bounded chunks. */
static bool write_tensor_data(FILE *stream, const writer_tensor *tensor)
{
    if (tensor->numel == 0) /* data may be NULL for an empty tensor */
        return true;
    if (tensor->raw)
        return fwrite(tensor->raw, st_dtype_size(tensor->dtype), (size_t)tensor->numel,
                      stream) == (size_t)tensor->numel;
    if (tensor->dtype == ST_F32)
        return fwrite(tensor->data, sizeof(float), (size_t)tensor->numel, stream) ==
               (size_t)tensor->numel;
    enum { CHUNK = 4096 };
    uint16_t buffer[CHUNK];
    for (int64_t start = 0; start < tensor->numel; start += CHUNK) {
        int64_t count = tensor->numel - start < CHUNK ? tensor->numel - start : CHUNK;
        for (int64_t i = 0; i < count; i++) {
            float value = tensor->data[start + i];
            buffer[i] = tensor->dtype == ST_F16 ? f32_to_f16(value) : f32_to_bf16(value);
        }
        if (fwrite(buffer, sizeof(uint16_t), (size_t)count, stream) != (size_t)count)
            return false;
    }
    return true;
}

moire_status st_writer_save(st_writer *writer, const char *path)
{
    if (writer->out_of_memory)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "%s: out of memory while collecting metadata", path);
    if (writer->tensor_count > 0) /* the arrays are NULL until the first add */
        qsort(writer->tensors, (size_t)writer->tensor_count, sizeof(writer_tensor),
              compare_writer_tensors);
    if (writer->metadata_count > 0)
        qsort(writer->metadata, (size_t)writer->metadata_count, sizeof(writer_metadata),
              compare_writer_metadata);
    GString *header = build_header(writer);

    char *temp_path = g_strdup_printf("%s.tmp.XXXXXX", path);
    int fd = mkstemp(temp_path);
    if (fd < 0) {
        moire_status status = error_fail(MOIRE_ERROR_IO,
                                         "%s: cannot create a temporary file next to it: %s; "
                                         "check that the directory exists and is writable",
                                         path, strerror(errno));
        g_free(temp_path);
        g_string_free(header, TRUE);
        return status;
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; a model file is meant to be shared */
    FILE *stream = fdopen(fd, "wb");
    bool ok = stream != NULL;
    if (!stream)
        close(fd);

    uint8_t length_bytes[8];
    for (int i = 0; i < 8; i++)
        length_bytes[i] = (uint8_t)((uint64_t)header->len >> (8 * i));
    ok = ok && fwrite(length_bytes, 1, 8, stream) == 8;
    ok = ok && fwrite(header->str, 1, header->len, stream) == header->len;
    for (int i = 0; ok && i < writer->tensor_count; i++)
        ok = write_tensor_data(stream, &writer->tensors[i]);
    ok = ok && fflush(stream) == 0 && fsync(fileno(stream)) == 0;
    int write_errno = errno;
    if (stream && fclose(stream) != 0 && ok) {
        ok = false;
        write_errno = errno;
    }
    moire_status status = MOIRE_OK;
    if (!ok)
        status = error_fail(MOIRE_ERROR_IO, "%s: writing failed: %s; check free disk space and "
                            "permissions", path, strerror(write_errno));
    else
        status = moire_output_replace(temp_path, path);
    if (status != MOIRE_OK)
        unlink(temp_path);
    g_free(temp_path);
    g_string_free(header, TRUE);
    return status;
}
