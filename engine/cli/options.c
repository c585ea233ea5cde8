/* options.c — command-line option handling shared by every command: the option table
 * parser, number/seed/device values, and the sampler options generate and eval share. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------------------------- */

/* Parses argv[first..] against `specs`. Returns 0 or EXIT_USAGE (message printed). */
int parse_options(const char *command, int argc, char **argv, int first,
                  const option_spec *specs, int spec_count)
{
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_help(command);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
            error_line("unexpected argument '%s' for 'moire %s'; options start with '--' "
                       "(see 'moire help %s')",
                       arg, command, command);
            return EXIT_USAGE;
        }
        const char *name = arg + 2;
        const char *equals = strchr(name, '=');
        size_t name_len = equals ? (size_t)(equals - name) : strlen(name);
        const option_spec *spec = NULL;
        for (int s = 0; s < spec_count; s++)
            if (strlen(specs[s].name) == name_len && strncmp(specs[s].name, name, name_len) == 0)
                spec = &specs[s];
        if (!spec) {
            error_line("unknown option '--%.*s' for 'moire %s' (see 'moire help %s')",
                       (int)name_len, name, command, command);
            return EXIT_USAGE;
        }
        if (!spec->has_value) {
            if (equals) {
                error_line("option '--%s' takes no value", spec->name);
                return EXIT_USAGE;
            }
            *spec->value = "1";
            continue;
        }
        const char *value;
        if (equals) {
            value = equals + 1;
        } else {
            if (i + 1 >= argc) {
                error_line("option '--%s' needs a value (see 'moire help %s')", spec->name,
                           command);
                return EXIT_USAGE;
            }
            value = argv[++i];
        }
        if (*spec->value) {
            error_line("option '--%s' is given twice", spec->name);
            return EXIT_USAGE;
        }
        *spec->value = value;
    }
    return 0;
}

int parse_int(const char *option, const char *text, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (end == text || *end || errno == ERANGE) {
        error_line("--%s: '%s' is not a whole number", option, text);
        return EXIT_USAGE;
    }
    if (value < min || value > max) {
        error_line("--%s: %ld is out of range; use %ld..%ld", option, value, min, max);
        return EXIT_USAGE;
    }
    *out = (int)value;
    return 0;
}

int parse_float(const char *option, const char *text, double min, double max,
                bool min_exclusive, float *out)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text || *end) {
        error_line("--%s: '%s' is not a number", option, text);
        return EXIT_USAGE;
    }
    if (!isfinite(value)) {
        error_line("--%s: '%s' is not a finite number", option, text);
        return EXIT_USAGE;
    }
    if (value < min || value > max || (min_exclusive && value == min)) {
        error_line("--%s: %s is out of range; use a number %s %g and <= %g", option, text,
                   min_exclusive ? ">" : ">=", min, max);
        return EXIT_USAGE;
    }
    *out = (float)value;
    return 0;
}

int parse_seed(const char *text, uint64_t *out)
{
    if (strcmp(text, "-1") == 0 || strcmp(text, "random") == 0) {
        uint64_t seed = 0;
        FILE *f = fopen("/dev/urandom", "rb");
        if (!f || fread(&seed, sizeof seed, 1, f) != 1) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            seed = (uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 20) ^ (uint64_t)getpid();
        }
        if (f)
            fclose(f);
        *out = seed % 4294967294ull; /* A1111's range, so the seed fits every UI */
        fprintf(stderr, "moire: seed %" PRIu64 "\n", *out);
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (end == text || *end || errno == ERANGE || text[0] == '-' || text[0] == '+') {
        error_line("--seed: '%s' is not a seed; use a whole number 0..%llu, or -1 for a "
                   "random one",
                   text, ULLONG_MAX);
        return EXIT_USAGE;
    }
    *out = value;
    return 0;
}

int parse_device(const char *text, moire_device *out)
{
    if (!text || strcmp(text, "auto") == 0)
        *out = MOIRE_DEVICE_AUTO;
    else if (strcmp(text, "cpu") == 0)
        *out = MOIRE_DEVICE_CPU;
    else if (strcmp(text, "cuda") == 0 || strcmp(text, "gpu") == 0)
        *out = MOIRE_DEVICE_CUDA;
    else {
        error_line("--device: unknown device '%s'; use auto, cpu or cuda", text);
        return EXIT_USAGE;
    }
    return 0;
}

int parse_context_options(const char *threads_text, const char *device_text,
                          moire_ctx_params *params)
{
    int rc;
    if (threads_text &&
        (rc = parse_int("threads", threads_text, 0, MOIRE_MAX_THREADS, &params->n_threads)))
        return rc;
    return parse_device(device_text, &params->device);
}

