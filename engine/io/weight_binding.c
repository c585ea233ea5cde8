/* weight_binding.c — checking a family's list of weights against a safetensors file and
 * pointing each field at fp32 data (weight_binding.h). Shared by model.c (DiT-MoE),
 * ecdit_model.c (EC-DiT) and vae.c (SD-VAE).
 */
#include "weight_binding.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

weight_binding *weight_list_add(weight_list *list, const float **field, int ndim, int64_t d0,
                                int64_t d1, int64_t d2, int64_t d3, const char *key_format, ...)
{
    if (list->count == list->capacity) {
        int capacity = list->capacity ? 2 * list->capacity : 256;
        weight_binding *items = realloc(list->items, (size_t)capacity * sizeof *items);
        if (!items) {
            list->out_of_memory = true;
            return NULL;
        }
        list->items = items;
        list->capacity = capacity;
    }
    weight_binding *binding = &list->items[list->count++];
    memset(binding, 0, sizeof *binding);
    va_list args;
    va_start(args, key_format);
    vsnprintf(binding->key, sizeof binding->key, key_format, args);
    va_end(args);
    binding->field = field;
    binding->ndim = ndim;
    const int64_t dims[4] = {d0, d1, d2, d3};
    memcpy(binding->shape, dims, sizeof dims);
    binding->first_nonfinite = -1;
    return binding;
}

void weight_list_free(weight_list *list)
{
    free(list->items);
    memset(list, 0, sizeof *list);
}

void weight_format_shape(char *buffer, size_t size, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buffer, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buffer + used, size - used, "%s%lld", d ? ", " : "",
                                 (long long)shape[d]);
    if (used < size)
        snprintf(buffer + used, size - used, "]");
}

static bool shape_matches(const weight_binding *binding, const st_tensor *tensor)
{
    bool same = tensor->ndim == binding->ndim;
    for (int d = 0; same && d < binding->ndim; d++)
        same = tensor->shape[d] == binding->shape[d];
    if (!same && binding->also_1x1_conv && binding->ndim == 2)
        same = tensor->ndim == 4 && tensor->shape[0] == binding->shape[0] &&
               tensor->shape[1] == binding->shape[1] && tensor->shape[2] == 1 &&
               tensor->shape[3] == 1;
    return same;
}

/* Finds one binding's tensor and checks its dtype and shape. */
static moire_status check_binding(weight_binding *binding, const st_file *file, const char *path,
                                  const weight_file_kind *kind)
{
    const st_tensor *tensor = st_find(file, binding->key);
    if (!tensor) {
        if (binding->optional)
            return MOIRE_OK;
        if (kind->explain_missing) {
            moire_status status = kind->explain_missing(binding, file, path, kind->user_data);
            if (status != MOIRE_OK)
                return status;
        }
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' is missing; the file is not a complete %s %s", path,
                          binding->key, kind->name, kind->missing_fix);
    }
    if (tensor->dtype != ST_F32 && tensor->dtype != ST_F16 && tensor->dtype != ST_BF16)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16: "
                          "export the %s again", path, binding->key,
                          st_dtype_name(tensor->dtype), kind->name);
    if (!shape_matches(binding, tensor)) {
        char expected[96], found[160];
        weight_format_shape(expected, sizeof expected, binding->ndim, binding->shape);
        weight_format_shape(found, sizeof found, tensor->ndim, tensor->shape);
        return error_fail(MOIRE_ERROR_FORMAT, "%s: tensor '%s' has shape %s but %s needs %s; %s",
                          path, binding->key, found, kind->shape_source, expected,
                          kind->shape_fix);
    }
    binding->tensor = tensor;
    return MOIRE_OK;
}

