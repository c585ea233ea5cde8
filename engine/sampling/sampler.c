/* sampler.c — every sampler over the one-evaluation model interface of sampler.h.
 *
 * docs/SAMPLERS.md is the spec (every formula below is written out there);
 * tools/golden/samplers_ref.py is an independent float64 implementation of it.
 *
 * Layout of the work:
 *   1. names and labels of samplers and schedules;
 *   2. the plan: the levels (sampler s units), the model time of each level, and for the
 *      official DDPM sampler the respaced coefficient tables;
 *   3. moire_sample: argument checks, start state (txt2img or img2img), one loop over the
 *      steps that dispatches to the sampler's update, inpainting blend, progress callback.
 *
 * State and arithmetic are double; the model sees float inputs (x_in and t rounded once) and
 * returns float outputs. Every image draws its noise from its own seed (rng.h), so the
 * result for image i never depends on the batch it was run in.
 */
#include "sampler.h"

#include "internal.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STEPS_MAX 10000
#define KARRAS_RHO 7.0
/* Rectified flow has no discrete schedule; Karras runs in t between these (ComfyUI's choice
 * for flow models: t_min = 1/1000, t_max = 1). */
#define RF_KARRAS_T_MIN 1e-3
#define RF_KARRAS_T_MAX 1.0

/* ------------------------------------------------------------------------------------------
 * Names
 * ---------------------------------------------------------------------------------------- */

typedef struct sampler_names {
    const char *name;  /* ours (CLI)               */
    const char *label; /* A1111                    */
    const char *comfy; /* ComfyUI, or NULL         */
} sampler_names;

static const sampler_names sampler_table[MOIRE_SAMPLER_COUNT_] = {
    [MOIRE_SAMPLER_DEFAULT] = {"default", "Default", NULL},
    [MOIRE_SAMPLER_DDPM] = {"ddpm", "DDPM", NULL},
    [MOIRE_SAMPLER_RF_EULER] = {"rf-euler", "Euler (RF)", "rf_euler"},
    [MOIRE_SAMPLER_DDIM] = {"ddim", "DDIM", "ddim"},
    [MOIRE_SAMPLER_EULER] = {"euler", "Euler", "euler"},
    [MOIRE_SAMPLER_EULER_ANCESTRAL] = {"euler-a", "Euler a", "euler_ancestral"},
    [MOIRE_SAMPLER_HEUN] = {"heun", "Heun", "heun"},
    [MOIRE_SAMPLER_DPMPP_2M] = {"dpm++2m", "DPM++ 2M", "dpmpp_2m"},
    [MOIRE_SAMPLER_DMCMC] = {"dmcmc", "DMCMC", "dlg"},
};

static const char *const schedule_names[MOIRE_SCHEDULE_COUNT_][2] = {
    [MOIRE_SCHEDULE_DEFAULT] = {"uniform", "Uniform"}, /* DEFAULT is uniform everywhere */
    [MOIRE_SCHEDULE_UNIFORM] = {"uniform", "Uniform"},
    [MOIRE_SCHEDULE_KARRAS] = {"karras", "Karras"},
};

static int ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static bool same_name(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    for (; *a && *b; a++, b++)
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return false;
    return *a == *b;
}

moire_status moire_sampler_from_name(const char *name, moire_sampler *out)
{
    if (!out)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_sampler_from_name: out is NULL");
    for (int s = 0; s < MOIRE_SAMPLER_COUNT_; s++) {
        const sampler_names *e = &sampler_table[s];
        if (same_name(name, e->name) || same_name(name, e->label) || same_name(name, e->comfy)) {
            *out = (moire_sampler)s;
            return MOIRE_OK;
        }
    }
    return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                      "unknown sampler \"%s\"; valid samplers: default, ddpm, rf-euler, ddim, "
                      "euler, euler-a, heun, dpm++2m, dmcmc (A1111 labels such as \"Euler a\" and "
                      "\"DPM++ 2M\" and ComfyUI names such as euler_ancestral and dpmpp_2m are "
                      "accepted too)",
                      name ? name : "(null)");
}

const char *moire_sampler_name(moire_sampler sampler)
{
    if ((int)sampler < 0 || sampler >= MOIRE_SAMPLER_COUNT_)
        return "unknown";
    return sampler_table[sampler].name;
}

const char *moire_sampler_label(moire_sampler sampler)
{
    if ((int)sampler < 0 || sampler >= MOIRE_SAMPLER_COUNT_)
        return "Unknown";
    return sampler_table[sampler].label;
}

