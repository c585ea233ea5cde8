/* moire-generation-panel.h — the generation panel of libmoire-gui: prompt, parameters, model
 * chooser, init image, Generate/Cancel, live preview with progress, and the history strip.
 *
 * The panel is a plain GtkWidget: it assumes no GtkApplication, owns no window and installs
 * its own actions ("panel.generate", "panel.cancel", …) and shortcuts (Ctrl+Enter, Escape,
 * Ctrl+O, Ctrl+S) on itself, so the studio app and the GIMP plug-in embed it the same way.
 * Generation runs on a worker thread (MoireJob); hosts follow it through signals:
 *
 *   "generate-requested" (settings, seed) → gboolean: return TRUE to handle the request
 *                        yourself (the panel then does not start a job);
 *   "preview-frame"      (texture, step, step_count): a live frame was shown;
 *   "result-ready"       (MoireHistoryItem): one per image, added to the history;
 *   "finished"           (gboolean success): the job ended (done, failed or cancelled).
 */
#pragma once

#include <gtk/gtk.h>

#include "moire-gen-settings.h"
#include "moire-history.h"
#include "moire-history-item.h"
#include "moire-model-handle.h"
#include "moire-vae-handle.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_GENERATION_PANEL (moire_generation_panel_get_type ())

G_DECLARE_FINAL_TYPE (MoireGenerationPanel, moire_generation_panel, MOIRE, GENERATION_PANEL, GtkWidget)

GtkWidget        *moire_generation_panel_new                 (void);

/* The settings the widgets edit (owned by the panel). */
MoireGenSettings *moire_generation_panel_get_settings        (MoireGenerationPanel *self);
MoireHistory     *moire_generation_panel_get_history         (MoireGenerationPanel *self);
/* The loaded model, or NULL while none is (loading is asynchronous). */
MoireModelHandle *moire_generation_panel_get_model           (MoireGenerationPanel *self);
gboolean          moire_generation_panel_get_busy            (MoireGenerationPanel *self);
/* Properties "stream" (with DMCMC on, Generate starts a stream of variations that runs until
 * Cancel) and "show-routing" (jobs record the expert routing, the preview shows it blended
 * over the result); both bound to GSettings by moire_generation_panel_bind_gsettings. */

/* Persists the settings, the recent models and the preview options in `settings` (schema
 * io.github.moire.Studio). Optional: without it the panel keeps everything in memory. */
void              moire_generation_panel_bind_gsettings      (MoireGenerationPanel *self,
                                                              GSettings            *settings);
/* Loads `path` (asynchronously) and adds it to the recent models. `apply_defaults`: reset the
 * sampler, steps, CFG and size to the model's own once it is loaded. */
void              moire_generation_panel_set_model_path      (MoireGenerationPanel *self,
                                                              const char           *path,
                                                              gboolean              apply_defaults);
/* The starting image for image to image (copied), with a label to show; NULL clears it. */
void              moire_generation_panel_set_init_image      (MoireGenerationPanel *self,
                                                              const moire_image    *image,
                                                              const char           *label);
/* Inpainting: a soft mask over the init image (1 channel, 255 = regenerate; copied; NULL
 * clears it). Used only while an init image is set; hosts such as the GIMP plug-in set both. */
void              moire_generation_panel_set_mask            (MoireGenerationPanel *self,
                                                              const moire_image    *mask);

void              moire_generation_panel_generate            (MoireGenerationPanel *self);
void              moire_generation_panel_cancel              (MoireGenerationPanel *self);
/* A note that stays under Generate (unlike the banner, which the next generation clears):
 * a condition of the whole session, like settings that cannot be saved. NULL removes it. */
void              moire_generation_panel_set_notice          (MoireGenerationPanel *self,
                                                              const char           *text);
const char       *moire_generation_panel_get_notice          (MoireGenerationPanel *self);
/* Words of the prompt that the model does not know (text models), as underlined. */
guint             moire_generation_panel_get_unknown_word_count (MoireGenerationPanel *self);
/* Adds a PNG made by Moiré (its parameters text) to the history without touching the form:
 * how hosts bring back a history they kept (the studio's data folder, the GIMP image). */
gboolean          moire_generation_panel_add_history_file    (MoireGenerationPanel *self,
                                                              const char           *path,
                                                              GError              **error);
/* Latent models: the SD-VAE file that decodes results ("" or NULL = none, approximate
 * colours). Loads on a worker thread; property "vae-path" (bound to GSettings "vae-path"). */
void              moire_generation_panel_set_vae_path        (MoireGenerationPanel *self,
                                                              const char           *path);
MoireVaeHandle   *moire_generation_panel_get_vae             (MoireGenerationPanel *self);
/* The queue: Generate while a job runs adds one (settings, seed, init image and mask copied
 * when pressed); each starts when the one before it ends (done, failed or stopped). */
guint             moire_generation_panel_get_queue_length    (MoireGenerationPanel *self);
void              moire_generation_panel_clear_queue         (MoireGenerationPanel *self);
/* Hosts whose canvas follows one generation at a time (the GIMP plug-in) turn it off. */
void              moire_generation_panel_set_can_queue       (MoireGenerationPanel *self,
                                                              gboolean              can_queue);

/* Shows `item` and restores its settings (all but the batch count). */
void              moire_generation_panel_restore_item        (MoireGenerationPanel *self,
                                                              MoireHistoryItem     *item);
/* The item shown in the preview (the latest result, or the one clicked), or NULL. */
MoireHistoryItem *moire_generation_panel_get_current_item    (MoireGenerationPanel *self);
/* Opens a PNG written by Moiré, A1111, sd.cpp…: restores its parameters, and adds the image
 * to the history. */
gboolean          moire_generation_panel_restore_from_file   (MoireGenerationPanel *self,
                                                              const char           *path,
                                                              GError              **error);

/* Shows a message in the panel's banner (errors in red; info otherwise). */
void              moire_generation_panel_show_message        (MoireGenerationPanel *self,
                                                              GtkMessageType        type,
                                                              const char           *message);
/* An error in the banner with a button that activates `action` (a "panel." action; the
 * button hides with the next message). */
void              moire_generation_panel_show_error_with_action (MoireGenerationPanel *self,
                                                                 const char           *message,
                                                                 const char           *button_label,
                                                                 const char           *action);
/* The banner's text, or NULL when hidden (for tests and self-tests). */
const char       *moire_generation_panel_get_message         (MoireGenerationPanel *self);

/* Test hook: the next jobs pause after step `step` and the panel emits "paused"; continue
 * with moire_generation_panel_resume(). */
void              moire_generation_panel_set_pause_at_step   (MoireGenerationPanel *self,
                                                              int                   step);
void              moire_generation_panel_resume              (MoireGenerationPanel *self);
/* Test hook: DMCMC streams stop by themselves after `rounds` rounds (0 = until cancelled, the
 * default). */
void              moire_generation_panel_set_stream_rounds   (MoireGenerationPanel *self,
                                                              int                   rounds);
/* Rounds the running (or last) stream has delivered. */
int               moire_generation_panel_get_stream_round    (MoireGenerationPanel *self);

G_END_DECLS
