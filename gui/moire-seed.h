/* moire-seed.h — how the seed of the next generation is chosen (fixed / random / reuse the
 * last one), as artists know it from A1111's dice and recycle buttons. */
#pragma once

#include <glib-object.h>

G_BEGIN_DECLS

/* Nicks match the io.github.moire.Studio.SeedMode enum of the GSettings schema. */
typedef enum
{
  MOIRE_SEED_MODE_FIXED = 0,      /* the seed as entered                             */
  MOIRE_SEED_MODE_RANDOM = 1,     /* a new random seed for every generation          */
  MOIRE_SEED_MODE_REUSE_LAST = 2, /* the seed the previous generation used           */
} MoireSeedMode;

#define MOIRE_TYPE_SEED_MODE (moire_seed_mode_get_type ())
GType         moire_seed_mode_get_type      (void) G_GNUC_CONST;

/* Seeds are kept below 2^32 like A1111's, so they can be typed and read back anywhere. */
#define MOIRE_SEED_MAX G_GUINT64_CONSTANT (4294967295)

/* The seed for the next generation. `rand` may be NULL (g_random is used). REUSE_LAST
 * without a previous generation falls back to `entered`. */
guint64       moire_seed_choose             (MoireSeedMode  mode,
                                             guint64        entered,
                                             gboolean       has_last,
                                             guint64        last,
                                             GRand         *rand);

G_END_DECLS
