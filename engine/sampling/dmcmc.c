/* dmcmc.c — Denoising Langevin Gibbs chains (see dmcmc.h and docs/DMCMC.md).
 *
 * All chains advance in lockstep so every model call is one batch of n images, each with its
 * own noise level. States are kept in double; the model sees float input and time.
 *
 * Noise-level update. DiT-MoE checkpoints ship no noise-level classifier, so the level is
 * estimated from the denoiser itself ("residual self-consistency"): the Langevin step already
 * evaluates D(y; s), and the residual y − D measures the noise present. A calibration curve
 * f(σ) = E‖y − D(y;σ)‖²/(d σ²) is measured once, at burn-in, on the chains' own clean samples
 * (f → 1 for data on a low-dimensional manifold, σ²/(σ²+v) for Gaussian data of variance v);
 * reading D as a shrinkage denoiser with that f lets the true level be solved for even when
 * the assumed level s is off (dmcmc_estimate_sigma). The estimate is propagated through
 * the Langevin step (which shrinks the old noise by (1 − a) and adds η of fresh variance),
 * damped in log σ and clamped to the model's range; a chain that leaves the guard band is
 * re-seeded.
 *
 * With a level hook (a noise-level classifier, as in the paper) the level after each Langevin
 * step is read from the new state itself, damped in log σ the same way, and no calibration is
 * spent.
 */
#include "dmcmc.h"
#include "internal.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Noise streams of the chains: base + a per-chain draw counter (rng.h lists the others). */
#define DMCMC_STREAM_BASE UINT64_C(0x300000000)
#define CALIBRATION_LEVELS 6
#define RF_SIGMA_MAX 80.0  /* burn-in start for rectified flow: t = 80/81 ≈ 0.988 */
#define RF_SIGMA_MIN 0.002
#define KARRAS_RHO 7.0

struct moire_dmcmc {
    moire_model_config config;
    moire_dmcmc_params params;
    int n, C, h, w;
    size_t chw, total;
    uint64_t *seeds;        /* [n]                                                  */
    uint64_t *draws;        /* [n] noise draws made by each chain                   */
    moire_model_fn model;
    void *model_user_data;

    double *y;              /* [n, chw] chain states (VE)                          */
    double *s;              /* [n] chain levels                                    */
    bool *reseed;           /* [n] chains flagged out of band                       */

    /* DDPM-ε models: the discrete ln σ table for σ → t. */
    double *log_sigmas;     /* [T]                                                  */
    int T;
    double sigma_min, sigma_max; /* the model's representable range                  */

    /* Calibration: at levels σ_k, the effective data variance v_k = σ_k²(1 − f_k)/f_k of the
     * denoiser read as a shrinkage estimator. v is nearly flat in σ (constant for Gaussian
     * data, → 0 on a manifold), so it interpolates far better than f itself, and the level
     * estimate's inversion is very sensitive to it. */
    double calib_log_sigma[CALIBRATION_LEVELS], calib_v[CALIBRATION_LEVELS];

    /* Progress of the current phase (burn-in, or one emission) and cancel. */
    moire_dmcmc_progress_fn progress;
    void *progress_user_data;
    int phase_done, phase_total;

    /* Level hook (NULL = the residual estimate) and its per-chain results. */
    moire_dmcmc_level_fn level;
    void *level_user_data;
    double *level_estimates; /* [n]                                                       */

    /* scratch */
    float *x_in, *t_in, *out, *noise;   /* model batch and one chain's noise        */
    double *den, *den_old, *work, *best_y, *best_s, *levels, *d1;
    double *previous;        /* [n, chw] each chain's last emission (the diversity guard)  */
    double *last_distance;   /* [n] RMS distance of the last emission from the one before */
    double *source;          /* [n, chw] the given pictures chains start from, or NULL     */
    moire_dmcmc_stats stats;
};

moire_dmcmc_params moire_dmcmc_params_default(void)
{
    moire_dmcmc_params p = {
        .eta = 0.08f,
        .skip = 4,
        .integrator = MOIRE_DMCMC_DPMPP_2M,
        .integrator_steps = 5,
        .tweedie = true,
        .tweedie_sigma = 0.02f,
        .churn = 1.0f,
        .burn_in_steps = 24,
        .burn_in = 8,
        .sigma_init = 0.5f,
        .sigma_low = 0.02f,
        .sigma_high = 5.0f,
        .damping = 0.5f,
        .level = MOIRE_DMCMC_LEVEL_AUTO,
        .guard_distance = 0.0f,
        .kick_sigma = 1.0f,
    };
    return p;
}

static const char *const integrator_names[MOIRE_DMCMC_INTEGRATOR_COUNT_] = {
    "euler", "heun", "stochastic-heun", "ddim", "dpm++2m",
};

