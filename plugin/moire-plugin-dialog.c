/* moire-plugin-dialog.c — the interactive run: the GTK 4 generation panel of libmoire-gui in
 * the plug-in's own process, with the live preview drawn into a temporary layer on the canvas.
 *
 * GTK 4 can live here because the plug-in links libgimp only (no libgimpui, no GTK 2). The
 * panel runs the engine on a worker thread; its signals arrive on this (the main) thread,
 * which is also the only one that talks to the host.
 *
 *   generate-requested → read the target, init image and mask for the chosen mode
 *   preview-frame      → scale to the target, write into the preview layer (a few per second)
 *   result-ready       → keep the item; finished → show image 0 in the preview layer
 *   Apply              → remove the preview, insert the results as layers (one undo group);
 *                        the dialog stays for the next one. Apply and Close also closes it.
 *   Close              → stop the engine, remove the preview
 * The dialog's history is kept with the image (parasite "moire-history", saved in XCF): the
 * newest results come back when the dialog is opened again on that image.
 * Scaling (smooth or pixel art) goes through moire_plugin_scale_image for the preview and
 * for Apply alike, so the preview is exactly what Apply inserts.
 *
 * Test hooks (environment): MOIRE_GIMP_SELF_TEST=apply generates as soon as the model is
 * loaded and applies the result; =apply-keep applies (dialog stays), generates again and
 * applies and closes; =cancel closes the dialog at the first preview frame.
 * MOIRE_GIMP_PREVIEW_DUMP=FILE saves the preview layer's pixels as PNG just before Apply and
 * prints its place in the layer stack (0 = top).
 * MOIRE_GIMP_SCREENSHOT=FILE saves the dialog as PNG before applying; MOIRE_GIMP_READY_FILE /
 * MOIRE_GIMP_CONTINUE_FILE let a test take a screen shot of the whole host while the dialog is
 * open with the result on the canvas (the dialog writes the first, waits for the second).
 */
#define G_LOG_DOMAIN "moire-plugin"

#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>
#include <gtk/gtk.h>
#include <string.h>

#include "moire-gui.h"
#include "moire-plugin.h"

#define PREVIEW_MIN_INTERVAL_US (150 * G_TIME_SPAN_MILLISECOND)
#define SELF_TEST_TIMEOUT_S     120
#define HISTORY_PARASITE        "moire-history"
/* What the image keeps: the newest results, at most this many and this many bytes of PNG. */
#define HISTORY_KEEP_ITEMS      12
#define HISTORY_KEEP_BYTES      (4 << 20)

typedef struct
{
  MoireHost            *host;
  MoirePluginValues    *values;
  GArray               *layer_ids;
  GError               *error;
  gboolean              applied;
  GMainLoop            *loop;

  GtkWindow            *window;
  MoireGenerationPanel *panel;
  GtkDropDown          *mode_dropdown;
  GtkDropDown          *scaling_dropdown;
  GtkLabel             *target_label;
  GtkWidget            *apply_button;
  GtkWidget            *apply_close_button;
  int                   history_restored; /* items the image's parasite gave back */

  MoirePluginMode       mode;      /* of the generation in progress / pending            */
  MoireRect             target;
  GPtrArray            *pending;   /* MoireHistoryItem of the last finished generation    */

  GdkTexture           *queued_frame;
  guint                 frame_source;
  gint64                last_frame_us;

  const char           *self_test; /* NULL, "apply", "apply-keep" or "cancel"             */
  gboolean              self_test_started;
  int                   self_test_applies;
} Dialog;

static const char *const scaling_labels[] = {
  /* Translators: how the generated picture is scaled to the selection; "smooth" blends */
  N_("Smooth"),
  /* Translators: scaling that keeps every generated pixel a crisp square block */
  N_("Pixel art"),
  NULL
};

static const char *const mode_labels[] = {
  /* Translators: plug-in modes; the first makes a picture from the prompt alone */
  N_("From the prompt"),
  N_("Image to image (from the layer)"),
  N_("Inpaint the selection"),
  NULL
};

/* --- helpers -------------------------------------------------------------------------------- */

