/* moire-job.c — a generation on a worker thread, reporting to the main loop. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#include "moire-gui-util.h"
#include "moire-job.h"

struct _MoireJob
{
  GObject            parent_instance;

  /* Inputs: set before the run, then only read (by the worker). */
  GMainContext      *context;
  MoireModelHandle  *model;
  MoireGenSettings  *settings;
  moire_image       *init_image;
  moire_image       *mask;
  guint64            seed;
  int                preview_interval;
  int                preview_size;
  int                pause_at_step;
  gboolean           stream;
  int                stream_rounds;
  gboolean           routing;
  MoireVaeHandle    *vae;

  /* Main thread only. */
  GCancellable      *cancellable;
  gulong             cancelled_id;
  gboolean           running;
  gboolean           finished;

  /* Shared with the worker, under `lock`. */
  GMutex             lock;
  GCond              cond;
  moire_ctx         *ctx;
  gboolean           cancelled;
  gboolean           paused;
  GdkTexture        *pending_frame;
  moire_progress     frame_progress;
  gboolean           frame_scheduled;
  moire_progress     progress;
  gboolean           progress_scheduled;
  guint              frames_posted, frames_shown, frames_dropped;
  GPtrArray         *warnings;
  GQueue             rounds;          /* RoundReport, oldest first: all are delivered   */
  gboolean           rounds_scheduled;

  /* Written by the worker before the task returns, read after moire_job_run_finish. */
  int                fitting_width, fitting_height; /* a too-large size's fix, or 0 */
};

/* One round of a stream, on its way to the main context. */
typedef struct
{
  GPtrArray         *items;
  int                round;
  moire_stream_info  info;
} RoundReport;

static void
round_report_free (RoundReport *report)
{
  g_ptr_array_unref (report->items);
  g_free (report);
}

G_DEFINE_FINAL_TYPE (MoireJob, moire_job, G_TYPE_OBJECT)

enum {
  SIGNAL_PROGRESS,
  SIGNAL_PREVIEW,
  SIGNAL_PAUSED,
  SIGNAL_ROUND,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

static void
moire_job_finalize (GObject *object)
{
  MoireJob *self = MOIRE_JOB (object);

  g_clear_object (&self->model);
  g_clear_object (&self->vae);
  g_clear_object (&self->settings);
  g_clear_object (&self->pending_frame);
  g_clear_pointer (&self->init_image, moire_image_free);
  g_clear_pointer (&self->mask, moire_image_free);
  g_clear_pointer (&self->context, g_main_context_unref);
  g_clear_pointer (&self->warnings, g_ptr_array_unref);
  g_queue_clear_full (&self->rounds, (GDestroyNotify) round_report_free);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  G_OBJECT_CLASS (moire_job_parent_class)->finalize (object);
}

static void
moire_job_class_init (MoireJobClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = moire_job_finalize;

  /**
   * MoireJob::progress:
   * @image_index: 0-based image of the batch
   * @image_count: images in the batch
   * @step: steps done of this image
   * @step_count: steps of this image
   * @remaining_s: estimated seconds left for the whole job, < 0 when unknown
   */
  signals[SIGNAL_PROGRESS] =
    g_signal_new ("progress", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 5,
                  G_TYPE_INT, G_TYPE_INT, G_TYPE_INT, G_TYPE_INT, G_TYPE_DOUBLE);
  /**
   * MoireJob::preview:
   * @texture: the current denoised estimate
   * @image_index: 0-based image of the batch
   * @step: the step it belongs to
   * @step_count: steps of this image
   */
  signals[SIGNAL_PREVIEW] =
    g_signal_new ("preview", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 4,
                  GDK_TYPE_TEXTURE, G_TYPE_INT, G_TYPE_INT, G_TYPE_INT);
  signals[SIGNAL_PAUSED] =
    g_signal_new ("paused", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_INT);
  /**
   * MoireJob::round:
   * @items: (element-type MoireHistoryItem): one new image per chain
   * @round: 1-based round of the stream
   * @nfe_per_image: model evaluations per image of this round
   * @nfe_one_off: burn-in and calibration, spent once
   *
   * Stream mode: a round of variations, emitted for every round (none is dropped, also
   * after a cancel), before the job completes.
   */
  signals[SIGNAL_ROUND] =
    g_signal_new ("round", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                  NULL, NULL, NULL, G_TYPE_NONE, 4,
                  G_TYPE_PTR_ARRAY, G_TYPE_INT, G_TYPE_INT, G_TYPE_INT);
}

static void
moire_job_init (MoireJob *self)
{
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
  self->preview_interval = 1;
  self->preview_size = 256;
  self->warnings = g_ptr_array_new_with_free_func (g_free);
}

MoireJob *
moire_job_new (MoireModelHandle  *model,
               MoireGenSettings  *settings,
               const moire_image *init_image,
               guint64            seed)
{
  MoireJob *self;

  g_return_val_if_fail (MOIRE_IS_MODEL_HANDLE (model), NULL);
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (settings), NULL);

