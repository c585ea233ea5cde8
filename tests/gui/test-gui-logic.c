/* test-gui-logic.c — unit tests of libmoire-gui's non-widget logic (no display needed):
 * settings ↔ engine parameters, A1111 metadata restore, seed modes, the history model,
 * default-model look-up, GSettings binding, and the worker-thread job (progress, previews
 * with a frame queue of one, cancel). Uses the tiny test model. */
#define G_SETTINGS_ENABLE_BACKEND
#include <gio/gio.h>
#include <gio/gsettingsbackend.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moire-gui.h"

static char *tiny_model;     /* tests/golden/tiny_qkv.safetensors */
static char *tmp_dir;

/* --- settings ------------------------------------------------------------------------------ */

static void
test_settings_defaults (void)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  moire_generate_params p;
  g_autoptr(GError) error = NULL;

  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "default");
  g_assert_cmpstr (moire_gen_settings_get_schedule (s), ==, "default");
  g_assert_cmpint (moire_gen_settings_get_batch_count (s), ==, 1);
  g_assert_cmpint (moire_gen_settings_get_seed_mode (s), ==, MOIRE_SEED_MODE_RANDOM);

  g_assert_true (moire_gen_settings_to_params (s, 1234, &p, &error));
  g_assert_no_error (error);
  /* "Default" values reach the engine as its own "model default" markers. */
  g_assert_cmpint (p.steps, ==, 0);
  g_assert_cmpfloat (p.cfg_scale, <, 0);
  g_assert_cmpint (p.width, ==, 0);
  g_assert_cmpint (p.sampler, ==, MOIRE_SAMPLER_DEFAULT);
  g_assert_cmpint (p.schedule, ==, MOIRE_SCHEDULE_DEFAULT);
  g_assert_cmpuint (p.seed, ==, 1234);
  g_assert_cmpint (p.class_id, ==, -1);
  g_assert_null (p.init_image);
}

static void
test_settings_to_params (void)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  moire_generate_params p;

  moire_gen_settings_set_prompt (s, "goldfish");
  moire_gen_settings_set_negative_prompt (s, "tench");
  g_assert_true (moire_gen_settings_set_sampler (s, "Euler a")); /* A1111 label */
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "euler-a");
  g_assert_true (moire_gen_settings_set_sampler (s, "dpmpp_2m")); /* ComfyUI name */
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "dpm++2m");
  g_assert_false (moire_gen_settings_set_sampler (s, "no such sampler"));
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "dpm++2m");
  g_assert_true (moire_gen_settings_set_schedule (s, "Karras"));
  g_assert_cmpstr (moire_gen_settings_get_schedule (s), ==, "karras");
  /* Stored as enums; the names (GSettings, PNG text) are the engine's, "default" kept. */
  g_assert_cmpint (moire_gen_settings_get_sampler_id (s), ==, MOIRE_SAMPLER_DPMPP_2M);
  g_assert_cmpint (moire_gen_settings_get_schedule_id (s), ==, MOIRE_SCHEDULE_KARRAS);
  moire_gen_settings_set_schedule_id (s, MOIRE_SCHEDULE_DEFAULT);
  g_assert_cmpstr (moire_gen_settings_get_schedule (s), ==, "default");
  moire_gen_settings_set_schedule_id (s, MOIRE_SCHEDULE_UNIFORM);
  g_assert_cmpstr (moire_gen_settings_get_schedule (s), ==, "uniform");
  {
    g_autofree char *through_property = NULL;

    g_object_get (s, "schedule", &through_property, NULL);
    g_assert_cmpstr (through_property, ==, "uniform");
  }
  g_assert_true (moire_gen_settings_set_schedule (s, "Karras"));
  moire_gen_settings_set_steps (s, 30);
  moire_gen_settings_set_cfg_scale (s, 5.5);
  moire_gen_settings_set_size (s, 128, 96);
  moire_gen_settings_set_batch_count (s, 3);
  moire_gen_settings_set_strength (s, 0.4);

  g_assert_true (moire_gen_settings_to_params (s, 99, &p, NULL));
  g_assert_cmpstr (p.prompt, ==, "goldfish");
  g_assert_cmpstr (p.negative_prompt, ==, "tench");
  g_assert_cmpint (p.sampler, ==, MOIRE_SAMPLER_DPMPP_2M);
  g_assert_cmpint (p.schedule, ==, MOIRE_SCHEDULE_KARRAS);
  g_assert_cmpint (p.steps, ==, 30);
  g_assert_cmpfloat_with_epsilon (p.cfg_scale, 5.5, 1e-6);
  g_assert_cmpint (p.width, ==, 128);
  g_assert_cmpint (p.height, ==, 96);
  g_assert_cmpint (p.batch_count, ==, 3);
  g_assert_cmpfloat_with_epsilon (p.strength, 0.4, 1e-6);

  /* Out-of-range values are clamped, not stored. */
  moire_gen_settings_set_steps (s, 100000);
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 1000);
  moire_gen_settings_set_batch_count (s, 0);
  g_assert_cmpint (moire_gen_settings_get_batch_count (s), ==, 1);
  moire_gen_settings_set_seed (s, G_MAXUINT64);
  g_assert_cmpuint (moire_gen_settings_get_seed (s), ==, MOIRE_SEED_MAX);
  moire_gen_settings_set_cfg_scale (s, NAN);
  g_assert_cmpfloat (moire_gen_settings_get_cfg_scale (s), ==, 0);
}

static void
count_notify (GObject    *object,
              GParamSpec *pspec,
              int        *count)
{
  (*count)++;
}

