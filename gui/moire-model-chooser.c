/* moire-model-chooser.c — recent models in a drop-down plus an "open a model file" button. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#include "moire-model-chooser.h"

/* How many recent models the drop-down keeps. */
#define RECENT_MODELS_MAX 10

struct _MoireModelChooser
{
  GtkWidget      parent_instance;

  GtkDropDown   *dropdown;
  GtkButton     *open_button;
  GtkStringList *recent;
  GSettings     *gsettings;
  /* Set while the list or the selection changes from code, so that ::model-selected is
   * only emitted for the user's choice. */
  gboolean       updating;
};

G_DEFINE_FINAL_TYPE (MoireModelChooser, moire_model_chooser, GTK_TYPE_WIDGET)

enum
{
  PROP_0,
  PROP_OPEN_ACTION,
  N_PROPS
};

enum
{
  SIGNAL_MODEL_SELECTED,
  N_SIGNALS
};

static GParamSpec *chooser_properties[N_PROPS];
static guint chooser_signals[N_SIGNALS];

static void
replace_recent (MoireModelChooser  *self,
                const char * const *paths)
{
  self->updating = TRUE;
  gtk_string_list_splice (self->recent, 0, g_list_model_get_n_items (G_LIST_MODEL (self->recent)),
                          paths);
  self->updating = FALSE;
}

void
moire_model_chooser_bind_gsettings (MoireModelChooser *self,
                                    GSettings         *settings)
{
  g_auto(GStrv) recent = NULL;

  g_return_if_fail (MOIRE_IS_MODEL_CHOOSER (self));
  g_return_if_fail (G_IS_SETTINGS (settings));

  g_set_object (&self->gsettings, settings);
  recent = g_settings_get_strv (settings, "recent-models");
  replace_recent (self, (const char * const *) recent);
}

void
moire_model_chooser_add_recent (MoireModelChooser *self,
                                const char        *path)
{
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();
  g_auto(GStrv) recent = NULL;
  guint n;

  g_return_if_fail (MOIRE_IS_MODEL_CHOOSER (self));
  g_return_if_fail (path != NULL);

  n = g_list_model_get_n_items (G_LIST_MODEL (self->recent));
  g_strv_builder_add (builder, path);
  for (guint i = 0; i < n && i < RECENT_MODELS_MAX - 1; i++)
    {
      const char *other = gtk_string_list_get_string (self->recent, i);

      if (g_strcmp0 (other, path) != 0)
        g_strv_builder_add (builder, other);
    }
  recent = g_strv_builder_end (builder);

  replace_recent (self, (const char * const *) recent);
  self->updating = TRUE;
  gtk_drop_down_set_selected (self->dropdown, 0);
  self->updating = FALSE;

  if (self->gsettings != NULL)
    g_settings_set_strv (self->gsettings, "recent-models", (const char * const *) recent);
}

char *
moire_model_chooser_find_recent (MoireModelChooser *self,
                                 const char        *model_name)
{
  guint n;

  g_return_val_if_fail (MOIRE_IS_MODEL_CHOOSER (self), NULL);

  n = g_list_model_get_n_items (G_LIST_MODEL (self->recent));
  for (guint i = 0; model_name != NULL && i < n; i++)
    {
      const char *path = gtk_string_list_get_string (self->recent, i);
      g_autofree char *base = g_path_get_basename (path);
      char *dot = strrchr (base, '.');

      if (dot != NULL)
        *dot = '\0';
      if (g_strcmp0 (base, model_name) == 0)
        return g_strdup (path);
    }
  return NULL;
}

static void
on_dropdown_selected (MoireModelChooser *self)
{
  guint selected = gtk_drop_down_get_selected (self->dropdown);
  const char *path;

  if (self->updating || selected == GTK_INVALID_LIST_POSITION)
    return;
  path = gtk_string_list_get_string (self->recent, selected);
  if (path != NULL)
    g_signal_emit (self, chooser_signals[SIGNAL_MODEL_SELECTED], 0, path);
}

