/* moire-cli.c — the `moire` command: generate images, inspect models and PNGs, and run one
 * forward pass on a .npy tensor. A client of the public API only (engine/include/: moire.h,
 * moire-metadata.h).
 *
 * Exit status: 0 success, 1 an error (bad file, bad value for this model, engine failure),
 * 2 a usage error (unknown option, missing or malformed value), 130 interrupted (Ctrl-C).
 * Every error is one line on stderr, "moire: error: …", and no output file is left behind:
 * PNG and .npy files are written atomically, and the output directory is checked before
 * any long computation starts.
 */
#include "moire-metadata.h"
#include "moire.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

/* ------------------------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------------------------- */

static void error_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void error_line(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fputs("moire: error: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
}

/* The engine's message for a failed call. */
static int engine_error(const char *context)
{
    const char *message = moire_last_error();
    if (context)
        error_line("%s: %s", context, message[0] ? message : "unknown error");
    else
        error_line("%s", message[0] ? message : "unknown error");
    return EXIT_ERROR;
}

/* ------------------------------------------------------------------------------------------
 * Help
 * ---------------------------------------------------------------------------------------- */

static const char usage_main[] =
    "Usage: moire COMMAND [OPTIONS]\n"
    "\n"
    "Moiré generates images with Mixture-of-Experts diffusion transformers (DiT-MoE).\n"
    "\n"
    "Commands:\n"
    "  generate   make images from a prompt or class and write PNGs with their settings\n"
    "  info       describe a model (--model) or the settings stored in a PNG (--image)\n"
    "  convert    write a PyTorch checkpoint (.pt) as a safetensors model file\n"
    "  forward    run one model evaluation on a .npy tensor (for checking numerics)\n"
    "  bench      time random-weight models of the released geometries (ms per step)\n"
    "  eval       measure a model: FID and prompt adherence against an image classifier\n"
    "  help CMD   show the options of a command\n"
    "\n"
    "Options:\n"
    "  -h, --help     show this help\n"
    "  -V, --version  show the version\n"
    "\n"
    "Example:\n"
    "  moire generate --model dit_moe_s_8E2A.safetensors --prompt \"golden retriever\" \\\n"
    "                 --seed 7 --output dog.png\n";

static const char usage_generate[] =
    "Usage: moire generate [--model FILE] (--prompt TEXT | --class N) --output FILE.png [OPTIONS]\n"
    "\n"
    "Generates images and writes each as a PNG whose \"parameters\" text (A1111 layout) and\n"
    "\"moire\" text (JSON) record everything needed to make it again.\n"
    "\n"
    "  --model FILE        the model (.safetensors or a released .pt); default: $MOIRE_MODEL,\n"
    "                      else the embedded model (share/moire/models, data/models)\n"
    "  --prompt TEXT       what to draw: text for text models (EC-DiT); for class models a class\n"
    "                      name (closest match) or a number\n"
    "  --class N           the class number instead of a prompt\n"
    "  --negative TEXT     a class used as the unconditional branch of guidance (default: none)\n"
    "  --seed N            random seed (default 42; -1 = a random seed); image i uses seed + i\n"
    "  --steps N           sampler steps (default: the model's, 250 for DDPM, 50 for flow)\n"
    "  --cfg X             classifier-free guidance scale (default: the model's; 1 = none)\n"
    "  --cfg-mode MODE     default, all (every channel) or first3 (the official DiT quirk)\n"
    "  --sampler NAME      default, ddpm, rf-euler, ddim, euler, euler-a, heun, dpm++2m,\n"
    "                      dmcmc (A1111 labels and ComfyUI names work too)\n"
    "  --schedule NAME     default, uniform, karras\n"
    "  --eta X             DDIM eta (default 0: deterministic)\n"
    "  --width W, --height H\n"
    "                      image size in pixels (default: the model's trained size); a\n"
    "                      multiple of 8 x patch size for latent models, of the patch size\n"
    "                      for pixel models\n"
    "  --batch N           images to make (default 1)\n"
    "  --init FILE.png     start from this image (img2img); needs --strength\n"
    "  --strength X        0 < X <= 1: how much of the schedule to run from --init\n"
    "  --mask FILE.png     inpainting mask (white = regenerate, black = keep); needs --init\n"
    "  --vae FILE|DIR      SD-VAE for latent models (sd-vae-ft-mse: a diffusers directory or\n"
    "                      .safetensors; docs/VAE.md); without it a latent model's image is\n"
    "                      an approximate colour preview\n"
    "  --threads N         CPU threads (default 0 = all cores)\n"
    "  --device DEV        auto (default), cpu or cuda\n"
    "  --output FILE.png   where to write; with --batch N > 1 the images are FILE-0.png,\n"
    "                      FILE-1.png, … (the index goes before the extension)\n"
    "  --quiet             no progress on stderr\n"
    "  --routing-map FILE.png\n"
    "                      also write which experts processed each token, averaged over the\n"
    "                      steps: mean over the MoE layers, then each layer (experts per\n"
    "                      token for EC-DiT, expert colours for DiT-MoE; docs/ECDIT.md)\n"
    "\n"
    "DMCMC (Denoising Langevin Gibbs, docs/DMCMC.md): about 10 model evaluations per image.\n"
    "  --sampler dmcmc     chains over (image, noise level) + a short integrator; --steps N\n"
    "                      sets the integrator's steps (default 5)\n"
    "  --stream N          keep the chains and emit N rounds of new variations (FILE-0.png,\n"
    "                      FILE-1.png, …; FILE-ROUND-IMAGE.png with --batch), each written as\n"
    "                      soon as it exists; implies --sampler dmcmc\n"
    "  --dmcmc-eta X       Langevin step size (default 0.08)\n"
    "  --dmcmc-skip N      Langevin sweeps per image (default 4)\n"
    "  --dmcmc-integrator NAME\n"
    "                      euler, heun, stochastic-heun, ddim, dpm++2m (default)\n"
    "  --dmcmc-burn-in N   sweeps after the chains' first sample (default 8)\n"
    "  --dmcmc-level HOW   where a chain's noise level comes from: classifier (the model's\n"
    "                      MODEL-levels.safetensors), residual (estimated from the model\n"
    "                      itself; 6 NFE of calibration) or auto (default: the classifier\n"
    "                      when the model has one)\n"
    "The model evaluations per image (and the one-off burn-in) are reported on stderr.\n"
    "\n"
    "Streams for browsing (with --stream N; docs/DMCMC.md, \"Streams\"):\n"
    "  --stream-mode MODE  chains (default: DMCMC chains from noise, as above), new (fresh\n"
    "                      pictures every round: --sampler's plain run with new seeds, or\n"
    "                      DMCMC chains with --sampler dmcmc) or vary (variations of --vary)\n"
    "  --vary FILE.png     variations of this picture: chains start from it (implies\n"
    "                      --stream-mode vary)\n"
    "  --variation-strength X\n"
    "                      0..1 (default 0.5): how far the variations may move from the\n"
    "                      picture (the chains' start level and Langevin step)\n"
    "  --stream-guard D    kick a chain whose new picture is within RMS distance D of its\n"
    "                      previous one (default 0.04 for new and vary, 0 = off)\n"
    "\n"
    "The written paths are printed on stdout, one per line. Ctrl-C stops the run (exit\n"
    "status 130) and writes nothing (a stream keeps the rounds already written).\n";

static const char usage_info[] =
    "Usage: moire info --model FILE\n"
    "       moire info --image FILE.png\n"
    "\n"
    "  --model FILE   print the model's configuration, size, defaults and classes\n"
    "  --image FILE   print the generation settings stored in a PNG (\"parameters\" text,\n"
    "                 its fields, and the \"moire\" JSON); exit status 1 when it has none\n";

static const char usage_forward[] =
    "Usage: moire forward --model FILE --input X.npy --t T (--class N | --prompt TEXT)\n"
    "                     --output Y.npy [--threads N] [--device DEV]\n"
    "\n"
    "Runs one model evaluation. X is [n, C, h, w] or [C, h, w] (float32; float64/16 and\n"
    "int32/64 are converted); t and the class apply to all n. Y is [n, C_out, h, w] (or\n"
    "[C_out, h, w]) float32. T is the DDPM timestep (0..T-1) or the flow time (0..1).\n";

static const char usage_bench[] =
    "Usage: moire bench [--geometry LIST] [--resolution PX] [--batch N] [--steps N]\n"
    "                   [--device DEV] [--precision fp32|bf16] [--threads N]\n"
    "\n"
    "Times the forward pass of random-weight models of the released DiT-MoE geometries,\n"
    "built in memory (no files): classifier-free guidance batched (2 x batch images per\n"
    "step), one warm-up step, then --steps timed steps. Prints ms per step, seconds for the\n"
    "family's default step count (50 rectified-flow steps for XL/G, 250 DDPM for S/B),\n"
    "images/s, peak memory and the achieved weight bandwidth against a measured copy.\n"
    "\n"
    "  --geometry LIST   comma-separated: S/2, B/2, XL/2, G/2, tiny, or GEOMETRY@RES;\n"
    "                    default on CUDA: S/2,B/2,XL/2,G/2 at 256 and XL/2@512;\n"
    "                    on the CPU: S/2 (give a list to run others)\n"
    "  --resolution PX   image size for entries without @RES (default 256)\n"
    "  --batch N         images per step before CFG doubling (default 1)\n"
    "  --steps N         timed steps per model (default 10 on CUDA, 1 on the CPU)\n"
    "  --precision P     CUDA weight storage: bf16 (default) or fp32\n"
    "  --device DEV      auto (default), cpu or cuda\n";

static const char usage_convert[] =
    "Usage: moire convert IN.pt OUT.safetensors\n"
    "\n"
    "Writes the state dict of a PyTorch checkpoint (torch.save, e.g. the released\n"
    "dit_moe_*.pt) as a safetensors file: the same tensors bit for bit in their own dtype,\n"
    "with the configuration (inferred from the keys and shapes) in \"moire.config\" and, for\n"
    "a 1000-class model, the ImageNet class names. {\"ema\": …}, {\"model\": …} and\n"
    "\"module.\" wrappers are removed. The pickle is read with an allow-list and nothing in\n"
    "it is executed; see docs/CHECKPOINTS.md. Written atomically: no partial output.\n"
    "Any command also loads a .pt directly; converting once makes later loads faster and\n"
    "keeps the class names with the model.\n";

static const char usage_eval[] =
    "Usage: moire eval [--model FILE] [--classifier FILE] [--images N] [--classes C]\n"
    "                  [--seed S] [OPTIONS]\n"
    "\n"
    "Measures a model against an image classifier: generates N images spread evenly over\n"
    "C of the classifier's classes (a class's name is the prompt) and reports the FID of\n"
    "their classifier features against the classifier's reference statistics, prompt\n"
    "adherence (how often the prompted class is the classifier's top 1, and among its top\n"
    "5), the model evaluations (NFE) per image and the seconds per image. A classifier with\n"
    "random weights gives meaningless numbers; tools/train/train_classifier.py trains one.\n"
    "\n"
    "  --model FILE        the model; default: $MOIRE_MODEL, else the embedded model\n"
    "  --classifier FILE   the classifier (.safetensors); default: $MOIRE_CLASSIFIER, else\n"
    "                      MODEL-features.safetensors next to the model file\n"
    "  --images N          images to make (default 100; at least 2 for the FID)\n"
    "  --classes C         classes to prompt, 1..min(N, K) of the classifier's K (default\n"
    "                      min(N, K)). Class c of the C is class floor(c*K/C) of the K, and\n"
    "                      image j prompts class floor(j*C/N) of the C: one class each when\n"
    "                      N = C, else runs of about N/C consecutive images per class\n"
    "  --seed S            image j uses seed S + j (default 0; -1 = a random S)\n"
    "  --batch B           images generated together within a class's run (default 8);\n"
    "                      with --sampler dmcmc, images classified together\n"
    "  --sampler, --steps, --cfg, --cfg-mode, --schedule, --eta, --dmcmc-eta, --dmcmc-skip,\n"
    "  --dmcmc-integrator, --dmcmc-burn-in, --dmcmc-level\n"
    "                      as for 'moire generate' (default: the model's settings)\n"
    "  --threads N         CPU threads (default 0 = all cores)\n"
    "  --device DEV        auto (default), cpu or cuda\n"
    "  --json FILE         also write the results as one JSON object\n"
    "  --save-grid FILE.png\n"
    "                      the images as a grid to look at: 10 columns, cells as generated\n"
    "                      (the first 400 images)\n"
    "  --features FILE.npy every image's classifier features, then its prompted class and\n"
    "                      that class's rank (0 = top 1): float32 [N, D + 2], for the\n"
    "                      statistics of tools/eval/ (KID, diversity, recall)\n"
    "  --quiet             no progress on stderr\n"
    "\n"
    "The summary goes to stdout. Images of another size than the classifier's input are\n"
    "resized (area average). A CFG step counts as one evaluation (the conditional and\n"
    "unconditional halves run as one batch). Ctrl-C stops the run (exit status 130) and\n"
    "writes nothing.\n"
    "\n"
    "With --sampler dmcmc each class's run of images is one persistent chain, as in\n"
    "'moire generate --stream': a stream seeded with S + (its first image), burnt in once,\n"
    "then one emission per image. \"NFE per image\" counts an emission as the paper does\n"
    "(skip + integrator + Tweedie); \"NFE per image incl. burn-in\" is every evaluation of\n"
    "the run (burn-in and re-seeds included) divided by N, so fewer classes amortise the\n"
    "burn-in over more images. For the other samplers the two are equal.\n";

static int print_help(const char *command)
{
    if (!command) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(command, "generate") == 0)
        fputs(usage_generate, stdout);
    else if (strcmp(command, "info") == 0)
        fputs(usage_info, stdout);
    else if (strcmp(command, "forward") == 0)
        fputs(usage_forward, stdout);
    else if (strcmp(command, "convert") == 0)
        fputs(usage_convert, stdout);
    else if (strcmp(command, "bench") == 0)
        fputs(usage_bench, stdout);
    else if (strcmp(command, "eval") == 0)
        fputs(usage_eval, stdout);
    else if (strcmp(command, "help") == 0)
        fputs(usage_main, stdout);
    else {
        error_line("unknown command '%s'; the commands are generate, info, forward, convert, "
                   "bench and eval (see 'moire --help')",
                   command);
        return EXIT_USAGE;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------------------------- */

typedef struct option_spec {
    const char *name;  /* without "--"                        */
    bool has_value;
    const char **value; /* where the value (or "1" for flags) goes */
} option_spec;

/* Parses argv[first..] against `specs`. Returns 0 or EXIT_USAGE (message printed). */
static int parse_options(const char *command, int argc, char **argv, int first,
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

static int parse_int(const char *option, const char *text, long min, long max, int *out)
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

static int parse_float(const char *option, const char *text, double min, double max,
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

static int parse_seed(const char *text, uint64_t *out)
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

static int parse_device(const char *text, moire_device *out)
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

/* ------------------------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------------------------- */

/* Checks, before any long computation, that `path` (given with `option`, for the messages)
 * can be created: its directory exists and is writable, and the path is not a directory.
 * Returns 0 or EXIT_ERROR (message printed). */
static int check_output_path(const char *option, const char *path)
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
static int check_image_side(const char *option, const char *path)
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
static char *batch_path(const char *path, int index)
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
static char *stream_path(const char *path, int round, int index)
{
    char *with_round = batch_path(path, round);
    char *out = with_round ? batch_path(with_round, index) : NULL;
    free(with_round);
    return out;
}

/* One line on stderr with the model evaluations a DMCMC run cost (the paper's accounting). */
static void print_dmcmc_nfe(const moire_dmcmc_params *d, const moire_stream_info *info)
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

/* The default model when --model is not given, looked up like the studio and the GIMP plug-in
 * do: $MOIRE_MODEL, then the first *.safetensors (by name) in $MOIRE_DATA_DIR/models, the
 * installed share/moire/models and the source tree's data/models. Returns the path (a static
 * buffer) or NULL; `searched` receives the places looked in, for the error message. */
static const char *find_default_model(char *searched, size_t searched_size)
{
    static char found[8192];
    const char *env = getenv("MOIRE_MODEL");
    if (env && env[0])
        return env;
    const char *data_dir = getenv("MOIRE_DATA_DIR");
    char dirs[3][4096];
    int dir_count = 0;
    if (data_dir && data_dir[0])
        snprintf(dirs[dir_count++], sizeof dirs[0], "%s/models", data_dir);
#ifdef MOIRE_DATADIR
    snprintf(dirs[dir_count++], sizeof dirs[0], "%s/models", MOIRE_DATADIR);
#endif
#ifdef MOIRE_SOURCE_DATADIR
    snprintf(dirs[dir_count++], sizeof dirs[0], "%s/models", MOIRE_SOURCE_DATADIR);
#endif
    searched[0] = '\0';
    for (int d = 0; d < dir_count; d++) {
        size_t used = strlen(searched);
        snprintf(searched + used, searched_size - used, "%s%s", d ? ", " : "", dirs[d]);
        DIR *dir = opendir(dirs[d]);
        if (!dir)
            continue;
        char best[1024] = "";
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            const char *name = entry->d_name;
            size_t len = strlen(name);
            if (moire_is_model_file_name(name) && len < sizeof best && (!best[0] || strcmp(name, best) < 0))
                snprintf(best, sizeof best, "%s", name);
        }
        closedir(dir);
        if (best[0]) {
            snprintf(found, sizeof found, "%.4095s/%.1023s", dirs[d], best);
            return found;
        }
    }
    return NULL;
}

/* --model left out: the default model, or the usage error that says where it was looked for. */
static int default_model_or_usage_error(const char **model_path)
{
    char searched[8192];
    *model_path = find_default_model(searched, sizeof searched);
    if (!*model_path) {
        error_line("no --model given and no default model found (looked at $MOIRE_MODEL and "
                   "in %s); give --model FILE (a .safetensors or .pt model)", searched);
        return EXIT_USAGE;
    }
    return 0;
}

static int load_model(const char *path, moire_model **model)
{
    if (moire_model_load(path, model) != MOIRE_OK)
        return engine_error(NULL);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Ctrl-C
 * ---------------------------------------------------------------------------------------- */

static moire_ctx *volatile g_running_ctx;
static volatile sig_atomic_t g_interrupted;

static void on_sigint(int signal_number)
{
    (void)signal_number;
    g_interrupted = 1;
    moire_ctx *ctx = g_running_ctx;
    if (ctx)
        moire_ctx_cancel(ctx); /* only sets an atomic flag */
}

static void install_sigint(moire_ctx *ctx)
{
    g_running_ctx = ctx;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigaction(SIGINT, &action, NULL);
}

/* ------------------------------------------------------------------------------------------
 * Sampler options (generate and eval)
 * ---------------------------------------------------------------------------------------- */

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

/* Applies the sampler options of `command` to params. `stream` (generate --stream) implies
 * the DMCMC sampler. For DMCMC, *dmcmc receives its settings (--steps are the integrator's) and
 * params->dmcmc points to it, so it must live as long as params. Returns 0 or EXIT_USAGE
 * (message printed). */
static int apply_sampler_options(const char *command, const sampler_options *o, bool stream,
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

/* ------------------------------------------------------------------------------------------
 * generate
 * ---------------------------------------------------------------------------------------- */

typedef struct progress_state {
    bool tty;
    bool quiet;
    int last_decile; /* non-tty: the last 10 % mark printed */
    int last_image;
    bool drawn;      /* tty: a bar is on screen */
    double last_draw; /* tty: elapsed_s of the last redraw (at most ~20 a second) */
} progress_state;

static bool on_progress(const moire_progress *p, void *user_data)
{
    progress_state *state = user_data;
    if (g_interrupted)
        return false;
    if (state->quiet || p->step_count <= 0)
        return true;
    /* The engine may run several images of a batch together, so the label counts the
       batch rather than naming one image. */
    char image[48] = "";
    if (p->image_count > 1)
        snprintf(image, sizeof image, "%d images  ", p->image_count);
    if (state->tty) {
        if (state->drawn && p->step < p->step_count && p->elapsed_s - state->last_draw < 0.05)
            return true;
        state->last_draw = p->elapsed_s;
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int filled = (int)((long)p->step * WIDTH / p->step_count);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = '\0';
        char eta[32] = "";
        if (p->remaining_s >= 60)
            snprintf(eta, sizeof eta, "  %d min %02d s left", (int)(p->remaining_s / 60),
                     (int)p->remaining_s % 60);
        else if (p->remaining_s >= 0)
            snprintf(eta, sizeof eta, "  %.1f s left", p->remaining_s);
        fprintf(stderr, "\r%s[%s] step %d/%d%s\033[K", image, bar, p->step, p->step_count, eta);
        state->drawn = true;
    } else {
        int decile = (int)((long)p->step * 10 / p->step_count);
        if (p->image_index != state->last_image) { /* the next chunk of the batch */
            state->last_image = p->image_index;
            state->last_decile = -1;
        }
        if (decile != state->last_decile) {
            state->last_decile = decile;
            fprintf(stderr, "%sstep %d/%d\n", image, p->step, p->step_count);
        }
    }
    return true;
}

static void end_progress(progress_state *state)
{
    if (state->drawn) {
        fputs("\r\033[K", stderr);
        state->drawn = false;
    }
}

/* A mask as 1 channel: the first channel of gray images, luminance of colour ones. */
static moire_image *mask_to_gray(const moire_image *image)
{
    if (image->channels == 1)
        return NULL; /* use as is */
    moire_image *gray = moire_image_new(image->width, image->height, 1);
    if (!gray)
        return NULL;
    size_t n = (size_t)image->width * (size_t)image->height;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *px = image->pixels + i * (size_t)image->channels;
        gray->pixels[i] = (uint8_t)((299 * px[0] + 587 * px[1] + 114 * px[2] + 500) / 1000);
    }
    return gray;
}

/* Engine warnings (e.g. "latent model shown without the VAE") go to stderr; info and debug
 * messages only with MOIRE_VERBOSE set. */
static void print_engine_log(moire_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level >= MOIRE_LOG_WARNING)
        fprintf(stderr, "moire: warning: %s\n", message);
    else if (getenv("MOIRE_VERBOSE"))
        fprintf(stderr, "moire: %s\n", message);
}

static bool is_text_model(const moire_model_config *config)
{
    return strcmp(config->family, "ec-dit") == 0;
}

/* The routing map of image `index` as PNG: the mean over the MoE layers, then every layer,
 * each tile the image's size scaled up to at least 256 pixels on its short side. */
static int write_routing_map(const moire_routing_map *map, int index, int count,
                             const char *path, const moire_image *image)
{
    const int side = image->width < image->height ? image->width : image->height;
    const int scale = side >= 256 ? 1 : (256 + side - 1) / side;
    char *file = count == 1 ? strdup(path) : batch_path(path, index);
    moire_image *render = NULL;
    int rc = 0;
    if (!file) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    if (moire_routing_map_render(map, index, MOIRE_ROUTING_LAYER_TILED, MOIRE_ROUTING_VIEW_DEFAULT,
                                 image->width * scale, image->height * scale,
                                 &render) != MOIRE_OK ||
        moire_png_save(file, render, NULL, NULL) != MOIRE_OK) {
        rc = engine_error("--routing-map");
    } else {
        printf("%s\n", file);
        fflush(stdout);
    }
    moire_image_free(render);
    free(file);
    return rc;
}

static int cmd_generate(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *class_text = NULL, *negative = NULL,
               *seed_text = NULL, *width_text = NULL, *height_text = NULL, *batch_text = NULL,
               *init_path = NULL, *strength_text = NULL, *mask_path = NULL,
               *threads_text = NULL, *vae_path = NULL, *device_text = NULL, *output = NULL,
               *quiet = NULL, *routing_path = NULL, *stream_text = NULL,
               *stream_mode_text = NULL, *vary_path = NULL, *variation_text = NULL,
               *guard_text = NULL;
    sampler_options sampling = {0};
    const option_spec specs[] = {
        {"model", true, &model_path},        {"prompt", true, &prompt},
        {"class", true, &class_text},        {"negative", true, &negative},
        {"seed", true, &seed_text},          SAMPLER_OPTION_SPECS(sampling),
        {"width", true, &width_text},        {"height", true, &height_text},
        {"batch", true, &batch_text},        {"init", true, &init_path},
        {"strength", true, &strength_text},  {"mask", true, &mask_path},
        {"threads", true, &threads_text},    {"vae", true, &vae_path},
        {"device", true, &device_text},      {"output", true, &output},
        {"quiet", false, &quiet},            {"routing-map", true, &routing_path},
        {"stream", true, &stream_text},      {"stream-mode", true, &stream_mode_text},
        {"vary", true, &vary_path},          {"variation-strength", true, &variation_text},
        {"stream-guard", true, &guard_text},
    };
    int rc = parse_options("generate", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;

    /* 1. Everything that needs no file. */
    if (!model_path && (rc = default_model_or_usage_error(&model_path)))
        return rc;
    if (!output) {
        error_line("generate needs --output FILE.png");
        return EXIT_USAGE;
    }
    if (!prompt && !class_text) {
        error_line("generate needs --prompt TEXT or --class N (what to draw)");
        return EXIT_USAGE;
    }
    if (prompt && class_text) {
        error_line("give either --prompt or --class, not both");
        return EXIT_USAGE;
    }
    if (prompt && !prompt[0]) {
        error_line("--prompt is empty; give a class name of the model or use --class N");
        return EXIT_USAGE;
    }
    moire_generate_params params = moire_generate_params_default();
    params.prompt = prompt;
    params.negative_prompt = negative;
    if (class_text && (rc = parse_int("class", class_text, 0, INT_MAX - 1, &params.class_id)))
        return rc;
    if (seed_text && (rc = parse_seed(seed_text, &params.seed)))
        return rc;
    /* DMCMC (docs/DMCMC.md): --stream implies it. */
    moire_dmcmc_params dmcmc;
    int stream_rounds = 0;
    if (stream_text && (rc = parse_int("stream", stream_text, 1, 100000, &stream_rounds)))
        return rc;
    /* Streams for browsing: moire_stream_open's modes. */
    moire_stream_params stream_params = moire_stream_params_default();
    stream_params.mode = MOIRE_STREAM_CHAINS;
    if (stream_mode_text) {
        if (strcmp(stream_mode_text, "chains") == 0)
            stream_params.mode = MOIRE_STREAM_CHAINS;
        else if (strcmp(stream_mode_text, "new") == 0)
            stream_params.mode = MOIRE_STREAM_NEW_PICTURES;
        else if (strcmp(stream_mode_text, "vary") == 0)
            stream_params.mode = MOIRE_STREAM_VARIATIONS;
        else {
            error_line("--stream-mode %s: use chains, new or vary", stream_mode_text);
            return EXIT_USAGE;
        }
    }
    if (vary_path) {
        if (stream_mode_text && stream_params.mode != MOIRE_STREAM_VARIATIONS) {
            error_line("--vary makes a variations stream; leave out --stream-mode %s",
                       stream_mode_text);
            return EXIT_USAGE;
        }
        stream_params.mode = MOIRE_STREAM_VARIATIONS;
    }
    if ((stream_mode_text || vary_path || variation_text || guard_text) && !stream_text) {
        error_line("--stream-mode, --vary, --variation-strength and --stream-guard shape a "
                   "stream: give --stream N (rounds) too");
        return EXIT_USAGE;
    }
    if (stream_params.mode == MOIRE_STREAM_VARIATIONS && !vary_path) {
        error_line("--stream-mode vary needs --vary FILE.png (the picture to vary)");
        return EXIT_USAGE;
    }
    if (variation_text && stream_params.mode != MOIRE_STREAM_VARIATIONS) {
        error_line("--variation-strength applies to --vary FILE.png");
        return EXIT_USAGE;
    }
    if (variation_text && (rc = parse_float("variation-strength", variation_text, 0.0, 1.0,
                                            false, &stream_params.variation_strength)))
        return rc;
    if (guard_text && stream_params.mode == MOIRE_STREAM_CHAINS) {
        error_line("--stream-guard applies to --stream-mode new or vary");
        return EXIT_USAGE;
    }
    if (guard_text &&
        (rc = parse_float("stream-guard", guard_text, 0.0, 10.0, false, &stream_params.guard_distance)))
        return rc;
    /* --stream implies dmcmc, except for a new-pictures stream, whose sampler is --sampler's */
    const bool stream_forces_dmcmc =
        stream_text != NULL && stream_params.mode != MOIRE_STREAM_NEW_PICTURES;
    if ((rc = apply_sampler_options("generate", &sampling, stream_forces_dmcmc, &params,
                                    &dmcmc)))
        return rc;
    if (width_text && (rc = parse_int("width", width_text, 1, MOIRE_MAX_IMAGE_SIDE, &params.width)))
        return rc;
    if (height_text && (rc = parse_int("height", height_text, 1, MOIRE_MAX_IMAGE_SIDE, &params.height)))
        return rc;
    if (batch_text && (rc = parse_int("batch", batch_text, 1, 10000, &params.batch_count)))
        return rc;
    if (strength_text && !init_path) {
        error_line("--strength applies to img2img only; give --init FILE.png too");
        return EXIT_USAGE;
    }
    if (mask_path && !init_path) {
        error_line("--mask needs --init FILE.png (the image to inpaint)");
        return EXIT_USAGE;
    }
    if (init_path && !strength_text) {
        error_line("--init needs --strength X (0 < X <= 1: how much to change the image; "
                   "0.75 is a usual value)");
        return EXIT_USAGE;
    }
    if (strength_text &&
        (rc = parse_float("strength", strength_text, 0.0, 1.0, true, &params.strength)))
        return rc;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log;
    if (threads_text && (rc = parse_int("threads", threads_text, 0, MOIRE_MAX_THREADS, &ctx_params.n_threads)))
        return rc;
    if ((rc = parse_device(device_text, &ctx_params.device)))
        return rc;

    /* 2. The output paths, before the long run (a stream writes rounds × batch files:
     *    out-ROUND.png, or out-ROUND-IMAGE.png for a batch). */
    int count = params.batch_count * (stream_rounds > 0 ? stream_rounds : 1);
    char **paths = calloc((size_t)count, sizeof *paths);
    if (!paths) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    moire_model *model = NULL;
    moire_vae *vae = NULL;
    moire_ctx *ctx = NULL;
    moire_image *init = NULL, *mask = NULL, *mask_gray = NULL;
    moire_image **images = NULL;
    int image_count = 0;
    rc = 0;
    for (int i = 0; i < count && !rc; i++) {
        if (stream_rounds > 0 && params.batch_count > 1)
            paths[i] = stream_path(output, i / params.batch_count, i % params.batch_count);
        else
            paths[i] = count == 1 ? strdup(output) : batch_path(output, i);
        if (!paths[i]) {
            error_line("out of memory");
            rc = EXIT_ERROR;
        }
    }
    if (!rc)
        rc = check_output_path("--output", paths[0]);
    if (!rc && routing_path)
        rc = check_output_path("--routing-map", routing_path);
    moire_routing_map *routing_map = NULL;
    if (routing_path)
        params.routing_map = &routing_map;

    /* 3. The model and what depends on it. */
    if (!rc)
        rc = load_model(model_path, &model);
    if (!rc) {
        const moire_model_config *config = moire_model_get_config(model);
        int scale = config->space == MOIRE_SPACE_LATENT ? 8 : 1;
        int multiple = scale * config->patch_size;
        const char *what = config->space == MOIRE_SPACE_LATENT
                               ? "latent model: 8 x patch size"
                               : "pixel model: the patch size";
        if (params.width % multiple || params.height % multiple) {
            bool bad_width = params.width % multiple != 0;
            int value = bad_width ? params.width : params.height;
            int lower = value / multiple * multiple, upper = lower + multiple;
            char suggestion[64];
            if (lower > 0)
                snprintf(suggestion, sizeof suggestion, "%d or %d", lower, upper);
            else
                snprintf(suggestion, sizeof suggestion, "%d", upper);
            error_line("--%s %d is not a multiple of %d (%s); use e.g. %s",
                       bad_width ? "width" : "height", value, multiple, what, suggestion);
            rc = EXIT_ERROR;
        } else if (is_text_model(config) && class_text) {
            error_line("--class: %s is text-conditioned; describe the image with --prompt",
                       moire_model_name(model));
            rc = EXIT_ERROR;
        } else if (params.class_id >= config->num_classes) {
            error_line("--class %d is out of range: this model has classes 0..%d",
                       params.class_id, config->num_classes - 1);
            rc = EXIT_ERROR;
        } else if (prompt && !is_text_model(config)) {
            int class_id;
            if (moire_model_resolve_class(model, prompt, &class_id) != MOIRE_OK)
                rc = engine_error("--prompt");
        }
        if (!rc && negative && negative[0] && !is_text_model(config)) {
            int class_id;
            if (moire_model_resolve_class(model, negative, &class_id) != MOIRE_OK)
                rc = engine_error("--negative");
        }
    }
    if (!rc && vae_path) {
        if (moire_vae_load(vae_path, &vae) != MOIRE_OK)
            rc = engine_error("--vae");
        else
            params.vae = vae;
    }
    /* the declared size first: decoding costs width·height·4 bytes, and an image larger than
       any generation (a 1 MB PNG may declare 16384², 1 GB of pixels) is refused unread */
    if (!rc && init_path && check_image_side("--init", init_path))
        rc = EXIT_ERROR;
    if (!rc && mask_path && check_image_side("--mask", mask_path))
        rc = EXIT_ERROR;
    if (!rc && init_path) {
        if (moire_png_load(init_path, &init, NULL, NULL) != MOIRE_OK)
            rc = engine_error("--init");
        else
            params.init_image = init;
    }
    moire_image *vary = NULL;
    if (!rc && vary_path) {
        if (moire_png_load(vary_path, &vary, NULL, NULL) != MOIRE_OK)
            rc = engine_error("--vary");
        else
            stream_params.source = vary;
    }
    if (!rc && mask_path) {
        if (moire_png_load(mask_path, &mask, NULL, NULL) != MOIRE_OK) {
            rc = engine_error("--mask");
        } else {
            mask_gray = mask_to_gray(mask);
            if (mask->channels != 1 && !mask_gray)
                rc = engine_error("--mask");
            params.mask = mask_gray ? mask_gray : mask;
        }
    }
    if (!rc && moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK)
        rc = engine_error("--device");

    /* 4. The run. */
    if (!rc) {
        progress_state state = {.tty = isatty(2) != 0, .quiet = quiet != NULL,
                                .last_decile = -1, .last_image = 0};
        moire_callbacks callbacks;
        memset(&callbacks, 0, sizeof callbacks);
        callbacks.progress = on_progress;
        callbacks.user_data = &state;
        install_sigint(ctx);
        moire_status status = MOIRE_OK;
        int stream_written = 0;
        if (stream_rounds > 0) {
            /* Each round's files are written as soon as they exist, so an artist can watch
             * the variations arrive (and Ctrl-C keeps what was already written). */
            moire_stream *stream = NULL;
            status = moire_stream_open(ctx, model, &params, &stream_params, &callbacks, &stream);
            moire_stream_info opened;
            moire_stream_get_info(stream, &opened);
            for (int round = 0; status == MOIRE_OK && round < stream_rounds; round++) {
                moire_image **batch = NULL;
                int n = 0;
                status = moire_stream_next(stream, &batch, &n);
                for (int i = 0; status == MOIRE_OK && i < n; i++) {
                    const int index = round * params.batch_count + i;
                    /* a plain new-pictures round r uses seeds seed + r·batch + i */
                    const int seed_index = opened.chains ? i : index;
                    char *parameters = moire_format_parameters(model, &params, seed_index);
                    char *json = moire_format_settings_json(model, &params, seed_index);
                    if (!parameters || !json)
                        status = MOIRE_ERROR_OUT_OF_MEMORY;
                    else
                        status = moire_png_save(paths[index], batch[i], parameters, json);
                    if (status == MOIRE_OK && !quiet)
                        end_progress(&state);
                    if (status == MOIRE_OK) {
                        printf("%s\n", paths[index]);
                        stream_written++;
                    }
                    fflush(stdout);
                    free(parameters);
                    free(json);
                }
                moire_images_free(batch, n);
            }
            moire_stream_info info;
            moire_stream_get_info(stream, &info);
            if (status == MOIRE_OK && info.chains)
                print_dmcmc_nfe(&dmcmc, &info);
            else if (status == MOIRE_OK)
                fprintf(stderr, "moire: new pictures: %d NFE per image, %d per image slot in "
                                "all\n", info.nfe_per_image, info.nfe_total);
            if (status == MOIRE_OK && stream_params.mode != MOIRE_STREAM_CHAINS && info.chains)
                fprintf(stderr, "moire: diversity guard: %d kick(s)\n", info.kicks);
            moire_stream_free(stream);
            image_count = 0; /* written already */
        } else {
            status = moire_generate(ctx, model, &params, &callbacks, &images, &image_count);
            if (status == MOIRE_OK && params.sampler == MOIRE_SAMPLER_DMCMC)
                print_dmcmc_nfe(&dmcmc, NULL);
        }
        g_running_ctx = NULL;
        signal(SIGINT, SIG_DFL);
        end_progress(&state);
        if ((status == MOIRE_ERROR_CANCELLED || g_interrupted) && stream_written > 0) {
            fprintf(stderr, "moire: interrupted; the %d image(s) listed above were written\n",
                    stream_written);
            rc = EXIT_INTERRUPTED;
        } else if (status == MOIRE_ERROR_CANCELLED || g_interrupted) {
            fprintf(stderr, "moire: interrupted; nothing was written\n");
            rc = EXIT_INTERRUPTED;
        } else if (status != MOIRE_OK) {
            rc = engine_error(NULL);
        } else if (stream_rounds == 0 && image_count != count) {
            error_line("the engine returned %d images instead of %d", image_count, count);
            rc = EXIT_ERROR;
        }
    }

    /* 5. The files. */
    for (int i = 0; !rc && i < image_count; i++) {
        char *parameters = moire_format_parameters(model, &params, i);
        char *json = moire_format_settings_json(model, &params, i);
        if (!parameters || !json) {
            error_line("out of memory formatting the metadata");
            rc = EXIT_ERROR;
        } else if (moire_png_save(paths[i], images[i], parameters, json) != MOIRE_OK) {
            rc = engine_error(NULL);
        } else {
            printf("%s\n", paths[i]);
            fflush(stdout);
        }
        free(parameters);
        free(json);
    }
    for (int i = 0; !rc && routing_map && i < image_count; i++)
        rc = write_routing_map(routing_map, i, count, routing_path, images[i]);

    moire_routing_map_free(routing_map);
    moire_images_free(images, image_count);
    moire_ctx_free(ctx);
    moire_image_free(init);
    moire_image_free(mask);
    moire_image_free(vary);
    moire_image_free(mask_gray);
    moire_vae_free(vae);
    moire_model_free(model);
    for (int i = 0; i < count; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * info
 * ---------------------------------------------------------------------------------------- */

/* The EC-DiT part of `moire info`: routing, MoE layout, text encoder. */
static void print_ecdit_info(const moire_model_config *c)
{
    const int tokens = (c->input_size / c->patch_size) * (c->input_size / c->patch_size);
    const int group = c->routing_group_tokens > 0 && c->routing_group_tokens < tokens
                          ? c->routing_group_tokens : tokens;
    const double cap = ceil((double)group * c->capacity_factor / c->num_experts);
    printf("experts:           %d routed, expert choice: capacity factor %g, each expert takes "
           "%d of every %d tokens; width %d; shared width %d\n", c->num_experts,
           (double)c->capacity_factor, cap > group ? group : (int)cap, group, c->expert_hidden,
           c->shared_expert_hidden);
    if (group == tokens)
        printf("routing groups:    one image\n");
    else
        printf("routing groups:    %d consecutive tokens of one image (the last one shorter)\n",
               group);
    printf("MoE blocks:       ");
    int moe = 0;
    for (int i = 0; i < c->depth; i++)
        if (c->moe_every > 0 && i % c->moe_every == c->moe_every - 1) {
            printf("%s %d", moe ? "," : "", i);
            moe++;
        }
    printf("%s (of %d); dense SwiGLU width %d\n", moe ? "" : " none", c->depth, c->dense_hidden);
    printf("text encoder:      %d layers, hidden %d, %d heads, MLP %d, up to %d tokens, "
           "vocabulary of %d words\n", c->text_layers, c->text_hidden, c->text_heads,
           c->text_mlp_hidden, c->text_max_tokens, c->text_vocab_size);
}

static int info_model(const char *path)
{
    moire_model *model = NULL;
    int rc = load_model(path, &model);
    if (rc)
        return rc;
    const moire_model_config *c = moire_model_get_config(model);
    moire_sampler sampler;
    int steps;
    float cfg;
    char number[32];
    moire_model_get_defaults(model, &sampler, &steps, &cfg);
    int64_t params = moire_model_parameter_count(model);
    int scale = c->space == MOIRE_SPACE_LATENT ? 8 : 1;
    printf("model:             %s\n", moire_model_name(model));
    printf("family:            %s\n", c->family);
    printf("parameters:        %" PRId64 " (%.2f M)\n", params, (double)params / 1e6);
    printf("dtype:             %s\n", moire_model_dtype_name(model));
    printf("depth:             %d\n", c->depth);
    printf("hidden size:       %d\n", c->hidden_size);
    printf("heads:             %d (head dim %d)\n", c->num_heads,
           c->num_heads ? c->hidden_size / c->num_heads : 0);
    printf("patch size:        %d\n", c->patch_size);
    printf("channels:          %d in, %d out%s\n", c->in_channels, c->out_channels,
           c->learn_sigma ? " (learned sigma)" : "");
    if (is_text_model(c)) {
        print_ecdit_info(c);
    } else {
        printf("experts:           %d routed, top-%d, width %d; shared width %d\n",
               c->num_experts, c->top_k, c->expert_hidden, c->shared_expert_hidden);
    }
    printf("attention layout:  %s\n", c->attention_layout != MOIRE_ATTENTION_QK_NORM
                                          ? "qkv (attn.qkv, attn.proj)"
                                      : is_text_model(c)
                                          ? "qk-norm (attn.qkv, q_norm/k_norm, attn.proj)"
                                          : "qk-norm (attn.Wqkv, q_norm/k_norm, out_proj)");
    printf("objective:         %s\n", c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW
                                          ? "rectified flow (v-prediction)"
                                          : "DDPM (epsilon-prediction)");
    if (c->objective == MOIRE_OBJECTIVE_DDPM_EPS)
        printf("train timesteps:   %d, beta %g..%g (linear)\n", c->num_train_timesteps,
               (double)c->beta_start, (double)c->beta_end);
    printf("space:             %s\n", c->space == MOIRE_SPACE_LATENT ? "latent (SD-VAE, /8)"
                                                                     : "pixel");
    printf("input size:        %d (images %dx%d)\n", c->input_size, c->input_size * scale,
           c->input_size * scale);
    printf("layernorm eps:     %g\n", (double)c->layernorm_eps);
    printf("defaults:          sampler %s, %d steps, CFG %s\n", moire_sampler_name(sampler),
           steps, moire_format_float(cfg, number, sizeof number));
    const moire_classifier *levels = moire_model_level_classifier(model);
    if (levels)
        printf("noise levels:      a classifier beside the model (%d bins) for --sampler dmcmc\n",
               moire_classifier_num_classes(levels));
    else
        printf("noise levels:      no classifier; --sampler dmcmc estimates them from the model\n");
    if (is_text_model(c)) {
        printf("conditioning:      text prompts (--prompt; \"\" = unconditional, --negative)\n");
        moire_model_free(model);
        return 0;
    }
    printf("classes:           %d\n", c->num_classes);
    int shown = 0;
    for (int i = 0; i < c->num_classes && shown < 5; i++) {
        const char *name = moire_model_class_name(model, i);
        if (!name)
            break;
        printf("  %d: %s\n", i, name);
        shown++;
    }
    if (shown == 0)
        printf("  (no class names in the file; use --class N)\n");
    else if (shown < c->num_classes)
        printf("  …\n");
    moire_model_free(model);
    return 0;
}

static int info_image(const char *path)
{
    /* the size and texts only: no pixel is decoded (a hostile file declaring 16384² would
       otherwise cost a gigabyte just to print its settings) */
    moire_png_info info;
    if (moire_png_read_info(path, &info) != MOIRE_OK)
        return engine_error(NULL);
    char *parameters = info.parameters, *json = info.moire_json;
    int rc = 0;
    printf("image:             %s (%dx%d, %d channel%s)\n", path, info.width, info.height,
           info.channels, info.channels == 1 ? "" : "s");
    if (!parameters && !json) {
        error_line("%s has no generation settings (no \"parameters\" or \"moire\" text chunk)",
                   path);
        rc = EXIT_ERROR;
    }
    if (parameters) {
        printf("parameters:\n%s\n\n", parameters);
        moire_parameters p;
        if (moire_parse_parameters(parameters, &p) == MOIRE_OK) {
            char number[32];
            printf("prompt:            %s\n", p.prompt ? p.prompt : "");
            if (p.negative_prompt && p.negative_prompt[0])
                printf("negative prompt:   %s\n", p.negative_prompt);
            if (p.steps)
                printf("steps:             %d\n", p.steps);
            if (p.sampler)
                printf("sampler:           %s\n", p.sampler);
            if (p.schedule)
                printf("schedule:          %s\n", p.schedule);
            if (!isnan(p.cfg_scale))
                printf("cfg scale:         %s\n",
                       moire_format_float(p.cfg_scale, number, sizeof number));
            if (p.has_seed)
                printf("seed:              %" PRIu64 "\n", p.seed);
            if (p.width)
                printf("size:              %dx%d\n", p.width, p.height);
            if (p.model)
                printf("model:             %s\n", p.model);
            if (!isnan(p.denoising_strength))
                printf("denoising strength: %s\n",
                       moire_format_float(p.denoising_strength, number, sizeof number));
            if (p.version)
                printf("version:           %s\n", p.version);
            moire_parameters_clear(&p);
        }
    }
    if (json)
        printf("moire:             %s\n", json);
    moire_png_info_clear(&info);
    return rc;
}

static int cmd_info(int argc, char **argv)
{
    const char *model_path = NULL, *image_path = NULL;
    const option_spec specs[] = {{"model", true, &model_path}, {"image", true, &image_path}};
    int rc = parse_options("info", argc, argv, 2, specs, 2);
    if (rc)
        return rc;
    if (!model_path == !image_path) {
        error_line("info needs exactly one of --model FILE or --image FILE.png");
        return EXIT_USAGE;
    }
    return model_path ? info_model(model_path) : info_image(image_path);
}

/* ------------------------------------------------------------------------------------------
 * forward
 * ---------------------------------------------------------------------------------------- */

static int cmd_forward(int argc, char **argv)
{
    const char *model_path = NULL, *input = NULL, *t_text = NULL, *class_text = NULL,
               *prompt = NULL, *output = NULL, *threads_text = NULL, *device_text = NULL;
    const option_spec specs[] = {
        {"model", true, &model_path},     {"input", true, &input},
        {"t", true, &t_text},             {"class", true, &class_text},
        {"prompt", true, &prompt},        {"output", true, &output},
        {"threads", true, &threads_text}, {"device", true, &device_text},
    };
    int rc = parse_options("forward", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;
    if (!model_path || !input || !t_text || !output) {
        error_line("forward needs --model, --input, --t and --output (see 'moire help "
                   "forward')");
        return EXIT_USAGE;
    }
    if (!class_text == !prompt) {
        error_line("forward needs exactly one of --class N or --prompt TEXT");
        return EXIT_USAGE;
    }
    float t;
    if ((rc = parse_float("t", t_text, 0.0, 1e6, false, &t)))
        return rc;
    int class_id = -1;
    if (class_text && (rc = parse_int("class", class_text, 0, INT_MAX, &class_id)))
        return rc;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log;
    if (threads_text && (rc = parse_int("threads", threads_text, 0, MOIRE_MAX_THREADS, &ctx_params.n_threads)))
        return rc;
    if ((rc = parse_device(device_text, &ctx_params.device)))
        return rc;
    if ((rc = check_output_path("--output", output)))
        return rc;

    moire_npy x = {0};
    moire_model *model = NULL;
    moire_ctx *ctx = NULL;
    float *t_all = NULL, *out = NULL;
    int32_t *classes = NULL;
    if (moire_npy_load(input, &x) != MOIRE_OK) {
        rc = engine_error("--input");
        goto done;
    }
    if ((rc = load_model(model_path, &model)))
        goto done;
    const moire_model_config *c = moire_model_get_config(model);
    if (x.ndim != 3 && x.ndim != 4) {
        error_line("--input %s: shape has %d dimensions; expected [n, C, h, w] or [C, h, w]",
                   input, x.ndim);
        rc = EXIT_ERROR;
        goto done;
    }
    int64_t n = x.ndim == 4 ? x.shape[0] : 1;
    int64_t channels = x.shape[x.ndim - 3], h = x.shape[x.ndim - 2], w = x.shape[x.ndim - 1];
    if (channels != c->in_channels) {
        error_line("--input %s: %lld channels, but the model takes %d", input,
                   (long long)channels, c->in_channels);
        rc = EXIT_ERROR;
        goto done;
    }
    if (n < 1 || h < 1 || w < 1 || n > 4096 || h > 4096 || w > 4096 || h % c->patch_size ||
        w % c->patch_size) {
        error_line("--input %s: n=%lld, h=%lld, w=%lld; n must be 1..4096 and h, w positive "
                   "multiples of the patch size %d",
                   input, (long long)n, (long long)h, (long long)w, c->patch_size);
        rc = EXIT_ERROR;
        goto done;
    }
    if (is_text_model(c) && !prompt) {
        error_line("--class: %s is text-conditioned; give --prompt TEXT", moire_model_name(model));
        rc = EXIT_ERROR;
        goto done;
    }
    if (class_text && class_id > c->num_classes) {
        error_line("--class %d is out of range: use 0..%d (%d = the null class)", class_id,
                   c->num_classes, c->num_classes);
        rc = EXIT_ERROR;
        goto done;
    }
    if (prompt && !is_text_model(c) &&
        moire_model_resolve_class(model, prompt, &class_id) != MOIRE_OK) {
        rc = engine_error("--prompt");
        goto done;
    }
    if (c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW && t > 1.0f) {
        error_line("--t %s is out of range for a rectified-flow model: use 0..1", t_text);
        rc = EXIT_ERROR;
        goto done;
    }
    if (c->objective == MOIRE_OBJECTIVE_DDPM_EPS && t > (float)(c->num_train_timesteps - 1)) {
        error_line("--t %s is out of range for this DDPM model: use 0..%d", t_text,
                   c->num_train_timesteps - 1);
        rc = EXIT_ERROR;
        goto done;
    }
    t_all = malloc((size_t)n * sizeof *t_all);
    classes = malloc((size_t)n * sizeof *classes);
    out = malloc((size_t)n * (size_t)c->out_channels * (size_t)h * (size_t)w * sizeof *out);
    if (!t_all || !classes || !out) {
        error_line("out of memory");
        rc = EXIT_ERROR;
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        t_all[i] = t;
        classes[i] = class_id;
    }
    if (moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK) {
        rc = engine_error("--device");
        goto done;
    }
    install_sigint(ctx);
    moire_status status = MOIRE_OK;
    if (is_text_model(c)) {
        const char **prompts = malloc((size_t)n * sizeof *prompts);
        for (int64_t i = 0; prompts && i < n; i++)
            prompts[i] = prompt;
        status = prompts ? moire_forward_text(ctx, model, (int)n, (int)h, (int)w, x.data, t_all,
                                              prompts, out)
                         : MOIRE_ERROR_OUT_OF_MEMORY;
        free(prompts);
    } else {
        status = moire_forward(ctx, model, (int)n, (int)h, (int)w, x.data, t_all, classes, out);
    }
    g_running_ctx = NULL;
    signal(SIGINT, SIG_DFL);
    if (status == MOIRE_ERROR_CANCELLED || g_interrupted) {
        fprintf(stderr, "moire: interrupted; nothing was written\n");
        rc = EXIT_INTERRUPTED;
        goto done;
    }
    if (status != MOIRE_OK) {
        rc = engine_error(NULL);
        goto done;
    }
    int64_t shape[4] = {n, c->out_channels, h, w};
    if (x.ndim == 4)
        status = moire_npy_save(output, 4, shape, out);
    else
        status = moire_npy_save(output, 3, shape + 1, out);
    if (status != MOIRE_OK) {
        rc = engine_error(NULL);
        goto done;
    }
    printf("%s\n", output);
done:
    moire_ctx_free(ctx);
    moire_model_free(model);
    moire_npy_free(&x);
    free(t_all);
    free(classes);
    free(out);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------
 * convert
 * ---------------------------------------------------------------------------------------- */

static int cmd_convert(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL};
    int count = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_convert, stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            error_line("convert: unknown option '%s' (see 'moire help convert')", argv[i]);
            return EXIT_USAGE;
        }
        if (count == 2) {
            error_line("convert takes two paths, IN.pt and OUT.safetensors (see 'moire help "
                       "convert')");
            return EXIT_USAGE;
        }
        paths[count++] = argv[i];
    }
    if (count != 2) {
        error_line("convert needs an input checkpoint and an output path: moire convert IN.pt "
                   "OUT.safetensors");
        return EXIT_USAGE;
    }
    if (check_output_path("the output", paths[1]) != 0)
        return EXIT_ERROR;
    moire_convert_report report;
    if (moire_convert_checkpoint(paths[0], paths[1], &report) != MOIRE_OK)
        return engine_error(NULL);
    const moire_model_config *c = &report.config;
    printf("%s\n", paths[1]);
    fprintf(stderr, "moire: wrote %d tensors (%s): dit-moe %s layout, depth %d, hidden %d, "
            "%d experts (top-%d), %d classes, %s",
            report.tensor_count, report.dtype_name,
            c->attention_layout == MOIRE_ATTENTION_QK_NORM ? "qk-norm (XL/G)" : "qkv (S/B)",
            c->depth, c->hidden_size, c->num_experts, c->top_k, c->num_classes,
            c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW ? "rectified flow" : "DDPM-eps");
    if (report.wrapper[0])
        fprintf(stderr, "; unwrapped {\"%s\": ...}", report.wrapper);
    if (report.stripped_prefix)
        fprintf(stderr, "; removed the 'module.' key prefix");
    if (report.skipped_entries)
        fprintf(stderr, "; skipped %d non-tensor entries", report.skipped_entries);
    if (report.class_names_written)
        fprintf(stderr, "; ImageNet class names included");
    fputc('\n', stderr);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * bench
 * ---------------------------------------------------------------------------------------- */

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One row: a geometry at a resolution. Returns 0, or EXIT_ERROR after printing the row's
 * error (the table goes on with the next row). */
static int bench_row(moire_ctx *ctx, const moire_bench_geometry *g, int resolution, int batch,
                     int steps)
{
    moire_model *model = NULL;
    if (moire_bench_model_new(g, resolution, &model) != MOIRE_OK)
        return engine_error(g->name);
    const moire_model_config *c = moire_model_get_config(model);
    const int n = 2 * batch, side = resolution / 8;
    const size_t in_size = (size_t)c->in_channels * side * side;
    float *x = malloc((size_t)n * in_size * sizeof(float));
    float *out = malloc((size_t)n * c->out_channels * side * side * sizeof(float));
    float *t = malloc((size_t)n * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    int rc = 0;
    if (!x || !out || !t || !y) {
        error_line("out of memory");
        rc = EXIT_ERROR;
        goto done;
    }
    uint32_t state = 12345;
    for (size_t i = 0; i < (size_t)n * in_size; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(state >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    for (int i = 0; i < n; i++) {
        t[i] = c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW ? 0.5f : 500.0f;
        y[i] = i < batch ? 207 : c->num_classes; /* conditional half, then the null class */
    }
    /* Warm-up: uploads the weights, sizes the buffers, picks the GEMM algorithms. */
    if (moire_forward(ctx, model, n, side, side, x, t, y, out) != MOIRE_OK) {
        rc = engine_error(g->name);
        goto done;
    }
    const double start = wall_seconds();
    for (int s = 0; s < steps; s++)
        if (moire_forward(ctx, model, n, side, side, x, t, y, out) != MOIRE_OK) {
            rc = engine_error(g->name);
            goto done;
        }
    const double step = (wall_seconds() - start) / steps;
    moire_bench_stats stats;
    if (moire_bench_stats_get(ctx, &stats) != MOIRE_OK) {
        rc = engine_error("bench");
        goto done;
    }
    const int run_steps = c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW ? 50 : 250;
    const double weight_bytes =
        (double)moire_model_parameter_count(model) * stats.weight_bytes_per_parameter;
    const double gbps = weight_bytes / step / 1e9;
    char label[32];
    snprintf(label, sizeof label, "%s-%dE%dA", g->name, g->experts, g->top_k);
    printf("%-14s %5d %6d %9.2f %5d %9.3f %9.3f %10.2f %8.1f %6.0f%%\n", label, resolution,
           batch, step * 1e3, run_steps, step * run_steps, batch / (step * run_steps),
           stats.memory_peak_bytes / 1e9, gbps,
           stats.copy_bytes_per_s > 0 ? 100.0 * gbps * 1e9 / stats.copy_bytes_per_s : 0.0);
    fflush(stdout);
done:
    free(x), free(out), free(t), free(y);
    moire_model_free(model);
    return rc;
}

static int cmd_bench(int argc, char **argv)
{
    const char *geometry_text = NULL, *resolution_text = NULL, *batch_text = NULL,
               *steps_text = NULL, *device_text = NULL, *precision = NULL,
               *threads_text = NULL;
    const option_spec specs[] = {
        {"geometry", true, &geometry_text}, {"resolution", true, &resolution_text},
        {"batch", true, &batch_text},       {"steps", true, &steps_text},
        {"device", true, &device_text},     {"precision", true, &precision},
        {"threads", true, &threads_text},
    };
    int rc = parse_options("bench", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;
    int resolution = 256, batch = 1, steps = 0;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log;
    if ((resolution_text && (rc = parse_int("resolution", resolution_text, 16, 4096, &resolution))) ||
        (batch_text && (rc = parse_int("batch", batch_text, 1, 1024, &batch))) ||
        (steps_text && (rc = parse_int("steps", steps_text, 1, 100000, &steps))) ||
        (threads_text && (rc = parse_int("threads", threads_text, 0, MOIRE_MAX_THREADS, &ctx_params.n_threads))) ||
        (rc = parse_device(device_text, &ctx_params.device)))
        return rc;
    if (precision && strcmp(precision, "bf16") != 0 && strcmp(precision, "fp32") != 0) {
        error_line("--precision: use bf16 or fp32");
        return EXIT_USAGE;
    }
    /* The CUDA backend reads its weight storage when the context starts (docs/CUDA.md). */
    setenv("MOIRE_CUDA_PRECISION", precision ? precision : "bf16", 1);
    moire_ctx *ctx = NULL;
    if (moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK)
        return engine_error("--device");
    const bool cuda = strcmp(moire_ctx_backend_name(ctx), "cuda") == 0;
    if (!steps)
        steps = cuda ? 10 : 1;
    const char *list = geometry_text ? geometry_text
                                     : cuda ? "S/2,B/2,XL/2,G/2,XL/2@512" : "S/2";
    moire_bench_stats stats;
    if (moire_bench_stats_get(ctx, &stats) != MOIRE_OK) {
        moire_ctx_free(ctx);
        return engine_error("bench");
    }
    printf("moire bench: %s backend, %s%s; copy %.0f GB/s; CFG batched, %d timed step(s)\n",
           moire_ctx_backend_name(ctx), stats.device_name,
           cuda ? (stats.weight_bytes_per_parameter == 2 ? ", bf16 weights" : ", fp32 weights")
                : "",
           stats.copy_bytes_per_s / 1e9, steps);
    printf("%-14s %5s %6s %9s %5s %9s %9s %10s %8s %7s\n", "model", "res", "batch", "ms/step",
           "steps", "s/run", "images/s", "peak GB", "GB/s", "of copy");
    char *copy = strdup(list);
    int failures = 0;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        int res = resolution;
        char *at = strchr(item, '@');
        if (at) {
            *at = '\0';
            if ((rc = parse_int("geometry", at + 1, 16, 4096, &res))) {
                free(copy);
                moire_ctx_free(ctx);
                return rc;
            }
        }
        const moire_bench_geometry *g = moire_bench_geometry_find(item);
        if (!g) {
            error_line("--geometry: unknown geometry '%s'; use S/2, B/2, XL/2, G/2 or tiny", item);
            free(copy);
            moire_ctx_free(ctx);
            return EXIT_USAGE;
        }
        failures += bench_row(ctx, g, res, batch, steps) != 0;
    }
    free(copy);
    moire_ctx_free(ctx);
    return failures ? EXIT_ERROR : 0;
}

/* ------------------------------------------------------------------------------------------
 * eval
 * ---------------------------------------------------------------------------------------- */

#define EVAL_DEFAULT_IMAGES 100
#define EVAL_DEFAULT_BATCH  8   /* the engine's own chunk of images per sampling run */
#define EVAL_GRID_COLUMNS   10
#define EVAL_GRID_MAX       400 /* images kept for --save-grid                        */

/* The classifier that belongs to a model: data/models/moire-emoji.safetensors →
 * data/models/moire-emoji-features.safetensors. Caller frees. */
static char *default_classifier_path(const char *model_path)
{
    const char *slash = strrchr(model_path, '/');
    const char *dot = strrchr(model_path, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : model_path))
        dot = model_path + strlen(model_path);
    const size_t size = (size_t)(dot - model_path) + sizeof "-features.safetensors";
    char *out = malloc(size);
    if (out)
        snprintf(out, size, "%.*s-features.safetensors", (int)(dot - model_path), model_path);
    return out;
}

/* Item j of n spread evenly over k slots (k <= n): floor(j*k/n), so consecutive items share
 * a slot. It picks the class of each image (image j of N → class of the C run) and the
 * classifier class behind each of the C (class c of C → class of the K). A run of images
 * shares its prompt, so it is generated as one batch (or one DMCMC chain) with seeds S + j,
 * and the images do not depend on --batch. */
static int eval_class_of(int j, int n, int k)
{
    return (int)((int64_t)j * k / n);
}

/* `src` resampled to size × size by area averaging: each output pixel is the mean of the
 * source area it covers (partial pixels weighted), so a downscale keeps thin strokes. */
static moire_image *resize_area(const moire_image *src, int size)
{
    moire_image *dst = moire_image_new(size, size, src->channels);
    if (!dst)
        return NULL;
    const double step_x = (double)src->width / size, step_y = (double)src->height / size;
    for (int y = 0; y < size; y++) {
        const double y0 = y * step_y, y1 = y0 + step_y;
        for (int x = 0; x < size; x++) {
            const double x0 = x * step_x, x1 = x0 + step_x;
            double sum[4] = {0, 0, 0, 0}, area = 0.0;
            for (int py = (int)y0; py < src->height && py < y1; py++) {
                const double wy = fmin(py + 1.0, y1) - fmax((double)py, y0);
                for (int px = (int)x0; wy > 0.0 && px < src->width && px < x1; px++) {
                    const double wx = fmin(px + 1.0, x1) - fmax((double)px, x0);
                    if (wx <= 0.0)
                        continue;
                    const uint8_t *pixel =
                        src->pixels + ((size_t)py * src->width + (size_t)px) * src->channels;
                    for (int c = 0; c < src->channels && c < 4; c++)
                        sum[c] += wx * wy * pixel[c];
                    area += wx * wy;
                }
            }
            uint8_t *out = dst->pixels + ((size_t)y * size + (size_t)x) * dst->channels;
            for (int c = 0; c < dst->channels && c < 4; c++)
                out[c] = (uint8_t)lround(area > 0.0 ? sum[c] / area : 0.0);
        }
    }
    return dst;
}

/* Where the prompted class ranks among logits [k]: 0 = the classifier's top 1. Ties go to
 * the lower index, as an argmax would. */
static int class_rank(const float *logits, int k, int target)
{
    int rank = 0;
    for (int i = 0; i < k; i++)
        if (logits[i] > logits[target] || (logits[i] == logits[target] && i < target))
            rank++;
    return rank;
}

typedef struct eval_progress {
    bool tty, quiet;
    int done, total;  /* images finished before the current call; of the whole run */
    int nfe;          /* the most evaluations an image of the current call has had */
    bool burning_in;  /* DMCMC: the current call is a chain's burn-in              */
    bool drawn;       /* tty: a progress line is on screen                          */
    double last_draw; /* elapsed_s of the last redraw                               */
} eval_progress;

static bool on_eval_progress(const moire_progress *p, void *user_data)
{
    eval_progress *state = user_data;
    if (g_interrupted)
        return false;
    if (p->nfe > state->nfe)
        state->nfe = p->nfe;
    if (state->quiet || !state->tty || p->step_count <= 0)
        return true;
    if (state->drawn && p->step < p->step_count && p->elapsed_s - state->last_draw < 0.05)
        return true;
    state->last_draw = p->elapsed_s;
    const char *phase = state->burning_in ? "burn-in " : "";
    if (p->image_count == 1)
        fprintf(stderr, "\rimage %d of %d: %sstep %d/%d\033[K", state->done + 1, state->total,
                phase, p->step, p->step_count);
    else
        fprintf(stderr, "\rimages %d-%d of %d: %sstep %d/%d\033[K", state->done + 1,
                state->done + p->image_count, state->total, phase, p->step, p->step_count);
    state->drawn = true;
    return true;
}

static void end_progress_line(eval_progress *state)
{
    if (state->drawn) {
        fputs("\r\033[K", stderr);
        state->drawn = false;
    }
}

/* Engine messages as print_engine_log, but a warning that repeats the previous one is left
 * out: eval calls moire_generate once per batch, and each call would say it again. */
static void print_engine_log_once(moire_log_level level, const char *message, void *user_data)
{
    static char last[1024];
    if (level >= MOIRE_LOG_WARNING && strncmp(message, last, sizeof last - 1) == 0)
        return;
    if (level >= MOIRE_LOG_WARNING)
        snprintf(last, sizeof last, "%s", message);
    print_engine_log(level, message, user_data);
}

/* `text` as a JSON string. */
static void json_string(FILE *f, const char *text)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* The results of a run, for the summary and --json. */
typedef struct eval_result {
    const char *model, *classifier, *backend;
    int images, classes, classifier_classes, feature_dim; /* classes: those prompted */
    uint64_t seed;
    const char *sampler, *schedule;
    int steps;
    float cfg;
    int nfe_per_image;               /* DMCMC: per emission, as the paper counts it       */
    double nfe_per_image_amortized;  /* every evaluation of the run / images              */
    int reseeds;                     /* DMCMC chains re-seeded after leaving the band     */
    const moire_dmcmc_params *dmcmc; /* NULL unless the sampler is DMCMC */
    moire_dmcmc_level dmcmc_level;   /* DMCMC: the level estimate the chains used         */
    double fid;
    int top1, top5;                  /* images whose class was the top 1 / among the top 5 */
    double seconds;
} eval_result;

/* Writes the results as one JSON object to a temporary file beside `path`, then renames it,
 * so a reader never sees half a file. Returns 0 or EXIT_ERROR (message printed). */
static int write_eval_json(const char *path, const eval_result *r)
{
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        error_line("--json: cannot create %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return EXIT_ERROR;
    }
    fprintf(f, "{\"model\": ");
    json_string(f, r->model);
    fprintf(f, ", \"classifier\": ");
    json_string(f, r->classifier);
    fprintf(f, ", \"images\": %d, \"classes\": %d, \"classifier_classes\": %d, "
               "\"feature_dim\": %d, \"seed\": %" PRIu64 ", \"sampler\": ",
            r->images, r->classes, r->classifier_classes, r->feature_dim, r->seed);
    json_string(f, r->sampler);
    fprintf(f, ", \"schedule\": ");
    json_string(f, r->schedule);
    fprintf(f, ", \"steps\": %d, \"cfg\": %.7g, \"nfe_per_image\": %d, "
               "\"nfe_per_image_amortized\": %.17g, \"reseeds\": %d",
            r->steps, (double)r->cfg, r->nfe_per_image, r->nfe_per_image_amortized, r->reseeds);
    if (r->dmcmc)
        fprintf(f, ", \"dmcmc\": {\"eta\": %.7g, \"skip\": %d, \"integrator\": \"%s\", "
                   "\"integrator_steps\": %d, \"burn_in\": %d, \"level\": \"%s\"}",
                (double)r->dmcmc->eta, r->dmcmc->skip,
                moire_dmcmc_integrator_name(r->dmcmc->integrator), r->dmcmc->integrator_steps,
                r->dmcmc->burn_in, moire_dmcmc_level_name(r->dmcmc_level));
    fprintf(f, ", \"fid\": %.17g, \"top1\": %.17g, \"top5\": %.17g, \"top1_hits\": %d, "
               "\"top5_hits\": %d, \"seconds_per_image\": %.6g, \"seconds\": %.6g, "
               "\"backend\": ",
            r->fid, (double)r->top1 / r->images, (double)r->top5 / r->images, r->top1, r->top5,
            r->seconds / r->images, r->seconds);
    json_string(f, r->backend);
    fprintf(f, "}\n");
    const bool written = fflush(f) == 0 && !ferror(f) && fsync(fd) == 0;
    if (fclose(f) != 0 || !written) {
        error_line("--json: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return EXIT_ERROR;
    }
    if (moire_output_replace(tmp, path) != MOIRE_OK) {
        error_line("--json: %s", moire_last_error());
        unlink(tmp);
        return EXIT_ERROR;
    }
    return 0;
}

/* The kept images as one PNG: EVAL_GRID_COLUMNS per row, each cell an image as generated,
 * zero (transparent black) where the last row is not full. */
static int write_eval_grid(const char *path, moire_image *const *images, int count)
{
    const int columns = count < EVAL_GRID_COLUMNS ? count : EVAL_GRID_COLUMNS;
    const int rows = (count + columns - 1) / columns;
    const int cell_w = images[0]->width, cell_h = images[0]->height;
    const int channels = images[0]->channels;
    moire_image *grid = moire_image_new(columns * cell_w, rows * cell_h, channels);
    if (!grid) {
        error_line("--save-grid: out of memory for a %dx%d grid", columns * cell_w,
                   rows * cell_h);
        return EXIT_ERROR;
    }
    memset(grid->pixels, 0, (size_t)grid->width * (size_t)grid->height * (size_t)channels);
    for (int i = 0; i < count; i++) {
        const moire_image *image = images[i];
        const int x0 = (i % columns) * cell_w, y0 = (i / columns) * cell_h;
        const int width = cell_w < image->width ? cell_w : image->width;
        for (int y = 0; y < cell_h && y < image->height && image->channels == channels; y++)
            memcpy(grid->pixels + ((size_t)(y0 + y) * grid->width + (size_t)x0) * channels,
                   image->pixels + (size_t)y * image->width * channels,
                   (size_t)width * channels);
    }
    int rc = 0;
    if (moire_png_save(path, grid, NULL, NULL) != MOIRE_OK)
        rc = engine_error("--save-grid");
    moire_image_free(grid);
    return rc;
}

/* Fills images[0..count) with the next `count` emissions of a one-chain DMCMC stream, the
 * image of each, and adds every emission's model evaluations to *nfe_total. progress->done
 * follows the image being made (it starts at the first). *made is the number of images
 * returned; on failure or cancel the ones made are freed and *made is 0. */
static moire_status eval_stream_take(moire_stream *stream, int count, eval_progress *progress,
                                     moire_image **images, int *made, int64_t *nfe_total)
{
    const int first = progress->done;
    moire_status status = MOIRE_OK;
    *made = 0;
    for (int i = 0; i < count && status == MOIRE_OK; i++) {
        /* moire_stream_next clears the context's cancel flag when it starts, so a Ctrl-C
           that came between two emissions is only seen here. */
        if (g_interrupted) {
            status = MOIRE_ERROR_CANCELLED;
            break;
        }
        progress->done = first + i;
        moire_image **emitted = NULL;
        int emitted_count = 0;
        status = moire_stream_next(stream, &emitted, &emitted_count);
        if (status == MOIRE_OK && emitted_count > 0) {
            moire_stream_info info;
            moire_stream_get_info(stream, &info);
            *nfe_total += info.nfe_per_image;
            images[(*made)++] = emitted[0];
            emitted[0] = NULL;
        }
        moire_images_free(emitted, emitted_count);
    }
    progress->done = first;
    if (status != MOIRE_OK) {
        for (int i = 0; i < *made; i++) {
            moire_image_free(images[i]);
            images[i] = NULL;
        }
        *made = 0;
    }
    return status;
}

static int cmd_eval(int argc, char **argv)
{
    const char *model_path = NULL, *classifier_text = NULL, *images_text = NULL,
               *classes_text = NULL, *seed_text = NULL, *batch_text = NULL,
               *threads_text = NULL,
               *device_text = NULL, *json_path = NULL, *grid_path = NULL, *quiet = NULL,
               *features_path = NULL;
    sampler_options sampling = {0};
    const option_spec specs[] = {
        {"model", true, &model_path},     {"classifier", true, &classifier_text},
        {"features", true, &features_path},
        {"images", true, &images_text},   {"classes", true, &classes_text},
        {"seed", true, &seed_text},       {"batch", true, &batch_text},
        SAMPLER_OPTION_SPECS(sampling),
        {"threads", true, &threads_text}, {"device", true, &device_text},
        {"json", true, &json_path},       {"save-grid", true, &grid_path},
        {"quiet", false, &quiet},
    };
    int rc = parse_options("eval", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;

    /* 1. Everything that needs no file. */
    if (!model_path && (rc = default_model_or_usage_error(&model_path)))
        return rc;
    int image_count = EVAL_DEFAULT_IMAGES, batch = EVAL_DEFAULT_BATCH;
    if (images_text && (rc = parse_int("images", images_text, 2, 1000000, &image_count)))
        return rc;
    if (batch_text && (rc = parse_int("batch", batch_text, 1, 10000, &batch)))
        return rc;
    int class_count = 0; /* 0 = min(N, K), once K is known */
    if (classes_text && (rc = parse_int("classes", classes_text, 1, 1000000, &class_count)))
        return rc;
    if (class_count > image_count) {
        error_line("--classes %d: more classes than the %d images; each class needs at least "
                   "one image", class_count, image_count);
        return EXIT_USAGE;
    }
    moire_generate_params params = moire_generate_params_default();
    params.seed = 0;
    if (seed_text && (rc = parse_seed(seed_text, &params.seed)))
        return rc;
    const uint64_t first_seed = params.seed;
    moire_dmcmc_params dmcmc;
    if ((rc = apply_sampler_options("eval", &sampling, false, &params, &dmcmc)))
        return rc;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log_once;
    if (threads_text && (rc = parse_int("threads", threads_text, 0, MOIRE_MAX_THREADS, &ctx_params.n_threads)))
        return rc;
    if ((rc = parse_device(device_text, &ctx_params.device)))
        return rc;
    if (json_path && (rc = check_output_path("--json", json_path)))
        return rc;
    if (grid_path && (rc = check_output_path("--save-grid", grid_path)))
        return rc;
    if (features_path && (rc = check_output_path("--features", features_path)))
        return rc;

    /* The classifier: --classifier, $MOIRE_CLASSIFIER, or the one beside the model. */
    const char *env_classifier = getenv("MOIRE_CLASSIFIER");
    const bool classifier_named = classifier_text || (env_classifier && env_classifier[0]);
    char *classifier_path = classifier_text  ? strdup(classifier_text)
                            : classifier_named ? strdup(env_classifier)
                                               : default_classifier_path(model_path);
    if (!classifier_path) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    if (!classifier_named && access(classifier_path, F_OK) != 0) {
        error_line("no classifier for %s: %s does not exist; give --classifier FILE or set "
                   "$MOIRE_CLASSIFIER (tools/train/train_classifier.py trains one)", model_path,
                   classifier_path);
        free(classifier_path);
        return EXIT_ERROR;
    }

    /* 2. The model, the classifier, and whether they fit together. */
    moire_model *model = NULL;
    moire_classifier *classifier = NULL;
    moire_ctx *ctx = NULL;
    int *class_ids = NULL;
    float *features = NULL, *logits = NULL;
    int *image_class = NULL, *image_rank = NULL; /* [N] for --features */
    moire_image **kept = NULL; /* [EVAL_GRID_MAX] for --save-grid, as generated */
    int kept_count = 0;
    if ((rc = load_model(model_path, &model)))
        goto done;
    if (moire_classifier_load(classifier_path, &classifier) != MOIRE_OK) {
        rc = engine_error("--classifier");
        goto done;
    }
    const moire_model_config *config = moire_model_get_config(model);
    const int K = moire_classifier_num_classes(classifier);
    const int D = moire_classifier_feature_dim(classifier);
    const int input_size = moire_classifier_input_size(classifier);
    if (class_count > K) {
        error_line("--classes %d: the classifier %s has only %d classes", class_count,
                   classifier_path, K);
        rc = EXIT_USAGE;
        goto done;
    }
    if (class_count == 0)
        class_count = image_count < K ? image_count : K;
    class_ids = calloc((size_t)K, sizeof *class_ids);
    features = malloc((size_t)image_count * (size_t)D * sizeof *features); /* [N, D] */
    logits = malloc((size_t)batch * (size_t)K * sizeof *logits);          /* [B, K] */
    kept = grid_path ? calloc(EVAL_GRID_MAX, sizeof *kept) : NULL;
    image_class = calloc((size_t)image_count, sizeof *image_class);
    image_rank = calloc((size_t)image_count, sizeof *image_rank);
    if (!class_ids || !features || !logits || (grid_path && !kept) || !image_class ||
        !image_rank) {
        error_line("out of memory for the features of %d images", image_count);
        rc = EXIT_ERROR;
        goto done;
    }
    /* A class-conditional model must know every class of the classifier by name. */
    for (int k = 0; k < K && !is_text_model(config); k++) {
        const char *name = moire_classifier_class_name(classifier, k);
        if (moire_model_resolve_class(model, name, &class_ids[k]) != MOIRE_OK) {
            error_line("--classifier: class '%s' of %s is not a class of %s: %s", name,
                       classifier_path, moire_model_name(model), moire_last_error());
            rc = EXIT_ERROR;
            goto done;
        }
    }
    const int model_side = config->input_size * (config->space == MOIRE_SPACE_LATENT ? 8 : 1);
    if (model_side != input_size && !quiet)
        fprintf(stderr, "moire: eval: the model makes %dx%d images; they are resized to %dx%d "
                        "for the classifier\n", model_side, model_side, input_size, input_size);
    if (moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK) {
        rc = engine_error("--device");
        goto done;
    }

    /* 3. The run: each run of same-class images in chunks of up to --batch, generated then
     *    classified. A plain sampler makes a chunk with one moire_generate call. DMCMC runs
     *    the class's whole run as one stream with one chain, the way an artist browses a
     *    prompt: the burn-in is paid once per class and each image is one emission. */
    eval_progress progress = {.tty = isatty(2) != 0, .quiet = quiet != NULL,
                              .total = image_count};
    moire_callbacks callbacks;
    memset(&callbacks, 0, sizeof callbacks);
    callbacks.progress = on_eval_progress;
    callbacks.user_data = &progress;
    install_sigint(ctx);
    const bool dmcmc_run = params.sampler == MOIRE_SAMPLER_DMCMC;
    moire_stream *stream = NULL; /* DMCMC: the chain of the current class's run */
    int top1 = 0, top5 = 0, nfe = 0, last_decile = 0, reseeds = 0;
    moire_dmcmc_level level_used = MOIRE_DMCMC_LEVEL_RESIDUAL; /* DMCMC, as the chains report */
    int64_t nfe_total = 0, nfe_burn_in = 0, nfe_reseed = 0; /* DMCMC, all chains */
    const double started = wall_seconds();
    moire_status status = MOIRE_OK;
    for (int first = 0; first < image_count && status == MOIRE_OK && !rc && !g_interrupted;) {
        const int c = eval_class_of(first, image_count, class_count);
        const int k = eval_class_of(c, class_count, K);
        int count = 1;
        while (first + count < image_count && count < batch &&
               eval_class_of(first + count, image_count, class_count) == c)
            count++;
        const bool run_ends = first + count == image_count ||
                              eval_class_of(first + count, image_count, class_count) != c;
        params.prompt = moire_classifier_class_name(classifier, k);
        params.class_id = is_text_model(config) ? -1 : class_ids[k];
        progress.done = first;
        progress.nfe = 0;
        moire_image **images = NULL;
        int made = 0;
        if (dmcmc_run) {
            if (!stream) { /* the first chunk of the class's run */
                params.seed = first_seed + (uint64_t)first;
                params.batch_count = 1;
                progress.burning_in = true;
                status = moire_stream_new(ctx, model, &params, &callbacks, &stream);
                progress.burning_in = false;
            }
            images = status == MOIRE_OK ? calloc((size_t)count, sizeof *images) : NULL;
            if (status == MOIRE_OK && !images) {
                end_progress_line(&progress);
                error_line("out of memory for %d images", count);
                rc = EXIT_ERROR;
            } else if (status == MOIRE_OK) {
                status = eval_stream_take(stream, count, &progress, images, &made, &nfe_total);
            }
            if (stream && run_ends) {
                /* The chain's one-off costs, known once it has made its last image. */
                moire_stream_info info;
                moire_stream_get_info(stream, &info);
                nfe_burn_in += info.nfe_one_off;
                nfe_reseed += info.nfe_reseed;
                reseeds += info.reseeds;
                level_used = info.level;
                moire_stream_free(stream);
                stream = NULL;
            }
        } else {
            params.seed = first_seed + (uint64_t)first;
            params.batch_count = count;
            status = moire_generate(ctx, model, &params, &callbacks, &images, &made);
        }
        if (status == MOIRE_OK && !rc && made != count) {
            end_progress_line(&progress);
            error_line("the engine returned %d images instead of %d", made, count);
            rc = EXIT_ERROR;
        }
        if (progress.nfe > nfe)
            nfe = progress.nfe;
        /* The classifier sees input_size × input_size; the grid shows them as generated. */
        for (int i = 0; status == MOIRE_OK && !rc && i < made; i++) {
            moire_image *generated = images[i];
            if (generated->width != input_size || generated->height != input_size) {
                images[i] = resize_area(generated, input_size);
                if (!images[i]) {
                    images[i] = generated;
                    end_progress_line(&progress);
                    error_line("out of memory resizing the images");
                    rc = EXIT_ERROR;
                    break;
                }
            }
            if (kept && first + i < EVAL_GRID_MAX) {
                /* a resized image's original moves to the grid; an unresized one is
                   copied there after the classifier has seen it */
                kept[first + i] = generated != images[i] ? generated : NULL;
                kept_count = first + i + 1;
            } else if (generated != images[i]) {
                moire_image_free(generated);
            }
        }
        if (status == MOIRE_OK && !rc &&
            moire_classifier_run(classifier, (const moire_image *const *)images, made,
                                 features + (size_t)first * D, logits) != MOIRE_OK) {
            end_progress_line(&progress);
            rc = engine_error("--classifier");
        }
        for (int i = 0; status == MOIRE_OK && !rc && i < made; i++) {
            const int rank = class_rank(logits + (size_t)i * K, K, k);
            top1 += rank == 0;
            top5 += rank < 5;
            image_class[first + i] = k;
            image_rank[first + i] = rank;
            if (kept && first + i < EVAL_GRID_MAX && !kept[first + i]) {
                kept[first + i] = images[i];
                images[i] = NULL;
            }
        }
        moire_images_free(images, made);
        first += count;
        if (!progress.quiet && !progress.tty && first * 10 / image_count > last_decile) {
            last_decile = first * 10 / image_count;
            fprintf(stderr, "images %d/%d\n", first, image_count);
        }
    }
    const double seconds = wall_seconds() - started;
    moire_stream_free(stream); /* a run cut short by an error or Ctrl-C */
    g_running_ctx = NULL;
    signal(SIGINT, SIG_DFL);
    end_progress_line(&progress);
    if (rc)
        goto done;
    if (status == MOIRE_ERROR_CANCELLED || g_interrupted) {
        fprintf(stderr, "moire: interrupted; nothing was written\n");
        rc = EXIT_INTERRUPTED;
        goto done;
    }
    if (status != MOIRE_OK) {
        rc = engine_error(NULL);
        goto done;
    }

    /* 4. The results. */
    eval_result result = {.model = moire_model_name(model), .classifier = classifier_path,
                          .backend = moire_ctx_backend_name(ctx), .images = image_count,
                          .classes = class_count, .classifier_classes = K, .feature_dim = D,
                          .seed = first_seed, .reseeds = reseeds, .top1 = top1, .top5 = top5,
                          .seconds = seconds, .dmcmc_level = level_used};
    if (moire_classifier_fid(classifier, features, image_count, &result.fid) != MOIRE_OK) {
        rc = engine_error("FID");
        goto done;
    }
    moire_sampler default_sampler;
    int default_steps;
    float default_cfg;
    moire_model_get_defaults(model, &default_sampler, &default_steps, &default_cfg);
    const moire_sampler sampler =
        params.sampler == MOIRE_SAMPLER_DEFAULT ? default_sampler : params.sampler;
    result.sampler = moire_sampler_name(sampler);
    result.schedule = moire_schedule_name(params.schedule == MOIRE_SCHEDULE_DEFAULT
                                              ? MOIRE_SCHEDULE_UNIFORM
                                              : params.schedule);
    result.cfg = params.cfg_scale < 0.0f ? default_cfg : params.cfg_scale;
    if (sampler == MOIRE_SAMPLER_DMCMC) {
        /* Per image, the paper's accounting, as `moire generate` reports it; amortised,
           everything the chains evaluated, burn-in and re-seeds included. */
        result.steps = dmcmc.integrator_steps;
        result.nfe_per_image = moire_dmcmc_nfe_per_sample(&dmcmc);
        result.nfe_per_image_amortized =
            (double)(nfe_total + nfe_burn_in + nfe_reseed) / image_count;
        result.dmcmc = &dmcmc;
    } else {
        /* As the engine counted them (moire_progress.nfe): one per model call of the
           sampler, whatever the batch. Nothing is paid once, so both counts agree. */
        result.steps = params.steps > 0 ? params.steps : default_steps;
        result.nfe_per_image = nfe;
        result.nfe_per_image_amortized = nfe;
    }
    char cfg_text[32];
    printf("model:          %s\n", result.model);
    printf("classifier:     %s (%d classes, %d features)\n", classifier_path, K, D);
    printf("images:         %d over %d classes (seeds %" PRIu64 "..%" PRIu64 ")\n", image_count,
           class_count, first_seed, first_seed + (uint64_t)image_count - 1);
    printf("sampler:        %s, %d steps, %s schedule, CFG %s\n", result.sampler, result.steps,
           result.schedule, moire_format_float(result.cfg, cfg_text, sizeof cfg_text));
    if (result.dmcmc) {
        const int tweedie_nfe = dmcmc.tweedie ? 1 : 0;
        printf("NFE per image:  %d (skip %d + %s %d + Tweedie %d)\n", result.nfe_per_image,
               dmcmc.skip, moire_dmcmc_integrator_name(dmcmc.integrator),
               result.nfe_per_image - dmcmc.skip - tweedie_nfe, tweedie_nfe);
        printf("NFE per image incl. burn-in: %.2f (one chain per class: %" PRId64 " NFE of "
               "burn-in, %d re-seed(s) costing %" PRId64 " NFE)\n",
               result.nfe_per_image_amortized, nfe_burn_in, reseeds, nfe_reseed);
        printf("noise levels:   from the %s\n", level_used == MOIRE_DMCMC_LEVEL_CLASSIFIER
                                                    ? "noise-level classifier"
                                                    : "residual estimate");
    } else
        printf("NFE per image:  %d%s\n", result.nfe_per_image,
               result.cfg != 1.0f ? " (a CFG step counts once)" : "");
    printf("FID:            %.4f\n", result.fid);
    printf("top-1:          %.1f %% (%d of %d)\n", 100.0 * top1 / image_count, top1,
           image_count);
    printf("top-5:          %.1f %% (%d of %d)\n", 100.0 * top5 / image_count, top5,
           image_count);
    printf("time:           %.3f s per image (%.1f s, %s)\n", seconds / image_count, seconds,
           result.backend);
    fflush(stdout);
    if (json_path && (rc = write_eval_json(json_path, &result)))
        goto done;
    if (grid_path && kept_count > 0 && (rc = write_eval_grid(grid_path, kept, kept_count)))
        goto done;
    if (features_path) {
        /* [N, D + 2]: the features, then the prompted class and its rank (0 = top-1), for
           the statistics tools/eval/ computes (KID, diversity, recall, error bars). */
        float *table = malloc((size_t)image_count * (size_t)(D + 2) * sizeof *table);
        if (!table) {
            error_line("--features: out of memory");
            rc = EXIT_ERROR;
            goto done;
        }
        for (int i = 0; i < image_count; i++) {
            memcpy(table + (size_t)i * (D + 2), features + (size_t)i * D, (size_t)D * sizeof *table);
            table[(size_t)i * (D + 2) + D] = (float)image_class[i];
            table[(size_t)i * (D + 2) + D + 1] = (float)image_rank[i];
        }
        const int64_t shape[2] = {image_count, D + 2};
        const moire_status saved = moire_npy_save(features_path, 2, shape, table);
        free(table);
        if (saved != MOIRE_OK) {
            rc = engine_error("--features");
            goto done;
        }
    }

done:
    for (int i = 0; kept && i < EVAL_GRID_MAX; i++)
        moire_image_free(kept[i]);
    free(kept);
    free(features);
    free(logits);
    free(class_ids);
    free(image_class);
    free(image_rank);
    moire_ctx_free(ctx);
    moire_classifier_free(classifier);
    moire_model_free(model);
    free(classifier_path);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
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
