/* test-panel.c — the generation panel as a host embeds it: in a plain GtkWindow, with no
 * GtkApplication (as the GIMP plug-in will). Needs a display (run under xvfb-run).
 * Checks settings ↔ widget state, prompt completion from the model's class names, a
 * generation through the panel's action with its signals, history restore, PNG restore,
 * that errors end up in the panel's banner instead of crashing, and the one-click fix for a
 * size that does not fit in memory. */
#include <glib/gstdio.h>
#include <gtk/gtk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moire-gui.h"

static char *tiny_model;
static char *tmp_dir;

typedef struct
{
  GtkWidget            *window;
  MoireGenerationPanel *panel;
  int                   preview_frames;
  int                   results;
  int                   finished;
  gboolean              success;
  int                   requests;
  gboolean              handle_request;
} Fixture;

static void
iterate_until (gboolean (*done) (Fixture *), Fixture *f)
{
  gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;

  while (!done (f) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_true (done (f));
}

static gboolean
model_ready (Fixture *f)
{
  return moire_generation_panel_get_model (f->panel) != NULL;
}

static gboolean
message_shown (Fixture *f)
{
  return moire_generation_panel_get_message (f->panel) != NULL;
}

static gboolean
job_finished (Fixture *f)
{
  return f->finished > 0;
}

static void
on_preview_frame (MoireGenerationPanel *panel, GdkTexture *texture, int step, int n, Fixture *f)
{
  g_assert_true (GDK_IS_TEXTURE (texture));
  f->preview_frames++;
}

static void
on_result_ready (MoireGenerationPanel *panel, MoireHistoryItem *item, Fixture *f)
{
  f->results++;
}

static void
on_finished (MoireGenerationPanel *panel, gboolean success, Fixture *f)
{
  f->finished++;
  f->success = success;
}

static gboolean
on_generate_requested (MoireGenerationPanel *panel, MoireGenSettings *settings, guint64 seed, Fixture *f)
{
  f->requests++;
  return f->handle_request;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  f->window = gtk_window_new ();
  f->panel = MOIRE_GENERATION_PANEL (moire_generation_panel_new ());
  gtk_window_set_child (GTK_WINDOW (f->window), GTK_WIDGET (f->panel));
  gtk_window_set_default_size (GTK_WINDOW (f->window), 1000, 700);
  g_signal_connect (f->panel, "preview-frame", G_CALLBACK (on_preview_frame), f);
  g_signal_connect (f->panel, "result-ready", G_CALLBACK (on_result_ready), f);
  g_signal_connect (f->panel, "finished", G_CALLBACK (on_finished), f);
  g_signal_connect (f->panel, "generate-requested", G_CALLBACK (on_generate_requested), f);
  gtk_window_present (GTK_WINDOW (f->window));
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gtk_window_destroy (GTK_WINDOW (f->window));
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

/* Depth-first search for a descendant of `type` with `name` (its buildable id is not kept, so
 * tests find widgets by type and a distinguishing property). */
static GtkWidget *
find_widget (GtkWidget *root, GType type, gboolean (*match) (GtkWidget *, gconstpointer), gconstpointer data)
{
  for (GtkWidget *child = gtk_widget_get_first_child (root); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    {
      GtkWidget *found;

      if (G_TYPE_CHECK_INSTANCE_TYPE (child, type) && (match == NULL || match (child, data)))
        return child;
      found = find_widget (child, type, match, data);
      if (found != NULL)
        return found;
    }
  return NULL;
}

static gboolean
button_has_action (GtkWidget *widget, gconstpointer action)
{
  return g_strcmp0 (gtk_actionable_get_action_name (GTK_ACTIONABLE (widget)), action) == 0;
}

static gboolean
dropdown_has_n_items (GtkWidget *widget, gconstpointer n)
{
  GListModel *model = gtk_drop_down_get_model (GTK_DROP_DOWN (widget));

  return model != NULL && g_list_model_get_n_items (model) == GPOINTER_TO_UINT (n);
}

static void
test_widgets_follow_settings (Fixture *f, gconstpointer data)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  GtkWidget *entry = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_ENTRY, NULL, NULL);
  GtkWidget *dropdown;

  g_assert_nonnull (entry);
  /* settings → widget */
  moire_gen_settings_set_prompt (settings, "hammerhead");
  g_assert_cmpstr (gtk_editable_get_text (GTK_EDITABLE (entry)), ==, "hammerhead");
  /* widget → settings */
  gtk_editable_set_text (GTK_EDITABLE (entry), "tiger shark");
  g_assert_cmpstr (moire_gen_settings_get_prompt (settings), ==, "tiger shark");

  /* The sampler dropdown lists the engine's samplers; the selection and the name agree. */
  dropdown = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_DROP_DOWN, dropdown_has_n_items,
                          GUINT_TO_POINTER (MOIRE_SAMPLER_COUNT_));
  g_assert_nonnull (dropdown);
  moire_gen_settings_set_sampler (settings, "Euler a");
  g_assert_cmpuint (gtk_drop_down_get_selected (GTK_DROP_DOWN (dropdown)), ==, MOIRE_SAMPLER_EULER_ANCESTRAL);
  gtk_drop_down_set_selected (GTK_DROP_DOWN (dropdown), MOIRE_SAMPLER_HEUN);
  g_assert_cmpstr (moire_gen_settings_get_sampler (settings), ==, "heun");

  /* Spin buttons show "Default" for the model's own value. */
  moire_gen_settings_set_steps (settings, 0);
  {
    GtkWidget *spin = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_SPIN_BUTTON, NULL, NULL);

    g_assert_nonnull (spin);
    g_assert_true (g_str_has_prefix (gtk_editable_get_text (GTK_EDITABLE (spin)), "Default"));
    moire_gen_settings_set_steps (settings, 12);
    g_assert_cmpstr (gtk_editable_get_text (GTK_EDITABLE (spin)), ==, "12");
  }
}

