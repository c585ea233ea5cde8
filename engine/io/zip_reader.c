/* zip_reader.c — the ZIP central-directory reader and a bounded DEFLATE decoder (see
 * zip_reader.h).
 *
 * Layout (APPNOTE 6.3.x): … local headers + data …, central directory, [ZIP64 end record,
 * ZIP64 locator], end-of-central-directory record (+ comment). We find the EOCD from the
 * end, follow the ZIP64 locator when there is one, then walk the central directory. Each
 * entry's local header is read only to find where its data starts; sizes come from the
 * central directory. All arithmetic on file-supplied numbers is done in uint64_t against
 * the mapping size, so nothing wraps.
 *
 * DEFLATE: libmoire links no zlib, and only a small pickle could ever need it (torch.save
 * stores everything), so this is a compact decoder in the style of zlib's puff.c with an
 * output bound: a zip bomb fails when it reaches the declared size, never allocating more.
 */
#include "zip_reader.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define ZIP_MAX_ENTRIES (1 << 20)

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_ZIP64_EOCD 0x06064b50u
#define SIG_ZIP64_LOCATOR 0x07064b50u

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32);
}

/* ------------------------------------------------------------------------------------------
 * CRC-32 (IEEE, reflected)
 * ---------------------------------------------------------------------------------------- */

uint32_t zip_crc32(const uint8_t *data, size_t size)
{
    uint32_t table[256];
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[n] = c;
    }
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < size; i++)
        crc = table[(crc ^ data[i]) & 0xffu] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

/* ------------------------------------------------------------------------------------------
 * DEFLATE
 * ---------------------------------------------------------------------------------------- */

#define MAXBITS 15
#define MAXLCODES 286
#define MAXDCODES 30
#define FIXLCODES 288

typedef struct inflate_state {
    const uint8_t *in;
    size_t in_size, in_pos;
    uint32_t bit_buffer;
    int bit_count;
    uint8_t *out;
    size_t out_size, out_pos;
    zip_inflate_result error; /* sticky */
} inflate_state;

typedef struct huffman {
    short count[MAXBITS + 1];
    short symbol[FIXLCODES];
} huffman;

static int get_bits(inflate_state *s, int need)
{
    uint32_t value = s->bit_buffer;
    while (s->bit_count < need) {
        if (s->in_pos >= s->in_size) {
            s->error = ZIP_INFLATE_CORRUPT;
            return 0;
        }
        value |= (uint32_t)s->in[s->in_pos++] << s->bit_count;
        s->bit_count += 8;
    }
    s->bit_buffer = value >> need;
    s->bit_count -= need;
    return (int)(value & ((1u << need) - 1));
}

static void inflate_stored(inflate_state *s)
{
    s->bit_buffer = 0;
    s->bit_count = 0;
    if (s->in_size - s->in_pos < 4) {
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    unsigned len = rd16(s->in + s->in_pos), nlen = rd16(s->in + s->in_pos + 2);
    s->in_pos += 4;
    if (len != (~nlen & 0xffffu) || s->in_size - s->in_pos < len) {
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    if (s->out_size - s->out_pos < len) {
        s->error = ZIP_INFLATE_TOO_LARGE;
        return;
    }
    memcpy(s->out + s->out_pos, s->in + s->in_pos, len);
    s->out_pos += len;
    s->in_pos += len;
}

static int huffman_decode(inflate_state *s, const huffman *h)
{
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= MAXBITS; len++) {
        code |= get_bits(s, 1);
        if (s->error)
            return -1;
        int count = h->count[len];
        if (code - count < first)
            return h->symbol[index + (code - first)];
        index += count;
        first += count;
        first <<= 1;
        code <<= 1;
    }
    s->error = ZIP_INFLATE_CORRUPT; /* ran out of codes */
    return -1;
}

/* Returns 0 for a complete code, > 0 incomplete, < 0 over-subscribed. */
static int huffman_build(huffman *h, const short *lengths, int n)
{
    for (int len = 0; len <= MAXBITS; len++)
        h->count[len] = 0;
    for (int symbol = 0; symbol < n; symbol++)
        h->count[lengths[symbol]]++;
    if (h->count[0] == n)
        return 0;
    int left = 1;
    for (int len = 1; len <= MAXBITS; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0)
            return left;
    }
    short offsets[MAXBITS + 1];
    offsets[1] = 0;
    for (int len = 1; len < MAXBITS; len++)
        offsets[len + 1] = (short)(offsets[len] + h->count[len]);
    for (int symbol = 0; symbol < n; symbol++)
        if (lengths[symbol] != 0)
            h->symbol[offsets[lengths[symbol]]++] = (short)symbol;
    return left;
}

