/* moire-generation-panel.c — the reusable generation panel (see the header). */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "moire-generation-panel.h"
#include "moire-gui-util.h"
#include "moire-job.h"
#include "moire-seed.h"
#include "moire-size-fix.h"

#define THUMBNAIL_SIZE 96

struct _MoireGenerationPanel
{
  GtkWidget             parent_instance;

  MoireGenSettings     *settings;
  MoireHistory         *history;
  GSettings            *gsettings;
  GtkStringList        *recent_models;
  GtkStringList        *sampler_labels;
  GtkEntryCompletion   *prompt_completion;
  GtkEntryCompletion   *negative_completion;
  GtkListStore         *suggestions;
  GRand                *rand;

  MoireModelHandle     *model;
  MoireVaeHandle       *vae;
  char                 *vae_path;
  GCancellable         *vae_cancellable;
  GCancellable         *model_cancellable;
  gboolean              apply_defaults_on_load;
  gboolean              updating_model_dropdown;

  MoireJob             *job;
  GQueue                queue;             /* MoireJob waiting to run, oldest first */
  gboolean              can_queue;
  gboolean              has_last_seed;
  guint64               last_seed;
  gint64                job_started_us;
  int                   pause_at_step;
  gboolean              live_preview;
  int                   preview_interval;
  GHashTable           *warnings_shown;

  moire_image          *init_image;
  moire_image          *mask;
  MoireHistoryItem     *current_item;

  /* DMCMC and its stream; the routing overlay. */
  gboolean              stream;
  int                   stream_rounds;     /* test hook: 0 = until cancelled */
  int                   stream_round;      /* rounds of the running stream so far */
  int                   stream_nfe, stream_one_off;
  char                 *sampler_before_dmcmc;
  gboolean              syncing_dmcmc;
  gboolean              show_routing;
  GtkStringList        *integrator_names;

  /* Template children */
  GtkRevealer          *banner_revealer;
  GtkWidget            *banner;
  GtkImage             *banner_icon;
  GtkLabel             *banner_label;
  GtkButton            *banner_button;
  GtkEntry             *prompt_entry;
  GtkLabel             *prompt_hint;
  GtkEntry             *negative_entry;
  GtkDropDown          *model_dropdown;
  GtkLabel             *model_info;
  GtkWidget            *vae_box;
  GtkLabel             *vae_label;
  GtkDropDown          *sampler_dropdown;
  GtkDropDown          *schedule_dropdown;
  GtkSpinButton        *steps_spin;
  GtkSpinButton        *cfg_spin;
  GtkSpinButton        *width_spin;
  GtkSpinButton        *height_spin;
  GtkSpinButton        *batch_spin;
  GtkSpinButton        *seed_spin;
  GtkDropDown          *seed_mode_dropdown;
  GtkLabel             *init_label;
  GtkWidget            *strength_box;
  GtkScale             *strength_scale;
  GtkCheckButton       *live_preview_check;
  GtkWidget            *extensions_box;
  GtkLabel             *dmcmc_label;
  GtkSwitch            *dmcmc_switch;
  GtkWidget            *stream_box;
  GtkSwitch            *stream_switch;
  GtkExpander          *dmcmc_expander;
  GtkSpinButton        *dmcmc_eta_spin;
  GtkSpinButton        *dmcmc_skip_spin;
  GtkDropDown          *dmcmc_integrator_dropdown;
  GtkSpinButton        *dmcmc_steps_spin;
  GtkButton            *generate_button;
  GtkButton            *cancel_button;
  GtkWidget            *queue_box;
  GtkLabel             *notice_label;
  GtkLabel             *queue_label;
  GtkScrolledWindow    *sidebar_scroller;
  GtkStack             *preview_stack;
  GtkPicture           *preview_picture;
  GtkLabel             *preview_badge;
  GtkProgressBar       *progress_bar;
  GtkLabel             *progress_label;
  GtkWidget            *overlay_toggles_box;
  GtkCheckButton       *routing_check;
  GtkLabel             *routing_legend;
  GtkListView          *history_view;
  GtkLabel             *result_label;
};

G_DEFINE_FINAL_TYPE (MoireGenerationPanel, moire_generation_panel, GTK_TYPE_WIDGET)

enum {
  PROP_0,
  PROP_SETTINGS,
  PROP_HISTORY,
  PROP_MODEL,
  PROP_BUSY,
  PROP_LIVE_PREVIEW,
  PROP_PREVIEW_INTERVAL,
  PROP_STREAM,
  PROP_SHOW_ROUTING,
  PROP_VAE_PATH,
  N_PROPS
};

enum {
  SIGNAL_GENERATE_REQUESTED,
  SIGNAL_PREVIEW_FRAME,
  SIGNAL_RESULT_READY,
  SIGNAL_FINISHED,
  SIGNAL_PAUSED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

static const char panel_css[] =
  ".moire-banner { padding: 6px 12px; background-color: alpha(@error_color, 0.18); }\n"
  ".moire-banner.info { background-color: alpha(@theme_selected_bg_color, 0.18); }\n"
  ".moire-preview { background-color: alpha(currentColor, 0.04); border-radius: 8px; }\n"
  ".moire-badge { padding: 2px 8px; border-radius: 99px; color: white;"
  " background-color: rgba(0, 0, 0, 0.6); }\n"
  ".moire-history > row { padding: 4px; border-radius: 6px; }\n"
  ".moire-thumbnail { border-radius: 4px; }\n";

static void update_actions      (MoireGenerationPanel *self);
static void start_next_queued   (MoireGenerationPanel *self);
static void update_prompt_marks (MoireGenerationPanel *self);
static void update_vae_row      (MoireGenerationPanel *self);
static void show_item           (MoireGenerationPanel *self,
                                 MoireHistoryItem     *item);

/* --- banner -------------------------------------------------------------------------------- */

void
moire_generation_panel_show_message (MoireGenerationPanel *self,
                                     GtkMessageType        type,
                                     const char           *message)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));

  if (message == NULL)
    {
      gtk_revealer_set_reveal_child (self->banner_revealer, FALSE);
      gtk_label_set_text (self->banner_label, "");
      return;
    }
  if (type == GTK_MESSAGE_ERROR)
    {
      gtk_widget_remove_css_class (self->banner, "info");
      gtk_image_set_from_icon_name (self->banner_icon, "dialog-error-symbolic");
      g_message ("%s", message);
    }
  else
    {
      gtk_widget_add_css_class (self->banner, "info");
      gtk_image_set_from_icon_name (self->banner_icon,
                                    type == GTK_MESSAGE_WARNING ? "dialog-warning-symbolic"
                                                                : "dialog-information-symbolic");
    }
  gtk_label_set_text (self->banner_label, message);
  gtk_widget_set_visible (GTK_WIDGET (self->banner_button), FALSE);
  gtk_revealer_set_reveal_child (self->banner_revealer, TRUE);
}

const char *
moire_generation_panel_get_message (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  if (!gtk_revealer_get_reveal_child (self->banner_revealer))
    return NULL;
  return gtk_label_get_text (self->banner_label);
}

/* An error with a button that runs a panel action ("Choose Model…"). */
static void
show_error_with_action (MoireGenerationPanel *self,
                        const char           *message,
                        const char           *button_label,
                        const char           *action)
{
  moire_generation_panel_show_message (self, GTK_MESSAGE_ERROR, message);
  gtk_button_set_label (self->banner_button, button_label);
  gtk_actionable_set_action_name (GTK_ACTIONABLE (self->banner_button), action);
  gtk_widget_set_visible (GTK_WIDGET (self->banner_button), TRUE);
}

void
moire_generation_panel_show_error_with_action (MoireGenerationPanel *self,
                                               const char           *message,
                                               const char           *button_label,
                                               const char           *action)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  show_error_with_action (self, message, button_label, action);
}

/* --- model --------------------------------------------------------------------------------- */

static void
add_recent_model (MoireGenerationPanel *self,
                  const char           *path)
{
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();
  g_auto(GStrv) recent = NULL;
  guint n = g_list_model_get_n_items (G_LIST_MODEL (self->recent_models));

  g_strv_builder_add (builder, path);
  for (guint i = 0; i < n && i < 9; i++)
    {
      const char *other = gtk_string_list_get_string (self->recent_models, i);

      if (g_strcmp0 (other, path) != 0)
        g_strv_builder_add (builder, other);
    }
  recent = g_strv_builder_end (builder);

  self->updating_model_dropdown = TRUE;
  gtk_string_list_splice (self->recent_models, 0, n, (const char * const *) recent);
  gtk_drop_down_set_selected (self->model_dropdown, 0);
  self->updating_model_dropdown = FALSE;

  if (self->gsettings != NULL)
    g_settings_set_strv (self->gsettings, "recent-models", (const char * const *) recent);
}

static void
update_completion (MoireGenerationPanel *self)
{
  const char * const *words = NULL;
  gboolean class_conditional = FALSE;

  gtk_list_store_clear (self->suggestions);
  if (self->model != NULL)
    {
      words = moire_model_handle_get_prompt_suggestions (self->model);
      class_conditional = moire_model_handle_is_class_conditional (self->model);
    }
  for (guint i = 0; words != NULL && words[i] != NULL; i++)
    gtk_list_store_insert_with_values (self->suggestions, NULL, -1, 0, words[i], -1);

  if (class_conditional && words != NULL && words[0] != NULL)
    {
      g_autofree char *hint = g_strdup_printf (_("A class name, e.g. “%s”"), words[0]);

      gtk_entry_set_placeholder_text (self->prompt_entry, hint);
    }
  else if (self->model != NULL && moire_model_handle_has_vocabulary (self->model) &&
           words != NULL && words[0] != NULL)
    {
      /* An example word: the last one without a space (the style phrases come first). */
      const char *example = words[0];
      g_autofree char *hint = NULL;

      for (guint i = 0; words[i] != NULL; i++)
        if (strchr (words[i], ' ') == NULL)
          {
            example = words[i];
            if (g_str_equal (example, "apple"))
              break;
          }
      /* Translators: placeholder of the prompt for text models; %s is a word it knows */
      hint = g_strdup_printf (_("Words this model knows, e.g. “%s” — type to see them"), example);

      gtk_entry_set_placeholder_text (self->prompt_entry, hint);
    }
  else
    gtk_entry_set_placeholder_text (self->prompt_entry, _("Describe the image"));
  update_prompt_marks (self);
}

