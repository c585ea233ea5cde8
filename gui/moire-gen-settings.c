/* moire-gen-settings.c — generation settings and their mapping to the engine and to
 * GSettings. Restoring them from a PNG's A1111 text and "moire" JSON is in
 * moire-gen-settings-restore.c. No widgets here. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <math.h>

#include "moire-gen-settings.h"

struct _MoireGenSettings
{
  GObject        parent_instance;

  char          *model_path;
  char          *prompt;
  char          *negative_prompt;
  /* Sampler and schedule as the engine's enums: names (GSettings, the A1111 text, the
   * "moire" JSON) are converted at those edges only, in the setters and getters below. */
  moire_sampler  sampler;   /* MOIRE_SAMPLER_DEFAULT = the model's   */
  moire_schedule schedule;  /* MOIRE_SCHEDULE_DEFAULT = the model's  */
  int            steps;     /* 0 = model default                     */
  double         cfg_scale; /* 0 = model default                     */
  guint64        seed;
  MoireSeedMode  seed_mode;
  int            width;     /* 0 = trained size                      */
  int            height;
  int            batch_count;
  double         strength;
  /* DMCMC (used while sampler is "dmcmc"): eta, skip, integrator and its steps are the
   * user's; the rest stays at the engine's defaults. to_params() lends a pointer to it. */
  moire_dmcmc_params dmcmc;
};