moire_status moire_schedule_from_name(const char *name, moire_schedule *out)
{
    if (!out)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_schedule_from_name: out is NULL");
    if (same_name(name, "default")) {
        *out = MOIRE_SCHEDULE_DEFAULT;
        return MOIRE_OK;
    }
    /* "normal" is the A1111/ComfyUI name of the same uniform-in-t schedule. */
    if (same_name(name, "uniform") || same_name(name, "normal")) {
        *out = MOIRE_SCHEDULE_UNIFORM;
        return MOIRE_OK;
    }
    if (same_name(name, "karras")) {
        *out = MOIRE_SCHEDULE_KARRAS;
        return MOIRE_OK;
    }
    return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                      "unknown schedule \"%s\"; valid schedules: default, uniform (alias "
                      "normal), karras",
                      name ? name : "(null)");
}

const char *moire_schedule_name(moire_schedule schedule)
{
    if ((int)schedule < 0 || schedule >= MOIRE_SCHEDULE_COUNT_)
        return "unknown";
    return schedule_names[schedule][0];
}

const char *moire_schedule_label(moire_schedule schedule)
{
    if ((int)schedule < 0 || schedule >= MOIRE_SCHEDULE_COUNT_)
        return "Unknown";
    return schedule_names[schedule][1];
}

/* ------------------------------------------------------------------------------------------
 * The plan: levels, model times, DDPM tables
 * ---------------------------------------------------------------------------------------- */

typedef struct plan {
    moire_objective objective;
    moire_sampler sampler; /* resolved (never DEFAULT) */
    int steps;
    int T;                 /* DDPM: num_train_timesteps */
    double *alphas_cumprod; /* [T] DDPM: ᾱ_i                          */
    double *log_sigmas;     /* [T] DDPM: ln √((1−ᾱ_i)/ᾱ_i)            */
    double *levels;         /* [steps+1] s units, levels[steps] = 0   */
    double *model_times;    /* [steps]                                */
    /* state = state_a·x0 + state_b·noise at each level, in the sampler's own state space
     * (VE y, RF z, DDPM-official x_t); level `steps` has a = 1, b = 0. */
    double *state_a, *state_b; /* [steps+1] */
    /* Official DDPM, indexed by the respaced k = 0..steps−1 (step i uses k = steps−1−i). */
    int *timesteps;             /* t_k                                       */
    double *sqrt_recip_ab;      /* √(1/ᾱ'_k)                                 */
    double *sqrt_recipm1_ab;    /* √(1/ᾱ'_k − 1)                             */
    double *coef1, *coef2;      /* posterior mean coefficients               */
    double *log_beta;           /* ln β'_k                                   */
    double *log_post_var;       /* ln posterior variance, clipped (k=0 ← k=1) */
} plan;

static void plan_free(plan *p)
{
    free(p->alphas_cumprod);
    free(p->log_sigmas);
    free(p->levels);
    free(p->model_times);
    free(p->state_a);
    free(p->state_b);
    free(p->timesteps);
    free(p->sqrt_recip_ab);
    free(p->sqrt_recipm1_ab);
    free(p->coef1);
    free(p->coef2);
    free(p->log_beta);
    free(p->log_post_var);
    memset(p, 0, sizeof *p);
}

/* k-diffusion's t_to_sigma: linear interpolation of ln σ between the discrete timesteps. */
static double t_to_sigma(const plan *p, double t)
{
    if (t <= 0.0)
        return exp(p->log_sigmas[0]);
    if (t >= (double)(p->T - 1))
        return exp(p->log_sigmas[p->T - 1]);
    int low = (int)floor(t);
    double w = t - (double)low;
    int high = w > 0.0 ? low + 1 : low;
    return exp((1.0 - w) * p->log_sigmas[low] + w * p->log_sigmas[high]);
}