static void
test_model_and_completion (Fixture *f, gconstpointer data)
{
  GtkWidget *entry = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_ENTRY, NULL, NULL);
  GtkEntryCompletion *completion;
  GtkTreeModel *model;
  GtkTreeIter iter;
  gboolean found_goldfish = FALSE;

  moire_generation_panel_set_model_path (f->panel, tiny_model, TRUE);
  iterate_until (model_ready, f);
  /* apply_defaults: the tiny DDPM model's own settings */
  g_assert_cmpint (moire_gen_settings_get_steps (moire_generation_panel_get_settings (f->panel)), ==, 250);

  completion = gtk_entry_get_completion (GTK_ENTRY (entry));
  g_assert_nonnull (completion);
  model = gtk_entry_completion_get_model (completion);
  for (gboolean ok = gtk_tree_model_get_iter_first (model, &iter); ok; ok = gtk_tree_model_iter_next (model, &iter))
    {
      g_autofree char *word = NULL;

      gtk_tree_model_get (model, &iter, 0, &word, -1);
      found_goldfish |= g_strcmp0 (word, "goldfish") == 0;
    }
  g_assert_true (found_goldfish);
  g_assert_nonnull (strstr (gtk_entry_get_placeholder_text (GTK_ENTRY (entry)), "“"));
}

