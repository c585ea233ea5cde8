/* moire.h — the public C API of libmoire, the Moiré image-generation engine.
 *
 * libmoire runs Mixture-of-Experts diffusion transformers (DiT-MoE; EC-DiT later) on a CPU
 * reference backend (always built; it is the spec) and, when built with CUDA, on a GPU.
 * It is plain C11 and depends on nothing graphical: the CLI, the GTK app and the GIMP
 * plug-in are all clients of this header.
 *
 * Conventions
 *  - Every fallible call returns a moire_status. On failure, moire_last_error() returns a
 *    message for the calling thread that names the problem and, where there is one, the fix.
 *    The library never calls exit() or abort().
 *  - Objects are opaque and created/freed in pairs (moire_X_new/_load … moire_X_free).
 *  - Thread safety: a moire_model is immutable once loaded and may be shared by threads.
 *    A moire_ctx runs one call at a time; moire_ctx_cancel() may be called from any thread.
 *  - Images are 8-bit, interleaved, row-major, top row first.
 */
#ifndef MOIRE_H
#define MOIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOIRE_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------------------------
 * Status codes
 * ---------------------------------------------------------------------------------------- */

typedef enum moire_status {
    MOIRE_OK = 0,
    MOIRE_ERROR_INVALID_ARGUMENT, /* a parameter is out of range or inconsistent          */
    MOIRE_ERROR_IO,               /* a file could not be opened, read or written            */
    MOIRE_ERROR_FORMAT,           /* a file is corrupt, truncated or not what it claims     */
    MOIRE_ERROR_UNSUPPORTED,      /* well-formed but not supported (dtype, layout, family)  */
    MOIRE_ERROR_OUT_OF_MEMORY,    /* an allocation failed (host or device)                  */
    MOIRE_ERROR_CANCELLED,        /* moire_ctx_cancel() stopped the call                    */
    MOIRE_ERROR_BACKEND,          /* the compute backend failed (driver, kernel launch)     */
} moire_status;

/* "ok", "invalid argument", … — never NULL. */
const char *moire_status_to_string(moire_status status);

/* The message of the last failure on the calling thread ("" if none). Valid until the next
 * libmoire call on this thread. */
const char *moire_last_error(void);

/* After a call failed with MOIRE_ERROR_OUT_OF_MEMORY because the requested size does not fit
 * (moire_generate and the other generating calls check before the first step): true, with
 * the largest width × height of the same shape that fits, the size the message names as
 * "at most about W x H fits". False after any other failure. Same lifetime as
 * moire_last_error() (a front end offers it: the CLI names --width/--height, the GUI a
 * one-click "Use W × H"). */
bool moire_last_error_fitting_size(int *width, int *height);

/* ------------------------------------------------------------------------------------------
 * Models
 * ---------------------------------------------------------------------------------------- */

typedef enum moire_attention_layout {
    MOIRE_ATTENTION_QKV = 0,     /* timm: attn.qkv, attn.proj (DiT-MoE S/B)                    */
    MOIRE_ATTENTION_QK_NORM = 1, /* attn.Wqkv, per-head LayerNorm q_norm/k_norm, attn.out_proj
                                    (DiT-MoE XL/G)                                            */
} moire_attention_layout;

typedef enum moire_objective {
    MOIRE_OBJECTIVE_DDPM_EPS = 0,       /* ε-prediction, discrete t ∈ [0, T-1], linear β      */
    MOIRE_OBJECTIVE_RECTIFIED_FLOW = 1, /* v = ε − x0 at x_t = (1−t)·x0 + t·ε, float t ∈ (0,1] */
} moire_objective;

typedef enum moire_space {
    MOIRE_SPACE_LATENT = 0, /* SD-VAE latents (4 channels, /8); decoded with a moire_vae, or
                               approximately without one                                     */
    MOIRE_SPACE_PIXEL = 1,  /* pixels in [-1, 1]: 3 channels = RGB, 4 = RGBA                 */
} moire_space;

#define MOIRE_FAMILY_MAX 32

typedef struct moire_model_config {
    char family[MOIRE_FAMILY_MAX]; /* "dit-moe" or "ec-dit"                                 */
    int depth;                     /* number of transformer blocks                          */
    int hidden_size;               /* D                                                     */
    int num_heads;                 /* H; head_dim = D / H                                   */
    int patch_size;                /* p                                                     */
    int in_channels;               /* C_in                                                  */
    int out_channels;              /* C_out = 2·C_in when learn_sigma                       */
    int num_experts;               /* E routed experts per block                            */
    int top_k;                     /* experts per token                                     */
    int expert_hidden;             /* F: routed SwiGLU width (4·D in DiT-MoE)               */
    int shared_expert_hidden;      /* shared SwiGLU width (2·D in DiT-MoE); 0 = none        */
    moire_attention_layout attention_layout;
    int num_classes;               /* real classes; the CFG null class id is num_classes    */
    bool learn_sigma;              /* output carries variance-interpolation channels        */
    int input_size;                /* trained spatial size of the model input (H = W)       */
    moire_objective objective;
    int num_train_timesteps;       /* DDPM T (1000)                                         */
    float beta_start, beta_end;    /* DDPM linear β schedule (1e-4, 0.02)                   */
    moire_space space;
    float layernorm_eps;           /* 1e-6 in DiT-MoE                                       */
    /* EC-DiT (family "ec-dit", docs/ECDIT.md); 0 for DiT-MoE. Routing is expert choice:
       top_k is unused, each expert takes C = ⌈S·f_c/E⌉ tokens of every routing group.    */
    int moe_every;                 /* block i is MoE when i % moe_every == moe_every − 1     */
    float capacity_factor;         /* f_c (2.0)                                             */
    int routing_group_tokens;      /* S; 0 = one image per group (groups never span images) */
    int dense_hidden;              /* SwiGLU width of the blocks that are not MoE           */
    int text_vocab_size;           /* V; the words ship in metadata "moire.vocab"           */
    int text_layers;               /* text encoder transformer layers                      */
    int text_hidden;               /* Dt                                                    */
    int text_heads;
    int text_mlp_hidden;           /* GELU MLP width of the text layers                    */
    int text_max_tokens;           /* L, [BOS] and [EOS] included                           */
} moire_model_config;