static void
model_loaded (GObject      *source,
              GAsyncResult *result,
              gpointer      user_data)
{
  g_autoptr(MoireGenerationPanel) self = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(MoireModelHandle) handle = moire_model_handle_load_finish (result, &error);
  g_autofree char *description = NULL;

  if (handle == NULL && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  g_clear_object (&self->model_cancellable);

  if (handle == NULL)
    {
      g_autofree char *message =
        g_strdup_printf (_("Could not load the model: %s"), error->message);

      gtk_label_set_text (self->model_info, _("No model loaded"));
      show_error_with_action (self, message, _("Choose Model…"), "panel.choose-model");
      /* Still no model, but hosts waiting for one learn that the load is over. */
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MODEL]);
    }
  else
    {
      g_set_object (&self->model, handle);
      if (self->apply_defaults_on_load)
        moire_gen_settings_apply_model_defaults (self->settings, moire_model_handle_get_model (handle));
      description = moire_model_handle_describe (handle);
      gtk_label_set_text (self->model_info, description);
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->model_info), moire_model_handle_get_path (handle));
      add_recent_model (self, moire_model_handle_get_path (handle));
      /* Refresh the "Default (…)" texts of the spin buttons. */
      gtk_spin_button_update (self->steps_spin);
      gtk_spin_button_update (self->cfg_spin);
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MODEL]);
    }
  self->apply_defaults_on_load = FALSE;
  update_completion (self);
  update_vae_row (self);
  update_actions (self);
}

static void
on_model_path_changed (MoireGenerationPanel *self)
{
  const char *path = moire_gen_settings_get_model_path (self->settings);

  if (self->model_cancellable != NULL)
    {
      g_cancellable_cancel (self->model_cancellable);
      g_clear_object (&self->model_cancellable);
    }
  if (self->model != NULL && g_strcmp0 (moire_model_handle_get_path (self->model), path) == 0)
    return;
  g_clear_object (&self->model);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MODEL]);
  update_completion (self);
  update_actions (self);
  if (path == NULL || *path == '\0')
    {
      gtk_label_set_text (self->model_info, _("No model loaded"));
      return;
    }
  gtk_label_set_text (self->model_info, _("Loading…"));
  self->model_cancellable = g_cancellable_new ();
  moire_model_handle_load_async (path, self->model_cancellable, model_loaded, g_object_ref (self));
}

void
moire_generation_panel_set_model_path (MoireGenerationPanel *self,
                                       const char           *path,
                                       gboolean              apply_defaults)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));

  self->apply_defaults_on_load = apply_defaults;
  if (g_strcmp0 (path, moire_gen_settings_get_model_path (self->settings)) == 0 && self->model == NULL &&
      self->model_cancellable == NULL)
    on_model_path_changed (self); /* retry a failed load */
  else
    moire_gen_settings_set_model_path (self->settings, path);
}

static void
on_model_dropdown_selected (MoireGenerationPanel *self)
{
  guint selected = gtk_drop_down_get_selected (self->model_dropdown);
  const char *path;

  if (self->updating_model_dropdown || selected == GTK_INVALID_LIST_POSITION)
    return;
  path = gtk_string_list_get_string (self->recent_models, selected);
  if (path != NULL && g_strcmp0 (path, moire_gen_settings_get_model_path (self->settings)) != 0)
    moire_generation_panel_set_model_path (self, path, TRUE);
}

static char *
model_display_name (GtkStringObject *item)
{
  const char *path = item != NULL ? gtk_string_object_get_string (item) : NULL;

  return path != NULL ? g_path_get_basename (path) : g_strdup ("");
}

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
  update_actions (self);
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

/* --- generation ---------------------------------------------------------------------------- */

static void
set_busy (MoireGenerationPanel *self,
          gboolean              busy)
{
  (void) busy; /* Generate stays: while one runs it queues the next; Stop follows the action */
  update_actions (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_BUSY]);
}

static void
on_job_progress (MoireJob             *job,
                 int                   image_index,
                 int                   image_count,
                 int                   step,
                 int                   step_count,
                 double                remaining_s,
                 MoireGenerationPanel *self)
{
  g_autoptr(GString) text = g_string_new (NULL);
  double total = (double) MAX (image_count, 1) * MAX (step_count, 1);

  if (moire_job_get_stream (job))
    {
      /* One "step" per model evaluation of the current phase, for all chains at once. The
       * label keeps the last round's summary once there is one. */
      gtk_progress_bar_set_fraction (self->progress_bar,
                                     CLAMP ((double) step / MAX (step_count, 1), 0, 1));
      if (self->stream_round == 0)
        {
          /* Translators: a DMCMC stream before its first image, "Burn-in: 12/38 model evaluations" */
          g_autofree char *burn_in = g_strdup_printf (_("Burn-in: %d/%d model evaluations"),
                                                      step, step_count);

          gtk_label_set_text (self->progress_label, burn_in);
        }
      return;
    }

  gtk_progress_bar_set_fraction (self->progress_bar,
                                 CLAMP (((double) image_index * step_count + step) / total, 0, 1));
  /* Translators: progress, "Step 12/50" */
  g_string_printf (text, _("Step %d/%d"), step, step_count);
  if (image_count > 1)
    /* Translators: progress, appended to "Step 12/50": " · image 2/4" */
    g_string_append_printf (text, _(" · image %d/%d"), image_index + 1, image_count);
  if (remaining_s >= 0)
    {
      g_autofree char *left = moire_gui_format_duration (remaining_s);

      /* Translators: progress, appended: " · 3 s left" */
      g_string_append_printf (text, _(" · %s left"), left);
    }
  gtk_label_set_text (self->progress_label, text->str);
}

static void
on_job_preview (MoireJob             *job,
                GdkTexture           *texture,
                int                   image_index,
                int                   step,
                int                   step_count,
                MoireGenerationPanel *self)
{
  g_autofree char *badge = NULL;

  gtk_picture_set_paintable (self->preview_picture, GDK_PAINTABLE (texture));
  gtk_stack_set_visible_child_name (self->preview_stack, "image");
  /* Translators: badge on the live preview, "Preview · step 12/50" */
  badge = g_strdup_printf (_("Preview · step %d/%d"), step, step_count);
  gtk_label_set_text (self->preview_badge, badge);
  gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), TRUE);
  g_signal_emit (self, signals[SIGNAL_PREVIEW_FRAME], 0, texture, step, step_count);
}

static char *
stream_summary (MoireGenerationPanel *self)
{
  /* Translators: status of a DMCMC stream, "variation 3 · 10 NFE per image · burn-in 38 NFE
     once"; NFE = model evaluations */
  return g_strdup_printf (_("variation %d · %d NFE per image · burn-in %d NFE once"),
                          self->stream_round, self->stream_nfe, self->stream_one_off);
}

static void
on_job_round (MoireJob             *job,
              GPtrArray            *items,
              int                   round,
              int                   nfe_per_image,
              int                   nfe_one_off,
              MoireGenerationPanel *self)
{
  g_autofree char *summary = NULL;

  self->stream_round = round;
  self->stream_nfe = nfe_per_image;
  self->stream_one_off = nfe_one_off;
  summary = stream_summary (self);
  gtk_label_set_text (self->progress_label, summary);
  gtk_progress_bar_set_fraction (self->progress_bar, 0);

  /* Into the history as they arrive (a round keeps its chain order); the newest shows. */
  for (guint i = items->len; i > 0; i--)
    moire_history_prepend (self->history, g_ptr_array_index (items, i - 1));
  if (items->len > 0)
    show_item (self, g_ptr_array_index (items, 0));
  for (guint i = 0; i < items->len; i++)
    g_signal_emit (self, signals[SIGNAL_RESULT_READY], 0, g_ptr_array_index (items, i));
}

static void
on_job_paused (MoireJob             *job,
               int                   step,
               MoireGenerationPanel *self)
{
  g_signal_emit (self, signals[SIGNAL_PAUSED], 0, step);
}

