/* moire-generation-panel-bindings.c — the panel's widgets bound to its MoireGenSettings (both ways),
 * and the prompt fields' vocabulary completion and unknown-word marks. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-generation-panel-private.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

/* --- bindings between settings and widgets ------------------------------------------------- */

gboolean
panel_name_to_index (GBinding     *binding,
                     const GValue *from,
                     GValue       *to,
                     gpointer      user_data)
{
  const NameList *names = user_data;

  g_value_set_uint (to, names->index_of (g_value_get_string (from)));
  return TRUE;
}

gboolean
panel_index_to_name (GBinding     *binding,
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

gboolean
panel_enum_to_index (GBinding     *binding,
                     const GValue *from,
                     GValue       *to,
                     gpointer      user_data)
{
  g_value_set_uint (to, (guint) g_value_get_enum (from));
  return TRUE;
}

gboolean
panel_index_to_enum (GBinding     *binding,
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
void
panel_sync_dmcmc_widgets (MoireGenerationPanel *self)
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

void
panel_on_sampler_changed (MoireGenerationPanel *self)
{
  if (!moire_gen_settings_get_dmcmc (self->settings))
    self->sampler_before_dmcmc = moire_gen_settings_get_sampler_id (self->settings);
  panel_sync_dmcmc_widgets (self);
}

void
panel_on_dmcmc_switch_active (MoireGenerationPanel *self)
{
  gboolean active = gtk_switch_get_active (self->dmcmc_switch);

  if (self->syncing_dmcmc || active == moire_gen_settings_get_dmcmc (self->settings))
    return;
  moire_gen_settings_set_sampler_id (self->settings,
                                     active ? MOIRE_SAMPLER_DMCMC : self->sampler_before_dmcmc);
}

void
panel_on_show_routing_changed (MoireGenerationPanel *self)
{
  /* Re-show the result with or without its map; a live preview is left alone. */
  if (self->current_item != NULL && (self->job == NULL || moire_job_get_stream (self->job)))
    panel_show_item (self, self->current_item);
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

void
panel_bind_spin (MoireGenerationPanel *self,
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

void
panel_update_prompt_marks (MoireGenerationPanel *self)
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

GtkEntryCompletion *
panel_attach_completion (MoireGenerationPanel *self,
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
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_return_if_fail (G_IS_SETTINGS (settings));

  g_set_object (&self->gsettings, settings);
  moire_model_chooser_bind_gsettings (self->model_chooser, settings);
  g_settings_bind (settings, "live-preview", self, "live-preview", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "preview-interval", self, "preview-interval", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "dmcmc-stream", self, "stream", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "show-routing", self, "show-routing", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "vae-path", self, "vae-path", G_SETTINGS_BIND_DEFAULT);
  moire_gen_settings_bind_gsettings (self->settings, settings);
}
