/* weight_binding.h — the loading step every weight file shares (DiT-MoE, EC-DiT, SD-VAE).
 *
 * A family's loader lists each weight it needs as a binding: checkpoint key → the
 * `const float *` field that will point at it, with the expected shape. weight_list_bind()
 * then checks every binding against the safetensors file (present, F32/F16/BF16, shape),
 * uses aligned F32 tensors in place (zero copy from the mapping), converts F16/BF16 and
 * misaligned F32 ones once into a single fp32 arena, and checks every value finite. Errors
 * name the file, the tensor and the family's fix (weight_file_kind).
 */
#ifndef MOIRE_WEIGHT_BINDING_H
#define MOIRE_WEIGHT_BINDING_H

#include "internal.h"
#include "safetensors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weight_binding {
    char key[192];
    const float **field;      /* where the fp32 pointer goes                                */
    int ndim;
    int64_t shape[4];         /* expected                                                    */
    bool optional;            /* may be absent: the field stays NULL                         */
    bool is_buffer;           /* a fixed table (pos_embed), not counted as a parameter       */
    bool also_1x1_conv;       /* an [O, I] weight may be stored as [O, I, 1, 1] (LDM convs)  */
    /* filled by weight_list_bind */
    const st_tensor *tensor;  /* NULL for an absent optional one                             */
    bool converted;           /* F16/BF16 or misaligned F32: copied into the arena           */
    size_t arena_offset;      /* in floats                                                   */
    int64_t first_nonfinite;  /* −1 when every value is finite                               */
} weight_binding;

typedef struct weight_list {
    weight_binding *items;
    int count, capacity;
    bool out_of_memory;       /* an add failed; weight_list_bind reports it                  */
} weight_list;

/* Appends a required binding whose key is printf-formatted; ndim ≤ 4 dims (unused ones 0).
 * Returns it (to set optional, is_buffer, also_1x1_conv), or NULL with out_of_memory set. */
weight_binding *weight_list_add(weight_list *list, const float **field, int ndim, int64_t d0,
                                int64_t d1, int64_t d2, int64_t d3, const char *key_format, ...)
    MOIRE_PRINTF(8, 9);
void weight_list_free(weight_list *list);
/* "[12, 8, 3, 3]", for messages. */
void weight_format_shape(char *buffer, size_t size, int ndim, const int64_t *shape);

/* How a family words its errors: each message is "<path>: tensor '<key>' …" then these. */
typedef struct weight_file_kind {
    const char *name;           /* "DiT-MoE checkpoint": "the file is not a complete …"      */
    const char *missing_fix;    /* after a missing tensor: "(or its moire.config …)"           */
    const char *shape_source;   /* who needs the shape: "the model config"                    */
    const char *shape_fix;      /* after a misshapen tensor                                   */
    const char *corrupt_fix;    /* after a non-finite value                                   */
    /* Optional: a sharper message for a missing required tensor (the usual cause, when the
     * family can tell); MOIRE_OK = none, the generic message follows. */
    moire_status (*explain_missing)(const weight_binding *binding, const st_file *file,
                                    const char *path, void *user_data);
    /* Optional: called for every tensor of the file; fails for one that claims a part of
     * the model the config does not have (a block past depth…), which would otherwise be
     * silently dropped. */
    moire_status (*check_unbound)(const char *name, void *user_data);
    void *user_data;
} weight_file_kind;

typedef struct weight_bind_result {
    float *arena;               /* the converted weights; owned by the caller (free())       */
    size_t arena_floats;
    int64_t parameter_count;    /* elements of the bound tensors, buffers left out           */
    int bound;                  /* tensors bound                                             */
    char dtype_name[8];         /* of the parameters: "F32", "F16", "BF16" or "mixed"        */
} weight_bind_result;

/* Checks, converts and points every field of `list` at its fp32 data. On failure nothing is
 * owned by *result (its arena is freed) and the fields must not be used. */
moire_status weight_list_bind(weight_list *list, const st_file *file, const char *path,
                              const weight_file_kind *kind, weight_bind_result *result);

#endif
