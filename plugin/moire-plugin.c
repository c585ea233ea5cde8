/* moire-plugin.c — the host-independent logic of the Moiré plug-in (see moire-plugin.h). */
#define G_LOG_DOMAIN "moire-plugin"

#include "moire-plugin.h"

#include <math.h>
#include <string.h>

#include "moire-model-locator.h"

#define MOIRE_PLUGIN_ERROR (g_quark_from_static_string ("moire-plugin-error"))

G_DEFINE_AUTOPTR_CLEANUP_FUNC (moire_image, moire_image_free)

void
moire_plugin_values_init (MoirePluginValues *values)
{
  memset (values, 0, sizeof *values);
  values->version = MOIRE_PLUGIN_VALUES_VERSION;
  values->cfg_scale = 0;
  values->seed = MOIRE_PLUGIN_SEED_RANDOM;
  values->count = 1;
  values->mode = MOIRE_PLUGIN_MODE_GENERATE;
  values->strength = 0.75;
}

void
moire_plugin_copy_string (char       *dest,
                          gsize       size,
                          const char *text)
{
  gsize n;

  if (size == 0)
    return;
  if (text == NULL)
    text = "";
  n = strlen (text);
  if (n >= size)
    {
      n = size - 1;
      /* Do not cut a UTF-8 sequence in half: back up to the start of the last character. */
      while (n > 0 && ((guchar) text[n] & 0xC0) == 0x80)
        n--;
    }
  memcpy (dest, text, n);
  dest[n] = '\0';
}

char *
moire_plugin_resolve_model (const char  *requested,
                            GError     **error)
{
  g_autoptr(GError) local_error = NULL;
  char *path;

  if (requested != NULL && *requested != '\0')
    {
      if (!g_file_test (requested, G_FILE_TEST_IS_REGULAR))
        {
          g_set_error (error, MOIRE_PLUGIN_ERROR, 1,
                       "model file \"%s\" does not exist; give the path of a .safetensors model "
                       "(or an empty model path to use $MOIRE_MODEL or the installed model)",
                       requested);
          return NULL;
        }
      return g_strdup (requested);
    }
  path = moire_model_locator_find_default (&local_error);
  if (path == NULL)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "%s",
                   local_error != NULL ? local_error->message
                                       : "no model found: pass a model path, or set $MOIRE_MODEL "
                                         "to a .safetensors model file");
      return NULL;
    }
  return path;
}

int
moire_plugin_inpaint_context (const MoireRect *selection)
{
  return MAX (16, MAX (selection->width, selection->height) / 4);
}

gboolean
moire_plugin_target_rect (int              image_width,
                          int              image_height,
                          const MoireRect *selection,
                          MoirePluginMode  mode,
                          MoireRect       *target,
                          GError         **error)
{
  if (image_width <= 0 || image_height <= 0)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "the image is empty");
      return FALSE;
    }
  if (mode == MOIRE_PLUGIN_MODE_INPAINT && selection == NULL)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1,
                   "inpainting regenerates the selection, but nothing is selected: select the "
                   "area to repaint first");
      return FALSE;
    }
  if (selection == NULL)
    {
      *target = (MoireRect) { 0, 0, image_width, image_height };
      return TRUE;
    }
  {
    int grow = mode == MOIRE_PLUGIN_MODE_INPAINT ? moire_plugin_inpaint_context (selection) : 0;
    int x1 = CLAMP (selection->x - grow, 0, image_width);
    int y1 = CLAMP (selection->y - grow, 0, image_height);
    int x2 = CLAMP (selection->x + selection->width + grow, 0, image_width);
    int y2 = CLAMP (selection->y + selection->height + grow, 0, image_height);

    if (x2 <= x1 || y2 <= y1)
      {
        g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "the selection lies outside the image");
        return FALSE;
      }
    *target = (MoireRect) { x1, y1, x2 - x1, y2 - y1 };
  }
  return TRUE;
}

gboolean
moire_plugin_read_inputs (MoireHost        *host,
                          MoirePluginMode   mode,
                          MoireRect        *target,
                          moire_image     **init_image,
                          moire_image     **mask,
                          GError          **error)
{
  MoireRect selection;
  gboolean has_selection;
  int width = 0, height = 0;

  *init_image = NULL;
  *mask = NULL;
  moire_host_get_image_size (host, &width, &height);
  has_selection = moire_host_get_selection_bounds (host, &selection);
  if (!moire_plugin_target_rect (width, height, has_selection ? &selection : NULL, mode,
                                 target, error))
    return FALSE;
  if (mode == MOIRE_PLUGIN_MODE_GENERATE)
    return TRUE;

  *init_image = moire_host_read_drawable (host, target, error);
  if (*init_image == NULL)
    return FALSE;
  if (mode == MOIRE_PLUGIN_MODE_INPAINT)
    {
      *mask = moire_host_read_selection (host, target, error);
      if (*mask == NULL)
        {
          g_clear_pointer (init_image, moire_image_free);
          return FALSE;
        }
    }
  return TRUE;
}

