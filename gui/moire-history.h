/* moire-history.h — the results of a session, newest first, as a GListModel of
 * MoireHistoryItem (what the history strip shows). Bounded: the oldest items go first. */
#pragma once

#include <gio/gio.h>

#include "moire-history-item.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_HISTORY (moire_history_get_type ())

G_DECLARE_FINAL_TYPE (MoireHistory, moire_history, MOIRE, HISTORY, GObject)

MoireHistory     *moire_history_new           (guint             max_items);
/* Adds `item` at position 0, dropping the oldest items beyond max-items. */
void              moire_history_prepend       (MoireHistory     *self,
                                               MoireHistoryItem *item);
void              moire_history_remove        (MoireHistory     *self,
                                               guint             position);
void              moire_history_clear         (MoireHistory     *self);
guint             moire_history_get_max_items (MoireHistory     *self);
void              moire_history_set_max_items (MoireHistory     *self,
                                               guint             max_items);
/* The newest item or NULL (no reference added). */
MoireHistoryItem *moire_history_peek_newest   (MoireHistory     *self);

G_END_DECLS
