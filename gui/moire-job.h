/* moire-job.h — one generation on a worker thread.
 *
 * The job snapshots its inputs (settings copy, init image copy, a reference to the immutable
 * model), runs moire_generate() in a GTask thread and reports back on the main context of the
 * thread that created it:
 *   - "progress": the latest step (coalesced: one pending report at most);
 *   - "preview": the latest denoised estimate as a texture, built on the worker thread (a
 *     frame queue of one: a frame not yet shown is replaced by a newer one, so a slow main
 *     loop drops frames instead of piling them up or slowing the engine);
 *   - the result: one MoireHistoryItem per image, with its A1111 and JSON texts.
 * moire_job_cancel() maps to moire_ctx_cancel(): the engine stops at the next step. */
#pragma once

#include <gtk/gtk.h>

#include "moire.h"
#include "moire-gen-settings.h"
#include "moire-history-item.h"
#include "moire-model-handle.h"
#include "moire-vae-handle.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_JOB (moire_job_get_type ())

G_DECLARE_FINAL_TYPE (MoireJob, moire_job, MOIRE, JOB, GObject)

/* `settings` and `init_image` (may be NULL) are copied; `seed` is the seed of image 0. */
MoireJob   *moire_job_new                 (MoireModelHandle     *model,
                                           MoireGenSettings     *settings,
                                           const moire_image    *init_image,
                                           guint64               seed);
/* Inpainting: a soft mask (1 channel, 255 = regenerate) over the init image (copied; NULL
 * clears it; ignored without an init image). Set before running. */
void        moire_job_set_mask            (MoireJob             *self,
                                           const moire_image    *mask);
/* DMCMC stream mode (moire_stream_new/next): the burn-in, then a round of new variations (one
 * per chain, i.e. per batch image) after another until `max_rounds` (0 = until cancelled).
 * Each round is emitted as "round" (history items, their variation set) as soon as it is
 * made; the job then completes with an empty array, also when cancelled after its first
 * round (a cancel is how an endless stream stops). No live preview frames: the rounds are
 * the preview. Set before running. */
void        moire_job_set_stream          (MoireJob             *self,
                                           gboolean              stream,
                                           int                   max_rounds);
gboolean    moire_job_get_stream          (MoireJob             *self);
/* Record the run's expert routing (moire_generate_params.routing_map): each result gets its
 * rendered map (moire_history_item_get_routing_texture). Streams record none. Set before
 * running. */
void        moire_job_set_routing_map     (MoireJob             *self,
                                           gboolean              routing);
/* Every `interval` steps (0 = no previews; default 1). Set before running. */
void        moire_job_set_preview_interval(MoireJob             *self,
                                           int                   interval);
/* Smallest side of preview textures: smaller images are enlarged (nearest) to it. */
void        moire_job_set_preview_size    (MoireJob             *self,
                                           int                   min_size);
void        moire_job_run_async           (MoireJob             *self,
                                           GCancellable         *cancellable,
                                           GAsyncReadyCallback   callback,
                                           gpointer              user_data);
/* The results (MoireHistoryItem, in batch order) or NULL: G_IO_ERROR_CANCELLED after a
 * cancel, MOIRE_GUI_ERROR with the engine's status otherwise. */
GPtrArray  *moire_job_run_finish          (MoireJob             *self,
                                           GAsyncResult         *result,
                                           GError              **error);
/* After the job failed because its size needs more memory than there is: TRUE with the
 * largest width × height of the same shape that fits (moire_last_error_fitting_size). */
gboolean    moire_job_get_fitting_size    (MoireJob             *self,
                                           int                  *width,
                                           int                  *height);
/* Thread-safe; harmless before the start and after the end. */
void        moire_job_cancel              (MoireJob             *self);
gboolean    moire_job_is_running          (MoireJob             *self);
guint64     moire_job_get_seed            (MoireJob             *self);
MoireGenSettings *moire_job_get_settings  (MoireJob             *self);
/* Engine warnings seen during the run (e.g. "approximate colour preview"), NULL-terminated. */
GStrv       moire_job_dup_warnings        (MoireJob             *self);
/* Preview frames handed to the main context, shown ("preview" emitted) and replaced unseen. */
void        moire_job_get_frame_stats     (MoireJob             *self,
                                           guint                *posted,
                                           guint                *shown,
                                           guint                *dropped);

/* Test hook (self-tests and screenshots): the worker waits after step `step` of image 0
 * (its preview frame is posted first) and "paused" is emitted, until moire_job_resume() or
 * a cancel. 0 = never (default). */
void        moire_job_set_pause_at_step   (MoireJob             *self,
                                           int                   step);
void        moire_job_resume              (MoireJob             *self);

/* Latent models: decode (and encode the init image) with this SD-VAE instead of the
 * approximate colour map. NULL = none. Before the run. */
void        moire_job_set_vae             (MoireJob             *self,
                                           MoireVaeHandle       *vae);

G_END_DECLS
