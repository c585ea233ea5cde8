/* moire-history.c — bounded, newest-first list of results. */
#define G_LOG_DOMAIN "moire-gui"

#include "moire-history.h"

struct _MoireHistory
{
  GObject    parent_instance;

  GPtrArray *items;      /* MoireHistoryItem, newest first */
  guint      max_items;
};

static void moire_history_list_model_init (GListModelInterface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE (MoireHistory, moire_history, G_TYPE_OBJECT,
                               G_IMPLEMENT_INTERFACE (G_TYPE_LIST_MODEL, moire_history_list_model_init))

enum {
  PROP_0,
  PROP_MAX_ITEMS,
  PROP_N_ITEMS,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

static GType
moire_history_get_item_type (GListModel *model)
{
  return MOIRE_TYPE_HISTORY_ITEM;
}

static guint
moire_history_get_n_items (GListModel *model)
{
  return MOIRE_HISTORY (model)->items->len;
}

static gpointer
moire_history_get_item (GListModel *model,
                        guint       position)
{
  MoireHistory *self = MOIRE_HISTORY (model);

  if (position >= self->items->len)
    return NULL;
  return g_object_ref (g_ptr_array_index (self->items, position));
}

static void
moire_history_list_model_init (GListModelInterface *iface)
{
  iface->get_item_type = moire_history_get_item_type;
  iface->get_n_items = moire_history_get_n_items;
  iface->get_item = moire_history_get_item;
}

static void
moire_history_finalize (GObject *object)
{
  g_ptr_array_unref (MOIRE_HISTORY (object)->items);
  G_OBJECT_CLASS (moire_history_parent_class)->finalize (object);
}

static void
moire_history_get_property (GObject    *object,
                            guint       prop_id,
                            GValue     *value,
                            GParamSpec *pspec)
{
  MoireHistory *self = MOIRE_HISTORY (object);

  switch (prop_id)
    {
    case PROP_MAX_ITEMS: g_value_set_uint (value, self->max_items); break;
    case PROP_N_ITEMS: g_value_set_uint (value, self->items->len); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_history_set_property (GObject      *object,
                            guint         prop_id,
                            const GValue *value,
                            GParamSpec   *pspec)
{
  switch (prop_id)
    {
    case PROP_MAX_ITEMS: moire_history_set_max_items (MOIRE_HISTORY (object), g_value_get_uint (value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
moire_history_class_init (MoireHistoryClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = moire_history_finalize;
  object_class->get_property = moire_history_get_property;
  object_class->set_property = moire_history_set_property;

  properties[PROP_MAX_ITEMS] =
    g_param_spec_uint ("max-items", NULL, NULL, 1, G_MAXUINT, 200,
                       G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_N_ITEMS] =
    g_param_spec_uint ("n-items", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
moire_history_init (MoireHistory *self)
{
  self->items = g_ptr_array_new_with_free_func (g_object_unref);
  self->max_items = 200;
}

MoireHistory *
moire_history_new (guint max_items)
{
  return g_object_new (MOIRE_TYPE_HISTORY, "max-items", MAX (max_items, 1u), NULL);
}

static void
trim (MoireHistory *self)
{
  guint len = self->items->len;

  if (len <= self->max_items)
    return;
  g_ptr_array_remove_range (self->items, self->max_items, len - self->max_items);
  g_list_model_items_changed (G_LIST_MODEL (self), self->max_items, len - self->max_items, 0);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_N_ITEMS]);
}

void
moire_history_prepend (MoireHistory     *self,
                       MoireHistoryItem *item)
{
  g_return_if_fail (MOIRE_IS_HISTORY (self));
  g_return_if_fail (MOIRE_IS_HISTORY_ITEM (item));

  g_ptr_array_insert (self->items, 0, g_object_ref (item));
  g_list_model_items_changed (G_LIST_MODEL (self), 0, 0, 1);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_N_ITEMS]);
  trim (self);
}

void
moire_history_remove (MoireHistory *self,
                      guint         position)
{
  g_return_if_fail (MOIRE_IS_HISTORY (self));
  g_return_if_fail (position < self->items->len);

  g_ptr_array_remove_index (self->items, position);
  g_list_model_items_changed (G_LIST_MODEL (self), position, 1, 0);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_N_ITEMS]);
}

void
moire_history_clear (MoireHistory *self)
{
  guint len;

  g_return_if_fail (MOIRE_IS_HISTORY (self));
  len = self->items->len;
  if (len == 0)
    return;
  g_ptr_array_set_size (self->items, 0);
  g_list_model_items_changed (G_LIST_MODEL (self), 0, len, 0);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_N_ITEMS]);
}

guint
moire_history_get_max_items (MoireHistory *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY (self), 0);
  return self->max_items;
}

void
moire_history_set_max_items (MoireHistory *self,
                             guint         max_items)
{
  g_return_if_fail (MOIRE_IS_HISTORY (self));
  max_items = MAX (max_items, 1u);
  if (self->max_items == max_items)
    return;
  self->max_items = max_items;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MAX_ITEMS]);
  trim (self);
}

MoireHistoryItem *
moire_history_peek_newest (MoireHistory *self)
{
  g_return_val_if_fail (MOIRE_IS_HISTORY (self), NULL);
  return self->items->len > 0 ? g_ptr_array_index (self->items, 0) : NULL;
}
