/* files.c — the files of a command: output paths checked before any work, batch and stream
 * file names, the default model and loading, and Ctrl-C (cancels the running context). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */

/* Checks, before any long computation, that `path` (given with `option`, for the messages)
 * can be created: its directory exists and is writable, and the path is not a directory.
 * Returns 0 or EXIT_ERROR (message printed). */
int check_output_path(const char *option, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        error_line("%s is a directory; give a file name for %s, e.g. %s/out.png", path, option,
                   path);
        return EXIT_ERROR;
    }
    /* a FIFO, a device or a symbolic link is never replaced (file_guard.h) */
    if (moire_check_output_path(path) != MOIRE_OK) {
        error_line("%s: %s", option, moire_last_error());
        return EXIT_ERROR;
    }
    char *dir = strdup(path);
    if (!dir) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int result = 0;
    if (stat(dir, &st) != 0) {
        error_line("cannot write %s: the directory %s does not exist (%s); create it first or "
                   "choose another path for %s",
                   path, dir, strerror(errno), option);
        result = EXIT_ERROR;
    } else if (!S_ISDIR(st.st_mode)) {
        error_line("cannot write %s: %s is not a directory", path, dir);
        result = EXIT_ERROR;
    } else if (access(dir, W_OK | X_OK) != 0) {
        error_line("cannot write %s: the directory %s is not writable (%s); choose another "
                   "path for %s",
                   path, dir, strerror(errno), option);
        result = EXIT_ERROR;
    }
    free(dir);
    return result;
}

/* Refuses (message printed, returns 1) a PNG declaring more than MOIRE_MAX_IMAGE_SIDE a side
 * before its pixels are decoded; reading the header costs nothing (png_info.c). */
int check_image_side(const char *option, const char *path)
{
    moire_png_info info;
    if (moire_png_read_info(path, &info) != MOIRE_OK) {
        engine_error(option);
        return 1;
    }
    const int width = info.width, height = info.height;
    moire_png_info_clear(&info);
    if (width > MOIRE_MAX_IMAGE_SIDE || height > MOIRE_MAX_IMAGE_SIDE) {
        error_line("%s %s: the image is %dx%d; at most %d a side is used: scale it down first",
                   option, path, width, height, MOIRE_MAX_IMAGE_SIDE);
        return 1;
    }
    return 0;
}

/* "out.png" → "out-3.png"; "out" → "out-3". Caller frees. */
char *batch_path(const char *path, int index)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : path))
        dot = path + strlen(path);
    size_t size = strlen(path) + 16;
    char *out = malloc(size);
    if (out)
        snprintf(out, size, "%.*s-%d%s", (int)(dot - path), path, index, dot);
    return out;
}

/* out.png, round 3, image 1 → out-3-1.png */
char *stream_path(const char *path, int round, int index)
{
    char *with_round = batch_path(path, round);
    char *out = with_round ? batch_path(with_round, index) : NULL;
    free(with_round);
    return out;
}

/* One line on stderr with the model evaluations a DMCMC run cost (the paper's accounting). */
void print_dmcmc_nfe(const moire_dmcmc_params *d, const moire_stream_info *info)
{
    int integrator_nfe = d->integrator == MOIRE_DMCMC_HEUN ||
                                 d->integrator == MOIRE_DMCMC_STOCHASTIC_HEUN
                             ? 2 * d->integrator_steps - 1
                             : d->integrator_steps;
    fprintf(stderr, "moire: dmcmc: %d NFE per image (skip %d + %s %d + Tweedie %d)",
            moire_dmcmc_nfe_per_sample(d), d->skip, moire_dmcmc_integrator_name(d->integrator),
            integrator_nfe, d->tweedie ? 1 : 0);
    if (info)
        fprintf(stderr, "; once: %d NFE of burn-in; %d re-seed(s) costing %d NFE; mean start "
                        "level %.3f; levels from the %s",
                info->nfe_one_off, info->reseeds, info->nfe_reseed, info->mean_start_sigma,
                info->level == MOIRE_DMCMC_LEVEL_CLASSIFIER ? "noise-level classifier"
                                                            : "residual estimate");
    fputc('\n', stderr);
}

/* --model left out: the default model, or the usage error that says where it was looked for. */
int default_model_or_usage_error(const char **model_path)
{
    /* kept for the rest of the process, like the argv strings it stands in for */
    static char *default_model;
    char searched[8192];
    free(default_model);
    *model_path = default_model = moire_default_model_path(searched, sizeof searched);
    if (!*model_path) {
        error_line("no --model given and no default model found (looked at $MOIRE_MODEL and "
                   "in %s); give --model FILE (a .safetensors or .pt model)", searched);
        return EXIT_USAGE;
    }
    return 0;
}

int load_model(const char *path, moire_model **model)
{
    if (moire_model_load(path, model) != MOIRE_OK)
        return engine_error(NULL);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Ctrl-C
 * ---------------------------------------------------------------------------------------- */

moire_ctx *volatile g_running_ctx;
volatile sig_atomic_t g_interrupted;

static void on_sigint(int signal_number)
{
    (void)signal_number;
    g_interrupted = 1;
    moire_ctx *ctx = g_running_ctx;
    if (ctx)
        moire_ctx_cancel(ctx); /* only sets an atomic flag */
}

void install_sigint(moire_ctx *ctx)
{
    g_running_ctx = ctx;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigaction(SIGINT, &action, NULL);
}