static void inflate_codes(inflate_state *s, const huffman *lencode, const huffman *distcode)
{
    static const short length_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,
                                          15, 17, 19, 23, 27, 31, 35, 43, 51,  59,
                                          67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const short length_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                           2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const short dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,
                                        17,   25,   33,   49,   65,   97,    129,   193,
                                        257,  385,  513,  769,  1025, 1537,  2049,  3073,
                                        4097, 6145, 8193, 12289, 16385, 24577};
    static const short dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                         6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
        int symbol = huffman_decode(s, lencode);
        if (s->error || symbol < 0)
            return;
        if (symbol < 256) {
            if (s->out_pos >= s->out_size) {
                s->error = ZIP_INFLATE_TOO_LARGE;
                return;
            }
            s->out[s->out_pos++] = (uint8_t)symbol;
        } else if (symbol == 256) {
            return;
        } else {
            symbol -= 257;
            if (symbol >= 29) {
                s->error = ZIP_INFLATE_CORRUPT;
                return;
            }
            size_t len = (size_t)(length_base[symbol] + get_bits(s, length_extra[symbol]));
            int dsym = huffman_decode(s, distcode);
            if (s->error || dsym < 0 || dsym >= 30) {
                s->error = ZIP_INFLATE_CORRUPT;
                return;
            }
            size_t dist = (size_t)(dist_base[dsym] + get_bits(s, dist_extra[dsym]));
            if (s->error || dist > s->out_pos) {
                s->error = ZIP_INFLATE_CORRUPT;
                return;
            }
            if (s->out_size - s->out_pos < len) {
                s->error = ZIP_INFLATE_TOO_LARGE;
                return;
            }
            for (size_t i = 0; i < len; i++, s->out_pos++)
                s->out[s->out_pos] = s->out[s->out_pos - dist];
        }
    }
}

static void inflate_fixed(inflate_state *s)
{
    huffman lencode, distcode;
    short lengths[FIXLCODES];
    int symbol = 0;
    for (; symbol < 144; symbol++)
        lengths[symbol] = 8;
    for (; symbol < 256; symbol++)
        lengths[symbol] = 9;
    for (; symbol < 280; symbol++)
        lengths[symbol] = 7;
    for (; symbol < FIXLCODES; symbol++)
        lengths[symbol] = 8;
    huffman_build(&lencode, lengths, FIXLCODES);
    for (symbol = 0; symbol < MAXDCODES; symbol++)
        lengths[symbol] = 5;
    huffman_build(&distcode, lengths, MAXDCODES);
    inflate_codes(s, &lencode, &distcode);
}