/* --- scaling ------------------------------------------------------------------------------- */

/* The source samples and weights of one output index along one axis. Enlarging: linear
 * interpolation between the two nearest source centres. Reducing: the source interval the
 * output pixel covers, each source pixel weighted by the length it contributes (a box filter,
 * so noise averages out instead of aliasing). */
typedef struct
{
  int first, count;
  float *weights;
} Taps;

static Taps *
compute_taps (int src_size,
              int dst_size)
{
  Taps *taps = g_new0 (Taps, dst_size);
  double scale = (double) src_size / dst_size;

  for (int i = 0; i < dst_size; i++)
    {
      if (scale <= 1.0)
        {
          double centre = (i + 0.5) * scale - 0.5;
          int left = (int) floor (centre);
          double frac = centre - left;
          int a = CLAMP (left, 0, src_size - 1), b = CLAMP (left + 1, 0, src_size - 1);

          taps[i].first = a;
          taps[i].count = b - a + 1;
          taps[i].weights = g_new0 (float, 2);
          if (b == a)
            taps[i].weights[0] = 1.0f;
          else
            {
              taps[i].weights[0] = (float) (1.0 - frac);
              taps[i].weights[1] = (float) frac;
            }
        }
      else
        {
          double start = i * scale, end = (i + 1) * scale;
          int first = (int) floor (start), last = MIN ((int) ceil (end) - 1, src_size - 1);

          taps[i].first = first;
          taps[i].count = last - first + 1;
          taps[i].weights = g_new0 (float, taps[i].count);
          for (int k = 0; k < taps[i].count; k++)
            {
              double lo = MAX (start, (double) (first + k));
              double hi = MIN (end, (double) (first + k + 1));

              taps[i].weights[k] = (float) (MAX (hi - lo, 0.0) / scale);
            }
        }
    }
  return taps;
}

static void
free_taps (Taps *taps,
           int   n)
{
  for (int i = 0; i < n; i++)
    g_free (taps[i].weights);
  g_free (taps);
}

static void
pixel_rgba (const moire_image *src,
            size_t             index,
            float             *out)
{
  const uint8_t *p = src->pixels + index * src->channels;

  switch (src->channels)
    {
    case 1: out[0] = out[1] = out[2] = p[0]; out[3] = 255; break;
    case 2: out[0] = out[1] = out[2] = p[0]; out[3] = p[1]; break;
    case 3: out[0] = p[0]; out[1] = p[1]; out[2] = p[2]; out[3] = 255; break;
    default: out[0] = p[0]; out[1] = p[1]; out[2] = p[2]; out[3] = p[3]; break;
    }
}

moire_image *
moire_plugin_scale_image (const moire_image  *src,
                          int                 width,
                          int                 height,
                          MoirePluginScaling  scaling)
{
  moire_image *dst;

  g_return_val_if_fail (src != NULL && width > 0 && height > 0, NULL);
  if (scaling != MOIRE_PLUGIN_SCALING_PIXEL_ART)
    return moire_plugin_scale_rgba (src, width, height);
  dst = moire_image_new (width, height, 4);
  if (dst == NULL)
    return NULL;
  for (int y = 0; y < height; y++)
    {
      /* the source row/column under the output pixel's centre: (y + ½)·H/h, in integers */
      int sy = (int) (((int64_t) 2 * y + 1) * src->height / (2 * (int64_t) height));

      for (int x = 0; x < width; x++)
        {
          int sx = (int) (((int64_t) 2 * x + 1) * src->width / (2 * (int64_t) width));
          float px[4];
          uint8_t *out = dst->pixels + ((size_t) y * width + x) * 4;

          pixel_rgba (src, (size_t) sy * src->width + sx, px);
          for (int c = 0; c < 4; c++)
            out[c] = (uint8_t) px[c];
        }
    }
  return dst;
}