static moire_image *
image_from_texture (GdkTexture *texture)
{
  int width = gdk_texture_get_width (texture), height = gdk_texture_get_height (texture);
  g_autofree guchar *argb = g_malloc ((gsize) width * height * 4);
  moire_image *image = moire_image_new (width, height, 4);

  if (image == NULL)
    return NULL;
  /* Cairo ARGB32: native-endian, premultiplied. */
  gdk_texture_download (texture, argb, (gsize) width * 4);
  for (gsize i = 0; i < (gsize) width * height; i++)
    {
      guint32 px = ((guint32 *) argb)[i];
      guint a = px >> 24;
      guint r = (px >> 16) & 0xff, g = (px >> 8) & 0xff, b = px & 0xff;
      guint8 *out = image->pixels + i * 4;

      if (a > 0 && a < 255)
        {
          r = MIN (255u, (r * 255 + a / 2) / a);
          g = MIN (255u, (g * 255 + a / 2) / a);
          b = MIN (255u, (b * 255 + a / 2) / a);
        }
      out[0] = r; out[1] = g; out[2] = b; out[3] = a;
    }
  return image;
}

static void
show_error (Dialog     *self,
            const char *message)
{
  moire_generation_panel_show_message (self->panel, GTK_MESSAGE_ERROR, message);
}

static MoirePluginScaling
get_scaling (Dialog *self)
{
  return (MoirePluginScaling) gtk_drop_down_get_selected (self->scaling_dropdown);
}

static void
show_in_preview (Dialog            *self,
                 const moire_image *image)
{
  g_autoptr(GError) error = NULL;
  /* The same scaling as Apply (moire_plugin_insert_images): the preview is the result. */
  g_autoptr(moire_image) scaled = moire_plugin_scale_image (image, self->target.width,
                                                            self->target.height,
                                                            get_scaling (self));

  if (scaled == NULL ||
      !moire_host_preview_show (self->host, &self->target, scaled,
                                self->mode == MOIRE_PLUGIN_MODE_INPAINT, &error))
    show_error (self, error != NULL ? error->message : "out of memory");
}

static void
update_target_label (Dialog *self)
{
  MoireRect selection;
  g_autofree char *text = NULL;
  gboolean has_selection = moire_host_get_selection_bounds (self->host, &selection);
  int width = 0, height = 0;

  moire_host_get_image_size (self->host, &width, &height);
  if (has_selection)
    /* Translators: where the result goes */
    text = g_strdup_printf (_("Result fits the selection: %d×%d at %d, %d"), selection.width,
                            selection.height, selection.x, selection.y);
  else
    text = g_strdup_printf (_("Result fits the image: %d×%d"), width, height);
  gtk_label_set_text (self->target_label, text);
}

/* Reads the target and, for img2img / inpainting, the init image and mask into the panel. */
static gboolean
load_inputs (Dialog  *self,
             GError **error)
{
  MoirePluginMode mode = gtk_drop_down_get_selected (self->mode_dropdown);
  g_autoptr(moire_image) init_image = NULL;
  g_autoptr(moire_image) mask = NULL;
  MoireRect target;

  update_target_label (self);
  if (!moire_plugin_read_inputs (self->host, mode, &target, &init_image, &mask, error))
    return FALSE;
  self->mode = mode;
  self->target = target;
  if (mode != MOIRE_PLUGIN_MODE_GENERATE)
    {
      moire_generation_panel_set_init_image (self->panel, init_image,
                                             mode == MOIRE_PLUGIN_MODE_INPAINT
                                               ? _("Selection of the layer")
                                               : _("The layer"));
      moire_generation_panel_set_mask (self->panel, mask);
    }
  return TRUE;
}

static void
clear_pending (Dialog *self)
{
  g_ptr_array_set_size (self->pending, 0);
  gtk_widget_set_sensitive (self->apply_button, FALSE);
  gtk_widget_set_sensitive (self->apply_close_button, FALSE);
}

/* --- history kept with the image ---------------------------------------------------------- */

/* The parasite: "MOIREHIST1\n", then per item a 32-bit big-endian length and a PNG with the
 * A1111 parameters and the moire JSON (moire_history_item_save_png), newest first. */
#define HISTORY_MAGIC "MOIREHIST1\n"

