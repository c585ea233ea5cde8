/* pickle_state_dict.c — the state dict read from an unpickled checkpoint (pickle.h): the
 * root dict (or the wrapper it sits in: "ema", "model", "state_dict", "module"), its tensors
 * checked (dtype, contiguity, extent within their storage) and listed as pk_state_dict
 * entries; the object budget; the two entry points that run the machine (pickle.c) and
 * extract. */
#include "pickle_machine.h"

#include "internal.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const pk_obj *dict_lookup(const pk_obj *dict, const char *key)
{
    for (size_t i = dict->u.dict.count; i-- > 0;) /* the last assignment wins */
        if (pk_string_is(dict->u.dict.keys[i], key))
            return dict->u.dict.values[i];
    return NULL;
}

void pk_state_dict_clear(pk_state_dict *state_dict)
{
    for (int i = 0; i < state_dict->tensor_count; i++)
        free(state_dict->tensors[i].name);
    free(state_dict->tensors);
    memset(state_dict, 0, sizeof *state_dict);
}

static bool dtype_of(pk_storage_type type, st_dtype *out)
{
    switch (type) {
    case PK_STORAGE_FLOAT: *out = ST_F32; return true;
    case PK_STORAGE_HALF: *out = ST_F16; return true;
    case PK_STORAGE_BFLOAT16: *out = ST_BF16; return true;
    case PK_STORAGE_LONG: *out = ST_I64; return true;
    case PK_STORAGE_INT: *out = ST_I32; return true;
    case PK_STORAGE_BYTE:
    case PK_STORAGE_BOOL: *out = ST_U8; return true;
    default: return false;
    }
}

static moire_status extract(const machine *m, const pk_obj *root, pk_state_dict *out)
{
    static const char *const wrappers[] = {"ema", "model", "state_dict", "module"};
    if (root->kind != K_DICT)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the checkpoint holds a %s, not a dict of "
                          "tensors (a state_dict); save model.state_dict() instead", m->path,
                          pk_kind_name(root->kind));
    for (int level = 0; level < 4; level++) {
        const pk_obj *inner = NULL;
        for (size_t w = 0; w < sizeof wrappers / sizeof wrappers[0] && !inner; w++) {
            inner = dict_lookup(root, wrappers[w]);
            if (inner && inner->kind != K_DICT)
                inner = NULL;
            else if (inner && !out->wrapper[0])
                snprintf(out->wrapper, sizeof out->wrapper, "%s", wrappers[w]);
        }
        if (!inner)
            break;
        root = inner;
    }
    size_t count = root->u.dict.count;
    out->tensors = calloc_array(count ? count : 1, sizeof(st_tensor));
    if (!out->tensors)
        return pk_out_of_memory(m);
    for (size_t i = 0; i < count; i++) {
        const pk_obj *key = root->u.dict.keys[i], *value = root->u.dict.values[i];
        if (key->kind != K_STRING || value->kind != K_TENSOR) {
            out->skipped_entries++;
            continue;
        }
        const char *name = key->u.string.bytes;
        size_t length = key->u.string.length;
        for (bool again = true; again;) {
            again = false;
            static const char *const prefixes[] = {"module.", "_orig_mod."};
            for (int p = 0; p < 2; p++) {
                size_t n = strlen(prefixes[p]);
                if (length > n && memcmp(name, prefixes[p], n) == 0) {
                    name += n;
                    length -= n;
                    out->stripped_prefix = again = true;
                }
            }
        }
        char shown[96];
        pk_printable(shown, sizeof shown, name, length);
        if (length == 0 || memchr(name, '\0', length) || !g_utf8_validate(name, (gssize)length, NULL))
            return error_fail(MOIRE_ERROR_FORMAT, "%s: state_dict key '%s' is empty or not "
                              "valid UTF-8; the file is corrupt", m->path, shown);
        const pk_obj *storage = value->u.tensor.storage;
        st_tensor *tensor = &out->tensors[out->tensor_count];
        if (!dtype_of(storage->u.storage.type, &tensor->dtype))
            return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: tensor '%s' is stored as %s, which "
                              "Moiré does not load (F32, F16, BF16 and integer tensors are "
                              "supported); convert the checkpoint to float32 or float16",
                              m->path, shown, pk_storage_type_name(storage->u.storage.type));
        if (!value->u.tensor.contiguous)
            return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: tensor '%s' is not contiguous (a "
                              "strided view of its storage); save the state_dict with "
                              "tensors made .contiguous()", m->path, shown);
        tensor->name = malloc(length + 1);
        if (!tensor->name)
            return pk_out_of_memory(m);
        memcpy(tensor->name, name, length);
        tensor->name[length] = '\0';
        out->tensor_count++;
        size_t element_size = pk_storage_element_size(storage->u.storage.type);
        tensor->ndim = value->u.tensor.ndim;
        memcpy(tensor->shape, value->u.tensor.shape, sizeof tensor->shape);
        tensor->numel = value->u.tensor.numel;
        tensor->nbytes = (size_t)tensor->numel * element_size;
        tensor->data = storage->u.storage.data
                           ? storage->u.storage.data + (size_t)value->u.tensor.offset * element_size
                           : NULL;
        if (tensor->numel == 0)
            tensor->data = storage->u.storage.data;
    }
    if (out->tensor_count == 0)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the checkpoint holds no tensors (%d other "
                          "entries); it is not a model state_dict", m->path,
                          out->skipped_entries);
    return MOIRE_OK;
}

size_t pk_object_budget(size_t file_size)
{
    size_t budget = PK_MIN_OBJECTS + file_size / 8;
    return budget < PK_MAX_OBJECTS ? budget : PK_MAX_OBJECTS;
}

moire_status pk_load_state_dict(const char *path, const uint8_t *bytes, size_t size,
                                pk_storage_fn storage_fn, void *user_data, pk_state_dict *out)
{
    return pk_load_state_dict_from_file(path, bytes, size, size, storage_fn, user_data, out);
}

moire_status pk_load_state_dict_from_file(const char *path, const uint8_t *bytes, size_t size,
                                          size_t file_size, pk_storage_fn storage_fn,
                                          void *user_data, pk_state_dict *out)
{
    memset(out, 0, sizeof *out);
    machine m = {.path = path, .in = bytes, .size = size, .storage_fn = storage_fn,
                 .user_data = user_data, .max_objects = pk_object_budget(file_size)};
    pk_obj *root = NULL;
    moire_status status = pk_machine_run(&m, &root);
    if (status == MOIRE_OK)
        status = extract(&m, root, out);
    if (status != MOIRE_OK)
        pk_state_dict_clear(out);
    pk_machine_free(&m);
    return status;
}