moire_image *
moire_plugin_scale_rgba (const moire_image *src,
                         int                width,
                         int                height)
{
  moire_image *dst;
  Taps *tx, *ty;
  float *rows;

  g_return_val_if_fail (src != NULL && width > 0 && height > 0, NULL);

  dst = moire_image_new (width, height, 4);
  if (dst == NULL)
    return NULL;
  if (src->width == width && src->height == height)
    {
      for (size_t i = 0; i < (size_t) width * height; i++)
        {
          float px[4];

          pixel_rgba (src, i, px);
          for (int c = 0; c < 4; c++)
            dst->pixels[i * 4 + c] = (uint8_t) px[c];
        }
      return dst;
    }

  /* Horizontal pass into float rows (premultiplied, so transparent pixels do not bleed their
   * colour), then the vertical pass. */
  tx = compute_taps (src->width, width);
  ty = compute_taps (src->height, height);
  rows = g_new0 (float, (size_t) src->height * width * 4);
  for (int y = 0; y < src->height; y++)
    for (int x = 0; x < width; x++)
      {
        float acc[4] = { 0 };

        for (int k = 0; k < tx[x].count; k++)
          {
            float px[4], w = tx[x].weights[k];

            pixel_rgba (src, (size_t) y * src->width + tx[x].first + k, px);
            acc[0] += w * px[0] * px[3] / 255.0f;
            acc[1] += w * px[1] * px[3] / 255.0f;
            acc[2] += w * px[2] * px[3] / 255.0f;
            acc[3] += w * px[3];
          }
        memcpy (rows + ((size_t) y * width + x) * 4, acc, sizeof acc);
      }
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      {
        float acc[4] = { 0 };
        uint8_t *out = dst->pixels + ((size_t) y * width + x) * 4;

        for (int k = 0; k < ty[y].count; k++)
          {
            const float *px = rows + ((size_t) (ty[y].first + k) * width + x) * 4;

            for (int c = 0; c < 4; c++)
              acc[c] += ty[y].weights[k] * px[c];
          }
        for (int c = 0; c < 3; c++)
          {
            float v = acc[3] > 0.0f ? acc[c] * 255.0f / acc[3] : 0.0f;

            out[c] = (uint8_t) CLAMP (lrintf (v), 0, 255);
          }
        out[3] = (uint8_t) CLAMP (lrintf (acc[3]), 0, 255);
      }
  g_free (rows);
  free_taps (tx, width);
  free_taps (ty, height);
  return dst;
}

/* --- names and parameters ------------------------------------------------------------------ */

char *
moire_plugin_layer_name (const char *prompt,
                         guint64     seed)
{
  g_autofree char *flat = g_strdup (prompt != NULL && *prompt != '\0' ? prompt : "untitled");
  g_autoptr(GString) name = g_string_new ("Moiré: ");

  g_strdelimit (flat, "\r\n\t", ' ');
  g_strstrip (flat);
  if (g_utf8_strlen (flat, -1) > 48)
    {
      g_autofree char *cut = g_utf8_substring (flat, 0, 47);

      g_string_append (name, g_strchomp (cut));
      g_string_append (name, "…");
    }
  else
    g_string_append (name, flat);
  g_string_append_printf (name, " #%" G_GUINT64_FORMAT, seed);
  return g_string_free (g_steal_pointer (&name), FALSE);
}

gboolean
moire_plugin_values_to_params (const MoirePluginValues *values,
                               moire_generate_params   *params,
                               GError                 **error)
{
  *params = moire_generate_params_default ();
  params->prompt = values->prompt;
  params->negative_prompt = values->negative_prompt;
  if (values->sampler[0] != '\0' && g_ascii_strcasecmp (values->sampler, "default") != 0 &&
      moire_sampler_from_name (values->sampler, &params->sampler) != MOIRE_OK)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "%s", moire_last_error ());
      return FALSE;
    }
  if (values->steps < 0 || values->width < 0 || values->height < 0)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1,
                   "steps, width and height must be 0 (the model's default) or positive");
      return FALSE;
    }
  if (values->count < 1 || values->count > 64)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "count must be between 1 and 64, not %d",
                   values->count);
      return FALSE;
    }
  if (values->mode < 0 || values->mode >= MOIRE_PLUGIN_MODE_COUNT_)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1,
                   "mode must be 0 (generate), 1 (image to image) or 2 (inpaint), not %d",
                   values->mode);
      return FALSE;
    }
  params->steps = values->steps;
  params->cfg_scale = values->cfg_scale > 0 ? (float) values->cfg_scale : -1.0f;
  params->seed = values->seed >= 0 ? (uint64_t) values->seed
                                   : (uint64_t) g_random_int ();
  params->width = values->width;
  params->height = values->height;
  params->batch_count = values->count;
  params->strength = (float) CLAMP (values->strength, 0.0, 1.0);
  return TRUE;
}

/* --- the direct run -------------------------------------------------------------------------- */

static bool
on_progress (const moire_progress *progress,
             void                 *user_data)
{
  MoireHost *host = user_data;
  double total = (double) MAX (progress->image_count, 1) * MAX (progress->step_count, 1);
  double done = (double) progress->image_index * progress->step_count + progress->step;
  g_autofree char *text = g_strdup_printf ("Moiré: step %d/%d, image %d/%d", progress->step,
                                           progress->step_count, progress->image_index + 1,
                                           progress->image_count);

  moire_host_progress_update (host, CLAMP (done / total, 0.0, 1.0), text);
  return true;
}

