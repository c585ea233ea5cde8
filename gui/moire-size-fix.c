/* moire-size-fix.c — "Use W × H" in the banner when a generation's size does not fit in
 * memory (issue 18, item 8). The engine refuses such a job before the first step and names
 * the largest size of the same shape that fits; the job keeps that size; here it becomes a
 * banner button, so the artist need not read the message and type the numbers. The button
 * sets the width and height (the form's spin buttons follow the settings) and closes the
 * banner; Generate is the artist's next click, so nothing large starts unasked. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include "moire-gen-settings.h"
#include "moire-gui-util.h"
#include "moire-size-fix.h"

#include <glib/gi18n-lib.h>

#define SIZE_FIX_KEY "moire-size-fix" /* the offered SizeFix, on the panel object */

typedef struct
{
  int width, height;
} SizeFix;

static void
use_fitting_size (GtkWidget  *widget,
                  const char *action_name,
                  GVariant   *parameter)
{
  MoireGenerationPanel *panel = MOIRE_GENERATION_PANEL (widget);
  const SizeFix *fix = g_object_get_data (G_OBJECT (panel), SIZE_FIX_KEY);

  if (fix == NULL)
    return;
  moire_gen_settings_set_size (moire_generation_panel_get_settings (panel), fix->width,
                               fix->height);
  moire_generation_panel_show_message (panel, GTK_MESSAGE_OTHER, NULL); /* closes the banner */
  g_object_set_data (G_OBJECT (panel), SIZE_FIX_KEY, NULL);
}

void
moire_size_fix_install_action (GtkWidgetClass *widget_class)
{
  gtk_widget_class_install_action (widget_class, "panel.use-fitting-size", NULL,
                                   use_fitting_size);
}

gboolean
moire_size_fix_offer (MoireGenerationPanel *panel,
                      MoireJob             *job,
                      const char           *message)
{
  SizeFix *fix;
  g_autofree char *label = NULL;
  int width = 0, height = 0;

  g_return_val_if_fail (MOIRE_IS_GENERATION_PANEL (panel), FALSE);
  if (job == NULL || !moire_job_get_fitting_size (job, &width, &height))
    return FALSE;
  fix = g_new (SizeFix, 1);
  fix->width = width;
  fix->height = height;
  g_object_set_data_full (G_OBJECT (panel), SIZE_FIX_KEY, fix, g_free);
  /* Translators: a button under "… needs about 4400000 MB of memory …": generate at the
   * largest size that fits instead, "Use 1280 × 1280" */
  label = g_strdup_printf (_("Use %d × %d"), width, height);
  moire_generation_panel_show_error_with_action (panel, message, label,
                                                 "panel.use-fitting-size");
  return TRUE;
}
