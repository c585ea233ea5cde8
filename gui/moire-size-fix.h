/* moire-size-fix.h — the one-click fix for an image size that needs more memory than there
 * is: the panel's error banner gets a "Use W × H" button with the largest size of the same
 * shape that fits (the engine's moire_last_error_fitting_size, kept by the job). */
#pragma once

#include <gtk/gtk.h>

#include "moire-generation-panel.h"
#include "moire-job.h"

G_BEGIN_DECLS

/* Installs the panel action "panel.use-fitting-size" (class_init of MoireGenerationPanel). */
void      moire_size_fix_install_action (GtkWidgetClass       *widget_class);
/* When `job` failed for want of memory at its size: shows `message` in the panel's banner with
 * a button "Use W × H" that sets the size that fits, and returns TRUE. FALSE otherwise (the
 * caller shows the message plainly). */
gboolean  moire_size_fix_offer          (MoireGenerationPanel *panel,
                                         MoireJob             *job,
                                         const char           *message);

G_END_DECLS
