/* moire-model-locator.h — where the default model comes from when the user has not chosen
 * one: $MOIRE_MODEL, then the "models" folder of $MOIRE_DATA_DIR, of the installed data
 * (share/moire/models, where the embedded model is installed) and of the source tree's data/
 * (uninstalled builds). The caller falls back to asking the user. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The folders searched for models, in order (NULL-terminated; free with g_strfreev). */
GStrv        moire_model_locator_get_search_dirs   (void);

/* The first model file (*.safetensors, alphabetically) in `dir`, or NULL. */
char        *moire_model_locator_find_in_dir        (const char  *dir);

/* The default model's path, or NULL with `error` set: $MOIRE_MODEL when set (an error if that
 * file does not exist: a typo should not silently load something else), otherwise the first
 * model in the search folders. */
char        *moire_model_locator_find_default       (GError    **error);

G_END_DECLS