static void
job_done (GObject      *source,
          GAsyncResult *result,
          gpointer      user_data)
{
  g_autoptr(MoireGenerationPanel) self = user_data;
  MoireJob *job = MOIRE_JOB (source);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) items = moire_job_run_finish (job, result, &error);
  g_auto(GStrv) warnings = moire_job_dup_warnings (job);
  double elapsed = (g_get_monotonic_time () - self->job_started_us) / 1e6;
  guint posted = 0, shown = 0, dropped = 0;

  g_signal_handlers_disconnect_by_data (job, self);
  moire_job_get_frame_stats (job, &posted, &shown, &dropped);
  g_debug ("job done: %u preview frames posted, %u shown, %u replaced unseen", posted, shown, dropped);
  if (self->job == job)
    g_clear_object (&self->job);

  if (items == NULL)
    {
      gtk_progress_bar_set_fraction (self->progress_bar, 0);
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          gtk_label_set_text (self->progress_label, _("Cancelled"));
          gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), FALSE);
          if (self->current_item != NULL)
            show_item (self, self->current_item);
        }
      else
        {
          g_autofree char *message = g_strdup_printf (_("Generation failed: %s"), error->message);

          gtk_label_set_text (self->progress_label, _("Failed"));
          if (!moire_size_fix_offer (self, job, message)) /* "Use W × H" when too large */
            moire_generation_panel_show_message (self, GTK_MESSAGE_ERROR, message);
        }
      set_busy (self, FALSE);
      g_signal_emit (self, signals[SIGNAL_FINISHED], 0, FALSE);
      start_next_queued (self);
      return;
    }

  if (moire_job_get_stream (job))
    {
      g_autofree char *summary = stream_summary (self);
      /* Translators: after a DMCMC stream stopped; %s is "variation 3 · 10 NFE per image · …" */
      g_autofree char *text = g_strdup_printf (_("Stopped at %s"), summary);

      gtk_progress_bar_set_fraction (self->progress_bar, 1.0);
      gtk_label_set_text (self->progress_label, text);
    }
  else
  {
    g_autofree char *took = moire_gui_format_duration (elapsed);
    /* Translators: progress after a generation, "Done in 3 s" */
    g_autofree char *text = g_strdup_printf (_("Done in %s"), took);

    gtk_progress_bar_set_fraction (self->progress_bar, 1.0);
    gtk_label_set_text (self->progress_label, text);
  }
  /* Newest first in the strip, but a batch keeps its order: image 0 leftmost. */
  for (guint i = items->len; i > 0; i--)
    moire_history_prepend (self->history, g_ptr_array_index (items, i - 1));
  if (items->len > 0)
    {
      show_item (self, g_ptr_array_index (items, 0));
    }
  for (guint i = 0; i < items->len; i++)
    g_signal_emit (self, signals[SIGNAL_RESULT_READY], 0, g_ptr_array_index (items, i));

  /* Engine notices (e.g. "approximate colour preview of the latents"): once per session. */
  for (guint i = 0; warnings != NULL && warnings[i] != NULL; i++)
    {
      /* The engine's "N word(s) of the prompts are not in the vocabulary" (English, after
       * the fact) is what the prompt field already says while typing, translated and with
       * the words named. */
      if (strstr (warnings[i], "not in the vocabulary") != NULL &&
          self->model != NULL && moire_model_handle_has_vocabulary (self->model))
        continue;
      if (g_hash_table_add (self->warnings_shown, g_strdup (warnings[i])))
        moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, warnings[i]);
    }

  set_busy (self, FALSE);
  g_signal_emit (self, signals[SIGNAL_FINISHED], 0, TRUE);
  start_next_queued (self);
}

static void
update_queue_label (MoireGenerationPanel *self)
{
  guint waiting = self->queue.length;

  gtk_widget_set_visible (self->queue_box, waiting > 0);
  if (waiting > 0)
    {
      /* Translators: under Generate while generations wait their turn */
      g_autofree char *text = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "%u more queued",
                                                            "%u more queued", waiting),
                                               waiting);

      gtk_label_set_text (self->queue_label, text);
    }
  update_actions (self);
}

/* Starts `job` (the panel takes a reference) and shows that it runs. */
static void
start_job (MoireGenerationPanel *self,
           MoireJob             *job)
{
  self->stream_round = 0;
  g_signal_connect (job, "round", G_CALLBACK (on_job_round), self);
  g_signal_connect (job, "progress", G_CALLBACK (on_job_progress), self);
  g_signal_connect (job, "preview", G_CALLBACK (on_job_preview), self);
  g_signal_connect (job, "paused", G_CALLBACK (on_job_paused), self);

  self->job = g_object_ref (job);
  self->job_started_us = g_get_monotonic_time ();
  gtk_progress_bar_set_fraction (self->progress_bar, 0);
  gtk_label_set_text (self->progress_label, _("Starting…"));
  set_busy (self, TRUE);
  moire_job_run_async (job, NULL, job_done, g_object_ref (self));
}

/* After a job ends (done, failed or stopped): the next queued one, if any. */
static void
start_next_queued (MoireGenerationPanel *self)
{
  g_autoptr(MoireJob) next = g_queue_pop_head (&self->queue);

  update_queue_label (self);
  if (next != NULL && self->job == NULL)
    start_job (self, next);
}

void
moire_generation_panel_generate (MoireGenerationPanel *self)
{
  g_autoptr(MoireJob) job = NULL;
  gboolean handled = FALSE;
  guint64 seed;

  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));

  if (self->job != NULL && (!self->can_queue || moire_job_get_stream (self->job)))
    return;
  if (self->model == NULL)
    {
      if (self->model_cancellable != NULL)
        moire_generation_panel_show_message (self, GTK_MESSAGE_INFO,
                                             _("The model is still loading; try again in a moment."));
      else
        show_error_with_action (self, _("No model is loaded. Choose a model file (.safetensors)."),
                                _("Choose Model…"), "panel.choose-model");
      return;
    }

  seed = moire_seed_choose (moire_gen_settings_get_seed_mode (self->settings),
                            moire_gen_settings_get_seed (self->settings),
                            self->has_last_seed, self->last_seed, self->rand);
  /* The seed field shows the seed in use, so a result can be pinned by switching to Fixed. */
  moire_gen_settings_set_seed (self->settings, seed);

  g_signal_emit (self, signals[SIGNAL_GENERATE_REQUESTED], 0, self->settings, seed, &handled);
  if (handled)
    return;

  moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, NULL);
  /* The job copies the settings, init image and mask now: what is queued is what the form
   * showed when Generate was pressed. */
  job = moire_job_new (self->model, self->settings, self->init_image, seed);
  moire_job_set_mask (job, self->mask);
  if (self->model != NULL && moire_model_get_config (moire_model_handle_get_model (self->model))->space == MOIRE_SPACE_LATENT)
    moire_job_set_vae (job, self->vae);
  moire_job_set_preview_interval (job, self->live_preview ? self->preview_interval : 0);
  moire_job_set_pause_at_step (job, self->pause_at_step);
  moire_job_set_stream (job, self->stream && moire_gen_settings_get_dmcmc (self->settings),
                        self->stream_rounds);
  moire_job_set_routing_map (job, self->show_routing);
  self->has_last_seed = TRUE;
  self->last_seed = seed;
  if (self->job != NULL)
    {
      g_queue_push_tail (&self->queue, g_steal_pointer (&job));
      update_queue_label (self);
      return;
    }
  start_job (self, job);
}

void
moire_generation_panel_set_notice (MoireGenerationPanel *self,
                                   const char           *text)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  gtk_label_set_text (self->notice_label, text != NULL ? text : "");
  gtk_widget_set_visible (GTK_WIDGET (self->notice_label), text != NULL && *text != '\0');
}

const char *
moire_generation_panel_get_notice (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return gtk_widget_get_visible (GTK_WIDGET (self->notice_label))
           ? gtk_label_get_text (self->notice_label) : NULL;
}

guint
moire_generation_panel_get_queue_length (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), 0);
  return self->queue.length;
}

void
moire_generation_panel_clear_queue (MoireGenerationPanel *self)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_queue_clear_full (&self->queue, g_object_unref);
  update_queue_label (self);
}

void
moire_generation_panel_set_can_queue (MoireGenerationPanel *self,
                                      gboolean              can_queue)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  self->can_queue = can_queue;
  if (!can_queue)
    moire_generation_panel_clear_queue (self);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->generate_button),
                               can_queue ? _("Generate (Ctrl+Enter); while one runs, adds it to the queue")
                                         : _("Generate (Ctrl+Enter)"));
}

void
moire_generation_panel_cancel (MoireGenerationPanel *self)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  if (self->job == NULL)
    return;
  moire_job_cancel (self->job);
  gtk_label_set_text (self->progress_label, _("Cancelling…"));
}

void
moire_generation_panel_set_pause_at_step (MoireGenerationPanel *self,
                                          int                   step)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  self->pause_at_step = MAX (step, 0);
}

void
moire_generation_panel_set_stream_rounds (MoireGenerationPanel *self,
                                          int                   rounds)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  self->stream_rounds = MAX (rounds, 0);
}

int
moire_generation_panel_get_stream_round (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), 0);
  return self->stream_round;
}

void
moire_generation_panel_resume (MoireGenerationPanel *self)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  if (self->job != NULL)
    moire_job_resume (self->job);
}

/* --- VAE (latent models) -------------------------------------------------------------------- */

static void
update_vae_row (MoireGenerationPanel *self)
{
  gboolean latent = self->model != NULL &&
                    moire_model_get_config (moire_model_handle_get_model (self->model))->space == MOIRE_SPACE_LATENT;
  g_autofree char *text = NULL;

  gtk_widget_set_visible (self->vae_box, latent);
  if (self->vae_cancellable != NULL)
    text = g_strdup (_("VAE: loading…"));
  else if (self->vae != NULL)
    {
      g_autofree char *name = g_path_get_basename (moire_vae_handle_get_path (self->vae));

      /* Translators: the SD-VAE in use, "VAE: sdxl_vae.safetensors" */
      text = g_strdup_printf (_("VAE: %s"), name);
    }
  else
    text = g_strdup (_("VAE: none (approximate colours)"));
  gtk_label_set_text (self->vae_label, text);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "panel.clear-vae", self->vae != NULL);
}