  self = g_object_new (MOIRE_TYPE_JOB, NULL);
  self->model = g_object_ref (model);
  self->settings = moire_gen_settings_copy (settings);
  self->seed = seed;
  if (init_image != NULL)
    {
      self->init_image = moire_image_new (init_image->width, init_image->height,
                                          init_image->channels);
      if (self->init_image != NULL)
        memcpy (self->init_image->pixels, init_image->pixels,
                (gsize) init_image->width * init_image->height * init_image->channels);
    }
  return self;
}

void
moire_job_set_vae (MoireJob       *self,
                   MoireVaeHandle *vae)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  g_set_object (&self->vae, vae);
}

void
moire_job_set_mask (MoireJob          *self,
                    const moire_image *mask)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  g_return_if_fail (mask == NULL || mask->channels == 1);

  g_clear_pointer (&self->mask, moire_image_free);
  if (mask != NULL)
    {
      self->mask = moire_image_new (mask->width, mask->height, 1);
      if (self->mask != NULL)
        memcpy (self->mask->pixels, mask->pixels, (gsize) mask->width * mask->height);
    }
}

void
moire_job_set_stream (MoireJob *self,
                      gboolean  stream,
                      int       max_rounds)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  self->stream = stream;
  self->stream_rounds = MAX (max_rounds, 0);
}

gboolean
moire_job_get_stream (MoireJob *self)
{
  g_return_val_if_fail (MOIRE_IS_JOB (self), FALSE);
  return self->stream;
}

void
moire_job_set_routing_map (MoireJob *self,
                           gboolean  routing)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  self->routing = routing;
}

void
moire_job_set_preview_interval (MoireJob *self,
                                int       interval)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  self->preview_interval = MAX (interval, 0);
}

void
moire_job_set_preview_size (MoireJob *self,
                            int       min_size)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  self->preview_size = MAX (min_size, 0);
}

void
moire_job_set_pause_at_step (MoireJob *self,
                             int       step)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running);
  self->pause_at_step = MAX (step, 0);
}

void
moire_job_resume (MoireJob *self)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_mutex_lock (&self->lock);
  self->paused = FALSE;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

void
moire_job_cancel (MoireJob *self)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_mutex_lock (&self->lock);
  self->cancelled = TRUE;
  self->paused = FALSE;
  if (self->ctx != NULL)
    moire_ctx_cancel (self->ctx);
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

gboolean
moire_job_is_running (MoireJob *self)
{
  g_return_val_if_fail (MOIRE_IS_JOB (self), FALSE);
  return self->running;
}

guint64
moire_job_get_seed (MoireJob *self)
{
  g_return_val_if_fail (MOIRE_IS_JOB (self), 0);
  return self->seed;
}

MoireGenSettings *
moire_job_get_settings (MoireJob *self)
{
  g_return_val_if_fail (MOIRE_IS_JOB (self), NULL);
  return self->settings;
}

