/* moire-studio-window.c — Moiré Studio's main window. */
#define G_LOG_DOMAIN "moire-studio"

#include "config.h"

#include <glib/gi18n.h>
#include <string.h>

#include "moire-studio-window.h"

struct _MoireStudioWindow
{
  GtkApplicationWindow  parent_instance;

  GSettings            *settings;
  MoireGenerationPanel *panel;
};

G_DEFINE_FINAL_TYPE (MoireStudioWindow, moire_studio_window, GTK_TYPE_APPLICATION_WINDOW)

static void
forward_to_panel (GtkWidget  *widget,
                  const char *action_name,
                  GVariant   *parameter)
{
  MoireStudioWindow *self = MOIRE_STUDIO_WINDOW (widget);
  g_autofree char *panel_action = g_strconcat ("panel.", action_name + strlen ("win."), NULL);

  gtk_widget_activate_action (GTK_WIDGET (self->panel), panel_action, NULL);
}

MoireGenerationPanel *
moire_studio_window_get_panel (MoireStudioWindow *self)
{
  g_return_val_if_fail (MOIRE_IS_STUDIO_WINDOW (self), NULL);
  return self->panel;
}

void
moire_studio_window_choose_initial_model (MoireStudioWindow *self,
                                          const char        *path)
{
  MoireGenSettings *settings;
  const char *env = g_getenv ("MOIRE_MODEL");
  const char *saved;
  g_autofree char *found = NULL;
  g_autoptr(GError) error = NULL;

  g_return_if_fail (MOIRE_IS_STUDIO_WINDOW (self));
  settings = moire_generation_panel_get_settings (self->panel);
  saved = moire_gen_settings_get_model_path (settings);

  if (path != NULL && *path != '\0')
    {
      moire_generation_panel_set_model_path (self->panel, path, FALSE);
      return;
    }
  if ((env == NULL || *env == '\0') && saved != NULL && *saved != '\0' &&
      g_file_test (saved, G_FILE_TEST_IS_REGULAR))
    return; /* already loading: the settings binding set it */

  found = moire_model_locator_find_default (&error);
  if (found != NULL)
    moire_generation_panel_set_model_path (self->panel, found, saved == NULL || *saved == '\0');
  else
    {
      moire_generation_panel_set_model_path (self->panel, "", FALSE);
      moire_generation_panel_show_message (self->panel, GTK_MESSAGE_WARNING, error->message);
    }
}

static void
save_window_state (MoireStudioWindow *self)
{
  int width = 0, height = 0;

  if (self->settings == NULL)
    return;
  gtk_window_get_default_size (GTK_WINDOW (self), &width, &height);
  g_settings_set_boolean (self->settings, "window-maximized", gtk_window_is_maximized (GTK_WINDOW (self)));
  if (!gtk_window_is_maximized (GTK_WINDOW (self)) && width > 0 && height > 0)
    {
      g_settings_set_int (self->settings, "window-width", width);
      g_settings_set_int (self->settings, "window-height", height);
    }
}

static gboolean
moire_studio_window_close_request (GtkWindow *window)
{
  MoireStudioWindow *self = MOIRE_STUDIO_WINDOW (window);

  save_window_state (self);
  /* A running generation is cancelled, not waited for. */
  moire_generation_panel_cancel (self->panel);
  return GTK_WINDOW_CLASS (moire_studio_window_parent_class)->close_request (window);
}

static void
moire_studio_window_dispose (GObject *object)
{
  MoireStudioWindow *self = MOIRE_STUDIO_WINDOW (object);

  /* GtkWindow's own dispose removes its child (the panel); unparenting it here would leave
   * the window pointing at a freed widget. */
  self->panel = NULL;
  g_clear_object (&self->settings);
  G_OBJECT_CLASS (moire_studio_window_parent_class)->dispose (object);
}

static void
moire_studio_window_class_init (MoireStudioWindowClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);
  GtkWindowClass *window_class = GTK_WINDOW_CLASS (klass);

  object_class->dispose = moire_studio_window_dispose;
  window_class->close_request = moire_studio_window_close_request;

  g_type_ensure (MOIRE_TYPE_GENERATION_PANEL);
  gtk_widget_class_set_template_from_resource (widget_class, "/io/github/moire/Studio/moire-studio-window.ui");
  gtk_widget_class_bind_template_child (widget_class, MoireStudioWindow, panel);

  gtk_widget_class_install_action (widget_class, "win.open-image", NULL, forward_to_panel);
  gtk_widget_class_install_action (widget_class, "win.save-image", NULL, forward_to_panel);
  gtk_widget_class_install_action (widget_class, "win.choose-model", NULL, forward_to_panel);
}

static void
moire_studio_window_init (MoireStudioWindow *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
}

MoireStudioWindow *
moire_studio_window_new (GtkApplication *application,
                         GSettings      *settings)
{
  MoireStudioWindow *self = g_object_new (MOIRE_TYPE_STUDIO_WINDOW, "application", application, NULL);

  if (settings != NULL)
    {
      self->settings = g_object_ref (settings);
      gtk_window_set_default_size (GTK_WINDOW (self),
                                   g_settings_get_int (settings, "window-width"),
                                   g_settings_get_int (settings, "window-height"));
      if (g_settings_get_boolean (settings, "window-maximized"))
        gtk_window_maximize (GTK_WINDOW (self));
      moire_generation_panel_bind_gsettings (self->panel, settings);
    }
  return self;
}
