/* moire-studio-application.c — Moiré Studio's application object and its self-test.
 *
 * --self-test drives a whole generation in-process, as a user would: it waits for the model,
 * activates the "generate" action, optionally pauses the worker at a step to take a
 * screenshot of the live preview, waits for the result, saves the first image (PNG with
 * parameters) and a screenshot of the window with the history, and exits 0 — or 1 with a
 * message. Screenshots are rendered by GTK itself (no X tools needed). */
#define G_LOG_DOMAIN "moire-studio"

#include "config.h"

/* g_settings_backend_get_default and the memory backend: to tell whether settings can be
 * saved, and to keep them in memory when they cannot. */
#define G_SETTINGS_ENABLE_BACKEND
#include <gio/gsettingsbackend.h>
#include <errno.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <stdio.h>

#include "moire-gui.h"
#include "moire-studio-application.h"
#include "moire-studio-window.h"

struct _MoireStudioApplication
{
  GtkApplication     parent_instance;

  GSettings         *settings;
  char              *settings_note;  /* why settings are kept in memory only, or NULL */
  char              *history_dir;    /* where results are kept between launches, or NULL */
  int                exit_status;

  /* Command line */
  char              *model_path;
  char              *prompt;
  char              *negative_prompt;
  int                steps;
  gint64             seed;
  int                batch;
  int                size;
  gboolean           self_test;
  char              *output;
  char              *screenshot;
  char              *screenshot_mid;
  int                pause_at_step;
  int                timeout_s;
  int                runs;
  gboolean           dmcmc;
  int                stream_rounds;
  gboolean           routing;
  int                queue;

  /* Self-test state */
  MoireStudioWindow *window;
  guint              timeout_id;
  gboolean           generation_started;
  int                runs_done;
  char              *pending_shot;
  gboolean           quit_after_shot;
};

G_DEFINE_FINAL_TYPE (MoireStudioApplication, moire_studio_application, GTK_TYPE_APPLICATION)

/* dconf — GSettings' usual backend — writes through a D-Bus service. Without a session bus
 * (a fresh login over ssh, a container, a CI runner) every write fails and GSettings puts
 * the old value back: the model path chosen at start-up reverts to "", so no model loads
 * and nothing says why. Returns NULL when settings can be saved, else the reason. */
static char *
settings_unsavable_reason (void)
{
  g_autoptr(GSettingsBackend) backend = NULL;
  g_autoptr(GDBusConnection) bus = NULL;
  g_autoptr(GError) error = NULL;

  if (g_getenv ("GSETTINGS_BACKEND") != NULL)
    return NULL; /* chosen on purpose (memory in the tests, keyfile, …) */
  backend = g_settings_backend_get_default ();
  if (!g_str_equal (G_OBJECT_TYPE_NAME (backend), "DConfSettingsBackend"))
    return NULL;
  bus = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
  if (bus != NULL)
    return NULL;
  g_message ("no D-Bus session bus for dconf (%s): settings are kept in memory", error->message);
  return g_strdup (_("Settings cannot be saved here (dconf needs a D-Bus session, and there is none): they are kept until Moiré Studio closes."));
}

static GSettings *
create_settings (char **note)
{
  GSettingsSchemaSource *source = g_settings_schema_source_get_default ();
  g_autoptr(GSettingsSchema) schema = NULL;

  if (source != NULL)
    schema = g_settings_schema_source_lookup (source, APP_ID, TRUE);
  if (schema == NULL && g_file_test (MOIRE_STUDIO_SCHEMA_DIR "/gschemas.compiled", G_FILE_TEST_EXISTS))
    {
      /* Uninstalled: the schema compiled in the build tree. */
      g_autoptr(GSettingsSchemaSource) build_source =
        g_settings_schema_source_new_from_directory (MOIRE_STUDIO_SCHEMA_DIR, source, FALSE, NULL);

      if (build_source != NULL)
        schema = g_settings_schema_source_lookup (build_source, APP_ID, FALSE);
    }
  if (schema == NULL)
    {
      g_message ("GSettings schema %s is not installed; settings will not be remembered", APP_ID);
      return NULL;
    }
  *note = settings_unsavable_reason ();
  if (*note != NULL)
    {
      g_autoptr(GSettingsBackend) memory = g_memory_settings_backend_new ();

      return g_settings_new_full (schema, memory, NULL);
    }
  return g_settings_new_full (schema, NULL, NULL);
}