static void
vae_loaded (GObject      *source,
            GAsyncResult *result,
            gpointer      user_data)
{
  g_autoptr(MoireGenerationPanel) self = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(MoireVaeHandle) handle = moire_vae_handle_load_finish (result, &error);

  if (handle == NULL && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  g_clear_object (&self->vae_cancellable);
  if (handle == NULL)
    {
      g_autofree char *message = g_strdup_printf (_("Could not load the VAE: %s"), error->message);

      moire_generation_panel_show_message (self, GTK_MESSAGE_ERROR, message);
    }
  g_set_object (&self->vae, handle);
  update_vae_row (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_VAE_PATH]);
}

void
moire_generation_panel_set_vae_path (MoireGenerationPanel *self,
                                     const char           *path)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));

  if (path == NULL)
    path = "";
  if (g_strcmp0 (path, self->vae_path != NULL ? self->vae_path : "") == 0)
    return;
  g_free (self->vae_path);
  self->vae_path = g_strdup (path);
  if (self->vae_cancellable != NULL)
    g_cancellable_cancel (self->vae_cancellable);
  g_clear_object (&self->vae_cancellable);
  g_clear_object (&self->vae);
  if (*path != '\0')
    {
      self->vae_cancellable = g_cancellable_new ();
      moire_vae_handle_load_async (path, self->vae_cancellable, vae_loaded, g_object_ref (self));
    }
  update_vae_row (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_VAE_PATH]);
}

MoireVaeHandle *
moire_generation_panel_get_vae (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->vae;
}

/* --- history ------------------------------------------------------------------------------- */

/* The strip highlights the item on show; the newest (position 0, leftmost) is scrolled into
 * view, so a new result never lands out of sight. */
static void
highlight_in_history (MoireGenerationPanel *self,
                      MoireHistoryItem     *item)
{
  GtkSelectionModel *selection = gtk_list_view_get_model (self->history_view);
  GListModel *items = G_LIST_MODEL (self->history);
  guint n = g_list_model_get_n_items (items);

  for (guint i = 0; i < n; i++)
    {
      g_autoptr(MoireHistoryItem) candidate = g_list_model_get_item (items, i);

      if (candidate != item)
        continue;
      gtk_selection_model_select_item (selection, i, TRUE);
      if (i == 0)
        {
          GtkWidget *scroller = gtk_widget_get_ancestor (GTK_WIDGET (self->history_view),
                                                         GTK_TYPE_SCROLLED_WINDOW);

          if (scroller != NULL)
            gtk_adjustment_set_value (gtk_scrolled_window_get_hadjustment (GTK_SCROLLED_WINDOW (scroller)), 0);
        }
      return;
    }
  gtk_selection_model_unselect_all (selection);
}

static void
show_item (MoireGenerationPanel *self,
           MoireHistoryItem     *item)
{
  g_autofree char *badge = NULL;
  g_autofree char *seed = NULL;
  gboolean routing = self->show_routing && moire_history_item_has_routing (item);

  g_set_object (&self->current_item, item);
  /* The routing map blended over the image: where the experts worked is read on the picture
   * itself, with no back and forth between two images. */
  gtk_picture_set_paintable (self->preview_picture,
                             GDK_PAINTABLE (routing ? moire_history_item_get_routing_texture (item)
                                                    : moire_history_item_get_texture (item)));
  gtk_stack_set_visible_child_name (self->preview_stack, "image");
  if (!self->show_routing)
    gtk_label_set_text (self->routing_legend, "");
  else if (routing)
    gtk_label_set_text (self->routing_legend, moire_history_item_get_routing_legend (item));
  else if (moire_history_item_get_variation (item) > 0)
    gtk_label_set_text (self->routing_legend, _("Streams record no routing map"));
  else
    gtk_label_set_text (self->routing_legend, _("No routing map for this image: generate it with the overlay on"));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->routing_legend),
                               gtk_label_get_text (self->routing_legend));
  seed = g_strdup_printf ("%" G_GUINT64_FORMAT, moire_history_item_get_seed (item));
  if (moire_history_item_get_variation (item) > 0)
    /* Translators: badge on an image of a DMCMC stream, "Variation 3 · seed 1234 · 64×64" */
    badge = g_strdup_printf (_("Variation %d · seed %s · %d×%d"), moire_history_item_get_variation (item),
                             seed, moire_history_item_get_width (item), moire_history_item_get_height (item));
  else
    /* Translators: badge on a finished image, "Seed 1234 · 64×64" */
    badge = g_strdup_printf (_("Seed %s · %d×%d"), seed,
                             moire_history_item_get_width (item), moire_history_item_get_height (item));
  gtk_label_set_text (self->preview_badge, badge);
  gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), TRUE);
  gtk_label_set_text (self->result_label, moire_history_item_get_parameters (item));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->result_label), moire_history_item_get_parameters (item));
  highlight_in_history (self, item);
  update_actions (self);
}

MoireHistoryItem *
moire_generation_panel_get_current_item (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->current_item;
}

void
moire_generation_panel_restore_item (MoireGenerationPanel *self,
                                     MoireHistoryItem     *item)
{
  g_autoptr(MoireGenSettings) restored = NULL;

  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_return_if_fail (MOIRE_IS_HISTORY_ITEM (item));

  restored = moire_gen_settings_copy (moire_history_item_get_settings (item));
  /* The batch count is how many to make next, not a property of this image. */
  moire_gen_settings_set_batch_count (restored, moire_gen_settings_get_batch_count (self->settings));
  moire_gen_settings_assign (self->settings, restored);
  show_item (self, item);
  /* "Cancelled" or "Done in 2 s" described the last run, not this older image. */
  if (self->job == NULL)
    {
      gtk_label_set_text (self->progress_label, "");
      gtk_progress_bar_set_fraction (self->progress_bar, 0);
    }
}

static void
on_history_activate (GtkListView          *view,
                     guint                 position,
                     MoireGenerationPanel *self)
{
  g_autoptr(MoireHistoryItem) item = g_list_model_get_item (G_LIST_MODEL (self->history), position);

  if (item != NULL)
    moire_generation_panel_restore_item (self, item);
}

static void
on_history_changed (MoireGenerationPanel *self)
{
  if (g_list_model_get_n_items (G_LIST_MODEL (self->history)) == 0 && self->current_item != NULL)
    {
      g_clear_object (&self->current_item);
      gtk_picture_set_paintable (self->preview_picture, NULL);
      gtk_stack_set_visible_child_name (self->preview_stack, "empty");
      gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), FALSE);
      gtk_label_set_text (self->result_label, "");
    }
  update_actions (self);
}

static void
setup_history_row (GtkSignalListItemFactory *factory,
                   GtkListItem              *list_item,
                   gpointer                  user_data)
{
  GtkWidget *picture = gtk_picture_new ();

  gtk_picture_set_can_shrink (GTK_PICTURE (picture), TRUE);
  gtk_picture_set_content_fit (GTK_PICTURE (picture), GTK_CONTENT_FIT_COVER);
  gtk_widget_set_size_request (picture, THUMBNAIL_SIZE, THUMBNAIL_SIZE);
  gtk_widget_add_css_class (picture, "moire-thumbnail");
  gtk_widget_set_overflow (picture, GTK_OVERFLOW_HIDDEN);
  gtk_list_item_set_child (list_item, picture);
}

static void
bind_history_row (GtkSignalListItemFactory *factory,
                  GtkListItem              *list_item,
                  gpointer                  user_data)
{
  MoireHistoryItem *item = gtk_list_item_get_item (list_item);
  GtkWidget *picture = gtk_list_item_get_child (list_item);

  gtk_picture_set_paintable (GTK_PICTURE (picture), GDK_PAINTABLE (moire_history_item_get_texture (item)));
  gtk_widget_set_tooltip_text (picture, moire_history_item_get_parameters (item));
}

/* --- restore from a PNG -------------------------------------------------------------------- */

static char *
find_recent_model (MoireGenerationPanel *self,
                   const char           *model_name)
{
  guint n = g_list_model_get_n_items (G_LIST_MODEL (self->recent_models));

  for (guint i = 0; model_name != NULL && i < n; i++)
    {
      const char *path = gtk_string_list_get_string (self->recent_models, i);
      g_autofree char *base = g_path_get_basename (path);
      char *dot = strrchr (base, '.');

      if (dot != NULL)
        *dot = '\0';
      if (g_strcmp0 (base, model_name) == 0)
        return g_strdup (path);
    }
  return NULL;
}

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
  model_path = find_recent_model (self, model_name);
  if (model_path != NULL)
    moire_generation_panel_set_model_path (self, model_path, FALSE);

  item = moire_history_item_new (self->settings, image, text, json);
  moire_history_prepend (self->history, item);
  show_item (self, item);

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

/* --- actions ------------------------------------------------------------------------------- */

static void
update_actions (MoireGenerationPanel *self)
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

static void
action_generate (GtkWidget  *widget,
                 const char *action_name,
                 GVariant   *parameter)
{
  moire_generation_panel_generate (MOIRE_GENERATION_PANEL (widget));
}

static void
action_cancel (GtkWidget  *widget,
               const char *action_name,
               GVariant   *parameter)
{
  moire_generation_panel_cancel (MOIRE_GENERATION_PANEL (widget));
}

static void
action_choose_model (GtkWidget  *widget,
                     const char *action_name,
                     GVariant   *parameter)
{
  static const char * const patterns[] = { "*.safetensors", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Open Model"), GTK_FILE_CHOOSER_ACTION_OPEN,
                    _("Models (.safetensors)"), patterns, NULL, model_file_chosen);
}