const char *moire_dmcmc_integrator_name(moire_dmcmc_integrator integrator)
{
    return (unsigned)integrator < MOIRE_DMCMC_INTEGRATOR_COUNT_ ? integrator_names[integrator]
                                                                : "unknown";
}

moire_status moire_dmcmc_integrator_from_name(const char *name, moire_dmcmc_integrator *out)
{
    for (int i = 0; name && i < MOIRE_DMCMC_INTEGRATOR_COUNT_; i++)
        if (strcmp(name, integrator_names[i]) == 0) {
            *out = (moire_dmcmc_integrator)i;
            return MOIRE_OK;
        }
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                      "unknown DMCMC integrator \"%s\": use euler, heun, stochastic-heun, ddim "
                      "or dpm++2m", name ? name : "(null)");
}

static const char *const level_names[MOIRE_DMCMC_LEVEL_COUNT_] = {
    "auto", "classifier", "residual",
};

const char *moire_dmcmc_level_name(moire_dmcmc_level level)
{
    return (unsigned)level < MOIRE_DMCMC_LEVEL_COUNT_ ? level_names[level] : "unknown";
}

moire_status moire_dmcmc_level_from_name(const char *name, moire_dmcmc_level *out)
{
    for (int i = 0; name && i < MOIRE_DMCMC_LEVEL_COUNT_; i++)
        if (strcmp(name, level_names[i]) == 0) {
            *out = (moire_dmcmc_level)i;
            return MOIRE_OK;
        }
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                      "unknown DMCMC level estimate \"%s\": use auto, classifier or residual",
                      name ? name : "(null)");
}

static int integrator_nfe(moire_dmcmc_integrator integrator, int steps)
{
    bool second_order = integrator == MOIRE_DMCMC_HEUN ||
                        integrator == MOIRE_DMCMC_STOCHASTIC_HEUN;
    return second_order ? 2 * steps - 1 : steps;
}

int moire_dmcmc_nfe_per_sample(const moire_dmcmc_params *p)
{
    return p->skip + integrator_nfe(p->integrator, p->integrator_steps) + (p->tweedie ? 1 : 0);
}

/* ---- Langevin step and level estimate -------------------------------------------------- */

double dmcmc_langevin_update(double *y, const double *denoised, const float *noise,
                             size_t count, double s, double eta)
{
    /* The paper's step is absolute; near small s it would overshoot (a > 1 diverges), so the
     * contraction a = η/(2s²) is capped at ½. */
    const double eta_eff = fmin(eta, s * s);
    const double a = eta_eff / (2.0 * s * s);
    const double noise_scale = sqrt(eta_eff);
    for (size_t j = 0; j < count; j++)
        y[j] = (1.0 - a) * y[j] + a * denoised[j] + noise_scale * (double)noise[j];
    return a;
}

double dmcmc_estimate_sigma(const double *y_before, const double *denoised, size_t count,
                            double s, double calibration, double a, double eta_eff)
{
    double sum = 0.0;
    for (size_t j = 0; j < count; j++) {
        double r = y_before[j] - denoised[j];
        sum += r * r;
    }
    const double m = sum / (double)count;

    const double f = fmin(fmax(calibration, 1e-3), 1.0);
    const double s2 = s * s, v = s2 * (1.0 - f) / f;
    /* The inversion multiplies the measurement's own noise by (1 + v/s²)²: use it where that
     * is moderate, and the plain m/f (unbiased when the assumed level is right) elsewhere. */
    double noise_var = v <= 4.0 * s2 ? m * (v + s2) * (v + s2) / (s2 * s2) - v : m / f;
    noise_var = fmax(noise_var, 0.0625 * s2);
    return sqrt((1.0 - a) * (1.0 - a) * noise_var + eta_eff);
}

/* ---- the VE denoiser over the model function ------------------------------------------- */

static double ddpm_sigma_to_t(const moire_dmcmc *m, double sigma)
{
    double ls = log(sigma);
    if (ls <= m->log_sigmas[0])
        return 0.0;
    if (ls >= m->log_sigmas[m->T - 1])
        return (double)(m->T - 1);
    int lo = 0, hi = m->T - 1; /* log_sigmas is increasing */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (m->log_sigmas[mid] <= ls)
            lo = mid;
        else
            hi = mid;
    }
    return lo + (ls - m->log_sigmas[lo]) / (m->log_sigmas[hi] - m->log_sigmas[lo]);
}

static double clamp_level(const moire_dmcmc *m, double s)
{
    if (!isfinite(s))
        return m->sigma_max;
    return fmin(fmax(s, m->sigma_min), m->sigma_max);
}