static MoireStudioWindow *
get_window (MoireStudioApplication *self)
{
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (self));

  if (MOIRE_IS_STUDIO_WINDOW (window))
    return MOIRE_STUDIO_WINDOW (window);
  return NULL;
}

/* --- history kept between launches -------------------------------------------------------- */

/* Results are kept as PNGs (with their parameters, like Save) in XDG_DATA_HOME/moire/history,
 * named by time so that the name order is the age order; the newest HISTORY_KEEP stay. */
#define HISTORY_KEEP 100

static int
compare_names (gconstpointer a,
               gconstpointer b)
{
  return g_strcmp0 (*(char * const *) a, *(char * const *) b);
}

/* The PNG files of the history folder, oldest first. */
static GPtrArray *
list_history_files (const char *dir)
{
  g_autoptr(GDir) listing = g_dir_open (dir, 0, NULL);
  GPtrArray *files = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  while (listing != NULL && (name = g_dir_read_name (listing)) != NULL)
    if (g_str_has_suffix (name, ".png"))
      g_ptr_array_add (files, g_build_filename (dir, name, NULL));
  g_ptr_array_sort (files, compare_names);
  return files;
}

static void
on_result_to_keep (MoireGenerationPanel   *panel,
                   MoireHistoryItem       *item,
                   MoireStudioApplication *self)
{
  g_autoptr(GPtrArray) files = NULL;
  g_autoptr(GDateTime) now = g_date_time_new_now_utc ();
  g_autofree char *stamp = g_date_time_format (now, "%Y%m%d-%H%M%S");
  g_autofree char *name = g_strdup_printf ("%s-%06d-%" G_GUINT64_FORMAT ".png", stamp,
                                           g_date_time_get_microsecond (now),
                                           moire_history_item_get_seed (item));
  g_autofree char *path = g_build_filename (self->history_dir, name, NULL);
  g_autoptr(GError) error = NULL;

  if (g_mkdir_with_parents (self->history_dir, 0700) != 0 ||
      !moire_history_item_save_png (item, path, &error))
    {
      g_message ("cannot keep the result in %s: %s", self->history_dir,
                 error != NULL ? error->message : g_strerror (errno));
      return;
    }
  files = list_history_files (self->history_dir);
  for (guint i = 0; i + HISTORY_KEEP < files->len; i++)
    g_unlink (g_ptr_array_index (files, i));
}

/* Clear History empties the folder too. */
static void
on_history_items_changed (GListModel             *history,
                          guint                   position,
                          guint                   removed,
                          guint                   added,
                          MoireStudioApplication *self)
{
  g_autoptr(GPtrArray) files = NULL;

  if (g_list_model_get_n_items (history) > 0)
    return;
  files = list_history_files (self->history_dir);
  for (guint i = 0; i < files->len; i++)
    g_unlink (g_ptr_array_index (files, i));
}

static void
restore_history (MoireStudioApplication *self,
                 MoireGenerationPanel   *panel)
{
  g_autoptr(GPtrArray) files = list_history_files (self->history_dir);
  guint restored = 0;

  for (guint i = files->len > HISTORY_KEEP ? files->len - HISTORY_KEEP : 0; i < files->len; i++)
    {
      g_autoptr(GError) error = NULL;

      if (moire_generation_panel_add_history_file (panel, g_ptr_array_index (files, i), &error))
        restored++;
      else
        g_message ("history: %s", error->message);
    }
  if (self->self_test)
    g_print ("self-test: history restored: %u\n", restored);
  g_signal_connect (panel, "result-ready", G_CALLBACK (on_result_to_keep), self);
  g_signal_connect (moire_generation_panel_get_history (panel), "items-changed",
                    G_CALLBACK (on_history_items_changed), self);
}

/* --- actions ------------------------------------------------------------------------------- */

static void
action_generate (GSimpleAction *action,
                 GVariant      *parameter,
                 gpointer       user_data)
{
  MoireStudioWindow *window = get_window (user_data);

  if (window != NULL)
    moire_generation_panel_generate (moire_studio_window_get_panel (window));
}

static void
action_cancel (GSimpleAction *action,
               GVariant      *parameter,
               gpointer       user_data)
{
  MoireStudioWindow *window = get_window (user_data);

  if (window != NULL)
    moire_generation_panel_cancel (moire_studio_window_get_panel (window));
}

