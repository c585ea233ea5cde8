/* moire-generation-panel.c — the reusable generation panel (see the header): the type and its
 * properties and signals, the banner, the model and VAE rows. Its other parts:
 * -generation.c (jobs, queue, progress), -history.c, -restore.c, -actions.c, -bindings.c;
 * moire-generation-panel-private.h is what they share. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-generation-panel-private.h"
#include "moire-size-fix.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

G_DEFINE_FINAL_TYPE (MoireGenerationPanel, moire_generation_panel, GTK_TYPE_WIDGET)

GParamSpec *panel_properties[N_PROPS];
guint panel_signals[N_SIGNALS];

static const char panel_css[] =
  ".moire-banner { padding: 6px 12px; background-color: alpha(@error_color, 0.18); }\n"
  ".moire-banner.info { background-color: alpha(@theme_selected_bg_color, 0.18); }\n"
  ".moire-preview { background-color: alpha(currentColor, 0.04); border-radius: 8px; }\n"
  ".moire-badge { padding: 2px 8px; border-radius: 99px; color: white;"
  " background-color: rgba(0, 0, 0, 0.6); }\n"
  ".moire-history > row { padding: 4px; border-radius: 6px; }\n"
  ".moire-thumbnail { border-radius: 4px; }\n";

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
void
panel_show_error_with_action (MoireGenerationPanel *self,
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
  panel_show_error_with_action (self, message, button_label, action);
}

/* --- model --------------------------------------------------------------------------------- */

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
  panel_update_prompt_marks (self);
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
      panel_show_error_with_action (self, message, _("Choose Model…"), "panel.choose-model");
      /* Still no model, but hosts waiting for one learn that the load is over. */
      g_object_notify_by_pspec (G_OBJECT (self), panel_properties[PROP_MODEL]);
    }
  else
    {
      g_set_object (&self->model, handle);
      if (self->apply_defaults_on_load)
        moire_gen_settings_apply_model_defaults (self->settings, moire_model_handle_get_model (handle));
      description = moire_model_handle_describe (handle);
      gtk_label_set_text (self->model_info, description);
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->model_info), moire_model_handle_get_path (handle));
      moire_model_chooser_add_recent (self->model_chooser, moire_model_handle_get_path (handle));
      /* Refresh the "Default (…)" texts of the spin buttons. */
      gtk_spin_button_update (self->steps_spin);
      gtk_spin_button_update (self->cfg_spin);
      g_object_notify_by_pspec (G_OBJECT (self), panel_properties[PROP_MODEL]);
    }
  self->apply_defaults_on_load = FALSE;
  update_completion (self);
  panel_update_vae_row (self);
  panel_update_actions (self);
}

static void
on_model_path_changed (MoireGenerationPanel *self)
{
  const char *path = moire_gen_settings_get_model_path (self->settings);

  moire_file_handle_cancel_load (&self->model_cancellable);
  if (self->model != NULL && g_strcmp0 (moire_model_handle_get_path (self->model), path) == 0)
    return;
  g_clear_object (&self->model);
  g_object_notify_by_pspec (G_OBJECT (self), panel_properties[PROP_MODEL]);
  update_completion (self);
  panel_update_actions (self);
  if (path == NULL || *path == '\0')
    {
      gtk_label_set_text (self->model_info, _("No model loaded"));
      return;
    }
  gtk_label_set_text (self->model_info, _("Loading…"));
  moire_file_handle_start_load (MOIRE_TYPE_MODEL_HANDLE, path, &self->model_cancellable,
                                model_loaded, g_object_ref (self));
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

/* The user picked a recent model in the chooser. */
static void
on_model_selected (MoireGenerationPanel *self,
                   const char           *path)
{
  if (g_strcmp0 (path, moire_gen_settings_get_model_path (self->settings)) != 0)
    moire_generation_panel_set_model_path (self, path, TRUE);
}

/* --- VAE (latent models) -------------------------------------------------------------------- */

void
panel_update_vae_row (MoireGenerationPanel *self)
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
  panel_update_vae_row (self);
  g_object_notify_by_pspec (G_OBJECT (self), panel_properties[PROP_VAE_PATH]);
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
  moire_file_handle_cancel_load (&self->vae_cancellable);
  g_clear_object (&self->vae);
  if (*path != '\0')
    moire_file_handle_start_load (MOIRE_TYPE_VAE_HANDLE, path, &self->vae_cancellable,
                                  vae_loaded, g_object_ref (self));
  panel_update_vae_row (self);
  g_object_notify_by_pspec (G_OBJECT (self), panel_properties[PROP_VAE_PATH]);
}

