/* arena.c — the per-context activation arena (ops.h): one backend allocation carved by a
 * bump pointer, LIFO release by mark, overflow allocations that the next pass folds into a
 * block of the high-water size. It is why a forward allocates nothing once warmed up: on a
 * device backend every allocation is a cudaMalloc (slow, and forbidden in a CUDA graph).
 */
#include "internal.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

/* Every block handed out is aligned for vector loads and cuBLASLt's best algorithms. */
#define ARENA_ALIGN 256
/* A new block is rounded up so a slightly larger pass does not reallocate it. */
#define ARENA_GRANULE ((size_t)1 << 20)

static size_t align_up(size_t bytes, size_t to)
{
    return (bytes + to - 1) / to * to;
}

void arena_init(moire_arena *arena, const moire_ops *ops)
{
    memset(arena, 0, sizeof *arena);
    arena->ops = ops;
}

static void free_overflow(moire_arena *arena)
{
    for (size_t i = 0; i < arena->overflow_count; i++)
        arena->ops->mem_free(arena->ops, arena->overflow[i]);
    arena->overflow_count = 0;
}

void arena_destroy(moire_arena *arena)
{
    if (!arena->ops)
        return;
    free_overflow(arena);
    free(arena->overflow);
    if (arena->base)
        arena->ops->mem_free(arena->ops, arena->base);
    memset(arena, 0, sizeof *arena);
}

moire_status arena_begin(moire_arena *arena)
{
    if (arena->open) /* a pass inside a pass (a VAE decode from a callback) shares it */
        return MOIRE_OK;
    /* Overflow blocks of the last pass are freed only now: on a device backend kernels may
     * have read them until that pass's final download. */
    free_overflow(arena);
    if (arena->high_water > arena->size) {
        const size_t size = align_up(arena->high_water, ARENA_GRANULE);
        if (arena->base)
            arena->ops->mem_free(arena->ops, arena->base);
        arena->base = NULL;
        arena->size = 0;
        arena->base = arena->ops->mem_alloc(arena->ops, size);
        if (!arena->base)
            return MOIRE_ERROR_OUT_OF_MEMORY; /* the backend's message says how much */
        arena->size = size;
    }
    arena->used = 0;
    arena->open = true;
    return MOIRE_OK;
}

void arena_end(moire_arena *arena)
{
    arena->used = 0;
    arena->open = false;
}

void *arena_take(moire_arena *arena, size_t bytes)
{
    bytes = align_up(bytes ? bytes : 1, ARENA_ALIGN);
    void *p;
    if (arena->used <= arena->size && bytes <= arena->size - arena->used) {
        p = arena->base + arena->used;
    } else {
        if (arena->overflow_count == arena->overflow_cap) {
            const size_t cap = arena->overflow_cap ? 2 * arena->overflow_cap : 16;
            void **grown = realloc(arena->overflow, cap * sizeof *grown);
            if (!grown) {
                error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
                return NULL;
            }
            arena->overflow = grown;
            arena->overflow_cap = cap;
        }
        p = arena->ops->mem_alloc(arena->ops, bytes);
        if (!p)
            return NULL;
        arena->overflow[arena->overflow_count++] = p;
        arena->overflows++;
    }
    arena->used += bytes;
    if (arena->used > arena->high_water)
        arena->high_water = arena->used;
    return p;
}

void arena_release(moire_arena *arena, size_t mark)
{
    if (mark < arena->used)
        arena->used = mark;
}
