/* moire-generation-panel-actions.c — the panel's actions (generate, cancel, seeds, files) and their
 * enabled state, and the file choosers (model, VAE, init image, mask) they open. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-generation-panel-private.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

/* --- file choosers ------------------------------------------------------------------------- */

static GtkWindow *
get_parent_window (MoireGenerationPanel *self)
{
  GtkRoot *root = gtk_widget_get_root (GTK_WIDGET (self));

  return GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL;
}

typedef void (*FileChosenFunc) (MoireGenerationPanel *self, GFile *file);

static void
on_chooser_response (GtkNativeDialog *dialog,
                     int              response,
                     gpointer         user_data)
{
  MoireGenerationPanel *self = MOIRE_GENERATION_PANEL (user_data);
  FileChosenFunc func = g_object_get_data (G_OBJECT (dialog), "moire-func");

  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr(GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));

      if (file != NULL)
        func (self, file);
    }
  gtk_native_dialog_destroy (dialog);
  g_object_unref (dialog);
  g_object_unref (self);
}

static void
run_file_chooser (MoireGenerationPanel *self,
                  const char           *title,
                  GtkFileChooserAction  action,
                  const char           *filter_name,
                  const char * const   *patterns,
                  const char           *suggested_name,
                  FileChosenFunc        func)
{
  GtkFileChooserNative *chooser;

  chooser = gtk_file_chooser_native_new (title, get_parent_window (self), action, NULL, NULL);
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (chooser), TRUE);
  if (filter_name != NULL)
    {
      g_autoptr(GtkFileFilter) filter = gtk_file_filter_new ();

      gtk_file_filter_set_name (filter, filter_name);
      for (guint i = 0; patterns[i] != NULL; i++)
        gtk_file_filter_add_pattern (filter, patterns[i]);
      gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (chooser), filter);
    }
  if (suggested_name != NULL)
    gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (chooser), suggested_name);
  if (action == GTK_FILE_CHOOSER_ACTION_SAVE)
    {
      /* The folder saved to last time, else Pictures (never the process's working
       * directory, which for a desktop launch is $HOME or /). */
      g_autofree char *folder = self->gsettings != NULL
                                  ? g_settings_get_string (self->gsettings, "save-folder") : NULL;
      const char *pictures = g_get_user_special_dir (G_USER_DIRECTORY_PICTURES);
      g_autoptr(GFile) start = NULL;

      if (folder != NULL && *folder != '\0' && g_file_test (folder, G_FILE_TEST_IS_DIR))
        start = g_file_new_for_path (folder);
      else if (pictures != NULL && g_file_test (pictures, G_FILE_TEST_IS_DIR))
        start = g_file_new_for_path (pictures);
      if (start != NULL)
        gtk_file_chooser_set_current_folder (GTK_FILE_CHOOSER (chooser), start, NULL);
    }
  g_object_set_data (G_OBJECT (chooser), "moire-func", func);
  g_signal_connect (chooser, "response", G_CALLBACK (on_chooser_response), g_object_ref (self));
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (chooser));
}

static void
model_file_chosen (MoireGenerationPanel *self,
                   GFile                *file)
{
  g_autofree char *path = g_file_get_path (file);

  moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, NULL);
  if (path != NULL)
    moire_generation_panel_set_model_path (self, path, TRUE);
}

static void
init_file_chosen (MoireGenerationPanel *self,
                  GFile                *file)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_file_get_path (file);
  g_autofree char *name = g_file_get_basename (file);
  g_autoptr(moire_image) image = path != NULL ? moire_gui_image_load (path, &error) : NULL;

  if (image == NULL)
    {
      g_autofree char *message = g_strdup_printf (_("Could not open the init image: %s"),
                                                  error != NULL ? error->message : name);

      moire_generation_panel_show_message (self, GTK_MESSAGE_ERROR, message);
      return;
    }
  moire_generation_panel_set_init_image (self, image, name);
}

static void
image_to_restore_chosen (MoireGenerationPanel *self,
                         GFile                *file)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_file_get_path (file);

  if (path != NULL && !moire_generation_panel_restore_from_file (self, path, &error))
    moire_generation_panel_show_message (self,
                                         g_error_matches (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED)
                                           ? GTK_MESSAGE_WARNING : GTK_MESSAGE_ERROR,
                                         error->message);
}

static void
save_file_chosen (MoireGenerationPanel *self,
                  GFile                *file)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_file_get_path (file);

  if (self->current_item == NULL || path == NULL)
    return;
  if (!moire_history_item_save_png (self->current_item, path, &error))
    {
      g_autofree char *message = g_strdup_printf (_("Could not save the image: %s"), error->message);

      moire_generation_panel_show_message (self, GTK_MESSAGE_ERROR, message);
    }
  else
    {
      g_autofree char *name = g_file_get_basename (file);
      g_autofree char *message = g_strdup_printf (_("Saved “%s” with its parameters"), name);

      moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, message);
      if (self->gsettings != NULL)
        {
          g_autofree char *folder = g_path_get_dirname (path);

          g_settings_set_string (self->gsettings, "save-folder", folder);
        }
    }
}

/* --- init image ---------------------------------------------------------------------------- */