static void
action_quit (GSimpleAction *action,
             GVariant      *parameter,
             gpointer       user_data)
{
  GList *windows = gtk_application_get_windows (GTK_APPLICATION (user_data));

  /* Closing the windows saves their state and cancels generations. */
  while (windows != NULL)
    {
      GList *next = windows->next;

      gtk_window_close (GTK_WINDOW (windows->data));
      windows = next;
    }
  g_application_quit (G_APPLICATION (user_data));
}

static void
action_about (GSimpleAction *action,
              GVariant      *parameter,
              gpointer       user_data)
{
  static const char *authors[] = { "The Moiré authors", NULL };

  gtk_show_about_dialog (GTK_WINDOW (get_window (user_data)),
                         "program-name", _("Moiré Studio"),
                         "logo-icon-name", APP_ID,
                         "version", PACKAGE_VERSION,
                         "comments", _("Generate images with Mixture-of-Experts diffusion transformers"),
                         "license-type", GTK_LICENSE_MIT_X11,
                         "authors", authors,
                         /* Translators: your name(s), one per line */
                         "translator-credits", _("translator-credits"),
                         NULL);
}

static const GActionEntry app_actions[] = {
  { .name = "generate", .activate = action_generate },
  { .name = "cancel", .activate = action_cancel },
  { .name = "about", .activate = action_about },
  { .name = "quit", .activate = action_quit },
};

/* --- self-test ----------------------------------------------------------------------------- */

static void
self_test_fail (MoireStudioApplication *self,
                const char             *message)
{
  g_printerr ("self-test: FAIL: %s\n", message);
  self->exit_status = 1;
  if (self->window != NULL)
    gtk_window_destroy (GTK_WINDOW (self->window));
  g_application_quit (G_APPLICATION (self));
}

static gboolean
self_test_timeout (gpointer user_data)
{
  MoireStudioApplication *self = user_data;

  self->timeout_id = 0;
  self_test_fail (self, "timed out");
  return G_SOURCE_REMOVE;
}

/* Renders the window with its own renderer. Called from the frame clock's after-paint, when no
 * resize is pending, so the snapshot is never empty (feasibility.md §4). */
static gboolean
save_window_png (GtkWidget   *window,
                 const char  *path,
                 GError     **error)
{
  g_autoptr(GdkPaintable) paintable = gtk_widget_paintable_new (window);
  int width = gtk_widget_get_width (window);
  int height = gtk_widget_get_height (window);
  g_autoptr(GtkSnapshot) snapshot = gtk_snapshot_new ();
  g_autoptr(GskRenderNode) node = NULL;
  g_autoptr(GdkTexture) texture = NULL;

  gdk_paintable_snapshot (paintable, GDK_SNAPSHOT (snapshot), width, height);
  node = gtk_snapshot_free_to_node (g_steal_pointer (&snapshot));
  if (node == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "empty snapshot");
      return FALSE;
    }
  texture = gsk_renderer_render_texture (gtk_native_get_renderer (GTK_NATIVE (window)), node,
                                         &GRAPHENE_RECT_INIT (0, 0, width, height));
  if (!gdk_texture_save_to_png (texture, path))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "could not write %s", path);
      return FALSE;
    }
  return TRUE;
}

static void self_test_after_shot (MoireStudioApplication *self);

static void
on_after_paint (GdkFrameClock          *clock,
                MoireStudioApplication *self)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_steal_pointer (&self->pending_shot);

  g_signal_handlers_disconnect_by_func (clock, on_after_paint, self);
  if (path == NULL)
    return;
  if (!save_window_png (GTK_WIDGET (self->window), path, &error))
    {
      self_test_fail (self, error->message);
      return;
    }
  g_print ("self-test: screenshot %s\n", path);
  self_test_after_shot (self);
}

static void
take_screenshot (MoireStudioApplication *self,
                 const char             *path)
{
  GdkFrameClock *clock = gtk_widget_get_frame_clock (GTK_WIDGET (self->window));

  g_free (self->pending_shot);
  self->pending_shot = g_strdup (path);
  g_signal_connect (clock, "after-paint", G_CALLBACK (on_after_paint), self);
  gtk_widget_queue_draw (GTK_WIDGET (self->window));
}

