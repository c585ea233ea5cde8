/* main.c — the `moire` command: dispatch to the commands (cmd-*.c), --help and --version,
 * and the one-line error messages every command prints. The command is a client of the
 * public API only (engine/include/: moire.h, moire-metadata.h); cli.h is what its files share.
 *
 * Exit status: 0 success, 1 an error (bad file, bad value for this model, engine failure),
 * 2 a usage error (unknown option, missing or malformed value), 130 interrupted (Ctrl-C).
 * Every error is one line on stderr, "moire: error: …", and no output file is left behind:
 * PNG and .npy files are written atomically, and the output directory is checked before
 * any long computation starts.
 */
#include "cli.h"

#include <stdarg.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------------------------- */

void error_line(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fputs("moire: error: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
}

/* The engine's message for a failed call. */
int engine_error(const char *context)
{
    const char *message = moire_last_error();
    if (context)
        error_line("%s: %s", context, message[0] ? message : "unknown error");
    else
        error_line("%s", message[0] ? message : "unknown error");
    int fit_w, fit_h; /* a too-large size: name the flags that give the size that fits */
    if (moire_last_error_fitting_size(&fit_w, &fit_h))
        fprintf(stderr, "moire: use --width %d --height %d to make the largest that fits\n", fit_w, fit_h);
    return EXIT_ERROR;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_main_usage(stderr);
        return EXIT_USAGE;
    }
    const char *command = argv[1];
    if (strcmp(command, "-h") == 0 || strcmp(command, "--help") == 0)
        return print_help(NULL);
    if (strcmp(command, "-V") == 0 || strcmp(command, "--version") == 0) {
        printf("moire %s\n", MOIRE_VERSION_STRING);
        return 0;
    }
    if (strcmp(command, "help") == 0) {
        if (argc > 3) {
            error_line("'moire help' takes one command name");
            return EXIT_USAGE;
        }
        return print_help(argc == 3 ? argv[2] : NULL);
    }
    if (strcmp(command, "generate") == 0)
        return cmd_generate(argc, argv);
    if (strcmp(command, "info") == 0)
        return cmd_info(argc, argv);
    if (strcmp(command, "forward") == 0)
        return cmd_forward(argc, argv);
    if (strcmp(command, "convert") == 0)
        return cmd_convert(argc, argv);
    if (strcmp(command, "bench") == 0)
        return cmd_bench(argc, argv);
    if (strcmp(command, "eval") == 0)
        return cmd_eval(argc, argv);
    error_line("unknown command '%s'; the commands are generate, info, forward, convert, bench "
               "and eval (see 'moire --help')",
               command);
    return EXIT_USAGE;
}
