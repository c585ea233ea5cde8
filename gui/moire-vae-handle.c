/* moire-vae-handle.c — a reference-counted, immutable loaded SD-VAE. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-gui-util.h"
#include "moire-vae-handle.h"

struct _MoireVaeHandle
{
  GObject    parent_instance;

  char      *path;
  moire_vae *vae;
};

G_DEFINE_FINAL_TYPE (MoireVaeHandle, moire_vae_handle, G_TYPE_OBJECT)

static void
moire_vae_handle_finalize (GObject *object)
{
  MoireVaeHandle *self = MOIRE_VAE_HANDLE (object);

  g_clear_pointer (&self->vae, moire_vae_free);
  g_free (self->path);
  G_OBJECT_CLASS (moire_vae_handle_parent_class)->finalize (object);
}

static void
moire_vae_handle_class_init (MoireVaeHandleClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = moire_vae_handle_finalize;
}

static void
moire_vae_handle_init (MoireVaeHandle *self)
{
}

MoireVaeHandle *
moire_vae_handle_load (const char  *path,
                       GError     **error)
{
  moire_vae *vae = NULL;
  moire_status status;
  MoireVaeHandle *self;

  g_return_val_if_fail (path != NULL, NULL);

  status = moire_vae_load (path, &vae);
  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, NULL));
      return NULL;
    }
  self = g_object_new (MOIRE_TYPE_VAE_HANDLE, NULL);
  self->path = g_strdup (path);
  self->vae = vae;
  return self;
}

static void
load_thread (GTask        *task,
             gpointer      source_object,
             gpointer      task_data,
             GCancellable *cancellable)
{
  GError *error = NULL;
  MoireVaeHandle *handle = moire_vae_handle_load (task_data, &error);

  if (handle == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, handle, g_object_unref);
}

void
moire_vae_handle_load_async (const char          *path,
                             GCancellable        *cancellable,
                             GAsyncReadyCallback  callback,
                             gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;

  g_return_if_fail (path != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, moire_vae_handle_load_async);
  g_task_set_task_data (task, g_strdup (path), g_free);
  g_task_set_return_on_cancel (task, TRUE);
  g_task_run_in_thread (task, load_thread);
}

MoireVaeHandle *
moire_vae_handle_load_finish (GAsyncResult  *result,
                              GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

const char *
moire_vae_handle_get_path (MoireVaeHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_VAE_HANDLE (self), NULL);
  return self->path;
}

const moire_vae *
moire_vae_handle_get_vae (MoireVaeHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_VAE_HANDLE (self), NULL);
  return self->vae;
}