G_DEFINE_FINAL_TYPE (MoireGenSettings, moire_gen_settings, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_MODEL_PATH,
  PROP_PROMPT,
  PROP_NEGATIVE_PROMPT,
  PROP_SAMPLER,
  PROP_SCHEDULE,
  PROP_STEPS,
  PROP_CFG_SCALE,
  PROP_SEED,
  PROP_SEED_MODE,
  PROP_WIDTH,
  PROP_HEIGHT,
  PROP_BATCH_COUNT,
  PROP_STRENGTH,
  PROP_DMCMC_ETA,
  PROP_DMCMC_SKIP,
  PROP_DMCMC_INTEGRATOR,
  PROP_DMCMC_STEPS,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

/* GSettings key of each property (same names). */
static const char *const gsettings_keys[N_PROPS] = {
  [PROP_MODEL_PATH] = "model-path",
  [PROP_PROMPT] = "prompt",
  [PROP_NEGATIVE_PROMPT] = "negative-prompt",
  [PROP_SAMPLER] = "sampler",
  [PROP_SCHEDULE] = "schedule",
  [PROP_STEPS] = "steps",
  [PROP_CFG_SCALE] = "cfg-scale",
  [PROP_SEED] = "seed",
  [PROP_SEED_MODE] = "seed-mode",
  [PROP_WIDTH] = "width",
  [PROP_HEIGHT] = "height",
  [PROP_BATCH_COUNT] = "batch-count",
  [PROP_STRENGTH] = "strength",
  [PROP_DMCMC_ETA] = "dmcmc-eta",
  [PROP_DMCMC_SKIP] = "dmcmc-skip",
  [PROP_DMCMC_INTEGRATOR] = "dmcmc-integrator",
  [PROP_DMCMC_STEPS] = "dmcmc-steps",
};

static gboolean
set_string (MoireGenSettings *self,
            char            **field,
            const char       *value,
            guint             prop)
{
  if (value == NULL)
    value = "";
  if (g_strcmp0 (*field, value) == 0)
    return FALSE;
  g_free (*field);
  *field = g_strdup (value);
  g_object_notify_by_pspec (G_OBJECT (self), properties[prop]);
  return TRUE;
}

static void
moire_gen_settings_finalize (GObject *object)
{
  MoireGenSettings *self = MOIRE_GEN_SETTINGS (object);

  g_free (self->model_path);
  g_free (self->prompt);
  g_free (self->negative_prompt);
  G_OBJECT_CLASS (moire_gen_settings_parent_class)->finalize (object);
}

static void
moire_gen_settings_get_property (GObject    *object,
                                 guint       prop_id,
                                 GValue     *value,
                                 GParamSpec *pspec)
{
  MoireGenSettings *self = MOIRE_GEN_SETTINGS (object);

  switch (prop_id)
    {
    case PROP_MODEL_PATH: g_value_set_string (value, self->model_path); break;
    case PROP_PROMPT: g_value_set_string (value, self->prompt); break;
    case PROP_NEGATIVE_PROMPT: g_value_set_string (value, self->negative_prompt); break;
    case PROP_SAMPLER: g_value_set_string (value, moire_gen_settings_get_sampler (self)); break;
    case PROP_SCHEDULE: g_value_set_string (value, moire_gen_settings_get_schedule (self)); break;
    case PROP_STEPS: g_value_set_int (value, self->steps); break;
    case PROP_CFG_SCALE: g_value_set_double (value, self->cfg_scale); break;
    case PROP_SEED: g_value_set_uint64 (value, self->seed); break;
    case PROP_SEED_MODE: g_value_set_enum (value, self->seed_mode); break;
    case PROP_WIDTH: g_value_set_int (value, self->width); break;
    case PROP_HEIGHT: g_value_set_int (value, self->height); break;
    case PROP_BATCH_COUNT: g_value_set_int (value, self->batch_count); break;
    case PROP_STRENGTH: g_value_set_double (value, self->strength); break;
    case PROP_DMCMC_ETA: g_value_set_double (value, self->dmcmc.eta); break;
    case PROP_DMCMC_SKIP: g_value_set_int (value, self->dmcmc.skip); break;
    case PROP_DMCMC_INTEGRATOR:
      g_value_set_string (value, moire_dmcmc_integrator_name (self->dmcmc.integrator));
      break;
    case PROP_DMCMC_STEPS: g_value_set_int (value, self->dmcmc.integrator_steps); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_gen_settings_set_property (GObject      *object,
                                 guint         prop_id,
                                 const GValue *value,
                                 GParamSpec   *pspec)
{
  MoireGenSettings *self = MOIRE_GEN_SETTINGS (object);

  switch (prop_id)
    {
    case PROP_MODEL_PATH: moire_gen_settings_set_model_path (self, g_value_get_string (value)); break;
    case PROP_PROMPT: moire_gen_settings_set_prompt (self, g_value_get_string (value)); break;
    case PROP_NEGATIVE_PROMPT: moire_gen_settings_set_negative_prompt (self, g_value_get_string (value)); break;
    case PROP_SAMPLER:
      if (!moire_gen_settings_set_sampler (self, g_value_get_string (value)))
        moire_gen_settings_set_sampler (self, "default");
      break;
    case PROP_SCHEDULE:
      if (!moire_gen_settings_set_schedule (self, g_value_get_string (value)))
        moire_gen_settings_set_schedule (self, "default");
      break;
    case PROP_STEPS: moire_gen_settings_set_steps (self, g_value_get_int (value)); break;
    case PROP_CFG_SCALE: moire_gen_settings_set_cfg_scale (self, g_value_get_double (value)); break;
    case PROP_SEED: moire_gen_settings_set_seed (self, g_value_get_uint64 (value)); break;
    case PROP_SEED_MODE: moire_gen_settings_set_seed_mode (self, g_value_get_enum (value)); break;
    case PROP_WIDTH: moire_gen_settings_set_size (self, g_value_get_int (value), self->height); break;
    case PROP_HEIGHT: moire_gen_settings_set_size (self, self->width, g_value_get_int (value)); break;
    case PROP_BATCH_COUNT: moire_gen_settings_set_batch_count (self, g_value_get_int (value)); break;
    case PROP_STRENGTH: moire_gen_settings_set_strength (self, g_value_get_double (value)); break;
    case PROP_DMCMC_ETA: moire_gen_settings_set_dmcmc_eta (self, g_value_get_double (value)); break;
    case PROP_DMCMC_SKIP: moire_gen_settings_set_dmcmc_skip (self, g_value_get_int (value)); break;
    case PROP_DMCMC_INTEGRATOR:
      if (!moire_gen_settings_set_dmcmc_integrator (self, g_value_get_string (value)))
        moire_gen_settings_set_dmcmc_integrator (self, NULL);
      break;
    case PROP_DMCMC_STEPS: moire_gen_settings_set_dmcmc_steps (self, g_value_get_int (value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_gen_settings_class_init (MoireGenSettingsClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS;
  const moire_dmcmc_params dmcmc = moire_dmcmc_params_default ();

  object_class->finalize = moire_gen_settings_finalize;
  object_class->get_property = moire_gen_settings_get_property;
  object_class->set_property = moire_gen_settings_set_property;

  properties[PROP_MODEL_PATH] = g_param_spec_string ("model-path", NULL, NULL, "", flags);
  properties[PROP_PROMPT] = g_param_spec_string ("prompt", NULL, NULL, "", flags);
  properties[PROP_NEGATIVE_PROMPT] = g_param_spec_string ("negative-prompt", NULL, NULL, "", flags);
  properties[PROP_SAMPLER] = g_param_spec_string ("sampler", NULL, NULL, "default", flags);
  properties[PROP_SCHEDULE] = g_param_spec_string ("schedule", NULL, NULL, "default", flags);
  properties[PROP_STEPS] = g_param_spec_int ("steps", NULL, NULL, 0, 1000, 0, flags);
  properties[PROP_CFG_SCALE] = g_param_spec_double ("cfg-scale", NULL, NULL, 0, 30, 0, flags);
  properties[PROP_SEED] = g_param_spec_uint64 ("seed", NULL, NULL, 0, MOIRE_SEED_MAX, 42, flags);
  properties[PROP_SEED_MODE] = g_param_spec_enum ("seed-mode", NULL, NULL, MOIRE_TYPE_SEED_MODE,
                                                  MOIRE_SEED_MODE_RANDOM, flags);
  properties[PROP_WIDTH] = g_param_spec_int ("width", NULL, NULL, 0, 4096, 0, flags);
  properties[PROP_HEIGHT] = g_param_spec_int ("height", NULL, NULL, 0, 4096, 0, flags);
  properties[PROP_BATCH_COUNT] = g_param_spec_int ("batch-count", NULL, NULL, 1, 64, 1, flags);
  properties[PROP_STRENGTH] = g_param_spec_double ("strength", NULL, NULL, 0, 1, 0.75, flags);
  /* DMCMC: defaults from the engine (moire_dmcmc_params_default). */
  properties[PROP_DMCMC_ETA] = g_param_spec_double ("dmcmc-eta", NULL, NULL, MOIRE_GEN_DMCMC_ETA_MIN,
                                                    MOIRE_GEN_DMCMC_ETA_MAX, dmcmc.eta, flags);
  properties[PROP_DMCMC_SKIP] = g_param_spec_int ("dmcmc-skip", NULL, NULL, 0, MOIRE_GEN_DMCMC_SKIP_MAX,
                                                  dmcmc.skip, flags);
  properties[PROP_DMCMC_INTEGRATOR] =
    g_param_spec_string ("dmcmc-integrator", NULL, NULL,
                         moire_dmcmc_integrator_name (dmcmc.integrator), flags);
  properties[PROP_DMCMC_STEPS] = g_param_spec_int ("dmcmc-steps", NULL, NULL, 1, MOIRE_GEN_DMCMC_STEPS_MAX,
                                                   dmcmc.integrator_steps, flags);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
moire_gen_settings_init (MoireGenSettings *self)
{
  self->model_path = g_strdup ("");
  self->prompt = g_strdup ("");
  self->negative_prompt = g_strdup ("");
  self->sampler = MOIRE_SAMPLER_DEFAULT;
  self->schedule = MOIRE_SCHEDULE_DEFAULT;
  self->seed = 42;
  self->seed_mode = MOIRE_SEED_MODE_RANDOM;
  self->batch_count = 1;
  self->strength = 0.75;
  self->dmcmc = moire_dmcmc_params_default ();
}

MoireGenSettings *
moire_gen_settings_new (void)
{
  return g_object_new (MOIRE_TYPE_GEN_SETTINGS, NULL);
}

void
moire_gen_settings_assign (MoireGenSettings *self,
                           MoireGenSettings *src)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (src));

  g_object_freeze_notify (G_OBJECT (self));
  moire_gen_settings_set_model_path (self, src->model_path);
  moire_gen_settings_set_prompt (self, src->prompt);
  moire_gen_settings_set_negative_prompt (self, src->negative_prompt);
  moire_gen_settings_set_sampler_id (self, src->sampler);
  moire_gen_settings_set_schedule_id (self, src->schedule);
  moire_gen_settings_set_steps (self, src->steps);
  moire_gen_settings_set_cfg_scale (self, src->cfg_scale);
  moire_gen_settings_set_seed (self, src->seed);
  moire_gen_settings_set_seed_mode (self, src->seed_mode);
  moire_gen_settings_set_size (self, src->width, src->height);
  moire_gen_settings_set_batch_count (self, src->batch_count);
  moire_gen_settings_set_strength (self, src->strength);
  moire_gen_settings_set_dmcmc_eta (self, src->dmcmc.eta);
  moire_gen_settings_set_dmcmc_skip (self, src->dmcmc.skip);
  moire_gen_settings_set_dmcmc_integrator (self, moire_dmcmc_integrator_name (src->dmcmc.integrator));
  moire_gen_settings_set_dmcmc_steps (self, src->dmcmc.integrator_steps);
  g_object_thaw_notify (G_OBJECT (self));
}

MoireGenSettings *
moire_gen_settings_copy (MoireGenSettings *self)
{
  MoireGenSettings *copy;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  copy = moire_gen_settings_new ();
  moire_gen_settings_assign (copy, self);
  return copy;
}

const char *
moire_gen_settings_get_model_path (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  return self->model_path;
}

void
moire_gen_settings_set_model_path (MoireGenSettings *self,
                                   const char       *path)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  set_string (self, &self->model_path, path, PROP_MODEL_PATH);
}

const char *
moire_gen_settings_get_prompt (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  return self->prompt;
}

void
moire_gen_settings_set_prompt (MoireGenSettings *self,
                               const char       *prompt)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  set_string (self, &self->prompt, prompt, PROP_PROMPT);
}

const char *
moire_gen_settings_get_negative_prompt (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  return self->negative_prompt;
}

void
moire_gen_settings_set_negative_prompt (MoireGenSettings *self,
                                        const char       *prompt)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  set_string (self, &self->negative_prompt, prompt, PROP_NEGATIVE_PROMPT);
}

const char *
moire_gen_settings_get_sampler (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  return moire_gen_settings_sampler_at ((guint) self->sampler);
}

moire_sampler
moire_gen_settings_get_sampler_id (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), MOIRE_SAMPLER_DEFAULT);
  return self->sampler;
}

void
moire_gen_settings_set_sampler_id (MoireGenSettings *self,
                                   moire_sampler     sampler)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  g_return_if_fail ((guint) sampler < MOIRE_SAMPLER_COUNT_);
  if (self->sampler == sampler)
    return;
  self->sampler = sampler;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SAMPLER]);
}

