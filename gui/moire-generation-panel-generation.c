/* moire-generation-panel-generation.c — the panel running jobs: a MoireJob per request, the queue,
 * progress and previews, DMCMC streams, results into the history. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-generation-panel-private.h"
#include "moire-size-fix.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

/* --- generation ---------------------------------------------------------------------------- */

static void
set_busy (MoireGenerationPanel *self,
          gboolean              busy)
{
  (void) busy; /* Generate stays: while one runs it queues the next; Stop follows the action */
  panel_update_actions (self);
  g_object_notify_by_pspec (G_OBJECT (self), panel_properties[PROP_BUSY]);
}

static void
on_job_progress (MoireJob             *job,
                 int                   image_index,
                 int                   image_count,
                 int                   step,
                 int                   step_count,
                 double                remaining_s,
                 MoireGenerationPanel *self)
{
  g_autoptr(GString) text = g_string_new (NULL);
  double total = (double) MAX (image_count, 1) * MAX (step_count, 1);

  if (moire_job_get_stream (job))
    {
      /* One "step" per model evaluation of the current phase, for all chains at once. The
       * label keeps the last round's summary once there is one. */
      gtk_progress_bar_set_fraction (self->progress_bar,
                                     CLAMP ((double) step / MAX (step_count, 1), 0, 1));
      if (self->stream_round == 0)
        {
          /* Translators: a DMCMC stream before its first image, "Burn-in: 12/38 model evaluations" */
          g_autofree char *burn_in = g_strdup_printf (_("Burn-in: %d/%d model evaluations"),
                                                      step, step_count);

          gtk_label_set_text (self->progress_label, burn_in);
        }
      return;
    }

  gtk_progress_bar_set_fraction (self->progress_bar,
                                 CLAMP (((double) image_index * step_count + step) / total, 0, 1));
  /* Translators: progress, "Step 12/50" */
  g_string_printf (text, _("Step %d/%d"), step, step_count);
  if (image_count > 1)
    /* Translators: progress, appended to "Step 12/50": " · image 2/4" */
    g_string_append_printf (text, _(" · image %d/%d"), image_index + 1, image_count);
  if (remaining_s >= 0)
    {
      g_autofree char *left = moire_gui_format_duration (remaining_s);

      /* Translators: progress, appended: " · 3 s left" */
      g_string_append_printf (text, _(" · %s left"), left);
    }
  gtk_label_set_text (self->progress_label, text->str);
}

static void
on_job_preview (MoireJob             *job,
                GdkTexture           *texture,
                int                   image_index,
                int                   step,
                int                   step_count,
                MoireGenerationPanel *self)
{
  g_autofree char *badge = NULL;

  gtk_picture_set_paintable (self->preview_picture, GDK_PAINTABLE (texture));
  gtk_stack_set_visible_child_name (self->preview_stack, "image");
  /* Translators: badge on the live preview, "Preview · step 12/50" */
  badge = g_strdup_printf (_("Preview · step %d/%d"), step, step_count);
  gtk_label_set_text (self->preview_badge, badge);
  gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), TRUE);
  g_signal_emit (self, panel_signals[SIGNAL_PREVIEW_FRAME], 0, texture, step, step_count);
}

static char *
stream_summary (MoireGenerationPanel *self)
{
  /* Translators: status of a DMCMC stream, "variation 3 · 10 NFE per image · burn-in 38 NFE
     once"; NFE = model evaluations */
  return g_strdup_printf (_("variation %d · %d NFE per image · burn-in %d NFE once"),
                          self->stream_round, self->stream_nfe, self->stream_one_off);
}

static void
on_job_round (MoireJob             *job,
              GPtrArray            *items,
              int                   round,
              int                   nfe_per_image,
              int                   nfe_one_off,
              MoireGenerationPanel *self)
{
  g_autofree char *summary = NULL;

  self->stream_round = round;
  self->stream_nfe = nfe_per_image;
  self->stream_one_off = nfe_one_off;
  summary = stream_summary (self);
  gtk_label_set_text (self->progress_label, summary);
  gtk_progress_bar_set_fraction (self->progress_bar, 0);

  /* Into the history as they arrive (a round keeps its chain order); the newest shows. */
  for (guint i = items->len; i > 0; i--)
    moire_history_prepend (self->history, g_ptr_array_index (items, i - 1));
  if (items->len > 0)
    panel_show_item (self, g_ptr_array_index (items, 0));
  for (guint i = 0; i < items->len; i++)
    g_signal_emit (self, panel_signals[SIGNAL_RESULT_READY], 0, g_ptr_array_index (items, i));
}

static void
on_job_paused (MoireJob             *job,
               int                   step,
               MoireGenerationPanel *self)
{
  g_signal_emit (self, panel_signals[SIGNAL_PAUSED], 0, step);
}