/* k-diffusion's sigma_to_t: the fractional timestep whose interpolated ln σ is ln σ. */
static double sigma_to_t(const plan *p, double sigma)
{
    double ls = log(sigma);
    int lo = 0, hi = p->T - 2; /* largest i ≤ T−2 with log_sigmas[i] ≤ ls, else 0 */
    int low = 0;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (p->log_sigmas[mid] <= ls) {
            low = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    double w = (p->log_sigmas[low] - ls) / (p->log_sigmas[low] - p->log_sigmas[low + 1]);
    w = fmin(fmax(w, 0.0), 1.0);
    return (double)low + w;
}

/* Python's round(): half to even (the official space_timesteps uses it). */
static double round_half_even(double x)
{
    double r = floor(x + 0.5);
    if (r - x == 0.5 && fmod(r, 2.0) != 0.0)
        r -= 1.0;
    return r;
}

static bool is_ve(const plan *p)
{
    return p->objective == MOIRE_OBJECTIVE_DDPM_EPS;
}

/* x = α(s)·x0 + σ(s)·ε of the k-diffusion state: VE α = 1, σ = s; RF α = 1 − s, σ = s. */
static void level_alpha_sigma(const plan *p, double s, double *alpha, double *sigma)
{
    *alpha = is_ve(p) ? 1.0 : 1.0 - s;
    *sigma = s;
}

static moire_status check_config(const moire_model_config *c)
{
    if (!c)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: the model config is NULL");
    if (c->in_channels < 1 || c->out_channels < c->in_channels)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler: the model has %d input and %d output channels; it must "
                          "predict at least as many channels as it reads",
                          c->in_channels, c->out_channels);
    if (c->objective == MOIRE_OBJECTIVE_DDPM_EPS) {
        if (c->num_train_timesteps < 2 || c->num_train_timesteps > 100000)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "sampler: num_train_timesteps %d is out of range [2, 100000]",
                              c->num_train_timesteps);
        if (!(c->beta_start > 0.0f) || !(c->beta_end >= c->beta_start) || !(c->beta_end < 1.0f))
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "sampler: DDPM betas %g..%g are invalid; need 0 < beta_start ≤ "
                              "beta_end < 1",
                              (double)c->beta_start, (double)c->beta_end);
        if (c->learn_sigma && c->out_channels < 2 * c->in_channels)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "sampler: learn_sigma is set but the model has %d output channels "
                              "for %d input channels (need %d)",
                              c->out_channels, c->in_channels, 2 * c->in_channels);
    } else if (c->objective != MOIRE_OBJECTIVE_RECTIFIED_FLOW) {
        return moire_fail(MOIRE_ERROR_UNSUPPORTED, "sampler: unknown objective %d",
                          (int)c->objective);
    }
    return MOIRE_OK;
}

/* Resolves DEFAULT and checks that the sampler, schedule and objective go together. */
static moire_status resolve_sampler(const moire_model_config *c, moire_sampler sampler,
                                    moire_schedule schedule, moire_sampler *out)
{
    bool ddpm_model = c->objective == MOIRE_OBJECTIVE_DDPM_EPS;
    if (sampler == MOIRE_SAMPLER_DEFAULT)
        sampler = ddpm_model ? MOIRE_SAMPLER_DDPM : MOIRE_SAMPLER_RF_EULER;
    if ((int)sampler < 0 || sampler >= MOIRE_SAMPLER_COUNT_)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: unknown sampler id %d",
                          (int)sampler);
    if (sampler == MOIRE_SAMPLER_DMCMC)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the dmcmc sampler runs persistent chains, not a schedule: it goes "
                          "through moire_generate or moire_stream_new (engine/sampling/dmcmc.c)");
    if ((int)schedule < 0 || schedule >= MOIRE_SCHEDULE_COUNT_)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: unknown schedule id %d",
                          (int)schedule);
    if (sampler == MOIRE_SAMPLER_DDPM && !ddpm_model)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the ddpm sampler needs a DDPM-ε model and this one is rectified "
                          "flow; use rf-euler (official) or euler, euler-a, heun, dpm++2m, ddim");
    if (sampler == MOIRE_SAMPLER_RF_EULER && ddpm_model)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the rf-euler sampler needs a rectified-flow model and this one is "
                          "DDPM-ε; use ddpm (official) or euler, euler-a, heun, dpm++2m, ddim");
    if (schedule == MOIRE_SCHEDULE_KARRAS &&
        (sampler == MOIRE_SAMPLER_DDPM || sampler == MOIRE_SAMPLER_RF_EULER))
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the %s sampler runs the official uniform schedule only; for Karras "
                          "levels use euler (the same integrator%s) with the karras schedule",
                          moire_sampler_name(sampler),
                          sampler == MOIRE_SAMPLER_DDPM ? " without noise" : "");
    *out = sampler;
    return MOIRE_OK;
}

