/* data_dirs.c — where Moiré looks for its installed data (class-name lists, the embedded
 * model): $MOIRE_DATA_DIR, the installed share/moire (MOIRE_DATADIR, engine/meson.build) and
 * the source tree's data/ (MOIRE_SOURCE_DATADIR, for uninstalled builds), in that order. One
 * list for every reader of data files and every host (moire_data_dirs, moire.h). */
#include "internal.h"

#include <stdlib.h>

int moire_data_dirs(const char *dirs[MOIRE_DATA_DIRS_MAX])
{
    int n = 0;
    const char *env = getenv("MOIRE_DATA_DIR");
    if (env && *env)
        dirs[n++] = env;
    if (*MOIRE_DATADIR)
        dirs[n++] = MOIRE_DATADIR;
    if (*MOIRE_SOURCE_DATADIR)
        dirs[n++] = MOIRE_SOURCE_DATADIR;
    return n;
}