GStrv
moire_job_dup_warnings (MoireJob *self)
{
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();

  g_return_val_if_fail (MOIRE_IS_JOB (self), NULL);
  g_mutex_lock (&self->lock);
  for (guint i = 0; i < self->warnings->len; i++)
    g_strv_builder_add (builder, g_ptr_array_index (self->warnings, i));
  g_mutex_unlock (&self->lock);
  return g_strv_builder_end (builder);
}

void
moire_job_get_frame_stats (MoireJob *self,
                           guint    *posted,
                           guint    *shown,
                           guint    *dropped)
{
  g_return_if_fail (MOIRE_IS_JOB (self));
  g_mutex_lock (&self->lock);
  if (posted != NULL)
    *posted = self->frames_posted;
  if (shown != NULL)
    *shown = self->frames_shown;
  if (dropped != NULL)
    *dropped = self->frames_dropped;
  g_mutex_unlock (&self->lock);
}

/* --- main-context side ------------------------------------------------------------------ */

static void
attach_idle (MoireJob    *self,
             GSourceFunc  func)
{
  GSource *source = g_idle_source_new ();

  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, func, g_object_ref (self), g_object_unref);
  g_source_set_static_name (source, "[moire-job]");
  g_source_attach (source, self->context);
  g_source_unref (source);
}

static gboolean
deliver_frame (gpointer data)
{
  MoireJob *self = data;
  g_autoptr(GdkTexture) frame = NULL;
  moire_progress progress;

  g_mutex_lock (&self->lock);
  frame = g_steal_pointer (&self->pending_frame);
  progress = self->frame_progress;
  self->frame_scheduled = FALSE;
  if (frame != NULL && !self->finished && !self->cancelled)
    self->frames_shown++;
  g_mutex_unlock (&self->lock);

  if (frame != NULL && !self->finished && !self->cancelled)
    g_signal_emit (self, signals[SIGNAL_PREVIEW], 0, frame,
                   progress.image_index, progress.step, progress.step_count);
  return G_SOURCE_REMOVE;
}

static gboolean
deliver_progress (gpointer data)
{
  MoireJob *self = data;
  moire_progress progress;

  g_mutex_lock (&self->lock);
  progress = self->progress;
  self->progress_scheduled = FALSE;
  g_mutex_unlock (&self->lock);

  if (!self->finished)
    g_signal_emit (self, signals[SIGNAL_PROGRESS], 0, progress.image_index, progress.image_count,
                   progress.step, progress.step_count, progress.remaining_s);
  return G_SOURCE_REMOVE;
}

/* Every queued round, in order; from the idle source and, before the job completes, from
 * run_done, so no round is lost to a cancel. */
static void
flush_rounds (MoireJob *self)
{
  for (;;)
    {
      RoundReport *report;

      g_mutex_lock (&self->lock);
      report = g_queue_pop_head (&self->rounds);
      g_mutex_unlock (&self->lock);
      if (report == NULL)
        break;
      g_signal_emit (self, signals[SIGNAL_ROUND], 0, report->items, report->round,
                     report->info.nfe_per_image, report->info.nfe_one_off);
      round_report_free (report);
    }
}

static gboolean
deliver_rounds (gpointer data)
{
  MoireJob *self = data;

  g_mutex_lock (&self->lock);
  self->rounds_scheduled = FALSE;
  g_mutex_unlock (&self->lock);
  if (!self->finished)
    flush_rounds (self);
  return G_SOURCE_REMOVE;
}

static gboolean
deliver_paused (gpointer data)
{
  MoireJob *self = data;

  if (!self->finished)
    g_signal_emit (self, signals[SIGNAL_PAUSED], 0, self->pause_at_step);
  return G_SOURCE_REMOVE;
}

/* --- worker side ------------------------------------------------------------------------ */

static void
on_engine_log (moire_log_level  level,
               const char      *message,
               void            *user_data)
{
  MoireJob *self = user_data;

  if (level < MOIRE_LOG_WARNING)
    {
      g_debug ("engine: %s", message);
      return;
    }
  g_mutex_lock (&self->lock);
  if (!g_ptr_array_find_with_equal_func (self->warnings, message, g_str_equal, NULL))
    g_ptr_array_add (self->warnings, g_strdup (message));
  g_mutex_unlock (&self->lock);
}