static moire_status build_plan(const moire_model_config *c, moire_sampler sampler,
                               moire_schedule schedule, int steps, plan *p)
{
    memset(p, 0, sizeof *p);
    moire_status st = check_config(c);
    if (st != MOIRE_OK)
        return st;
    st = resolve_sampler(c, sampler, schedule, &p->sampler);
    if (st != MOIRE_OK)
        return st;
    if (steps < 1 || steps > STEPS_MAX)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: steps %d is out of range [1, %d]",
                          steps, STEPS_MAX);
    p->objective = c->objective;
    p->steps = steps;
    if (p->sampler == MOIRE_SAMPLER_DDPM && steps > c->num_train_timesteps)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler: ddpm respaces the %d training timesteps, so steps (%d) must "
                          "be at most %d",
                          c->num_train_timesteps, steps, c->num_train_timesteps);

    size_t n_levels = (size_t)steps + 1;
    p->levels = moire_malloc_array(n_levels, sizeof *p->levels);
    p->model_times = moire_malloc_array(n_levels, sizeof *p->model_times);
    p->state_a = moire_malloc_array(n_levels, sizeof *p->state_a);
    p->state_b = moire_malloc_array(n_levels, sizeof *p->state_b);
    if (!p->levels || !p->model_times || !p->state_a || !p->state_b)
        goto oom;

    if (c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW) {
        for (int i = 0; i < steps; i++) {
            double t;
            if (schedule == MOIRE_SCHEDULE_KARRAS) {
                double ramp = steps > 1 ? (double)i / (double)(steps - 1) : 0.0;
                double a = pow(RF_KARRAS_T_MAX, 1.0 / KARRAS_RHO);
                double b = pow(RF_KARRAS_T_MIN, 1.0 / KARRAS_RHO);
                t = pow(a + ramp * (b - a), KARRAS_RHO);
            } else {
                t = (double)(steps - i) / (double)steps; /* official: t = i/N, i = N..1 */
            }
            p->levels[i] = t;
            p->model_times[i] = t;
        }
    } else {
        int T = c->num_train_timesteps;
        p->T = T;
        p->alphas_cumprod = moire_malloc_array((size_t)T, sizeof *p->alphas_cumprod);
        p->log_sigmas = moire_malloc_array((size_t)T, sizeof *p->log_sigmas);
        if (!p->alphas_cumprod || !p->log_sigmas)
            goto oom;
        /* β = linspace(beta_start, beta_end, T) in double (NumPy's formula). */
        double b0 = (double)c->beta_start, b1 = (double)c->beta_end, prod = 1.0;
        double delta = (b1 - b0) / (double)(T - 1);
        for (int i = 0; i < T; i++) {
            double beta = i == T - 1 ? b1 : b0 + (double)i * delta;
            prod *= 1.0 - beta;
            p->alphas_cumprod[i] = prod;
            p->log_sigmas[i] = 0.5 * log((1.0 - prod) / prod);
        }
        if (p->sampler == MOIRE_SAMPLER_DDPM) {
            size_t K = (size_t)steps;
            p->timesteps = moire_malloc_array(K, sizeof *p->timesteps);
            p->sqrt_recip_ab = moire_malloc_array(K, sizeof(double));
            p->sqrt_recipm1_ab = moire_malloc_array(K, sizeof(double));
            p->coef1 = moire_malloc_array(K, sizeof(double));
            p->coef2 = moire_malloc_array(K, sizeof(double));
            p->log_beta = moire_malloc_array(K, sizeof(double));
            p->log_post_var = moire_malloc_array(K, sizeof(double));
            double *ab = moire_malloc_array(K, sizeof(double));
            double *post_var = moire_malloc_array(K, sizeof(double));
            if (!p->timesteps || !p->sqrt_recip_ab || !p->sqrt_recipm1_ab || !p->coef1 ||
                !p->coef2 || !p->log_beta || !p->log_post_var || !ab || !post_var) {
                free(ab);
                free(post_var);
                goto oom;
            }
            /* space_timesteps(T, [steps]): accumulated fractional stride, Python round(). */
            double stride = steps > 1 ? (double)(T - 1) / (double)(steps - 1) : 1.0;
            double cur = 0.0;
            for (int k = 0; k < steps; k++) {
                p->timesteps[k] = (int)round_half_even(cur);
                cur += stride;
            }
            /* New betas from the kept ᾱ, then the respaced diffusion's own cumprod. */
            double last = 1.0, cum = 1.0;
            for (int k = 0; k < steps; k++) {
                double ab_t = p->alphas_cumprod[p->timesteps[k]];
                double beta = 1.0 - ab_t / last;
                last = ab_t;
                cum *= 1.0 - beta;
                ab[k] = cum;
                double ab_prev = k > 0 ? ab[k - 1] : 1.0;
                p->sqrt_recip_ab[k] = sqrt(1.0 / cum);
                p->sqrt_recipm1_ab[k] = sqrt(1.0 / cum - 1.0);
                p->coef1[k] = beta * sqrt(ab_prev) / (1.0 - cum);
                p->coef2[k] = (1.0 - ab_prev) * sqrt(1.0 - beta) / (1.0 - cum);
                p->log_beta[k] = log(beta);
                post_var[k] = beta * (1.0 - ab_prev) / (1.0 - cum);
            }
            /* IDDPM clipping: entry 0 (variance 0) ← entry 1. With one step, entry 0 is
             * never used (no noise at the last step). */
            for (int k = 0; k < steps; k++)
                p->log_post_var[k] = k > 0 ? log(post_var[k])
                                           : (steps > 1 ? log(post_var[1]) : p->log_beta[0]);
            for (int i = 0; i < steps; i++) {
                int k = steps - 1 - i;
                p->levels[i] = sqrt((1.0 - ab[k]) / ab[k]);
                p->model_times[i] = (double)p->timesteps[k];
                p->state_a[i] = sqrt(ab[k]);
                p->state_b[i] = sqrt(1.0 - ab[k]);
            }
            free(ab);
            free(post_var);
        } else {
            for (int i = 0; i < steps; i++) {
                double sigma, t;
                if (schedule == MOIRE_SCHEDULE_KARRAS) {
                    double smin = exp(p->log_sigmas[0]), smax = exp(p->log_sigmas[T - 1]);
                    double ramp = steps > 1 ? (double)i / (double)(steps - 1) : 0.0;
                    double a = pow(smax, 1.0 / KARRAS_RHO), b = pow(smin, 1.0 / KARRAS_RHO);
                    sigma = pow(a + ramp * (b - a), KARRAS_RHO);
                    t = sigma_to_t(p, sigma);
                } else {
                    /* linspace(T−1, 0, steps): k-diffusion / A1111 "Normal". */
                    t = steps > 1 ? (double)(T - 1) * (double)(steps - 1 - i) / (double)(steps - 1)
                                  : (double)(T - 1);
                    sigma = t_to_sigma(p, t);
                }
                p->levels[i] = sigma;
                p->model_times[i] = t;
            }
        }
    }
    p->levels[steps] = 0.0;
    p->model_times[steps] = 0.0; /* never used: no evaluation at level 0 */
    if (p->sampler != MOIRE_SAMPLER_DDPM)
        for (int i = 0; i < steps; i++)
            level_alpha_sigma(p, p->levels[i], &p->state_a[i], &p->state_b[i]);
    p->state_a[steps] = 1.0;
    p->state_b[steps] = 0.0;
    return MOIRE_OK;
