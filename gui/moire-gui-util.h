/* moire-gui-util.h — small shared pieces of libmoire-gui: the error domain, translation
 * set-up, and conversions between engine images (moire_image) and GDK textures. */
#pragma once

#include <gtk/gtk.h>

#include "moire.h"

G_BEGIN_DECLS

#define MOIRE_GUI_ERROR (moire_gui_error_quark ())

/* Error codes of MOIRE_GUI_ERROR: the engine's moire_status values, plus our own. */
typedef enum
{
  MOIRE_GUI_ERROR_FAILED = 100,   /* anything that is not an engine status          */
  MOIRE_GUI_ERROR_NO_MODEL,       /* no model is loaded or could be found           */
  MOIRE_GUI_ERROR_BUSY,           /* a generation is already running                */
} MoireGuiError;

GQuark        moire_gui_error_quark                 (void);

/* A GError from the engine's last error on the calling thread (call on the thread that made
 * the failing call: moire_last_error() is per thread). `what` prefixes the message. */
GError       *moire_gui_error_from_status           (moire_status     status,
                                                     const char      *what);

/* Binds the "moire" gettext domain (idempotent). Hosts that embed the panel need not call
 * it: the panel does so in class_init. $MOIRE_LOCALEDIR overrides the install location. */
void          moire_gui_init_i18n                   (void);
/* $MOIRE_LOCALEDIR, else the translations next to the binary (a build tree's po/, or
 * PREFIX/share/locale), else the configured LOCALEDIR. */
const char   *moire_gui_get_localedir               (void);
/* `value` with `digits` decimals and the interface language's decimal separator ("7,5"). */
char         *moire_gui_format_decimal              (double            value,
                                                     int               digits);

/* A copy of `image` as a texture; images smaller than `min_size` on their longer side are
 * enlarged by an integer factor with nearest-neighbour sampling so small images stay crisp.
 * Gray images become RGB. Thread-safe (textures are immutable). */
GdkTexture   *moire_gui_texture_new_for_image       (const moire_image *image,
                                                     int                min_size);
/* Pixels of `image` (1, 3 or 4 channels) as tightly packed bytes, and back. */
GBytes       *moire_gui_image_to_bytes              (const moire_image *image);
moire_image  *moire_gui_image_new_from_bytes        (GBytes           *bytes,
                                                     int               width,
                                                     int               height,
                                                     int               channels);
/* Loads an image file as a moire_image: PNG through the engine (exact 8-bit), anything else
 * GDK can read (JPEG, TIFF…) through a texture. */
moire_image  *moire_gui_image_load                  (const char       *path,
                                                     GError          **error);

/* "2.5 s", "42 s", "1 min 05 s", "2 h 03 min" — translated; "" for negative (unknown) values. */
char         *moire_gui_format_duration             (double            seconds);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (moire_image, moire_image_free)

G_END_DECLS