static void
job_done (GObject      *source,
          GAsyncResult *result,
          gpointer      user_data)
{
  g_autoptr(MoireGenerationPanel) self = user_data;
  MoireJob *job = MOIRE_JOB (source);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) items = moire_job_run_finish (job, result, &error);
  g_auto(GStrv) warnings = moire_job_dup_warnings (job);
  double elapsed = (g_get_monotonic_time () - self->job_started_us) / 1e6;
  guint posted = 0, shown = 0, dropped = 0;

  g_signal_handlers_disconnect_by_data (job, self);
  moire_job_get_frame_stats (job, &posted, &shown, &dropped);
  g_debug ("job done: %u preview frames posted, %u shown, %u replaced unseen", posted, shown, dropped);
  if (self->job == job)
    g_clear_object (&self->job);

  if (items == NULL)
    {
      gtk_progress_bar_set_fraction (self->progress_bar, 0);
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          gtk_label_set_text (self->progress_label, _("Cancelled"));
          gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), FALSE);
          if (self->current_item != NULL)
            panel_show_item (self, self->current_item);
        }
      else
        {
          g_autofree char *message = g_strdup_printf (_("Generation failed: %s"), error->message);

          gtk_label_set_text (self->progress_label, _("Failed"));
          if (!moire_size_fix_offer (self, job, message)) /* "Use W × H" when too large */
            moire_generation_panel_show_message (self, GTK_MESSAGE_ERROR, message);
        }
      set_busy (self, FALSE);
      g_signal_emit (self, panel_signals[SIGNAL_FINISHED], 0, FALSE);
      panel_start_next_queued (self);
      return;
    }

  if (moire_job_get_stream (job))
    {
      g_autofree char *summary = stream_summary (self);
      /* Translators: after a DMCMC stream stopped; %s is "variation 3 · 10 NFE per image · …" */
      g_autofree char *text = g_strdup_printf (_("Stopped at %s"), summary);

      gtk_progress_bar_set_fraction (self->progress_bar, 1.0);
      gtk_label_set_text (self->progress_label, text);
    }
  else
  {
    g_autofree char *took = moire_gui_format_duration (elapsed);
    /* Translators: progress after a generation, "Done in 3 s" */
    g_autofree char *text = g_strdup_printf (_("Done in %s"), took);

    gtk_progress_bar_set_fraction (self->progress_bar, 1.0);
    gtk_label_set_text (self->progress_label, text);
  }
  /* Newest first in the strip, but a batch keeps its order: image 0 leftmost. */
  for (guint i = items->len; i > 0; i--)
    moire_history_prepend (self->history, g_ptr_array_index (items, i - 1));
  if (items->len > 0)
    {
      panel_show_item (self, g_ptr_array_index (items, 0));
    }
  for (guint i = 0; i < items->len; i++)
    g_signal_emit (self, panel_signals[SIGNAL_RESULT_READY], 0, g_ptr_array_index (items, i));

  /* Engine notices (e.g. "approximate colour preview of the latents"): once per session. */
  for (guint i = 0; warnings != NULL && warnings[i] != NULL; i++)
    {
      /* The engine's "N word(s) of the prompts are not in the vocabulary" (English, after
       * the fact) is what the prompt field already says while typing, translated and with
       * the words named. */
      if (strstr (warnings[i], "not in the vocabulary") != NULL &&
          self->model != NULL && moire_model_handle_has_vocabulary (self->model))
        continue;
      if (g_hash_table_add (self->warnings_shown, g_strdup (warnings[i])))
        moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, warnings[i]);
    }

  set_busy (self, FALSE);
  g_signal_emit (self, panel_signals[SIGNAL_FINISHED], 0, TRUE);
  panel_start_next_queued (self);
}

static void
update_queue_label (MoireGenerationPanel *self)
{
  guint waiting = self->queue.length;

  gtk_widget_set_visible (self->queue_box, waiting > 0);
  if (waiting > 0)
    {
      /* Translators: under Generate while generations wait their turn */
      g_autofree char *text = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "%u more queued",
                                                            "%u more queued", waiting),
                                               waiting);

      gtk_label_set_text (self->queue_label, text);
    }
  panel_update_actions (self);
}

/* Starts `job` (the panel takes a reference) and shows that it runs. */
static void
start_job (MoireGenerationPanel *self,
           MoireJob             *job)
{
  self->stream_round = 0;
  g_signal_connect (job, "round", G_CALLBACK (on_job_round), self);
  g_signal_connect (job, "progress", G_CALLBACK (on_job_progress), self);
  g_signal_connect (job, "preview", G_CALLBACK (on_job_preview), self);
  g_signal_connect (job, "paused", G_CALLBACK (on_job_paused), self);

  self->job = g_object_ref (job);
  self->job_started_us = g_get_monotonic_time ();
  gtk_progress_bar_set_fraction (self->progress_bar, 0);
  gtk_label_set_text (self->progress_label, _("Starting…"));
  set_busy (self, TRUE);
  moire_job_run_async (job, NULL, job_done, g_object_ref (self));
}