static void
load_history (Dialog *self)
{
  g_autoptr(GBytes) data = moire_host_get_image_data (self->host, HISTORY_PARASITE);
  g_autofree char *dir = NULL;
  const guint8 *bytes;
  gsize size = 0, at = strlen (HISTORY_MAGIC);
  GPtrArray *paths;

  if (data == NULL)
    return;
  bytes = g_bytes_get_data (data, &size);
  if (size < at || memcmp (bytes, HISTORY_MAGIC, at) != 0)
    return;
  dir = g_dir_make_tmp ("moire-history-XXXXXX", NULL);
  if (dir == NULL)
    return;
  paths = g_ptr_array_new_with_free_func (g_free);
  while (at + 4 <= size)
    {
      guint32 length = ((guint32) bytes[at] << 24) | ((guint32) bytes[at + 1] << 16) |
                       ((guint32) bytes[at + 2] << 8) | bytes[at + 3];
      char *path;

      at += 4;
      if (length > size - at)
        break;
      path = g_strdup_printf ("%s/%u.png", dir, paths->len);
      if (g_file_set_contents (path, (const char *) bytes + at, length, NULL))
        g_ptr_array_add (paths, path);
      else
        g_free (path);
      at += length;
    }
  /* oldest first, so that the newest ends up in front */
  for (guint i = paths->len; i > 0; i--)
    {
      const char *path = g_ptr_array_index (paths, i - 1);

      if (moire_generation_panel_add_history_file (self->panel, path, NULL))
        self->history_restored++;
      g_unlink (path);
    }
  g_ptr_array_unref (paths);
  g_rmdir (dir);
}

static void
save_history (Dialog *self)
{
  GListModel *history = G_LIST_MODEL (moire_generation_panel_get_history (self->panel));
  guint n = MIN (g_list_model_get_n_items (history), HISTORY_KEEP_ITEMS);
  g_autofree char *dir = NULL;
  g_autofree char *path = NULL;
  GByteArray *out;

  if (n == 0)
    return;
  dir = g_dir_make_tmp ("moire-history-XXXXXX", NULL);
  if (dir == NULL)
    return;
  path = g_build_filename (dir, "item.png", NULL);
  out = g_byte_array_new ();
  g_byte_array_append (out, (const guint8 *) HISTORY_MAGIC, strlen (HISTORY_MAGIC));
  for (guint i = 0; i < n; i++)
    {
      g_autoptr(MoireHistoryItem) item = g_list_model_get_item (history, i);
      g_autofree char *png = NULL;
      gsize length = 0;
      guint8 header[4];

      if (!moire_history_item_save_png (item, path, NULL) ||
          !g_file_get_contents (path, &png, &length, NULL))
        continue;
      if (out->len + 4 + length > HISTORY_KEEP_BYTES)
        break;
      header[0] = length >> 24; header[1] = length >> 16; header[2] = length >> 8; header[3] = length;
      g_byte_array_append (out, header, 4);
      g_byte_array_append (out, (const guint8 *) png, length);
    }
  g_unlink (path);
  g_rmdir (dir);
  {
    g_autoptr(GBytes) data = g_byte_array_free_to_bytes (out);

    moire_host_set_image_data (self->host, HISTORY_PARASITE, data);
  }
}

/* --- panel signals -------------------------------------------------------------------------- */

static gboolean
on_generate_requested (MoireGenerationPanel *panel,
                       MoireGenSettings     *settings,
                       guint64               seed,
                       Dialog               *self)
{
  g_autoptr(GError) error = NULL;

  clear_pending (self);
  if (!load_inputs (self, &error))
    {
      show_error (self, error->message);
      return TRUE; /* handled: nothing to run */
    }
  return FALSE;
}

static gboolean
flush_frame (gpointer user_data)
{
  Dialog *self = user_data;
  g_autoptr(GdkTexture) texture = g_steal_pointer (&self->queued_frame);

  self->frame_source = 0;
  if (texture != NULL && moire_generation_panel_get_busy (self->panel))
    {
      g_autoptr(moire_image) image = image_from_texture (texture);

      self->last_frame_us = g_get_monotonic_time ();
      if (image != NULL)
        show_in_preview (self, image);
    }
  return G_SOURCE_REMOVE;
}

static void
on_preview_frame (MoireGenerationPanel *panel,
                  GdkTexture           *texture,
                  int                   step,
                  int                   step_count,
                  Dialog               *self)
{
  gint64 wait;

  if (self->self_test != NULL && g_str_equal (self->self_test, "cancel"))
    {
      g_set_object (&self->queued_frame, texture);
      flush_frame (self);
      gtk_window_close (self->window);
      return;
    }
  /* Tiles travel to the host over its wire: a few frames a second are plenty. The newest
   * frame replaces a queued one. */
  g_set_object (&self->queued_frame, texture);
  if (self->frame_source != 0)
    return;
  wait = self->last_frame_us + PREVIEW_MIN_INTERVAL_US - g_get_monotonic_time ();
  if (wait <= 0)
    flush_frame (self);
  else
    self->frame_source = g_timeout_add ((guint) (wait / 1000) + 1, flush_frame, self);
}