static void inflate_dynamic(inflate_state *s)
{
    static const short order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5,
                                     11, 4, 12, 3, 13, 2, 14, 1, 15};
    short lengths[MAXLCODES + MAXDCODES];
    huffman lencode, distcode;
    int nlen = get_bits(s, 5) + 257;
    int ndist = get_bits(s, 5) + 1;
    int ncode = get_bits(s, 4) + 4;
    if (s->error || nlen > MAXLCODES || ndist > MAXDCODES) {
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    int index;
    for (index = 0; index < ncode; index++)
        lengths[order[index]] = (short)get_bits(s, 3);
    for (; index < 19; index++)
        lengths[order[index]] = 0;
    if (s->error || huffman_build(&lencode, lengths, 19) != 0) {
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    index = 0;
    while (index < nlen + ndist) {
        int symbol = huffman_decode(s, &lencode);
        if (s->error || symbol < 0) {
            s->error = ZIP_INFLATE_CORRUPT;
            return;
        }
        if (symbol < 16) {
            lengths[index++] = (short)symbol;
            continue;
        }
        short len = 0;
        int repeat;
        if (symbol == 16) {
            if (index == 0) {
                s->error = ZIP_INFLATE_CORRUPT;
                return;
            }
            len = lengths[index - 1];
            repeat = 3 + get_bits(s, 2);
        } else if (symbol == 17) {
            repeat = 3 + get_bits(s, 3);
        } else {
            repeat = 11 + get_bits(s, 7);
        }
        if (s->error || index + repeat > nlen + ndist) {
            s->error = ZIP_INFLATE_CORRUPT;
            return;
        }
        while (repeat--)
            lengths[index++] = len;
    }
    if (lengths[256] == 0) { /* no end-of-block code */
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    int err = huffman_build(&lencode, lengths, nlen);
    if (err < 0 || (err > 0 && nlen - lencode.count[0] != 1)) {
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    err = huffman_build(&distcode, lengths + nlen, ndist);
    if (err < 0 || (err > 0 && ndist - distcode.count[0] != 1)) {
        s->error = ZIP_INFLATE_CORRUPT;
        return;
    }
    inflate_codes(s, &lencode, &distcode);
}

zip_inflate_result zip_inflate(const uint8_t *src, size_t src_size, uint8_t *dst,
                               size_t dst_size, size_t *written)
{
    inflate_state s = {.in = src, .in_size = src_size, .out = dst, .out_size = dst_size};
    int last;
    do {
        last = get_bits(&s, 1);
        int type = get_bits(&s, 2);
        if (s.error)
            break;
        if (type == 0)
            inflate_stored(&s);
        else if (type == 1)
            inflate_fixed(&s);
        else if (type == 2)
            inflate_dynamic(&s);
        else
            s.error = ZIP_INFLATE_CORRUPT;
    } while (!last && !s.error);
    *written = s.out_pos;
    return s.error;
}

/* ------------------------------------------------------------------------------------------
 * Central directory
 * ---------------------------------------------------------------------------------------- */

static int compare_entry_names(const void *a, const void *b)
{
    return strcmp(((const zip_entry *)a)->name, ((const zip_entry *)b)->name);
}

static int compare_entry_offsets(const void *a, const void *b)
{
    uint64_t x = (*(const zip_entry *const *)a)->local_offset;
    uint64_t y = (*(const zip_entry *const *)b)->local_offset;
    return x < y ? -1 : x > y;
}

void zip_close(zip_archive *archive)
{
    if (!archive)
        return;
    for (int i = 0; i < archive->entry_count; i++)
        free(archive->entries[i].name);
    free(archive->entries);
    free(archive);
}

const zip_entry *zip_find(const zip_archive *archive, const char *name)
{
    if (archive->entry_count == 0)
        return NULL;
    zip_entry key = {.name = (char *)name};
    return bsearch(&key, archive->entries, (size_t)archive->entry_count, sizeof(zip_entry),
                   compare_entry_names);
}

#define TRUNCATED_HINT "the file is truncated or corrupt: download it again"

/* Reads the ZIP64 extended-information extra field (id 1): the fields whose 32-bit value
 * is all ones follow, in this order. */
static moire_status read_zip64_extra(const zip_archive *archive, const uint8_t *extra,
                                     size_t extra_size, zip_entry *entry, bool need_size,
                                     bool need_compressed, bool need_offset, bool need_disk,
                                     uint32_t *disk)
{
    size_t pos = 0;
    while (extra_size - pos >= 4) {
        uint16_t id = rd16(extra + pos), size = rd16(extra + pos + 2);
        pos += 4;
        if (size > extra_size - pos)
            break;
        if (id == 1) {
            const uint8_t *field = extra + pos;
            size_t left = size;
            if (need_size) {
                if (left < 8)
                    goto short_field;
                entry->size = rd64(field);
                field += 8, left -= 8;
            }
            if (need_compressed) {
                if (left < 8)
                    goto short_field;
                entry->compressed_size = rd64(field);
                field += 8, left -= 8;
            }
            if (need_offset) {
                if (left < 8)
                    goto short_field;
                entry->local_offset = rd64(field);
                field += 8, left -= 8;
            }
            if (need_disk) {
                if (left < 4)
                    goto short_field;
                *disk = rd32(field);
            }
            return MOIRE_OK;
        }
        pos += size;
    }
    if (!need_size && !need_compressed && !need_offset && !need_disk)
        return MOIRE_OK;
short_field:
    return error_fail(MOIRE_ERROR_FORMAT,
                      "%s: zip entry '%s' needs a ZIP64 extra field that is missing or too "
                      "short; " TRUNCATED_HINT, archive->path, entry->name);
}

static moire_status read_central_entry(zip_archive *archive, const uint8_t *record,
                                       size_t record_room, size_t *record_size,
                                       uint64_t cd_offset, zip_entry *entry)
{
    const char *path = archive->path;
    if (record_room < 46 || rd32(record) != SIG_CENTRAL)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the zip central directory is damaged "
                          "(entry %d has no valid header); " TRUNCATED_HINT, path,
                          archive->entry_count);
    uint16_t flags = rd16(record + 8), method = rd16(record + 10);
    size_t name_size = rd16(record + 28), extra_size = rd16(record + 30);
    size_t comment_size = rd16(record + 32);
    if (46 + name_size + extra_size + comment_size > record_room)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip central directory entry %d runs past "
                          "the directory; " TRUNCATED_HINT, path, archive->entry_count);
    *record_size = 46 + name_size + extra_size + comment_size;
    const char *name = (const char *)record + 46;
    if (memchr(name, '\0', name_size))
        return error_fail(MOIRE_ERROR_FORMAT, "%s: a zip entry name contains a NUL byte; the "
                          "file is corrupt or hostile", path);
    entry->name = malloc(name_size + 1);
    if (!entry->name)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    memcpy(entry->name, name, name_size);
    entry->name[name_size] = '\0';
    archive->entry_count++; /* owns the name from here on */

    if (flags & 0x41u)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: zip entry '%s' is encrypted; a "
                          "PyTorch checkpoint never is: use an unencrypted file", path,
                          entry->name);
    if (method != 0 && method != 8)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: zip entry '%s' uses compression "
                          "method %u; only stored (0) and deflate (8) are supported, and "
                          "torch.save writes stored entries", path, entry->name, method);
    entry->method = method;
    entry->crc32 = rd32(record + 16);
    entry->compressed_size = rd32(record + 20);
    entry->size = rd32(record + 24);
    entry->local_offset = rd32(record + 42);
    uint32_t disk = rd16(record + 34);
    moire_status status = read_zip64_extra(
        archive, record + 46 + name_size, extra_size, entry, entry->size == 0xffffffffu,
        entry->compressed_size == 0xffffffffu, entry->local_offset == 0xffffffffu,
        disk == 0xffffu, &disk);
    if (status != MOIRE_OK)
        return status;
    if (disk != 0)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: zip entry '%s' is on disk %u of a "
                          "multi-disk archive, which is not supported; join the parts first",
                          path, entry->name, (unsigned)disk);
    if (method == 0 && entry->compressed_size != entry->size)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: stored zip entry '%s' has compressed size "
                          "%llu but size %llu; " TRUNCATED_HINT, path, entry->name,
                          (unsigned long long)entry->compressed_size,
                          (unsigned long long)entry->size);

    /* the local header: only its name and extra lengths matter (they place the data) */
    if (entry->local_offset > cd_offset || cd_offset - entry->local_offset < 30)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' has its local header at "
                          "offset %llu, outside the entry area (before the central directory "
                          "at %llu); the file is corrupt or hostile", path, entry->name,
                          (unsigned long long)entry->local_offset,
                          (unsigned long long)cd_offset);
    const uint8_t *local = archive->map + entry->local_offset;
    if (rd32(local) != SIG_LOCAL)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s': no local file header at "
                          "offset %llu; " TRUNCATED_HINT, path, entry->name,
                          (unsigned long long)entry->local_offset);
    if (rd16(local + 6) & 0x41u)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: zip entry '%s' is encrypted; a "
                          "PyTorch checkpoint never is: use an unencrypted file", path,
                          entry->name);
    uint64_t local_name = rd16(local + 26), local_extra = rd16(local + 28);
    uint64_t data_start = entry->local_offset + 30 + local_name + local_extra;
    if (local_name != name_size || data_start > cd_offset ||
        memcmp(local + 30, entry->name, name_size) != 0)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s': the local header does not "
                          "match the central directory; the file is corrupt or hostile", path,
                          entry->name);
    if (entry->compressed_size > cd_offset - data_start)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' (%llu bytes at offset %llu) "
                          "runs past the end of the entry area (%llu); " TRUNCATED_HINT, path,
                          entry->name, (unsigned long long)entry->compressed_size,
                          (unsigned long long)data_start, (unsigned long long)cd_offset);
    entry->data = archive->map + data_start;
    return MOIRE_OK;
}