oom:
    plan_free(p);
    return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "sampler: out of memory for %d steps", steps);
}

moire_status sampler_levels(const moire_model_config *config, moire_sampler sampler,
                            moire_schedule schedule, int steps, double *levels,
                            double *model_times)
{
    if (!levels)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_levels: levels is NULL");
    plan p;
    moire_status st = build_plan(config, sampler, schedule, steps, &p);
    if (st != MOIRE_OK)
        return st;
    memcpy(levels, p.levels, ((size_t)steps + 1) * sizeof *levels);
    if (model_times)
        memcpy(model_times, p.model_times, (size_t)steps * sizeof *model_times);
    plan_free(&p);
    return MOIRE_OK;
}

/* ------------------------------------------------------------------------------------------
 * Sampling
 * ---------------------------------------------------------------------------------------- */

typedef struct run {
    const moire_sample_request *req;
    plan p;
    int C, Co;
    size_t hw, chw, total; /* per-image sizes and n·C·h·w */
    int nfe;
    double *y;      /* [n,C,h,w] state                         */
    double *den;    /* [n,C,h,w] D of the latest evaluation    */
    double *old;    /* [n,C,h,w] dpm++2m: previous D           */
    double *y2;     /* [n,C,h,w] heun: predictor state         */
    float *x_in;    /* [n,C,h,w] model input                   */
    float *t_in;    /* [n]                                     */
    float *out;     /* [n,Co,h,w] raw model output             */
    float *noise;   /* [C,h,w] one image's noise               */
    float *x0_est;  /* [n,C,h,w] for on_step                   */
} run;

static void run_free(run *r)
{
    plan_free(&r->p);
    free(r->y);
    free(r->den);
    free(r->old);
    free(r->y2);
    free(r->x_in);
    free(r->t_in);
    free(r->out);
    free(r->noise);
    free(r->x0_est);
}

/* One model call: x_in = (float)(scale·y), t = (float)time for every image. */
static moire_status call_model(run *r, const double *y, double scale, double time)
{
    const moire_sample_request *q = r->req;
    for (size_t j = 0; j < r->total; j++)
        r->x_in[j] = (float)(scale * y[j]);
    for (int b = 0; b < q->n; b++)
        r->t_in[b] = (float)time;
    moire_status st = q->model(q->model_user_data, r->x_in, r->t_in, r->out);
    r->nfe++;
    return st;
}

/* Channel c of image b's raw output (ε or v). */
static inline double model_out(const run *r, size_t b, size_t j_in_image)
{
    return (double)r->out[b * (size_t)r->Co * r->hw + j_in_image];
}

/* The k-diffusion denoiser D(y; s) at level index `level` into r->den. */
static moire_status denoise(run *r, const double *y, int level)
{
    double s = r->p.levels[level];
    double scale = is_ve(&r->p) ? 1.0 / sqrt(1.0 + s * s) : 1.0;
    moire_status st = call_model(r, y, scale, r->p.model_times[level]);
    if (st != MOIRE_OK)
        return st;
    for (int b = 0; b < r->req->n; b++) {
        size_t base = (size_t)b * r->chw;
        for (size_t j = 0; j < r->chw; j++)
            r->den[base + j] = y[base + j] - s * model_out(r, (size_t)b, j);
    }
    return MOIRE_OK;
}