static void
on_result_ready (MoireGenerationPanel *panel,
                 MoireHistoryItem     *item,
                 Dialog               *self)
{
  g_ptr_array_add (self->pending, g_object_ref (item));
}

static void self_test_after_result (Dialog *self);

static void
on_finished (MoireGenerationPanel *panel,
             gboolean              success,
             Dialog               *self)
{
  g_clear_handle_id (&self->frame_source, g_source_remove);
  g_clear_object (&self->queued_frame);
  if (!success || self->pending->len == 0)
    {
      clear_pending (self);
      moire_host_preview_remove (self->host);
      if (self->self_test != NULL && !g_str_equal (self->self_test, "cancel"))
        {
          const char *message = moire_generation_panel_get_message (panel);

          g_set_error (&self->error, G_IO_ERROR, G_IO_ERROR_FAILED, "self-test: %s",
                       message != NULL ? message : "the generation failed");
          g_main_loop_quit (self->loop);
        }
      return;
    }
  {
    g_autoptr(moire_image) image =
      moire_history_item_dup_image (g_ptr_array_index (self->pending, 0));

    if (image != NULL)
      show_in_preview (self, image);
  }
  gtk_widget_set_sensitive (self->apply_button, TRUE);
  gtk_widget_set_sensitive (self->apply_close_button, TRUE);
  if (self->self_test != NULL)
    self_test_after_result (self);
}

/* --- apply / cancel --------------------------------------------------------------------------- */

static void
store_values (Dialog *self)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (self->panel);
  MoirePluginValues *v = self->values;
  const char *sampler = moire_gen_settings_get_sampler (settings);

  moire_plugin_copy_string (v->prompt, sizeof v->prompt, moire_gen_settings_get_prompt (settings));
  moire_plugin_copy_string (v->negative_prompt, sizeof v->negative_prompt,
                            moire_gen_settings_get_negative_prompt (settings));
  moire_plugin_copy_string (v->model_path, sizeof v->model_path,
                            moire_gen_settings_get_model_path (settings));
  moire_plugin_copy_string (v->sampler, sizeof v->sampler,
                            sampler != NULL && !g_str_equal (sampler, "default") ? sampler : "");
  v->steps = moire_gen_settings_get_steps (settings);
  v->cfg_scale = moire_gen_settings_get_cfg_scale (settings);
  v->seed = moire_gen_settings_get_seed_mode (settings) == MOIRE_SEED_MODE_RANDOM
              ? MOIRE_PLUGIN_SEED_RANDOM
              : (gint64) moire_gen_settings_get_seed (settings);
  v->width = moire_gen_settings_get_width (settings);
  v->height = moire_gen_settings_get_height (settings);
  v->count = moire_gen_settings_get_batch_count (settings);
  v->mode = self->mode;
  v->strength = moire_gen_settings_get_strength (settings);
  v->scaling = get_scaling (self);
}

/* Test hook: the preview layer as PNG, and its place in the stack, just before Apply. */
static void
dump_preview (Dialog *self)
{
  const char *path = g_getenv ("MOIRE_GIMP_PREVIEW_DUMP");
  g_autoptr(moire_image) preview = NULL;

  if (path == NULL || *path == '\0')
    return;
  preview = moire_host_preview_read (self->host);
  if (preview == NULL || moire_png_save (path, preview, NULL, NULL) != MOIRE_OK)
    g_printerr ("moire self-test: no preview layer to save\n");
  g_printerr ("moire self-test: preview stack position %d, layer mask %s\n",
              moire_host_preview_stack_position (self->host),
              moire_host_preview_has_mask (self->host) ? "yes" : "no");
}

