/* moire-seed.c — seed modes. */
#define G_LOG_DOMAIN "moire-gui"

#include "moire-seed.h"

G_DEFINE_ENUM_TYPE (MoireSeedMode, moire_seed_mode,
  G_DEFINE_ENUM_VALUE (MOIRE_SEED_MODE_FIXED, "fixed"),
  G_DEFINE_ENUM_VALUE (MOIRE_SEED_MODE_RANDOM, "random"),
  G_DEFINE_ENUM_VALUE (MOIRE_SEED_MODE_REUSE_LAST, "reuse-last"))

guint64
moire_seed_choose (MoireSeedMode  mode,
                   guint64        entered,
                   gboolean       has_last,
                   guint64        last,
                   GRand         *rand)
{
  switch (mode)
    {
    case MOIRE_SEED_MODE_RANDOM:
      /* g_rand_int is 32-bit: exactly the A1111 seed range. */
      return rand != NULL ? g_rand_int (rand) : g_random_int ();
    case MOIRE_SEED_MODE_REUSE_LAST:
      return has_last ? last : MIN (entered, MOIRE_SEED_MAX);
    case MOIRE_SEED_MODE_FIXED:
    default:
      return MIN (entered, MOIRE_SEED_MAX);
    }
}