/* ------------------------------------------------------------------------------------------
 * Sampler options (generate and eval)
 * ---------------------------------------------------------------------------------------- */

/* Applies the sampler options of `command` to params. `stream` (generate --stream) implies
 * the DMCMC sampler. For DMCMC, *dmcmc receives its settings (--steps are the integrator's) and
 * params->dmcmc points to it, so it must live as long as params. Returns 0 or EXIT_USAGE
 * (message printed). */
int apply_sampler_options(const char *command, const sampler_options *o, bool stream,
                          moire_generate_params *params, moire_dmcmc_params *dmcmc)
{
    int rc;
    if (o->steps && (rc = parse_int("steps", o->steps, 1, 10000, &params->steps)))
        return rc;
    if (o->cfg && (rc = parse_float("cfg", o->cfg, 0.0, 100.0, false, &params->cfg_scale)))
        return rc;
    if (o->cfg_mode) {
        if (strcmp(o->cfg_mode, "default") == 0)
            params->cfg_mode = MOIRE_CFG_DEFAULT;
        else if (strcmp(o->cfg_mode, "all") == 0)
            params->cfg_mode = MOIRE_CFG_ALL_CHANNELS;
        else if (strcmp(o->cfg_mode, "first3") == 0)
            params->cfg_mode = MOIRE_CFG_FIRST_THREE;
        else {
            error_line("--cfg-mode: unknown mode '%s'; use default, all or first3", o->cfg_mode);
            return EXIT_USAGE;
        }
    }
    if (o->sampler && strcmp(o->sampler, "default") != 0 &&
        moire_sampler_from_name(o->sampler, &params->sampler) != MOIRE_OK) {
        engine_error("--sampler");
        return EXIT_USAGE;
    }
    if (o->schedule && moire_schedule_from_name(o->schedule, &params->schedule) != MOIRE_OK) {
        engine_error("--schedule");
        return EXIT_USAGE;
    }
    if (o->eta && (rc = parse_float("eta", o->eta, 0.0, 1000.0, false, &params->eta)))
        return rc;
    /* DMCMC (docs/DMCMC.md): --stream implies it; its --steps are the integrator's. */
    *dmcmc = moire_dmcmc_params_default();
    if (stream) {
        if (o->sampler && params->sampler != MOIRE_SAMPLER_DMCMC) {
            error_line("--stream runs persistent DMCMC chains; leave out --sampler or use "
                       "--sampler dmcmc");
            return EXIT_USAGE;
        }
        params->sampler = MOIRE_SAMPLER_DMCMC;
    }
    const bool dmcmc_options = o->dmcmc_eta || o->dmcmc_skip || o->dmcmc_integrator ||
                               o->dmcmc_burn_in || o->dmcmc_level;
    if (dmcmc_options && params->sampler != MOIRE_SAMPLER_DMCMC) {
        error_line("the --dmcmc-* options apply to --sampler dmcmc%s",
                   strcmp(command, "generate") == 0 ? " (or --stream N)" : "");
        return EXIT_USAGE;
    }
    if (params->sampler != MOIRE_SAMPLER_DMCMC)
        return 0;
    if (o->dmcmc_eta && (rc = parse_float("dmcmc-eta", o->dmcmc_eta, 0.0, 10.0, true, &dmcmc->eta)))
        return rc;
    if (o->dmcmc_skip && (rc = parse_int("dmcmc-skip", o->dmcmc_skip, 1, 1000, &dmcmc->skip)))
        return rc;
    if (o->dmcmc_burn_in &&
        (rc = parse_int("dmcmc-burn-in", o->dmcmc_burn_in, 0, 10000, &dmcmc->burn_in)))
        return rc;
    if (o->dmcmc_integrator &&
        moire_dmcmc_integrator_from_name(o->dmcmc_integrator, &dmcmc->integrator) != MOIRE_OK) {
        engine_error("--dmcmc-integrator");
        return EXIT_USAGE;
    }
    if (o->dmcmc_level && moire_dmcmc_level_from_name(o->dmcmc_level, &dmcmc->level) != MOIRE_OK) {
        engine_error("--dmcmc-level");
        return EXIT_USAGE;
    }
    if (params->steps > 0) {
        if (params->steps > 1000) {
            error_line("--steps %d: the DMCMC integrator takes 1..1000 steps (5 is usual)",
                       params->steps);
            return EXIT_USAGE;
        }
        dmcmc->integrator_steps = params->steps;
    }
    params->dmcmc = dmcmc;
    return 0;
}