/* Image b's noise of `stream` (count C·h·w, offset 0, its own seed) into r->noise. */
static void draw_noise(run *r, int b, uint64_t stream)
{
    moire_rng_normal(r->req->seeds[b], stream, 0, r->noise, (int64_t)r->chw);
}

static moire_status step_ddpm(run *r, int i)
{
    const plan *p = &r->p;
    int k = p->steps - 1 - i;
    moire_status st = call_model(r, r->y, 1.0, p->model_times[i]);
    if (st != MOIRE_OK)
        return st;
    bool learned = r->req->config->learn_sigma;
    for (int b = 0; b < r->req->n; b++) {
        size_t base = (size_t)b * r->chw;
        if (k > 0)
            draw_noise(r, b, MOIRE_RNG_STREAM_STEP + (uint64_t)i);
        for (size_t j = 0; j < r->chw; j++) {
            double x = r->y[base + j];
            double eps = model_out(r, (size_t)b, j);
            double x0 = p->sqrt_recip_ab[k] * x - p->sqrt_recipm1_ab[k] * eps;
            double mean = p->coef1[k] * x0 + p->coef2[k] * x;
            r->den[base + j] = x0;
            if (k > 0) {
                double f = 0.0; /* learn_sigma off: the (clipped) posterior variance */
                if (learned)
                    f = (model_out(r, (size_t)b, r->chw + j) + 1.0) * 0.5;
                double logvar = f * p->log_beta[k] + (1.0 - f) * p->log_post_var[k];
                mean += exp(0.5 * logvar) * (double)r->noise[j];
            }
            r->y[base + j] = mean;
        }
    }
    return MOIRE_OK;
}

static moire_status step_rf_euler(run *r, int i)
{
    const plan *p = &r->p;
    double t = p->levels[i], dt = t - p->levels[i + 1];
    moire_status st = call_model(r, r->y, 1.0, p->model_times[i]);
    if (st != MOIRE_OK)
        return st;
    for (int b = 0; b < r->req->n; b++) {
        size_t base = (size_t)b * r->chw;
        for (size_t j = 0; j < r->chw; j++) {
            double z = r->y[base + j], v = model_out(r, (size_t)b, j);
            r->den[base + j] = z - t * v;
            r->y[base + j] = z - dt * v;
        }
    }
    return MOIRE_OK;
}

static moire_status step_euler_heun(run *r, int i, bool heun)
{
    const plan *p = &r->p;
    double s = p->levels[i], s_next = p->levels[i + 1], ds = s_next - s;
    moire_status st = denoise(r, r->y, i);
    if (st != MOIRE_OK)
        return st;
    if (!heun || s_next == 0.0) { /* Heun's last step to 0 is Euler (EDM Alg. 1) */
        for (size_t j = 0; j < r->total; j++)
            r->y[j] += ds * (r->y[j] - r->den[j]) / s;
        return MOIRE_OK;
    }
    for (size_t j = 0; j < r->total; j++)
        r->y2[j] = r->y[j] + ds * (r->y[j] - r->den[j]) / s;
    /* keep D(y; s) for the progress estimate: evaluate the corrector into `old` */
    double *keep = r->den;
    r->den = r->old;
    st = denoise(r, r->y2, i + 1);
    r->old = r->den;
    r->den = keep;
    if (st != MOIRE_OK)
        return st;
    for (size_t j = 0; j < r->total; j++) {
        double d1 = (r->y[j] - r->den[j]) / s;
        double d2 = (r->y2[j] - r->old[j]) / s_next;
        r->y[j] += ds * 0.5 * (d1 + d2);
    }
    return MOIRE_OK;
}

/* DDIM (η) and Euler ancestral (η = 1) in the general x = α·x0 + σ·ε form. */
static moire_status step_ddim(run *r, int i, double eta)
{
    const plan *p = &r->p;
    double a, sg, a2, sg2;
    level_alpha_sigma(p, p->levels[i], &a, &sg);
    level_alpha_sigma(p, p->levels[i + 1], &a2, &sg2);
    moire_status st = denoise(r, r->y, i);
    if (st != MOIRE_OK)
        return st;
    double up = 0.0, c_eps = 0.0;
    if (sg2 > 0.0) {
        double q = (a * sg2) / (a2 * sg);
        up = eta * sg2 * sqrt(fmax(0.0, 1.0 - q * q));
        c_eps = sqrt(fmax(0.0, sg2 * sg2 - up * up));
    } else {
        a2 = 1.0;
    }
    for (int b = 0; b < r->req->n; b++) {
        size_t base = (size_t)b * r->chw;
        if (up > 0.0)
            draw_noise(r, b, MOIRE_RNG_STREAM_STEP + (uint64_t)i);
        for (size_t j = 0; j < r->chw; j++) {
            double d = r->den[base + j];
            double eps = (r->y[base + j] - a * d) / sg;
            double y = a2 * d + c_eps * eps;
            if (up > 0.0)
                y += up * (double)r->noise[j];
            r->y[base + j] = y;
        }
    }
    return MOIRE_OK;
}

