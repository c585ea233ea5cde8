/* pt_reader.c — torch.save checkpoints through zip_reader + pickle into an st_file, the
 * model-file dispatch on content, and `moire convert` (see pt_reader.h).
 */
#include "pt_reader.h"

#include "file_guard.h"

#include "internal.h"
#include "pickle.h"
#include "zip_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------
 * Reading
 * ---------------------------------------------------------------------------------------- */

typedef struct storage_lookup {
    const zip_archive *archive;
    const char *prefix;      /* "archive/" (with the slash) or ""       */
    char *name;              /* scratch buffer for "<prefix>data/<key>" */
    size_t name_size;
} storage_lookup;

static moire_status find_storage(void *user_data, const char *key, const uint8_t **data,
                                 size_t *size)
{
    storage_lookup *lookup = user_data;
    snprintf(lookup->name, lookup->name_size, "%sdata/%s", lookup->prefix, key);
    const zip_entry *entry = zip_find(lookup->archive, lookup->name);
    if (!entry)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle refers to storage '%s' but the "
                          "archive has no entry '%s'; the file is truncated or corrupt: "
                          "download it again", lookup->archive->path, key, lookup->name);
    if (entry->method != 0)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: storage '%s' is compressed in the "
                          "zip; torch.save stores storages uncompressed, and Moiré maps them "
                          "directly: re-save the checkpoint with torch.save (do not re-zip it)",
                          lookup->archive->path, lookup->name);
    *data = entry->data;
    *size = (size_t)entry->size;
    return MOIRE_OK;
}

/* The one "<prefix>/data.pkl" (prefix without '/') or a bare "data.pkl". */
static moire_status find_pickle(const zip_archive *archive, const zip_entry **out,
                                char *prefix, size_t prefix_size)
{
    *out = NULL;
    for (int i = 0; i < archive->entry_count; i++) {
        const char *name = archive->entries[i].name;
        size_t length = strlen(name);
        if (length < 8 || strcmp(name + length - 8, "data.pkl") != 0)
            continue;
        size_t prefix_length = length - 8;
        if (prefix_length > 0 && (name[prefix_length - 1] != '/' ||
                                  memchr(name, '/', prefix_length - 1)))
            continue;
        if (*out)
            return error_fail(MOIRE_ERROR_FORMAT, "%s: the archive holds two pickles ('%s' "
                              "and '%s'); it is not one PyTorch checkpoint", archive->path,
                              (*out)->name, name);
        if (prefix_length + 1 > prefix_size)
            return error_fail(MOIRE_ERROR_FORMAT, "%s: the archive folder name is too long",
                              archive->path);
        memcpy(prefix, name, prefix_length);
        prefix[prefix_length] = '\0';
        *out = &archive->entries[i];
    }
    if (!*out)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: a zip archive without a data.pkl; it is not "
                          "a PyTorch checkpoint (torch.save writes <name>/data.pkl)",
                          archive->path);
    return MOIRE_OK;
}

/* Parses the archive in `map`. *map_taken tells whether the mapping was handed to
 * st_file_from_index (which owns it from then on, also on failure). */