static void
apply (Dialog   *self,
       gboolean  close)
{
  guint n = self->pending->len;
  g_autoptr(GPtrArray) images = g_ptr_array_new_with_free_func ((GDestroyNotify) moire_image_free);
  g_autofree const char **prompts = g_new0 (const char *, MAX (n, 1));
  g_autofree const char **texts = g_new0 (const char *, MAX (n, 1));
  g_autofree const char **jsons = g_new0 (const char *, MAX (n, 1));
  g_autofree guint64 *seeds = g_new0 (guint64, MAX (n, 1));
  g_autoptr(GError) error = NULL;

  if (n == 0 || moire_generation_panel_get_busy (self->panel))
    return;
  dump_preview (self);
  for (guint i = 0; i < n; i++)
    {
      MoireHistoryItem *item = g_ptr_array_index (self->pending, i);

      g_ptr_array_add (images, moire_history_item_dup_image (item));
      prompts[i] = moire_gen_settings_get_prompt (moire_history_item_get_settings (item));
      seeds[i] = moire_history_item_get_seed (item);
      texts[i] = moire_history_item_get_parameters (item);
      jsons[i] = moire_history_item_get_settings_json (item);
    }
  moire_host_preview_remove (self->host);
  if (!moire_plugin_insert_images (self->host, &self->target, self->mode, get_scaling (self),
                                   (moire_image * const *) images->pdata, prompts, seeds, texts,
                                   jsons, (int) n, self->layer_ids, &error))
    {
      show_error (self, error->message);
      return;
    }
  store_values (self);
  self->applied = TRUE;
  /* Applied once: the same results are not inserted twice; the next Generate makes more. */
  clear_pending (self);
  save_history (self);
  if (close)
    g_main_loop_quit (self->loop);
  else
    {
      g_autofree char *message =
        g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "Added %u layer. Generate again, or close the dialog.",
                                      "Added %u layers. Generate again, or close the dialog.", n), n);

      moire_generation_panel_show_message (self->panel, GTK_MESSAGE_INFO, message);
    }
}

static gboolean
on_close_request (GtkWindow *window,
                  Dialog    *self)
{
  if (moire_generation_panel_get_busy (self->panel))
    moire_generation_panel_cancel (self->panel);
  moire_host_preview_remove (self->host);
  save_history (self);
  g_main_loop_quit (self->loop);
  return TRUE; /* the window is destroyed by moire_plugin_dialog_run */
}

static void
on_apply_clicked (GtkButton *button,
                  Dialog    *self)
{
  apply (self, FALSE);
}

static void
on_apply_close_clicked (GtkButton *button,
                        Dialog    *self)
{
  apply (self, TRUE);
}

/* A different scaling re-renders the result on the canvas at once. */
static void
on_scaling_changed (GtkDropDown *dropdown,
                    GParamSpec  *pspec,
                    Dialog      *self)
{
  if (self->pending->len > 0 && !moire_generation_panel_get_busy (self->panel))
    {
      g_autoptr(moire_image) image =
        moire_history_item_dup_image (g_ptr_array_index (self->pending, 0));

      if (image != NULL)
        show_in_preview (self, image);
    }
}

static void
on_cancel_clicked (GtkButton *button,
                   Dialog    *self)
{
  on_close_request (self->window, self);
}

static void
on_mode_changed (GtkDropDown *dropdown,
                 GParamSpec  *pspec,
                 Dialog      *self)
{
  g_autoptr(GError) error = NULL;

  if (gtk_drop_down_get_selected (dropdown) == MOIRE_PLUGIN_MODE_GENERATE)
    {
      moire_generation_panel_set_init_image (self->panel, NULL, NULL);
      moire_generation_panel_set_mask (self->panel, NULL);
      update_target_label (self);
      moire_generation_panel_show_message (self->panel, GTK_MESSAGE_INFO, NULL);
      return;
    }
  if (!load_inputs (self, &error))
    show_error (self, error->message);
  else
    moire_generation_panel_show_message (self->panel, GTK_MESSAGE_INFO, NULL);
}

/* --- self-test -------------------------------------------------------------------------------- */

static void
on_model_notify (MoireGenerationPanel *panel,
                 GParamSpec           *pspec,
                 Dialog               *self)
{
  if (self->self_test == NULL || self->self_test_started ||
      moire_generation_panel_get_model (panel) == NULL)
    return;
  self->self_test_started = TRUE;
  moire_generation_panel_generate (panel);
  if (!moire_generation_panel_get_busy (panel))
    {
      const char *message = moire_generation_panel_get_message (panel);

      g_set_error (&self->error, G_IO_ERROR, G_IO_ERROR_FAILED, "self-test: %s",
                   message != NULL ? message : "the generation did not start");
      g_main_loop_quit (self->loop);
    }
}

static gboolean
self_test_timeout (gpointer user_data)
{
  Dialog *self = user_data;

  g_set_error (&self->error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "self-test: timed out");
  g_main_loop_quit (self->loop);
  return G_SOURCE_REMOVE;
}

