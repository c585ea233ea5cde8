/* moire-history-item.h — one generated image with everything needed to make it again: the
 * settings (seed fixed to this image's seed), the A1111 "parameters" text and the exact JSON
 * settings the engine wrote, and the pixels. */
#pragma once

#include <gtk/gtk.h>

#include "moire.h"
#include "moire-gen-settings.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_HISTORY_ITEM (moire_history_item_get_type ())

G_DECLARE_FINAL_TYPE (MoireHistoryItem, moire_history_item, MOIRE, HISTORY_ITEM, GObject)

/* `settings` is copied (its seed mode becomes "fixed"); `image` is copied. */
MoireHistoryItem *moire_history_item_new               (MoireGenSettings  *settings,
                                                        const moire_image *image,
                                                        const char        *parameters,
                                                        const char        *settings_json);

/* The settings that re-make this image. Owned by the item; do not change them. */
MoireGenSettings *moire_history_item_get_settings      (MoireHistoryItem  *self);
const char       *moire_history_item_get_parameters    (MoireHistoryItem  *self);
const char       *moire_history_item_get_settings_json (MoireHistoryItem  *self);
guint64           moire_history_item_get_seed          (MoireHistoryItem  *self);
int               moire_history_item_get_width         (MoireHistoryItem  *self);
int               moire_history_item_get_height        (MoireHistoryItem  *self);
GDateTime        *moire_history_item_get_created       (MoireHistoryItem  *self);
/* A copy of the pixels (free with moire_image_free). */
moire_image      *moire_history_item_dup_image         (MoireHistoryItem  *self);
/* The image as a texture, made on first use and cached (main thread). */
GdkTexture       *moire_history_item_get_texture       (MoireHistoryItem  *self);
/* Expert routing (moire_routing_map_render at the image's size, RGB; copied) and a legend
 * ("Experts per token: 0 (violet) … 4 (yellow)"); NULL clears it. Set by the job when the
 * routing overlay was on. */
void              moire_history_item_set_routing       (MoireHistoryItem  *self,
                                                        const moire_image *map,
                                                        const char        *legend);
gboolean          moire_history_item_has_routing       (MoireHistoryItem  *self);
const char       *moire_history_item_get_routing_legend(MoireHistoryItem  *self);
/* The map blended over the image (RGB, free with moire_image_free), NULL without a map. */
moire_image      *moire_history_item_dup_routing_overlay (MoireHistoryItem *self);
/* The same as a texture, made on first use and cached (main thread); NULL without a map. */
GdkTexture       *moire_history_item_get_routing_texture (MoireHistoryItem *self);
/* DMCMC stream: the round (1-based) this image came from; 0 = not from a stream. */
int               moire_history_item_get_variation     (MoireHistoryItem  *self);
void              moire_history_item_set_variation     (MoireHistoryItem  *self,
                                                        int                variation);
/* A PNG with the "parameters" and "moire" texts (moire_png_save). */
gboolean          moire_history_item_save_png          (MoireHistoryItem  *self,
                                                        const char        *path,
                                                        GError           **error);
/* "moire-<seed>.png" */
char             *moire_history_item_suggest_filename  (MoireHistoryItem  *self);

G_END_DECLS