gboolean
moire_gen_settings_set_sampler (MoireGenSettings *self,
                                const char       *name)
{
  moire_sampler sampler;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);
  if (name == NULL || *name == '\0')
    name = "default";
  if (moire_sampler_from_name (name, &sampler) != MOIRE_OK)
    return FALSE;
  moire_gen_settings_set_sampler_id (self, sampler);
  return TRUE;
}

const char *
moire_gen_settings_get_schedule (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  return moire_gen_settings_schedule_at ((guint) self->schedule);
}

moire_schedule
moire_gen_settings_get_schedule_id (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), MOIRE_SCHEDULE_DEFAULT);
  return self->schedule;
}

void
moire_gen_settings_set_schedule_id (MoireGenSettings *self,
                                    moire_schedule    schedule)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  g_return_if_fail ((guint) schedule < MOIRE_SCHEDULE_COUNT_);
  if (self->schedule == schedule)
    return;
  self->schedule = schedule;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SCHEDULE]);
}

gboolean
moire_gen_settings_set_schedule (MoireGenSettings *self,
                                 const char       *name)
{
  moire_schedule schedule;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);
  if (name == NULL || *name == '\0')
    name = "default";
  if (moire_schedule_from_name (name, &schedule) != MOIRE_OK)
    return FALSE;
  moire_gen_settings_set_schedule_id (self, schedule);
  return TRUE;
}