static void
self_test_after_shot (MoireStudioApplication *self)
{
  MoireGenerationPanel *panel = moire_studio_window_get_panel (self->window);

  if (moire_generation_panel_get_busy (panel))
    {
      moire_generation_panel_resume (panel); /* the mid-generation shot is taken */
      return;
    }
  g_print ("self-test: OK\n");
  gtk_window_destroy (GTK_WINDOW (self->window));
  g_application_quit (G_APPLICATION (self));
}

static void
on_panel_paused (MoireGenerationPanel   *panel,
                 int                     step,
                 MoireStudioApplication *self)
{
  g_print ("self-test: paused at step %d\n", step);
  if (self->screenshot_mid != NULL)
    take_screenshot (self, self->screenshot_mid);
  else
    moire_generation_panel_resume (panel);
}

static void
on_panel_finished (MoireGenerationPanel   *panel,
                   gboolean                success,
                   MoireStudioApplication *self)
{
  MoireHistoryItem *item = moire_generation_panel_get_current_item (panel);
  g_autoptr(GError) error = NULL;

  if (!success)
    {
      const char *message = moire_generation_panel_get_message (panel);

      self_test_fail (self, message != NULL ? message : "generation failed");
      return;
    }
  /* --queue: the queued generations run one after the other; wait for the last. */
  if (moire_generation_panel_get_queue_length (panel) > 0)
    {
      g_print ("self-test: done, a queued one follows (%u waiting)\n",
               moire_generation_panel_get_queue_length (panel));
      return;
    }
  /* More runs first (--runs): the history fills up; the mid-generation screenshot is taken
   * during the last run. The seed moves on past the batch. */
  if (++self->runs_done < self->runs)
    {
      MoireGenSettings *settings = moire_generation_panel_get_settings (panel);

      moire_gen_settings_set_seed (settings, moire_gen_settings_get_seed (settings) +
                                             (guint64) moire_gen_settings_get_batch_count (settings));
      moire_generation_panel_set_pause_at_step (panel, self->runs_done == self->runs - 1 ? self->pause_at_step : 0);
      g_action_group_activate_action (G_ACTION_GROUP (self), "generate", NULL);
      return;
    }
  g_print ("self-test: %u images in the history\n",
           g_list_model_get_n_items (G_LIST_MODEL (moire_generation_panel_get_history (panel))));
  if (item == NULL)
    {
      self_test_fail (self, "no result shown");
      return;
    }
  g_print ("self-test: parameters: %s\n", moire_history_item_get_parameters (item));
  if (self->stream_rounds > 0)
    g_print ("self-test: stream rounds %d\n", moire_generation_panel_get_stream_round (panel));
  if (self->routing)
    g_print ("self-test: routing map: %s\n",
             moire_history_item_has_routing (item) ? moire_history_item_get_routing_legend (item) : "none");
  if (self->output != NULL)
    {
      if (!moire_history_item_save_png (item, self->output, &error))
        {
          self_test_fail (self, error->message);
          return;
        }
      g_print ("self-test: saved %s\n", self->output);
    }
  if (self->screenshot != NULL)
    take_screenshot (self, self->screenshot);
  else
    self_test_after_shot (self);
}

static void
print_labels (GtkWidget *widget)
{
  /* The Generate button's label shows which language the UI came up in (LANGUAGE=de). */
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    {
      if (GTK_IS_BUTTON (child) &&
          g_strcmp0 (gtk_actionable_get_action_name (GTK_ACTIONABLE (child)), "panel.generate") == 0)
        g_print ("self-test: generate button: %s\n", gtk_button_get_label (GTK_BUTTON (child)));
      print_labels (child);
    }
}

/* --stream: open the DMCMC settings and scroll them into view for the screenshot. */
static gboolean
show_dmcmc_settings (GtkWidget *widget)
{
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    {
      if (GTK_IS_EXPANDER (child))
        {
          gtk_expander_set_expanded (GTK_EXPANDER (child), TRUE);
          gtk_widget_grab_focus (child);
          return TRUE;
        }
      if (show_dmcmc_settings (child))
        return TRUE;
    }
  return FALSE;
}

