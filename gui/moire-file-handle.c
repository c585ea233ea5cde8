/* moire-file-handle.c — loading an engine file into a handle, once for every kind of file. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-file-handle.h"

typedef struct
{
  char *path;
} MoireFileHandlePrivate;

G_DEFINE_ABSTRACT_TYPE_WITH_PRIVATE (MoireFileHandle, moire_file_handle, G_TYPE_OBJECT)

static void
moire_file_handle_finalize (GObject *object)
{
  MoireFileHandlePrivate *priv =
    moire_file_handle_get_instance_private (MOIRE_FILE_HANDLE (object));

  g_free (priv->path);
  G_OBJECT_CLASS (moire_file_handle_parent_class)->finalize (object);
}

static void
moire_file_handle_class_init (MoireFileHandleClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = moire_file_handle_finalize;
}

static void
moire_file_handle_init (MoireFileHandle *self)
{
}

MoireFileHandle *
moire_file_handle_load (GType        type,
                        const char  *path,
                        GError     **error)
{
  g_autoptr(MoireFileHandle) self = NULL;
  MoireFileHandlePrivate *priv;

  g_return_val_if_fail (g_type_is_a (type, MOIRE_TYPE_FILE_HANDLE), NULL);
  g_return_val_if_fail (path != NULL, NULL);

  self = g_object_new (type, NULL);
  priv = moire_file_handle_get_instance_private (self);
  priv->path = g_strdup (path);
  if (!MOIRE_FILE_HANDLE_GET_CLASS (self)->load_file (self, path, error))
    return NULL;
  return g_steal_pointer (&self);
}

/* What the loading thread needs: the kind of handle and the file. */
typedef struct
{
  GType  type;
  char  *path;
} LoadRequest;

static void
load_request_free (LoadRequest *request)
{
  g_free (request->path);
  g_free (request);
}

static void
load_thread (GTask        *task,
             gpointer      source_object,
             gpointer      task_data,
             GCancellable *cancellable)
{
  LoadRequest *request = task_data;
  GError *error = NULL;
  MoireFileHandle *handle = moire_file_handle_load (request->type, request->path, &error);

  if (handle == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, handle, g_object_unref);
}

void
moire_file_handle_load_async (GType                type,
                              const char          *path,
                              GCancellable        *cancellable,
                              GAsyncReadyCallback  callback,
                              gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  LoadRequest *request;

  g_return_if_fail (g_type_is_a (type, MOIRE_TYPE_FILE_HANDLE));
  g_return_if_fail (path != NULL);

  request = g_new0 (LoadRequest, 1);
  request->type = type;
  request->path = g_strdup (path);
  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, moire_file_handle_load_async);
  g_task_set_task_data (task, request, (GDestroyNotify) load_request_free);
  /* A result that nobody waits for any more is dropped instead of delivered. */
  g_task_set_return_on_cancel (task, TRUE);
  g_task_run_in_thread (task, load_thread);
}

MoireFileHandle *
moire_file_handle_load_finish (GAsyncResult  *result,
                               GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

const char *
moire_file_handle_get_path (MoireFileHandle *self)
{
  MoireFileHandlePrivate *priv;

  g_return_val_if_fail (MOIRE_IS_FILE_HANDLE (self), NULL);
  priv = moire_file_handle_get_instance_private (self);
  return priv->path;
}

void
moire_file_handle_cancel_load (GCancellable **pending)
{
  g_return_if_fail (pending != NULL);

  if (*pending != NULL)
    g_cancellable_cancel (*pending);
  g_clear_object (pending);
}

void
moire_file_handle_start_load (GType                 type,
                              const char           *path,
                              GCancellable        **pending,
                              GAsyncReadyCallback   callback,
                              gpointer              user_data)
{
  g_return_if_fail (pending != NULL);

  moire_file_handle_cancel_load (pending);
  *pending = g_cancellable_new ();
  moire_file_handle_load_async (type, path, *pending, callback, user_data);
}