typedef struct moire_model moire_model;

/* Loads a model file (.safetensors). The configuration comes from the file's __metadata__
 * (key "moire.config", JSON) when present, otherwise it is inferred from key names and
 * shapes. Every tensor is checked for presence, shape and finiteness. MODEL-levels.safetensors
 * beside MODEL.safetensors, when present, is loaded too (the dmcmc sampler's noise-level
 * classifier, moire_model_level_classifier); a damaged one fails the load with a message. */
moire_status moire_model_load(const char *path, moire_model **out_model);
void         moire_model_free(moire_model *model);

/* Whether a file name in a models folder names a model (a .safetensors file that is not a
 * companion: "-features.safetensors" image classifiers, "-levels.safetensors" noise-level
 * classifiers, ".ref.safetensors" golden references, ".snapshot.safetensors" training
 * snapshots). The CLI, the studio and the plug-in pick their default model with this one
 * rule. */
bool moire_is_model_file_name(const char *name);

/* The companion files beside MODEL.safetensors (moire_model_companion_path). */
#define MOIRE_FEATURES_SUFFIX "-features.safetensors" /* the image classifier of `moire eval` */
#define MOIRE_LEVELS_SUFFIX "-levels.safetensors"     /* the dmcmc noise-level classifier    */

/* MODEL.EXT → MODEL<suffix>: the path without its extension, then `suffix`
 * (MOIRE_FEATURES_SUFFIX, MOIRE_LEVELS_SUFFIX). Newly allocated (free()); NULL when out of
 * memory or given NULL. */
char *moire_model_companion_path(const char *model_path, const char *suffix);

/* Where Moiré looks for its installed data (class-name lists, the embedded model), in order:
 * $MOIRE_DATA_DIR, the installed share/moire, the source tree's data/ (uninstalled builds).
 * Writes up to MOIRE_DATA_DIRS_MAX folders to dirs (strings that live as long as the process
 * and its environment) and returns how many. */
#define MOIRE_DATA_DIRS_MAX 3
int moire_data_dirs(const char *dirs[MOIRE_DATA_DIRS_MAX]);

/* The first model file (moire_is_model_file_name, alphabetically) in `dir`, as DIR/NAME; NULL
 * when there is none or `dir` cannot be read. Newly allocated (free()). */
char *moire_find_model_in_dir(const char *dir);

/* The default model when the user chose none: $MOIRE_MODEL when set (as given; a host may
 * check that it exists), else the first model in the "models" folder of each data folder
 * (moire_data_dirs). Newly allocated (free()), or NULL; `searched` (NULL allowed) receives the
 * folders looked in, separated by ", ", for the message that no model was found. */
char *moire_default_model_path(char *searched, size_t searched_size);

const moire_model_config *moire_model_get_config(const moire_model *model);
/* The noise-level classifier loaded with the model, or NULL (see "Image classifier"). */
const struct moire_classifier *moire_model_level_classifier(const moire_model *model);
int64_t     moire_model_parameter_count(const moire_model *model);
/* Storage dtype of the weights in the file: "F32", "F16", "BF16" or "mixed". */
const char *moire_model_dtype_name(const moire_model *model);
/* File name without directory, e.g. "dit_moe_s_8E2A.safetensors". */
const char *moire_model_name(const moire_model *model);
/* Human-readable name of class `class_id`, or NULL when the model ships no names. */
const char *moire_model_class_name(const moire_model *model, int class_id);
/* Text-conditioned (EC-DiT) models: the words of the vocabulary, for completion in prompt
 * fields (the special tokens [PAD] [BOS] [EOS] [UNK] are left out). Size 0 and NULL for
 * class-conditional models, whose prompts are class names (moire_model_class_name). */
int         moire_model_vocabulary_size(const moire_model *model);
const char *moire_model_vocabulary_word(const moire_model *model, int index);

/* One word of a prompt as the tokenizer splits it: bytes [start, start + length) of the
 * prompt, and whether the model knows it (an unknown word becomes [UNK]). */
typedef struct moire_prompt_word {
    size_t start, length;
    bool known;
} moire_prompt_word;
/* Splits `prompt` into words exactly as generation will and fills up to `max_words` of
 * them; returns how many words there are (0 for class-conditional models). */
int moire_model_check_prompt(const moire_model *model, const char *prompt,
                             moire_prompt_word *words, int max_words);

/* Resolves a prompt for a class-conditional model: a number ("207"), an exact class name,
 * or the closest one (case-insensitive, any of a class's comma-separated synonyms).
 * Fails with a message listing the nearest names when nothing matches well. */
moire_status moire_model_resolve_class(const moire_model *model, const char *prompt,
                                       int *out_class_id);

/* ------------------------------------------------------------------------------------------
 * Contexts: a backend, its threads and a cancel flag
 * ---------------------------------------------------------------------------------------- */

typedef enum moire_device {
    MOIRE_DEVICE_AUTO = 0, /* CUDA when built with it and a GPU is present, otherwise CPU */
    MOIRE_DEVICE_CPU = 1,
    MOIRE_DEVICE_CUDA = 2,
} moire_device;

typedef enum moire_log_level {
    MOIRE_LOG_DEBUG = 0,
    MOIRE_LOG_INFO = 1,
    MOIRE_LOG_WARNING = 2,
} moire_log_level;

typedef void (*moire_log_fn)(moire_log_level level, const char *message, void *user_data);