/* den[b] = D(y[b]; levels[b]) for every chain in one batched call; levels > 0. */
static moire_status denoise(moire_dmcmc *m, const double *y, const double *levels, double *den)
{
    const bool ddpm = m->config.objective == MOIRE_OBJECTIVE_DDPM_EPS;
    for (int b = 0; b < m->n; b++) {
        const double s = levels[b];
        const double scale = ddpm ? 1.0 / sqrt(1.0 + s * s) : 1.0 / (1.0 + s);
        m->t_in[b] = (float)(ddpm ? ddpm_sigma_to_t(m, s) : s / (1.0 + s));
        for (size_t j = 0; j < m->chw; j++)
            m->x_in[(size_t)b * m->chw + j] = (float)(scale * y[(size_t)b * m->chw + j]);
    }
    moire_status status = m->model(m->model_user_data, m->x_in, m->t_in, m->out);
    if (status != MOIRE_OK)
        return status;
    m->phase_done++;
    if (m->progress && !m->progress(m->progress_user_data, m->phase_done, m->phase_total))
        return error_fail(MOIRE_ERROR_CANCELLED, "cancelled");
    const size_t out_per_image = (size_t)m->config.out_channels * m->h * m->w;
    for (int b = 0; b < m->n; b++) {
        const double s = levels[b];
        const float *o = m->out + (size_t)b * out_per_image;
        const double *yb = y + (size_t)b * m->chw;
        double *db = den + (size_t)b * m->chw;
        if (ddpm) {
            for (size_t j = 0; j < m->chw; j++) /* D = y − σ·ε */
                db[j] = yb[j] - s * (double)o[j];
        } else {
            const double t = s / (1.0 + s);
            for (size_t j = 0; j < m->chw; j++) /* D = x_t − t·v */
                db[j] = yb[j] / (1.0 + s) - t * (double)o[j];
        }
    }
    return MOIRE_OK;
}

/* Chain c's next noise vector (chw normals) into m->noise. */
static const float *next_noise(moire_dmcmc *m, int c)
{
    rng_normal(m->seeds[c], DMCMC_STREAM_BASE + m->draws[c]++, 0, m->noise,
               (int64_t)m->chw);
    return m->noise;
}

/* Calibration factor f(s) = s²/(s² + v(s)), v interpolated linearly in log σ (flat outside
 * the measured range). */
static double calibration_at(const moire_dmcmc *m, double s)
{
    const double ls = log(s);
    double v = m->calib_v[CALIBRATION_LEVELS - 1];
    if (ls <= m->calib_log_sigma[0]) {
        v = m->calib_v[0];
    } else {
        for (int k = 1; k < CALIBRATION_LEVELS; k++)
            if (ls <= m->calib_log_sigma[k]) {
                double w = (ls - m->calib_log_sigma[k - 1]) /
                           (m->calib_log_sigma[k] - m->calib_log_sigma[k - 1]);
                v = (1.0 - w) * m->calib_v[k - 1] + w * m->calib_v[k];
                break;
            }
    }
    return s * s / (s * s + v);
}

/* ---- integrators from per-chain start levels ---------------------------------------------- */

/* levels[c·(N+1) + i], Karras ρ = 7 from the chain's start down to a floor, then 0. */
static void build_levels(const moire_dmcmc *m, const double *start, int N, double *levels)
{
    for (int c = 0; c < m->n; c++) {
        double *lv = levels + (size_t)c * (N + 1);
        double hi = start[c];
        double lo = fmin(m->config.objective == MOIRE_OBJECTIVE_DDPM_EPS ? m->sigma_min
                                                                         : RF_SIGMA_MIN,
                         0.5 * hi);
        for (int i = 0; i < N; i++) {
            double ramp = N > 1 ? (double)i / (N - 1) : 0.0;
            double a = pow(hi, 1.0 / KARRAS_RHO), b = pow(lo, 1.0 / KARRAS_RHO);
            lv[i] = pow(a + ramp * (b - a), KARRAS_RHO);
        }
        lv[N] = 0.0;
    }
}