static void
test_settings_copy_assign (void)
{
  g_autoptr(MoireGenSettings) a = moire_gen_settings_new ();
  g_autoptr(MoireGenSettings) b = NULL;
  int notifications = 0;

  moire_gen_settings_set_prompt (a, "tiger shark");
  moire_gen_settings_set_seed (a, 5);
  moire_gen_settings_set_steps (a, 12);
  b = moire_gen_settings_copy (a);
  g_assert_cmpstr (moire_gen_settings_get_prompt (b), ==, "tiger shark");
  g_assert_cmpuint (moire_gen_settings_get_seed (b), ==, 5);
  g_assert_cmpint (moire_gen_settings_get_steps (b), ==, 12);

  /* Assigning equal values notifies nothing; a changed value notifies once. */
  g_signal_connect (b, "notify", G_CALLBACK (count_notify), &notifications);
  moire_gen_settings_assign (b, a);
  g_assert_cmpint (notifications, ==, 0);
  moire_gen_settings_set_steps (a, 13);
  moire_gen_settings_assign (b, a);
  g_assert_cmpint (notifications, ==, 1);
}

static void
test_settings_sampler_lists (void)
{
  /* Index i of the dropdowns is engine enum value i, so the list grows with the engine. */
  g_assert_cmpuint (moire_gen_settings_sampler_count (), ==, MOIRE_SAMPLER_COUNT_);
  g_assert_cmpstr (moire_gen_settings_sampler_at (0), ==, "default");
  for (guint i = 0; i < moire_gen_settings_sampler_count (); i++)
    g_assert_cmpuint (moire_gen_settings_sampler_index (moire_gen_settings_sampler_at (i)), ==, i);
  g_assert_cmpuint (moire_gen_settings_sampler_index ("Euler a"), ==, MOIRE_SAMPLER_EULER_ANCESTRAL);
  g_assert_cmpuint (moire_gen_settings_sampler_index ("bogus"), ==, 0);
  g_assert_cmpstr (moire_gen_settings_sampler_at (999), ==, "default");

  g_assert_cmpstr (moire_gen_settings_schedule_at (0), ==, "default");
  for (guint i = 0; i < moire_gen_settings_schedule_count (); i++)
    g_assert_cmpuint (moire_gen_settings_schedule_index (moire_gen_settings_schedule_at (i)), ==, i);
}

static void
test_settings_apply_parameters (void)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  moire_parameters parsed = moire_parameters_init ();
  g_autofree char *model_name = NULL;
  g_autoptr(GError) error = NULL;
  const char *text =
    "great white shark, \"in the deep\"\n"
    "Negative prompt: goldfish\n"
    "Steps: 33, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 4242, "
    "Size: 128x64, Model: tiny_qkv, Denoising strength: 0.35, Version: Moiré 0.1.0";

  moire_gen_settings_set_batch_count (s, 4);
  g_assert_cmpint (moire_parse_parameters (text, &parsed), ==, MOIRE_OK);
  g_assert_true (moire_gen_settings_apply_parameters (s, &parsed, &model_name, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (moire_gen_settings_get_prompt (s), ==, "great white shark, \"in the deep\"");
  g_assert_cmpstr (moire_gen_settings_get_negative_prompt (s), ==, "goldfish");
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 33);
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "dpm++2m");
  g_assert_cmpstr (moire_gen_settings_get_schedule (s), ==, "karras");
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_cfg_scale (s), 6.5, 1e-6);
  g_assert_cmpuint (moire_gen_settings_get_seed (s), ==, 4242);
  g_assert_cmpint (moire_gen_settings_get_seed_mode (s), ==, MOIRE_SEED_MODE_FIXED);
  g_assert_cmpint (moire_gen_settings_get_width (s), ==, 128);
  g_assert_cmpint (moire_gen_settings_get_height (s), ==, 64);
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_strength (s), 0.35, 1e-6);
  g_assert_cmpint (moire_gen_settings_get_batch_count (s), ==, 4); /* not in the text */
  g_assert_cmpstr (model_name, ==, "tiny_qkv");
  moire_parameters_clear (&parsed);
}

static void
test_settings_apply_parameters_partial (void)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  moire_parameters parsed = moire_parameters_init ();
  g_autoptr(GError) error = NULL;
  /* An A1111 file with a sampler we do not have: everything else is still restored. */
  const char *text = "a castle\nSteps: 20, Sampler: DPM++ 2M SDE, CFG scale: 7, Seed: 1, Size: 512x512";

  g_assert_cmpint (moire_parse_parameters (text, &parsed), ==, MOIRE_OK);
  g_assert_false (moire_gen_settings_apply_parameters (s, &parsed, NULL, &error));
  g_assert_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED);
  g_assert_nonnull (strstr (error->message, "DPM++ 2M SDE"));
  g_assert_cmpstr (moire_gen_settings_get_prompt (s), ==, "a castle");
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 20);
  g_assert_cmpuint (moire_gen_settings_get_seed (s), ==, 1);
  g_assert_cmpint (moire_gen_settings_get_width (s), ==, 512);
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "default");
  moire_parameters_clear (&parsed);

  /* A text with no parameter line is just a prompt. */
  g_assert_cmpint (moire_parse_parameters ("only a prompt", &parsed), ==, MOIRE_OK);
  g_assert_true (moire_gen_settings_apply_parameters (s, &parsed, NULL, NULL));
  g_assert_cmpstr (moire_gen_settings_get_prompt (s), ==, "only a prompt");
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 20);
  moire_parameters_clear (&parsed);
}