/* After a job ends (done, failed or stopped): the next queued one, if any. */
void
panel_start_next_queued (MoireGenerationPanel *self)
{
  g_autoptr(MoireJob) next = g_queue_pop_head (&self->queue);

  update_queue_label (self);
  if (next != NULL && self->job == NULL)
    start_job (self, next);
}

void
moire_generation_panel_generate (MoireGenerationPanel *self)
{
  g_autoptr(MoireJob) job = NULL;
  gboolean handled = FALSE;
  guint64 seed;

  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));

  if (self->job != NULL && (!self->can_queue || moire_job_get_stream (self->job)))
    return;
  if (self->model == NULL)
    {
      if (self->model_cancellable != NULL)
        moire_generation_panel_show_message (self, GTK_MESSAGE_INFO,
                                             _("The model is still loading; try again in a moment."));
      else
        panel_show_error_with_action (self, _("No model is loaded. Choose a model file (.safetensors)."),
                                      _("Choose Model…"), "panel.choose-model");
      return;
    }

  seed = moire_seed_choose (moire_gen_settings_get_seed_mode (self->settings),
                            moire_gen_settings_get_seed (self->settings),
                            self->has_last_seed, self->last_seed, self->rand);
  /* The seed field shows the seed in use, so a result can be pinned by switching to Fixed. */
  moire_gen_settings_set_seed (self->settings, seed);

  g_signal_emit (self, panel_signals[SIGNAL_GENERATE_REQUESTED], 0, self->settings, seed, &handled);
  if (handled)
    return;

  moire_generation_panel_show_message (self, GTK_MESSAGE_INFO, NULL);
  /* The job copies the settings, init image and mask now: what is queued is what the form
   * showed when Generate was pressed. */
  job = moire_job_new (self->model, self->settings, self->init_image, seed);
  moire_job_set_mask (job, self->mask);
  if (self->model != NULL && moire_model_get_config (moire_model_handle_get_model (self->model))->space == MOIRE_SPACE_LATENT)
    moire_job_set_vae (job, self->vae);
  moire_job_set_preview_interval (job, self->live_preview ? self->preview_interval : 0);
  moire_job_set_pause_at_step (job, self->pause_at_step);
  moire_job_set_stream (job, self->stream && moire_gen_settings_get_dmcmc (self->settings),
                        self->stream_rounds);
  moire_job_set_routing_map (job, self->show_routing);
  self->has_last_seed = TRUE;
  self->last_seed = seed;
  if (self->job != NULL)
    {
      g_queue_push_tail (&self->queue, g_steal_pointer (&job));
      update_queue_label (self);
      return;
    }
  start_job (self, job);
}

void
moire_generation_panel_set_notice (MoireGenerationPanel *self,
                                   const char           *text)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  gtk_label_set_text (self->notice_label, text != NULL ? text : "");
  gtk_widget_set_visible (GTK_WIDGET (self->notice_label), text != NULL && *text != '\0');
}

const char *
moire_generation_panel_get_notice (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return gtk_widget_get_visible (GTK_WIDGET (self->notice_label))
           ? gtk_label_get_text (self->notice_label) : NULL;
}

guint
moire_generation_panel_get_queue_length (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), 0);
  return self->queue.length;
}

void
moire_generation_panel_clear_queue (MoireGenerationPanel *self)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_queue_clear_full (&self->queue, g_object_unref);
  update_queue_label (self);
}

void
moire_generation_panel_set_can_queue (MoireGenerationPanel *self,
                                      gboolean              can_queue)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  self->can_queue = can_queue;
  if (!can_queue)
    moire_generation_panel_clear_queue (self);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->generate_button),
                               can_queue ? _("Generate (Ctrl+Enter); while one runs, adds it to the queue")
                                         : _("Generate (Ctrl+Enter)"));
}

void
moire_generation_panel_cancel (MoireGenerationPanel *self)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  if (self->job == NULL)
    return;
  moire_job_cancel (self->job);
  gtk_label_set_text (self->progress_label, _("Cancelling…"));
}

void
moire_generation_panel_set_pause_at_step (MoireGenerationPanel *self,
                                          int                   step)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  self->pause_at_step = MAX (step, 0);
}

void
moire_generation_panel_set_stream_rounds (MoireGenerationPanel *self,
                                          int                   rounds)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  self->stream_rounds = MAX (rounds, 0);
}

int
moire_generation_panel_get_stream_round (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), 0);
  return self->stream_round;
}

void
moire_generation_panel_resume (MoireGenerationPanel *self)
{
  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  if (self->job != NULL)
    moire_job_resume (self->job);
}