int
moire_gen_settings_get_steps (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->steps;
}

void
moire_gen_settings_set_steps (MoireGenSettings *self,
                              int               steps)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  steps = CLAMP (steps, 0, 1000);
  if (self->steps == steps)
    return;
  self->steps = steps;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_STEPS]);
}

double
moire_gen_settings_get_cfg_scale (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->cfg_scale;
}

void
moire_gen_settings_set_cfg_scale (MoireGenSettings *self,
                                  double            cfg_scale)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  if (!isfinite (cfg_scale))
    cfg_scale = 0;
  cfg_scale = CLAMP (cfg_scale, 0, 30);
  if (self->cfg_scale == cfg_scale)
    return;
  self->cfg_scale = cfg_scale;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_CFG_SCALE]);
}

guint64
moire_gen_settings_get_seed (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->seed;
}

void
moire_gen_settings_set_seed (MoireGenSettings *self,
                             guint64           seed)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  seed = MIN (seed, MOIRE_SEED_MAX);
  if (self->seed == seed)
    return;
  self->seed = seed;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SEED]);
}

MoireSeedMode
moire_gen_settings_get_seed_mode (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), MOIRE_SEED_MODE_FIXED);
  return self->seed_mode;
}

void
moire_gen_settings_set_seed_mode (MoireGenSettings *self,
                                  MoireSeedMode     mode)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  if (mode > MOIRE_SEED_MODE_REUSE_LAST)
    mode = MOIRE_SEED_MODE_FIXED;
  if (self->seed_mode == mode)
    return;
  self->seed_mode = mode;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SEED_MODE]);
}