static void
save_window_png (Dialog     *self,
                 const char *path)
{
  GtkWidget *widget = GTK_WIDGET (self->window);
  g_autoptr(GdkPaintable) paintable = gtk_widget_paintable_new (widget);
  GtkSnapshot *snapshot = gtk_snapshot_new ();
  int width = gtk_widget_get_width (widget), height = gtk_widget_get_height (widget);
  g_autoptr(GskRenderNode) node = NULL;

  gdk_paintable_snapshot (paintable, snapshot, width, height);
  node = gtk_snapshot_free_to_node (snapshot);
  if (node != NULL)
    {
      g_autoptr(GdkTexture) texture =
        gsk_renderer_render_texture (gtk_native_get_renderer (GTK_NATIVE (widget)), node,
                                     &GRAPHENE_RECT_INIT (0, 0, width, height));

      if (!gdk_texture_save_to_png (texture, path))
        g_warning ("could not save %s", path);
    }
  else
    g_warning ("empty snapshot; no screenshot saved");
}

static gboolean
wait_for_continue (gpointer user_data)
{
  Dialog *self = user_data;
  const char *continue_file = g_getenv ("MOIRE_GIMP_CONTINUE_FILE");

  if (continue_file != NULL && !g_file_test (continue_file, G_FILE_TEST_EXISTS))
    return G_SOURCE_CONTINUE;
  /* apply-keep: the first Apply keeps the dialog open and a second generation follows */
  if (g_str_equal (self->self_test, "apply-keep") && self->self_test_applies++ == 0)
    {
      apply (self, FALSE);
      g_printerr ("moire self-test: applied, dialog %s\n",
                  gtk_widget_get_visible (GTK_WIDGET (self->window)) ? "still open" : "closed");
      moire_generation_panel_generate (self->panel);
      return G_SOURCE_REMOVE;
    }
  apply (self, TRUE);
  return G_SOURCE_REMOVE;
}

static void
on_after_paint (GdkFrameClock *clock,
                Dialog        *self)
{
  const char *screenshot = g_getenv ("MOIRE_GIMP_SCREENSHOT");
  const char *ready = g_getenv ("MOIRE_GIMP_READY_FILE");

  g_signal_handlers_disconnect_by_func (clock, on_after_paint, self);
  if (screenshot != NULL && *screenshot != '\0')
    save_window_png (self, screenshot);
  if (ready != NULL && *ready != '\0')
    g_file_set_contents (ready, "ready\n", -1, NULL);
  g_timeout_add (100, wait_for_continue, self);
}

static void
self_test_after_result (Dialog *self)
{
  GdkFrameClock *clock = gtk_widget_get_frame_clock (GTK_WIDGET (self->window));

  if (!g_str_equal (self->self_test, "apply") && !g_str_equal (self->self_test, "apply-keep"))
    return;
  /* Screenshots are taken after a paint: at an arbitrary moment a pending resize leaves the
   * snapshot empty. */
  g_signal_connect (clock, "after-paint", G_CALLBACK (on_after_paint), self);
  gtk_widget_queue_draw (GTK_WIDGET (self->window));
}

/* --- set-up ----------------------------------------------------------------------------------- */

static void
settings_from_values (Dialog *self)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (self->panel);
  const MoirePluginValues *v = self->values;

  moire_gen_settings_set_prompt (settings, v->prompt);
  moire_gen_settings_set_negative_prompt (settings, v->negative_prompt);
  if (!moire_gen_settings_set_sampler (settings, v->sampler[0] != '\0' ? v->sampler : "default"))
    moire_gen_settings_set_sampler (settings, "default");
  moire_gen_settings_set_steps (settings, MAX (v->steps, 0));
  moire_gen_settings_set_cfg_scale (settings, MAX (v->cfg_scale, 0.0));
  if (v->seed >= 0)
    {
      moire_gen_settings_set_seed (settings, (guint64) v->seed);
      moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_FIXED);
    }
  else
    moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_RANDOM);
  moire_gen_settings_set_size (settings, MAX (v->width, 0), MAX (v->height, 0));
  moire_gen_settings_set_batch_count (settings, CLAMP (v->count, 1, 64));
  moire_gen_settings_set_strength (settings, CLAMP (v->strength, 0.0, 1.0));
}