static moire_status open_mapped(const char *path, const uint8_t *map, size_t map_size,
                                st_file **out, pt_info *info, bool *map_taken)
{
    *map_taken = false;
    zip_archive *archive = NULL;
    moire_status status = zip_open(path, map, map_size, &archive);
    if (status != MOIRE_OK)
        return status;
    const zip_entry *pickle_entry = NULL;
    char prefix[512];
    status = find_pickle(archive, &pickle_entry, prefix, sizeof prefix);
    storage_lookup lookup = {.archive = archive, .prefix = prefix};
    lookup.name_size = strlen(prefix) + 64;
    lookup.name = malloc(lookup.name_size);
    if (status == MOIRE_OK && !lookup.name)
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);

    /* byteorder (PyTorch ≥ 2.1): storages are little-endian unless it says otherwise */
    if (status == MOIRE_OK) {
        snprintf(lookup.name, lookup.name_size, "%sbyteorder", prefix);
        const zip_entry *entry = zip_find(archive, lookup.name);
        const uint8_t *text;
        size_t length;
        uint8_t *owned = NULL;
        if (entry && (status = zip_entry_read(archive, entry, 64, &text, &length, &owned)) ==
                         MOIRE_OK) {
            if (!(length == 6 && memcmp(text, "little", 6) == 0))
                status = error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: the checkpoint was saved on "
                                    "a big-endian machine (byteorder '%.*s'); re-save it on a "
                                    "little-endian one", path, (int)(length < 16 ? length : 16),
                                    (const char *)text);
            free(owned);
        }
    }

    const uint8_t *pickle = NULL;
    size_t pickle_size = 0;
    uint8_t *pickle_owned = NULL;
    if (status == MOIRE_OK)
        status = zip_entry_read(archive, pickle_entry, PT_PICKLE_MAX_BYTES, &pickle,
                                &pickle_size, &pickle_owned);
    pk_state_dict state_dict = {0};
    if (status == MOIRE_OK)
        status = pk_load_state_dict_from_file(path, pickle, pickle_size, map_size,
                                              find_storage, &lookup, &state_dict);
    free(pickle_owned);
    free(lookup.name);
    zip_close(archive);
    if (status != MOIRE_OK)
        return status;
    if (info) {
        memset(info, 0, sizeof *info);
        memcpy(info->wrapper, state_dict.wrapper, sizeof info->wrapper);
        info->stripped_prefix = state_dict.stripped_prefix;
        info->skipped_entries = state_dict.skipped_entries;
    }
    /* st_file_from_index takes the tensors (and the mapping), also on failure */
    *map_taken = true;
    return st_file_from_index(path, map, map_size, state_dict.tensors, state_dict.tensor_count,
                              out);
}

static int read_magic(const char *path, uint8_t magic[4])
{
    int fd;
    if (file_open_input(path, "a model file", &fd, NULL) != MOIRE_OK)
        return -1; /* not a regular file: the opener that follows says so */
    ssize_t got = read(fd, magic, 4);
    close(fd);
    return got < 0 ? -1 : (int)got;
}

bool pt_file_is_zip(const char *path)
{
    uint8_t magic[4];
    return read_magic(path, magic) == 4 && memcmp(magic, "PK\x03\x04", 4) == 0;
}

moire_status pt_open(const char *path, st_file **out, pt_info *info)
{
    *out = NULL;
    if (!path)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "pt_open: path is NULL");
    int fd;
    uint64_t size_on_disk = 0;
    moire_status open_status = file_open_input(path, "a .pt checkpoint", &fd, &size_on_disk);
    if (open_status != MOIRE_OK)
        return open_status;
    size_t size = (size_t)size_on_disk;
    if (size < 22) {
        close(fd);
        return error_fail(MOIRE_ERROR_FORMAT, "%s: %zu bytes is too short for a PyTorch "
                          "checkpoint; the file is truncated: download it again", path, size);
    }
    /* as st_open: no MAP_POPULATE (a 33 GB file), read-ahead advice instead */
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return error_fail(MOIRE_ERROR_IO, "%s: cannot map the file (%zu bytes): %s", path, size,
                          strerror(map_errno));
    madvise(map, size, MADV_SEQUENTIAL);
    madvise(map, size, MADV_WILLNEED);
    bool map_taken = false;
    moire_status status = open_mapped(path, map, size, out, info, &map_taken);
    if (!map_taken)
        munmap(map, size);
    return status;
}

moire_status model_file_open(const char *path, st_file **out)
{
    *out = NULL;
    uint8_t magic[4] = {0};
    int got = path ? read_magic(path, magic) : -1;
    if (got == 4 && memcmp(magic, "PK\x03\x04", 4) == 0)
        return pt_open(path, out, NULL);
    /* torch.save before 1.6 (or _use_new_zipfile_serialization=False): a bare pickle
       stream starting with PROTO 2 and LONG1 (the magic number) */
    if (got >= 3 && magic[0] == 0x80 && magic[1] <= 5 && magic[2] == 0x8a)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s: a PyTorch checkpoint in the old (pre-1.6) serialization format, "
                          "which Moiré does not read; re-save it in a trusted Python with "
                          "torch.save(torch.load(path), path2) (PyTorch ≥ 1.6 writes the zip "
                          "format) or convert it to safetensors", path);
    return st_open(path, out);
}