static void
self_test_start_generation (MoireStudioApplication *self)
{
  MoireGenerationPanel *panel = moire_studio_window_get_panel (self->window);
  MoireModelHandle *model = moire_generation_panel_get_model (panel);

  if (self->generation_started || model == NULL)
    return;
  self->generation_started = TRUE;
  g_print ("self-test: model %s\n", moire_model_handle_get_path (model));
  {
    g_autofree char *info = moire_model_handle_describe (model);

    g_print ("self-test: model info: %s\n", info);
  }
  print_labels (GTK_WIDGET (self->window));
  if (self->stream_rounds > 0)
    show_dmcmc_settings (GTK_WIDGET (self->window));
  if (self->screenshot_mid != NULL && self->pause_at_step == 0)
    {
      int steps = moire_gen_settings_get_steps (moire_generation_panel_get_settings (panel));

      self->pause_at_step = MAX (steps / 2, 1);
    }
  moire_generation_panel_set_pause_at_step (panel, self->runs > 1 ? 0 : self->pause_at_step);
  g_signal_connect (panel, "paused", G_CALLBACK (on_panel_paused), self);
  g_signal_connect (panel, "finished", G_CALLBACK (on_panel_finished), self);
  /* Through the application action, as `gapplication action io.github.moire.Studio generate`. */
  g_action_group_activate_action (G_ACTION_GROUP (self), "generate", NULL);
  /* --queue N: Generate pressed N more times while the first one runs. */
  for (int i = 0; i < self->queue && moire_generation_panel_get_busy (panel); i++)
    {
      MoireGenSettings *settings = moire_generation_panel_get_settings (panel);

      if (moire_gen_settings_get_seed_mode (settings) == MOIRE_SEED_MODE_FIXED)
        moire_gen_settings_set_seed (settings, moire_gen_settings_get_seed (settings) +
                                               (guint64) moire_gen_settings_get_batch_count (settings));
      g_action_group_activate_action (G_ACTION_GROUP (self), "generate", NULL);
    }
  if (self->queue > 0)
    g_print ("self-test: queued %u while running\n", moire_generation_panel_get_queue_length (panel));
  if (!moire_generation_panel_get_busy (panel))
    {
      const char *message = moire_generation_panel_get_message (panel);

      self_test_fail (self, message != NULL ? message : "generation did not start");
    }
}

static void
on_model_notify (MoireGenerationPanel   *panel,
                 GParamSpec             *pspec,
                 MoireStudioApplication *self)
{
  if (moire_generation_panel_get_model (panel) != NULL)
    {
      g_signal_handlers_disconnect_by_func (panel, on_model_notify, self);
      /* From an idle, so the window has been drawn once. */
      g_idle_add_once ((GSourceOnceFunc) self_test_start_generation, self);
    }
  else
    {
      const char *message = moire_generation_panel_get_message (panel);

      if (message != NULL)
        self_test_fail (self, message);
    }
}

static void
apply_command_line (MoireStudioApplication *self,
                    MoireGenSettings       *settings)
{
  if (self->prompt != NULL)
    moire_gen_settings_set_prompt (settings, self->prompt);
  if (self->negative_prompt != NULL)
    moire_gen_settings_set_negative_prompt (settings, self->negative_prompt);
  if (self->steps > 0)
    moire_gen_settings_set_steps (settings, self->steps);
  if (self->seed >= 0)
    {
      moire_gen_settings_set_seed (settings, (guint64) self->seed);
      moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_FIXED);
    }
  if (self->batch > 0)
    moire_gen_settings_set_batch_count (settings, self->batch);
  if (self->size > 0)
    moire_gen_settings_set_size (settings, self->size, self->size);
  if (self->dmcmc || self->stream_rounds > 0)
    {
      moire_gen_settings_set_sampler (settings, "dmcmc");
      if (self->steps > 0)
        moire_gen_settings_set_dmcmc_steps (settings, self->steps);
    }
}

/* --- GApplication -------------------------------------------------------------------------- */

static void
moire_studio_application_startup (GApplication *application)
{
  MoireStudioApplication *self = MOIRE_STUDIO_APPLICATION (application);
  static const char *generate_accels[] = { "<Control>Return", "<Control>KP_Enter", NULL };
  static const char *quit_accels[] = { "<Control>q", NULL };

  G_APPLICATION_CLASS (moire_studio_application_parent_class)->startup (application);

  g_action_map_add_action_entries (G_ACTION_MAP (self), app_actions, G_N_ELEMENTS (app_actions), self);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "app.generate", generate_accels);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "app.quit", quit_accels);
  gtk_window_set_default_icon_name (APP_ID);
  self->settings = create_settings (&self->settings_note);
}

