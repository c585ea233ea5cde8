/* moire-vae-handle.c — a reference-counted, immutable loaded SD-VAE (a MoireFileHandle). */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-gui-util.h"
#include "moire-vae-handle.h"

struct _MoireVaeHandle
{
  MoireFileHandle parent_instance;

  moire_vae *vae;
};

G_DEFINE_FINAL_TYPE (MoireVaeHandle, moire_vae_handle, MOIRE_TYPE_FILE_HANDLE)

static void
moire_vae_handle_finalize (GObject *object)
{
  MoireVaeHandle *self = MOIRE_VAE_HANDLE (object);

  g_clear_pointer (&self->vae, moire_vae_free);
  G_OBJECT_CLASS (moire_vae_handle_parent_class)->finalize (object);
}

static gboolean
moire_vae_handle_load_file (MoireFileHandle  *handle,
                            const char       *path,
                            GError          **error)
{
  MoireVaeHandle *self = MOIRE_VAE_HANDLE (handle);
  moire_status status = moire_vae_load (path, &self->vae);

  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, NULL));
      return FALSE;
    }
  return TRUE;
}

static void
moire_vae_handle_class_init (MoireVaeHandleClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = moire_vae_handle_finalize;
  MOIRE_FILE_HANDLE_CLASS (klass)->load_file = moire_vae_handle_load_file;
}

static void
moire_vae_handle_init (MoireVaeHandle *self)
{
}

MoireVaeHandle *
moire_vae_handle_load (const char  *path,
                       GError     **error)
{
  return MOIRE_VAE_HANDLE (moire_file_handle_load (MOIRE_TYPE_VAE_HANDLE, path, error));
}

void
moire_vae_handle_load_async (const char          *path,
                             GCancellable        *cancellable,
                             GAsyncReadyCallback  callback,
                             gpointer             user_data)
{
  moire_file_handle_load_async (MOIRE_TYPE_VAE_HANDLE, path, cancellable, callback, user_data);
}

MoireVaeHandle *
moire_vae_handle_load_finish (GAsyncResult  *result,
                              GError       **error)
{
  return (MoireVaeHandle *) moire_file_handle_load_finish (result, error);
}

const char *
moire_vae_handle_get_path (MoireVaeHandle *self)
{
  return moire_file_handle_get_path (MOIRE_FILE_HANDLE (self));
}

const moire_vae *
moire_vae_handle_get_vae (MoireVaeHandle *self)
{
  g_return_val_if_fail (MOIRE_IS_VAE_HANDLE (self), NULL);
  return self->vae;
}