void
moire_generation_panel_set_init_image (MoireGenerationPanel *self,
                                       const moire_image    *image,
                                       const char           *label)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));

  g_clear_pointer (&self->init_image, moire_image_free);
  if (image != NULL)
    {
      self->init_image = moire_image_new (image->width, image->height, image->channels);
      if (self->init_image != NULL)
        memcpy (self->init_image->pixels, image->pixels,
                (gsize) image->width * image->height * image->channels);
    }
  if (self->init_image != NULL)
    {
      g_autofree char *text = g_strdup_printf ("%s (%d×%d)", label != NULL ? label : _("Image"),
                                               image->width, image->height);

      gtk_label_set_text (self->init_label, text);
    }
  else
    gtk_label_set_text (self->init_label, _("None — choose an image…"));
  gtk_widget_set_sensitive (self->strength_box, self->init_image != NULL);
  panel_update_actions (self);
}

void
moire_generation_panel_set_mask (MoireGenerationPanel *self,
                                 const moire_image    *mask)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_return_if_fail (mask == NULL || mask->channels == 1);

  g_clear_pointer (&self->mask, moire_image_free);
  if (mask != NULL)
    {
      self->mask = moire_image_new (mask->width, mask->height, 1);
      if (self->mask != NULL)
        memcpy (self->mask->pixels, mask->pixels, (gsize) mask->width * mask->height);
    }
}

/* --- actions ------------------------------------------------------------------------------- */

void
panel_update_actions (MoireGenerationPanel *self)
{
  gboolean busy = self->job != NULL;

  /* While a job runs Generate queues another one — except beside an endless DMCMC stream,
   * which never makes room for it. */
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.generate",
                                 !busy || !moire_job_get_stream (self->job));
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.cancel", busy);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.clear-queue", self->queue.length > 0);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.save-image", self->current_item != NULL);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.clear-history",
                                 g_list_model_get_n_items (G_LIST_MODEL (self->history)) > 0);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.clear-init-image", self->init_image != NULL);
}

void
panel_action_generate (GtkWidget  *widget,
                       const char *action_name,
                       GVariant   *parameter)
{
  moire_generation_panel_generate (MOIRE_GENERATION_PANEL (widget));
}

void
panel_action_cancel (GtkWidget  *widget,
                     const char *action_name,
                     GVariant   *parameter)
{
  moire_generation_panel_cancel (MOIRE_GENERATION_PANEL (widget));
}

void
panel_action_choose_model (GtkWidget  *widget,
                           const char *action_name,
                           GVariant   *parameter)
{
  static const char * const patterns[] = { "*.safetensors", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Open Model"), GTK_FILE_CHOOSER_ACTION_OPEN,
                    _("Models (.safetensors)"), patterns, NULL, model_file_chosen);
}

void
panel_action_choose_init_image (GtkWidget  *widget,
                                const char *action_name,
                                GVariant   *parameter)
{
  static const char * const patterns[] = { "*.png", "*.PNG", "*.jpg", "*.jpeg", "*.JPG", "*.tif", "*.tiff", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Choose Init Image"), GTK_FILE_CHOOSER_ACTION_OPEN,
                    _("Images"), patterns, NULL, init_file_chosen);
}

void
panel_action_clear_init_image (GtkWidget  *widget,
                               const char *action_name,
                               GVariant   *parameter)
{
  moire_generation_panel_set_init_image (MOIRE_GENERATION_PANEL (widget), NULL, NULL);
}

void
panel_action_open_image (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter)
{
  static const char * const patterns[] = { "*.png", "*.PNG", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Open Image and Restore Its Settings"),
                    GTK_FILE_CHOOSER_ACTION_OPEN, _("PNG images"), patterns, NULL,
                    image_to_restore_chosen);
}

void
panel_action_save_image (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter)
{
  MoireGenerationPanel *self = MOIRE_GENERATION_PANEL (widget);
  static const char * const patterns[] = { "*.png", NULL };
  g_autofree char *suggested = NULL;

  if (self->current_item == NULL)
    return;
  suggested = moire_history_item_suggest_filename (self->current_item);
  run_file_chooser (self, _("Save Image"), GTK_FILE_CHOOSER_ACTION_SAVE, _("PNG images"), patterns,
                    suggested, save_file_chosen);
}

static void
vae_file_chosen (MoireGenerationPanel *self,
                 GFile                *file)
{
  g_autofree char *path = g_file_get_path (file);

  if (path != NULL)
    moire_generation_panel_set_vae_path (self, path);
}

void
panel_action_choose_vae (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter)
{
  static const char * const patterns[] = { "*.safetensors", "*.ckpt", "*.pt", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Choose a VAE"),
                    GTK_FILE_CHOOSER_ACTION_OPEN, _("VAE files"), patterns, NULL, vae_file_chosen);
}

void
panel_action_clear_vae (GtkWidget  *widget,
                        const char *action_name,
                        GVariant   *parameter)
{
  moire_generation_panel_set_vae_path (MOIRE_GENERATION_PANEL (widget), "");
}

void
panel_action_clear_queue (GtkWidget  *widget,
                          const char *action_name,
                          GVariant   *parameter)
{
  moire_generation_panel_clear_queue (MOIRE_GENERATION_PANEL (widget));
}

void
panel_action_clear_history (GtkWidget  *widget,
                            const char *action_name,
                            GVariant   *parameter)
{
  moire_history_clear (MOIRE_GENERATION_PANEL (widget)->history);
}

void
panel_action_dismiss_banner (GtkWidget  *widget,
                             const char *action_name,
                             GVariant   *parameter)
{
  moire_generation_panel_show_message (MOIRE_GENERATION_PANEL (widget), GTK_MESSAGE_INFO, NULL);
}