static void
action_choose_init_image (GtkWidget  *widget,
                          const char *action_name,
                          GVariant   *parameter)
{
  static const char * const patterns[] = { "*.png", "*.PNG", "*.jpg", "*.jpeg", "*.JPG", "*.tif", "*.tiff", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Choose Init Image"), GTK_FILE_CHOOSER_ACTION_OPEN,
                    _("Images"), patterns, NULL, init_file_chosen);
}

static void
action_clear_init_image (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter)
{
  moire_generation_panel_set_init_image (MOIRE_GENERATION_PANEL (widget), NULL, NULL);
}

static void
action_open_image (GtkWidget  *widget,
                   const char *action_name,
                   GVariant   *parameter)
{
  static const char * const patterns[] = { "*.png", "*.PNG", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Open Image and Restore Its Settings"),
                    GTK_FILE_CHOOSER_ACTION_OPEN, _("PNG images"), patterns, NULL,
                    image_to_restore_chosen);
}

static void
action_save_image (GtkWidget  *widget,
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

static void
action_choose_vae (GtkWidget  *widget,
                   const char *action_name,
                   GVariant   *parameter)
{
  static const char * const patterns[] = { "*.safetensors", "*.ckpt", "*.pt", NULL };

  run_file_chooser (MOIRE_GENERATION_PANEL (widget), _("Choose a VAE"),
                    GTK_FILE_CHOOSER_ACTION_OPEN, _("VAE files"), patterns, NULL, vae_file_chosen);
}

static void
action_clear_vae (GtkWidget  *widget,
                  const char *action_name,
                  GVariant   *parameter)
{
  moire_generation_panel_set_vae_path (MOIRE_GENERATION_PANEL (widget), "");
}

static void
action_clear_queue (GtkWidget  *widget,
                    const char *action_name,
                    GVariant   *parameter)
{
  moire_generation_panel_clear_queue (MOIRE_GENERATION_PANEL (widget));
}

static void
action_clear_history (GtkWidget  *widget,
                      const char *action_name,
                      GVariant   *parameter)
{
  moire_history_clear (MOIRE_GENERATION_PANEL (widget)->history);
}

static void
action_dismiss_banner (GtkWidget  *widget,
                       const char *action_name,
                       GVariant   *parameter)
{
  moire_generation_panel_show_message (MOIRE_GENERATION_PANEL (widget), GTK_MESSAGE_INFO, NULL);
}

/* --- bindings between settings and widgets ------------------------------------------------- */

/* A dropdown that picks one of a fixed list of names (sampler, schedule, DMCMC integrator) is
 * bound to the settings' string through that list's two look-ups. */
typedef struct
{
  guint       (*index_of) (const char *name);
  const char *(*name_at)  (guint index);
} NameList;

static const NameList sampler_choice    = { moire_gen_settings_sampler_index,
                                            moire_gen_settings_sampler_at };
static const NameList schedule_choice   = { moire_gen_settings_schedule_index,
                                            moire_gen_settings_schedule_at };
static const NameList integrator_choice = { moire_gen_settings_dmcmc_integrator_index,
                                            moire_gen_settings_dmcmc_integrator_at };

static gboolean
name_to_index (GBinding     *binding,
               const GValue *from,
               GValue       *to,
               gpointer      user_data)
{
  const NameList *names = user_data;

  g_value_set_uint (to, names->index_of (g_value_get_string (from)));
  return TRUE;
}

static gboolean
index_to_name (GBinding     *binding,
               const GValue *from,
               GValue       *to,
               gpointer      user_data)
{
  const NameList *names = user_data;
  guint index = g_value_get_uint (from);

  if (index == GTK_INVALID_LIST_POSITION)
    return FALSE;
  g_value_set_string (to, names->name_at (index));
  return TRUE;
}

static gboolean
enum_to_index (GBinding     *binding,
               const GValue *from,
               GValue       *to,
               gpointer      user_data)
{
  g_value_set_uint (to, (guint) g_value_get_enum (from));
  return TRUE;
}

static gboolean
index_to_enum (GBinding     *binding,
               const GValue *from,
               GValue       *to,
               gpointer      user_data)
{
  guint index = g_value_get_uint (from);

  if (index == GTK_INVALID_LIST_POSITION)
    return FALSE;
  g_value_set_enum (to, (int) index);
  return TRUE;
}

/* The DMCMC switch is a view of `sampler == "dmcmc"`: switching it off brings back the
 * sampler chosen before. */
static void
sync_dmcmc_widgets (MoireGenerationPanel *self)
{
  gboolean dmcmc = moire_gen_settings_get_dmcmc (self->settings);
  g_autofree char *label = NULL;

  self->syncing_dmcmc = TRUE;
  gtk_switch_set_active (self->dmcmc_switch, dmcmc);
  self->syncing_dmcmc = FALSE;
  gtk_widget_set_sensitive (self->stream_box, dmcmc);
  gtk_widget_set_sensitive (GTK_WIDGET (self->dmcmc_expander), dmcmc);
  /* DMCMC's steps are its integrator's (in the expander). */
  gtk_widget_set_sensitive (GTK_WIDGET (self->steps_spin), !dmcmc);
  /* Translators: the DMCMC switch; %d is the model evaluations per image (10 by default) */
  label = g_strdup_printf (_("_DMCMC — about %d model evaluations per image"),
                           moire_gen_settings_get_dmcmc_nfe (self->settings));
  gtk_label_set_text_with_mnemonic (self->dmcmc_label, label);
}

static void
on_sampler_changed (MoireGenerationPanel *self)
{
  if (!moire_gen_settings_get_dmcmc (self->settings))
    {
      g_free (self->sampler_before_dmcmc);
      self->sampler_before_dmcmc = g_strdup (moire_gen_settings_get_sampler (self->settings));
    }
  sync_dmcmc_widgets (self);
}

static void
on_dmcmc_switch_active (MoireGenerationPanel *self)
{
  gboolean active = gtk_switch_get_active (self->dmcmc_switch);

  if (self->syncing_dmcmc || active == moire_gen_settings_get_dmcmc (self->settings))
    return;
  if (active)
    moire_gen_settings_set_sampler (self->settings, moire_sampler_name (MOIRE_SAMPLER_DMCMC));
  else if (self->sampler_before_dmcmc == NULL ||
           !moire_gen_settings_set_sampler (self->settings, self->sampler_before_dmcmc))
    moire_gen_settings_set_sampler (self->settings, "default");
}

static void
on_show_routing_changed (MoireGenerationPanel *self)
{
  /* Re-show the result with or without its map; a live preview is left alone. */
  if (self->current_item != NULL && (self->job == NULL || moire_job_get_stream (self->job)))
    show_item (self, self->current_item);
  else if (!self->show_routing)
    gtk_label_set_text (self->routing_legend, "");
}

/* Spin buttons show "Default" (with the model's value when known) for 0. */
static gboolean
on_spin_output (GtkSpinButton        *spin,
                MoireGenerationPanel *self)
{
  double value = gtk_adjustment_get_value (gtk_spin_button_get_adjustment (spin));
  g_autofree char *text = NULL;

  if (value != 0)
    return FALSE;
  if (self->model != NULL && (spin == self->steps_spin || spin == self->cfg_spin))
    {
      moire_sampler sampler;
      int steps;
      float cfg;

      moire_model_get_defaults (moire_model_handle_get_model (self->model), &sampler, &steps, &cfg);
      if (spin == self->steps_spin)
        /* Translators: a spin button showing the model's default, "Default (250)" */
        text = g_strdup_printf (_("Default (%d)"), steps);
      else
        text = g_strdup_printf (_("Default (%g)"), cfg);
    }
  else
    text = g_strdup (_("Default"));
  if (g_strcmp0 (gtk_editable_get_text (GTK_EDITABLE (spin)), text) != 0)
    gtk_editable_set_text (GTK_EDITABLE (spin), text);
  return TRUE;
}

static int
on_spin_input (GtkSpinButton        *spin,
               double               *new_value,
               MoireGenerationPanel *self)
{
  const char *text = gtk_editable_get_text (GTK_EDITABLE (spin));
  char *end = NULL;
  double value = g_strtod (text, &end);

  if (end != text)
    {
      *new_value = value;
      return TRUE;
    }
  /* "Default", "Default (250)" or anything else that is not a number. */
  *new_value = 0;
  return TRUE;
}

static void
bind_spin (MoireGenerationPanel *self,
           GtkSpinButton        *spin,
           const char           *property,
           gboolean              has_default)
{
  g_object_bind_property (self->settings, property, spin, "value",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  if (has_default)
    {
      g_signal_connect (spin, "output", G_CALLBACK (on_spin_output), self);
      g_signal_connect (spin, "input", G_CALLBACK (on_spin_input), self);
    }
}

/* The word being typed at the end of `text` (bytes after the last one that is not part of
 * a word, as the tokenizer splits): "red apple, goo" → "goo". */
static const char *
trailing_word (const char *text)
{
  const char *start = text + strlen (text);

  while (start > text)
    {
      unsigned char c = (unsigned char) start[-1];

      if (!(g_ascii_isalnum (c) || c >= 0x80))
        break;
      start--;
    }
  return start;
}

/* Class names (DiT-MoE): a suggestion matches anywhere in it ("fish" finds "goldfish").
 * Text models: the word being typed matches the start of a vocabulary word or phrase. */
static gboolean
completion_match (GtkEntryCompletion *completion,
                  const char         *key,
                  GtkTreeIter        *iter,
                  gpointer            user_data)
{
  MoireGenerationPanel *self = user_data;
  GtkTreeModel *model = gtk_entry_completion_get_model (completion);
  g_autofree char *word = NULL;
  g_autofree char *folded = NULL;
  g_autofree char *folded_key = NULL;
  gboolean by_word = self->model != NULL && moire_model_handle_has_vocabulary (self->model);

  gtk_tree_model_get (model, iter, 0, &word, -1);
  if (word == NULL || key == NULL || *key == '\0')
    return FALSE;
  if (by_word)
    key = trailing_word (key);
  if (*key == '\0')
    return FALSE;
  folded = g_utf8_casefold (word, -1);
  folded_key = g_utf8_casefold (key, -1);
  if (by_word)
    return g_str_has_prefix (folded, folded_key) && !g_str_equal (folded, folded_key);
  return strstr (folded, folded_key) != NULL;
}

/* Text models: the chosen word replaces only the word being typed. */
static gboolean
on_completion_match_selected (GtkEntryCompletion   *completion,
                              GtkTreeModel         *model,
                              GtkTreeIter          *iter,
                              MoireGenerationPanel *self)
{
  GtkEntry *entry = GTK_ENTRY (gtk_entry_completion_get_entry (completion));
  g_autofree char *chosen = NULL;
  g_autofree char *text = NULL;
  const char *current;

  if (self->model == NULL || !moire_model_handle_has_vocabulary (self->model))
    return FALSE; /* class names: the whole field, GTK's default */
  gtk_tree_model_get (model, iter, 0, &chosen, -1);
  current = gtk_editable_get_text (GTK_EDITABLE (entry));
  text = g_strdup_printf ("%.*s%s", (int) (trailing_word (current) - current), current, chosen);
  gtk_editable_set_text (GTK_EDITABLE (entry), text);
  gtk_editable_set_position (GTK_EDITABLE (entry), -1);
  return TRUE;
}

/* Text models: words the model does not know are underlined while typing, and the prompt's
 * are named under it (translated), instead of an English warning after a whole generation.
 * The word still being typed at the end is left alone while it can become a known word. */
static guint
mark_unknown_words (MoireGenerationPanel *self,
                    GtkEntry             *entry,
                    GString              *unknown)
{
  const char *text = gtk_editable_get_text (GTK_EDITABLE (entry));
  const moire_model *model = self->model != NULL ? moire_model_handle_get_model (self->model) : NULL;
  PangoAttrList *attributes = pango_attr_list_new ();
  int n = model != NULL ? moire_model_check_prompt (model, text, NULL, 0) : 0;
  g_autofree moire_prompt_word *words = g_new0 (moire_prompt_word, MAX (n, 1));
  const char * const *suggestions = self->model != NULL
                                      ? moire_model_handle_get_prompt_suggestions (self->model) : NULL;
  guint count = 0;

  if (n > 0)
    moire_model_check_prompt (model, text, words, n);
  for (int i = 0; i < n; i++)
    {
      const moire_prompt_word *w = &words[i];
      PangoAttribute *underline;

      if (w->known)
        continue;
      if (w->start + w->length == strlen (text) && suggestions != NULL)
        {
          g_autofree char *typed = g_ascii_strdown (text + w->start, w->length);
          gboolean could_become_known = FALSE;

          for (guint k = 0; suggestions[k] != NULL && !could_become_known; k++)
            could_become_known = g_str_has_prefix (suggestions[k], typed);
          if (could_become_known)
            continue;
        }
      underline = pango_attr_underline_new (PANGO_UNDERLINE_ERROR);
      underline->start_index = (guint) w->start;
      underline->end_index = (guint) (w->start + w->length);
      pango_attr_list_insert (attributes, underline);
      if (unknown != NULL)
        {
          if (unknown->len > 0)
            /* Translators: between the unknown words of a prompt */
            g_string_append (unknown, _(", "));
          g_string_append_printf (unknown, "“%.*s”", (int) w->length, text + w->start);
        }
      count++;
    }
  gtk_entry_set_attributes (entry, attributes);
  pango_attr_list_unref (attributes);
  return count;
}

static void
update_prompt_marks (MoireGenerationPanel *self)
{
  g_autoptr(GString) unknown = g_string_new (NULL);
  guint count = mark_unknown_words (self, self->prompt_entry, unknown);

  mark_unknown_words (self, self->negative_entry, NULL);
  gtk_widget_set_visible (GTK_WIDGET (self->prompt_hint), count > 0);
  if (count > 0)
    {
      /* Translators: under the prompt; %s lists the words, "“zebra”, “sofa”" */
      g_autofree char *hint = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                                            "Not known to this model, ignored: %s",
                                                            "Not known to this model, ignored: %s",
                                                            count),
                                               unknown->str);

      gtk_label_set_text (self->prompt_hint, hint);
    }
}