static void
test_generate_and_restore (Fixture *f, gconstpointer data)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  MoireHistory *history = moire_generation_panel_get_history (f->panel);
  g_autoptr(MoireHistoryItem) second = NULL;
  g_autofree char *png = g_build_filename (tmp_dir, "restore.png", NULL);
  g_autoptr(GError) error = NULL;
  GtkWidget *generate;

  moire_generation_panel_set_model_path (f->panel, tiny_model, FALSE);
  iterate_until (model_ready, f);
  moire_gen_settings_set_prompt (settings, "goldfish");
  moire_gen_settings_set_steps (settings, 8);
  moire_gen_settings_set_batch_count (settings, 3);
  moire_gen_settings_set_seed (settings, 500);
  moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_FIXED);

  /* Generate through the same action the button and Ctrl+Enter use. */
  generate = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_BUTTON, button_has_action, "panel.generate");
  g_assert_nonnull (generate);
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->panel), "panel.generate", NULL));
  g_assert_true (moire_generation_panel_get_busy (f->panel));
  /* Generate stays (pressed again it queues); Stop is enabled beside it */
  g_assert_true (gtk_widget_get_visible (generate));
  g_assert_true (gtk_widget_is_sensitive (find_widget (GTK_WIDGET (f->panel), GTK_TYPE_BUTTON,
                                                       button_has_action, "panel.cancel")));
  iterate_until (job_finished, f);
  g_assert_true (f->success);
  g_assert_false (moire_generation_panel_get_busy (f->panel));
  g_assert_cmpint (f->requests, ==, 1);
  g_assert_cmpint (f->results, ==, 3);
  g_assert_cmpint (f->preview_frames, >=, 1);
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 3);
  g_assert_true (moire_generation_panel_get_current_item (f->panel) == moire_history_peek_newest (history));

  /* Clicking the second result restores its settings: its own seed, fixed; batch kept. */
  second = g_list_model_get_item (G_LIST_MODEL (history), 1);
  g_assert_cmpuint (moire_history_item_get_seed (second), ==, 501);
  moire_gen_settings_set_prompt (settings, "something else");
  moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_RANDOM);
  moire_generation_panel_restore_item (f->panel, second);
  g_assert_cmpstr (moire_gen_settings_get_prompt (settings), ==, "goldfish");
  g_assert_cmpuint (moire_gen_settings_get_seed (settings), ==, 501);
  g_assert_cmpint (moire_gen_settings_get_seed_mode (settings), ==, MOIRE_SEED_MODE_FIXED);
  g_assert_cmpint (moire_gen_settings_get_batch_count (settings), ==, 3);
  g_assert_true (moire_generation_panel_get_current_item (f->panel) == second);

  /* Save it, change everything, open the PNG: the parameters come back. */
  g_assert_true (moire_history_item_save_png (second, png, &error));
  g_assert_no_error (error);
  moire_gen_settings_set_prompt (settings, "tench");
  moire_gen_settings_set_steps (settings, 99);
  moire_gen_settings_set_seed (settings, 1);
  g_assert_true (moire_generation_panel_restore_from_file (f->panel, png, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (moire_gen_settings_get_prompt (settings), ==, "goldfish");
  g_assert_cmpint (moire_gen_settings_get_steps (settings), ==, 8);
  g_assert_cmpuint (moire_gen_settings_get_seed (settings), ==, 501);
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 4);

  /* Reuse-last: the next seed is the one the previous generation started from. */
  moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_REUSE_LAST);
  moire_gen_settings_set_seed (settings, 9);
  f->handle_request = TRUE; /* the host takes over: no job is started */
  moire_generation_panel_generate (f->panel);
  g_assert_cmpint (f->requests, ==, 2);
  g_assert_false (moire_generation_panel_get_busy (f->panel));
  g_assert_cmpuint (moire_gen_settings_get_seed (settings), ==, 500);
}

static void
test_queue (Fixture *f, gconstpointer data)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  MoireHistory *history = moire_generation_panel_get_history (f->panel);

  moire_generation_panel_set_model_path (f->panel, tiny_model, FALSE);
  iterate_until (model_ready, f);
  moire_gen_settings_set_prompt (settings, "goldfish");
  moire_gen_settings_set_steps (settings, 30);
  moire_gen_settings_set_seed (settings, 100);
  moire_gen_settings_set_seed_mode (settings, MOIRE_SEED_MODE_FIXED);
  moire_generation_panel_generate (f->panel);
  g_assert_true (moire_generation_panel_get_busy (f->panel));

  /* Pressed twice more while it runs: two wait; clearing the queue drops them, not the job */
  moire_gen_settings_set_seed (settings, 200);
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->panel), "panel.generate", NULL));
  moire_gen_settings_set_seed (settings, 300);
  moire_generation_panel_generate (f->panel);
  g_assert_cmpuint (moire_generation_panel_get_queue_length (f->panel), ==, 2);
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->panel), "panel.clear-queue", NULL));
  g_assert_cmpuint (moire_generation_panel_get_queue_length (f->panel), ==, 0);
  g_assert_true (moire_generation_panel_get_busy (f->panel));

  /* One more, with its own steps: it starts when the first ends, with what was queued */
  moire_gen_settings_set_seed (settings, 400);
  moire_gen_settings_set_steps (settings, 3);
  moire_generation_panel_generate (f->panel);
  moire_gen_settings_set_seed (settings, 999); /* changed after queueing: not used */
  g_assert_cmpuint (moire_generation_panel_get_queue_length (f->panel), ==, 1);
  iterate_until (job_finished, f);
  g_assert_true (f->success);
  g_assert_true (moire_generation_panel_get_busy (f->panel)); /* the queued one started */
  g_assert_cmpuint (moire_generation_panel_get_queue_length (f->panel), ==, 0);
  f->finished = 0;
  iterate_until (job_finished, f);
  g_assert_true (f->success);
  g_assert_false (moire_generation_panel_get_busy (f->panel));
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 2);
  g_assert_cmpuint (moire_history_item_get_seed (moire_history_peek_newest (history)), ==, 400);
  g_assert_cmpint (moire_gen_settings_get_steps (moire_history_item_get_settings (moire_history_peek_newest (history))), ==, 3);
}

