/* main.c — Moiré Studio entry point. */
#define G_LOG_DOMAIN "moire-studio"

#include "config.h"

#include <glib/gi18n.h>
#include <locale.h>

#include "moire-gui-util.h"
#include "moire-studio-application.h"

int
main (int   argc,
      char *argv[])
{
  g_autoptr(MoireStudioApplication) app = NULL;
  const char *messages_locale;
  int status;

  setlocale (LC_ALL, "");
  /* gettext ignores $LANGUAGE in the plain "C" locale (a bare container, CI); C.UTF-8 keeps
   * the C conventions and lets LANGUAGE=de pick German messages. */
  messages_locale = setlocale (LC_MESSAGES, NULL);
  if (g_getenv ("LANGUAGE") != NULL && messages_locale != NULL &&
      (g_str_equal (messages_locale, "C") || g_str_equal (messages_locale, "POSIX")))
    setlocale (LC_ALL, "C.UTF-8");
  /* GTK would call setlocale (LC_ALL, "") again and undo that. */
  gtk_disable_setlocale ();
  moire_gui_init_i18n ();
  textdomain (GETTEXT_PACKAGE);

  app = moire_studio_application_new ();
  status = g_application_run (G_APPLICATION (app), argc, argv);
  if (status == 0)
    status = moire_studio_application_get_exit_status (app);
  return status;
}
