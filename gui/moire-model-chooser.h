/* moire-model-chooser.h — the generation panel's model picker: a drop-down of the recently
 * used model files (shown by file name, newest first, remembered in the "recent-models"
 * GSettings key when bound) and a button that opens a model file. Shared by Moiré Studio
 * and the GIMP plug-in through the panel.
 *
 * The button activates the action named by the "open-action" property ("panel.choose-model"
 * in the panel), so that the file dialog is the host's (its parent window, its other file
 * dialogs); the chooser itself never loads anything: it emits ::model-selected and is told
 * which model loaded with moire_model_chooser_add_recent(). */
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

#define MOIRE_TYPE_MODEL_CHOOSER (moire_model_chooser_get_type ())

G_DECLARE_FINAL_TYPE (MoireModelChooser, moire_model_chooser, MOIRE, MODEL_CHOOSER, GtkWidget)

GtkWidget *moire_model_chooser_new             (void);

/* Reads the recent models from @settings' "recent-models" key and writes them back there
 * whenever moire_model_chooser_add_recent() changes them. */
void       moire_model_chooser_bind_gsettings  (MoireModelChooser *self,
                                                GSettings         *settings);
/* @path loaded: moves it to the top of the list (at most 10 kept) and selects it, without
 * emitting ::model-selected. */
void       moire_model_chooser_add_recent      (MoireModelChooser *self,
                                                const char        *path);
/* The recent model whose file name without its extension is @model_name ("tiny_qkv", as PNG
 * metadata names it), or NULL. Free with g_free(). */
char      *moire_model_chooser_find_recent     (MoireModelChooser *self,
                                                const char        *model_name);

G_END_DECLS