/* Entries may not share bytes: a zip whose entries overlap (one record inside another's
 * data) is a known way to smuggle content or build a quadratic zip bomb. */
static moire_status check_entry_overlap(const zip_archive *archive)
{
    int count = archive->entry_count;
    const zip_entry **by_offset = malloc_array((size_t)count, sizeof *by_offset);
    if (!by_offset)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", archive->path);
    for (int i = 0; i < count; i++)
        by_offset[i] = &archive->entries[i];
    qsort(by_offset, (size_t)count, sizeof *by_offset, compare_entry_offsets);
    moire_status status = MOIRE_OK;
    for (int i = 1; i < count; i++) {
        const zip_entry *previous = by_offset[i - 1], *current = by_offset[i];
        uint64_t previous_end = (uint64_t)(previous->data - archive->map) +
                                previous->compressed_size;
        if (previous_end > current->local_offset) {
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: zip entries '%s' and '%s' overlap "
                                "(offsets %llu and %llu); the file is corrupt or hostile",
                                archive->path, previous->name, current->name,
                                (unsigned long long)previous->local_offset,
                                (unsigned long long)current->local_offset);
            break;
        }
    }
    free(by_offset);
    return status;
}

moire_status zip_open(const char *path, const uint8_t *map, size_t map_size,
                      zip_archive **out)
{
    *out = NULL;
    if (map_size < 22)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: %zu bytes is too short for a zip archive "
                          "(PyTorch checkpoint); " TRUNCATED_HINT, path, map_size);
    /* the EOCD record: 22 bytes + a comment of at most 65535, so search that window */
    size_t lowest = map_size > 22 + 65535 ? map_size - 22 - 65535 : 0;
    size_t eocd = SIZE_MAX;
    for (size_t p = map_size - 22 + 1; p-- > lowest;) {
        if (rd32(map + p) == SIG_EOCD && p + 22 + rd16(map + p + 20) <= map_size) {
            eocd = p;
            break;
        }
    }
    if (eocd == SIZE_MAX)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: no zip end-of-central-directory record; "
                          "the file is truncated (an interrupted download?) or not a PyTorch "
                          "checkpoint: download it again", path);
    const uint8_t *record = map + eocd;
    uint64_t disk = rd16(record + 4), cd_disk = rd16(record + 6);
    uint64_t disk_entries = rd16(record + 8), entries = rd16(record + 10);
    uint64_t cd_size = rd32(record + 12), cd_offset = rd32(record + 16);
    uint64_t area_end = eocd; /* the central directory must end before this */
    if (eocd >= 20 && rd32(map + eocd - 20) == SIG_ZIP64_LOCATOR) {
        const uint8_t *locator = map + eocd - 20;
        uint64_t z64 = rd64(locator + 8);
        if (rd32(locator + 4) != 0 || rd32(locator + 16) > 1)
            return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: multi-disk (split) zip archives "
                              "are not supported; join the parts first", path);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56 || rd32(map + z64) != SIG_ZIP64_EOCD)
            return error_fail(MOIRE_ERROR_FORMAT, "%s: the ZIP64 end record is missing or out "
                              "of range; " TRUNCATED_HINT, path);
        const uint8_t *z = map + z64;
        disk = rd32(z + 16);
        cd_disk = rd32(z + 20);
        disk_entries = rd64(z + 24);
        entries = rd64(z + 32);
        cd_size = rd64(z + 40);
        cd_offset = rd64(z + 48);
        area_end = z64;
    }
    if (disk != 0 || cd_disk != 0 || disk_entries != entries)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: multi-disk (split) zip archives are "
                          "not supported; join the parts first", path);
    if (cd_offset > area_end || cd_size > area_end - cd_offset)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the zip central directory (%llu bytes at "
                          "offset %llu) lies outside the file (%zu bytes); " TRUNCATED_HINT,
                          path, (unsigned long long)cd_size, (unsigned long long)cd_offset,
                          map_size);
    if (entries == 0)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the zip archive is empty; it is not a "
                          "PyTorch checkpoint", path);
    if (entries > ZIP_MAX_ENTRIES || entries > cd_size / 46)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the zip archive claims %llu entries, more "
                          "than its central directory (%llu bytes) can hold; the file is "
                          "corrupt or hostile", path, (unsigned long long)entries,
                          (unsigned long long)cd_size);

    zip_archive *archive = calloc(1, sizeof *archive);
    if (!archive)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    archive->path = path;
    archive->map = map;
    archive->map_size = map_size;
    archive->entries = calloc_array((size_t)entries, sizeof(zip_entry));
    moire_status status = MOIRE_OK;
    if (!archive->entries)
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory for %llu zip "
                            "entries", path, (unsigned long long)entries);
    size_t pos = (size_t)cd_offset, end = (size_t)(cd_offset + cd_size);
    for (uint64_t i = 0; i < entries && status == MOIRE_OK; i++) {
        size_t record_size = 0;
        status = read_central_entry(archive, map + pos, end - pos, &record_size, cd_offset,
                                    &archive->entries[archive->entry_count]);
        pos += record_size;
    }
    if (status == MOIRE_OK) {
        qsort(archive->entries, (size_t)archive->entry_count, sizeof(zip_entry),
              compare_entry_names);
        for (int i = 1; i < archive->entry_count && status == MOIRE_OK; i++)
            if (strcmp(archive->entries[i - 1].name, archive->entries[i].name) == 0)
                status = error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' appears twice; "
                                    "the file is corrupt or hostile", path,
                                    archive->entries[i].name);
    }
    if (status == MOIRE_OK)
        status = check_entry_overlap(archive);
    if (status != MOIRE_OK) {
        zip_close(archive);
        return status;
    }
    *out = archive;
    return MOIRE_OK;
}

