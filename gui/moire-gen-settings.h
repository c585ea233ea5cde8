/* moire-gen-settings.h — the settings of one generation as an observable object.
 *
 * The panel's widgets, GSettings and history items all bind to these properties, and the
 * mapping to the engine (moire_generate_params) and to/from the A1111 "parameters" text lives
 * here, away from any widget, so it is unit-tested without a display.
 *
 * Conventions: steps 0, cfg-scale 0, width/height 0 and sampler/schedule "default" mean
 * "the model's own value". Sampler and schedule are stored as the engine's enums (the _id
 * accessors); their string forms (the "sampler"/"schedule" properties, GSettings, restoring
 * from a PNG) are the engine's names (moire_sampler_name; the schedule's default is
 * "default"), converted only there, so the lists grow with the engine.
 */
#pragma once

#include <gio/gio.h>

#include "moire-metadata.h"
#include "moire.h"
#include "moire-seed.h"

G_BEGIN_DECLS

/* Ranges of the DMCMC settings (the widgets and the GSettings schema use the same). */
#define MOIRE_GEN_DMCMC_ETA_MIN   0.001
#define MOIRE_GEN_DMCMC_ETA_MAX   1.0
#define MOIRE_GEN_DMCMC_SKIP_MAX  64
#define MOIRE_GEN_DMCMC_STEPS_MAX 100

#define MOIRE_TYPE_GEN_SETTINGS (moire_gen_settings_get_type ())

G_DECLARE_FINAL_TYPE (MoireGenSettings, moire_gen_settings, MOIRE, GEN_SETTINGS, GObject)

MoireGenSettings *moire_gen_settings_new                (void);
MoireGenSettings *moire_gen_settings_copy               (MoireGenSettings        *self);
/* Copies every value of `src` into `self` (one notify per changed property). */
void              moire_gen_settings_assign             (MoireGenSettings        *self,
                                                         MoireGenSettings        *src);

const char       *moire_gen_settings_get_model_path     (MoireGenSettings        *self);
void              moire_gen_settings_set_model_path     (MoireGenSettings        *self,
                                                         const char              *path);
const char       *moire_gen_settings_get_prompt         (MoireGenSettings        *self);
void              moire_gen_settings_set_prompt         (MoireGenSettings        *self,
                                                         const char              *prompt);
const char       *moire_gen_settings_get_negative_prompt(MoireGenSettings        *self);
void              moire_gen_settings_set_negative_prompt(MoireGenSettings        *self,
                                                         const char              *prompt);
const char       *moire_gen_settings_get_sampler        (MoireGenSettings        *self);
/* Any spelling the engine accepts ("Euler a", "dpmpp_2m"); stored as the engine name.
 * Returns FALSE (and changes nothing) for an unknown sampler. */
gboolean          moire_gen_settings_set_sampler        (MoireGenSettings        *self,
                                                         const char              *name);
moire_sampler     moire_gen_settings_get_sampler_id     (MoireGenSettings        *self);
void              moire_gen_settings_set_sampler_id     (MoireGenSettings        *self,
                                                         moire_sampler            sampler);
const char       *moire_gen_settings_get_schedule       (MoireGenSettings        *self);
gboolean          moire_gen_settings_set_schedule       (MoireGenSettings        *self,
                                                         const char              *name);
moire_schedule    moire_gen_settings_get_schedule_id    (MoireGenSettings        *self);
void              moire_gen_settings_set_schedule_id    (MoireGenSettings        *self,
                                                         moire_schedule           schedule);
int               moire_gen_settings_get_steps          (MoireGenSettings        *self);
void              moire_gen_settings_set_steps          (MoireGenSettings        *self,
                                                         int                      steps);
double            moire_gen_settings_get_cfg_scale      (MoireGenSettings        *self);
void              moire_gen_settings_set_cfg_scale      (MoireGenSettings        *self,
                                                         double                   cfg_scale);
guint64           moire_gen_settings_get_seed           (MoireGenSettings        *self);
void              moire_gen_settings_set_seed           (MoireGenSettings        *self,
                                                         guint64                  seed);
MoireSeedMode     moire_gen_settings_get_seed_mode      (MoireGenSettings        *self);
void              moire_gen_settings_set_seed_mode      (MoireGenSettings        *self,
                                                         MoireSeedMode            mode);
int               moire_gen_settings_get_width          (MoireGenSettings        *self);
int               moire_gen_settings_get_height         (MoireGenSettings        *self);
void              moire_gen_settings_set_size           (MoireGenSettings        *self,
                                                         int                      width,
                                                         int                      height);
int               moire_gen_settings_get_batch_count    (MoireGenSettings        *self);
void              moire_gen_settings_set_batch_count    (MoireGenSettings        *self,
                                                         int                      count);
