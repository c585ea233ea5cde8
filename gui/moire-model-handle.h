/* moire-model-handle.h — a loaded engine model shared (by reference) between the panel and
 * the jobs running on worker threads. A moire_model is immutable once loaded, so sharing is
 * safe; the handle frees it when the last reference goes. */
#pragma once

#include <gio/gio.h>

#include "moire-file-handle.h"
#include "moire.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_MODEL_HANDLE (moire_model_handle_get_type ())

G_DECLARE_FINAL_TYPE (MoireModelHandle, moire_model_handle, MOIRE, MODEL_HANDLE, MoireFileHandle)

/* Typed forms of moire_file_handle_load*() and _get_path().
 * Loads synchronously (blocks: call from a worker thread, or in tests). */
MoireModelHandle   *moire_model_handle_load          (const char           *path,
                                                      GError              **error);
/* Loads on a worker thread; the callback runs on the calling thread's main context. */
void                moire_model_handle_load_async    (const char           *path,
                                                      GCancellable         *cancellable,
                                                      GAsyncReadyCallback   callback,
                                                      gpointer              user_data);
MoireModelHandle   *moire_model_handle_load_finish   (GAsyncResult         *result,
                                                      GError              **error);

const char         *moire_model_handle_get_path      (MoireModelHandle     *self);
/* "tiny_qkv.safetensors" */
const char         *moire_model_handle_get_name      (MoireModelHandle     *self);
const moire_model  *moire_model_handle_get_model     (MoireModelHandle     *self);
/* Whether prompts name classes (DiT-MoE) rather than being free text. */
/* A text model with a word vocabulary (EC-DiT): completion works word by word, and words
 * outside it can be marked while typing (moire_model_check_prompt). */
gboolean            moire_model_handle_has_vocabulary          (MoireModelHandle *self);
gboolean            moire_model_handle_is_class_conditional (MoireModelHandle *self);

/* Suggestions for completing a prompt: the class names of a class-conditional model, each
 * synonym of "tench, Tinca tinca" separately; NULL-terminated, owned by the handle; empty
 * when the model has none. When text-prompt families (EC-DiT) land, their vocabulary or
 * prompt history plugs in here. */
const char * const *moire_model_handle_get_prompt_suggestions (MoireModelHandle *self);

/* One line for the user: "tiny_qkv · DiT-MoE · 1.2 M parameters · 64×64". */
char               *moire_model_handle_describe      (MoireModelHandle     *self);

G_END_DECLS