/* Runs `integrator` for N steps on y (all chains) from the per-chain levels table. */
static moire_status integrate(moire_dmcmc *m, double *y, moire_dmcmc_integrator integrator,
                              int N, const double *levels)
{
    const size_t chw = m->chw;
    double *cur = malloc((size_t)m->n * sizeof(double));
    double *nxt = malloc((size_t)m->n * sizeof(double));
    double *old_lambda = malloc((size_t)m->n * sizeof(double));
    if (!cur || !nxt || !old_lambda) {
        free(cur), free(nxt), free(old_lambda);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory in the DMCMC integrator");
    }
    moire_status status = MOIRE_OK;
    for (int i = 0; i < N && status == MOIRE_OK; i++) {
        for (int c = 0; c < m->n; c++) {
            cur[c] = levels[(size_t)c * (N + 1) + i];
            nxt[c] = levels[(size_t)c * (N + 1) + i + 1];
        }
        if (integrator == MOIRE_DMCMC_STOCHASTIC_HEUN) {
            /* EDM Alg. 2: raise the level by γ with fresh noise, then a Heun step. */
            const double gamma = fmin(m->params.churn / N, sqrt(2.0) - 1.0);
            for (int c = 0; c < m->n; c++) {
                double s_hat = clamp_level(m, cur[c] * (1.0 + gamma));
                double add = sqrt(fmax(s_hat * s_hat - cur[c] * cur[c], 0.0));
                const float *z = next_noise(m, c);
                for (size_t j = 0; j < chw; j++)
                    y[(size_t)c * chw + j] += add * z[j];
                cur[c] = s_hat;
            }
        }
        status = denoise(m, y, cur, m->den);
        if (status != MOIRE_OK)
            break;
        const bool last = i == N - 1;
        switch (integrator) {
        case MOIRE_DMCMC_EULER:
            for (int c = 0; c < m->n; c++)
                for (size_t j = 0; j < chw; j++) {
                    size_t k = (size_t)c * chw + j;
                    y[k] += (nxt[c] - cur[c]) * (y[k] - m->den[k]) / cur[c];
                }
            break;
        case MOIRE_DMCMC_DDIM:
            /* y' = (s'/s)·y + (1 − s'/s)·D: DDIM with η = 0 written in the VE form. */
            for (int c = 0; c < m->n; c++) {
                double r = nxt[c] / cur[c];
                for (size_t j = 0; j < chw; j++) {
                    size_t k = (size_t)c * chw + j;
                    y[k] = r * y[k] + (1.0 - r) * m->den[k];
                }
            }
            break;
        case MOIRE_DMCMC_HEUN:
        case MOIRE_DMCMC_STOCHASTIC_HEUN:
            for (int c = 0; c < m->n; c++)
                for (size_t j = 0; j < chw; j++) {
                    size_t k = (size_t)c * chw + j;
                    m->d1[k] = (y[k] - m->den[k]) / cur[c];
                    m->work[k] = y[k] + (nxt[c] - cur[c]) * m->d1[k];
                }
            if (last) { /* the last step (to 0) is Euler (EDM Alg. 1) */
                memcpy(y, m->work, m->total * sizeof(double));
                break;
            }
            status = denoise(m, m->work, nxt, m->den);
            if (status != MOIRE_OK)
                break;
            for (int c = 0; c < m->n; c++)
                for (size_t j = 0; j < chw; j++) {
                    size_t k = (size_t)c * chw + j;
                    double d2 = (m->work[k] - m->den[k]) / nxt[c];
                    y[k] += (nxt[c] - cur[c]) * 0.5 * (m->d1[k] + d2);
                }
            break;
        case MOIRE_DMCMC_DPMPP_2M:
            /* Data-prediction DPM-Solver++(2M) with λ = −ln s (VE: α = 1). */
            for (int c = 0; c < m->n; c++) {
                const double lambda = -log(cur[c]);
                double *yc = y + (size_t)c * chw;
                const double *dc = m->den + (size_t)c * chw, *oc = m->den_old + (size_t)c * chw;
                if (nxt[c] == 0.0) {
                    memcpy(yc, dc, chw * sizeof(double));
                } else {
                    const double h = -log(nxt[c]) - lambda;
                    const double r_ratio = nxt[c] / cur[c];
                    double w_new = 1.0, w_old = 0.0;
                    if (i > 0) {
                        const double r = (lambda - old_lambda[c]) / h;
                        w_new = 1.0 + 1.0 / (2.0 * r);
                        w_old = -1.0 / (2.0 * r);
                    }
                    for (size_t j = 0; j < chw; j++)
                        yc[j] = r_ratio * yc[j] + (1.0 - r_ratio) * (w_new * dc[j] + w_old * oc[j]);
                }
                old_lambda[c] = lambda;
            }
            memcpy(m->den_old, m->den, m->total * sizeof(double));
            break;
        default:
            status = error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown DMCMC integrator %d",
                                (int)integrator);
        }
    }
    free(cur), free(nxt), free(old_lambda);
    return status;
}

/* ---- chains -------------------------------------------------------------------------------- */

/* One Gibbs sweep over all chains: Langevin step at each chain's level, then the level update.
 * 1 NFE. Flags chains that leave the guard band. */
