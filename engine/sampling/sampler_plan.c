/* sampler_plan.c — the names and labels of samplers and schedules, and the plan of a sampling
 * run: its levels (sampler s units), the model time of each level, and for the official DDPM
 * sampler the respaced coefficient tables. sampler.c runs the plan; docs/SAMPLERS.md is the
 * spec (every formula below is written out there).
 */
#include "sampler.h"
#include "sampler_plan.h"

#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


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
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_sampler_from_name: out is NULL");
    for (int s = 0; s < MOIRE_SAMPLER_COUNT_; s++) {
        const sampler_names *e = &sampler_table[s];
        if (same_name(name, e->name) || same_name(name, e->label) || same_name(name, e->comfy)) {
            *out = (moire_sampler)s;
            return MOIRE_OK;
        }
    }
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
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
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_schedule_from_name: out is NULL");
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
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
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


void sampler_plan_free(plan *p)
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

bool sampler_plan_is_ve(const plan *p)
{
    return p->objective == MOIRE_OBJECTIVE_DDPM_EPS;
}

/* x = α(s)·x0 + σ(s)·ε of the k-diffusion state: VE α = 1, σ = s; RF α = 1 − s, σ = s. */
void sampler_plan_level_alpha_sigma(const plan *p, double s, double *alpha, double *sigma)
{
    *alpha = sampler_plan_is_ve(p) ? 1.0 : 1.0 - s;
    *sigma = s;
}

static moire_status check_config(const moire_model_config *c)
{
    if (!c)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: the model config is NULL");
    if (c->in_channels < 1 || c->out_channels < c->in_channels)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler: the model has %d input and %d output channels; it must "
                          "predict at least as many channels as it reads",
                          c->in_channels, c->out_channels);
    if (c->objective == MOIRE_OBJECTIVE_DDPM_EPS) {
        if (c->num_train_timesteps < 2 || c->num_train_timesteps > 100000)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "sampler: num_train_timesteps %d is out of range [2, 100000]",
                              c->num_train_timesteps);
        if (!(c->beta_start > 0.0f) || !(c->beta_end >= c->beta_start) || !(c->beta_end < 1.0f))
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "sampler: DDPM betas %g..%g are invalid; need 0 < beta_start ≤ "
                              "beta_end < 1",
                              (double)c->beta_start, (double)c->beta_end);
        if (c->learn_sigma && c->out_channels < 2 * c->in_channels)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "sampler: learn_sigma is set but the model has %d output channels "
                              "for %d input channels (need %d)",
                              c->out_channels, c->in_channels, 2 * c->in_channels);
    } else if (c->objective != MOIRE_OBJECTIVE_RECTIFIED_FLOW) {
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "sampler: unknown objective %d",
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
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: unknown sampler id %d",
                          (int)sampler);
    if (sampler == MOIRE_SAMPLER_DMCMC)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the dmcmc sampler runs persistent chains, not a schedule: it goes "
                          "through moire_generate or moire_stream_new (engine/sampling/dmcmc.c)");
    if ((int)schedule < 0 || schedule >= MOIRE_SCHEDULE_COUNT_)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: unknown schedule id %d",
                          (int)schedule);
    if (sampler == MOIRE_SAMPLER_DDPM && !ddpm_model)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the ddpm sampler needs a DDPM-ε model and this one is rectified "
                          "flow; use rf-euler (official) or euler, euler-a, heun, dpm++2m, ddim");
    if (sampler == MOIRE_SAMPLER_RF_EULER && ddpm_model)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the rf-euler sampler needs a rectified-flow model and this one is "
                          "DDPM-ε; use ddpm (official) or euler, euler-a, heun, dpm++2m, ddim");
    if (schedule == MOIRE_SCHEDULE_KARRAS &&
        (sampler == MOIRE_SAMPLER_DDPM || sampler == MOIRE_SAMPLER_RF_EULER))
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the %s sampler runs the official uniform schedule only; for Karras "
                          "levels use euler (the same integrator%s) with the karras schedule",
                          moire_sampler_name(sampler),
                          sampler == MOIRE_SAMPLER_DDPM ? " without noise" : "");
    *out = sampler;
    return MOIRE_OK;
}

moire_status sampler_plan_build(const moire_model_config *c, moire_sampler sampler,
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
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler: steps %d is out of range [1, %d]",
                          steps, STEPS_MAX);
    p->objective = c->objective;
    p->steps = steps;
    if (p->sampler == MOIRE_SAMPLER_DDPM && steps > c->num_train_timesteps)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler: ddpm respaces the %d training timesteps, so steps (%d) must "
                          "be at most %d",
                          c->num_train_timesteps, steps, c->num_train_timesteps);

    size_t n_levels = (size_t)steps + 1;
    p->levels = malloc_array(n_levels, sizeof *p->levels);
    p->model_times = malloc_array(n_levels, sizeof *p->model_times);
    p->state_a = malloc_array(n_levels, sizeof *p->state_a);
    p->state_b = malloc_array(n_levels, sizeof *p->state_b);
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
        p->alphas_cumprod = malloc_array((size_t)T, sizeof *p->alphas_cumprod);
        p->log_sigmas = malloc_array((size_t)T, sizeof *p->log_sigmas);
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
            p->timesteps = malloc_array(K, sizeof *p->timesteps);
            p->sqrt_recip_ab = malloc_array(K, sizeof(double));
            p->sqrt_recipm1_ab = malloc_array(K, sizeof(double));
            p->coef1 = malloc_array(K, sizeof(double));
            p->coef2 = malloc_array(K, sizeof(double));
            p->log_beta = malloc_array(K, sizeof(double));
            p->log_post_var = malloc_array(K, sizeof(double));
            double *ab = malloc_array(K, sizeof(double));
            double *post_var = malloc_array(K, sizeof(double));
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
            sampler_plan_level_alpha_sigma(p, p->levels[i], &p->state_a[i], &p->state_b[i]);
    p->state_a[steps] = 1.0;
    p->state_b[steps] = 0.0;
    return MOIRE_OK;
oom:
    sampler_plan_free(p);
    return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "sampler: out of memory for %d steps", steps);
}

moire_status sampler_levels(const moire_model_config *config, moire_sampler sampler,
                            moire_schedule schedule, int steps, double *levels,
                            double *model_times)
{
    if (!levels)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_levels: levels is NULL");
    plan p;
    moire_status st = sampler_plan_build(config, sampler, schedule, steps, &p);
    if (st != MOIRE_OK)
        return st;
    memcpy(levels, p.levels, ((size_t)steps + 1) * sizeof *levels);
    if (model_times)
        memcpy(model_times, p.model_times, (size_t)steps * sizeof *model_times);
    sampler_plan_free(&p);
    return MOIRE_OK;
}

