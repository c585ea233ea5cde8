/* moire-model-handle.c — a reference-counted, immutable loaded model. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#include "moire-gui-util.h"
#include "moire-model-handle.h"

struct _MoireModelHandle
{
  GObject      parent_instance;

  char        *path;
  moire_model *model;
  GStrv        suggestions;
};

G_DEFINE_FINAL_TYPE (MoireModelHandle, moire_model_handle, G_TYPE_OBJECT)

static void
moire_model_handle_finalize (GObject *object)
{
  MoireModelHandle *self = MOIRE_MODEL_HANDLE (object);

  g_clear_pointer (&self->model, moire_model_free);
  g_clear_pointer (&self->suggestions, g_strfreev);
  g_free (self->path);
  G_OBJECT_CLASS (moire_model_handle_parent_class)->finalize (object);
}

static void
moire_model_handle_class_init (MoireModelHandleClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = moire_model_handle_finalize;
}

static void
moire_model_handle_init (MoireModelHandle *self)
{
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

MoireModelHandle *
moire_model_handle_load (const char  *path,
                         GError     **error)
{
  moire_model *model = NULL;
  moire_status status;
  MoireModelHandle *self;

  g_return_val_if_fail (path != NULL, NULL);

  status = moire_model_load (path, &model);
  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, NULL));
      return NULL;
    }
  self = g_object_new (MOIRE_TYPE_MODEL_HANDLE, NULL);
  self->path = g_strdup (path);
  self->model = model;
  self->suggestions = collect_suggestions (model);
  return self;
}

static void
load_thread (GTask        *task,
             gpointer      source_object,
             gpointer      task_data,
             GCancellable *cancellable)
{
  GError *error = NULL;
  MoireModelHandle *handle = moire_model_handle_load (task_data, &error);

  if (handle == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, handle, g_object_unref);
}

void
moire_model_handle_load_async (const char          *path,
                               GCancellable        *cancellable,
                               GAsyncReadyCallback  callback,
                               gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;

  g_return_if_fail (path != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, moire_model_handle_load_async);
  g_task_set_task_data (task, g_strdup (path), g_free);
  /* A result that nobody waits for any more is dropped instead of delivered. */
  g_task_set_return_on_cancel (task, TRUE);
  g_task_run_in_thread (task, load_thread);
}

MoireModelHandle *
moire_model_handle_load_finish (GAsyncResult  *result,
                                GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

const char *
moire_model_handle_get_path (MoireModelHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (self), NULL);
  return self->path;
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
