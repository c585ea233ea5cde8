/* moire-vae-handle.h — a loaded SD-VAE shared (by reference) between the panel and the jobs
 * on worker threads, for latent models: with it the engine decodes results (and encodes
 * init images) properly instead of the approximate linear colour map. */
#pragma once

#include <gio/gio.h>

#include "moire-file-handle.h"
#include "moire.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_VAE_HANDLE (moire_vae_handle_get_type ())

G_DECLARE_FINAL_TYPE (MoireVaeHandle, moire_vae_handle, MOIRE, VAE_HANDLE, MoireFileHandle)

/* Typed forms of moire_file_handle_load*() and _get_path().
 * Loads synchronously (blocks: call from a worker thread, or in tests). */
MoireVaeHandle  *moire_vae_handle_load         (const char           *path,
                                                GError              **error);
/* Loads on a worker thread; the callback runs on the calling thread's main context. */
void             moire_vae_handle_load_async   (const char           *path,
                                                GCancellable         *cancellable,
                                                GAsyncReadyCallback   callback,
                                                gpointer              user_data);
MoireVaeHandle  *moire_vae_handle_load_finish  (GAsyncResult         *result,
                                                GError              **error);

const char      *moire_vae_handle_get_path     (MoireVaeHandle       *self);
const moire_vae *moire_vae_handle_get_vae      (MoireVaeHandle       *self);

G_END_DECLS
