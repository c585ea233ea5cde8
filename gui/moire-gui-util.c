/* moire-gui-util.c — error domain, translations and image/texture conversions shared by
 * the widgets of libmoire-gui and the studio app. */
#define G_LOG_DOMAIN "moire-gui"

#include "config.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#include "moire-gui-util.h"

G_DEFINE_QUARK (moire-gui-error-quark, moire_gui_error)

GError *
moire_gui_error_from_status (moire_status  status,
                             const char   *what)
{
  const char *message = moire_last_error ();

  if (message == NULL || *message == '\0')
    message = moire_status_to_string (status);
  if (what != NULL)
    return g_error_new (MOIRE_GUI_ERROR, (int) status, "%s: %s", what, message);
  return g_error_new_literal (MOIRE_GUI_ERROR, (int) status, message);
}

/* TRUE when `dir` holds a translation of ours (LANG/LC_MESSAGES/moire.mo for some LANG). */
static gboolean
has_translations (const char *dir)
{
  g_autoptr(GDir) listing = g_dir_open (dir, 0, NULL);
  const char *name;

  while (listing != NULL && (name = g_dir_read_name (listing)) != NULL)
    {
      g_autofree char *mo = g_build_filename (dir, name, "LC_MESSAGES", GETTEXT_PACKAGE ".mo", NULL);

      if (g_file_test (mo, G_FILE_TEST_IS_REGULAR))
        return TRUE;
    }
  return FALSE;
}

/* The translations that belong to this binary, found from where it lies: in a meson build
 * tree (build/gui/studio/moire-studio, build/plugin/moire) the build's po/ folder, which
 * meson fills with LANG/LC_MESSAGES/moire.mo; in an installed or moved prefix
 * (PREFIX/bin/moire-studio) PREFIX/share/locale. NULL when neither has any. */
static char *
find_localedir_near_binary (void)
{
  g_autofree char *exe = g_file_read_link ("/proc/self/exe", NULL);
  g_autofree char *dir = exe != NULL ? g_path_get_dirname (exe) : NULL;

  if (dir == NULL)
    return NULL;
  /* Build tree: the nearest ancestor (up to three levels) with build.ninja. */
  {
    g_autofree char *up = g_strdup (dir);

    for (int level = 0; level < 4; level++)
      {
        g_autofree char *ninja = g_build_filename (up, "build.ninja", NULL);
        char *parent;

        if (g_file_test (ninja, G_FILE_TEST_IS_REGULAR))
          {
            g_autofree char *po = g_build_filename (up, "po", NULL);

            return has_translations (po) ? g_steal_pointer (&po) : NULL;
          }
        parent = g_path_get_dirname (up);
        g_free (up);
        up = parent;
      }
  }
  {
    g_autofree char *share = g_build_filename (dir, "..", "share", "locale", NULL);

    if (has_translations (share))
      return g_steal_pointer (&share);
  }
  return NULL;
}

const char *
moire_gui_get_localedir (void)
{
  static char *found = NULL;
  static gsize looked = 0;
  const char *dir = g_getenv ("MOIRE_LOCALEDIR");

  if (dir != NULL && *dir != '\0')
    return dir;
  if (g_once_init_enter (&looked))
    {
      found = find_localedir_near_binary ();
      g_once_init_leave (&looked, 1);
    }
  return found != NULL ? found : LOCALEDIR;
}

char *
moire_gui_format_decimal (double value,
                          int    digits)
{
  char buffer[G_ASCII_DTOSTR_BUF_SIZE];
  char format[8];
  /* Translators: the decimal separator of numbers in the interface ("7.5 M", "2.5 s"):
     "," in German and French. It follows the interface language, not LC_NUMERIC, so that
     LANGUAGE=de alone gives "7,5". */
  const char *separator = C_("decimal separator", ".");
  GString *text = g_string_new (NULL);

  g_snprintf (format, sizeof format, "%%.%df", CLAMP (digits, 0, 9));
  g_ascii_formatd (buffer, sizeof buffer, format, value);
  for (const char *c = buffer; *c != '\0'; c++)
    if (*c == '.')
      g_string_append (text, separator);
    else
      g_string_append_c (text, *c);
  return g_string_free (text, FALSE);
}

void
moire_gui_init_i18n (void)
{
  static gsize initialized = 0;

  if (g_once_init_enter (&initialized))
    {
      bindtextdomain (GETTEXT_PACKAGE, moire_gui_get_localedir ());
      bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
      g_once_init_leave (&initialized, 1);
    }
}

GBytes *
moire_gui_image_to_bytes (const moire_image *image)
{
  g_return_val_if_fail (image != NULL && image->pixels != NULL, NULL);
  return g_bytes_new (image->pixels,
                      (gsize) image->width * image->height * image->channels);
}

