/* moire-studio-application.h — Moiré Studio's GtkApplication: app actions (generate, cancel,
 * about, quit — "generate" and "cancel" are reachable over D-Bus with `gapplication action`),
 * command-line options and the --self-test driver used by the gui test suite. */
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

#define MOIRE_TYPE_STUDIO_APPLICATION (moire_studio_application_get_type ())

G_DECLARE_FINAL_TYPE (MoireStudioApplication, moire_studio_application, MOIRE, STUDIO_APPLICATION, GtkApplication)

MoireStudioApplication *moire_studio_application_new             (void);
/* The exit status a self-test decided on (0 otherwise). */
int                     moire_studio_application_get_exit_status (MoireStudioApplication *self);

G_END_DECLS