/* Text models: completion offers the vocabulary (and the style phrases where the words are
 * known); unknown words are counted as underlined, but not the word still being typed. */
static void
test_text_model_words (Fixture *f, gconstpointer data)
{
  g_autofree char *ecdit = g_build_filename (g_path_get_dirname (tiny_model), "tiny_ecdit.safetensors", NULL);
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  GtkWidget *entry = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_ENTRY, NULL, NULL);
  GtkTreeModel *model;
  GtkTreeIter iter;
  gboolean found_apple = FALSE, found_special = FALSE;

  moire_generation_panel_set_model_path (f->panel, ecdit, FALSE);
  iterate_until (model_ready, f);
  model = gtk_entry_completion_get_model (gtk_entry_get_completion (GTK_ENTRY (entry)));
  for (gboolean ok = gtk_tree_model_get_iter_first (model, &iter); ok; ok = gtk_tree_model_iter_next (model, &iter))
    {
      g_autofree char *word = NULL;

      gtk_tree_model_get (model, &iter, 0, &word, -1);
      found_apple |= g_strcmp0 (word, "apple") == 0;
      found_special |= word != NULL && word[0] == '[';
    }
  g_assert_true (found_apple);
  g_assert_false (found_special);

  moire_gen_settings_set_prompt (settings, "a red zebra apple");
  g_assert_cmpuint (moire_generation_panel_get_unknown_word_count (f->panel), ==, 1);
  moire_gen_settings_set_prompt (settings, "a red app"); /* still typing "apple" */
  g_assert_cmpuint (moire_generation_panel_get_unknown_word_count (f->panel), ==, 0);
  moire_gen_settings_set_prompt (settings, "a sofa, zebra and cat");
  g_assert_cmpuint (moire_generation_panel_get_unknown_word_count (f->panel), ==, 3);
  g_assert_nonnull (gtk_entry_get_attributes (GTK_ENTRY (entry)));

  /* A class-conditional model: no word marks */
  moire_generation_panel_set_model_path (f->panel, tiny_model, FALSE);
  iterate_until (model_ready, f);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_cmpuint (moire_generation_panel_get_unknown_word_count (f->panel), ==, 0);
}

static gboolean
vae_ready (Fixture *f)
{
  return moire_generation_panel_get_vae (f->panel) != NULL;
}

/* Latent models get a VAE chooser; with a VAE the results are decoded by it, and the
 * engine's "approximate colours" notice does not appear. */