static void
on_engine_preview (const moire_progress *progress,
                   const moire_image    *preview,
                   void                 *user_data)
{
  MoireJob *self = user_data;
  /* Built here, off the main thread: textures are immutable and thread-safe. */
  GdkTexture *texture = moire_gui_texture_new_for_image (preview, self->preview_size);
  GdkTexture *replaced;
  gboolean schedule;

  g_mutex_lock (&self->lock);
  replaced = g_steal_pointer (&self->pending_frame);
  self->pending_frame = texture;
  self->frame_progress = *progress;
  self->frames_posted++;
  if (replaced != NULL)
    self->frames_dropped++;
  schedule = !self->frame_scheduled;
  self->frame_scheduled = TRUE;
  g_mutex_unlock (&self->lock);

  g_clear_object (&replaced);
  if (schedule)
    attach_idle (self, deliver_frame);
}

static bool
on_engine_progress (const moire_progress *progress,
                    void                 *user_data)
{
  MoireJob *self = user_data;
  gboolean schedule, cancelled;

  g_mutex_lock (&self->lock);
  self->progress = *progress;
  schedule = !self->progress_scheduled;
  self->progress_scheduled = TRUE;
  g_mutex_unlock (&self->lock);
  if (schedule)
    attach_idle (self, deliver_progress);

  g_mutex_lock (&self->lock);
  if (self->pause_at_step > 0 && progress->image_index == 0 &&
      progress->step == self->pause_at_step && !self->cancelled)
    {
      self->paused = TRUE;
      attach_idle (self, deliver_paused);
      while (self->paused && !self->cancelled)
        g_cond_wait (&self->cond, &self->lock);
    }
  cancelled = self->cancelled;
  g_mutex_unlock (&self->lock);
  return !cancelled;
}

/* The legend of a rendered routing map (MOIRE_ROUTING_VIEW_DEFAULT). */
static char *
routing_legend (const moire_routing_map *map)
{
  if (map->expert_choice)
    /* Translators: legend of the expert-routing overlay of an EC-DiT model; %d is the
       number of experts, %d the number of layers averaged */
    return g_strdup_printf (_("Experts per token: 0 (violet) … %d (yellow), mean of %d layers"),
                            map->num_experts, map->layer_count);
  /* Translators: legend of the expert-routing overlay of a token-choice model; %d is the
     number of experts, %d the number of layers averaged */
  return g_strdup_printf (_("Each colour is one of %d experts (mixed where they share), mean of %d layers"),
                          map->num_experts, map->layer_count);
}

/* History items for `images` of a run; `map` (may be NULL) gives each its routing overlay. */
static GPtrArray *
make_items (MoireJob                    *self,
            const moire_model           *model,
            const moire_generate_params *params,
            moire_image                **images,
            int                          count,
            const moire_routing_map     *map,
            int                          variation)
{
  GPtrArray *items = g_ptr_array_new_with_free_func (g_object_unref);
  g_autofree char *legend = map != NULL ? routing_legend (map) : NULL;

  for (int i = 0; i < count; i++)
    {
      g_autoptr(MoireGenSettings) settings = moire_gen_settings_copy (self->settings);
      g_autofree char *parameters = NULL;
      g_autofree char *json = NULL;
      MoireHistoryItem *item;
      char *text;

      /* Image i of a batch is image 0 of a run with seed + i (for a stream: chain i). */
      moire_gen_settings_set_seed (settings, self->seed + (guint64) i);
      text = moire_format_parameters (model, params, i);
      parameters = g_strdup (text);
      free (text);
      text = moire_format_settings_json (model, params, i);
      json = g_strdup (text);
      free (text);
      item = moire_history_item_new (settings, images[i], parameters, json);
      moire_history_item_set_variation (item, variation);
      if (map != NULL && i < map->image_count)
        {
          moire_image *rendered = NULL;

          /* Rendered here, off the main thread, at the image's size. */
          if (moire_routing_map_render (map, i, MOIRE_ROUTING_LAYER_MEAN, MOIRE_ROUTING_VIEW_DEFAULT,
                                        images[i]->width, images[i]->height, &rendered) == MOIRE_OK)
            moire_history_item_set_routing (item, rendered, legend);
          moire_image_free (rendered);
        }
      g_ptr_array_add (items, item);
    }
  return items;
}

