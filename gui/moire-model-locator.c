/* moire-model-locator.c — default model look-up: the engine's (moire_data_dirs,
 * moire_find_model_in_dir) with GLib strings and errors, and a missing $MOIRE_MODEL is an error. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <stdlib.h>

#include "moire-gui-util.h"
#include "moire.h"
#include "moire-model-locator.h"

GStrv
moire_model_locator_get_search_dirs (void)
{
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();
  const char *data_dirs[MOIRE_DATA_DIRS_MAX];
  int count = moire_data_dirs (data_dirs);

  /* the engine's data folders (moire_data_dirs), each one's models/ */
  for (int i = 0; i < count; i++)
    {
      g_autofree char *dir = g_build_filename (data_dirs[i], "models", NULL);

      g_strv_builder_add (builder, dir);
    }
  return g_strv_builder_end (builder);
}

char *
moire_model_locator_find_in_dir (const char *dir)
{
  char *found;
  char *path;

  g_return_val_if_fail (dir != NULL, NULL);
  /* the engine's rule (moire_find_model_in_dir), as a GLib string */
  found = moire_find_model_in_dir (dir);
  path = g_strdup (found);
  free (found);
  return path;
}

char *
moire_model_locator_find_default (GError **error)
{
  const char *env = g_getenv ("MOIRE_MODEL");
  g_auto(GStrv) dirs = NULL;

  if (env != NULL && *env != '\0')
    {
      if (g_file_test (env, G_FILE_TEST_IS_REGULAR))
        return g_strdup (env);
      g_set_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_NO_MODEL,
                   _("The model “%s” named by MOIRE_MODEL does not exist"), env);
      return NULL;
    }
  dirs = moire_model_locator_get_search_dirs ();
  for (char **dir = dirs; *dir != NULL; dir++)
    {
      char *path = moire_model_locator_find_in_dir (*dir);

      if (path != NULL)
        return path;
    }
  g_set_error_literal (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_NO_MODEL,
                       _("No model was found. Choose a model file (.safetensors)."));
  return NULL;
}