/* What the engine writes for a settings object, parsed back, gives the same settings. */
static void
test_settings_engine_roundtrip (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(MoireGenSettings) back = moire_gen_settings_new ();
  moire_parameters parsed = moire_parameters_init ();
  moire_generate_params p;
  char *text;

  g_assert_nonnull (model);
  moire_gen_settings_set_prompt (s, "goldfish");
  moire_gen_settings_set_negative_prompt (s, "tench");
  moire_gen_settings_set_sampler (s, "euler");
  moire_gen_settings_set_schedule (s, "karras");
  moire_gen_settings_set_steps (s, 17);
  moire_gen_settings_set_cfg_scale (s, 3.5);
  moire_gen_settings_set_size (s, 64, 64);
  g_assert_true (moire_gen_settings_to_params (s, 77, &p, NULL));
  text = moire_format_parameters (moire_model_handle_get_model (model), &p, 2);
  g_assert_nonnull (text);
  g_assert_cmpint (moire_parse_parameters (text, &parsed), ==, MOIRE_OK);
  g_assert_true (moire_gen_settings_apply_parameters (back, &parsed, NULL, NULL));
  g_assert_cmpstr (moire_gen_settings_get_prompt (back), ==, "goldfish");
  g_assert_cmpstr (moire_gen_settings_get_negative_prompt (back), ==, "tench");
  g_assert_cmpstr (moire_gen_settings_get_sampler (back), ==, "euler");
  g_assert_cmpstr (moire_gen_settings_get_schedule (back), ==, "karras");
  g_assert_cmpint (moire_gen_settings_get_steps (back), ==, 17);
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_cfg_scale (back), 3.5, 1e-6);
  g_assert_cmpuint (moire_gen_settings_get_seed (back), ==, 79); /* image 2: seed + 2 */
  moire_parameters_clear (&parsed);
  free (text);
}

static void
test_settings_model_defaults (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();

  moire_gen_settings_set_sampler (s, "heun");
  moire_gen_settings_apply_model_defaults (s, moire_model_handle_get_model (model));
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "default");
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 250);   /* DDPM-ε family */
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_cfg_scale (s), 4.0, 1e-6);
  g_assert_cmpint (moire_gen_settings_get_width (s), ==, 64);    /* 8 latents × 8 */
}

static void
test_settings_gsettings (void)
{
  g_autoptr(GSettingsBackend) backend = g_memory_settings_backend_new ();
  g_autoptr(GSettings) gs = g_settings_new_with_backend ("io.github.moire.Studio", backend);
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autofree char *mode = NULL;

  g_settings_set_int (gs, "steps", 21);
  g_settings_set_string (gs, "sampler", "heun");
  moire_gen_settings_bind_gsettings (s, gs);
  /* key → property */
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 21);
  g_assert_cmpstr (moire_gen_settings_get_sampler (s), ==, "heun");
  g_assert_cmpint (moire_gen_settings_get_seed_mode (s), ==, MOIRE_SEED_MODE_RANDOM);
  /* property → key */
  moire_gen_settings_set_prompt (s, "hammerhead");
  moire_gen_settings_set_seed (s, 31337);
  moire_gen_settings_set_seed_mode (s, MOIRE_SEED_MODE_REUSE_LAST);
  moire_gen_settings_set_cfg_scale (s, 2.5);
  g_autofree char *prompt = g_settings_get_string (gs, "prompt");
  g_assert_cmpstr (prompt, ==, "hammerhead");
  g_assert_cmpuint (g_settings_get_uint64 (gs, "seed"), ==, 31337);
  mode = g_settings_get_string (gs, "seed-mode");
  g_assert_cmpstr (mode, ==, "reuse-last");
  g_assert_cmpfloat (g_settings_get_double (gs, "cfg-scale"), ==, 2.5);
}

/* --- seeds --------------------------------------------------------------------------------- */

static void
test_seed_modes (void)
{
  g_autoptr(GRand) rand_a = g_rand_new_with_seed (1);
  g_autoptr(GRand) rand_b = g_rand_new_with_seed (1);
  GEnumClass *klass;
  guint64 r1, r2;

  g_assert_cmpuint (moire_seed_choose (MOIRE_SEED_MODE_FIXED, 42, TRUE, 7, NULL), ==, 42);
  g_assert_cmpuint (moire_seed_choose (MOIRE_SEED_MODE_FIXED, G_MAXUINT64, FALSE, 0, NULL), ==, MOIRE_SEED_MAX);
  g_assert_cmpuint (moire_seed_choose (MOIRE_SEED_MODE_REUSE_LAST, 42, TRUE, 7, NULL), ==, 7);
  g_assert_cmpuint (moire_seed_choose (MOIRE_SEED_MODE_REUSE_LAST, 42, FALSE, 7, NULL), ==, 42);
  r1 = moire_seed_choose (MOIRE_SEED_MODE_RANDOM, 42, TRUE, 7, rand_a);
  r2 = moire_seed_choose (MOIRE_SEED_MODE_RANDOM, 42, TRUE, 7, rand_b);
  g_assert_cmpuint (r1, ==, r2); /* a seeded GRand is reproducible */
  g_assert_cmpuint (r1, <=, MOIRE_SEED_MAX);
  g_assert_cmpuint (moire_seed_choose (MOIRE_SEED_MODE_RANDOM, 42, TRUE, 7, rand_a), !=, r1);
  /* The enum nicks are the GSettings schema's. */
  klass = g_type_class_ref (MOIRE_TYPE_SEED_MODE);
  g_assert_cmpstr (g_enum_get_value (klass, MOIRE_SEED_MODE_REUSE_LAST)->value_nick, ==, "reuse-last");
  g_assert_cmpstr (g_enum_get_value (klass, MOIRE_SEED_MODE_FIXED)->value_nick, ==, "fixed");
  g_type_class_unref (klass);
}

/* --- history ------------------------------------------------------------------------------- */

static MoireHistoryItem *
make_item (guint64 seed)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(moire_image) image = moire_image_new (4, 2, 3);
  g_autofree char *text = g_strdup_printf ("goldfish\nSteps: 5, Sampler: DDPM, CFG scale: 4, Seed: %"
                                           G_GUINT64_FORMAT ", Size: 4x2", seed);

  for (int i = 0; i < 4 * 2 * 3; i++)
    image->pixels[i] = (guint8) (i * 10 + seed);
  moire_gen_settings_set_seed (s, seed);
  moire_gen_settings_set_prompt (s, "goldfish");
  return moire_history_item_new (s, image, text, "{\"seed\": 1}");
}

static void
on_items_changed (GListModel *model,
                  guint       position,
                  guint       removed,
                  guint       added,
                  int        *changes)
{
  (*changes)++;
}

