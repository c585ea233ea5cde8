/* host-gimp2.c — the GIMP 2.10 adapter of the Moiré plug-in: registration, run modes, and the
 * host.h functions on libgimp-2.0 + GEGL.
 *
 * Never link libgimpui-2.0: it is GTK 2, and GTK 2 and the GTK 4 dialog cannot share a
 * process. libgimp itself has no GTK dependency.
 *
 * Procedure: plug-in-moire-generate, <Image>/Filters/Render/Moiré…
 *   run-mode, image, drawable, prompt, negative-prompt, model, sampler, steps, cfg-scale,
 *   seed, width, height, count, mode, strength → layer, num-layers, layer-ids
 * The menu passes only the first three; RUN-NONINTERACTIVE needs all of them.
 */
#define G_LOG_DOMAIN "moire-gimp"

#include <libgimp/gimp.h>
#include <gegl.h>
#include <string.h>

#include "host.h"
#include "moire-plugin.h"

struct MoireHost
{
  gint32    image;
  gint32    drawable;
  gint32    preview_layer;   /* -1 = none                                                 */
  MoireRect preview_rect;
  gboolean  preview_masked;
  gboolean  progress;
};

#define N_ARGS 16

static void query (void);
static void run   (const gchar      *name,
                   gint              n_params,
                   const GimpParam  *param,
                   gint             *n_return_vals,
                   GimpParam       **return_vals);

const GimpPlugInInfo PLUG_IN_INFO = { NULL, NULL, query, run };

MAIN ()

static void
query (void)
{
  static const GimpParamDef args[N_ARGS] = {
    { GIMP_PDB_INT32,    "run-mode",        "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1), RUN-WITH-LAST-VALS (2) }" },
    { GIMP_PDB_IMAGE,    "image",           "Input image" },
    { GIMP_PDB_DRAWABLE, "drawable",        "Input drawable (the init image for modes 1 and 2)" },
    { GIMP_PDB_STRING,   "prompt",          "Prompt (a class name such as \"golden retriever\" for class-conditional models)" },
    { GIMP_PDB_STRING,   "negative-prompt", "Negative prompt (\"\" = none)" },
    { GIMP_PDB_STRING,   "model",           "Model file (.safetensors); \"\" = $MOIRE_MODEL, then the installed default model" },
    { GIMP_PDB_STRING,   "sampler",         "Sampler: \"\" = the model's own, ddpm, rf-euler, ddim, euler, \"Euler a\", heun, \"DPM++ 2M\"" },
    { GIMP_PDB_INT32,    "steps",           "Sampling steps (0 = the model's default)" },
    { GIMP_PDB_FLOAT,    "cfg-scale",       "Guidance scale (0 = the model's default)" },
    { GIMP_PDB_INT32,    "seed",            "Seed (-1 = random); image i of a batch uses seed + i" },
    { GIMP_PDB_INT32,    "width",           "Generation width in pixels (0 = the model's size); the result is scaled to the target" },
    { GIMP_PDB_INT32,    "height",          "Generation height in pixels (0 = the model's size)" },
    { GIMP_PDB_INT32,    "count",           "Number of images; each becomes a layer" },
    { GIMP_PDB_INT32,    "mode",            "{ GENERATE (0), IMAGE-TO-IMAGE from the drawable (1), INPAINT the selection (2) }" },
    { GIMP_PDB_FLOAT,    "strength",        "Denoising strength for modes 1 and 2 (0..1)" },
    { GIMP_PDB_INT32,    "scaling",         "How the result is scaled to the target: { SMOOTH (0), PIXEL-ART (1) nearest neighbour }" },
  };
  static const GimpParamDef rets[] = {
    { GIMP_PDB_LAYER,      "layer",      "The first new layer (image 0 of the batch)" },
    { GIMP_PDB_INT32,      "num-layers", "Number of new layers" },
    { GIMP_PDB_INT32ARRAY, "layer-ids",  "The new layers, in batch order" },
  };

  gimp_install_procedure (MOIRE_PLUGIN_PROC,
                          "Generate an image with a Moiré diffusion model",
                          "Runs a Mixture-of-Experts diffusion transformer (Moiré engine) and adds "
                          "each result as a layer named \"Moiré: <prompt> #<seed>\" with its "
                          "A1111 parameters in the \"" MOIRE_HOST_PARASITE_PARAMETERS "\" parasite. "
                          "The result covers the selection bounds, or the whole image. Mode 1 "
                          "starts from the drawable (image to image), mode 2 repaints the "
                          "selection only (inpainting, with the feathered selection as a soft "
                          "mask). Interactively, a dialog shows a live preview on the canvas.",
                          "Moiré contributors", "Moiré contributors (MIT)", "2025",
                          "_Moiré…", "RGB*, GRAY*", GIMP_PLUGIN,
                          G_N_ELEMENTS (args), G_N_ELEMENTS (rets), args, rets);
  gimp_plugin_menu_register (MOIRE_PLUGIN_PROC, "<Image>/Filters/Render");
}