/* Called with a named intermediate tensor during a forward pass (for bisecting numerical
 * differences against a reference). `data` is host memory, valid only during the call.
 * layer is the block index, or -1 outside blocks. Names are listed in docs/ENGINE.md. */
typedef void (*moire_debug_tensor_fn)(const char *name, int layer, const float *data,
                                      int ndim, const int64_t *shape, void *user_data);

/* The engine's limits, for hosts that validate options before calling it (the CLI's
 * --threads, --width, --height): moire_ctx_new refuses more threads, moire_generate larger
 * sides (context.c and generate.c check the same numbers). */
#define MOIRE_MAX_THREADS 1024
#define MOIRE_MAX_IMAGE_SIDE 8192

typedef struct moire_ctx_params {
    moire_device device;
    int n_threads;       /* 0 = all cores                                                   */
    moire_log_fn log;    /* NULL = silent                                                   */
    void *log_user_data;
} moire_ctx_params;

typedef struct moire_ctx moire_ctx;

moire_ctx_params moire_ctx_params_default(void);
moire_status     moire_ctx_new(const moire_ctx_params *params, moire_ctx **out_ctx);
void             moire_ctx_free(moire_ctx *ctx);
/* The backend actually in use: "cpu" or "cuda". */
const char      *moire_ctx_backend_name(const moire_ctx *ctx);
/* Thread-safe: asks the call in progress on `ctx` to stop at the next step boundary; it
 * then returns MOIRE_ERROR_CANCELLED and produces no output. A call that starts after the
 * cancel runs normally. */
void             moire_ctx_cancel(moire_ctx *ctx);
void             moire_ctx_set_debug_callback(moire_ctx *ctx, moire_debug_tensor_fn fn,
                                              void *user_data);

/* How the CPU backend's OpenMP threads wait between operations, for logs and benchmarks:
 * "passive (set by libmoire)" — the library made them sleep instead of spin (it does so
 * before libgomp starts whenever neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set; see
 * engine/base/threads.c) — or what the environment chose. Never NULL. */
const char      *moire_thread_wait_policy(void);

/* One model evaluation. x: [n, C_in, h, w] (h, w multiples of the patch size), t: [n]
 * (DDPM: timestep in [0, T-1], may be fractional; RF: t ∈ [0, 1]), class_ids: [n]
 * (num_classes = the null class). out: [n, C_out, h, w]. */
moire_status moire_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                           const float *x, const float *t, const int32_t *class_ids,
                           float *out);
/* The same for a text-conditioned model (EC-DiT): prompts[n] are the texts of the n images
 * ("" = the unconditional prompt). Fails on class-conditional models, and moire_forward fails
 * on text models. */
moire_status moire_forward_text(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                                const float *x, const float *t, const char *const *prompts,
                                float *out);

/* ------------------------------------------------------------------------------------------
 * Images
 * ---------------------------------------------------------------------------------------- */

typedef struct moire_image {
    int width, height;
    int channels;       /* 1 (gray / mask), 3 (RGB) or 4 (RGBA)                           */
    uint8_t *pixels;    /* width·height·channels bytes                                   */
} moire_image;

moire_image *moire_image_new(int width, int height, int channels);
void         moire_image_free(moire_image *image);

/* PNG with a UTF-8 iTXt "parameters" chunk (A1111 layout, docs/METADATA.md) and an iTXt
 * "moire" chunk holding the exact settings as JSON. Written to a temporary file and renamed,
 * so a failure never leaves a partial file. Either text may be NULL. */
moire_status moire_png_save(const char *path, const moire_image *image,
                            const char *parameters, const char *moire_json);
/* Reads a PNG (any bit depth / colour type, converted to 8-bit gray/RGB/RGBA) and, when
 * asked, its "parameters" (tEXt, zTXt or iTXt) and "moire" texts (NULL if absent; free()). */
moire_status moire_png_load(const char *path, moire_image **out_image, char **out_parameters,
                            char **out_moire_json);
/* A PNG's size and texts without decoding its pixels (what `moire info --image` shows):
 * channels is the count moire_png_load would produce. Text chunks inflating past 1 MiB are
 * refused. Free the texts with moire_png_info_clear. */
typedef struct moire_png_info {
    int width, height, channels;
    char *parameters;   /* the "parameters" text, or NULL */
    char *moire_json;   /* the "moire" text, or NULL      */
} moire_png_info;
moire_status moire_png_read_info(const char *path, moire_png_info *out);
void         moire_png_info_clear(moire_png_info *info);

/* ------------------------------------------------------------------------------------------
 * Sampling
 * ---------------------------------------------------------------------------------------- */

typedef enum moire_sampler {
    MOIRE_SAMPLER_DEFAULT = 0,     /* the model's official sampler                           */
    MOIRE_SAMPLER_DDPM,            /* official DiT ancestral DDPM, respaced, learned variance */
    MOIRE_SAMPLER_RF_EULER,        /* official rectified-flow Euler, t = 1 → 0                */
    MOIRE_SAMPLER_DDIM,
    MOIRE_SAMPLER_EULER,
    MOIRE_SAMPLER_EULER_ANCESTRAL,
    MOIRE_SAMPLER_HEUN,
    MOIRE_SAMPLER_DPMPP_2M,
    MOIRE_SAMPLER_DMCMC,           /* Denoising Langevin Gibbs chains + a short integrator
                                      (docs/DMCMC.md); settings in moire_generate_params.dmcmc */
    MOIRE_SAMPLER_COUNT_
} moire_sampler;

typedef enum moire_schedule {
    MOIRE_SCHEDULE_DEFAULT = 0, /* uniform for every sampler                                 */
    MOIRE_SCHEDULE_UNIFORM,     /* evenly spaced in the model's own time (t)                 */
    MOIRE_SCHEDULE_KARRAS,      /* Karras et al. ρ = 7 in σ                                  */
    MOIRE_SCHEDULE_COUNT_
} moire_schedule;