static void
test_vae_for_latent_models (Fixture *f, gconstpointer data)
{
  g_autofree char *dir = g_path_get_dirname (tiny_model);
  g_autofree char *latent = g_build_filename (dir, "tiny_ecdit_latent.safetensors", NULL);
  g_autofree char *vae = g_build_filename (dir, "tiny_vae.safetensors", NULL);
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  GtkWidget *choose;

  choose = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_BUTTON, button_has_action, "panel.choose-vae");
  g_assert_nonnull (choose);
  g_autofree char *pixel = g_build_filename (dir, "tiny_ecdit.safetensors", NULL);

  moire_generation_panel_set_model_path (f->panel, pixel, FALSE);
  iterate_until (model_ready, f);
  g_assert_false (gtk_widget_get_visible (gtk_widget_get_parent (choose))); /* a pixel-space model */

  moire_generation_panel_set_model_path (f->panel, latent, FALSE);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  iterate_until (model_ready, f);
  g_assert_true (gtk_widget_get_visible (gtk_widget_get_parent (choose)));
  g_object_set (f->panel, "vae-path", vae, NULL);
  iterate_until (vae_ready, f);
  moire_gen_settings_set_prompt (settings, "a red apple");
  moire_gen_settings_set_steps (settings, 2);
  moire_generation_panel_generate (f->panel);
  iterate_until (job_finished, f);
  g_assert_true (f->success);
  g_assert_null (moire_generation_panel_get_message (f->panel));
}

static void
test_cancel (Fixture *f, gconstpointer data)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);

  moire_generation_panel_set_model_path (f->panel, tiny_model, FALSE);
  iterate_until (model_ready, f);
  moire_gen_settings_set_prompt (settings, "goldfish");
  moire_gen_settings_set_steps (settings, 200);
  moire_gen_settings_set_batch_count (settings, 4);
  moire_generation_panel_generate (f->panel);
  g_assert_true (moire_generation_panel_get_busy (f->panel));
  /* Escape is bound to panel.cancel */
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->panel), "panel.cancel", NULL));
  iterate_until (job_finished, f);
  g_assert_false (f->success);
  g_assert_cmpint (f->results, ==, 0);
  g_assert_null (moire_generation_panel_get_message (f->panel)); /* a cancel is not an error */
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (moire_generation_panel_get_history (f->panel))), ==, 0);
}

static void
test_errors_in_banner (Fixture *f, gconstpointer data)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  g_autofree char *bogus = g_build_filename (tmp_dir, "bogus.safetensors", NULL);
  g_autofree char *not_png = g_build_filename (tmp_dir, "not.png", NULL);
  g_autoptr(GError) error = NULL;

  /* Generate without a model */
  moire_generation_panel_generate (f->panel);
  g_assert_nonnull (moire_generation_panel_get_message (f->panel));
  g_assert_false (moire_generation_panel_get_busy (f->panel));

  /* A corrupt model file */
  g_assert_true (g_file_set_contents (bogus, "this is not a model", -1, NULL));
  moire_generation_panel_show_message (f->panel, GTK_MESSAGE_INFO, NULL);
  moire_generation_panel_set_model_path (f->panel, bogus, FALSE);
  iterate_until (message_shown, f);
  g_assert_null (moire_generation_panel_get_model (f->panel));

  /* A prompt the model cannot resolve: the engine's message, in the window */
  moire_generation_panel_show_message (f->panel, GTK_MESSAGE_INFO, NULL);
  moire_generation_panel_set_model_path (f->panel, tiny_model, FALSE);
  iterate_until (model_ready, f);
  moire_gen_settings_set_prompt (settings, "zzqx qqqq");
  moire_gen_settings_set_steps (settings, 2);
  moire_generation_panel_generate (f->panel);
  iterate_until (job_finished, f);
  g_assert_false (f->success);
  g_assert_nonnull (moire_generation_panel_get_message (f->panel));
  g_test_message ("banner: %s", moire_generation_panel_get_message (f->panel));
  {
    /* not a size problem: no "Use W × H" button (test_size_that_fits) */
    GtkWidget *fix = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_BUTTON, button_has_action,
                                  "panel.use-fitting-size");
    g_assert_true (fix == NULL || !gtk_widget_get_visible (fix));
  }

  /* Opening something that is not a PNG */
  g_assert_true (g_file_set_contents (not_png, "nope", -1, NULL));
  g_assert_false (moire_generation_panel_restore_from_file (f->panel, not_png, &error));
  g_assert_nonnull (error);
}

/* A size that cannot fit in memory (issue 18, item 8): the embedded 32-px model (pixel space,
 * patch 4) at 4096 × 4096 has a million tokens, whose attention alone needs terabytes, so the
 * engine refuses it before the first step on any machine and names the largest size that
 * fits. The banner offers it as a button; one click sets it, and the form follows. */