/* DPM-Solver++(2M), data prediction, λ = ln(α/σ). `have_old`/`old_lambda` carry the
 * previous step's D and λ; a previous λ of −∞ (RF at t = 1) makes the step first order. */
static moire_status step_dpmpp_2m(run *r, int i, bool *have_old, double *old_lambda)
{
    const plan *p = &r->p;
    double a, sg, a2, sg2;
    level_alpha_sigma(p, p->levels[i], &a, &sg);
    level_alpha_sigma(p, p->levels[i + 1], &a2, &sg2);
    moire_status st = denoise(r, r->y, i);
    if (st != MOIRE_OK)
        return st;
    double lambda = a > 0.0 ? log(a) - log(sg) : -INFINITY;
    if (sg2 == 0.0) {
        memcpy(r->y, r->den, r->total * sizeof *r->y);
    } else {
        double lambda2 = log(a2) - log(sg2);
        double phi = 1.0; /* −expm1(−h); h = +∞ when λ = −∞ */
        double w_old = 0.0;
        if (a > 0.0) {
            double h = lambda2 - lambda;
            phi = -expm1(-h);
            if (*have_old && isfinite(*old_lambda)) {
                double rr = (lambda - *old_lambda) / h;
                w_old = 1.0 / (2.0 * rr);
            }
        }
        double ratio = sg2 / sg;
        for (size_t j = 0; j < r->total; j++) {
            double d = w_old != 0.0 ? (1.0 + w_old) * r->den[j] - w_old * r->old[j] : r->den[j];
            r->y[j] = ratio * r->y[j] + a2 * phi * d;
        }
    }
    memcpy(r->old, r->den, r->total * sizeof *r->old);
    *have_old = true;
    *old_lambda = lambda;
    return MOIRE_OK;
}

static moire_status check_request(const moire_sample_request *q, float *out)
{
    if (!q || !out)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_sample: request or out is NULL");
    if (!q->model)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_sample: no model function");
    if (q->n < 1 || q->h < 1 || q->w < 1)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_sample: n = %d images of %d×%d; all must be ≥ 1", q->n, q->h,
                          q->w);
    if (!q->seeds)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_sample: seeds is NULL");
    if (q->steps < 1 || q->steps > STEPS_MAX)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_sample: steps %d is out of range [1, %d]", q->steps, STEPS_MAX);
    if (!(q->eta >= 0.0f && q->eta <= 1.0f))
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_sample: DDIM eta %g is out of range [0, 1]", (double)q->eta);
    if (q->init && !(q->strength > 0.0f && q->strength <= 1.0f))
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_sample: img2img strength %g is out of range (0, 1]",
                          (double)q->strength);
    if (q->mask && !q->init)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_sample: a mask needs an init image (inpainting keeps the init "
                          "where the mask is 0)");
    if (q->mask)
        for (size_t j = 0; j < (size_t)q->h * (size_t)q->w; j++)
            if (!(q->mask[j] >= 0.0f && q->mask[j] <= 1.0f))
                return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                                  "moire_sample: mask value %g at pixel %zu is outside [0, 1]",
                                  (double)q->mask[j], j);
    return MOIRE_OK;
}

/* Inpainting: y ← m·y + (1−m)·(a·init + b·n) at level index `level` (noise MASK + step). */
static void blend_known(run *r, int level, int step)
{
    const moire_sample_request *q = r->req;
    double a = r->p.state_a[level], bcoef = r->p.state_b[level];
    for (int b = 0; b < q->n; b++) {
        size_t base = (size_t)b * r->chw;
        if (bcoef != 0.0)
            draw_noise(r, b, MOIRE_RNG_STREAM_MASK + (uint64_t)step);
        for (size_t j = 0; j < r->chw; j++) {
            double m = (double)q->mask[j % r->hw];
            double known = a * (double)q->init[base + j];
            if (bcoef != 0.0)
                known += bcoef * (double)r->noise[j];
            r->y[base + j] = m * r->y[base + j] + (1.0 - m) * known;
        }
    }
}