moire_image *
moire_gui_image_new_from_bytes (GBytes *bytes,
                                int     width,
                                int     height,
                                int     channels)
{
  moire_image *image;
  gsize size = 0;
  const guint8 *data;

  g_return_val_if_fail (bytes != NULL, NULL);
  data = g_bytes_get_data (bytes, &size);
  g_return_val_if_fail (size == (gsize) width * height * channels, NULL);
  image = moire_image_new (width, height, channels);
  if (image != NULL)
    memcpy (image->pixels, data, size);
  return image;
}

GdkTexture *
moire_gui_texture_new_for_image (const moire_image *image,
                                 int                min_size)
{
  g_autoptr(GBytes) bytes = NULL;
  int longer, factor, out_w, out_h, channels;
  guint8 *pixels;

  g_return_val_if_fail (image != NULL && image->pixels != NULL, NULL);
  g_return_val_if_fail (image->channels == 1 || image->channels == 3 || image->channels == 4, NULL);

  longer = MAX (image->width, image->height);
  factor = (min_size > 0 && longer > 0 && longer < min_size) ? min_size / longer : 1;
  factor = MAX (factor, 1);
  out_w = image->width * factor;
  out_h = image->height * factor;
  channels = image->channels == 4 ? 4 : 3;

  pixels = g_malloc ((gsize) out_w * out_h * channels);
  for (int y = 0; y < out_h; y++)
    {
      const guint8 *src_row = image->pixels + (gsize) (y / factor) * image->width * image->channels;
      guint8 *dst = pixels + (gsize) y * out_w * channels;

      for (int x = 0; x < out_w; x++, dst += channels)
        {
          const guint8 *src = src_row + (gsize) (x / factor) * image->channels;

          if (image->channels == 1)
            dst[0] = dst[1] = dst[2] = src[0];
          else
            memcpy (dst, src, channels);
        }
    }
  bytes = g_bytes_new_take (pixels, (gsize) out_w * out_h * channels);
  return gdk_memory_texture_new (out_w, out_h,
                                 channels == 4 ? GDK_MEMORY_R8G8B8A8 : GDK_MEMORY_R8G8B8,
                                 bytes, (gsize) out_w * channels);
}

/* GDK 4.8 can only download textures as premultiplied native-endian ARGB32 (cairo's
 * layout); undo both to get straight RGBA bytes. */
static moire_image *
image_from_texture (GdkTexture *texture)
{
  int w = gdk_texture_get_width (texture);
  int h = gdk_texture_get_height (texture);
  g_autofree guint32 *argb = g_new (guint32, (gsize) w * h);
  moire_image *image = moire_image_new (w, h, 4);

  if (image == NULL)
    return NULL;
  gdk_texture_download (texture, (guchar *) argb, (gsize) w * 4);
  for (gsize i = 0; i < (gsize) w * h; i++)
    {
      guint32 p = argb[i];
      guint a = p >> 24;
      guint8 *dst = image->pixels + i * 4;

      for (int c = 0; c < 3; c++)
        {
          guint v = (p >> (16 - 8 * c)) & 0xff;
          dst[c] = a ? (guint8) MIN (255u, (v * 255u + a / 2) / a) : 0;
        }
      dst[3] = (guint8) a;
    }
  return image;
}

moire_image *
moire_gui_image_load (const char  *path,
                      GError     **error)
{
  moire_image *image = NULL;
  g_autoptr(GdkTexture) texture = NULL;
  moire_status status;

  g_return_val_if_fail (path != NULL, NULL);

  status = moire_png_load (path, &image, NULL, NULL);
  if (status == MOIRE_OK)
    return image;
  if (status == MOIRE_ERROR_IO)
    {
      g_propagate_error (error, moire_gui_error_from_status (status, NULL));
      return NULL;
    }
  /* Not a PNG: let GDK try the other formats it knows. */
  texture = gdk_texture_new_from_filename (path, NULL);
  if (texture == NULL)
    {
      g_autofree char *name = g_filename_display_basename (path);

      g_set_error (error, MOIRE_GUI_ERROR, MOIRE_ERROR_FORMAT,
                   _("“%s” is not an image that can be read (PNG, JPEG or TIFF)"), name);
      return NULL;
    }
  return image_from_texture (texture);
}

char *
moire_gui_format_duration (double seconds)
{
  long s;

  if (!(seconds >= 0))
    return g_strdup ("");
  if (seconds < 9.95)
    {
      g_autofree char *number = moire_gui_format_decimal (seconds, 1);

      /* Translators: a short duration in seconds with one decimal, "2.5 s" (the number
         already has the decimal separator) */
      return g_strdup_printf (_("%s s"), number);
    }
  s = (long) (seconds + 0.5);
  if (s < 60)
    /* Translators: a duration in seconds */
    return g_strdup_printf (_("%ld s"), s);
  if (s < 3600)
    /* Translators: a duration in minutes and seconds */
    return g_strdup_printf (_("%ld min %02ld s"), s / 60, s % 60);
  /* Translators: a duration in hours and minutes */
  return g_strdup_printf (_("%ld h %02ld min"), s / 3600, (s % 3600) / 60);
}