static void
test_size_that_fits (Fixture *f, gconstpointer data)
{
  MoireGenSettings *settings = moire_generation_panel_get_settings (f->panel);
  const char *tests = g_getenv ("MOIRE_TEST_DATA");
  g_autofree char *embedded = g_build_filename (tests != NULL ? tests : MOIRE_TEST_DATA, "..",
                                                "data", "models", "moire-emoji.safetensors", NULL);
  GtkWidget *button;
  const char *label;
  int width = 0, height = 0;

  moire_generation_panel_set_model_path (f->panel, embedded, FALSE);
  iterate_until (model_ready, f);
  moire_gen_settings_set_prompt (settings, "red apple");
  moire_gen_settings_set_steps (settings, 2);
  moire_gen_settings_set_size (settings, 4096, 2048);
  moire_generation_panel_generate (f->panel);
  iterate_until (job_finished, f);
  g_assert_false (f->success);
  g_assert_nonnull (strstr (moire_generation_panel_get_message (f->panel), "fits"));
  g_test_message ("banner: %s", moire_generation_panel_get_message (f->panel));

  button = find_widget (GTK_WIDGET (f->panel), GTK_TYPE_BUTTON, button_has_action,
                        "panel.use-fitting-size");
  g_assert_nonnull (button);
  g_assert_true (gtk_widget_get_visible (button));
  label = gtk_button_get_label (GTK_BUTTON (button));
  g_test_message ("button: %s", label);
  g_assert_cmpint (sscanf (label, "Use %d × %d", &width, &height), ==, 2);
  /* the same shape (2:1), smaller, and a multiple of the model's patch */
  g_assert_cmpint (width, >, 0);
  g_assert_cmpint (width, <, 4096);
  g_assert_cmpint (abs (width - 2 * height), <=, 8);
  g_assert_cmpint (width % 4, ==, 0);

  g_signal_emit_by_name (button, "clicked"); /* the click */
  g_assert_cmpint (moire_gen_settings_get_width (settings), ==, width);
  g_assert_cmpint (moire_gen_settings_get_height (settings), ==, height);
  g_assert_null (moire_generation_panel_get_message (f->panel)); /* the banner closed */
}

int
main (int   argc,
      char *argv[])
{
  const char *data = g_getenv ("MOIRE_TEST_DATA");
  int status;

  g_setenv ("GSETTINGS_BACKEND", "memory", TRUE);
  g_setenv ("GTK_A11Y", "none", TRUE);
  gtk_test_init (&argc, &argv, NULL);
  tiny_model = g_build_filename (data != NULL ? data : MOIRE_TEST_DATA, "golden", "tiny_qkv.safetensors", NULL);
  tmp_dir = g_dir_make_tmp ("moire-panel-test-XXXXXX", NULL);

  g_test_add ("/panel/widgets-follow-settings", Fixture, NULL, fixture_setup, test_widgets_follow_settings, fixture_teardown);
  g_test_add ("/panel/model-and-completion", Fixture, NULL, fixture_setup, test_model_and_completion, fixture_teardown);
  g_test_add ("/panel/generate-and-restore", Fixture, NULL, fixture_setup, test_generate_and_restore, fixture_teardown);
  g_test_add ("/panel/queue", Fixture, NULL, fixture_setup, test_queue, fixture_teardown);
  g_test_add ("/panel/text-model-words", Fixture, NULL, fixture_setup, test_text_model_words, fixture_teardown);
  g_test_add ("/panel/vae-for-latent-models", Fixture, NULL, fixture_setup, test_vae_for_latent_models, fixture_teardown);
  g_test_add ("/panel/cancel", Fixture, NULL, fixture_setup, test_cancel, fixture_teardown);
  g_test_add ("/panel/size-that-fits", Fixture, NULL, fixture_setup, test_size_that_fits, fixture_teardown);
  g_test_add ("/panel/errors-in-banner", Fixture, NULL, fixture_setup, test_errors_in_banner, fixture_teardown);
  status = g_test_run ();

  {
    g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", tmp_dir);

    (void) !system (cmd);
  }
  g_free (tiny_model);
  g_free (tmp_dir);
  return status;
}
