/* moire-generation-panel-history.c — the panel's history strip: thumbnails, showing an item, and
 * what an item offers (reuse its settings, its seed, save). */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-generation-panel-private.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

/* --- history ------------------------------------------------------------------------------- */

/* The strip highlights the item on show; the newest (position 0, leftmost) is scrolled into
 * view, so a new result never lands out of sight. */
static void
highlight_in_history (MoireGenerationPanel *self,
                      MoireHistoryItem     *item)
{
  GtkSelectionModel *selection = gtk_list_view_get_model (self->history_view);
  GListModel *items = G_LIST_MODEL (self->history);
  guint n = g_list_model_get_n_items (items);

  for (guint i = 0; i < n; i++)
    {
      g_autoptr(MoireHistoryItem) candidate = g_list_model_get_item (items, i);

      if (candidate != item)
        continue;
      gtk_selection_model_select_item (selection, i, TRUE);
      if (i == 0)
        {
          GtkWidget *scroller = gtk_widget_get_ancestor (GTK_WIDGET (self->history_view),
                                                         GTK_TYPE_SCROLLED_WINDOW);

          if (scroller != NULL)
            gtk_adjustment_set_value (gtk_scrolled_window_get_hadjustment (GTK_SCROLLED_WINDOW (scroller)), 0);
        }
      return;
    }
  gtk_selection_model_unselect_all (selection);
}

void
panel_show_item (MoireGenerationPanel *self,
                 MoireHistoryItem     *item)
{
  g_autofree char *badge = NULL;
  g_autofree char *seed = NULL;
  gboolean routing = self->show_routing && moire_history_item_has_routing (item);

  g_set_object (&self->current_item, item);
  /* The routing map blended over the image: where the experts worked is read on the picture
   * itself, with no back and forth between two images. */
  gtk_picture_set_paintable (self->preview_picture,
                             GDK_PAINTABLE (routing ? moire_history_item_get_routing_texture (item)
                                                    : moire_history_item_get_texture (item)));
  gtk_stack_set_visible_child_name (self->preview_stack, "image");
  if (!self->show_routing)
    gtk_label_set_text (self->routing_legend, "");
  else if (routing)
    gtk_label_set_text (self->routing_legend, moire_history_item_get_routing_legend (item));
  else if (moire_history_item_get_variation (item) > 0)
    gtk_label_set_text (self->routing_legend, _("Streams record no routing map"));
  else
    gtk_label_set_text (self->routing_legend, _("No routing map for this image: generate it with the overlay on"));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->routing_legend),
                               gtk_label_get_text (self->routing_legend));
  seed = g_strdup_printf ("%" G_GUINT64_FORMAT, moire_history_item_get_seed (item));
  if (moire_history_item_get_variation (item) > 0)
    /* Translators: badge on an image of a DMCMC stream, "Variation 3 · seed 1234 · 64×64" */
    badge = g_strdup_printf (_("Variation %d · seed %s · %d×%d"), moire_history_item_get_variation (item),
                             seed, moire_history_item_get_width (item), moire_history_item_get_height (item));
  else
    /* Translators: badge on a finished image, "Seed 1234 · 64×64" */
    badge = g_strdup_printf (_("Seed %s · %d×%d"), seed,
                             moire_history_item_get_width (item), moire_history_item_get_height (item));
  gtk_label_set_text (self->preview_badge, badge);
  gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), TRUE);
  gtk_label_set_text (self->result_label, moire_history_item_get_parameters (item));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->result_label), moire_history_item_get_parameters (item));
  highlight_in_history (self, item);
  panel_update_actions (self);
}

MoireHistoryItem *
moire_generation_panel_get_current_item (MoireGenerationPanel *self)
{
  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (self), NULL);
  return self->current_item;
}

void
moire_generation_panel_restore_item (MoireGenerationPanel *self,
                                     MoireHistoryItem     *item)
{
  g_autoptr(MoireGenSettings) restored = NULL;

  g_return_if_fail (MOIRE_IS_GENERATION_PANEL (self));
  g_return_if_fail (MOIRE_IS_HISTORY_ITEM (item));

  restored = moire_gen_settings_copy (moire_history_item_get_settings (item));
  /* The batch count is how many to make next, not a property of this image. */
  moire_gen_settings_set_batch_count (restored, moire_gen_settings_get_batch_count (self->settings));
  moire_gen_settings_assign (self->settings, restored);
  panel_show_item (self, item);
  /* "Cancelled" or "Done in 2 s" described the last run, not this older image. */
  if (self->job == NULL)
    {
      gtk_label_set_text (self->progress_label, "");
      gtk_progress_bar_set_fraction (self->progress_bar, 0);
    }
}

void
panel_on_history_activate (GtkListView          *view,
                           guint                 position,
                           MoireGenerationPanel *self)
{
  g_autoptr(MoireHistoryItem) item = g_list_model_get_item (G_LIST_MODEL (self->history), position);

  if (item != NULL)
    moire_generation_panel_restore_item (self, item);
}

void
panel_on_history_changed (MoireGenerationPanel *self)
{
  if (g_list_model_get_n_items (G_LIST_MODEL (self->history)) == 0 && self->current_item != NULL)
    {
      g_clear_object (&self->current_item);
      gtk_picture_set_paintable (self->preview_picture, NULL);
      gtk_stack_set_visible_child_name (self->preview_stack, "empty");
      gtk_widget_set_visible (GTK_WIDGET (self->preview_badge), FALSE);
      gtk_label_set_text (self->result_label, "");
    }
  panel_update_actions (self);
}

void
panel_setup_history_row (GtkSignalListItemFactory *factory,
                         GtkListItem              *list_item,
                         gpointer                  user_data)
{
  GtkWidget *picture = gtk_picture_new ();

  gtk_picture_set_can_shrink (GTK_PICTURE (picture), TRUE);
  gtk_picture_set_content_fit (GTK_PICTURE (picture), GTK_CONTENT_FIT_COVER);
  gtk_widget_set_size_request (picture, THUMBNAIL_SIZE, THUMBNAIL_SIZE);
  gtk_widget_add_css_class (picture, "moire-thumbnail");
  gtk_widget_set_overflow (picture, GTK_OVERFLOW_HIDDEN);
  gtk_list_item_set_child (list_item, picture);
}

void
panel_bind_history_row (GtkSignalListItemFactory *factory,
                        GtkListItem              *list_item,
                        gpointer                  user_data)
{
  MoireHistoryItem *item = gtk_list_item_get_item (list_item);
  GtkWidget *picture = gtk_list_item_get_child (list_item);

  gtk_picture_set_paintable (GTK_PICTURE (picture), GDK_PAINTABLE (moire_history_item_get_texture (item)));
  gtk_widget_set_tooltip_text (picture, moire_history_item_get_parameters (item));
}