/* Stream mode: burn-in, then rounds until the limit or a cancel; every round is queued for
 * the main context as soon as it is made. Returns the engine status of the end. */
static moire_status
run_stream (MoireJob                    *self,
            moire_ctx                   *ctx,
            const moire_model           *model,
            const moire_generate_params *params,
            const moire_callbacks       *callbacks,
            int                         *out_rounds)
{
  moire_stream *stream = NULL;
  moire_status status;
  int round = 0;

  *out_rounds = 0;
  status = moire_stream_new (ctx, model, params, callbacks, &stream);
  while (status == MOIRE_OK && (self->stream_rounds == 0 || round < self->stream_rounds))
    {
      moire_image **images = NULL;
      RoundReport *report;
      gboolean cancelled, schedule;
      int count = 0;

      /* moire_stream_next clears the context's cancel flag: check ours first. */
      g_mutex_lock (&self->lock);
      cancelled = self->cancelled;
      g_mutex_unlock (&self->lock);
      if (cancelled)
        {
          status = MOIRE_ERROR_CANCELLED;
          break;
        }
      status = moire_stream_next (stream, &images, &count);
      if (status != MOIRE_OK)
        break;
      report = g_new0 (RoundReport, 1);
      report->round = ++round;
      moire_stream_get_info (stream, &report->info);
      report->items = make_items (self, model, params, images, count, NULL, round);
      moire_images_free (images, count);

      g_mutex_lock (&self->lock);
      g_queue_push_tail (&self->rounds, report);
      schedule = !self->rounds_scheduled;
      self->rounds_scheduled = TRUE;
      g_mutex_unlock (&self->lock);
      if (schedule)
        attach_idle (self, deliver_rounds);
      *out_rounds = round;
    }
  moire_stream_free (stream);
  return status;
}

static void
run_thread (GTask        *task,
            gpointer      source_object,
            gpointer      task_data,
            GCancellable *cancellable)
{
  MoireJob *self = source_object;
  const moire_model *model = moire_model_handle_get_model (self->model);
  moire_generate_params params;
  moire_ctx_params ctx_params = moire_ctx_params_default ();
  moire_callbacks callbacks = { 0 };
  moire_image **images = NULL;
  moire_routing_map *map = NULL;
  moire_ctx *ctx = NULL;
  GError *error = NULL;
  GPtrArray *items;
  moire_status status;
  int count = 0, rounds = 0;

  if (!moire_gen_settings_to_params (self->settings, self->seed, &params, &error))
    {
      g_task_return_error (task, error);
      return;
    }
  params.vae = self->vae != NULL ? moire_vae_handle_get_vae (self->vae) : NULL;
  params.init_image = self->init_image;
  params.mask = self->init_image != NULL ? self->mask : NULL;
  /* Streams make no routing maps (moire.h): only single runs record one. */
  params.routing_map = self->routing && !self->stream ? &map : NULL;

  ctx_params.log = on_engine_log;
  ctx_params.log_user_data = self;
  status = moire_ctx_new (&ctx_params, &ctx);
  if (status != MOIRE_OK)
    {
      g_task_return_error (task, moire_gui_error_from_status (status, NULL));
      return;
    }

  g_mutex_lock (&self->lock);
  self->ctx = ctx;
  if (self->cancelled)
    moire_ctx_cancel (ctx);
  g_mutex_unlock (&self->lock);

  callbacks.progress = on_engine_progress;
  /* A stream's rounds are its preview: each is shown as it arrives. */
  callbacks.preview = self->preview_interval > 0 && !self->stream ? on_engine_preview : NULL;
  callbacks.preview_interval = self->preview_interval;
  callbacks.user_data = self;
  if (self->stream)
    status = run_stream (self, ctx, model, &params, &callbacks, &rounds);
  else
    status = moire_generate (ctx, model, &params, &callbacks, &images, &count);
  if (status != MOIRE_OK && status != MOIRE_ERROR_CANCELLED)
    {
      error = moire_gui_error_from_status (status, NULL);
      /* the size did not fit in memory: remember the largest that does, for a one-click fix */
      if (!moire_last_error_fitting_size (&self->fitting_width, &self->fitting_height))
        self->fitting_width = self->fitting_height = 0;
    }

  g_mutex_lock (&self->lock);
  self->ctx = NULL;
  g_mutex_unlock (&self->lock);
  moire_ctx_free (ctx);

  /* A stream ends with a cancel: after its first round that is its normal end (the rounds
   * went out through "round"), before it (in the burn-in) a cancel like any other. */
  if (self->stream && rounds > 0 && error == NULL)
    {
      g_task_return_pointer (task, g_ptr_array_new_with_free_func (g_object_unref),
                             (GDestroyNotify) g_ptr_array_unref);
      return;
    }
  if (status == MOIRE_ERROR_CANCELLED)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CANCELLED, _("Generation cancelled"));
      return;
    }
  if (error != NULL)
    {
      g_task_return_error (task, error);
      return;
    }

  items = make_items (self, model, &params, images, count, map, 0);
  moire_images_free (images, count);
  moire_routing_map_free (map);
  g_task_return_pointer (task, items, (GDestroyNotify) g_ptr_array_unref);
}