int
moire_gen_settings_get_width (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->width;
}

int
moire_gen_settings_get_height (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->height;
}

void
moire_gen_settings_set_size (MoireGenSettings *self,
                             int               width,
                             int               height)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  width = CLAMP (width, 0, 4096);
  height = CLAMP (height, 0, 4096);
  g_object_freeze_notify (G_OBJECT (self));
  if (self->width != width)
    {
      self->width = width;
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_WIDTH]);
    }
  if (self->height != height)
    {
      self->height = height;
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_HEIGHT]);
    }
  g_object_thaw_notify (G_OBJECT (self));
}

int
moire_gen_settings_get_batch_count (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 1);
  return self->batch_count;
}

void
moire_gen_settings_set_batch_count (MoireGenSettings *self,
                                    int               count)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  count = CLAMP (count, 1, 64);
  if (self->batch_count == count)
    return;
  self->batch_count = count;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_BATCH_COUNT]);
}

double
moire_gen_settings_get_strength (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0.75);
  return self->strength;
}

void
moire_gen_settings_set_strength (MoireGenSettings *self,
                                 double            strength)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  if (!isfinite (strength))
    strength = 0.75;
  strength = CLAMP (strength, 0, 1);
  if (self->strength == strength)
    return;
  self->strength = strength;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_STRENGTH]);
}

