/* moire-generation-panel-restore.c — the panel's settings restored from a PNG's metadata (the A1111
 * parameters text and the exact moire JSON). */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-generation-panel-private.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

/* --- restore from a PNG -------------------------------------------------------------------- */

gboolean
moire_generation_panel_add_history_file (MoireGenerationPanel  *self,
                                         const char            *path,
                                         GError               **error)
{
  moire_image *image = NULL;
  char *text = NULL, *json = NULL;
  moire_parameters parameters = moire_parameters_init ();
  g_autoptr(MoireGenSettings) settings = NULL;
  g_autoptr(MoireHistoryItem) item = NULL;
  g_autofree char *model_name = NULL;
  moire_status status;

  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  status = moire_png_load (path, &image, &text, &json);
  if (status == MOIRE_OK && (text == NULL || *text == '\0'))
    status = MOIRE_ERROR_FORMAT;
  if (status == MOIRE_OK)
    status = moire_parse_parameters (text, &parameters);
  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, path));
      moire_image_free (image);
      free (text);
      free (json);
      return FALSE;
    }
  /* The item's own settings, from its texts: the form is left as it is. What cannot be
   * restored (an unknown sampler…) stays at the form's value; that is only a history entry. */
  settings = moire_gen_settings_copy (self->settings);
  moire_gen_settings_apply_parameters (settings, &parameters, &model_name, NULL);
  moire_gen_settings_apply_settings_json (settings, json, NULL);
  item = moire_history_item_new (settings, image, text, json);
  moire_history_prepend (self->history, item);
  moire_parameters_clear (&parameters);
  moire_image_free (image);
  free (text);
  free (json);
  return TRUE;
}

gboolean
moire_generation_panel_restore_from_file (MoireGenerationPanel  *self,
                                          const char            *path,
                                          GError               **error)
{
  moire_image *image = NULL;
  char *text = NULL, *json = NULL;
  moire_parameters parameters = moire_parameters_init ();
  g_autofree char *model_name = NULL;
  g_autofree char *model_path = NULL;
  g_autoptr(GError) partial = NULL;
  g_autoptr(MoireHistoryItem) item = NULL;
  g_autofree char *name = NULL;
  moire_status status;

  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  name = g_filename_display_basename (path);
  status = moire_png_load (path, &image, &text, &json);
  if (status != MOIRE_OK)
    {
      g_autofree char *what = g_strdup_printf (_("Could not open “%s”"), name);

      g_propagate_error (error, moire_gui_error_from_status (status, what));
      return FALSE;
    }
  if (text == NULL || *text == '\0')
    {
      g_set_error (error, MOIRE_GUI_ERROR, MOIRE_ERROR_FORMAT,
                   _("“%s” has no generation parameters to restore"), name);
      moire_image_free (image);
      free (text);
      free (json);
      return FALSE;
    }
  status = moire_parse_parameters (text, &parameters);
  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, name));
      moire_image_free (image);
      free (text);
      free (json);
      return FALSE;
    }

  moire_gen_settings_apply_parameters (self->settings, &parameters, &model_name, &partial);
  /* The DMCMC settings come from the "moire" JSON (the A1111 text only summarises them). */
  moire_gen_settings_apply_settings_json (self->settings, json, partial == NULL ? &partial : NULL);
  model_path = moire_model_chooser_find_recent (self->model_chooser, model_name);
  if (model_path != NULL)
    moire_generation_panel_set_model_path (self, model_path, FALSE);

  item = moire_history_item_new (self->settings, image, text, json);
  moire_history_prepend (self->history, item);
  panel_show_item (self, item);

  moire_parameters_clear (&parameters);
  moire_image_free (image);
  free (text);
  free (json);

  if (partial != NULL)
    {
      g_propagate_error (error, g_steal_pointer (&partial));
      return FALSE;
    }
  if (model_name != NULL && model_path == NULL && self->model != NULL)
    {
      const char *current = moire_model_handle_get_name (self->model);

      if (!g_str_has_prefix (current, model_name))
        {
          g_autofree char *message =
            g_strdup_printf (_("Settings restored. The image was made with the model “%s”, which is not among the recent models."),
                             model_name);

          moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, message);
        }
    }
  return TRUE;
}