static void
values_from_params (MoirePluginValues *values,
                    gint               n_params,
                    const GimpParam   *param)
{
  moire_plugin_copy_string (values->prompt, sizeof values->prompt, param[3].data.d_string);
  moire_plugin_copy_string (values->negative_prompt, sizeof values->negative_prompt,
                            param[4].data.d_string);
  moire_plugin_copy_string (values->model_path, sizeof values->model_path, param[5].data.d_string);
  moire_plugin_copy_string (values->sampler, sizeof values->sampler, param[6].data.d_string);
  values->steps = param[7].data.d_int32;
  values->cfg_scale = param[8].data.d_float;
  values->seed = param[9].data.d_int32 < 0 ? MOIRE_PLUGIN_SEED_RANDOM : param[9].data.d_int32;
  values->width = param[10].data.d_int32;
  values->height = param[11].data.d_int32;
  values->count = param[12].data.d_int32;
  if (n_params > 13)
    values->mode = param[13].data.d_int32;
  if (n_params > 14)
    values->strength = param[14].data.d_float;
  if (n_params > 15)
    values->scaling = CLAMP (param[15].data.d_int32, 0, MOIRE_PLUGIN_SCALING_COUNT_ - 1);
}

static void
run (const gchar      *name,
     gint              n_params,
     const GimpParam  *param,
     gint             *n_return_vals,
     GimpParam       **return_vals)
{
  static GimpParam values[4];
  static gint32 *ids_out;
  g_autoptr(GArray) layer_ids = g_array_new (FALSE, TRUE, sizeof (gint32));
  g_autoptr(GError) error = NULL;
  MoirePluginValues vals;
  MoireHost host = { .preview_layer = -1 };
  GimpRunMode run_mode;
  gboolean ok = FALSE, have_last;

  *n_return_vals = 1;
  *return_vals = values;
  values[0].type = GIMP_PDB_STATUS;
  values[0].data.d_status = GIMP_PDB_CALLING_ERROR;
  /* The menu passes run-mode, image and drawable only; scripts pass everything. */
  if (strcmp (name, MOIRE_PLUGIN_PROC) != 0 || n_params < 3)
    return;

  run_mode = param[0].data.d_int32;
  host.image = param[1].data.d_image;
  host.drawable = param[2].data.d_drawable;
  gegl_init (NULL, NULL);

  moire_plugin_values_init (&vals);
  have_last = moire_host_load_last_values (&host, &vals, sizeof vals);
  if (!have_last)
    moire_plugin_values_init (&vals);

  switch (run_mode)
    {
    case GIMP_RUN_INTERACTIVE:
      /* A script calling interactively with a prompt pre-fills the dialog. */
      if (n_params >= 13 && param[3].data.d_string != NULL && *param[3].data.d_string != '\0')
        values_from_params (&vals, n_params, param);
#ifdef MOIRE_PLUGIN_HAVE_GTK
      ok = moire_plugin_dialog_run (&host, &vals, layer_ids, &error);
      if (!ok && error == NULL)
        {
          values[0].data.d_status = GIMP_PDB_CANCEL;
          return;
        }
#else
      g_set_error (&error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "this build of the Moiré plug-in has no dialog (built without GTK 4)");
#endif
      break;

    case GIMP_RUN_NONINTERACTIVE:
      if (n_params < 13)
        return;
      moire_plugin_values_init (&vals);
      values_from_params (&vals, n_params, param);
      ok = moire_plugin_run_direct (&host, &vals, layer_ids, &error);
      break;

    case GIMP_RUN_WITH_LAST_VALS:
      ok = moire_plugin_run_direct (&host, &vals, layer_ids, &error);
      break;

    default:
      return;
    }

  if (!ok)
    {
      values[0].data.d_status = GIMP_PDB_EXECUTION_ERROR;
      if (error != NULL)
        {
          static char *message;

          g_free (message);
          message = g_strdup_printf ("Moiré: %s", error->message);
          *n_return_vals = 2;
          values[1].type = GIMP_PDB_STRING;
          values[1].data.d_string = message;
        }
      return;
    }

  moire_host_save_last_values (&host, &vals, sizeof vals);
  if (run_mode != GIMP_RUN_NONINTERACTIVE)
    gimp_displays_flush ();

  g_free (ids_out);
  ids_out = g_memdup2 (layer_ids->data, MAX (layer_ids->len, 1) * sizeof (gint32));
  *n_return_vals = 4;
  values[0].data.d_status = GIMP_PDB_SUCCESS;
  values[1].type = GIMP_PDB_LAYER;
  values[1].data.d_layer = layer_ids->len > 0 ? g_array_index (layer_ids, gint32, 0) : -1;
  values[2].type = GIMP_PDB_INT32;
  values[2].data.d_int32 = (gint32) layer_ids->len;
  values[3].type = GIMP_PDB_INT32ARRAY;
  values[3].data.d_int32array = ids_out;
}