guint
moire_generation_panel_get_unknown_word_count (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), 0);
  return mark_unknown_words (self, self->prompt_entry, NULL);
}

static GtkEntryCompletion *
attach_completion (MoireGenerationPanel *self,
                   GtkEntry             *entry)
{
  GtkEntryCompletion *completion = gtk_entry_completion_new ();

  gtk_entry_completion_set_model (completion, GTK_TREE_MODEL (self->suggestions));
  gtk_entry_completion_set_text_column (completion, 0);
  gtk_entry_completion_set_minimum_key_length (completion, 1);
  gtk_entry_completion_set_match_func (completion, completion_match, self, NULL);
  g_signal_connect (completion, "match-selected", G_CALLBACK (on_completion_match_selected), self);
  gtk_entry_completion_set_popup_single_match (completion, FALSE);
  gtk_entry_set_completion (entry, completion);
  return completion;
}

void
moire_generation_panel_bind_gsettings (MoireGenerationPanel *self,
                                       GSettings            *settings)
{
  g_auto(GStrv) recent = NULL;

  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_return_if_fail (G_IS_SETTINGS (settings));

  g_set_object (&self->gsettings, settings);
  recent = g_settings_get_strv (settings, "recent-models");
  self->updating_model_dropdown = TRUE;
  gtk_string_list_splice (self->recent_models, 0,
                          g_list_model_get_n_items (G_LIST_MODEL (self->recent_models)),
                          (const char * const *) recent);
  self->updating_model_dropdown = FALSE;
  g_settings_bind (settings, "live-preview", self, "live-preview", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "preview-interval", self, "preview-interval", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "dmcmc-stream", self, "stream", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "show-routing", self, "show-routing", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "vae-path", self, "vae-path", G_SETTINGS_BIND_DEFAULT);
  moire_gen_settings_bind_gsettings (self->settings, settings);
}

/* --- GObject ------------------------------------------------------------------------------- */

MoireGenSettings *
moire_generation_panel_get_settings (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->settings;
}

MoireHistory *
moire_generation_panel_get_history (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->history;
}

MoireModelHandle *
moire_generation_panel_get_model (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->model;
}

gboolean
moire_generation_panel_get_busy (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), FALSE);
  return self->job != NULL;
}

GtkWidget *
moire_generation_panel_new (void)
{
  return g_object_new (MOIRE_TYPE_GENERATION_PANEL, NULL);
}

static void
moire_generation_panel_root (GtkWidget *widget)
{
  GdkDisplay *display;

  GTK_WIDGET_CLASS (moire_generation_panel_parent_class)->root (widget);

  /* One style provider per display, whoever the host is. */
  display = gtk_widget_get_display (widget);
  if (g_object_get_data (G_OBJECT (display), "moire-panel-css") == NULL)
    {
      GtkCssProvider *provider = gtk_css_provider_new ();

      gtk_css_provider_load_from_data (provider, panel_css, -1);
      gtk_style_context_add_provider_for_display (display, GTK_STYLE_PROVIDER (provider),
                                                  GTK_STYLE_PROVIDER_PRIORITY_APPLICATION);
      g_object_set_data_full (G_OBJECT (display), "moire-panel-css", provider, g_object_unref);
    }
}

static void
moire_generation_panel_dispose (GObject *object)
{
  MoireGenerationPanel *self = MOIRE_GENERATION_PANEL (object);
  GtkWidget *child;

  g_queue_clear_full (&self->queue, g_object_unref);
  if (self->job != NULL)
    {
      g_signal_handlers_disconnect_by_data (self->job, self);
      moire_job_cancel (self->job);
      g_clear_object (&self->job);
    }
  if (self->model_cancellable != NULL)
    g_cancellable_cancel (self->model_cancellable);
  g_clear_object (&self->model_cancellable);
  if (self->vae_cancellable != NULL)
    g_cancellable_cancel (self->vae_cancellable);
  g_clear_object (&self->vae_cancellable);
  g_clear_object (&self->vae);
  g_clear_pointer (&self->vae_path, g_free);
  if (self->prompt_entry != NULL)
    gtk_entry_set_completion (self->prompt_entry, NULL);
  if (self->negative_entry != NULL)
    gtk_entry_set_completion (self->negative_entry, NULL);
  g_clear_object (&self->prompt_completion);
  g_clear_object (&self->negative_completion);
  gtk_widget_dispose_template (GTK_WIDGET (self), MOIRE_TYPE_GENERATION_PANEL);
  /* Template children without an id binding are ours to unparent too. */
  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self))) != NULL)
    gtk_widget_unparent (child);
  g_clear_object (&self->model);
  g_clear_object (&self->current_item);
  g_clear_object (&self->gsettings);
  G_OBJECT_CLASS (moire_generation_panel_parent_class)->dispose (object);
}