static void
test_history_model (void)
{
  g_autoptr(MoireHistory) history = moire_history_new (3);
  int changes = 0;

  g_signal_connect (history, "items-changed", G_CALLBACK (on_items_changed), &changes);
  g_assert_true (g_list_model_get_item_type (G_LIST_MODEL (history)) == MOIRE_TYPE_HISTORY_ITEM);
  for (guint64 seed = 1; seed <= 5; seed++)
    {
      g_autoptr(MoireHistoryItem) item = make_item (seed);

      moire_history_prepend (history, item);
    }
  /* Bounded to 3, newest first. */
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 3);
  for (guint i = 0; i < 3; i++)
    {
      g_autoptr(MoireHistoryItem) item = g_list_model_get_item (G_LIST_MODEL (history), i);

      g_assert_cmpuint (moire_history_item_get_seed (item), ==, 5 - i);
    }
  g_assert_null (g_list_model_get_item (G_LIST_MODEL (history), 3));
  g_assert_cmpuint (moire_history_item_get_seed (moire_history_peek_newest (history)), ==, 5);
  g_assert_cmpint (changes, ==, 5 + 2); /* 5 insertions, 2 trims */

  moire_history_remove (history, 1);
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 2);
  moire_history_set_max_items (history, 1);
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 1);
  moire_history_clear (history);
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (history)), ==, 0);
  g_assert_null (moire_history_peek_newest (history));
}

static void
test_history_item (void)
{
  g_autoptr(MoireHistoryItem) item = make_item (9);
  g_autofree char *path = g_build_filename (tmp_dir, "item.png", NULL);
  g_autofree char *name = moire_history_item_suggest_filename (item);
  g_autoptr(moire_image) copy = moire_history_item_dup_image (item);
  moire_image *loaded = NULL;
  char *text = NULL, *json = NULL;
  g_autoptr(GError) error = NULL;

  /* The item's settings are a fixed-seed copy. */
  g_assert_cmpint (moire_gen_settings_get_seed_mode (moire_history_item_get_settings (item)), ==,
                   MOIRE_SEED_MODE_FIXED);
  g_assert_cmpstr (name, ==, "moire-9.png");
  g_assert_cmpint (copy->width, ==, 4);
  g_assert_cmpint (copy->pixels[5], ==, 59);

  g_assert_true (moire_history_item_save_png (item, path, &error));
  g_assert_no_error (error);
  g_assert_cmpint (moire_png_load (path, &loaded, &text, &json), ==, MOIRE_OK);
  g_assert_cmpstr (text, ==, moire_history_item_get_parameters (item));
  g_assert_cmpstr (json, ==, "{\"seed\": 1}");
  g_assert_cmpmem (loaded->pixels, 24, copy->pixels, 24);
  moire_image_free (loaded);
  free (text);
  free (json);

  /* Saving to a folder that does not exist fails with a message, not a crash. */
  g_assert_false (moire_history_item_save_png (item, "/nonexistent/dir/x.png", &error));
  g_assert_nonnull (error);
}

/* --- model look-up ------------------------------------------------------------------------- */

static void
test_model_locator (void)
{
  g_autofree char *data = g_build_filename (tmp_dir, "data", NULL);
  g_autofree char *models = g_build_filename (data, "models", NULL);
  g_autofree char *b = g_build_filename (models, "b.safetensors", NULL);
  g_autofree char *a = g_build_filename (models, "a.safetensors", NULL);
  g_autofree char *found = NULL;
  g_auto(GStrv) dirs = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_cmpint (g_mkdir_with_parents (models, 0755), ==, 0);
  g_assert_true (g_file_set_contents (b, "x", 1, NULL));
  g_assert_true (g_file_set_contents (a, "x", 1, NULL));

  g_setenv ("MOIRE_DATA_DIR", data, TRUE);
  g_unsetenv ("MOIRE_MODEL");
  dirs = moire_model_locator_get_search_dirs ();
  g_assert_cmpstr (dirs[0], ==, models);
  g_assert_true (g_strv_contains ((const char * const *) dirs, MOIRE_SOURCE_DATADIR "/models"));
  found = moire_model_locator_find_default (&error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, a); /* alphabetical */
  g_clear_pointer (&found, g_free);

  /* MOIRE_MODEL wins; a missing one is an error, not a silent fallback. */
  g_setenv ("MOIRE_MODEL", tiny_model, TRUE);
  found = moire_model_locator_find_default (&error);
  g_assert_cmpstr (found, ==, tiny_model);
  g_clear_pointer (&found, g_free);
  g_setenv ("MOIRE_MODEL", "/nonexistent.safetensors", TRUE);
  found = moire_model_locator_find_default (&error);
  g_assert_null (found);
  g_assert_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_NO_MODEL);
  g_unsetenv ("MOIRE_MODEL");
  g_unsetenv ("MOIRE_DATA_DIR");

  g_assert_null (moire_model_locator_find_in_dir ("/nonexistent"));
}

static void
test_model_handle (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, &error);
  g_autoptr(MoireModelHandle) missing = NULL;
  g_autofree char *description = NULL;
  const char * const *words;

  g_assert_no_error (error);
  g_assert_true (moire_model_handle_is_class_conditional (model));
  g_assert_cmpstr (moire_model_handle_get_name (model), ==, "tiny_qkv.safetensors");
  words = moire_model_handle_get_prompt_suggestions (model);
  /* Each synonym of "tench, Tinca tinca" is its own suggestion. */
  g_assert_true (g_strv_contains (words, "tench"));
  g_assert_true (g_strv_contains (words, "Tinca tinca"));
  g_assert_true (g_strv_contains (words, "goldfish"));
  description = moire_model_handle_describe (model);
  g_assert_nonnull (strstr (description, "tiny_qkv"));

  missing = moire_model_handle_load ("/nonexistent.safetensors", &error);
  g_assert_null (missing);
  g_assert_error (error, MOIRE_GUI_ERROR, MOIRE_ERROR_IO);
}

/* --- jobs ---------------------------------------------------------------------------------- */