moire_status zip_entry_read(const zip_archive *archive, const zip_entry *entry,
                            size_t max_size, const uint8_t **data, size_t *size,
                            uint8_t **owned)
{
    *data = NULL;
    *size = 0;
    *owned = NULL;
    if (entry->size > max_size)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' is %llu bytes uncompressed, "
                          "over the %zu-byte limit for it; the file is corrupt or a zip bomb",
                          archive->path, entry->name, (unsigned long long)entry->size,
                          max_size);
    /* DEFLATE's best ratio is 1032:1 (a 258-byte match in under 2 bits): an entry declaring
       more than that is refused before its buffer is allocated, so a kilobyte cannot cost
       the 64 MB of the largest allowed pickle */
    if (entry->method == 8 && entry->size / 1032 > entry->compressed_size + 64)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' declares %llu bytes from "
                          "%llu compressed, more than DEFLATE can produce; the file is corrupt "
                          "or a zip bomb", archive->path, entry->name,
                          (unsigned long long)entry->size,
                          (unsigned long long)entry->compressed_size);
    const uint8_t *bytes = entry->data;
    uint8_t *buffer = NULL;
    if (entry->method == 8) {
        buffer = malloc(entry->size ? (size_t)entry->size : 1);
        if (!buffer)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory inflating '%s'",
                              archive->path, entry->name);
        size_t written = 0;
        zip_inflate_result result = zip_inflate(entry->data, (size_t)entry->compressed_size,
                                                buffer, (size_t)entry->size, &written);
        if (result == ZIP_INFLATE_TOO_LARGE) {
            free(buffer);
            return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' inflates to more than "
                              "its declared %llu bytes; refusing it (a zip bomb?)",
                              archive->path, entry->name, (unsigned long long)entry->size);
        }
        if (result != ZIP_INFLATE_OK || written != entry->size) {
            free(buffer);
            return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' is not a valid deflate "
                              "stream of %llu bytes; " TRUNCATED_HINT, archive->path,
                              entry->name, (unsigned long long)entry->size);
        }
        bytes = buffer;
    }
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* let the fuzzer reach the pickle */
    if (zip_crc32(bytes, (size_t)entry->size) != entry->crc32) {
        free(buffer);
        return error_fail(MOIRE_ERROR_FORMAT, "%s: zip entry '%s' fails its CRC-32 check; "
                          TRUNCATED_HINT, archive->path, entry->name);
    }
#endif
    *data = bytes;
    *size = (size_t)entry->size;
    *owned = buffer;
    return MOIRE_OK;
}