/* --- host.h --------------------------------------------------------------------------------- */

void
moire_host_get_image_size (MoireHost *host,
                           int       *width,
                           int       *height)
{
  *width = gimp_image_width (host->image);
  *height = gimp_image_height (host->image);
}

gboolean
moire_host_get_selection_bounds (MoireHost *host,
                                 MoireRect *bounds)
{
  gboolean non_empty = FALSE;
  gint x1 = 0, y1 = 0, x2 = 0, y2 = 0;

  if (!gimp_selection_bounds (host->image, &non_empty, &x1, &y1, &x2, &y2) || !non_empty)
    return FALSE;
  *bounds = (MoireRect) { x1, y1, x2 - x1, y2 - y1 };
  return TRUE;
}

static moire_image *
read_buffer (gint32           drawable,
             const MoireRect *rect,
             const char      *format,
             int              channels,
             GError         **error)
{
  GeglBuffer *buffer;
  moire_image *image;
  gint off_x = 0, off_y = 0;

  if (!gimp_item_is_valid (drawable))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                   "the layer to start from no longer exists");
      return NULL;
    }
  image = moire_image_new (rect->width, rect->height, channels);
  if (image == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "out of memory (%d×%d)",
                   rect->width, rect->height);
      return NULL;
    }
  if (gimp_item_is_layer (drawable) || gimp_item_is_layer_mask (drawable))
    gimp_drawable_offsets (drawable, &off_x, &off_y);
  buffer = gimp_drawable_get_buffer (drawable);
  /* GEGL_ABYSS_NONE: transparent (or 0) where the drawable does not reach. */
  gegl_buffer_get (buffer, GEGL_RECTANGLE (rect->x - off_x, rect->y - off_y, rect->width,
                                           rect->height),
                   1.0, babl_format (format), image->pixels, GEGL_AUTO_ROWSTRIDE,
                   GEGL_ABYSS_NONE);
  g_object_unref (buffer);
  return image;
}

moire_image *
moire_host_read_drawable (MoireHost        *host,
                          const MoireRect  *rect,
                          GError          **error)
{
  return read_buffer (host->drawable, rect, "R'G'B'A u8", 4, error);
}

moire_image *
moire_host_read_selection (MoireHost        *host,
                           const MoireRect  *rect,
                           GError          **error)
{
  /* Linear "Y u8": selection values are coverage, not colours. */
  return read_buffer (gimp_image_get_selection (host->image), rect, "Y u8", 1, error);
}

static gint32
new_layer (MoireHost       *host,
           const char      *name,
           const MoireRect *rect,
           GimpLayerMode    mode)
{
  GimpImageType type = gimp_image_base_type (host->image) == GIMP_GRAY ? GIMP_GRAYA_IMAGE
                                                                       : GIMP_RGBA_IMAGE;

  return gimp_layer_new (host->image, name, rect->width, rect->height, type, 100.0, mode);
}

static void
write_layer (gint32             layer,
             const moire_image *image)
{
  GeglBuffer *buffer = gimp_drawable_get_buffer (layer);

  /* GEGL converts to the layer's own format (gray, linear or high-bit-depth images). */
  gegl_buffer_set (buffer, GEGL_RECTANGLE (0, 0, image->width, image->height), 0,
                   babl_format ("R'G'B'A u8"), image->pixels, GEGL_AUTO_ROWSTRIDE);
  gegl_buffer_flush (buffer);
  g_object_unref (buffer);
  gimp_drawable_update (layer, 0, 0, image->width, image->height);
}

/* GIMP makes layer names unique by counting up a trailing "#N", which would turn a second
 * "Moiré: goldfish #7" into "… #8" and lie about the seed: count in "(2)", "(3)" instead. */