static moire_status sweep(moire_dmcmc *m, double eta)
{
    moire_status status = denoise(m, m->y, m->s, m->den);
    if (status != MOIRE_OK)
        return status;
    const moire_dmcmc_params *p = &m->params;
    double *s_hat = m->level_estimates;
    for (int c = 0; c < m->n; c++) {
        double *yc = m->y + (size_t)c * m->chw;
        const double *dc = m->den + (size_t)c * m->chw;
        const double s = m->s[c];
        if (!m->level) {
            /* The residual estimate reads the pre-step state, so compute it first. */
            const double eta_eff = fmin(eta, s * s);
            const double a_expected = eta_eff / (2.0 * s * s);
            s_hat[c] = dmcmc_estimate_sigma(yc, dc, m->chw, s, calibration_at(m, s),
                                            a_expected, eta_eff);
        }
        dmcmc_langevin_update(yc, dc, next_noise(m, c), m->chw, s, eta);
    }
    if (m->level) { /* the hook reads the post-step states */
        for (size_t j = 0; j < m->total; j++)
            m->x_in[j] = (float)m->y[j];
        status = m->level(m->level_user_data, m->x_in, m->n, s_hat);
        if (status != MOIRE_OK)
            return status;
    }
    for (int c = 0; c < m->n; c++) {
        const double s = m->s[c];
        double s_new = exp(p->damping * log(s) + (1.0 - p->damping) * log(s_hat[c]));
        if (!isfinite(s_new) || s_new < p->sigma_low || s_new > p->sigma_high)
            m->reseed[c] = true;
        m->s[c] = clamp_level(m, s_new);
    }
    return MOIRE_OK;
}

/* Fresh chains for those flagged in `which` (all when NULL): a burn_in_steps DPM++ 2M run from
 * pure noise — or, for chains started from given pictures (m->source), those pictures —
 * re-noised to sigma_init, then burn_in sweeps. Model calls always carry the whole batch;
 * chains not being re-seeded keep their state. Returns the NFE spent. */
static moire_status seed_chains(moire_dmcmc *m, const bool *which, bool calibrate, int *nfe)
{
    const moire_dmcmc_params *p = &m->params;
    const double start = m->config.objective == MOIRE_OBJECTIVE_DDPM_EPS ? m->sigma_max
                                                                         : RF_SIGMA_MAX;
    double *saved_y = malloc(m->total * sizeof(double));
    double *saved_s = malloc((size_t)m->n * sizeof(double));
    double *clean = malloc(m->total * sizeof(double));
    double *starts = malloc((size_t)m->n * sizeof(double));
    if (!saved_y || !saved_s || !clean || !starts) {
        free(saved_y), free(saved_s), free(clean), free(starts);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory seeding DMCMC chains");
    }
    memcpy(saved_y, m->y, m->total * sizeof(double));
    memcpy(saved_s, m->s, (size_t)m->n * sizeof(double));
    *nfe = 0;

    moire_status status = MOIRE_OK;
    if (m->source) {
        memcpy(clean, m->source, m->total * sizeof(double));
    } else {
        for (int c = 0; c < m->n; c++) {
            const float *z = next_noise(m, c);
            starts[c] = start;
            for (size_t j = 0; j < m->chw; j++)
                clean[(size_t)c * m->chw + j] = start * z[j];
        }
        build_levels(m, starts, p->burn_in_steps, m->levels);
        status = integrate(m, clean, MOIRE_DMCMC_DPMPP_2M, p->burn_in_steps, m->levels);
        *nfe += p->burn_in_steps;
    }

    if (status == MOIRE_OK && calibrate) {
        /* f(σ_k) = mean((y − D)²)/σ_k² for y = x0 + σ_k·z on the fresh samples. */
        for (int k = 0; k < CALIBRATION_LEVELS && status == MOIRE_OK; k++) {
            double lk = log(p->sigma_low) + (log(p->sigma_high) - log(p->sigma_low)) * k /
                                                (CALIBRATION_LEVELS - 1);
            double sk = clamp_level(m, exp(lk));
            m->calib_log_sigma[k] = log(sk);
            for (int c = 0; c < m->n; c++) {
                const float *z = next_noise(m, c);
                starts[c] = sk;
                for (size_t j = 0; j < m->chw; j++)
                    m->work[(size_t)c * m->chw + j] = clean[(size_t)c * m->chw + j] + sk * z[j];
            }
            status = denoise(m, m->work, starts, m->den);
            double sum = 0.0;
            for (size_t j = 0; j < m->total; j++) {
                double r = m->work[j] - m->den[j];
                sum += r * r;
            }
            double f = fmin(fmax(sum / (double)m->total / (sk * sk), 1e-3), 1.0);
            m->calib_v[k] = sk * sk * (1.0 - f) / f;
            (*nfe)++;
        }
    }
    for (int c = 0; c < m->n && status == MOIRE_OK; c++) {
        const float *z = next_noise(m, c);
        double *yc = m->y + (size_t)c * m->chw;
        for (size_t j = 0; j < m->chw; j++)
            yc[j] = clean[(size_t)c * m->chw + j] + p->sigma_init * z[j];
        m->s[c] = clamp_level(m, p->sigma_init);
        m->reseed[c] = false;
    }
    for (int i = 0; i < p->burn_in && status == MOIRE_OK; i++) {
        status = sweep(m, p->eta);
        (*nfe)++;
    }
    if (which && status == MOIRE_OK) { /* keep the chains that were not re-seeded */
        for (int c = 0; c < m->n; c++)
            if (!which[c]) {
                memcpy(m->y + (size_t)c * m->chw, saved_y + (size_t)c * m->chw,
                       m->chw * sizeof(double));
                m->s[c] = saved_s[c];
                m->reseed[c] = false;
            }
    }
    free(saved_y), free(saved_s), free(clean), free(starts);
    return status;
}