typedef struct
{
  GMainLoop *loop;
  GPtrArray *items;
  GError    *error;
  int        progress_reports;
  int        previews;
  int        last_step;
  MoireJob  *job;
} JobRun;

static void
on_progress (MoireJob *job, int image_index, int image_count, int step, int step_count,
             double remaining, JobRun *run)
{
  g_assert_cmpint (image_count, ==, 2);
  g_assert_cmpint (step, <=, step_count);
  run->progress_reports++;
  run->last_step = step;
}

static void
on_preview (MoireJob *job, GdkTexture *texture, int image_index, int step, int step_count, JobRun *run)
{
  g_assert_true (GDK_IS_TEXTURE (texture));
  /* 64×64 enlarged to at least 256 with nearest-neighbour. */
  g_assert_cmpint (gdk_texture_get_width (texture), ==, 256);
  run->previews++;
}

static void
on_job_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  JobRun *run = user_data;

  run->items = moire_job_run_finish (MOIRE_JOB (source), result, &run->error);
  g_main_loop_quit (run->loop);
}

static MoireJob *
make_job (MoireModelHandle *model, int steps, int batch)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();

  moire_gen_settings_set_prompt (s, "goldfish");
  moire_gen_settings_set_steps (s, steps);
  moire_gen_settings_set_batch_count (s, batch);
  return moire_job_new (model, s, NULL, 1000);
}

static void
test_job_run (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireJob) job = make_job (model, 6, 2);
  JobRun run = { .loop = g_main_loop_new (NULL, FALSE) };
  guint posted, shown, dropped;

  g_signal_connect (job, "progress", G_CALLBACK (on_progress), &run);
  g_signal_connect (job, "preview", G_CALLBACK (on_preview), &run);
  moire_job_run_async (job, NULL, on_job_done, &run);
  g_assert_true (moire_job_is_running (job));
  g_main_loop_run (run.loop);

  g_assert_no_error (run.error);
  g_assert_false (moire_job_is_running (job));
  g_assert_nonnull (run.items);
  g_assert_cmpuint (run.items->len, ==, 2);
  for (guint i = 0; i < 2; i++)
    {
      MoireHistoryItem *item = g_ptr_array_index (run.items, i);
      g_autofree char *seed_text = g_strdup_printf ("Seed: %u,", 1000 + i);

      /* Image i of a batch carries seed + i, in its settings and its texts. */
      g_assert_cmpuint (moire_history_item_get_seed (item), ==, 1000 + i);
      g_assert_nonnull (strstr (moire_history_item_get_parameters (item), seed_text));
      g_assert_nonnull (strstr (moire_history_item_get_parameters (item), "Steps: 6,"));
      g_assert_nonnull (moire_history_item_get_settings_json (item));
      g_assert_cmpint (moire_history_item_get_width (item), ==, 64);
    }
  g_assert_cmpint (run.progress_reports, >=, 1);
  g_assert_cmpint (run.previews, >=, 1);
  moire_job_get_frame_stats (job, &posted, &shown, &dropped);
  g_assert_cmpuint (posted, >=, 6);                /* every step (a batch may run as one chunk) */
  g_assert_cmpuint (shown, ==, (guint) run.previews);
  g_assert_cmpuint (shown + dropped, <=, posted);  /* late frames are dropped at the end */
  g_ptr_array_unref (run.items);
  g_main_loop_unref (run.loop);
}

/* --- DMCMC and routing ---------------------------------------------------------------------- */

static void
test_settings_dmcmc (void)
{
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(MoireGenSettings) copy = NULL;
  moire_dmcmc_params d = moire_dmcmc_params_default ();
  moire_generate_params p;

  /* Defaults come from the engine; off until the sampler is dmcmc. */
  g_assert_false (moire_gen_settings_get_dmcmc (s));
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_dmcmc_eta (s), d.eta, 1e-6);
  g_assert_cmpint (moire_gen_settings_get_dmcmc_skip (s), ==, d.skip);
  g_assert_cmpstr (moire_gen_settings_get_dmcmc_integrator (s), ==, moire_dmcmc_integrator_name (d.integrator));
  g_assert_cmpint (moire_gen_settings_get_dmcmc_steps (s), ==, d.integrator_steps);
  g_assert_cmpint (moire_gen_settings_get_dmcmc_nfe (s), ==, 10);
  g_assert_true (moire_gen_settings_to_params (s, 1, &p, NULL));
  g_assert_null (p.dmcmc);

  g_assert_true (moire_gen_settings_set_sampler (s, "dmcmc"));
  g_assert_true (moire_gen_settings_get_dmcmc (s));
  moire_gen_settings_set_dmcmc_eta (s, 0.05);
  moire_gen_settings_set_dmcmc_skip (s, 2);
  g_assert_true (moire_gen_settings_set_dmcmc_integrator (s, "heun"));
  g_assert_false (moire_gen_settings_set_dmcmc_integrator (s, "no such integrator"));
  moire_gen_settings_set_dmcmc_steps (s, 3);
  moire_gen_settings_set_steps (s, 40);
  g_assert_cmpint (moire_gen_settings_get_dmcmc_nfe (s), ==, 2 + 5 + 1); /* heun: 2N − 1 */
  g_assert_true (moire_gen_settings_to_params (s, 1, &p, NULL));
  g_assert_cmpint (p.sampler, ==, MOIRE_SAMPLER_DMCMC);
  g_assert_nonnull (p.dmcmc);
  g_assert_cmpfloat_with_epsilon (p.dmcmc->eta, 0.05, 1e-6);
  g_assert_cmpint (p.dmcmc->skip, ==, 2);
  g_assert_cmpint (p.dmcmc->integrator, ==, MOIRE_DMCMC_HEUN);
  g_assert_cmpint (p.dmcmc->integrator_steps, ==, 3);
  g_assert_cmpint (p.steps, ==, 3);                     /* the integrator's steps */
  g_assert_cmpint (p.dmcmc->burn_in_steps, ==, d.burn_in_steps); /* the rest: engine defaults */

  /* Clamped; copied with the rest. */
  moire_gen_settings_set_dmcmc_eta (s, 100);
  g_assert_cmpfloat (moire_gen_settings_get_dmcmc_eta (s), ==, (float) MOIRE_GEN_DMCMC_ETA_MAX);
  moire_gen_settings_set_dmcmc_eta (s, 0.05);
  copy = moire_gen_settings_copy (s);
  g_assert_true (moire_gen_settings_get_dmcmc (copy));
  g_assert_cmpstr (moire_gen_settings_get_dmcmc_integrator (copy), ==, "heun");
  g_assert_cmpint (moire_gen_settings_get_dmcmc_steps (copy), ==, 3);
  g_assert_cmpint (moire_gen_settings_get_steps (copy), ==, 40);

  /* Integrator list from the engine. */
  g_assert_cmpuint (moire_gen_settings_dmcmc_integrator_count (), ==, MOIRE_DMCMC_INTEGRATOR_COUNT_);
  g_assert_cmpstr (moire_gen_settings_dmcmc_integrator_at (moire_gen_settings_dmcmc_integrator_index ("ddim")), ==, "ddim");
}