static GtkWidget *
build_window (Dialog *self)
{
  GtkWidget *window = gtk_window_new ();
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 0);
  GtkWidget *header = gtk_box_new (GTK_ORIENTATION_VERTICAL, 4);
  GtkWidget *mode_row = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 8);
  GtkWidget *buttons = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 8);
  /* "Close", not "Cancel": the panel's own button that stops a generation is "Stop". */
  GtkWidget *cancel = gtk_button_new_with_mnemonic (_("_Close"));
  GtkWidget *scaling_row = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 8);
  const char *scalings[G_N_ELEMENTS (scaling_labels)];
  GtkWidget *label;
  const char *translated[G_N_ELEMENTS (mode_labels)];

  gtk_window_set_title (GTK_WINDOW (window), _("Moiré — Generate"));
  gtk_window_set_default_size (GTK_WINDOW (window), 460, 900);
  gtk_window_set_child (GTK_WINDOW (window), box);

  gtk_widget_set_margin_start (header, 12);
  gtk_widget_set_margin_end (header, 12);
  gtk_widget_set_margin_top (header, 10);
  label = gtk_label_new (_("Mode"));
  gtk_box_append (GTK_BOX (mode_row), label);
  for (guint i = 0; i < G_N_ELEMENTS (mode_labels); i++)
    translated[i] = mode_labels[i] != NULL ? _(mode_labels[i]) : NULL;
  self->mode_dropdown = GTK_DROP_DOWN (gtk_drop_down_new_from_strings (translated));
  gtk_widget_set_hexpand (GTK_WIDGET (self->mode_dropdown), TRUE);
  gtk_box_append (GTK_BOX (mode_row), GTK_WIDGET (self->mode_dropdown));
  gtk_box_append (GTK_BOX (header), mode_row);
  label = gtk_label_new (_("Scaling"));
  gtk_box_append (GTK_BOX (scaling_row), label);
  for (guint i = 0; i < G_N_ELEMENTS (scaling_labels); i++)
    scalings[i] = scaling_labels[i] != NULL ? _(scaling_labels[i]) : NULL;
  self->scaling_dropdown = GTK_DROP_DOWN (gtk_drop_down_new_from_strings (scalings));
  gtk_widget_set_hexpand (GTK_WIDGET (self->scaling_dropdown), TRUE);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->scaling_dropdown),
                               _("How the generated picture is scaled to the selection: smooth, or pixel art (every generated pixel a sharp block). The canvas preview shows exactly what Apply adds."));
  gtk_box_append (GTK_BOX (scaling_row), GTK_WIDGET (self->scaling_dropdown));
  gtk_box_append (GTK_BOX (header), scaling_row);
  self->target_label = GTK_LABEL (gtk_label_new (NULL));
  gtk_label_set_xalign (self->target_label, 0);
  gtk_widget_add_css_class (GTK_WIDGET (self->target_label), "dim-label");
  gtk_box_append (GTK_BOX (header), GTK_WIDGET (self->target_label));
  gtk_box_append (GTK_BOX (box), header);

  self->panel = MOIRE_GENERATION_PANEL (moire_generation_panel_new ());
  gtk_widget_set_vexpand (GTK_WIDGET (self->panel), TRUE);
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->panel));

  gtk_widget_set_margin_start (buttons, 12);
  gtk_widget_set_margin_end (buttons, 12);
  gtk_widget_set_margin_top (buttons, 6);
  gtk_widget_set_margin_bottom (buttons, 12);
  gtk_widget_set_halign (buttons, GTK_ALIGN_END);
  self->apply_button = gtk_button_new_with_mnemonic (_("_Apply"));
  gtk_widget_set_tooltip_text (self->apply_button,
                               _("Add the last results as layers; the dialog stays open for more"));
  gtk_widget_set_sensitive (self->apply_button, FALSE);
  self->apply_close_button = gtk_button_new_with_mnemonic (_("Apply and C_lose"));
  gtk_widget_add_css_class (self->apply_close_button, "suggested-action");
  gtk_widget_set_tooltip_text (self->apply_close_button,
                               _("Add the last results as layers and close the dialog"));
  gtk_widget_set_sensitive (self->apply_close_button, FALSE);
  gtk_box_append (GTK_BOX (buttons), cancel);
  gtk_box_append (GTK_BOX (buttons), self->apply_button);
  gtk_box_append (GTK_BOX (buttons), self->apply_close_button);
  gtk_box_append (GTK_BOX (box), buttons);

  g_signal_connect (cancel, "clicked", G_CALLBACK (on_cancel_clicked), self);
  g_signal_connect (self->apply_button, "clicked", G_CALLBACK (on_apply_clicked), self);
  g_signal_connect (self->apply_close_button, "clicked", G_CALLBACK (on_apply_close_clicked), self);
  g_signal_connect (window, "close-request", G_CALLBACK (on_close_request), self);
  return window;
}

