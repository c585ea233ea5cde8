/* pickle.h — a restricted pickle interpreter that reads a PyTorch state dict as data.
 *
 * It runs the opcodes torch.save emits (protocol 2, plus the protocol 4/5 framing and
 * memo opcodes) on a private object model — None, bool, int, float, str/bytes, tuple,
 * list, dict, tensor, storage, an inert "object" — and never executes code: GLOBAL /
 * STACK_GLOBAL resolve only names on an allow-list (collections.OrderedDict, the
 * torch._utils._rebuild_* functions, the typed storage classes, argparse.Namespace) to
 * built-in handlers, and anything else (os.system, builtins.eval, …) stops the load with
 * a message naming it. Tensors come from persistent ids ('storage', type, key, location,
 * numel), resolved through a callback to bytes the caller owns (the zip mapping); each is
 * checked against its storage's length and must be contiguous.
 *
 * The result is the list of tensors of the state dict after unwrapping {"ema": sd},
 * {"model": sd}, {"state_dict": sd}, {"module": sd} (in that order of preference) and the
 * "module." / "_orig_mod." key prefixes; non-tensor entries are skipped. Limits: stack,
 * memo, marks and object count are capped (PK_MAX_*), strings are bounded by the input.
 */
#ifndef MOIRE_PICKLE_H
#define MOIRE_PICKLE_H

#include "moire.h"
#include "safetensors.h"

#define PK_MAX_STACK (1 << 20)
#define PK_MAX_MEMO (1 << 22)
#define PK_MAX_MARKS (1 << 16)
#define PK_MAX_OBJECTS (1 << 24)
/* Objects are also bounded by the size of the file the pickle came from (a DEFLATE-packed
 * data.pkl inflates up to 1032×, so a 32 KB .pt could create 2^24 objects, 2.4 GB): at most
 * PK_MIN_OBJECTS + file size / 8, i.e. about 150 bytes of memory per 8 bytes of file. A real
 * state_dict spends more than 16 bytes of the file per object (storages, zip headers). */
#define PK_MIN_OBJECTS (1 << 16)

/* Storage element types (the torch.*Storage classes on the allow-list). */
typedef enum pk_storage_type {
    PK_STORAGE_FLOAT = 0,
    PK_STORAGE_HALF,
    PK_STORAGE_BFLOAT16,
    PK_STORAGE_DOUBLE,
    PK_STORAGE_LONG,
    PK_STORAGE_INT,
    PK_STORAGE_SHORT,
    PK_STORAGE_CHAR,
    PK_STORAGE_BYTE,
    PK_STORAGE_BOOL,
    PK_STORAGE_TYPE_COUNT_
} pk_storage_type;

size_t      pk_storage_element_size(pk_storage_type type);
const char *pk_storage_type_name(pk_storage_type type); /* "FloatStorage", … */

/* Maps a storage key ("0", "17", …) to its bytes; fails with a message (error_fail) when
 * there is no such storage. */
typedef moire_status (*pk_storage_fn)(void *user_data, const char *key, const uint8_t **data,
                                      size_t *size);

typedef struct pk_state_dict {
    st_tensor *tensors;       /* names malloc'd; data points into the caller's storages  */
    int tensor_count;
    int skipped_entries;      /* non-tensor entries of the state dict (ignored)          */
    char wrapper[32];         /* "" or the key that was unwrapped: "ema", "model", …     */
    bool stripped_prefix;     /* "module." (or "_orig_mod.") was removed from the keys  */
} pk_state_dict;

/* Runs the pickle `bytes` and extracts the state dict. `path` names the file in messages. */
moire_status pk_load_state_dict(const char *path, const uint8_t *bytes, size_t size,
                                 pk_storage_fn storage_fn, void *user_data,
                                 pk_state_dict *out);
/* The same, with the object count bounded by the size of the file the pickle came from
 * (pk_object_budget); pk_load_state_dict uses `size` for it. */
moire_status pk_load_state_dict_from_file(const char *path, const uint8_t *bytes, size_t size,
                                          size_t file_size, pk_storage_fn storage_fn,
                                          void *user_data, pk_state_dict *out);
size_t       pk_object_budget(size_t file_size);
/* Frees the tensors array and names (not the tensor data). */
void         pk_state_dict_clear(pk_state_dict *state_dict);

#endif /* MOIRE_PICKLE_H */
