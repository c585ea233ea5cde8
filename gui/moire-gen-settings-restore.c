/* moire-gen-settings-restore.c — MoireGenSettings from what a PNG carries: the A1111
 * "parameters" text (moire_parse_parameters) and the "moire" JSON chunk. Only the public
 * setters are used, so every value is validated (and notified) as when the user sets it. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>

#include "moire-metadata.h"
#include "moire-gen-settings.h"
#include "moire-gui-util.h"

/* The "DMCMC" pair of our A1111 text: "eta 0.08, skip 4, dpm++2m 5 steps, Tweedie, levels
 * classifier" (the level estimate is the model's business: auto in the app, not restored). */
static void
apply_dmcmc_text (MoireGenSettings       *self,
                  const moire_parameters *parameters)
{
  for (int i = 0; i < parameters->pair_count; i++)
    {
      char integrator[32] = "";
      double eta = 0;
      int skip = 0, steps = 0;

      if (g_ascii_strcasecmp (parameters->keys[i], "DMCMC") != 0)
        continue;
      /* sscanf reads "%lf" in the C locale only: the app may run in de_DE. */
      {
        const char *text = parameters->values[i];
        char *end = NULL;

        if (!g_str_has_prefix (text, "eta "))
          return;
        eta = g_ascii_strtod (text + 4, &end);
        if (end == text + 4 || sscanf (end, ", skip %d, %31s %d steps", &skip, integrator, &steps) != 3)
          return;
      }
      moire_gen_settings_set_dmcmc_eta (self, eta);
      moire_gen_settings_set_dmcmc_skip (self, skip);
      moire_gen_settings_set_dmcmc_integrator (self, integrator);
      moire_gen_settings_set_dmcmc_steps (self, steps);
      return;
    }
}

gboolean
moire_gen_settings_apply_settings_json (MoireGenSettings  *self,
                                        const char        *json,
                                        GError           **error)
{
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GError) parse_error = NULL;
  JsonObject *root, *dmcmc;
  const char *sampler, *integrator;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);

  if (json == NULL || *json == '\0')
    return TRUE;
  parser = json_parser_new ();
  /* a PNG is untrusted: the engine's guard refuses deep nesting (json-glib would recurse
   * until the stack overflows) and duplicate names before json-glib sees the text */
  if (!moire_json_check (json, -1, NULL, 0) ||
      !json_parser_load_from_data (parser, json, -1, &parse_error) ||
      !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      g_set_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED,
                   _("Settings restored, except: the “moire” settings are not valid JSON"));
      return FALSE;
    }
  root = json_node_get_object (json_parser_get_root (parser));
  sampler = json_object_get_string_member_with_default (root, "sampler", NULL);
  if (g_strcmp0 (sampler, moire_sampler_name (MOIRE_SAMPLER_DMCMC)) != 0)
    return TRUE;
  {
    JsonNode *node = json_object_get_member (root, "dmcmc");

    dmcmc = node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : NULL;
  }

  g_object_freeze_notify (G_OBJECT (self));
  moire_gen_settings_set_sampler (self, sampler);
  if (dmcmc != NULL)
    {
      if (json_object_has_member (dmcmc, "eta"))
        moire_gen_settings_set_dmcmc_eta (self, json_object_get_double_member (dmcmc, "eta"));
      if (json_object_has_member (dmcmc, "skip"))
        moire_gen_settings_set_dmcmc_skip (self, (int) json_object_get_int_member (dmcmc, "skip"));
      if (json_object_has_member (dmcmc, "integrator_steps"))
        moire_gen_settings_set_dmcmc_steps (self, (int) json_object_get_int_member (dmcmc, "integrator_steps"));
    }
  integrator = dmcmc != NULL ? json_object_get_string_member_with_default (dmcmc, "integrator", NULL) : NULL;
  if (integrator != NULL && !moire_gen_settings_set_dmcmc_integrator (self, integrator))
    {
      g_object_thaw_notify (G_OBJECT (self));
      g_set_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED,
                   /* Translators: %s is a DMCMC integrator name such as "dpm++2m" */
                   _("Settings restored, except: the DMCMC integrator “%s” is not available here"),
                   integrator);
      return FALSE;
    }
  g_object_thaw_notify (G_OBJECT (self));
  return TRUE;
}

gboolean
moire_gen_settings_apply_parameters (MoireGenSettings        *self,
                                     const moire_parameters  *parameters,
                                     char                   **out_model_name,
                                     GError                 **error)
{
  g_autoptr(GString) problems = g_string_new (NULL);
  moire_sampler sampler = MOIRE_SAMPLER_DEFAULT;
  gboolean dmcmc;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (self), FALSE);
  g_return_val_if_fail (parameters != NULL, FALSE);

  dmcmc = parameters->sampler != NULL &&
          moire_sampler_from_name (parameters->sampler, &sampler) == MOIRE_OK &&
          sampler == MOIRE_SAMPLER_DMCMC;

  g_object_freeze_notify (G_OBJECT (self));
  moire_gen_settings_set_prompt (self, parameters->prompt);
  moire_gen_settings_set_negative_prompt (self, parameters->negative_prompt);
  /* DMCMC's "Steps" are its integrator's; the other samplers' steps stay as they are. */
  if (parameters->steps > 0 && dmcmc)
    moire_gen_settings_set_dmcmc_steps (self, parameters->steps);
  else if (parameters->steps > 0)
    moire_gen_settings_set_steps (self, parameters->steps);
  if (dmcmc)
    apply_dmcmc_text (self, parameters);
  if (parameters->sampler != NULL && !moire_gen_settings_set_sampler (self, parameters->sampler))
    {
      /* Translators: %s is a sampler name such as "DPM++ 2M SDE" */
      g_string_append_printf (problems, _("the sampler “%s” is not available here"),
                              parameters->sampler);
    }
  if (parameters->schedule != NULL && !moire_gen_settings_set_schedule (self, parameters->schedule))
    {
      if (problems->len > 0)
        g_string_append (problems, "; ");
      /* Translators: %s is a schedule name such as "Exponential" */
      g_string_append_printf (problems, _("the schedule “%s” is not available here"),
                              parameters->schedule);
    }
  if (!isnan (parameters->cfg_scale))
    moire_gen_settings_set_cfg_scale (self, parameters->cfg_scale);
  if (parameters->has_seed)
    {
      moire_gen_settings_set_seed (self, parameters->seed);
      moire_gen_settings_set_seed_mode (self, MOIRE_SEED_MODE_FIXED);
    }
  if (parameters->width > 0 && parameters->height > 0)
    moire_gen_settings_set_size (self, parameters->width, parameters->height);
  if (!isnan (parameters->denoising_strength))
    moire_gen_settings_set_strength (self, parameters->denoising_strength);
  g_object_thaw_notify (G_OBJECT (self));

  if (out_model_name != NULL)
    *out_model_name = g_strdup (parameters->model);

  if (problems->len > 0)
    {
      g_set_error (error, MOIRE_GUI_ERROR, MOIRE_GUI_ERROR_FAILED,
                   /* Translators: %s lists what could not be restored */
                   _("Settings restored, except: %s"), problems->str);
      return FALSE;
    }
  return TRUE;
}