gboolean
moire_gen_settings_get_dmcmc (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);
  return self->sampler == MOIRE_SAMPLER_DMCMC;
}

double
moire_gen_settings_get_dmcmc_eta (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->dmcmc.eta;
}

void
moire_gen_settings_set_dmcmc_eta (MoireGenSettings *self,
                                  double            eta)
{
  float value;

  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  if (!isfinite (eta))
    eta = moire_dmcmc_params_default ().eta;
  value = (float) CLAMP (eta, MOIRE_GEN_DMCMC_ETA_MIN, MOIRE_GEN_DMCMC_ETA_MAX);
  if (self->dmcmc.eta == value)
    return;
  self->dmcmc.eta = value;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DMCMC_ETA]);
}

int
moire_gen_settings_get_dmcmc_skip (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return self->dmcmc.skip;
}

void
moire_gen_settings_set_dmcmc_skip (MoireGenSettings *self,
                                   int               skip)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  skip = CLAMP (skip, 0, MOIRE_GEN_DMCMC_SKIP_MAX);
  if (self->dmcmc.skip == skip)
    return;
  self->dmcmc.skip = skip;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DMCMC_SKIP]);
}

const char *
moire_gen_settings_get_dmcmc_integrator (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), NULL);
  return moire_dmcmc_integrator_name (self->dmcmc.integrator);
}

gboolean
moire_gen_settings_set_dmcmc_integrator (MoireGenSettings *self,
                                         const char       *name)
{
  moire_dmcmc_integrator integrator = moire_dmcmc_params_default ().integrator;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);
  if (name != NULL && *name != '\0' && moire_dmcmc_integrator_from_name (name, &integrator) != MOIRE_OK)
    return FALSE;
  if (self->dmcmc.integrator == integrator)
    return TRUE;
  self->dmcmc.integrator = integrator;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DMCMC_INTEGRATOR]);
  return TRUE;
}

int
moire_gen_settings_get_dmcmc_steps (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 1);
  return self->dmcmc.integrator_steps;
}

void
moire_gen_settings_set_dmcmc_steps (MoireGenSettings *self,
                                    int               steps)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  steps = CLAMP (steps, 1, MOIRE_GEN_DMCMC_STEPS_MAX);
  if (self->dmcmc.integrator_steps == steps)
    return;
  self->dmcmc.integrator_steps = steps;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DMCMC_STEPS]);
}

int
moire_gen_settings_get_dmcmc_nfe (MoireGenSettings *self)
{
  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), 0);
  return moire_dmcmc_nfe_per_sample (&self->dmcmc);
}

guint
moire_gen_settings_dmcmc_integrator_count (void)
{
  return MOIRE_DMCMC_INTEGRATOR_COUNT_;
}

guint
moire_gen_settings_dmcmc_integrator_index (const char *name)
{
  moire_dmcmc_integrator integrator;

  if (name == NULL || moire_dmcmc_integrator_from_name (name, &integrator) != MOIRE_OK)
    return (guint) moire_dmcmc_params_default ().integrator;
  return (guint) integrator;
}

const char *
moire_gen_settings_dmcmc_integrator_at (guint index)
{
  if (index >= MOIRE_DMCMC_INTEGRATOR_COUNT_)
    index = (guint) moire_dmcmc_params_default ().integrator;
  return moire_dmcmc_integrator_name ((moire_dmcmc_integrator) index);
}