static void
moire_generation_panel_finalize (GObject *object)
{
  MoireGenerationPanel *self = MOIRE_GENERATION_PANEL (object);

  g_clear_object (&self->settings);
  g_clear_object (&self->history);
  g_clear_object (&self->recent_models);
  g_clear_object (&self->sampler_labels);
  g_clear_object (&self->suggestions);
  g_clear_pointer (&self->rand, g_rand_free);
  g_clear_pointer (&self->warnings_shown, g_hash_table_unref);
  g_clear_pointer (&self->init_image, moire_image_free);
  g_clear_pointer (&self->mask, moire_image_free);
  g_clear_object (&self->integrator_names);
  g_free (self->sampler_before_dmcmc);
  G_OBJECT_CLASS (moire_generation_panel_parent_class)->finalize (object);
}

static void
moire_generation_panel_get_property (GObject    *object,
                                     guint       prop_id,
                                     GValue     *value,
                                     GParamSpec *pspec)
{
  MoireGenerationPanel *self = MOIRE_GENERATION_PANEL (object);

  switch (prop_id)
    {
    case PROP_SETTINGS: g_value_set_object (value, self->settings); break;
    case PROP_HISTORY: g_value_set_object (value, self->history); break;
    case PROP_MODEL: g_value_set_object (value, self->model); break;
    case PROP_BUSY: g_value_set_boolean (value, self->job != NULL); break;
    case PROP_LIVE_PREVIEW: g_value_set_boolean (value, self->live_preview); break;
    case PROP_PREVIEW_INTERVAL: g_value_set_int (value, self->preview_interval); break;
    case PROP_STREAM: g_value_set_boolean (value, self->stream); break;
    case PROP_SHOW_ROUTING: g_value_set_boolean (value, self->show_routing); break;
    case PROP_VAE_PATH: g_value_set_string (value, self->vae_path != NULL ? self->vae_path : ""); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_generation_panel_set_property (GObject      *object,
                                     guint         prop_id,
                                     const GValue *value,
                                     GParamSpec   *pspec)
{
  MoireGenerationPanel *self = MOIRE_GENERATION_PANEL (object);

  switch (prop_id)
    {
    case PROP_LIVE_PREVIEW:
      if (self->live_preview != g_value_get_boolean (value))
        {
          self->live_preview = g_value_get_boolean (value);
          g_object_notify_by_pspec (object, pspec);
        }
      break;
    case PROP_PREVIEW_INTERVAL:
      if (self->preview_interval != g_value_get_int (value))
        {
          self->preview_interval = g_value_get_int (value);
          g_object_notify_by_pspec (object, pspec);
        }
      break;
    case PROP_STREAM:
      if (self->stream != g_value_get_boolean (value))
        {
          self->stream = g_value_get_boolean (value);
          g_object_notify_by_pspec (object, pspec);
        }
      break;
    case PROP_VAE_PATH:
      moire_generation_panel_set_vae_path (self, g_value_get_string (value));
      break;
    case PROP_SHOW_ROUTING:
      if (self->show_routing != g_value_get_boolean (value))
        {
          self->show_routing = g_value_get_boolean (value);
          on_show_routing_changed (self);
          g_object_notify_by_pspec (object, pspec);
        }
      break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_generation_panel_class_init (MoireGenerationPanelClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  moire_gui_init_i18n ();

  object_class->dispose = moire_generation_panel_dispose;
  object_class->finalize = moire_generation_panel_finalize;
  object_class->get_property = moire_generation_panel_get_property;
  object_class->set_property = moire_generation_panel_set_property;
  widget_class->root = moire_generation_panel_root;

  properties[PROP_SETTINGS] =
    g_param_spec_object ("settings", NULL, NULL, MOIRE_TYPE_GEN_SETTINGS,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  properties[PROP_HISTORY] =
    g_param_spec_object ("history", NULL, NULL, MOIRE_TYPE_HISTORY,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  properties[PROP_MODEL] =
    g_param_spec_object ("model", NULL, NULL, MOIRE_TYPE_MODEL_HANDLE,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  properties[PROP_BUSY] =
    g_param_spec_boolean ("busy", NULL, NULL, FALSE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  properties[PROP_LIVE_PREVIEW] =
    g_param_spec_boolean ("live-preview", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_PREVIEW_INTERVAL] =
    g_param_spec_int ("preview-interval", NULL, NULL, 1, 100, 1,
                      G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  /* With DMCMC on, Generate starts a stream of variations that runs until cancelled. */
  properties[PROP_STREAM] =
    g_param_spec_boolean ("stream", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  /* Jobs record the expert routing; the preview shows it over the result. */
  properties[PROP_SHOW_ROUTING] =
    g_param_spec_boolean ("show-routing", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  /* The SD-VAE file for latent models ("" = none: approximate colours). */
  properties[PROP_VAE_PATH] =
    g_param_spec_string ("vae-path", NULL, NULL, "",
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  /**
   * MoireGenerationPanel::generate-requested:
   * @settings: the settings to generate with
   * @seed: the seed of the first image
   *
   * Returns: %TRUE when a handler takes over the generation.
   */
  signals[SIGNAL_GENERATE_REQUESTED] =
    g_signal_new ("generate-requested", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  g_signal_accumulator_true_handled, NULL, NULL,
                  G_TYPE_BOOLEAN, 2, MOIRE_TYPE_GEN_SETTINGS, G_TYPE_UINT64);
  signals[SIGNAL_PREVIEW_FRAME] =
    g_signal_new ("preview-frame", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 3, GDK_TYPE_TEXTURE, G_TYPE_INT, G_TYPE_INT);
  signals[SIGNAL_RESULT_READY] =
    g_signal_new ("result-ready", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, MOIRE_TYPE_HISTORY_ITEM);
  signals[SIGNAL_FINISHED] =
    g_signal_new ("finished", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_BOOLEAN);
  signals[SIGNAL_PAUSED] =
    g_signal_new ("paused", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_INT);

  gtk_widget_class_set_template_from_resource (widget_class, "/io/github/moire/gui/moire-generation-panel.ui");
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_revealer);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_icon);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_button);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, prompt_entry);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, negative_entry);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, model_dropdown);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, model_info);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, sampler_dropdown);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, schedule_dropdown);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, steps_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, cfg_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, width_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, height_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, batch_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, seed_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, seed_mode_dropdown);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, init_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, strength_box);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, strength_scale);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, live_preview_check);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, extensions_box);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_switch);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, stream_box);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, stream_switch);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_expander);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_eta_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_skip_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_integrator_dropdown);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, dmcmc_steps_spin);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, generate_button);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, cancel_button);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, queue_box);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, vae_box);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, vae_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, prompt_hint);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, notice_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, queue_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, sidebar_scroller);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, preview_stack);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, preview_picture);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, preview_badge);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, progress_bar);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, progress_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, overlay_toggles_box);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, routing_check);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, routing_legend);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, history_view);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, result_label);

  gtk_widget_class_install_action (widget_class, "panel.generate", NULL, action_generate);
  gtk_widget_class_install_action (widget_class, "panel.cancel", NULL, action_cancel);
  gtk_widget_class_install_action (widget_class, "panel.clear-queue", NULL, action_clear_queue);
  gtk_widget_class_install_action (widget_class, "panel.choose-vae", NULL, action_choose_vae);
  gtk_widget_class_install_action (widget_class, "panel.clear-vae", NULL, action_clear_vae);
  gtk_widget_class_install_action (widget_class, "panel.choose-model", NULL, action_choose_model);
  gtk_widget_class_install_action (widget_class, "panel.choose-init-image", NULL, action_choose_init_image);
  gtk_widget_class_install_action (widget_class, "panel.clear-init-image", NULL, action_clear_init_image);
  gtk_widget_class_install_action (widget_class, "panel.open-image", NULL, action_open_image);
  gtk_widget_class_install_action (widget_class, "panel.save-image", NULL, action_save_image);
  gtk_widget_class_install_action (widget_class, "panel.clear-history", NULL, action_clear_history);
  gtk_widget_class_install_action (widget_class, "panel.dismiss-banner", NULL, action_dismiss_banner);
  moire_size_fix_install_action (widget_class);

  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Return, GDK_CONTROL_MASK, "panel.generate", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_KP_Enter, GDK_CONTROL_MASK, "panel.generate", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Escape, 0, "panel.cancel", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_o, GDK_CONTROL_MASK, "panel.open-image", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_s, GDK_CONTROL_MASK, "panel.save-image", NULL);
}

/* The strength as "0,75" in German: the interface language's decimal separator. */
static char *
format_strength (GtkScale *scale,
                 double    value,
                 gpointer  user_data)
{
  return moire_gui_format_decimal (value, gtk_scale_get_digits (scale));
}

/* A spin button or slider under the pointer takes the scroll wheel only once it has the
 * keyboard focus; otherwise the wheel scrolls the form, as the user meant (scrolling past
 * "Guidance" used to turn 3.0 into 5.5). */
static gboolean
on_unfocused_scroll (GtkEventControllerScroll *controller,
                     double                    dx,
                     double                    dy,
                     MoireGenerationPanel     *self)
{
  GtkWidget *widget = gtk_event_controller_get_widget (GTK_EVENT_CONTROLLER (controller));
  GtkAdjustment *vadjustment;
  double step;

  if (gtk_widget_get_state_flags (widget) & GTK_STATE_FLAG_FOCUS_WITHIN)
    return FALSE; /* focused: the widget's own scrolling */
  vadjustment = gtk_scrolled_window_get_vadjustment (self->sidebar_scroller);
  /* GTK's own wheel step for scrolled windows: page_size^(2/3) per notch. */
  step = gtk_event_controller_scroll_get_unit (controller) == GDK_SCROLL_UNIT_WHEEL
           ? pow (gtk_adjustment_get_page_size (vadjustment), 2.0 / 3.0) : 1.0;
  gtk_adjustment_set_value (vadjustment, gtk_adjustment_get_value (vadjustment) + dy * step);
  return TRUE;
}

