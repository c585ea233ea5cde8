/* moire-history-item.c — a generated image and its settings. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-gui-util.h"
#include "moire-history-item.h"

struct _MoireHistoryItem
{
  GObject           parent_instance;

  MoireGenSettings *settings;
  char             *parameters;
  char             *settings_json;
  GBytes           *pixels;
  int               width, height, channels;
  GDateTime        *created;
  GdkTexture       *texture;
  /* Expert routing (optional): the rendered map at the image's size (RGB), its legend, and
   * the blend over the image, made on first use. */
  GBytes           *routing;
  char             *routing_legend;
  GdkTexture       *routing_texture;
  int               variation;
};

G_DEFINE_FINAL_TYPE (MoireHistoryItem, moire_history_item, G_TYPE_OBJECT)

static void
moire_history_item_finalize (GObject *object)
{
  MoireHistoryItem *self = MOIRE_HISTORY_ITEM (object);

  g_clear_object (&self->settings);
  g_clear_object (&self->texture);
  g_clear_object (&self->routing_texture);
  g_clear_pointer (&self->routing, g_bytes_unref);
  g_free (self->routing_legend);
  g_clear_pointer (&self->pixels, g_bytes_unref);
  g_clear_pointer (&self->created, g_date_time_unref);
  g_free (self->parameters);
  g_free (self->settings_json);
  G_OBJECT_CLASS (moire_history_item_parent_class)->finalize (object);
}

static void
moire_history_item_class_init (MoireHistoryItemClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = moire_history_item_finalize;
}

static void
moire_history_item_init (MoireHistoryItem *self)
{
}

MoireHistoryItem *
moire_history_item_new (MoireGenSettings  *settings,
                        const moire_image *image,
                        const char        *parameters,
                        const char        *settings_json)
{
  MoireHistoryItem *self;

  g_return_val_if_fail (MOIRE_IS_GEN_SETTINGS (settings), NULL);
  g_return_val_if_fail (image != NULL, NULL);

  self = g_object_new (MOIRE_TYPE_HISTORY_ITEM, NULL);
  self->settings = moire_gen_settings_copy (settings);
  moire_gen_settings_set_seed_mode (self->settings, MOIRE_SEED_MODE_FIXED);
  self->parameters = g_strdup (parameters != NULL ? parameters : "");
  self->settings_json = g_strdup (settings_json);
  self->pixels = moire_gui_image_to_bytes (image);
  self->width = image->width;
  self->height = image->height;
  self->channels = image->channels;
  self->created = g_date_time_new_now_local ();
  return self;
}

MoireGenSettings *
moire_history_item_get_settings (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return self->settings;
}

const char *
moire_history_item_get_parameters (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return self->parameters;
}

const char *
moire_history_item_get_settings_json (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return self->settings_json;
}

guint64
moire_history_item_get_seed (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), 0);
  return moire_gen_settings_get_seed (self->settings);
}

int
moire_history_item_get_width (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), 0);
  return self->width;
}

int
moire_history_item_get_height (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), 0);
  return self->height;
}

GDateTime *
moire_history_item_get_created (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return self->created;
}

moire_image *
moire_history_item_dup_image (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return moire_gui_image_new_from_bytes (self->pixels, self->width, self->height, self->channels);
}

GdkTexture *
moire_history_item_get_texture (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  if (self->texture == NULL)
    {
      g_autoptr(moire_image) image = moire_history_item_dup_image (self);

      if (image != NULL)
        self->texture = moire_gui_texture_new_for_image (image, 256);
    }
  return self->texture;
}

void
moire_history_item_set_routing (MoireHistoryItem  *self,
                                const moire_image *map,
                                const char        *legend)
{
  g_return_if_fail (MOIRE_IS_HISTORY_ITEM (self));
  g_return_if_fail (map == NULL || (map->width == self->width && map->height == self->height &&
                                    map->channels == 3));

  g_clear_object (&self->routing_texture);
  g_clear_pointer (&self->routing, g_bytes_unref);
  g_clear_pointer (&self->routing_legend, g_free);
  if (map == NULL)
    return;
  self->routing = moire_gui_image_to_bytes (map);
  self->routing_legend = g_strdup (legend);
}

gboolean
moire_history_item_has_routing (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), FALSE);
  return self->routing != NULL;
}

const char *
moire_history_item_get_routing_legend (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return self->routing_legend;
}

moire_image *
moire_history_item_dup_routing_overlay (MoireHistoryItem *self)
{
  g_autoptr(moire_image) image = NULL;
  moire_image *out;
  const guint8 *map;
  /* The picture in grey under the map: the map's colours (viridis counts, expert colours)
   * then read true, and the picture's shapes still show through. */
  const int alpha = 153; /* 60 % of 255 */

  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  if (self->routing == NULL)
    return NULL;
  image = moire_history_item_dup_image (self);
  out = image != NULL ? moire_image_new (self->width, self->height, 3) : NULL;
  if (out == NULL)
    return NULL;
  map = g_bytes_get_data (self->routing, NULL);
  for (gsize i = 0; i < (gsize) self->width * self->height; i++)
    {
      const guint8 *src = image->pixels + i * image->channels;

      int grey = image->channels >= 3 ? (src[0] * 54 + src[1] * 183 + src[2] * 19) >> 8 : src[0];

      for (int c = 0; c < 3; c++)
        out->pixels[i * 3 + c] = (guint8) ((grey * (255 - alpha) + map[i * 3 + c] * alpha + 127) / 255);
    }
  return out;
}

GdkTexture *
moire_history_item_get_routing_texture (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  if (self->routing_texture == NULL && self->routing != NULL)
    {
      g_autoptr(moire_image) blended = moire_history_item_dup_routing_overlay (self);

      if (blended != NULL)
        self->routing_texture = moire_gui_texture_new_for_image (blended, 256);
    }
  return self->routing_texture;
}

int
moire_history_item_get_variation (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), 0);
  return self->variation;
}

void
moire_history_item_set_variation (MoireHistoryItem *self,
                                  int               variation)
{
  g_return_if_fail (MOIRE_IS_HISTORY_ITEM (self));
  self->variation = MAX (variation, 0);
}

gboolean
moire_history_item_save_png (MoireHistoryItem  *self,
                             const char        *path,
                             GError           **error)
{
  g_autoptr(moire_image) image = NULL;
  moire_status status;

  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  image = moire_history_item_dup_image (self);
  if (image == NULL)
    {
      g_propagate_error (error, moire_gui_error_from_status (MOIRE_ERROR_OUT_OF_MEMORY, NULL));
      return FALSE;
    }
  status = moire_png_save (path, image, self->parameters, self->settings_json);
  if (status != MOIRE_OK)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, NULL));
      return FALSE;
    }
  return TRUE;
}

char *
moire_history_item_suggest_filename (MoireHistoryItem *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY_ITEM (self), NULL);
  return g_strdup_printf ("moire-%" G_GUINT64_FORMAT ".png", moire_history_item_get_seed (self));
}