MoireVaeHandle *
moire_generation_panel_get_vae (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->vae;
}

/* --- GObject ------------------------------------------------------------------------------- */

/* The dropdowns bound to one of a fixed list of names (NameList, the private header). */
static const NameList sampler_choice    = { moire_gen_settings_sampler_index,
                                            moire_gen_settings_sampler_at };
static const NameList schedule_choice   = { moire_gen_settings_schedule_index,
                                            moire_gen_settings_schedule_at };
static const NameList integrator_choice = { moire_gen_settings_dmcmc_integrator_index,
                                            moire_gen_settings_dmcmc_integrator_at };

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
  g_clear_object (&self->sampler_labels);
  g_clear_object (&self->suggestions);
  g_clear_pointer (&self->rand, g_rand_free);
  g_clear_pointer (&self->warnings_shown, g_hash_table_unref);
  g_clear_pointer (&self->init_image, moire_image_free);
  g_clear_pointer (&self->mask, moire_image_free);
  g_clear_object (&self->integrator_names);
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
          panel_on_show_routing_changed (self);
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

  panel_properties[PROP_SETTINGS] =
    g_param_spec_object ("settings", NULL, NULL, MOIRE_TYPE_GEN_SETTINGS,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  panel_properties[PROP_HISTORY] =
    g_param_spec_object ("history", NULL, NULL, MOIRE_TYPE_HISTORY,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  panel_properties[PROP_MODEL] =
    g_param_spec_object ("model", NULL, NULL, MOIRE_TYPE_MODEL_HANDLE,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  panel_properties[PROP_BUSY] =
    g_param_spec_boolean ("busy", NULL, NULL, FALSE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  panel_properties[PROP_LIVE_PREVIEW] =
    g_param_spec_boolean ("live-preview", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  panel_properties[PROP_PREVIEW_INTERVAL] =
    g_param_spec_int ("preview-interval", NULL, NULL, 1, 100, 1,
                      G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  /* With DMCMC on, Generate starts a stream of variations that runs until cancelled. */
  panel_properties[PROP_STREAM] =
    g_param_spec_boolean ("stream", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  /* Jobs record the expert routing; the preview shows it over the result. */
  panel_properties[PROP_SHOW_ROUTING] =
    g_param_spec_boolean ("show-routing", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  /* The SD-VAE file for latent models ("" = none: approximate colours). */
  panel_properties[PROP_VAE_PATH] =
    g_param_spec_string ("vae-path", NULL, NULL, "",
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, panel_properties);

  /**
   * MoireGenerationPanel::generate-requested:
   * @settings: the settings to generate with
   * @seed: the seed of the first image
   *
   * Returns: %TRUE when a handler takes over the generation.
   */
  panel_signals[SIGNAL_GENERATE_REQUESTED] =
    g_signal_new ("generate-requested", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  g_signal_accumulator_true_handled, NULL, NULL,
                  G_TYPE_BOOLEAN, 2, MOIRE_TYPE_GEN_SETTINGS, G_TYPE_UINT64);
  panel_signals[SIGNAL_PREVIEW_FRAME] =
    g_signal_new ("preview-frame", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 3, GDK_TYPE_TEXTURE, G_TYPE_INT, G_TYPE_INT);
  panel_signals[SIGNAL_RESULT_READY] =
    g_signal_new ("result-ready", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, MOIRE_TYPE_HISTORY_ITEM);
  panel_signals[SIGNAL_FINISHED] =
    g_signal_new ("finished", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_BOOLEAN);
  panel_signals[SIGNAL_PAUSED] =
    g_signal_new ("paused", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_INT);

  g_type_ensure (MOIRE_TYPE_MODEL_CHOOSER);
  gtk_widget_class_set_template_from_resource (widget_class, "/io/github/moire/gui/moire-generation-panel.ui");
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_revealer);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_icon);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_label);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, banner_button);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, prompt_entry);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, negative_entry);
  gtk_widget_class_bind_template_child (widget_class, MoireGenerationPanel, model_chooser);
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

  gtk_widget_class_install_action (widget_class, "panel.generate", NULL, panel_action_generate);
  gtk_widget_class_install_action (widget_class, "panel.cancel", NULL, panel_action_cancel);
  gtk_widget_class_install_action (widget_class, "panel.clear-queue", NULL, panel_action_clear_queue);
  gtk_widget_class_install_action (widget_class, "panel.choose-vae", NULL, panel_action_choose_vae);
  gtk_widget_class_install_action (widget_class, "panel.clear-vae", NULL, panel_action_clear_vae);
  gtk_widget_class_install_action (widget_class, "panel.choose-model", NULL, panel_action_choose_model);
  gtk_widget_class_install_action (widget_class, "panel.choose-init-image", NULL, panel_action_choose_init_image);
  gtk_widget_class_install_action (widget_class, "panel.clear-init-image", NULL, panel_action_clear_init_image);
  gtk_widget_class_install_action (widget_class, "panel.open-image", NULL, panel_action_open_image);
  gtk_widget_class_install_action (widget_class, "panel.save-image", NULL, panel_action_save_image);
  moire_size_fix_install_action (widget_class);
  gtk_widget_class_install_action (widget_class, "panel.clear-history", NULL, panel_action_clear_history);
  gtk_widget_class_install_action (widget_class, "panel.dismiss-banner", NULL, panel_action_dismiss_banner);

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
  GtkSingleSelection *selection;

  self->settings = moire_gen_settings_new ();
  self->history = moire_history_new (200);
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

  g_signal_connect_swapped (self->model_chooser, "model-selected",
                            G_CALLBACK (on_model_selected), self);

  /* Settings ↔ widgets */
  g_object_bind_property (self->settings, "prompt", self->prompt_entry, "text",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_object_bind_property (self->settings, "negative-prompt", self->negative_entry, "text",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  panel_bind_spin (self, self->steps_spin, "steps", TRUE);
  panel_bind_spin (self, self->cfg_spin, "cfg-scale", TRUE);
  panel_bind_spin (self, self->width_spin, "width", TRUE);
  panel_bind_spin (self, self->height_spin, "height", TRUE);
  panel_bind_spin (self, self->batch_spin, "batch-count", FALSE);
  panel_bind_spin (self, self->seed_spin, "seed", FALSE);
  g_object_bind_property (self->settings, "strength",
                          gtk_range_get_adjustment (GTK_RANGE (self->strength_scale)), "value",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_object_bind_property_full (self->settings, "sampler", self->sampler_dropdown, "selected",
                               G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               panel_name_to_index, panel_index_to_name,
                               (gpointer) &sampler_choice, NULL);
  g_object_bind_property_full (self->settings, "schedule", self->schedule_dropdown, "selected",
                               G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               panel_name_to_index, panel_index_to_name,
                               (gpointer) &schedule_choice, NULL);
  g_object_bind_property_full (self->settings, "seed-mode", self->seed_mode_dropdown, "selected",
                               G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               panel_enum_to_index, panel_index_to_enum, NULL, NULL);
  g_object_bind_property (self, "live-preview", self->live_preview_check, "active",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_signal_connect_swapped (self->settings, "notify::model-path",
                            G_CALLBACK (on_model_path_changed), self);

  /* DMCMC: the switch follows the sampler; the integrators come from the engine. */
  self->integrator_names = gtk_string_list_new (NULL);
  for (guint i = 0; i < moire_gen_settings_dmcmc_integrator_count (); i++)
    gtk_string_list_append (self->integrator_names, moire_gen_settings_dmcmc_integrator_at (i));
  gtk_drop_down_set_model (self->dmcmc_integrator_dropdown, G_LIST_MODEL (self->integrator_names));
  panel_bind_spin (self, self->dmcmc_eta_spin, "dmcmc-eta", FALSE);
  panel_bind_spin (self, self->dmcmc_skip_spin, "dmcmc-skip", FALSE);
  panel_bind_spin (self, self->dmcmc_steps_spin, "dmcmc-steps", FALSE);
  g_object_bind_property_full (self->settings, "dmcmc-integrator", self->dmcmc_integrator_dropdown,
                               "selected", G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE,
                               panel_name_to_index, panel_index_to_name,
                               (gpointer) &integrator_choice, NULL);
  g_object_bind_property (self, "stream", self->stream_switch, "active",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_object_bind_property (self, "show-routing", self->routing_check, "active",
                          G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_signal_connect_swapped (self->settings, "notify::sampler", G_CALLBACK (panel_on_sampler_changed), self);
  g_signal_connect_swapped (self->settings, "notify::dmcmc-skip", G_CALLBACK (panel_sync_dmcmc_widgets), self);
  g_signal_connect_swapped (self->settings, "notify::dmcmc-steps", G_CALLBACK (panel_sync_dmcmc_widgets), self);
  g_signal_connect_swapped (self->settings, "notify::dmcmc-integrator", G_CALLBACK (panel_sync_dmcmc_widgets), self);
  g_signal_connect_swapped (self->dmcmc_switch, "notify::active", G_CALLBACK (panel_on_dmcmc_switch_active), self);
  panel_on_sampler_changed (self);

  g_signal_connect_swapped (self->prompt_entry, "changed", G_CALLBACK (panel_update_prompt_marks), self);
  g_signal_connect_swapped (self->negative_entry, "changed", G_CALLBACK (panel_update_prompt_marks), self);
  self->prompt_completion = panel_attach_completion (self, self->prompt_entry);
  self->negative_completion = panel_attach_completion (self, self->negative_entry);
  update_completion (self);

  /* History strip */
  factory = gtk_signal_list_item_factory_new ();
  g_signal_connect (factory, "setup", G_CALLBACK (panel_setup_history_row), NULL);
  g_signal_connect (factory, "bind", G_CALLBACK (panel_bind_history_row), NULL);
  gtk_list_view_set_factory (self->history_view, factory);
  selection = gtk_single_selection_new (g_object_ref (G_LIST_MODEL (self->history)));
  gtk_single_selection_set_autoselect (selection, FALSE);
  gtk_single_selection_set_can_unselect (selection, TRUE);
  gtk_list_view_set_model (self->history_view, GTK_SELECTION_MODEL (selection));
  g_object_unref (selection);
  g_signal_connect (self->history_view, "activate", G_CALLBACK (panel_on_history_activate), self);
  g_signal_connect_swapped (self->history, "items-changed", G_CALLBACK (panel_on_history_changed), self);

  guard_scroll_wheel (self, GTK_WIDGET (self->sidebar_scroller));
  gtk_scale_set_format_value_func (self->strength_scale, format_strength, NULL, NULL);
  add_generate_shortcut (self);

  gtk_label_set_text (self->model_info, _("No model loaded"));
  gtk_widget_set_sensitive (self->strength_box, FALSE);
  panel_update_actions (self);
}