typedef enum moire_cfg_mode {
    MOIRE_CFG_DEFAULT = 0,   /* official: DDPM-ε models guide channels 0-2, RF all channels  */
    MOIRE_CFG_ALL_CHANNELS,  /* standard CFG on every predicted channel                     */
    MOIRE_CFG_FIRST_THREE,   /* the official DiT quirk: channels 0-2 only                   */
} moire_cfg_mode;

/* The official settings of the model's family: DDPM-ε: ddpm, 250 steps, CFG 4.0;
 * rectified flow: rf-euler, 50 steps, CFG 7.0 (docs/SAMPLERS.md). */
void moire_model_get_defaults(const moire_model *model, moire_sampler *sampler, int *steps,
                              float *cfg_scale);

/* Accepts our names (ddpm, rf-euler, ddim, euler, euler-a, heun, dpm++2m), A1111 labels
 * ("Euler a", "DPM++ 2M") and ComfyUI names (euler_ancestral, dpmpp_2m). */
moire_status moire_sampler_from_name(const char *name, moire_sampler *out);
const char  *moire_sampler_name(moire_sampler sampler);  /* our CLI name            */
const char  *moire_sampler_label(moire_sampler sampler); /* A1111 label, "Euler a"  */
moire_status moire_schedule_from_name(const char *name, moire_schedule *out);
const char  *moire_schedule_name(moire_schedule schedule);   /* "uniform", "karras" */
const char  *moire_schedule_label(moire_schedule schedule);  /* "Uniform", "Karras" */

/* ---- DMCMC (Denoising Langevin Gibbs, docs/DMCMC.md) ------------------------------------
 * Persistent chains over (image, noise level): each new image costs skip Langevin sweeps, a
 * short integrator run from the chain's own level and a Tweedie step — about 10 model
 * evaluations (NFE) instead of a full schedule. */

typedef enum moire_dmcmc_integrator {
    MOIRE_DMCMC_EULER = 0,       /* N NFE                                                */
    MOIRE_DMCMC_HEUN,            /* EDM Alg. 1, 2N − 1 NFE                               */
    MOIRE_DMCMC_STOCHASTIC_HEUN, /* EDM Alg. 2 with churn, 2N − 1 NFE                    */
    MOIRE_DMCMC_DDIM,            /* deterministic DDIM, N NFE (in the VE form the same
                                    update as Euler; kept for the paper's comparison)    */
    MOIRE_DMCMC_DPMPP_2M,        /* DPM-Solver++(2M), N NFE                              */
    MOIRE_DMCMC_INTEGRATOR_COUNT_
} moire_dmcmc_integrator;

/* Where a chain's noise level comes from after each Langevin step (the Gibbs update). */
typedef enum moire_dmcmc_level {
    MOIRE_DMCMC_LEVEL_AUTO = 0,       /* the model's noise-level classifier when it has one
                                         for the run's size, else the residual estimate     */
    MOIRE_DMCMC_LEVEL_CLASSIFIER,     /* MODEL-levels.safetensors (an error without one)    */
    MOIRE_DMCMC_LEVEL_RESIDUAL,       /* training-free, from the denoiser's residual; costs
                                         a calibration of 6 NFE at burn-in                  */
    MOIRE_DMCMC_LEVEL_COUNT_
} moire_dmcmc_level;

typedef struct moire_dmcmc_params {
    float eta;                /* Langevin step size (absolute, VE units)                     */
    int skip;                 /* Langevin sweeps per emitted sample                          */
    moire_dmcmc_integrator integrator;
    int integrator_steps;     /* N                                                          */
    bool tweedie;             /* final Tweedie step D(x; tweedie_sigma) (+1 NFE)             */
    float tweedie_sigma;
    float churn;              /* EDM S_churn for the stochastic Heun integrator              */
    /* Burn-in, once per chain: a burn_in_steps DPM++ 2M run from pure noise, the result
     * re-noised to sigma_init, a calibration of the level estimator, burn_in sweeps. */
    int burn_in_steps;
    int burn_in;
    float sigma_init;
    /* Guard band: a chain whose level leaves [sigma_low, sigma_high] is re-seeded. */
    float sigma_low, sigma_high;
    float damping;            /* level update: ln s ← damping·ln s + (1 − damping)·ln ŝ      */
    moire_dmcmc_level level;  /* where ŝ comes from                                         */
    /* Diversity guard: a chain whose new emission is within guard_distance (RMS over the
     * model-space values, [-1, 1] for pixel models) of its previous one is kicked — its
     * state re-noised up to level kick_sigma (no model evaluation) — so the next emission
     * leaves the near-copy. 0 = off (the default of the plain sampler). */
    float guard_distance;
    float kick_sigma;
} moire_dmcmc_params;

/* eta 0.08, skip 4, DPM++ 2M with 5 steps, Tweedie → 10 NFE per image; burn-in 24 steps,
 * 8 sweeps; sigma_init 0.5, band [0.02, 5]; guard off, kick level 1. */
moire_dmcmc_params moire_dmcmc_params_default(void);
const char  *moire_dmcmc_integrator_name(moire_dmcmc_integrator integrator);
moire_status moire_dmcmc_integrator_from_name(const char *name, moire_dmcmc_integrator *out);
const char  *moire_dmcmc_level_name(moire_dmcmc_level level); /* "auto", "classifier", "residual" */
moire_status moire_dmcmc_level_from_name(const char *name, moire_dmcmc_level *out);
/* Model evaluations per emitted image, as the paper counts them: skip + integrator + 1. */
int moire_dmcmc_nfe_per_sample(const moire_dmcmc_params *params);