void dmcmc_free(moire_dmcmc *m)
{
    if (!m)
        return;
    free(m->seeds), free(m->draws), free(m->y), free(m->s), free(m->reseed);
    free(m->log_sigmas), free(m->x_in), free(m->t_in), free(m->out), free(m->noise);
    free(m->den), free(m->den_old), free(m->work), free(m->best_y), free(m->best_s);
    free(m->levels), free(m->d1), free(m->level_estimates);
    free(m->previous), free(m->last_distance), free(m->source);
    free(m);
}

static moire_status check_params(const moire_dmcmc_params *p)
{
    if (!(p->eta > 0.0f && p->eta <= 10.0f))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "DMCMC eta %g is out of range (0, 10]",
                          (double)p->eta);
    if (p->skip < 1 || p->skip > 1000)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "DMCMC skip %d is out of range 1..1000",
                          p->skip);
    if ((unsigned)p->integrator >= MOIRE_DMCMC_INTEGRATOR_COUNT_)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown DMCMC integrator %d",
                          (int)p->integrator);
    if (p->integrator_steps < 1 || p->integrator_steps > 1000 || p->burn_in_steps < 1 ||
        p->burn_in_steps > 1000 || p->burn_in < 0 || p->burn_in > 10000)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "DMCMC steps out of range: integrator steps and burn-in steps 1..1000, "
                          "burn-in sweeps 0..10000");
    if (!(p->sigma_low > 0.0f && p->sigma_low < p->sigma_init && p->sigma_init < p->sigma_high))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "DMCMC levels must satisfy 0 < sigma_low < sigma_init < sigma_high "
                          "(got %g, %g, %g)",
                          (double)p->sigma_low, (double)p->sigma_init, (double)p->sigma_high);
    if ((unsigned)p->level >= MOIRE_DMCMC_LEVEL_COUNT_)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown DMCMC level estimate %d",
                          (int)p->level);
    if (!(p->damping >= 0.0f && p->damping < 1.0f) || !(p->tweedie_sigma > 0.0f) ||
        !(p->churn >= 0.0f))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "DMCMC damping must be in [0, 1), tweedie sigma > 0, churn ≥ 0");
    if (!(p->guard_distance >= 0.0f && p->guard_distance <= 10.0f) ||
        !(p->kick_sigma > 0.0f && p->kick_sigma <= 100.0f))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "DMCMC guard distance must be in [0, 10] (0 = off) and the kick level "
                          "in (0, 100] (got %g, %g)",
                          (double)p->guard_distance, (double)p->kick_sigma);
    return MOIRE_OK;
}

moire_status dmcmc_new(const moire_model_config *config, const moire_dmcmc_params *params,
                       int n, int h, int w, const uint64_t *seeds, moire_model_fn model,
                       void *model_user_data, moire_dmcmc **out)
{
    return dmcmc_new_with_hooks(config, params, n, h, w, seeds, model, model_user_data,
                                NULL, out);
}

/* One-off model evaluations of seeding: the burn-in integrator (not for chains started from
 * given pictures), the calibration (first time only) and the burn-in sweeps. */
static int seeding_nfe(const moire_dmcmc *m, bool calibrate)
{
    const moire_dmcmc_params *p = &m->params;
    return (m->source ? 0 : p->burn_in_steps) + (calibrate ? CALIBRATION_LEVELS : 0) + p->burn_in;
}

