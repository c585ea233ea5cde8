/* zip_reader.h — a read-only ZIP reader over a memory mapping, for PyTorch checkpoints.
 *
 * torch.save (PyTorch ≥ 1.6) writes a ZIP archive: `<name>/data.pkl`, `<name>/data/<key>`
 * storages, `<name>/version`, possibly `<name>/byteorder`, every entry STORED (not
 * compressed) and ZIP64 when the file is over 4 GB. This reader parses the central
 * directory and hands out pointers into the mapping, so a 33 GB checkpoint is never read
 * whole. It trusts nothing: every offset and size is checked against the mapping, entries
 * may not overlap each other or the central directory, and encrypted, multi-disk and
 * (apart from DEFLATE for small entries, see zip_entry_read) compressed entries are refused.
 */
#ifndef MOIRE_ZIP_READER_H
#define MOIRE_ZIP_READER_H

#include "moire.h"

typedef struct zip_entry {
    char *name;              /* NUL-free, as stored                                 */
    uint16_t method;         /* 0 STORED, 8 DEFLATE (others are refused at open)    */
    uint32_t crc32;
    uint64_t compressed_size;
    uint64_t size;           /* uncompressed                                        */
    uint64_t local_offset;   /* of the local file header                            */
    const uint8_t *data;     /* the (compressed) bytes, inside the mapping          */
} zip_entry;

typedef struct zip_archive {
    const char *path;        /* for messages; not owned                             */
    const uint8_t *map;      /* not owned                                           */
    size_t map_size;
    zip_entry *entries;      /* sorted by name                                      */
    int entry_count;
} zip_archive;

/* Parses the archive in `map` (not copied; it must outlive the archive). Failures name
 * `path` and the problem. */
moire_status zip_open(const char *path, const uint8_t *map, size_t map_size,
                      zip_archive **out);
void         zip_close(zip_archive *archive);

/* The entry called `name`, or NULL. */
const zip_entry *zip_find(const zip_archive *archive, const char *name);

/* The uncompressed bytes of a small entry (a pickle, a version string): STORED entries
 * point into the mapping (*owned = NULL); DEFLATE entries are inflated into a malloc'd
 * buffer returned in *owned (free it), refused when the declared size is over `max_size`
 * or the stream inflates to more or fewer bytes than declared (a zip bomb). The CRC-32 is
 * checked in both cases. */
moire_status zip_entry_read(const zip_archive *archive, const zip_entry *entry,
                            size_t max_size, const uint8_t **data, size_t *size,
                            uint8_t **owned);

typedef enum zip_inflate_result {
    ZIP_INFLATE_OK = 0,
    ZIP_INFLATE_CORRUPT,     /* not a valid DEFLATE stream, or truncated              */
    ZIP_INFLATE_TOO_LARGE,   /* the output would exceed dst_size                      */
} zip_inflate_result;

/* Raw DEFLATE (RFC 1951) into dst[0..dst_size), never writing past it (after zlib's
 * puff.c: canonical Huffman decoding, every length and distance checked). *written
 * receives the output length. */
zip_inflate_result zip_inflate(const uint8_t *src, size_t src_size, uint8_t *dst,
                               size_t dst_size, size_t *written);

uint32_t zip_crc32(const uint8_t *data, size_t size);

#endif /* MOIRE_ZIP_READER_H */
