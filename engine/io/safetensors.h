/* safetensors.h — reader and writer for the safetensors format.
 *
 * Layout: u64 little-endian header length N, then N bytes of UTF-8 JSON
 *   {"__metadata__": {"k": "v", …}, "name": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, …}
 * then the data section; offsets are relative to its start. The reader mmaps the file and
 * checks everything a hostile file could get wrong: header length past the end, invalid
 * JSON, unknown dtype, negative/overflowing shapes, offsets out of the data section or not
 * matching dtype·shape, overlapping tensors. Tensors stay in the mapping (zero copy).
 */
#ifndef MOIRE_SAFETENSORS_H
#define MOIRE_SAFETENSORS_H

#include "moire.h"

#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_F32 = 0,
    ST_F16,
    ST_BF16,
    ST_I32,   /* accepted for small integer tables (class ids); never for weights */
    ST_I64,
    ST_U8,
} st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;   /* inside the mapping; nbytes = numel · st_dtype_size(dtype) */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

/* Opens and validates `path`. On failure returns a status with a message naming the file
 * and the problem. */
moire_status st_open(const char *path, st_file **out);
void         st_close(st_file *file);

int              st_tensor_count(const st_file *file);
const st_tensor *st_tensor_at(const st_file *file, int index);
const st_tensor *st_find(const st_file *file, const char *name); /* NULL if absent */

/* Builds an st_file from a tensor index made by another reader (the .pt checkpoint reader,
 * pt_reader.h) instead of a safetensors header. Takes over `tensors` (the array and each
 * name, malloc'd) and the read-only mapping `map` (munmapped by st_close; NULL = none),
 * also on failure. Every tensor's data must lie inside the mapping (checked); tensors may
 * share bytes (views of one storage). A duplicate name is refused. No metadata. */
moire_status st_file_from_index(const char *path, const void *map, size_t map_size,
                                st_tensor *tensors, int tensor_count, st_file **out);
/* __metadata__ value for `key`, or NULL. */
const char      *st_metadata_get(const st_file *file, const char *key);
int              st_metadata_count(const st_file *file);
const char      *st_metadata_key_at(const st_file *file, int index);

size_t      st_dtype_size(st_dtype dtype);
const char *st_dtype_name(st_dtype dtype);

/* Converts `count` elements of `src` (F32/F16/BF16) to fp32. */
void st_convert_to_f32(float *dst, const void *src, st_dtype dtype, int64_t count);

/* Writer: collects tensors (data is referenced, not copied, until st_writer_save) and
 * writes the file atomically (temporary file + rename). */
typedef struct st_writer st_writer;
st_writer   *st_writer_new(void);
void         st_writer_free(st_writer *writer);
void         st_writer_set_metadata(st_writer *writer, const char *key, const char *value);
/* dtype ST_F32 data given as float; ST_F16/ST_BF16 given as float are converted on save
 * (round to nearest even). */
moire_status st_writer_add_f32(st_writer *writer, const char *name, st_dtype stored_dtype,
                               int ndim, const int64_t *shape, const float *data);
/* Any dtype, data given as the bytes to store (numel · st_dtype_size, little-endian),
 * written verbatim: `moire convert` copies checkpoint tensors this way, bit for bit. */
moire_status st_writer_add_raw(st_writer *writer, const char *name, st_dtype dtype,
                               int ndim, const int64_t *shape, const void *bytes);
moire_status st_writer_save(st_writer *writer, const char *path);

#endif /* MOIRE_SAFETENSORS_H */