/* Both constructors: `source` [n, C, h, w] (model space) or NULL for chains from noise. */
static moire_status create_chains(const moire_model_config *config,
                                  const moire_dmcmc_params *params, int n, int h, int w,
                                  const uint64_t *seeds, const float *source, moire_model_fn model,
                                  void *model_user_data, const moire_dmcmc_hooks *hooks,
                                  moire_dmcmc **out)
{
    if (!config || !params || !seeds || !model || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "dmcmc_new: a required pointer is NULL");
    *out = NULL;
    moire_status status = check_params(params);
    if (status != MOIRE_OK)
        return status;
    if (n < 1 || h < 1 || w < 1)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "DMCMC needs at least one chain");
    moire_dmcmc *m = calloc(1, sizeof *m);
    if (!m)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory creating DMCMC chains");
    m->config = *config;
    m->params = *params;
    m->n = n, m->C = config->in_channels, m->h = h, m->w = w;
    m->chw = (size_t)m->C * h * w;
    m->total = (size_t)n * m->chw;
    m->model = model;
    m->model_user_data = model_user_data;
    const int N = params->integrator_steps > params->burn_in_steps ? params->integrator_steps
                                                                   : params->burn_in_steps;
    m->seeds = malloc((size_t)n * sizeof *m->seeds);
    m->draws = calloc((size_t)n, sizeof *m->draws);
    m->y = calloc(m->total, sizeof(double));
    m->s = calloc((size_t)n, sizeof(double));
    m->reseed = calloc((size_t)n, sizeof(bool));
    m->x_in = malloc(m->total * sizeof(float));
    m->t_in = malloc((size_t)n * sizeof(float));
    m->out = malloc((size_t)n * config->out_channels * h * w * sizeof(float));
    m->noise = malloc(m->chw * sizeof(float));
    m->den = malloc(m->total * sizeof(double));
    m->den_old = calloc(m->total, sizeof(double));
    m->work = malloc(m->total * sizeof(double));
    m->d1 = malloc(m->total * sizeof(double));
    m->best_y = malloc(m->total * sizeof(double));
    m->best_s = malloc((size_t)n * sizeof(double));
    m->levels = malloc((size_t)n * (N + 1) * sizeof(double));
    m->level_estimates = malloc((size_t)n * sizeof(double));
    m->previous = malloc(m->total * sizeof(double));
    m->last_distance = calloc((size_t)n, sizeof(double));
    m->source = source ? malloc(m->total * sizeof(double)) : NULL;
    if (!m->seeds || !m->draws || !m->y || !m->s || !m->reseed || !m->x_in || !m->t_in ||
        !m->out || !m->noise || !m->den || !m->den_old || !m->work || !m->d1 || !m->best_y ||
        !m->best_s || !m->levels || !m->level_estimates || !m->previous || !m->last_distance ||
        (source && !m->source)) {
        dmcmc_free(m);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for %d DMCMC chains", n);
    }
    memcpy(m->seeds, seeds, (size_t)n * sizeof *seeds);
    for (size_t j = 0; source && j < m->total; j++)
        m->source[j] = (double)source[j];

    if (config->objective == MOIRE_OBJECTIVE_DDPM_EPS) {
        m->T = config->num_train_timesteps;
        m->log_sigmas = malloc((size_t)m->T * sizeof(double));
        if (!m->log_sigmas) {
            dmcmc_free(m);
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
        }
        double prod = 1.0;
        for (int i = 0; i < m->T; i++) {
            double beta = config->beta_start +
                          (double)(config->beta_end - config->beta_start) * i / (m->T - 1);
            prod *= 1.0 - beta;
            m->log_sigmas[i] = 0.5 * log((1.0 - prod) / prod);
        }
        m->sigma_min = exp(m->log_sigmas[0]);
        m->sigma_max = exp(m->log_sigmas[m->T - 1]);
    } else {
        m->sigma_min = RF_SIGMA_MIN;
        m->sigma_max = 1e4;
    }
    if (hooks) {
        m->progress = hooks->progress;
        m->progress_user_data = hooks->progress_user_data;
        m->level = hooks->level;
        m->level_user_data = hooks->level_user_data;
    }
    m->stats.level_classifier = m->level != NULL;
    /* The calibration serves the residual estimate only. */
    const bool calibrate = m->level == NULL;
    m->phase_done = 0;
    m->phase_total = seeding_nfe(m, calibrate);
    int nfe = 0;
    status = seed_chains(m, NULL, calibrate, &nfe);
    m->stats.nfe_burn_in = nfe;
    m->stats.nfe_per_sample = moire_dmcmc_nfe_per_sample(params);
    if (status != MOIRE_OK) {
        dmcmc_free(m);
        return status;
    }
    *out = m;
    return MOIRE_OK;
}

moire_status dmcmc_new_with_hooks(const moire_model_config *config,
                                  const moire_dmcmc_params *params, int n, int h, int w,
                                  const uint64_t *seeds, moire_model_fn model,
                                  void *model_user_data, const moire_dmcmc_hooks *hooks,
                                  moire_dmcmc **out)
{
    return create_chains(config, params, n, h, w, seeds, NULL, model, model_user_data, hooks,
                         out);
}

moire_status dmcmc_new_from_states(const moire_model_config *config,
                                   const moire_dmcmc_params *params, int n, int h, int w,
                                   const uint64_t *seeds, const float *states,
                                   moire_model_fn model, void *model_user_data,
                                   const moire_dmcmc_hooks *hooks, moire_dmcmc **out)
{
    if (!states)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "dmcmc_new_from_states: no pictures to start from");
    return create_chains(config, params, n, h, w, seeds, states, model, model_user_data, hooks,
                         out);
}