gboolean
moire_plugin_insert_images (MoireHost              *host,
                            const MoireRect        *target,
                            MoirePluginMode         mode,
                            MoirePluginScaling      scaling,
                            moire_image * const    *images,
                            const char * const     *prompts,
                            const guint64          *seeds,
                            const char * const     *parameters,
                            const char * const     *settings_json,
                            int                     count,
                            GArray                 *layer_ids,
                            GError                **error)
{
  g_autofree MoireHostResult *results = g_new0 (MoireHostResult, MAX (count, 1));
  g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) scaled = g_ptr_array_new_with_free_func ((GDestroyNotify) moire_image_free);
  gboolean ok;

  for (int i = 0; i < count; i++)
    {
      moire_image *image = moire_plugin_scale_image (images[i], target->width, target->height,
                                                     scaling);
      char *name;

      if (image == NULL)
        {
          g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "out of memory scaling the result to %d×%d",
                       target->width, target->height);
          return FALSE;
        }
      g_ptr_array_add (scaled, image);
      name = moire_plugin_layer_name (prompts[i], seeds[i]);
      g_ptr_array_add (keep, name);
      results[i] = (MoireHostResult) { image, name, parameters[i], settings_json[i] };
    }
  ok = moire_host_insert_results (host, target, results, count,
                                  mode == MOIRE_PLUGIN_MODE_INPAINT, layer_ids, error);
  return ok;
}

gboolean
moire_plugin_run_direct (MoireHost         *host,
                         MoirePluginValues *values,
                         GArray            *layer_ids,
                         GError           **error)
{
  g_autofree char *model_path = NULL;
  g_autoptr(moire_image) init_image = NULL;
  g_autoptr(moire_image) mask = NULL;
  moire_generate_params params;
  moire_ctx_params ctx_params = moire_ctx_params_default ();
  moire_model *model = NULL;
  moire_ctx *ctx = NULL;
  moire_image **images = NULL;
  moire_callbacks callbacks = { 0 };
  MoireRect target;
  moire_status status;
  int count = 0;
  gboolean ok = FALSE;

  if (!moire_plugin_values_to_params (values, &params, error))
    return FALSE;
  model_path = moire_plugin_resolve_model (values->model_path, error);
  if (model_path == NULL)
    return FALSE;
  if (!moire_plugin_read_inputs (host, values->mode, &target, &init_image, &mask, error))
    return FALSE;
  params.init_image = init_image;
  params.mask = mask;

  moire_host_progress_start (host, "Moiré: loading the model");
  status = moire_model_load (model_path, &model);
  if (status == MOIRE_OK)
    status = moire_ctx_new (&ctx_params, &ctx);
  if (status == MOIRE_OK)
    {
      moire_host_progress_update (host, 0.0, "Moiré: generating");
      callbacks.progress = on_progress;
      callbacks.user_data = host;
      status = moire_generate (ctx, model, &params, &callbacks, &images, &count);
    }
  /* The progress bar (and with it GIMP's cancel, which kills this process) goes away before
   * the image is touched: a cancel can only ever happen while the image is unchanged. */
  moire_host_progress_end (host);
  if (status != MOIRE_OK)
    {
      g_set_error (error, MOIRE_PLUGIN_ERROR, 1, "%s", moire_last_error ());
      goto out;
    }

  {
    g_autoptr(GPtrArray) texts = g_ptr_array_new_with_free_func (free);
    g_autoptr(GPtrArray) jsons = g_ptr_array_new_with_free_func (free);
    g_autofree const char **prompts = g_new0 (const char *, count);
    g_autofree guint64 *seeds = g_new0 (guint64, count);

    for (int i = 0; i < count; i++)
      {
        g_ptr_array_add (texts, moire_format_parameters (model, &params, i));
        g_ptr_array_add (jsons, moire_format_settings_json (model, &params, i));
        prompts[i] = values->prompt;
        seeds[i] = params.seed + (guint64) i;
      }
    ok = moire_plugin_insert_images (host, &target, values->mode, values->scaling, images,
                                     prompts, seeds,
                                     (const char * const *) texts->pdata,
                                     (const char * const *) jsons->pdata, count, layer_ids,
                                     error);
    if (ok)
      values->seed = values->seed < 0 ? values->seed : (gint64) params.seed;
  }

out:
  moire_images_free (images, count);
  moire_ctx_free (ctx);
  moire_model_free (model);
  return ok;
}