static char *
unique_layer_name (gint32      image,
                   const char *name)
{
  char *candidate = g_strdup (name);

  for (int n = 2; gimp_image_get_layer_by_name (image, candidate) >= 0; n++)
    {
      g_free (candidate);
      candidate = g_strdup_printf ("%s (%d)", name, n);
    }
  return candidate;
}

static gint32
active_or_drawable (MoireHost *host)
{
  gint32 active = gimp_image_get_active_layer (host->image);

  return active >= 0 ? active : host->drawable;
}

gboolean
moire_host_preview_show (MoireHost        *host,
                         const MoireRect  *rect,
                         const moire_image *image,
                         gboolean          mask_with_selection,
                         GError          **error)
{
  g_return_val_if_fail (image->width == rect->width && image->height == rect->height, FALSE);

  if (!gimp_image_is_valid (host->image))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "the image was closed");
      return FALSE;
    }
  if (host->preview_layer >= 0 &&
      (!gimp_item_is_valid (host->preview_layer) ||
       memcmp (rect, &host->preview_rect, sizeof *rect) != 0 ||
       mask_with_selection != host->preview_masked))
    moire_host_preview_remove (host);

  if (host->preview_layer < 0)
    {
      gint32 active = active_or_drawable (host);
      gint32 layer;

      /* Frozen undo: the temporary layer never shows up in the undo history. */
      gimp_image_undo_freeze (host->image);
      layer = new_layer (host, "Moiré preview", rect, GIMP_LAYER_MODE_NORMAL);
      /* On top of the whole stack (parent 0, position 0), where it is the results' place
       * too: just above the active layer it could be hidden under the layers above it. */
      if (layer >= 0 && gimp_image_insert_layer (host->image, layer, 0, 0))
        {
          gimp_layer_set_offsets (layer, rect->x, rect->y);
          /* Inpainting changes only the selection: the preview shows only that, like the
           * applied layer with its selection mask. */
          if (mask_with_selection)
            {
              gint32 mask = gimp_layer_create_mask (layer, GIMP_ADD_MASK_SELECTION);

              if (mask >= 0)
                gimp_layer_add_mask (layer, mask);
            }
          if (active >= 0 && gimp_item_is_valid (active))
            gimp_image_set_active_layer (host->image, active);
        }
      else
        layer = -1;
      gimp_image_undo_thaw (host->image);
      if (layer < 0)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "could not add the preview layer");
          return FALSE;
        }
      host->preview_layer = layer;
      host->preview_rect = *rect;
      host->preview_masked = mask_with_selection;
    }
  write_layer (host->preview_layer, image);
  gimp_displays_flush ();
  return TRUE;
}

moire_image *
moire_host_preview_read (MoireHost *host)
{
  if (host->preview_layer < 0 || !gimp_item_is_valid (host->preview_layer))
    return NULL;
  return read_buffer (host->preview_layer, &host->preview_rect, "R'G'B'A u8", 4, NULL);
}

int
moire_host_preview_stack_position (MoireHost *host)
{
  if (host->preview_layer < 0 || !gimp_item_is_valid (host->preview_layer))
    return -1;
  /* 0 = the top of the image's stack (a layer inside a group counts its group's place) */
  return gimp_item_get_parent (host->preview_layer) > 0
           ? gimp_image_get_item_position (host->image, gimp_item_get_parent (host->preview_layer))
           : gimp_image_get_item_position (host->image, host->preview_layer);
}

gboolean
moire_host_preview_has_mask (MoireHost *host)
{
  return host->preview_layer >= 0 && gimp_item_is_valid (host->preview_layer) &&
         gimp_layer_get_mask (host->preview_layer) >= 0;
}

GBytes *
moire_host_get_image_data (MoireHost  *host,
                           const char *name)
{
  GimpParasite *parasite = gimp_image_get_parasite (host->image, name);
  GBytes *data;

  if (parasite == NULL)
    return NULL;
  data = g_bytes_new (gimp_parasite_data (parasite), gimp_parasite_data_size (parasite));
  gimp_parasite_free (parasite);
  return data;
}

void
moire_host_set_image_data (MoireHost  *host,
                           const char *name,
                           GBytes     *data)
{
  GimpParasite *parasite;
  gsize size = 0;
  gconstpointer bytes;

  if (!gimp_image_is_valid (host->image))
    return;
  if (data == NULL || g_bytes_get_size (data) == 0)
    {
      gimp_image_detach_parasite (host->image, name);
      return;
    }
  bytes = g_bytes_get_data (data, &size);
  /* Persistent (saved in XCF), not undoable: a history is not an edit of the picture. */
  parasite = gimp_parasite_new (name, GIMP_PARASITE_PERSISTENT, (guint32) size, bytes);
  gimp_image_attach_parasite (host->image, parasite);
  gimp_parasite_free (parasite);
}