gboolean
moire_plugin_dialog_run (MoireHost         *host,
                         MoirePluginValues *values,
                         GArray            *layer_ids,
                         GError           **error)
{
  Dialog dialog = { 0 };
  Dialog *self = &dialog;
  g_autoptr(GError) model_error = NULL;
  g_autofree char *model_path = NULL;
  guint timeout_id = 0;

  if (!gtk_init_check ())
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "cannot open a display for the dialog; run the plug-in non-interactively");
      return FALSE;
    }
  moire_gui_init_i18n ();

  self->host = host;
  self->values = values;
  self->layer_ids = layer_ids;
  self->pending = g_ptr_array_new_with_free_func (g_object_unref);
  self->loop = g_main_loop_new (NULL, FALSE);
  self->self_test = g_getenv ("MOIRE_GIMP_SELF_TEST");
  self->window = GTK_WINDOW (build_window (self));

  settings_from_values (self);
  /* One canvas, one generation at a time: the preview layer follows the job in progress. */
  moire_generation_panel_set_can_queue (self->panel, FALSE);
  gtk_drop_down_set_selected (self->scaling_dropdown,
                              CLAMP (values->scaling, 0, MOIRE_PLUGIN_SCALING_COUNT_ - 1));
  g_signal_connect (self->scaling_dropdown, "notify::selected", G_CALLBACK (on_scaling_changed), self);
  load_history (self);
  if (self->self_test != NULL)
    g_printerr ("moire self-test: %d results restored from the image\n", self->history_restored);
  gtk_drop_down_set_selected (self->mode_dropdown,
                              CLAMP (values->mode, 0, MOIRE_PLUGIN_MODE_COUNT_ - 1));
  on_mode_changed (self->mode_dropdown, NULL, self);
  g_signal_connect (self->mode_dropdown, "notify::selected", G_CALLBACK (on_mode_changed), self);

  g_signal_connect (self->panel, "generate-requested", G_CALLBACK (on_generate_requested), self);
  g_signal_connect (self->panel, "preview-frame", G_CALLBACK (on_preview_frame), self);
  g_signal_connect (self->panel, "result-ready", G_CALLBACK (on_result_ready), self);
  g_signal_connect (self->panel, "finished", G_CALLBACK (on_finished), self);
  g_signal_connect (self->panel, "notify::model", G_CALLBACK (on_model_notify), self);

  model_path = moire_plugin_resolve_model (values->model_path, &model_error);
  if (model_path != NULL)
    moire_generation_panel_set_model_path (self->panel, model_path, FALSE);
  else
    show_error (self, model_error->message);

  if (self->self_test != NULL)
    timeout_id = g_timeout_add_seconds (SELF_TEST_TIMEOUT_S, self_test_timeout, self);

  gtk_window_present (self->window);
  g_main_loop_run (self->loop);

  /* Never leave with the engine running on a worker thread, nor with the preview behind. */
  if (moire_generation_panel_get_busy (self->panel))
    {
      moire_generation_panel_cancel (self->panel);
      while (moire_generation_panel_get_busy (self->panel))
        g_main_context_iteration (NULL, TRUE);
    }
  if (!self->applied)
    moire_host_preview_remove (host);
  g_clear_handle_id (&timeout_id, g_source_remove);
  g_clear_handle_id (&self->frame_source, g_source_remove);
  g_clear_object (&self->queued_frame);
  g_signal_handlers_disconnect_by_data (self->panel, self);
  g_signal_handlers_disconnect_by_data (self->mode_dropdown, self);
  g_signal_handlers_disconnect_by_data (self->scaling_dropdown, self);
  gtk_window_destroy (self->window);
  while (g_main_context_pending (NULL))
    g_main_context_iteration (NULL, FALSE);
  g_ptr_array_unref (self->pending);
  g_main_loop_unref (self->loop);

  if (self->error != NULL)
    {
      g_propagate_error (error, self->error);
      return FALSE;
    }
  return self->applied;
}
