/* pickle_machine.h — the restricted pickle interpreter's objects and machine, shared by
 * pickle.c (the interpreter) and pickle_state_dict.c (the state dict read from its result).
 * Internal to io/. */
#ifndef MOIRE_PICKLE_MACHINE_H
#define MOIRE_PICKLE_MACHINE_H

#include "pickle.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


typedef enum pk_kind {
    K_NONE,
    K_BOOL,
    K_INT,
    K_FLOAT,
    K_STRING,  /* str or bytes; points into the pickle                               */
    K_TUPLE,
    K_LIST,
    K_DICT,
    K_GLOBAL,
    K_STORAGE,
    K_TENSOR,
    K_OBJECT,  /* an inert instance (argparse.Namespace); its state is ignored     */
} pk_kind;

typedef struct pk_obj pk_obj;

struct pk_obj {
    pk_kind kind;
    union {
        bool boolean;
        int64_t integer;
        struct {
            const char *bytes;
            size_t length;
        } string;
        struct {            /* tuple, list */
            pk_obj **items;
            size_t count, capacity;
        } seq;
        struct {
            pk_obj **keys, **values;
            size_t count, capacity;
        } dict;
        int global;         /* index into allow_list */
        struct {
            pk_storage_type type;
            const uint8_t *data;
            size_t nbytes;  /* declared numel · element size (≤ the entry's size) */
            char key[24];
        } storage;
        struct {
            const pk_obj *storage;
            int64_t offset, numel;
            int ndim;
            int64_t shape[ST_MAX_DIMS];
            bool contiguous;
        } tensor;
    } u;
};

typedef struct machine {
    const char *path;
    const uint8_t *in;
    size_t size, pos;
    pk_storage_fn storage_fn;
    void *user_data;
    pk_obj **objects;      /* arena: every object, freed at the end */
    size_t object_count, object_capacity;
    pk_obj **stack;
    size_t stack_count, stack_capacity;
    size_t *marks;
    size_t mark_count, mark_capacity;
    pk_obj **memo;
    size_t memo_capacity;
    size_t memo_used;       /* for MEMOIZE: memo[memo_used] */
    size_t max_objects;     /* pk_object_budget(the file's size)                          */
} machine;

/* The failure of a load that ran out of memory (names the file). */
moire_status pk_out_of_memory(const machine *m);
/* Frees every object of the machine's arena and its stacks. */
void pk_machine_free(machine *m);
/* A printable rendering of file-supplied text for messages (non-ASCII bytes become '?'). */
void pk_printable(char *out, size_t out_size, const char *text, size_t length);
/* The kind's name for messages ("dict", "tensor", …). */
const char *pk_kind_name(pk_kind kind);
/* Whether obj is the string `text`. */
bool pk_string_is(const pk_obj *obj, const char *text);
/* Runs the pickle to its STOP; *result is the unpickled root object (owned by the machine). */
moire_status pk_machine_run(machine *m, pk_obj **result);

#endif /* MOIRE_PICKLE_MACHINE_H */
