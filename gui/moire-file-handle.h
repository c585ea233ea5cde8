/* moire-file-handle.h — the base of the GUI's handles on loaded engine files (a model, an
 * SD-VAE): an immutable, reference-counted object made from one file, loaded on a worker
 * thread, that the panel and the jobs on worker threads share. The loading (synchronous or
 * on a worker thread, with cancellation) and the remembered path live here once; each kind of
 * file (MoireModelHandle, MoireVaeHandle) only says how to read its file. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define MOIRE_TYPE_FILE_HANDLE (moire_file_handle_get_type ())

G_DECLARE_DERIVABLE_TYPE (MoireFileHandle, moire_file_handle, MOIRE, FILE_HANDLE, GObject)

struct _MoireFileHandleClass
{
  GObjectClass parent_class;

  /* Reads @path into the new, still private handle; runs on the loading thread. */
  gboolean (*load_file) (MoireFileHandle  *self,
                         const char       *path,
                         GError          **error);
};

/* Loads a handle of @type (a subclass) synchronously (blocks: call from a worker thread, or
 * in tests). */
MoireFileHandle *moire_file_handle_load        (GType                 type,
                                                const char           *path,
                                                GError              **error);
/* Loads on a worker thread; the callback runs on the calling thread's main context. A result
 * nobody waits for any more (@cancellable cancelled) is dropped instead of delivered. */
void             moire_file_handle_load_async  (GType                 type,
                                                const char           *path,
                                                GCancellable         *cancellable,
                                                GAsyncReadyCallback   callback,
                                                gpointer              user_data);
MoireFileHandle *moire_file_handle_load_finish (GAsyncResult         *result,
                                                GError              **error);

const char      *moire_file_handle_get_path    (MoireFileHandle      *self);

/* The one pending load of a slot (the panel's model, its VAE): _cancel_load() cancels and
 * clears *@pending; _start_load() does that, then loads @path with a new *@pending. */
void             moire_file_handle_cancel_load (GCancellable        **pending);
void             moire_file_handle_start_load  (GType                 type,
                                                const char           *path,
                                                GCancellable        **pending,
                                                GAsyncReadyCallback   callback,
                                                gpointer              user_data);

G_END_DECLS