moire_status moire_sample(const moire_sample_request *request, float *out, int *out_nfe)
{
    moire_status st = check_request(request, out);
    if (st != MOIRE_OK)
        return st;
    const moire_sample_request *q = request;
    run r;
    memset(&r, 0, sizeof r);
    r.req = q;
    st = build_plan(q->config, q->sampler, q->schedule, q->steps, &r.p);
    if (st != MOIRE_OK)
        return st;
    const plan *p = &r.p;
    r.C = q->config->in_channels;
    r.Co = q->config->out_channels;
    r.hw = (size_t)q->h * (size_t)q->w;
    r.chw = (size_t)r.C * r.hw;
    r.total = (size_t)q->n * r.chw;
    size_t total_out = (size_t)q->n * (size_t)r.Co * r.hw;
    r.y = moire_malloc_array(r.total, sizeof(double));
    r.den = moire_malloc_array(r.total, sizeof(double));
    /* zeroed: the first DPM++ 2M step weighs it by 0, and 0 × garbage can be NaN */
    r.old = moire_calloc_array(r.total, sizeof(double));
    r.y2 = moire_malloc_array(r.total, sizeof(double));
    r.x_in = moire_malloc_array(r.total, sizeof(float));
    r.t_in = moire_malloc_array((size_t)q->n, sizeof(float));
    r.out = moire_malloc_array(total_out, sizeof(float));
    r.noise = moire_malloc_array(r.chw, sizeof(float));
    r.x0_est = moire_malloc_array(r.total, sizeof(float));
    if (!r.y || !r.den || !r.old || !r.y2 || !r.x_in || !r.t_in || !r.out || !r.noise ||
        !r.x0_est) {
        run_free(&r);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "moire_sample: out of memory for %d images of %d×%d×%d", q->n, r.C,
                          q->h, q->w);
    }

    /* Which steps run: all, or the last round(strength·steps) of them for img2img. */
    int steps = p->steps, first = 0;
    bool from_init = q->init && q->strength < 1.0f;
    if (from_init) {
        int n_run = (int)floor((double)q->strength * (double)steps + 0.5);
        n_run = n_run < 1 ? 1 : (n_run > steps ? steps : n_run);
        first = steps - n_run;
    }

    /* Start state. */
    for (int b = 0; b < q->n; b++) {
        size_t base = (size_t)b * r.chw;
        if (from_init) {
            draw_noise(&r, b, MOIRE_RNG_STREAM_IMG2IMG);
            for (size_t j = 0; j < r.chw; j++)
                r.y[base + j] = p->state_a[first] * (double)q->init[base + j] +
                                p->state_b[first] * (double)r.noise[j];
        } else {
            draw_noise(&r, b, MOIRE_RNG_STREAM_INIT);
            /* DDPM official: x_T = noise; k-diffusion: y = s_0·noise (RF: s_0 = 1). */
            double scale = p->sampler == MOIRE_SAMPLER_DDPM ? 1.0 : p->levels[0];
            for (size_t j = 0; j < r.chw; j++)
                r.y[base + j] = scale * (double)r.noise[j];
        }
    }

    bool have_old = false;
    double old_lambda = -INFINITY;
    for (int i = first; i < steps && st == MOIRE_OK; i++) {
        switch (p->sampler) {
        case MOIRE_SAMPLER_DDPM:            st = step_ddpm(&r, i); break;
        case MOIRE_SAMPLER_RF_EULER:        st = step_rf_euler(&r, i); break;
        case MOIRE_SAMPLER_EULER:           st = step_euler_heun(&r, i, false); break;
        case MOIRE_SAMPLER_HEUN:            st = step_euler_heun(&r, i, true); break;
        case MOIRE_SAMPLER_DDIM:            st = step_ddim(&r, i, (double)q->eta); break;
        case MOIRE_SAMPLER_EULER_ANCESTRAL: st = step_ddim(&r, i, 1.0); break;
        case MOIRE_SAMPLER_DPMPP_2M:        st = step_dpmpp_2m(&r, i, &have_old, &old_lambda); break;
        default:
            st = moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_sample: unknown sampler %d",
                            (int)p->sampler);
        }
        if (st != MOIRE_OK)
            break;
        if (q->mask)
            blend_known(&r, i + 1, i);
        if (q->on_step) {
            for (size_t j = 0; j < r.total; j++)
                r.x0_est[j] = (float)r.den[j];
            if (!q->on_step(q->on_step_user_data, i - first + 1, steps - first, r.nfe,
                            r.x0_est))
                st = moire_fail(MOIRE_ERROR_CANCELLED, "sampling cancelled at step %d of %d",
                                i - first + 1, steps - first);
        }
    }
    if (st == MOIRE_OK) {
        for (size_t j = 0; j < r.total; j++)
            out[j] = (float)r.y[j];
        if (out_nfe)
            *out_nfe = r.nfe;
    }
    run_free(&r);
    return st;
}