/* The diversity guard after an emission (out_y [n, chw]): each chain's RMS distance from its
 * previous emission; a chain closer than guard_distance has its state re-noised up to
 * kick_sigma, so its next window starts from a new layout. No model evaluation. */
static void diversity_guard(moire_dmcmc *m, const double *out_y)
{
    const moire_dmcmc_params *p = &m->params;
    for (int c = 0; c < m->n; c++) {
        const double *now = out_y + (size_t)c * m->chw, *before = m->previous + (size_t)c * m->chw;
        double sum = 0.0;
        for (size_t j = 0; j < m->chw; j++)
            sum += (now[j] - before[j]) * (now[j] - before[j]);
        m->last_distance[c] = m->stats.emitted > 0 ? sqrt(sum / (double)m->chw) : INFINITY;
        if (p->guard_distance > 0.0f && m->last_distance[c] < p->guard_distance) {
            const double s = m->s[c];
            const double s_kick = clamp_level(m, fmax((double)p->kick_sigma, s));
            const double add = sqrt(fmax(s_kick * s_kick - s * s, 0.0));
            const float *z = next_noise(m, c);
            double *yc = m->y + (size_t)c * m->chw;
            for (size_t j = 0; j < m->chw; j++)
                yc[j] += add * (double)z[j];
            m->s[c] = s_kick;
            m->stats.kicks++;
        }
    }
    memcpy(m->previous, out_y, m->total * sizeof(double));
}

moire_status dmcmc_next(moire_dmcmc *m, float *out)
{
    if (!m || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "dmcmc_next: NULL argument");
    const moire_dmcmc_params *p = &m->params;
    moire_status status = MOIRE_OK;

    /* Chains that left the band last time start afresh. */
    bool any = false;
    for (int c = 0; c < m->n; c++)
        any |= m->reseed[c];
    m->phase_done = 0;
    m->phase_total = moire_dmcmc_nfe_per_sample(p) + (any ? seeding_nfe(m, false) : 0);
    if (any) {
        bool *which = malloc((size_t)m->n * sizeof(bool));
        if (!which)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
        for (int c = 0; c < m->n; c++)
            if ((which[c] = m->reseed[c]))
                m->stats.reseeds++;
        int nfe = 0;
        status = seed_chains(m, which, false, &nfe);
        m->stats.nfe_reseed += nfe;
        free(which);
        if (status != MOIRE_OK)
            return status;
    }

    /* The window: skip sweeps, keeping each chain's lowest-level state. The best level starts
     * at +inf so the state already denoised last time is never denoised twice. */
    for (int c = 0; c < m->n; c++)
        m->best_s[c] = INFINITY;
    for (int k = 0; k < p->skip && status == MOIRE_OK; k++) {
        status = sweep(m, p->eta);
        for (int c = 0; c < m->n && status == MOIRE_OK; c++)
            if (m->s[c] < m->best_s[c]) {
                m->best_s[c] = m->s[c];
                memcpy(m->best_y + (size_t)c * m->chw, m->y + (size_t)c * m->chw,
                       m->chw * sizeof(double));
            }
    }
    if (status != MOIRE_OK)
        return status;

    double mean_start = 0.0;
    for (int c = 0; c < m->n; c++)
        mean_start += m->best_s[c] / m->n;
    build_levels(m, m->best_s, p->integrator_steps, m->levels);
    status = integrate(m, m->best_y, p->integrator, p->integrator_steps, m->levels);
    if (status == MOIRE_OK && p->tweedie) {
        for (int c = 0; c < m->n; c++)
            m->best_s[c] = clamp_level(m, p->tweedie_sigma);
        status = denoise(m, m->best_y, m->best_s, m->den);
        if (status == MOIRE_OK)
            memcpy(m->best_y, m->den, m->total * sizeof(double));
    }
    if (status != MOIRE_OK)
        return status;
    for (size_t j = 0; j < m->total; j++)
        out[j] = (float)m->best_y[j];
    diversity_guard(m, m->best_y);
    m->stats.emitted++;
    m->stats.nfe_per_sample = moire_dmcmc_nfe_per_sample(p);
    m->stats.mean_start_sigma = mean_start;
    return MOIRE_OK;
}

const moire_dmcmc_stats *dmcmc_get_stats(const moire_dmcmc *m)
{
    return &m->stats;
}

double dmcmc_chain_sigma(const moire_dmcmc *m, int c)
{
    return (c >= 0 && c < m->n) ? m->s[c] : NAN;
}

const double *dmcmc_chain_state(const moire_dmcmc *m, int c)
{
    return (c >= 0 && c < m->n) ? m->y + (size_t)c * m->chw : NULL;
}

double dmcmc_last_distance(const moire_dmcmc *m, int c)
{
    return (c >= 0 && c < m->n) ? m->last_distance[c] : NAN;
}