/* A PNG written by the engine for a DMCMC run: its A1111 text and its JSON restore the
 * sampler and every DMCMC setting; the other samplers' steps stay. */
static void
test_settings_dmcmc_restore (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireGenSettings) made = moire_gen_settings_new ();
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(MoireGenSettings) t = moire_gen_settings_new ();
  g_autoptr(GError) error = NULL;
  moire_parameters parsed = moire_parameters_init ();
  moire_generate_params p;
  char *text, *json;

  g_assert_nonnull (model);
  moire_gen_settings_set_prompt (made, "goldfish");
  moire_gen_settings_set_sampler (made, "dmcmc");
  moire_gen_settings_set_dmcmc_eta (made, 0.125);
  moire_gen_settings_set_dmcmc_skip (made, 6);
  moire_gen_settings_set_dmcmc_integrator (made, "stochastic-heun");
  moire_gen_settings_set_dmcmc_steps (made, 7);
  g_assert_true (moire_gen_settings_to_params (made, 5, &p, NULL));
  text = moire_format_parameters (moire_model_handle_get_model (model), &p, 0);
  json = moire_format_settings_json (moire_model_handle_get_model (model), &p, 0);
  g_assert_nonnull (strstr (json, "\"sampler\": \"dmcmc\""));

  /* From the JSON alone. */
  moire_gen_settings_set_steps (s, 30);
  g_assert_true (moire_gen_settings_apply_settings_json (s, json, &error));
  g_assert_no_error (error);
  g_assert_true (moire_gen_settings_get_dmcmc (s));
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_dmcmc_eta (s), 0.125, 1e-6);
  g_assert_cmpint (moire_gen_settings_get_dmcmc_skip (s), ==, 6);
  g_assert_cmpstr (moire_gen_settings_get_dmcmc_integrator (s), ==, "stochastic-heun");
  g_assert_cmpint (moire_gen_settings_get_dmcmc_steps (s), ==, 7);
  g_assert_cmpint (moire_gen_settings_get_steps (s), ==, 30);

  /* From the A1111 text ("DMCMC: eta 0.125, skip 6, stochastic-heun 7 steps, Tweedie"). */
  moire_gen_settings_set_steps (t, 30);
  g_assert_cmpint (moire_parse_parameters (text, &parsed), ==, MOIRE_OK);
  g_assert_true (moire_gen_settings_apply_parameters (t, &parsed, NULL, NULL));
  g_assert_true (moire_gen_settings_get_dmcmc (t));
  g_assert_cmpfloat_with_epsilon (moire_gen_settings_get_dmcmc_eta (t), 0.125, 1e-6);
  g_assert_cmpint (moire_gen_settings_get_dmcmc_skip (t), ==, 6);
  g_assert_cmpstr (moire_gen_settings_get_dmcmc_integrator (t), ==, "stochastic-heun");
  g_assert_cmpint (moire_gen_settings_get_dmcmc_steps (t), ==, 7);
  g_assert_cmpint (moire_gen_settings_get_steps (t), ==, 30);
  moire_parameters_clear (&parsed);

  /* Another sampler's JSON changes nothing; broken JSON and unknown integrators are named. */
  g_assert_true (moire_gen_settings_apply_settings_json (t, "{\"sampler\": \"euler\"}", NULL));
  g_assert_true (moire_gen_settings_get_dmcmc (t));
  g_assert_false (moire_gen_settings_apply_settings_json (t, "{not json", &error));
  g_assert_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED);
  g_clear_error (&error);
  g_assert_false (moire_gen_settings_apply_settings_json (
    t, "{\"sampler\": \"dmcmc\", \"dmcmc\": {\"integrator\": \"rk45\", \"skip\": 1}}", &error));
  g_assert_nonnull (strstr (error->message, "rk45"));
  g_assert_cmpint (moire_gen_settings_get_dmcmc_skip (t), ==, 1);
  g_clear_error (&error);
  /* A PNG's "moire" text of 100,000 nested arrays overflowed json-glib's recursion (issue 19);
     the engine's JSON guard refuses it first. */
  {
    g_autofree char *deep = g_malloc (200001);

    memset (deep, '[', 100000);
    memset (deep + 100000, ']', 100000);
    deep[200000] = '\0';
    g_assert_false (moire_gen_settings_apply_settings_json (t, deep, &error));
    g_assert_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED);
    g_clear_error (&error);
  }
  free (text);
  free (json);
}

typedef struct
{
  GMainLoop *loop;
  GPtrArray *items;
  GError    *error;
  int        rounds;
  int        nfe;
  int        one_off;
  guint      streamed;
  gboolean   done;
} StreamRun;