static void
run_done (GObject      *source,
          GAsyncResult *result,
          gpointer      user_data)
{
  MoireJob *self = MOIRE_JOB (source);
  GTask *outer = user_data;

  /* Rounds still queued reach the caller before it hears that the job ended. */
  flush_rounds (self);
  self->running = FALSE;
  self->finished = TRUE;
  if (self->cancellable != NULL)
    {
      g_cancellable_disconnect (self->cancellable, self->cancelled_id);
      g_clear_object (&self->cancellable);
    }
  g_task_return_pointer (outer, g_object_ref (result), g_object_unref);
  g_object_unref (outer);
}

static void
on_cancellable_cancelled (GCancellable *cancellable,
                          gpointer      user_data)
{
  moire_job_cancel (MOIRE_JOB (user_data));
}

void
moire_job_run_async (MoireJob            *self,
                     GCancellable        *cancellable,
                     GAsyncReadyCallback  callback,
                     gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  GTask *outer;

  g_return_if_fail (MOIRE_IS_JOB (self));
  g_return_if_fail (!self->running && !self->finished);

  self->context = g_main_context_ref_thread_default ();
  self->running = TRUE;
  if (cancellable != NULL)
    {
      self->cancellable = g_object_ref (cancellable);
      self->cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (on_cancellable_cancelled),
                                                  self, NULL);
    }

  /* The outer task marks the job finished before the caller hears of it, so late preview
   * and progress reports are dropped. */
  outer = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (outer, moire_job_run_async);
  task = g_task_new (self, NULL, run_done, outer);
  g_task_run_in_thread (task, run_thread);
}

gboolean
moire_job_get_fitting_size (MoireJob *self,
                            int      *width,
                            int      *height)
{
  g_return_val_if_fail (MOIRE_IS_JOB (self), FALSE);
  if (self->fitting_width <= 0 || self->fitting_height <= 0)
    return FALSE;
  *width = self->fitting_width;
  *height = self->fitting_height;
  return TRUE;
}

GPtrArray *
moire_job_run_finish (MoireJob      *self,
                      GAsyncResult  *result,
                      GError       **error)
{
  g_autoptr(GAsyncResult) inner = NULL;

  g_return_val_if_fail (MOIRE_IS_JOB (self), NULL);
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);

  inner = g_task_propagate_pointer (G_TASK (result), NULL);
  if (inner == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CANCELLED, _("Generation cancelled"));
      return NULL;
    }
  return g_task_propagate_pointer (G_TASK (inner), error);
}