void
moire_host_preview_remove (MoireHost *host)
{
  if (host->preview_layer < 0)
    return;
  if (gimp_item_is_valid (host->preview_layer))
    {
      gimp_image_undo_freeze (host->image);
      gimp_image_remove_layer (host->image, host->preview_layer);
      gimp_image_undo_thaw (host->image);
      gimp_displays_flush ();
    }
  host->preview_layer = -1;
}

gboolean
moire_host_insert_results (MoireHost             *host,
                           const MoireRect       *rect,
                           const MoireHostResult *results,
                           int                    count,
                           gboolean               mask_with_selection,
                           GArray                *layer_ids,
                           GError               **error)
{
  g_autofree gint32 *layers = g_new0 (gint32, MAX (count, 1));
  GimpLayerMode mode;
  gboolean ok = TRUE;

  if (!gimp_image_is_valid (host->image))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "the image was closed");
      return FALSE;
    }
  mode = gimp_image_get_default_new_layer_mode (host->image);
  /* One user action, one undo step: every layer of this run in one group. Image 0 ends on top:
   * each insert goes above the previous one. */
  gimp_image_undo_group_start (host->image);
  for (int i = count - 1; i >= 0 && ok; i--)
    {
      g_autofree char *name = unique_layer_name (host->image, results[i].name);
      gint32 layer = new_layer (host, name, rect, mode);

      /* On top of the stack (see the preview): each insert goes above the previous one. */
      if (layer < 0 || !gimp_image_insert_layer (host->image, layer, 0, 0))
        {
          ok = FALSE;
          break;
        }
      gimp_layer_set_offsets (layer, rect->x, rect->y);
      write_layer (layer, results[i].image);
      if (results[i].parameters != NULL)
        {
          GimpParasite *parasite =
            gimp_parasite_new (MOIRE_HOST_PARASITE_PARAMETERS,
                               GIMP_PARASITE_PERSISTENT | GIMP_PARASITE_UNDOABLE,
                               strlen (results[i].parameters) + 1, results[i].parameters);

          gimp_item_attach_parasite (layer, parasite);
          gimp_parasite_free (parasite);
        }
      if (results[i].settings_json != NULL)
        {
          GimpParasite *parasite =
            gimp_parasite_new (MOIRE_HOST_PARASITE_SETTINGS,
                               GIMP_PARASITE_PERSISTENT | GIMP_PARASITE_UNDOABLE,
                               strlen (results[i].settings_json) + 1, results[i].settings_json);

          gimp_item_attach_parasite (layer, parasite);
          gimp_parasite_free (parasite);
        }
      if (mask_with_selection)
        {
          gint32 mask = gimp_layer_create_mask (layer, GIMP_ADD_MASK_SELECTION);

          if (mask >= 0)
            gimp_layer_add_mask (layer, mask);
        }
      layers[i] = layer;
    }
  if (ok)
    gimp_image_set_active_layer (host->image, layers[0]);
  gimp_image_undo_group_end (host->image);
  if (!ok)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "could not add the result layers");
      return FALSE;
    }
  if (layer_ids != NULL)
    g_array_append_vals (layer_ids, layers, count);
  return TRUE;
}

void
moire_host_progress_start (MoireHost  *host,
                           const char *text)
{
  gimp_progress_init (text);
  host->progress = TRUE;
}

void
moire_host_progress_update (MoireHost  *host,
                            double      fraction,
                            const char *text)
{
  if (!host->progress)
    return;
  if (text != NULL)
    gimp_progress_set_text (text);
  gimp_progress_update (fraction);
}

void
moire_host_progress_end (MoireHost *host)
{
  if (!host->progress)
    return;
  gimp_progress_end ();
  host->progress = FALSE;
}

gboolean
moire_host_load_last_values (MoireHost *host,
                             gpointer   data,
                             gsize      size)
{
  if (gimp_get_data_size (MOIRE_PLUGIN_PROC) != (gint) size)
    return FALSE;
  return gimp_get_data (MOIRE_PLUGIN_PROC, data) &&
         ((MoirePluginValues *) data)->version == MOIRE_PLUGIN_VALUES_VERSION;
}

void
moire_host_save_last_values (MoireHost     *host,
                             gconstpointer  data,
                             gsize          size)
{
  gimp_set_data (MOIRE_PLUGIN_PROC, data, size);
}