static void
moire_studio_application_activate (GApplication *application)
{
  MoireStudioApplication *self = MOIRE_STUDIO_APPLICATION (application);
  MoireStudioWindow *window = get_window (self);
  MoireGenerationPanel *panel;

  if (window != NULL)
    {
      gtk_window_present (GTK_WINDOW (window));
      return;
    }
  window = moire_studio_window_new (GTK_APPLICATION (self), self->settings);
  panel = moire_studio_window_get_panel (window);
  self->window = window;
  apply_command_line (self, moire_generation_panel_get_settings (panel));
  if (self->stream_rounds > 0)
    {
      g_object_set (panel, "stream", TRUE, NULL);
      moire_generation_panel_set_stream_rounds (panel, self->self_test ? self->stream_rounds : 0);
    }
  if (self->routing)
    g_object_set (panel, "show-routing", TRUE, NULL);
  if (self->self_test)
    {
      g_signal_connect (panel, "notify::model", G_CALLBACK (on_model_notify), self);
      self->timeout_id = g_timeout_add_seconds (MAX (self->timeout_s, 1), self_test_timeout, self);
      self->runs = MAX (self->runs, 1);
    }
  moire_studio_window_choose_initial_model (window, self->model_path);
  moire_generation_panel_set_notice (panel, self->settings_note);
  /* Kept between launches — except in a self-test, unless MOIRE_STUDIO_HISTORY_DIR says
   * where (tests never touch the user's own history). */
  if (g_getenv ("MOIRE_STUDIO_HISTORY_DIR") != NULL)
    self->history_dir = g_strdup (g_getenv ("MOIRE_STUDIO_HISTORY_DIR"));
  else if (!self->self_test)
    self->history_dir = g_build_filename (g_get_user_data_dir (), "moire", "history", NULL);
  if (self->history_dir != NULL)
    restore_history (self, panel);
  if (self->settings_note != NULL && self->self_test)
    g_print ("self-test: settings note: %s\n", self->settings_note);
  if (self->self_test && moire_generation_panel_get_model (panel) == NULL &&
      moire_gen_settings_get_model_path (moire_generation_panel_get_settings (panel))[0] == '\0')
    {
      const char *message = moire_generation_panel_get_message (panel);

      g_printerr ("self-test: FAIL: %s\n", message != NULL ? message : "no model");
      self->exit_status = 1;
    }
  gtk_window_present (GTK_WINDOW (window));
  if (self->exit_status != 0)
    self_test_fail (self, "no model");
}

static void
moire_studio_application_open (GApplication  *application,
                               GFile        **files,
                               int            n_files,
                               const char    *hint)
{
  MoireStudioApplication *self = MOIRE_STUDIO_APPLICATION (application);
  MoireStudioWindow *window;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = NULL;

  g_application_activate (application);
  window = get_window (self);
  if (window == NULL || n_files < 1)
    return;
  path = g_file_get_path (files[0]);
  if (path != NULL &&
      !moire_generation_panel_restore_from_file (moire_studio_window_get_panel (window), path, &error))
    moire_generation_panel_show_message (moire_studio_window_get_panel (window),
                                         g_error_matches (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED)
                                           ? GTK_MESSAGE_WARNING : GTK_MESSAGE_ERROR,
                                         error->message);
}

static int
moire_studio_application_handle_local_options (GApplication *application,
                                               GVariantDict *options)
{
  MoireStudioApplication *self = MOIRE_STUDIO_APPLICATION (application);

  if (g_variant_dict_contains (options, "version"))
    {
      g_print ("moire-studio %s (engine %s)\n", PACKAGE_VERSION, MOIRE_VERSION_STRING);
      return 0;
    }
  if (self->self_test)
    {
      /* A self-test is its own instance: never hand it to a running Studio. */
      g_application_set_flags (application,
                               g_application_get_flags (application) | G_APPLICATION_NON_UNIQUE);
    }
  if (self->output != NULL && !self->self_test)
    {
      g_printerr ("%s\n", _("--output and --screenshot need --self-test"));
      return 2;
    }
  return -1;
}

static void
moire_studio_application_dispose (GObject *object)
{
  MoireStudioApplication *self = MOIRE_STUDIO_APPLICATION (object);

  g_clear_handle_id (&self->timeout_id, g_source_remove);
  g_clear_object (&self->settings);
  g_clear_pointer (&self->settings_note, g_free);
  g_clear_pointer (&self->history_dir, g_free);
  G_OBJECT_CLASS (moire_studio_application_parent_class)->dispose (object);
}

