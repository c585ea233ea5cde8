/* moire-model-locator.c — default model look-up. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>

#include "moire-gui-util.h"
#include "moire-model-locator.h"

GStrv
moire_model_locator_get_search_dirs (void)
{
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();
  const char *data_dir = g_getenv ("MOIRE_DATA_DIR");

  g_autofree char *installed = g_build_filename (MOIRE_DATADIR, "models", NULL);
  g_autofree char *source = g_build_filename (MOIRE_SOURCE_DATADIR, "models", NULL);

  if (data_dir != NULL && *data_dir != '\0')
    {
      g_autofree char *dir = g_build_filename (data_dir, "models", NULL);

      g_strv_builder_add (builder, dir);
    }
  /* MOIRE_DATADIR / MOIRE_SOURCE_DATADIR come from engine/meson.build. */
  g_strv_builder_add (builder, installed);
  g_strv_builder_add (builder, source);
  return g_strv_builder_end (builder);
}

static int
compare_names (gconstpointer a,
               gconstpointer b)
{
  return g_strcmp0 (*(char * const *) a, *(char * const *) b);
}

char *
moire_model_locator_find_in_dir (const char *dir)
{
  g_autoptr(GDir) d = NULL;
  g_autoptr(GPtrArray) names = NULL;
  const char *name;

  g_return_val_if_fail (dir != NULL, NULL);
  d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return NULL;
  names = g_ptr_array_new_with_free_func (g_free);
  while ((name = g_dir_read_name (d)) != NULL)
    if (moire_is_model_file_name (name))
      g_ptr_array_add (names, g_strdup (name));
  if (names->len == 0)
    return NULL;
  g_ptr_array_sort (names, compare_names);
  return g_build_filename (dir, g_ptr_array_index (names, 0), NULL);
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