typedef struct moire_generate_params {
    const char *prompt;          /* class-conditional: resolved with moire_model_resolve_class
                                    unless class_id >= 0                                    */
    int class_id;                /* -1 = from the prompt                                    */
    const char *negative_prompt; /* class-conditional: a class used as the unconditional
                                    branch of CFG; NULL or "" = the null class              */
    uint64_t seed;               /* image i of the batch uses seed + i                      */
    int steps;                   /* 0 = model default                                       */
    float cfg_scale;             /* < 0 = model default; 1 = no guidance (one forward)      */
    moire_cfg_mode cfg_mode;
    moire_sampler sampler;
    moire_schedule schedule;
    float eta;                   /* DDIM η (0 = deterministic)                              */
    int width, height;           /* output size in pixels; 0 = the model's trained size     */
    int batch_count;             /* images to make (≥ 1)                                    */
    /* img2img / inpainting (optional). The init image is resized to width×height. */
    const moire_image *init_image;
    float strength;              /* 0..1: how much of the schedule to run from the init    */
    const moire_image *mask;     /* soft mask, 1 channel: 255 = regenerate, 0 = keep         */
    const struct moire_vae *vae; /* latent models: decode results and encode the init image
                                    with this SD-VAE; NULL = the approximate linear map      */
    struct moire_routing_map **routing_map; /* optional out: the run's routing map (see
                                    "Routing maps"; free with moire_routing_map_free)      */
    const moire_dmcmc_params *dmcmc; /* sampler MOIRE_SAMPLER_DMCMC; NULL = defaults         */
} moire_generate_params;

/* Defaults: class_id −1, seed 42, model-default steps/cfg/sampler, batch 1, strength 0.75. */
moire_generate_params moire_generate_params_default(void);

typedef struct moire_progress {
    int image_index, image_count; /* 0-based image of the batch                            */
    int step, step_count;         /* steps done of this image                              */
    int nfe;                      /* model evaluations so far for this image               */
    double elapsed_s;             /* since the call started                                */
    double remaining_s;           /* estimate for the whole call; < 0 = unknown            */
} moire_progress;

typedef struct moire_callbacks {
    /* After every sampler step. Return false to cancel (same as moire_ctx_cancel). */
    bool (*progress)(const moire_progress *progress, void *user_data);
    /* The current denoised estimate x̂0 as an image, every `preview_interval` steps
       (0 = never). The image is valid only during the call. */
    void (*preview)(const moire_progress *progress, const moire_image *preview,
                    void *user_data);
    int preview_interval;
    void *user_data;
} moire_callbacks;

/* Generates params->batch_count images. On success *out_images is an array of
 * *out_count images (free with moire_images_free). On failure or cancel nothing is returned. */
moire_status moire_generate(moire_ctx *ctx, const moire_model *model,
                            const moire_generate_params *params,
                            const moire_callbacks *callbacks,
                            moire_image ***out_images, int *out_count);
void         moire_images_free(moire_image **images, int count);

/* Stream mode (DMCMC): persistent chains that keep emitting new variations of one prompt at
 * about 10 NFE each — for artists browsing a prompt. params->batch_count chains (image i uses
 * seed + i); the sampler is DMCMC whatever params->sampler says. moire_stream_new runs the
 * burn-in (progress through `callbacks`, which the stream keeps using). The context, model and
 * anything params points to must outlive the stream. A stream is deterministic: the same
 * parameters give the same sequence of images. */
typedef struct moire_stream moire_stream;
moire_status moire_stream_new(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params,
                              const moire_callbacks *callbacks, moire_stream **out_stream);
/* The next image of every chain (free with moire_images_free). */
moire_status moire_stream_next(moire_stream *stream, moire_image ***out_images, int *out_count);
typedef struct moire_stream_info {
    int emitted;          /* images emitted per chain so far                                */
    int nfe_per_image;    /* model evaluations per image of the last emission               */
    int nfe_one_off;      /* burn-in and calibration (once)                                 */
    int nfe_reseed;       /* spent re-seeding chains that left the guard band               */
    int reseeds;
    double mean_start_sigma; /* mean level (VE σ) the integrator started from, last emission */
    moire_dmcmc_level level; /* CLASSIFIER or RESIDUAL: what the chains use (AUTO resolved)   */
    int kicks;            /* diversity-guard kicks so far (chains that repeated themselves)  */
    int nfe_total;        /* every model evaluation the stream made, one-off costs included */
    bool chains;          /* DMCMC chains (false: a new-pictures stream of a plain sampler)  */
} moire_stream_info;
void moire_stream_get_info(const moire_stream *stream, moire_stream_info *info);
void moire_stream_free(moire_stream *stream);

/* ---- Streams for artists: new pictures, and variations of one picture ----------------------
 * moire_stream_open gives the two streams an artist browses with (docs/DMCMC.md, "Streams"):
 *
 * - MOIRE_STREAM_NEW_PICTURES: every round is params->batch_count fresh pictures of the
 *   prompt. With a plain sampler (params->sampler, steps) each round is an independent run with
 *   new seeds (round r, image i: seed + r·batch_count + i); with MOIRE_SAMPLER_DMCMC they come
 *   from persistent chains from noise, with the diversity guard on.
 * - MOIRE_STREAM_VARIATIONS: chains started from `source` (a history item, a PNG, a GIMP layer;
 *   resampled to the run's size) re-noised to the level the variation strength maps to; every
 *   round each chain emits a variation of it. Strength 0 stays close to the picture, 1 keeps
 *   little more than its colours and layout (moire_variation_settings gives the mapping).
 *
 * In both chain modes the diversity guard kicks a chain whose new picture is within
 * guard_distance of its previous one (RMS over model-space values, [-1, 1] for pixel models).
 * moire_stream_next and moire_stream_get_info work on these streams as on moire_stream_new's;
 * params->routing_map is not filled by a stream. */
