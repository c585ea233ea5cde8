/* moire-studio-window.h — the main window of Moiré Studio: a header bar around the
 * generation panel. */
#pragma once

#include <gtk/gtk.h>

#include "moire-gui.h"

G_BEGIN_DECLS

#define MOIRE_TYPE_STUDIO_WINDOW (moire_studio_window_get_type ())

G_DECLARE_FINAL_TYPE (MoireStudioWindow, moire_studio_window, MOIRE, STUDIO_WINDOW, GtkApplicationWindow)

/* `settings` may be NULL (no schema installed: nothing is remembered). */
MoireStudioWindow    *moire_studio_window_new         (GtkApplication    *application,
                                                       GSettings         *settings);
MoireGenerationPanel *moire_studio_window_get_panel   (MoireStudioWindow *self);
/* Picks the model to start with: `path` (from the command line) if given, else $MOIRE_MODEL,
 * the model used last, the embedded default model; or asks the user. */
void                  moire_studio_window_choose_initial_model (MoireStudioWindow *self,
                                                                const char        *path);

G_END_DECLS
