/* moire-model-handle.c — a reference-counted, immutable loaded model (a MoireFileHandle). */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#include "moire-gui-util.h"
#include "moire-model-handle.h"

struct _MoireModelHandle
{
  MoireFileHandle parent_instance;

  moire_model *model;
  GStrv        suggestions;
};

G_DEFINE_FINAL_TYPE (MoireModelHandle, moire_model_handle, MOIRE_TYPE_FILE_HANDLE)

static void
moire_model_handle_finalize (GObject *object)
{
  MoireModelHandle *self = MOIRE_MODEL_HANDLE (object);

  g_clear_pointer (&self->model, moire_model_free);
  g_clear_pointer (&self->suggestions, g_strfreev);
  G_OBJECT_CLASS (moire_model_handle_parent_class)->finalize (object);
}

/* Phrases that the project's own text models were trained with after the subject ("red
 * apple, google style": docs/EMBEDDED_MODEL.md). Offered by completion only when every
 * word of them is in the model's vocabulary, so other models never see them. */
static const char *const style_phrases[] = { "google style", "twitter style", NULL };

static gboolean
phrase_is_known (const moire_model *model,
                 const char        *phrase)
{
  moire_prompt_word words[8];
  int n = moire_model_check_prompt (model, phrase, words, G_N_ELEMENTS (words));

  for (int i = 0; i < n && i < (int) G_N_ELEMENTS (words); i++)
    if (!words[i].known)
      return FALSE;
  return n > 0;
}

static GStrv
collect_suggestions (const moire_model *model)
{
  const moire_model_config *config = moire_model_get_config (model);
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();
  g_autoptr(GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  int vocabulary = moire_model_vocabulary_size (model);

  /* Text models: the style phrases first (they are what completion shows at "goo"), then
   * every word, in the vocabulary's order. */
  for (guint i = 0; vocabulary > 0 && style_phrases[i] != NULL; i++)
    if (phrase_is_known (model, style_phrases[i]))
      g_strv_builder_add (builder, style_phrases[i]);
  for (int i = 0; i < vocabulary; i++)
    g_strv_builder_add (builder, moire_model_vocabulary_word (model, i));

  for (int i = 0; i < config->num_classes; i++)
    {
      const char *name = moire_model_class_name (model, i);
      g_auto(GStrv) synonyms = NULL;

      if (name == NULL)
        continue;
      synonyms = g_strsplit (name, ",", -1);
      for (char **s = synonyms; *s != NULL; s++)
        {
          char *word = g_strstrip (*s);

          if (*word != '\0' && !g_hash_table_contains (seen, word))
            {
              g_hash_table_add (seen, g_strdup (word));
              g_strv_builder_add (builder, word);
            }
        }
    }
  return g_strv_builder_end (builder);
}

static gboolean
moire_model_handle_load_file (MoireFileHandle  *handle,
                              const char       *path,
                              GError          **error)
{
  MoireModelHandle *self = MOIRE_MODEL_HANDLE (handle);
  moire_status status = moire_model_load (path, &self->model);

  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, NULL));
      return FALSE;
    }
  self->suggestions = collect_suggestions (self->model);
  return TRUE;
}

static void
moire_model_handle_class_init (MoireModelHandleClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = moire_model_handle_finalize;
  MOIRE_FILE_HANDLE_CLASS (klass)->load_file = moire_model_handle_load_file;
}

static void
moire_model_handle_init (MoireModelHandle *self)
{
}

MoireModelHandle *
moire_model_handle_load (const char  *path,
                         GError     **error)
{
  return MOIRE_MODEL_HANDLE (moire_file_handle_load (MOIRE_TYPE_MODEL_HANDLE, path, error));
}

void
moire_model_handle_load_async (const char          *path,
                               GCancellable        *cancellable,
                               GAsyncReadyCallback  callback,
                               gpointer             user_data)
{
  moire_file_handle_load_async (MOIRE_TYPE_MODEL_HANDLE, path, cancellable, callback, user_data);
}

MoireModelHandle *
moire_model_handle_load_finish (GAsyncResult  *result,
                                GError       **error)
{
  return (MoireModelHandle *) moire_file_handle_load_finish (result, error);
}

const char *
moire_model_handle_get_path (MoireModelHandle *self)
{
  return moire_file_handle_get_path (MOIRE_FILE_HANDLE (self));
}

const char *
moire_model_handle_get_name (MoireModelHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), NULL);
  return moire_model_name (self->model);
}

const moire_model *
moire_model_handle_get_model (MoireModelHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), NULL);
  return self->model;
}

gboolean
moire_model_handle_has_vocabulary (MoireModelHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), FALSE);
  return moire_model_vocabulary_size (self->model) > 0;
}

gboolean
moire_model_handle_is_class_conditional (MoireModelHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), FALSE);
  return moire_model_get_config (self->model)->num_classes > 0;
}

const char * const *
moire_model_handle_get_prompt_suggestions (MoireModelHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), NULL);
  return (const char * const *) self->suggestions;
}

char *
moire_model_handle_describe (MoireModelHandle *self)
{
  const moire_model_config *config;
  g_autofree char *stem = NULL;
  g_autofree char *number = NULL;
  const char *name, *dot;
  double millions;
  int size;

  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), NULL);
  config = moire_model_get_config (self->model);
  name = moire_model_name (self->model);
  dot = strrchr (name, '.');
  stem = dot != NULL ? g_strndup (name, dot - name) : g_strdup (name);
  millions = (double) moire_model_parameter_count (self->model) / 1e6;
  number = moire_gui_format_decimal (millions, 1);
  size = config->input_size * (config->space == MOIRE_SPACE_LATENT ? 8 : 1);
  /* Translators: model summary: name, family, parameters in millions (with its decimal
     separator already), trained image size */
  return g_strdup_printf (_("%s · %s · %s M parameters · %d×%d"),
                          stem, config->family, number, size, size);
}
