/* cli.h — what the files of the `moire` command share (engine/cli/): exit statuses, messages,
 * option parsing, files, Ctrl-C, progress, and one cmd_* function per command. The command is
 * a client of the public API only (engine/include/). */
#ifndef MOIRE_CLI_H
#define MOIRE_CLI_H

#include "moire-metadata.h"
#include "moire.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

enum { EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

typedef struct option_spec {
    const char *name;  /* without "--"                        */
    bool has_value;
    const char **value; /* where the value (or "1" for flags) goes */
} option_spec;

/* The texts of the sampler options, as parse_options leaves them (NULL = not given). */
typedef struct sampler_options {
    const char *steps, *cfg, *cfg_mode, *sampler, *schedule, *eta;
    const char *dmcmc_eta, *dmcmc_skip, *dmcmc_integrator, *dmcmc_burn_in, *dmcmc_level;
} sampler_options;

/* Their option_spec entries, for a command's spec table. */
#define SAMPLER_OPTION_SPECS(o)                                                              \
    {"steps", true, &(o).steps}, {"cfg", true, &(o).cfg}, {"cfg-mode", true, &(o).cfg_mode}, \
        {"sampler", true, &(o).sampler}, {"schedule", true, &(o).schedule},                 \
        {"eta", true, &(o).eta}, {"dmcmc-eta", true, &(o).dmcmc_eta},                       \
        {"dmcmc-skip", true, &(o).dmcmc_skip},                                              \
        {"dmcmc-integrator", true, &(o).dmcmc_integrator},                                  \
        {"dmcmc-burn-in", true, &(o).dmcmc_burn_in}, {"dmcmc-level", true, &(o).dmcmc_level}

typedef struct progress_state {
    bool tty;
    bool quiet;
    int last_decile; /* non-tty: the last 10 % mark printed */
    int last_image;
    bool drawn;      /* tty: a bar is on screen */
    double last_draw; /* tty: elapsed_s of the last redraw (at most ~20 a second) */
} progress_state;

typedef struct eval_progress {
    bool tty, quiet;
    int done, total;  /* images finished before the current call; of the whole run */
    int nfe;          /* the most evaluations an image of the current call has had */
    bool burning_in;  /* DMCMC: the current call is a chain's burn-in              */
    bool drawn;       /* tty: a progress line is on screen                          */
    double last_draw; /* elapsed_s of the last redraw                               */
} eval_progress;

/* Set by the SIGINT handler (files.c): progress callbacks return false to stop the run. */
extern volatile sig_atomic_t g_interrupted;
/* The context Ctrl-C cancels (install_sigint sets it; a command clears it when done). */
extern moire_ctx *volatile g_running_ctx;

/* "moire: error: …" and a newline on stderr. */
void error_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The engine's message for a failed call. */
int engine_error(const char *context);

int print_help(const char *command);

/* Parses argv[first..] against `specs`. Returns 0 or EXIT_USAGE (message printed). */
int parse_options(const char *command, int argc, char **argv, int first,
                  const option_spec *specs, int spec_count);

int parse_int(const char *option, const char *text, long min, long max, int *out);

int parse_float(const char *option, const char *text, double min, double max,
                bool min_exclusive, float *out);

int parse_seed(const char *text, uint64_t *out);

int parse_device(const char *text, moire_device *out);

/* --threads and --device, which every command that runs the model takes, into params.
 * Returns 0 or EXIT_USAGE (message printed). */
int parse_context_options(const char *threads_text, const char *device_text,
                          moire_ctx_params *params);

/* Applies the sampler options of `command` to params. `stream` (generate --stream) implies
 * the DMCMC sampler. For DMCMC, *dmcmc receives its settings (--steps are the integrator's) and
 * params->dmcmc points to it, so it must live as long as params. Returns 0 or EXIT_USAGE
 * (message printed). */
int apply_sampler_options(const char *command, const sampler_options *o, bool stream,
                          moire_generate_params *params, moire_dmcmc_params *dmcmc);

/* Checks, before any long computation, that `path` (given with `option`, for the messages)
 * can be created: its directory exists and is writable, and the path is not a directory.
 * Returns 0 or EXIT_ERROR (message printed). */
int check_output_path(const char *option, const char *path);

/* Refuses (message printed, returns 1) a PNG declaring more than MOIRE_MAX_IMAGE_SIDE a side
 * before its pixels are decoded; reading the header costs nothing (png_info.c). */
int check_image_side(const char *option, const char *path);

/* "out.png" → "out-3.png"; "out" → "out-3". Caller frees. */
char *batch_path(const char *path, int index);

/* out.png, round 3, image 1 → out-3-1.png */
char *stream_path(const char *path, int round, int index);

/* One line on stderr with the model evaluations a DMCMC run cost (the paper's accounting). */
void print_dmcmc_nfe(const moire_dmcmc_params *d, const moire_stream_info *info);

/* --model left out: the default model, or the usage error that says where it was looked for. */
int default_model_or_usage_error(const char **model_path);

int load_model(const char *path, moire_model **model);

void install_sigint(moire_ctx *ctx);

bool on_progress(const moire_progress *p, void *user_data);

void end_progress(progress_state *state);

/* Engine warnings (e.g. "latent model shown without the VAE") go to stderr; info and debug
 * messages only with MOIRE_VERBOSE set. */
void print_engine_log(moire_log_level level, const char *message, void *user_data);

bool on_eval_progress(const moire_progress *p, void *user_data);

void end_progress_line(eval_progress *state);

/* Engine messages as print_engine_log, but a warning that repeats the previous one is left
 * out: eval calls moire_generate once per batch, and each call would say it again. */
void print_engine_log_once(moire_log_level level, const char *message, void *user_data);

bool is_text_model(const moire_model_config *config);

double wall_seconds(void);

/* The usage of `moire` itself (help.c). */
void print_main_usage(FILE *stream);

int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif /* MOIRE_CLI_H */