typedef enum moire_stream_mode {
    MOIRE_STREAM_CHAINS = 0,     /* moire_stream_new: DMCMC chains from noise, guard off     */
    MOIRE_STREAM_NEW_PICTURES,
    MOIRE_STREAM_VARIATIONS,
} moire_stream_mode;

typedef struct moire_stream_params {
    moire_stream_mode mode;
    const moire_image *source;  /* VARIATIONS: the picture (must outlive moire_stream_open) */
    float variation_strength;   /* VARIATIONS: 0..1                                         */
    float guard_distance;       /* chain modes; < 0 = the default, 0 = off                   */
} moire_stream_params;

/* NEW_PICTURES, no source, strength 0.5, guard at its default. */
moire_stream_params moire_stream_params_default(void);
/* The guard distance a stream uses by default. */
#define MOIRE_STREAM_GUARD_DEFAULT 0.04f
/* Variation strength (0..1) → the chains' start level σ (VE) and Langevin step η: σ grows
 * geometrically from 0.05 to 3, η = ½·strength·σ² (a contraction of strength/4 per sweep). */
void moire_variation_settings(float strength, float *sigma, float *eta);
/* Opens a stream of `stream_params->mode` (NULL = defaults). params as for moire_stream_new;
 * for VARIATIONS params->init_image must be NULL (the source is the picture). The DMCMC
 * settings come from params->dmcmc (NULL = defaults); VARIATIONS overrides their eta,
 * sigma_init (and widens the guard band around it) and sets burn_in 0. */
moire_status moire_stream_open(moire_ctx *ctx, const moire_model *model,
                               const moire_generate_params *params,
                               const moire_stream_params *stream_params,
                               const moire_callbacks *callbacks, moire_stream **out_stream);

/* The A1111-layout "parameters" text for image `image_index` of a run (its seed is
 * seed + image_index), with the defaults resolved as the generation resolved them. Caller
 * frees with free(); NULL for parameters that no generation accepts (the message says why)
 * or when out of memory. */
char *moire_format_parameters(const moire_model *model, const moire_generate_params *params,
                              int image_index);
/* The exact settings as JSON (the "moire" PNG chunk). Caller frees with free(); NULL as
 * for moire_format_parameters. */
char *moire_format_settings_json(const moire_model *model, const moire_generate_params *params,
                                 int image_index);

/* ------------------------------------------------------------------------------------------
 * SD-VAE
 *
 * The KL-f8 autoencoder of Stable Diffusion (sd-vae-ft-mse / sd-vae-ft-ema) that maps DiT-MoE
 * latents to pixels and back, on the CPU in fp32 (docs/VAE.md). Latents are in *model space*:
 * the VAE's posterior mean multiplied by the scaling factor (0.18215, or config.json's
 * "scaling_factor"). RGB is planar [n, 3, H, W] in [-1, 1]. A moire_vae is immutable once
 * loaded and may be shared by threads; calls take a moire_ctx for threads and cancel.
 * ---------------------------------------------------------------------------------------- */

typedef struct moire_vae moire_vae;

#define MOIRE_VAE_SCALING_FACTOR 0.18215f /* SD 1.x/2.x latent scale                        */
#define MOIRE_VAE_MAX_LEVELS     8
#define MOIRE_VAE_TILE           64       /* moire_vae_decode tiles latents larger than this  */
#define MOIRE_VAE_TILE_OVERLAP   32       /* … with this many latent pixels of overlap: each
                                             tile's own pixels are ≥ 16 from its edges, more
                                             than the SD-VAE decoder's reach (12.25), so the
                                             tiled decode equals the untiled one           */

typedef struct moire_vae_info {
    const char *layout;          /* "diffusers" or "ldm" (first_stage_model.* / encoder.down…) */
    int latent_channels;         /* z (4)                                                   */
    int levels;                  /* resolution levels (4)                                   */
    int block_out_channels[MOIRE_VAE_MAX_LEVELS]; /* full resolution first (128,256,512,512)  */
    int layers_per_block;        /* encoder resnets per level; the decoder has one more (2) */
    int norm_num_groups;         /* GroupNorm groups (32)                                   */
    int image_channels;          /* 3 = RGB (the SD VAEs), 4 = RGBA (decoder out, encoder in) */
    int downscale;               /* pixels per latent pixel, 2^(levels−1) (8)               */
    float scaling_factor;        /* model-space latents = posterior mean × this             */
    bool has_encoder;            /* decoder-only files load; encoding then fails            */
} moire_vae_info;

/* Loads an SD-VAE: a diffusers directory (diffusion_pytorch_model.safetensors, optional
 * config.json, also found under DIR/vae/), such a file directly, or an original LDM/SD
 * checkpoint (.safetensors; a full SD checkpoint's first_stage_model.* keys are used and the
 * rest ignored). F32/F16/BF16. The structure is inferred from the shapes; every tensor is
 * checked for presence, shape and finiteness. */
moire_status moire_vae_load(const char *path, moire_vae **out_vae);
void         moire_vae_free(moire_vae *vae);
const moire_vae_info *moire_vae_get_info(const moire_vae *vae);

/* latents [n, z, h, w] (model space) → rgb [n, image_channels, h·downscale, w·downscale] in
 * ≈[-1, 1] (RGB, or RGBA with straight alpha for a 4-channel VAE).
 * Latents larger than MOIRE_VAE_TILE on a side are decoded in overlapping tiles. */
moire_status moire_vae_decode(moire_ctx *ctx, const moire_vae *vae, int n, int h, int w,
                              const float *latents, float *rgb);
/* The same with explicit tiling: tiles of tile × tile latent pixels overlapping by `overlap`
 * (0 <= overlap < tile); tile 0 = never tile. The attention and every GroupNorm use the whole
 * image (the GroupNorm statistics are gathered over the tiles, one pass per GroupNorm), and
 * each output pixel comes from the tile that owns it, cut in the middle of each overlap. The
 * result equals an untiled decode (to float rounding) when overlap/2 covers the decoder's
 * reach in latent pixels; with less, pixels near the cuts differ (docs/VAE.md). */
