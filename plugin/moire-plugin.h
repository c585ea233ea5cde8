/* moire-plugin.h — the host-independent part of the Moiré image-editor plug-in: its values
 * (PDB parameters and "last values"), the model look-up, the target rectangle, the init image
 * and mask for img2img / inpainting, scaling results to the target, and the direct
 * (non-interactive) engine run. The host is reached only through host.h. */
#pragma once

#include <glib.h>

#include "host.h"
#include "moire.h"

G_BEGIN_DECLS

#define MOIRE_PLUGIN_PROC "plug-in-moire-generate"

typedef enum
{
  MOIRE_PLUGIN_MODE_GENERATE = 0, /* a new image over the image or the selection bounds     */
  MOIRE_PLUGIN_MODE_IMG2IMG = 1,  /* start from the drawable inside that rectangle          */
  MOIRE_PLUGIN_MODE_INPAINT = 2,  /* regenerate inside the (feathered) selection only       */
  MOIRE_PLUGIN_MODE_COUNT_
} MoirePluginMode;

#define MOIRE_PLUGIN_SEED_RANDOM (-1)

/* How a result is scaled to the target rectangle. The preview layer and the applied layers
 * use the same function with the same choice, so what is previewed is what Apply inserts. */
typedef enum
{
  MOIRE_PLUGIN_SCALING_SMOOTH = 0,    /* bilinear up, area average down: photos, paintings */
  MOIRE_PLUGIN_SCALING_PIXEL_ART = 1, /* nearest neighbour: every model pixel a crisp block */
  MOIRE_PLUGIN_SCALING_COUNT_
} MoirePluginScaling;

/* Plain data with fixed-size strings: the host stores it byte for byte as "last values". */
typedef struct
{
  guint32 version;                /* MOIRE_PLUGIN_VALUES_VERSION                          */
  char    prompt[1024];
  char    negative_prompt[1024];
  char    model_path[4096];       /* "" = $MOIRE_MODEL, then the installed default models */
  char    sampler[64];            /* any spelling the engine accepts; "" = model default  */
  gint32  steps;                  /* 0 = model default                                    */
  gdouble cfg_scale;              /* <= 0 = model default                                 */
  gint64  seed;                   /* < 0 = a new random seed each run                     */
  gint32  width, height;          /* generation size; 0 = the model's trained size        */
  gint32  count;                  /* images (layers) per run                              */
  gint32  mode;                   /* MoirePluginMode                                      */
  gdouble strength;               /* img2img / inpaint: 0..1                              */
  gint32  scaling;                /* MoirePluginScaling                                   */
} MoirePluginValues;

#define MOIRE_PLUGIN_VALUES_VERSION 2u

void          moire_plugin_values_init          (MoirePluginValues      *values);
/* Copies `text` into a fixed-size field, truncating at a UTF-8 character boundary. */
void          moire_plugin_copy_string          (char                   *dest,
                                                 gsize                   size,
                                                 const char             *text);

/* The model file to use: `requested` when not empty, else $MOIRE_MODEL (an error when that
 * file is missing), else the first *.safetensors in $MOIRE_DATA_DIR/models, the installed
 * share/moire/models or the source tree's data/models; else an error saying how to fix it. */
char         *moire_plugin_resolve_model        (const char             *requested,
                                                 GError                **error);

/* Context added around the selection for inpainting: a quarter of the selection's longer
 * side, at least 16 pixels, so the model sees what surrounds the hole. */
int           moire_plugin_inpaint_context      (const MoireRect        *selection);

/* Where the result goes, in image coordinates: the selection bounds (grown by the inpaint
 * context and clipped to the image for MOIRE_PLUGIN_MODE_INPAINT) or the whole image.
 * Inpainting without a selection is an error. */
gboolean      moire_plugin_target_rect          (int                     image_width,
                                                 int                     image_height,
                                                 const MoireRect        *selection,
                                                 MoirePluginMode         mode,
                                                 MoireRect              *target,
                                                 GError                **error);

/* Reads the target, init image and mask for `mode` from the host (init and mask NULL for
 * MOIRE_PLUGIN_MODE_GENERATE; mask NULL unless inpainting). */
gboolean      moire_plugin_read_inputs          (MoireHost              *host,
                                                 MoirePluginMode         mode,
                                                 MoireRect              *target,
                                                 moire_image           **init_image,
                                                 moire_image           **mask,
                                                 GError                **error);

/* `src` (1, 3 or 4 channels) as RGBA of width × height: bilinear when enlarging, an area
 * average when reducing; an exact copy when the size is the same. */
moire_image  *moire_plugin_scale_rgba           (const moire_image      *src,
                                                 int                     width,
                                                 int                     height);
/* `src` as RGBA of width × height with `scaling`: SMOOTH is moire_plugin_scale_rgba;
 * PIXEL_ART takes for each output pixel the source pixel its centre falls in. */
moire_image  *moire_plugin_scale_image          (const moire_image      *src,
                                                 int                     width,
                                                 int                     height,
                                                 MoirePluginScaling      scaling);

/* "Moiré: golden retriever #7" (a long prompt is shortened with "…"). */
char         *moire_plugin_layer_name           (const char             *prompt,
                                                 guint64                 seed);

/* Engine parameters from `values` (strings borrowed); the seed is chosen here when random.
 * init_image / mask are left NULL. */
gboolean      moire_plugin_values_to_params     (const MoirePluginValues *values,
                                                 moire_generate_params  *params,
                                                 GError                **error);

/* The non-interactive run: the engine in this process with the host's progress bar, then
 * the results as layers in one undo group. Nothing touches the image before the engine has
 * finished, so the host killing the plug-in (its progress cancel) leaves the image as it was.
 * `values->seed` becomes the seed used. New layer ids go to `layer_ids` (gint32). */
gboolean      moire_plugin_run_direct           (MoireHost              *host,
                                                 MoirePluginValues      *values,
                                                 GArray                 *layer_ids,
                                                 GError                **error);

/* Turns engine results into layers: scales each image to `target`, names it and inserts it
 * with its texts (one undo group). */
gboolean      moire_plugin_insert_images        (MoireHost              *host,
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
                                                 GError                **error);

#ifdef MOIRE_PLUGIN_HAVE_GTK
/* The interactive run: the GTK 4 generation panel in this process, the live preview on the
 * canvas, Apply / Cancel. TRUE when results were applied; FALSE with `error` NULL when the
 * user cancelled. `values` is updated with the settings of the applied run. */
gboolean      moire_plugin_dialog_run           (MoireHost              *host,
                                                 MoirePluginValues      *values,
                                                 GArray                 *layer_ids,
                                                 GError                **error);
#endif

G_END_DECLS