static bool is_nonfinite(const float *x)
{
    uint32_t bits;
    memcpy(&bits, x, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u; /* an integer test -ffast-math keeps */
}

/* Index of the first NaN/±inf in x[0..count), or −1. Scans in chunks with a branch-free
 * OR so the common all-finite case vectorises; only a bad chunk is searched by index. */
static int64_t find_nonfinite(const float *x, int64_t count)
{
    enum { CHUNK = 4096 };
    for (int64_t start = 0; start < count; start += CHUNK) {
        int64_t end = count - start < CHUNK ? count : start + CHUNK;
        unsigned any = 0;
        for (int64_t i = start; i < end; i++)
            any |= is_nonfinite(&x[i]);
        if (!any)
            continue;
        for (int64_t i = start; i < end; i++)
            if (is_nonfinite(&x[i]))
                return i;
    }
    return -1;
}

/* The fp32 arena (several GB for an F16 XL/G checkpoint). Aligned to 2 MiB and marked for
 * transparent huge pages: first-touch page faults, not the conversion, dominate the load
 * otherwise. Freed with free(). */
static float *arena_alloc(size_t floats)
{
    const size_t huge_page = (size_t)2 << 20;
    if (floats > SIZE_MAX / sizeof(float))
        return NULL;
    size_t bytes = floats * sizeof(float);
    void *memory = NULL;
    if (posix_memalign(&memory, huge_page, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= huge_page)
        madvise(memory, (bytes + huge_page - 1) / huge_page * huge_page, MADV_HUGEPAGE);
#endif
    return memory;
}

moire_status weight_list_bind(weight_list *list, const st_file *file, const char *path,
                              const weight_file_kind *kind, weight_bind_result *result)
{
    memset(result, 0, sizeof *result);
    if (list->out_of_memory)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);

    /* 1. find and check every tensor; size the arena for those that need converting */
    moire_status status = MOIRE_OK;
    unsigned dtypes_seen = 0; /* bit per st_dtype, parameters only */
    for (int i = 0; i < list->count && status == MOIRE_OK; i++) {
        weight_binding *binding = &list->items[i];
        status = check_binding(binding, file, path, kind);
        const st_tensor *tensor = binding->tensor;
        if (status != MOIRE_OK || !tensor)
            continue;
        result->bound++;
        binding->converted = tensor->dtype != ST_F32 || ((uintptr_t)tensor->data % 4) != 0;
        if (binding->converted) {
            binding->arena_offset = result->arena_floats;
            result->arena_floats += (size_t)tensor->numel;
        }
        if (!binding->is_buffer) {
            dtypes_seen |= 1u << tensor->dtype;
            result->parameter_count += tensor->numel;
        }
    }
    for (int i = 0; kind->check_unbound && i < st_tensor_count(file) && status == MOIRE_OK; i++)
        status = kind->check_unbound(st_tensor_at(file, i)->name, kind->user_data);
    if (status != MOIRE_OK)
        return status;

    /* 2. one arena for every converted weight, then point each field at its fp32 data */
    if (result->arena_floats > 0) {
        result->arena = arena_alloc(result->arena_floats);
        if (!result->arena)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                              "%s: cannot allocate %zu bytes to convert the weights to fp32; "
                              "free memory or use an F32 file", path,
                              result->arena_floats * sizeof(float));
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (int i = 0; i < list->count; i++) {
        weight_binding *binding = &list->items[i];
        const st_tensor *tensor = binding->tensor;
        if (!tensor)
            continue;
        if (binding->converted) {
            float *destination = result->arena + binding->arena_offset;
            st_convert_to_f32(destination, tensor->data, tensor->dtype, tensor->numel);
            *binding->field = destination;
        } else {
            *binding->field = tensor->data;
        }
        /* 3. finiteness, in the same pass while the data is in cache */
        binding->first_nonfinite = find_nonfinite(*binding->field, tensor->numel);
    }
    for (int i = 0; i < list->count; i++) {
        const weight_binding *binding = &list->items[i];
        if (binding->first_nonfinite >= 0) {
            int64_t index = binding->first_nonfinite;
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: tensor '%s' holds a non-finite value (%g) at index %lld; %s",
                                path, binding->key, (double)(*binding->field)[index],
                                (long long)index, kind->corrupt_fix);
            free(result->arena);
            result->arena = NULL;
            return status;
        }
    }

    int distinct = __builtin_popcount(dtypes_seen);
    snprintf(result->dtype_name, sizeof result->dtype_name, "%s",
             distinct != 1 ? "mixed"
             : (dtypes_seen & (1u << ST_F16)) ? "F16"
             : (dtypes_seen & (1u << ST_BF16)) ? "BF16" : "F32");
    return MOIRE_OK;
}