moire_status moire_vae_decode_tiled(moire_ctx *ctx, const moire_vae *vae, int n, int h, int w,
                                    int tile, int overlap, const float *latents, float *rgb);
/* rgb [n, image_channels, H, W] in [-1, 1] (H, W multiples of downscale) → model-space latents
 * [n, z, H/downscale, W/downscale]: the posterior mean × scaling factor (no sampling). */
moire_status moire_vae_encode(moire_ctx *ctx, const moire_vae *vae, int n, int height, int width,
                              const float *rgb, float *latents);

/* ------------------------------------------------------------------------------------------
 * Routing maps: which experts processed which token (the adaptive-compute overlay)
 *
 * Both families. Set moire_generate_params.routing_map to receive the map of a run: for every
 * MoE layer and every image token, how often each expert processed it, averaged over all
 * model evaluations of the run (conditional branch only; docs/ECDIT.md). Expert choice gives
 * a token 0..E experts; token choice always top_k, so there the interest is which ones.
 * ---------------------------------------------------------------------------------------- */

typedef struct moire_routing_map {
    int image_count;      /* images of the run                                               */
    int grid_h, grid_w;   /* token grid of one image (model input size / patch size)         */
    int layer_count;      /* MoE layers                                                       */
    int num_experts;      /* E                                                                */
    bool expert_choice;   /* true: EC-DiT (0..E experts per token); false: top-k per token   */
    int evaluations;      /* model evaluations averaged per image (the sampler's NFE)        */
    int *layers;          /* [layer_count] the block index of each MoE layer                 */
    float *token_experts; /* [layer_count, image_count, grid_h·grid_w, num_experts]: fraction
                             of the evaluations in which expert e processed the token        */
    float *expert_load;   /* [layer_count, num_experts]: tokens per image and evaluation that
                             expert e processed, averaged over the images                    */
} moire_routing_map;

#define MOIRE_ROUTING_LAYER_MEAN  (-1) /* mean over the MoE layers                           */
#define MOIRE_ROUTING_LAYER_TILED (-2) /* the mean, then every layer, as tiles of one image  */

typedef enum moire_routing_view {
    MOIRE_ROUTING_VIEW_DEFAULT = 0, /* COUNT for expert choice, EXPERTS for token choice     */
    MOIRE_ROUTING_VIEW_COUNT,       /* experts per token as a heat map (viridis)             */
    MOIRE_ROUTING_VIEW_EXPERTS,     /* each expert a colour, mixed by how often it was chosen */
} moire_routing_view;

void moire_routing_map_free(moire_routing_map *map);
/* Experts per token of image `image` (0-based) in `layer` (an index into map->layers, or
 * MOIRE_ROUTING_LAYER_MEAN): out[grid_h·grid_w], averaged over evaluations. */
moire_status moire_routing_map_token_counts(const moire_routing_map *map, int image, int layer,
                                            float *out);
/* The map as an RGB image: the token grid upsampled (nearest, so every token stays a visible
 * cell) to tile_width × tile_height; `layer` as above or MOIRE_ROUTING_LAYER_TILED. The COUNT
 * view maps 0 to dark violet and E (expert choice) or 2·top_k (token choice) to yellow. */
moire_status moire_routing_map_render(const moire_routing_map *map, int image, int layer,
                                      moire_routing_view view, int tile_width, int tile_height,
                                      moire_image **out_image);

/* ------------------------------------------------------------------------------------------
 * Image classifier and FID (the measurements of `moire eval`)
 *
 * A small CNN (tools/golden/classifier_ref.py is its spec; tools/train/train_classifier.py
 * trains one): 3×3 conv + ReLU + 2×2 average-pool stages, then fc1 + ReLU = the features, fc2
 * = one logit per class. Its features are the space FID is measured in, its argmax judges
 * whether an image shows the prompted class. The .safetensors file also carries the
 * reference statistics (mean and covariance of the training images' features) and the class
 * names (the prompts) in metadata "moire.classifier".
 *
 * A moire_classifier is immutable once loaded and may be shared by threads. Runs use OpenMP
 * threads over the images (OMP_NUM_THREADS); the network is ~11 M MACs per 32×32 image.
 * ---------------------------------------------------------------------------------------- */

typedef struct moire_classifier moire_classifier;

/* Loads and checks a classifier file: F32/F16/BF16 weights, shapes consistent with the
 * metadata and with each other, finite values, the FID statistics present. */
moire_status moire_classifier_load(const char *path, moire_classifier **out_classifier);
void         moire_classifier_free(moire_classifier *classifier);

int moire_classifier_input_size(const moire_classifier *classifier);  /* S: images are S×S  */
int moire_classifier_in_channels(const moire_classifier *classifier); /* 3 (RGB) or 4 (RGBA) */
int moire_classifier_feature_dim(const moire_classifier *classifier); /* D                   */
int moire_classifier_num_classes(const moire_classifier *classifier); /* K                   */
/* The prompt of class `index` (0..K−1), or NULL when out of range. */
const char *moire_classifier_class_name(const moire_classifier *classifier, int index);
/* The class whose name equals `prompt`, ignoring case and surrounding spaces; −1 if none. */
int moire_classifier_find_class(const moire_classifier *classifier, const char *prompt);

/* Classifies `count` images of input_size × input_size (the caller resizes), 3 or 4
 * channels: a 3-channel image gets alpha 255 when the classifier takes RGBA, a 4-channel one
 * gives its RGB to an RGB classifier. Pixels map to [-1, 1] as v / 127.5 − 1.
 * features [count, D] and logits [count, K] may each be NULL. */
moire_status moire_classifier_run(const moire_classifier *classifier,
                                  const moire_image *const *images, int count, float *features,
                                  float *logits);