double            moire_gen_settings_get_strength       (MoireGenSettings        *self);
void              moire_gen_settings_set_strength       (MoireGenSettings        *self,
                                                         double                   strength);

/* DMCMC (docs/DMCMC.md): on while the sampler is "dmcmc" (the panel's toggle sets it). Its
 * Langevin step η, skip (sweeps per image), integrator (moire_dmcmc_integrator_name) and the
 * integrator's steps are kept even while another sampler is chosen; their defaults are the
 * engine's (moire_dmcmc_params_default). */
gboolean          moire_gen_settings_get_dmcmc          (MoireGenSettings        *self);
double            moire_gen_settings_get_dmcmc_eta      (MoireGenSettings        *self);
void              moire_gen_settings_set_dmcmc_eta      (MoireGenSettings        *self,
                                                         double                   eta);
int               moire_gen_settings_get_dmcmc_skip     (MoireGenSettings        *self);
void              moire_gen_settings_set_dmcmc_skip     (MoireGenSettings        *self,
                                                         int                      skip);
const char       *moire_gen_settings_get_dmcmc_integrator (MoireGenSettings      *self);
/* NULL or "" = the engine's default; FALSE (nothing changed) for an unknown name. */
gboolean          moire_gen_settings_set_dmcmc_integrator (MoireGenSettings      *self,
                                                           const char            *name);
int               moire_gen_settings_get_dmcmc_steps    (MoireGenSettings        *self);
void              moire_gen_settings_set_dmcmc_steps    (MoireGenSettings        *self,
                                                         int                      steps);
/* Model evaluations per image with these settings (moire_dmcmc_nfe_per_sample). */
int               moire_gen_settings_get_dmcmc_nfe      (MoireGenSettings        *self);

/* Fills `params` for the engine with `seed` as the seed of image 0. Strings are borrowed from
 * `self` (keep it alive and unchanged while `params` is used: jobs use a copy). The init
 * image is left to the caller. Cannot fail today (the sampler and schedule are stored as
 * enums, always valid); `error` stays for checks to come. */
gboolean          moire_gen_settings_to_params          (MoireGenSettings        *self,
                                                         guint64                  seed,
                                                         moire_generate_params   *params,
                                                         GError                 **error);

/* Restores the values an A1111 "parameters" text carries (moire_parse_parameters): prompt,
 * negative prompt, steps, sampler, schedule, CFG, seed (and seed mode "fixed"), size and
 * strength. Everything it can is applied; FALSE with `error` names what could not be (an
 * unknown sampler, say), so the caller can tell the user. The model name, if any, is
 * returned in `out_model_name` (free with g_free) for the caller to match to a file. */
gboolean          moire_gen_settings_apply_parameters   (MoireGenSettings        *self,
                                                         const moire_parameters  *parameters,
                                                         char                   **out_model_name,
                                                         GError                 **error);

/* Restores what the A1111 text does not carry from the "moire" JSON chunk
 * (moire_format_settings_json): for "sampler": "dmcmc", the sampler and the "dmcmc" object
 * (eta, skip, integrator, integrator_steps). NULL or another sampler changes nothing. FALSE
 * with `error` (MOIRE_GUI_ERROR_FAILED) names what could not be restored. */
gboolean          moire_gen_settings_apply_settings_json (MoireGenSettings       *self,
                                                          const char             *json,
                                                          GError                **error);

/* Sets sampler, schedule, steps, CFG and size to the model's own defaults. */
void              moire_gen_settings_apply_model_defaults (MoireGenSettings      *self,
                                                           const moire_model     *model);

/* Two-way binding of every property to the io.github.moire.Studio keys of `settings`
 * (model-path, prompt, … strength). */
void              moire_gen_settings_bind_gsettings     (MoireGenSettings        *self,
                                                         GSettings               *settings);

/* Display helpers for sampler/schedule lists, in engine order: index i is moire_sampler i
 * (0 = the model's default). Unknown names map to 0. */
guint             moire_gen_settings_sampler_count      (void);
guint             moire_gen_settings_sampler_index      (const char              *name);
const char       *moire_gen_settings_sampler_at         (guint                    index);
guint             moire_gen_settings_schedule_count     (void);
guint             moire_gen_settings_schedule_index     (const char              *name);
const char       *moire_gen_settings_schedule_at        (guint                    index);
/* The same for the DMCMC integrators (index i is moire_dmcmc_integrator i). */
guint             moire_gen_settings_dmcmc_integrator_count (void);
guint             moire_gen_settings_dmcmc_integrator_index (const char          *name);
const char       *moire_gen_settings_dmcmc_integrator_at    (guint                index);

G_END_DECLS