gboolean
moire_gen_settings_to_params (MoireGenSettings       *self,
                              guint64                 seed,
                              moire_generate_params  *params,
                              GError                **error)
{
  moire_generate_params p = moire_generate_params_default ();

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);
  g_return_val_if_fail (params != NULL, FALSE);

  p.sampler = self->sampler;
  p.schedule = self->schedule;
  p.prompt = self->prompt;
  p.class_id = -1;
  p.negative_prompt = self->negative_prompt;
  p.seed = seed;
  p.steps = self->steps;
  p.cfg_scale = self->cfg_scale > 0 ? (float) self->cfg_scale : -1.0f;
  p.width = self->width;
  p.height = self->height;
  p.batch_count = self->batch_count;
  p.strength = (float) self->strength;
  if (p.sampler == MOIRE_SAMPLER_DMCMC)
    {
      /* The integrator's steps are DMCMC's steps (as `moire generate --steps`). */
      p.dmcmc = &self->dmcmc;
      p.steps = self->dmcmc.integrator_steps;
    }
  *params = p;
  return TRUE;
}

void
moire_gen_settings_apply_model_defaults (MoireGenSettings  *self,
                                         const moire_model *model)
{
  moire_sampler sampler = MOIRE_SAMPLER_DEFAULT;
  int steps = 0;
  float cfg = 0;
  const moire_model_config *config;
  int size;

  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  g_return_if_fail (model != NULL);

  moire_model_get_defaults (model, &sampler, &steps, &cfg);
  config = moire_model_get_config (model);
  size = config->input_size * (config->space == MOIRE_SPACE_LATENT ? 8 : 1);

  g_object_freeze_notify (G_OBJECT (self));
  /* DMCMC is a mode the user switched on; it works with every model, so it stays on. */
  if (!moire_gen_settings_get_dmcmc (self))
    moire_gen_settings_set_sampler_id (self, MOIRE_SAMPLER_DEFAULT);
  moire_gen_settings_set_schedule_id (self, MOIRE_SCHEDULE_DEFAULT);
  moire_gen_settings_set_steps (self, steps);
  moire_gen_settings_set_cfg_scale (self, cfg);
  moire_gen_settings_set_size (self, size, size);
  g_object_thaw_notify (G_OBJECT (self));
}

void
moire_gen_settings_bind_gsettings (MoireGenSettings *self,
                                   GSettings        *settings)
{
  g_return_if_fail (MOIRE_IS_GEN_SETTINGS (self));
  g_return_if_fail (G_IS_SETTINGS (settings));

  for (guint prop = PROP_0 + 1; prop < N_PROPS; prop++)
    g_settings_bind (settings, gsettings_keys[prop], self,
                     g_param_spec_get_name (properties[prop]), G_SETTINGS_BIND_DEFAULT);
}

guint
moire_gen_settings_sampler_count (void)
{
  return MOIRE_SAMPLER_COUNT_;
}

guint
moire_gen_settings_sampler_index (const char *name)
{
  moire_sampler sampler;

  if (name == NULL || moire_sampler_from_name (name, &sampler) != MOIRE_OK)
    return 0;
  return (guint) sampler;
}

const char *
moire_gen_settings_sampler_at (guint index)
{
  if (index >= MOIRE_SAMPLER_COUNT_)
    index = 0;
  return moire_sampler_name ((moire_sampler) index);
}

guint
moire_gen_settings_schedule_count (void)
{
  return MOIRE_SCHEDULE_COUNT_;
}

guint
moire_gen_settings_schedule_index (const char *name)
{
  moire_schedule schedule;

  if (name == NULL || moire_schedule_from_name (name, &schedule) != MOIRE_OK)
    return 0;
  return (guint) schedule;
}

const char *
moire_gen_settings_schedule_at (guint index)
{
  /* The engine names MOIRE_SCHEDULE_DEFAULT "uniform" (what it resolves to); the list keeps
   * "default" distinct so "the model's choice" survives a save and restore. */
  if (index == MOIRE_SCHEDULE_DEFAULT || index >= MOIRE_SCHEDULE_COUNT_)
    return "default";
  return moire_schedule_name ((moire_schedule) index);
}