static void
guard_scroll_wheel (MoireGenerationPanel *self,
                    GtkWidget            *widget)
{
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    guard_scroll_wheel (self, child);
  if (GTK_IS_SPIN_BUTTON (widget) || GTK_IS_SCALE (widget))
    {
      GtkEventController *scroll =
        gtk_event_controller_scroll_new (GTK_EVENT_CONTROLLER_SCROLL_BOTH_AXES);

      gtk_event_controller_set_propagation_phase (scroll, GTK_PHASE_CAPTURE);
      g_signal_connect (scroll, "scroll", G_CALLBACK (on_unfocused_scroll), self);
      gtk_widget_add_controller (widget, scroll);
    }
}

/* Ctrl+Enter generates wherever the focus is — also on a drop-down or inside its open list,
 * which would otherwise take Enter for themselves: a capture-phase shortcut sees the key
 * before any child does. Events do not propagate past a GtkNative, and an open drop-down's
 * list is a popover (a native of its own), so each popover in the panel gets the shortcut
 * too; "panel.generate" still resolves through the popover's parents. */
static GtkEventController *
generate_shortcut_new (void)
{
  GtkEventController *controller = gtk_shortcut_controller_new ();
  static const guint keys[] = { GDK_KEY_Return, GDK_KEY_KP_Enter, GDK_KEY_ISO_Enter };

  gtk_event_controller_set_propagation_phase (controller, GTK_PHASE_CAPTURE);
  for (guint i = 0; i < G_N_ELEMENTS (keys); i++)
    gtk_shortcut_controller_add_shortcut (GTK_SHORTCUT_CONTROLLER (controller),
                                          gtk_shortcut_new (gtk_keyval_trigger_new (keys[i], GDK_CONTROL_MASK),
                                                            gtk_named_action_new ("panel.generate")));
  return controller;
}

static void
add_generate_shortcut_to_popovers (GtkWidget *widget)
{
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    {
      if (GTK_IS_POPOVER (child))
        gtk_widget_add_controller (child, generate_shortcut_new ());
      add_generate_shortcut_to_popovers (child);
    }
}

static void
add_generate_shortcut (MoireGenerationPanel *self)
{
  gtk_widget_add_controller (GTK_WIDGET (self), generate_shortcut_new ());
  add_generate_shortcut_to_popovers (GTK_WIDGET (self));
}

static void
moire_generation_panel_init (MoireGenerationPanel *self)
{
  g_autoptr(GtkListItemFactory) factory = NULL;
  g_autoptr(GtkExpression) model_name = NULL;
  GtkSingleSelection *selection;

  self->settings = moire_gen_settings_new ();
  self->history = moire_history_new (200);
  self->recent_models = gtk_string_list_new (NULL);
  self->suggestions = gtk_list_store_new (1, G_TYPE_STRING);
  self->rand = g_rand_new ();
  self->warnings_shown = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->live_preview = TRUE;
  self->preview_interval = 1;
  self->can_queue = TRUE;
  g_queue_init (&self->queue);

  gtk_widget_init_template (GTK_WIDGET (self));

  /* Sampler and schedule lists come from the engine (labels as in A1111). */
  self->sampler_labels = gtk_string_list_new (NULL);
  for (guint i = 0; i < moire_gen_settings_sampler_count (); i++)
    gtk_string_list_append (self->sampler_labels,
                            i == MOIRE_SAMPLER_DEFAULT ? _("Model default")
                                                       : moire_sampler_label ((moire_sampler) i));
  gtk_drop_down_set_model (self->sampler_dropdown, G_LIST_MODEL (self->sampler_labels));
  {
    g_autoptr(GtkStringList) schedules = gtk_string_list_new (NULL);

    for (guint i = 0; i < moire_gen_settings_schedule_count (); i++)
      gtk_string_list_append (schedules,
                              i == MOIRE_SCHEDULE_DEFAULT ? _("Model default")
                                                          : moire_schedule_label ((moire_schedule) i));
    gtk_drop_down_set_model (self->schedule_dropdown, G_LIST_MODEL (schedules));
  }

  /* Recent models, shown by file name. */
  model_name = gtk_cclosure_expression_new (G_TYPE_STRING, NULL, 0, NULL,
                                            G_CALLBACK (model_display_name), NULL, NULL);
  gtk_drop_down_set_expression (self->model_dropdown, model_name);
  gtk_drop_down_set_model (self->model_dropdown, G_LIST_MODEL (self->recent_models));
  g_signal_connect_swapped (self->model_dropdown, "notify::selected",
                            G_CALLBACK (on_model_dropdown_selected), self);

  /* Settings ↔ widgets */
  g_object_bind_property (self->settings, "prompt", self->prompt_entry, "text",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_object_bind_property (self->settings, "negative-prompt", self->negative_entry, "text",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  bind_spin (self, self->steps_spin, "steps", TRUE);
  bind_spin (self, self->cfg_spin, "cfg-scale", TRUE);
  bind_spin (self, self->width_spin, "width", TRUE);
  bind_spin (self, self->height_spin, "height", TRUE);
  bind_spin (self, self->batch_spin, "batch-count", FALSE);
  bind_spin (self, self->seed_spin, "seed", FALSE);
  g_object_bind_property (self->settings, "strength",
                          gtk_range_get_adjustment (GTK_RANGE (self->strength_scale)), "value",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_object_bind_property_full (self->settings, "sampler", self->sampler_dropdown, "selected",
                               G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               name_to_index, index_to_name,
                               (gpointer) &sampler_choice, NULL);
  g_object_bind_property_full (self->settings, "schedule", self->schedule_dropdown, "selected",
                               G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               name_to_index, index_to_name,
                               (gpointer) &schedule_choice, NULL);
  g_object_bind_property_full (self->settings, "seed-mode", self->seed_mode_dropdown, "selected",
                               G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               enum_to_index, index_to_enum, NULL, NULL);
  g_object_bind_property (self, "live-preview", self->live_preview_check, "active",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_signal_connect_swapped (self->settings, "notify::model-path",
                            G_CALLBACK (on_model_path_changed), self);

  /* DMCMC: the switch follows the sampler; the integrators come from the engine. */
  self->integrator_names = gtk_string_list_new (NULL);
  for (guint i = 0; i < moire_gen_settings_dmcmc_integrator_count (); i++)
    gtk_string_list_append (self->integrator_names, moire_gen_settings_dmcmc_integrator_at (i));
  gtk_drop_down_set_model (self->dmcmc_integrator_dropdown, G_LIST_MODEL (self->integrator_names));
  bind_spin (self, self->dmcmc_eta_spin, "dmcmc-eta", FALSE);
  bind_spin (self, self->dmcmc_skip_spin, "dmcmc-skip", FALSE);
  bind_spin (self, self->dmcmc_steps_spin, "dmcmc-steps", FALSE);
  g_object_bind_property_full (self->settings, "dmcmc-integrator", self->dmcmc_integrator_dropdown,
                               "selected", G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               name_to_index, index_to_name,
                               (gpointer) &integrator_choice, NULL);
  g_object_bind_property (self, "stream", self->stream_switch, "active",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_object_bind_property (self, "show-routing", self->routing_check, "active",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_signal_connect_swapped (self->settings, "notify::sampler", G_CALLBACK (on_sampler_changed), self);
  g_signal_connect_swapped (self->settings, "notify::dmcmc-skip", G_CALLBACK (sync_dmcmc_widgets), self);
  g_signal_connect_swapped (self->settings, "notify::dmcmc-steps", G_CALLBACK (sync_dmcmc_widgets), self);
  g_signal_connect_swapped (self->settings, "notify::dmcmc-integrator", G_CALLBACK (sync_dmcmc_widgets), self);
  g_signal_connect_swapped (self->dmcmc_switch, "notify::active", G_CALLBACK (on_dmcmc_switch_active), self);
  on_sampler_changed (self);

  g_signal_connect_swapped (self->prompt_entry, "changed", G_CALLBACK (update_prompt_marks), self);
  g_signal_connect_swapped (self->negative_entry, "changed", G_CALLBACK (update_prompt_marks), self);
  self->prompt_completion = attach_completion (self, self->prompt_entry);
  self->negative_completion = attach_completion (self, self->negative_entry);
  update_completion (self);

  /* History strip */
  factory = gtk_signal_list_item_factory_new ();
  g_signal_connect (factory, "setup", G_CALLBACK (setup_history_row), NULL);
  g_signal_connect (factory, "bind", G_CALLBACK (bind_history_row), NULL);
  gtk_list_view_set_factory (self->history_view, factory);
  selection = gtk_single_selection_new (g_object_ref (G_LIST_MODEL (self->history)));
  gtk_single_selection_set_autoselect (selection, FALSE);
  gtk_single_selection_set_can_unselect (selection, TRUE);
  gtk_list_view_set_model (self->history_view, GTK_SELECTION_MODEL (selection));
  g_object_unref (selection);
  g_signal_connect (self->history_view, "activate", G_CALLBACK (on_history_activate), self);
  g_signal_connect_swapped (self->history, "items-changed", G_CALLBACK (on_history_changed), self);

  guard_scroll_wheel (self, GTK_WIDGET (self->sidebar_scroller));
  gtk_scale_set_format_value_func (self->strength_scale, format_strength, NULL, NULL);
  add_generate_shortcut (self);

  gtk_label_set_text (self->model_info, _("No model loaded"));
  gtk_widget_set_sensitive (self->strength_box, FALSE);
  update_actions (self);
}
