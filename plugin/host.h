/* host.h — what the Moiré plug-in needs from its host application, and nothing more.
 *
 * The plug-in's logic (moire-plugin.c: values, model look-up, geometry, the engine run; and
 * moire-plugin-dialog.c: the GTK 4 dialog) calls only these functions. One adapter file
 * implements them for one host API and owns the entry point: host-gimp2.c for GIMP 2.10
 * (libgimp-2.0 + GEGL; never libgimpui, whose GTK 2 cannot share a process with GTK 4).
 * A GIMP 3 port is one more file, host-gimp3.c, implementing the same list.
 *
 * Rules every adapter keeps:
 *  - All calls come from the plug-in's main thread (the host's wire is single-threaded).
 *  - Pixels cross this interface as moire_image, 8-bit non-linear (sRGB) RGBA or Y, in the
 *    host image's coordinates.
 *  - The image is changed only by moire_host_insert_results() (one undo group, after the
 *    generation finished) and by the preview layer, which never leaves undo steps behind.
 */
#pragma once

#include <glib.h>

#include "moire.h"

G_BEGIN_DECLS

typedef struct
{
  int x, y, width, height;
} MoireRect;

/* The adapter's state: the image and drawable the plug-in was started on. */
typedef struct MoireHost MoireHost;

/* One finished image, already scaled to the target rectangle. */
typedef struct
{
  const moire_image *image;          /* RGBA, target width × height                      */
  const char        *name;           /* layer name: "Moiré: <prompt> #<seed>"            */
  const char        *parameters;     /* A1111 "parameters" text (parasite)               */
  const char        *settings_json;  /* the exact settings as JSON (parasite)            */
} MoireHostResult;

/* Parasite names: the A1111 text and the JSON settings, kept with each layer in XCF. */
#define MOIRE_HOST_PARASITE_PARAMETERS "moire-parameters"
#define MOIRE_HOST_PARASITE_SETTINGS   "moire-settings"

void          moire_host_get_image_size       (MoireHost             *host,
                                               int                   *width,
                                               int                   *height);
/* The selection's bounding box in image coordinates; FALSE when nothing is selected. */
gboolean      moire_host_get_selection_bounds (MoireHost             *host,
                                               MoireRect             *bounds);
/* The drawable the plug-in runs on, inside `rect` (image coordinates): RGBA, transparent
 * where the drawable does not reach. NULL with `error` set on failure. */
moire_image  *moire_host_read_drawable        (MoireHost             *host,
                                               const MoireRect       *rect,
                                               GError               **error);
/* The selection mask inside `rect`: 1 channel, 0..255 with the feathering kept. */
moire_image  *moire_host_read_selection       (MoireHost             *host,
                                               const MoireRect       *rect,
                                               GError               **error);

/* Shows `image` (RGBA, rect-sized) in a temporary preview layer on top of the layer stack,
 * made on the first call (and again when `rect` or `mask_with_selection` changes);
 * `mask_with_selection` masks it with the selection, as the inpainted result will be.
 * Adding, updating and removing it leaves no undo step. Updates the displays. */
gboolean      moire_host_preview_show         (MoireHost             *host,
                                               const MoireRect       *rect,
                                               const moire_image     *image,
                                               gboolean               mask_with_selection,
                                               GError               **error);
/* The preview layer's pixels (RGBA, as written) and its place in the layer stack (0 = top,
 * -1 = no preview), for tests. */
moire_image  *moire_host_preview_read         (MoireHost             *host);
int           moire_host_preview_stack_position (MoireHost           *host);
gboolean      moire_host_preview_has_mask     (MoireHost             *host);
void          moire_host_preview_remove       (MoireHost             *host);

/* A persistent parasite of the image (saved in XCF): the dialog's history. NULL when the
 * image has none. Setting it leaves no undo step. */
GBytes       *moire_host_get_image_data       (MoireHost             *host,
                                               const char            *name);
void          moire_host_set_image_data       (MoireHost             *host,
                                               const char            *name,
                                               GBytes                *data);

/* Adds one layer per result at `rect` on top of the layer stack (image 0 uppermost), with
 * its parasites, all inside one
 * undo group. `mask_with_selection`: each layer gets the selection as its layer mask
 * (inpainting). The new layers' ids go to `layer_ids` (a GArray of gint32) when not NULL. */
gboolean      moire_host_insert_results       (MoireHost             *host,
                                               const MoireRect       *rect,
                                               const MoireHostResult *results,
                                               int                    count,
                                               gboolean               mask_with_selection,
                                               GArray                *layer_ids,
                                               GError               **error);

/* The host's progress bar. While it shows, the host may kill the plug-in (GIMP's cancel
 * button does): callers change the image only after moire_host_progress_end(). */
void          moire_host_progress_start       (MoireHost             *host,
                                               const char            *text);
void          moire_host_progress_update      (MoireHost             *host,
                                               double                 fraction,
                                               const char            *text);
void          moire_host_progress_end         (MoireHost             *host);

/* The values of the last successful run (a byte blob kept by the host for the session). */
gboolean      moire_host_load_last_values     (MoireHost             *host,
                                               gpointer               data,
                                               gsize                  size);
void          moire_host_save_last_values     (MoireHost             *host,
                                               gconstpointer          data,
                                               gsize                  size);

G_END_DECLS