static void
on_stream_round (MoireJob *job, GPtrArray *items, int round, int nfe, int one_off, StreamRun *run)
{
  g_assert_false (run->done);            /* every round arrives before the end */
  g_assert_cmpint (round, ==, run->rounds + 1);
  run->rounds = round;
  run->nfe = nfe;
  run->one_off = one_off;
  run->streamed += items->len;
  for (guint i = 0; i < items->len; i++)
    {
      MoireHistoryItem *item = g_ptr_array_index (items, i);

      g_assert_cmpint (moire_history_item_get_variation (item), ==, round);
      g_assert_cmpuint (moire_history_item_get_seed (item), ==, 1000 + i);
      g_assert_nonnull (strstr (moire_history_item_get_parameters (item), "Sampler: DMCMC"));
    }
}

static void
on_stream_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  StreamRun *run = user_data;

  run->done = TRUE;
  run->items = moire_job_run_finish (MOIRE_JOB (source), result, &run->error);
  g_main_loop_quit (run->loop);
}

static void
test_job_stream (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(MoireJob) job = NULL;
  StreamRun run = { .loop = g_main_loop_new (NULL, FALSE) };

  moire_gen_settings_set_prompt (s, "goldfish");
  moire_gen_settings_set_sampler (s, "dmcmc");
  moire_gen_settings_set_batch_count (s, 2);
  job = moire_job_new (model, s, NULL, 1000);
  moire_job_set_stream (job, TRUE, 2);
  g_assert_true (moire_job_get_stream (job));
  g_signal_connect (job, "round", G_CALLBACK (on_stream_round), &run);
  moire_job_run_async (job, NULL, on_stream_done, &run);
  g_main_loop_run (run.loop);

  g_assert_no_error (run.error);
  g_assert_nonnull (run.items);
  g_assert_cmpuint (run.items->len, ==, 0); /* the rounds went out through "round" */
  g_assert_cmpint (run.rounds, ==, 2);
  g_assert_cmpuint (run.streamed, ==, 4);
  g_assert_cmpint (run.nfe, ==, 10);
  g_assert_cmpint (run.one_off, ==, 38);
  g_ptr_array_unref (run.items);
  g_main_loop_unref (run.loop);
}

/* An endless stream stops at a cancel; the rounds made so far all arrive. */
static void
on_stream_round_cancel (MoireJob *job, GPtrArray *items, int round, int nfe, int one_off, StreamRun *run)
{
  on_stream_round (job, items, round, nfe, one_off, run);
  if (round == 1)
    moire_job_cancel (job);
}

static void
test_job_stream_cancel (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(MoireJob) job = NULL;
  StreamRun run = { .loop = g_main_loop_new (NULL, FALSE) };

  moire_gen_settings_set_prompt (s, "goldfish");
  moire_gen_settings_set_sampler (s, "dmcmc");
  job = moire_job_new (model, s, NULL, 1000);
  moire_job_set_stream (job, TRUE, 0);
  g_signal_connect (job, "round", G_CALLBACK (on_stream_round_cancel), &run);
  moire_job_run_async (job, NULL, on_stream_done, &run);
  g_main_loop_run (run.loop);

  g_assert_no_error (run.error);
  g_assert_nonnull (run.items);
  g_assert_cmpint (run.rounds, >=, 1);
  g_assert_cmpuint (run.streamed, ==, (guint) run.rounds);
  g_ptr_array_unref (run.items);
  g_main_loop_unref (run.loop);
}

static void
test_job_routing (void)
{
  const char *models[] = { "tiny_qkv.safetensors", "tiny_ecdit.safetensors" };

  for (guint m = 0; m < G_N_ELEMENTS (models); m++)
    {
      g_autofree char *path = g_build_filename (MOIRE_TEST_DATA, "golden", models[m], NULL);
      g_autoptr(MoireModelHandle) model = moire_model_handle_load (path, NULL);
      g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
      g_autoptr(MoireJob) job = NULL;
      StreamRun run = { .loop = g_main_loop_new (NULL, FALSE) };
      MoireHistoryItem *item;
      g_autoptr(moire_image) overlay = NULL;

      g_assert_nonnull (model);
      moire_gen_settings_set_prompt (s, m == 0 ? "goldfish" : "a red apple");
      moire_gen_settings_set_steps (s, 4);
      job = moire_job_new (model, s, NULL, 3);
      moire_job_set_routing_map (job, TRUE);
      moire_job_run_async (job, NULL, on_stream_done, &run);
      g_main_loop_run (run.loop);
      g_assert_no_error (run.error);
      g_assert_cmpuint (run.items->len, ==, 1);
      item = g_ptr_array_index (run.items, 0);
      g_assert_true (moire_history_item_has_routing (item));
      /* Token choice: expert colours; expert choice: experts per token. */
      g_assert_nonnull (strstr (moire_history_item_get_routing_legend (item),
                                m == 0 ? "colour" : "Experts per token"));
      overlay = moire_history_item_dup_routing_overlay (item);
      g_assert_nonnull (overlay);
      g_assert_cmpint (overlay->width, ==, moire_history_item_get_width (item));
      g_assert_cmpint (overlay->channels, ==, 3);
      g_ptr_array_unref (run.items);
      g_main_loop_unref (run.loop);
    }
}

/* With a main loop that does not run while the worker works, frames are replaced, never
 * queued: one is shown, the rest counted as dropped. */
static void
test_job_frame_queue_of_one (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireJob) job = make_job (model, 8, 1);
  JobRun run = { .loop = g_main_loop_new (NULL, FALSE) };
  guint posted = 0, shown = 0, dropped = 0;
  gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;

  g_signal_connect (job, "preview", G_CALLBACK (on_preview), &run);
  moire_job_run_async (job, NULL, on_job_done, &run);
  /* Block "the UI" until the worker has posted all its frames. */
  while (posted < 8 && g_get_monotonic_time () < deadline)
    {
      g_usleep (2000);
      moire_job_get_frame_stats (job, &posted, NULL, NULL);
    }
  g_main_loop_run (run.loop);
  moire_job_get_frame_stats (job, &posted, &shown, &dropped);
  g_assert_cmpuint (posted, ==, 8);
  g_assert_cmpuint (dropped, ==, 7);
  g_assert_cmpuint (shown, <=, 1);
  g_ptr_array_unref (run.items);
  g_main_loop_unref (run.loop);
}