static void
moire_studio_application_finalize (GObject *object)
{
  MoireStudioApplication *self = MOIRE_STUDIO_APPLICATION (object);

  g_free (self->model_path);
  g_free (self->prompt);
  g_free (self->negative_prompt);
  g_free (self->output);
  g_free (self->screenshot);
  g_free (self->screenshot_mid);
  g_free (self->pending_shot);
  G_OBJECT_CLASS (moire_studio_application_parent_class)->finalize (object);
}

static void
moire_studio_application_class_init (MoireStudioApplicationClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GApplicationClass *app_class = G_APPLICATION_CLASS (klass);

  object_class->dispose = moire_studio_application_dispose;
  object_class->finalize = moire_studio_application_finalize;
  app_class->startup = moire_studio_application_startup;
  app_class->activate = moire_studio_application_activate;
  app_class->open = moire_studio_application_open;
  app_class->handle_local_options = moire_studio_application_handle_local_options;
}

static void
moire_studio_application_init (MoireStudioApplication *self)
{
  const GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &self->model_path, N_("Model file to load"), N_("FILE") },
    { "prompt", 'p', 0, G_OPTION_ARG_STRING, &self->prompt, N_("Prompt to start with"), N_("TEXT") },
    { "negative", 0, 0, G_OPTION_ARG_STRING, &self->negative_prompt, N_("Negative prompt to start with"), N_("TEXT") },
    { "steps", 0, 0, G_OPTION_ARG_INT, &self->steps, N_("Sampling steps"), "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &self->seed, N_("Seed (and seed mode “fixed”)"), "N" },
    { "batch", 0, 0, G_OPTION_ARG_INT, &self->batch, N_("Images per generation"), "N" },
    { "size", 0, 0, G_OPTION_ARG_INT, &self->size, N_("Image width and height in pixels"), "N" },
    { "self-test", 0, 0, G_OPTION_ARG_NONE, &self->self_test, N_("Generate once, save, take screenshots and quit (for tests)"), NULL },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &self->output, N_("Self-test: save the first image here"), N_("FILE") },
    { "screenshot", 0, 0, G_OPTION_ARG_FILENAME, &self->screenshot, N_("Self-test: screenshot of the window after the generation"), N_("FILE") },
    { "screenshot-mid", 0, 0, G_OPTION_ARG_FILENAME, &self->screenshot_mid, N_("Self-test: screenshot during the generation"), N_("FILE") },
    { "pause-at-step", 0, 0, G_OPTION_ARG_INT, &self->pause_at_step, N_("Self-test: step of the mid-generation screenshot"), "N" },
    { "timeout", 0, 0, G_OPTION_ARG_INT, &self->timeout_s, N_("Self-test: give up after this many seconds"), "S" },
    { "runs", 0, 0, G_OPTION_ARG_INT, &self->runs, N_("Self-test: generate this many times"), "N" },
    { "queue", 0, 0, G_OPTION_ARG_INT, &self->queue, N_("Self-test: press Generate N more times while the first generation runs (the queue)"), "N" },
    { "dmcmc", 0, 0, G_OPTION_ARG_NONE, &self->dmcmc, N_("Sample with DMCMC"), NULL },
    { "stream", 0, 0, G_OPTION_ARG_INT, &self->stream_rounds, N_("DMCMC stream mode; the self-test stops after N rounds"), "N" },
    { "routing", 0, 0, G_OPTION_ARG_NONE, &self->routing, N_("Show the expert-routing overlay"), NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, NULL, N_("Print the version and exit"), NULL },
    { NULL }
  };

  self->seed = -1;
  self->timeout_s = 60;
  self->runs = 1;
  g_application_add_main_option_entries (G_APPLICATION (self), entries);
  g_application_set_option_context_summary (G_APPLICATION (self),
                                            _("Generate images with Mixture-of-Experts diffusion transformers."));
}

MoireStudioApplication *
moire_studio_application_new (void)
{
  return g_object_new (MOIRE_TYPE_STUDIO_APPLICATION,
                       "application-id", APP_ID,
                       "flags", G_APPLICATION_HANDLES_OPEN,
                       "resource-base-path", "/io/github/moire/Studio",
                       NULL);
}

int
moire_studio_application_get_exit_status (MoireStudioApplication *self)
{
  g_return_val_if_fail (MOIRE_IS_STUDIO_APPLICATION (self), 1);
  return self->exit_status;
}