static char *
model_display_name (GtkStringObject *item)
{
  const char *path = item != NULL ? gtk_string_object_get_string (item) : NULL;

  return path != NULL ? g_path_get_basename (path) : g_strdup ("");
}

GtkWidget *
moire_model_chooser_new (void)
{
  return g_object_new (MOIRE_TYPE_MODEL_CHOOSER, NULL);
}

/* A mnemonic ("_Model") on the chooser focuses the drop-down. */
static gboolean
moire_model_chooser_mnemonic_activate (GtkWidget *widget,
                                       gboolean   group_cycling)
{
  return gtk_widget_mnemonic_activate (GTK_WIDGET (MOIRE_MODEL_CHOOSER (widget)->dropdown),
                                       group_cycling);
}

static void
moire_model_chooser_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  MoireModelChooser *self = MOIRE_MODEL_CHOOSER (object);

  switch (prop_id)
    {
    case PROP_OPEN_ACTION:
      g_value_set_string (value, gtk_actionable_get_action_name (GTK_ACTIONABLE (self->open_button)));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_model_chooser_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  MoireModelChooser *self = MOIRE_MODEL_CHOOSER (object);

  switch (prop_id)
    {
    case PROP_OPEN_ACTION:
      gtk_actionable_set_action_name (GTK_ACTIONABLE (self->open_button), g_value_get_string (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_model_chooser_dispose (GObject *object)
{
  MoireModelChooser *self = MOIRE_MODEL_CHOOSER (object);
  GtkWidget *child;

  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self))) != NULL)
    gtk_widget_unparent (child);
  self->dropdown = NULL;
  self->open_button = NULL;
  g_clear_object (&self->recent);
  g_clear_object (&self->gsettings);
  G_OBJECT_CLASS (moire_model_chooser_parent_class)->dispose (object);
}

static void
moire_model_chooser_class_init (MoireModelChooserClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->get_property = moire_model_chooser_get_property;
  object_class->set_property = moire_model_chooser_set_property;
  object_class->dispose = moire_model_chooser_dispose;
  widget_class->mnemonic_activate = moire_model_chooser_mnemonic_activate;

  chooser_properties[PROP_OPEN_ACTION] =
    g_param_spec_string ("open-action", NULL, "The action the open-file button activates",
                         NULL, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, chooser_properties);

  /* ::model-selected (const char *path): the user picked a recent model. */
  chooser_signals[SIGNAL_MODEL_SELECTED] =
    g_signal_new ("model-selected", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);

  /* Laid out as the box it replaces: drop-down and button side by side, 6 px apart. */
  gtk_widget_class_set_layout_manager_type (widget_class, GTK_TYPE_BOX_LAYOUT);
}

static void
moire_model_chooser_init (MoireModelChooser *self)
{
  g_autoptr(GtkExpression) name = NULL;

  gtk_box_layout_set_spacing (GTK_BOX_LAYOUT (gtk_widget_get_layout_manager (GTK_WIDGET (self))), 6);
  self->recent = gtk_string_list_new (NULL);

  /* Recent models, shown by file name. */
  name = gtk_cclosure_expression_new (G_TYPE_STRING, NULL, 0, NULL,
                                      G_CALLBACK (model_display_name), NULL, NULL);
  self->dropdown = GTK_DROP_DOWN (gtk_drop_down_new (G_LIST_MODEL (g_object_ref (self->recent)),
                                                     g_steal_pointer (&name)));
  gtk_widget_set_hexpand (GTK_WIDGET (self->dropdown), TRUE);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->dropdown), _("Recently used models"));
  gtk_widget_set_parent (GTK_WIDGET (self->dropdown), GTK_WIDGET (self));
  g_signal_connect_swapped (self->dropdown, "notify::selected", G_CALLBACK (on_dropdown_selected), self);

  self->open_button = GTK_BUTTON (gtk_button_new_from_icon_name ("document-open-symbolic"));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->open_button), _("Open a model file"));
  gtk_widget_set_parent (GTK_WIDGET (self->open_button), GTK_WIDGET (self));
}