static void
on_paused_cancel (MoireJob *job, int step, JobRun *run)
{
  g_assert_cmpint (step, ==, 3);
  moire_job_cancel (job);
}

static void
test_job_cancel (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireJob) job = make_job (model, 50, 2);
  JobRun run = { .loop = g_main_loop_new (NULL, FALSE) };

  g_signal_connect (job, "progress", G_CALLBACK (on_progress), &run);
  g_signal_connect (job, "paused", G_CALLBACK (on_paused_cancel), &run);
  moire_job_set_pause_at_step (job, 3);
  moire_job_run_async (job, NULL, on_job_done, &run);
  g_main_loop_run (run.loop);
  g_assert_null (run.items);
  g_assert_error (run.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpint (run.last_step, <=, 4);
  g_clear_error (&run.error);
  g_main_loop_unref (run.loop);
}

static void
test_job_cancellable (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireJob) job = make_job (model, 50, 1);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  JobRun run = { .loop = g_main_loop_new (NULL, FALSE) };

  /* Cancelled before it starts: the engine call stops at once. */
  g_cancellable_cancel (cancellable);
  moire_job_run_async (job, cancellable, on_job_done, &run);
  g_main_loop_run (run.loop);
  g_assert_error (run.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&run.error);
  g_main_loop_unref (run.loop);
}

static void
test_job_engine_error (void)
{
  g_autoptr(MoireModelHandle) model = moire_model_handle_load (tiny_model, NULL);
  g_autoptr(MoireGenSettings) s = moire_gen_settings_new ();
  g_autoptr(MoireJob) job = NULL;
  JobRun run = { .loop = g_main_loop_new (NULL, FALSE) };

  /* An impossible size: the engine's message comes back as a GError. */
  moire_gen_settings_set_prompt (s, "goldfish");
  moire_gen_settings_set_size (s, 60, 60);
  moire_gen_settings_set_steps (s, 2);
  job = moire_job_new (model, s, NULL, 1);
  moire_job_run_async (job, NULL, on_job_done, &run);
  g_main_loop_run (run.loop);
  g_assert_null (run.items);
  g_assert_nonnull (run.error);
  g_assert_true (run.error->domain == MOIRE_GUI_ERROR);
  g_assert_cmpstr (run.error->message, !=, "");
  g_test_message ("engine error: %s", run.error->message);
  g_clear_error (&run.error);
  g_main_loop_unref (run.loop);
}

static void
test_format_duration (void)
{
  g_autofree char *a = moire_gui_format_duration (3.24);
  g_autofree char *e = moire_gui_format_duration (42.4);
  g_autofree char *b = moire_gui_format_duration (65);
  g_autofree char *c = moire_gui_format_duration (3 * 3600 + 120);
  g_autofree char *d = moire_gui_format_duration (-1);

  g_assert_cmpstr (a, ==, "3.2 s");
  g_assert_cmpstr (e, ==, "42 s");
  g_assert_cmpstr (b, ==, "1 min 05 s");
  g_assert_cmpstr (c, ==, "3 h 02 min");
  g_assert_cmpstr (d, ==, "");
}

int
main (int   argc,
      char *argv[])
{
  const char *data = g_getenv ("MOIRE_TEST_DATA");
  int status;

  g_test_init (&argc, &argv, NULL);
  g_setenv ("GSETTINGS_BACKEND", "memory", TRUE);
  tiny_model = g_build_filename (data != NULL ? data : MOIRE_TEST_DATA, "golden", "tiny_qkv.safetensors", NULL);
  tmp_dir = g_dir_make_tmp ("moire-gui-test-XXXXXX", NULL);

  g_test_add_func ("/gen-settings/defaults", test_settings_defaults);
  g_test_add_func ("/gen-settings/to-params", test_settings_to_params);
  g_test_add_func ("/gen-settings/copy-assign", test_settings_copy_assign);
  g_test_add_func ("/gen-settings/sampler-lists", test_settings_sampler_lists);
  g_test_add_func ("/gen-settings/apply-parameters", test_settings_apply_parameters);
  g_test_add_func ("/gen-settings/apply-parameters-partial", test_settings_apply_parameters_partial);
  g_test_add_func ("/gen-settings/engine-roundtrip", test_settings_engine_roundtrip);
  g_test_add_func ("/gen-settings/model-defaults", test_settings_model_defaults);
  g_test_add_func ("/gen-settings/gsettings", test_settings_gsettings);
  g_test_add_func ("/seed/modes", test_seed_modes);
  g_test_add_func ("/history/model", test_history_model);
  g_test_add_func ("/history/item", test_history_item);
  g_test_add_func ("/model/locator", test_model_locator);
  g_test_add_func ("/model/handle", test_model_handle);
  g_test_add_func ("/job/run", test_job_run);
  g_test_add_func ("/job/frame-queue-of-one", test_job_frame_queue_of_one);
  g_test_add_func ("/job/cancel", test_job_cancel);
  g_test_add_func ("/job/cancellable", test_job_cancellable);
  g_test_add_func ("/job/engine-error", test_job_engine_error);
  g_test_add_func ("/gen-settings/dmcmc", test_settings_dmcmc);
  g_test_add_func ("/gen-settings/dmcmc-restore", test_settings_dmcmc_restore);
  g_test_add_func ("/job/stream", test_job_stream);
  g_test_add_func ("/job/stream-cancel", test_job_stream_cancel);
  g_test_add_func ("/job/routing", test_job_routing);
  g_test_add_func ("/util/format-duration", test_format_duration);
  status = g_test_run ();

  if (tmp_dir != NULL)
    {
      g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", tmp_dir);

      (void) !system (cmd);
    }
  g_free (tiny_model);
  g_free (tmp_dir);
  return status;
}