/* FID: the Fréchet distance between the Gaussian of features [count, D] (mean and unbiased
 * covariance; count >= 2) and the file's reference statistics, in double precision. */
moire_status moire_classifier_fid(const moire_classifier *classifier, const float *features,
                                  int count, double *out_fid);

/* Noise-level classifiers (metadata task "noise-level"; tools/train/train_level_classifier.py,
 * docs/DMCMC.md): the same network, asked how much Gaussian noise a state carries. Its K
 * logits are a distribution over bins of u = ln(σ / rms(y)) whose centres the file lists;
 * a model's MODEL-levels.safetensors is loaded with the model and used by the dmcmc sampler.
 * Such a file has no class names and no FID statistics (moire_classifier_run and _fid
 * refuse it; moire_classifier_num_classes gives the bin count). */
bool moire_classifier_is_noise_level(const moire_classifier *classifier);
/* σ̂ [count] for VE states y = x0 + σ·ε, states [count, C, S, S] (C = in_channels,
 * S = input_size, the model's own channel-first layout): σ̂ = rms(y)·exp(E[u]), E[u] the
 * softmax-weighted mean of the bin centres for the input y / rms(y). */
moire_status moire_classifier_estimate_sigma(const moire_classifier *classifier,
                                             const float *states, int count,
                                             double *out_sigma);

/* ==========================================================================================
 * Host tools: .npy files, checkpoint conversion, benchmarks, output paths
 * (what `moire forward`, `convert`, `bench` and every writer of a file use)
 * ======================================================================================== */

/* NumPy .npy files (version 1.0/2.0, little-endian float32/float64/float16 and int32/int64
 * read as float; always written as float32 version 1.0). Fortran-order arrays are refused. */
#define MOIRE_NPY_MAX_DIMS 8

typedef struct moire_npy {
    int ndim;
    int64_t shape[MOIRE_NPY_MAX_DIMS];
    int64_t numel;
    float *data; /* owned */
} moire_npy;

moire_status moire_npy_load(const char *path, moire_npy *out);
/* Atomic (temporary file + rename). */
moire_status moire_npy_save(const char *path, int ndim, const int64_t *shape,
                            const float *data);
void moire_npy_free(moire_npy *npy);

/* What moire_convert_checkpoint wrote. */
typedef struct moire_convert_report {
    int tensor_count;
    char dtype_name[8];        /* of the tensors: "F32", "F16", "BF16" or "mixed"          */
    moire_model_config config; /* written as "moire.config"                                */
    char wrapper[32];          /* "" or the key unwrapped: "ema", "model", "state_dict", …  */
    bool stripped_prefix;      /* "module." was removed from the keys                       */
    int skipped_entries;       /* non-tensor entries of the state dict                      */
    bool class_names_written;  /* the ImageNet names went into moire.class_names            */
} moire_convert_report;

/* Writes `in_path` (a .pt checkpoint written by torch.save ≥ 1.6, or a safetensors file) as a
 * safetensors file at `out_path`, atomically: the same tensors, bit for bit, in their own
 * dtypes, plus "moire.config" (inferred from the keys and shapes unless the input carries one)
 * and, for a 1000-class model, "moire.class_names". `report` may be NULL. */
moire_status moire_convert_checkpoint(const char *in_path, const char *out_path,
                                      moire_convert_report *report);

/* Random-weight models of the released DiT-MoE geometries, built in memory, and backend
 * figures for `moire bench` (docs/PERFORMANCE.md). */
typedef struct moire_bench_geometry {
    const char *name;  /* "S/2", "B/2", "XL/2", "G/2", "tiny"                             */
    int depth, hidden, heads, experts, top_k;
    bool rectified_flow; /* XL/G: qk-norm layout, 50 RF steps; S/B: qkv, 250 DDPM steps   */
} moire_bench_geometry;

/* The geometry called `name` (case-insensitive; "XL/2-8E2A" or "xl" work too), or NULL. */
const moire_bench_geometry *moire_bench_geometry_find(const char *name);
/* All known geometries, NULL-terminated. */
const moire_bench_geometry *const *moire_bench_geometries(void);

/* A model with the geometry's shapes for images of resolution² pixels (SD-VAE latents /8)
 * and random weights (uniform, ±1/√D): not loadable, not meaningful, only fast to build:
 * the weight tensors are windows into one small random pool, so memory on the host stays
 * small while every tensor has its own address (a device backend copies each separately). */
moire_status moire_bench_model_new(const moire_bench_geometry *g, int resolution,
                                   moire_model **out_model);

/* Device name, memory, peak memory of this context's backend and a measured copy bandwidth
 * (CUDA: device-to-device; CPU: memcpy; read + write counted). */
typedef struct moire_bench_stats {
    char device_name[128];
    double memory_total_bytes, memory_peak_bytes, copy_bytes_per_s;
    int weight_bytes_per_parameter; /* 4 (fp32) or 2 (bf16 GEMM weights)                    */
} moire_bench_stats;
moire_status moire_bench_stats_get(const moire_ctx *ctx, moire_bench_stats *stats);

/* Output paths: writers create "<path>.XXXXXX" beside the target and finish with
 * moire_output_replace, which renames it over the target only when the target is a regular
 * file or does not exist; a symbolic link, device, FIFO or directory is refused with a message
 * asking for another path. moire_check_output_path runs the same test before any work. */
/* MOIRE_OK when `path` does not exist or is a regular file; otherwise an error saying what
 * it is (a symbolic link, a directory, a device, a FIFO) and to choose another path. */
moire_status moire_check_output_path(const char *path);

/* moire_check_output_path(path), then rename(tmp_path, path). On failure tmp_path is left
 * for the caller to unlink. */
moire_status moire_output_replace(const char *tmp_path, const char *path);

#ifdef __cplusplus
}
#endif

#endif /* MOIRE_H */
