/* test_dmcmc.c — the DMCMC (Denoising Langevin Gibbs) chains against an analytic model: data
 * x0 ~ N(μ, v) elementwise, whose exact denoiser is known at every level, for both objectives.
 * Checks the Langevin and level updates, how well the training-free level estimate tracks the
 * true noise level of the chains, NFE accounting, sample statistics, reproducibility, the
 * re-seed guard and argument checks; and the level hook (where a noise-level classifier
 * plugs in) with an oracle that knows the true level. */
#include "dmcmc.h"
#include "internal.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MU 0.5
#define SD 0.8
#define CH 4
#define HH 48
#define WW 48
#define CHW (CH * HH * WW)

typedef struct analytic {
    moire_model_config config;
    double log_sigmas[1000];
    int calls;
} analytic;

static void analytic_init(analytic *a, moire_objective objective)
{
    memset(a, 0, sizeof *a);
    strcpy(a->config.family, "dit-moe");
    a->config.in_channels = CH;
    a->config.out_channels = 2 * CH;
    a->config.learn_sigma = true;
    a->config.objective = objective;
    a->config.num_train_timesteps = 1000;
    a->config.beta_start = 1e-4f;
    a->config.beta_end = 0.02f;
    double prod = 1.0;
    for (int i = 0; i < 1000; i++) {
        double beta = (double)a->config.beta_start +
                      (double)(a->config.beta_end - a->config.beta_start) * i / 999.0;
        prod *= 1.0 - beta;
        a->log_sigmas[i] = 0.5 * log((1.0 - prod) / prod);
    }
}

static double ddpm_t_to_sigma(const analytic *a, double t)
{
    int lo = (int)floor(t);
    if (lo >= 999)
        return exp(a->log_sigmas[999]);
    double w = t - lo;
    return exp((1 - w) * a->log_sigmas[lo] + w * a->log_sigmas[lo + 1]);
}

/* Exact ε (DDPM, VE-scaled input) or v (RF) of Gaussian data; variance channels 0. */
static moire_status analytic_model(void *user, const float *x_in, const float *t, float *out)
{
    analytic *a = user;
    a->calls++;
    const int n = 3; /* every test below uses 3 chains */
    for (int b = 0; b < n; b++) {
        const float *x = x_in + (size_t)b * CHW;
        float *o = out + (size_t)b * 2 * CHW;
        for (int j = 0; j < CHW; j++) {
            double xv = x[j];
            if (a->config.objective == MOIRE_OBJECTIVE_DDPM_EPS) {
                double s = ddpm_t_to_sigma(a, t[b]);
                double y = xv * sqrt(1 + s * s);
                double D = (SD * SD * y + s * s * MU) / (SD * SD + s * s);
                o[j] = (float)((y - D) / s);
            } else {
                double tt = t[b], al = 1 - tt;
                double D = MU + al * SD * SD * (xv - al * MU) / (al * al * SD * SD + tt * tt);
                o[j] = (float)((xv - D) / tt);
            }
            o[CHW + j] = 0.0f;
        }
    }
    return MOIRE_OK;
}

static void test_langevin_arithmetic(void)
{
    double y[3] = {1.0, -2.0, 0.5}, D[3] = {0.5, 0.0, 0.5};
    float z[3] = {1.0f, -1.0f, 0.0f};
    double a = dmcmc_langevin_update(y, D, z, 3, 0.5, 0.08);
    CHECK(fabs(a - 0.16) < 1e-12, "a = %g, want 0.16", a);
    /* y' = 0.84·y + 0.16·D + √0.08·z */
    CHECK(fabs(y[0] - (0.84 + 0.08 + sqrt(0.08))) < 1e-12, "y0 = %.12f", y[0]);
    CHECK(fabs(y[1] - (-1.68 - sqrt(0.08))) < 1e-12, "y1 = %.12f", y[1]);
    CHECK(fabs(y[2] - 0.5) < 1e-12, "y2 = %.12f", y[2]);
    /* small level: η is capped at s², so a = ½ */
    double y2[1] = {1.0}, D2[1] = {0.0};
    float z2[1] = {0.0f};
    a = dmcmc_langevin_update(y2, D2, z2, 1, 0.1, 0.08);
    CHECK(fabs(a - 0.5) < 1e-12 && fabs(y2[0] - 0.5) < 1e-12, "capped step: a %g y %g", a, y2[0]);
}

/* With the exact denoiser and the exact calibration f = s²/(s² + v), the estimate of the
 * pre-step level is unbiased (a = 0, no fresh noise). */
static void test_estimate_unbiased(void)
{
    const size_t count = 200000;
    double *y = malloc(count * sizeof(double)), *D = malloc(count * sizeof(double));
    float *noise = malloc(count * sizeof(float));
    const double levels[] = {0.05, 0.2, 0.5, 1.0, 3.0};
    double worst = 0.0;
    for (int k = 0; k < 5; k++) {
        double s = levels[k];
        test_fill_random(noise, (int64_t)count, 90 + k, -1.7320508f, 1.7320508f); /* var 1 */
        float *x0n = malloc(count * sizeof(float));
        test_fill_random(x0n, (int64_t)count, 190 + k, -1.7320508f, 1.7320508f);
        for (size_t j = 0; j < count; j++) {
            y[j] = MU + SD * x0n[j] + s * noise[j];
            D[j] = (SD * SD * y[j] + s * s * MU) / (SD * SD + s * s);
        }
        double f = s * s / (s * s + SD * SD);
        double est = dmcmc_estimate_sigma(y, D, count, s, f, 0.0, 0.0);
        double err = fabs(est / s - 1.0);
        worst = fmax(worst, err);
        /* Assumed level 30% low: the denoiser at that level still yields the true level. Not
         * checked where s² ≪ v: a Gaussian denoiser at a tiny level barely touches y, so the
         * residual says nothing about a larger true level (the inversion is ill-conditioned
         * there and the estimator falls back to m/f; on data near a low-dimensional manifold it
         * is well conditioned). */
        if (SD * SD > 4.0 * (0.7 * s) * (0.7 * s)) {
            free(x0n);
            continue;
        }
        const double s_assumed = 0.7 * s, v = SD * SD;
        for (size_t j = 0; j < count; j++)
            D[j] = (v * y[j] + s_assumed * s_assumed * MU) / (v + s_assumed * s_assumed);
        double f_assumed = s_assumed * s_assumed / (s_assumed * s_assumed + v);
        est = dmcmc_estimate_sigma(y, D, count, s_assumed, f_assumed, 0.0, 0.0);
        worst = fmax(worst, fabs(est / s - 1.0));
        free(x0n);
    }
    printf("level estimate, exact calibration, assumed level right or 30%% low: worst relative "
           "error %.4f over σ ∈ [0.05, 3]\n",
           worst);
    CHECK(worst < 0.03, "estimate off by %.3f", worst);
    free(y), free(D), free(noise);
}

/* The chains' true noise level, from the marginal y ~ N(μ, v + σ²) of Gaussian data. */
static double true_sigma(const double *state)
{
    double mean = 0, var = 0;
    for (int j = 0; j < CHW; j++)
        mean += state[j] / CHW;
    for (int j = 0; j < CHW; j++)
        var += (state[j] - mean) * (state[j] - mean) / (CHW - 1);
    return sqrt(fmax(var - SD * SD, 1e-8));
}

static void test_chains(moire_objective objective, moire_dmcmc_integrator integrator)
{
    analytic a;
    analytic_init(&a, objective);
    moire_dmcmc_params p = moire_dmcmc_params_default();
    p.integrator = integrator;
    const uint64_t seeds[3] = {7, 8, 9};
    moire_dmcmc *chains = NULL;
    moire_status status = dmcmc_new(&a.config, &p, 3, HH, WW, seeds, analytic_model, &a,
                                    &chains);
    CHECK(status == MOIRE_OK, "new: %s", moire_last_error());
    if (status != MOIRE_OK)
        return;
    const moire_dmcmc_stats *st = dmcmc_get_stats(chains);
    CHECK(st->nfe_burn_in == a.calls, "burn-in NFE %d, model calls %d", st->nfe_burn_in, a.calls);

    float *out = malloc(3 * CHW * sizeof(float)), *prev = calloc(3 * CHW, sizeof(float));
    double sum = 0, sumsq = 0, track = 0, sigma_sum = 0;
    int emissions = 12, n_track = 0;
    for (int e = 0; e < emissions; e++) {
        int before = a.calls;
        status = dmcmc_next(chains, out);
        CHECK(status == MOIRE_OK, "next: %s", moire_last_error());
        if (status != MOIRE_OK)
            break;
        if (st->reseeds == 0)
            CHECK(a.calls - before == st->nfe_per_sample, "%s: %d calls, %d NFE reported",
                  moire_dmcmc_integrator_name(integrator), a.calls - before, st->nfe_per_sample);
        CHECK(memcmp(out, prev, 3 * CHW * sizeof(float)) != 0, "emission %d repeats", e);
        memcpy(prev, out, 3 * CHW * sizeof(float));
        for (int j = 0; j < 3 * CHW; j++) {
            sum += out[j];
            sumsq += (double)out[j] * out[j];
        }
        /* tracking: the chain's level against its state's true noise level */
        for (int c = 0; c < 3; c++) {
            double truth = true_sigma(dmcmc_chain_state(chains, c));
            double est = dmcmc_chain_sigma(chains, c);
            track += fabs(log(est / truth));
            sigma_sum += est;
            n_track++;
        }
    }
    const double N = (double)emissions * 3 * CHW;
    double mean = sum / N, sd = sqrt(sumsq / N - mean * mean);
    double mean_log_err = track / n_track;
    printf("%-8s %-16s NFE/sample %2d  burn-in %3d  mean %.3f sd %.3f (data %.1f, %.1f)  "
           "chain σ %.3f, |log(σ̂/σ)| %.3f, reseeds %d\n",
           objective == MOIRE_OBJECTIVE_DDPM_EPS ? "ddpm" : "rf",
           moire_dmcmc_integrator_name(integrator), st->nfe_per_sample, st->nfe_burn_in, mean,
           sd, MU, SD, sigma_sum / n_track, mean_log_err, st->reseeds);
    CHECK(fabs(mean - MU) < 0.06, "sample mean %.3f", mean);
    CHECK(fabs(sd - SD) < 0.12, "sample sd %.3f", sd);
    CHECK(mean_log_err < 0.12, "level estimate tracks poorly: mean |log ratio| %.3f",
          mean_log_err);
    CHECK(st->reseeds == 0, "%d reseeds with default settings", st->reseeds);

    /* reproducible: a second set of chains with the same seeds emits the same first sample */
    analytic b;
    analytic_init(&b, objective);
    moire_dmcmc *again = NULL, *first = NULL;
    analytic c;
    analytic_init(&c, objective);
    float *o1 = malloc(3 * CHW * sizeof(float)), *o2 = malloc(3 * CHW * sizeof(float));
    if (dmcmc_new(&b.config, &p, 3, HH, WW, seeds, analytic_model, &b, &again) ==
            MOIRE_OK &&
        dmcmc_new(&c.config, &p, 3, HH, WW, seeds, analytic_model, &c, &first) ==
            MOIRE_OK &&
        dmcmc_next(again, o1) == MOIRE_OK && dmcmc_next(first, o2) == MOIRE_OK)
        CHECK(memcmp(o1, o2, 3 * CHW * sizeof(float)) == 0, "same seeds, different samples");
    else
        CHECK(0, "reproducibility run failed: %s", moire_last_error());
    dmcmc_free(again);
    dmcmc_free(first);
    free(o1), free(o2), free(out), free(prev);
    dmcmc_free(chains);
}

static void test_guard_and_arguments(void)
{
    analytic a;
    analytic_init(&a, MOIRE_OBJECTIVE_RECTIFIED_FLOW);
    moire_dmcmc_params p = moire_dmcmc_params_default();
    p.eta = 3.0f;         /* a huge step: chains jump far above the band */
    p.sigma_high = 0.8f;
    const uint64_t seeds[3] = {1, 2, 3};
    moire_dmcmc *chains = NULL;
    CHECK(dmcmc_new(&a.config, &p, 3, HH, WW, seeds, analytic_model, &a, &chains) ==
              MOIRE_OK,
          "new: %s", moire_last_error());
    float *out = malloc(3 * CHW * sizeof(float));
    bool finite = true;
    for (int e = 0; e < 3 && chains; e++) {
        CHECK(dmcmc_next(chains, out) == MOIRE_OK, "next: %s", moire_last_error());
        for (int j = 0; j < 3 * CHW; j++)
            finite &= isfinite(out[j]);
    }
    if (chains) {
        const moire_dmcmc_stats *st = dmcmc_get_stats(chains);
        printf("guard: %d reseeds costing %d NFE\n", st->reseeds, st->nfe_reseed);
        CHECK(st->reseeds > 0 && st->nfe_reseed > 0, "no reseed with eta 3");
    }
    CHECK(finite, "non-finite output");
    dmcmc_free(chains);
    free(out);

    moire_dmcmc_params bad = moire_dmcmc_params_default();
    bad.skip = 0;
    chains = NULL;
    CHECK(dmcmc_new(&a.config, &bad, 3, HH, WW, seeds, analytic_model, &a, &chains) ==
              MOIRE_ERROR_INVALID_ARGUMENT && !chains,
          "skip 0 accepted");
    bad = moire_dmcmc_params_default();
    bad.sigma_init = 10.0f;
    CHECK(dmcmc_new(&a.config, &bad, 3, HH, WW, seeds, analytic_model, &a, &chains) ==
              MOIRE_ERROR_INVALID_ARGUMENT,
          "sigma_init above the band accepted");
    moire_dmcmc_integrator integ;
    CHECK(moire_dmcmc_integrator_from_name("stochastic-heun", &integ) == MOIRE_OK &&
              integ == MOIRE_DMCMC_STOCHASTIC_HEUN,
          "integrator name");
    CHECK(moire_dmcmc_integrator_from_name("rk45", &integ) == MOIRE_ERROR_INVALID_ARGUMENT,
          "rk45 accepted");
    moire_dmcmc_params q = moire_dmcmc_params_default();
    CHECK(moire_dmcmc_nfe_per_sample(&q) == 10, "default NFE %d", moire_dmcmc_nfe_per_sample(&q));
    q.integrator = MOIRE_DMCMC_HEUN;
    CHECK(moire_dmcmc_nfe_per_sample(&q) == 4 + 9 + 1, "heun NFE %d", moire_dmcmc_nfe_per_sample(&q));
}

/* ---- the level hook (a noise-level classifier's place) -------------------------------------- */

typedef struct oracle {
    int calls;
    int fail_after;       /* > 0: the call after this many fails                           */
    float last[3 * CHW];  /* the states of the last call                                   */
} oracle;

/* The exact level of Gaussian data, from the state's own sample variance. */
static moire_status oracle_level(void *user_data, const float *states, int n, double *sigma)
{
    oracle *o = user_data;
    if (o->fail_after > 0 && o->calls >= o->fail_after)
        return error_fail(MOIRE_ERROR_IO, "oracle: gave up");
    o->calls++;
    memcpy(o->last, states, (size_t)n * CHW * sizeof(float));
    for (int c = 0; c < n; c++) {
        double state[CHW];
        for (int j = 0; j < CHW; j++)
            state[j] = states[(size_t)c * CHW + j];
        sigma[c] = true_sigma(state);
    }
    return MOIRE_OK;
}

static void test_level_hook(void)
{
    analytic a;
    analytic_init(&a, MOIRE_OBJECTIVE_RECTIFIED_FLOW);
    moire_dmcmc_params p = moire_dmcmc_params_default();
    const uint64_t seeds[3] = {4, 5, 6};
    static oracle o;
    memset(&o, 0, sizeof o);
    const moire_dmcmc_hooks hooks = {.level = oracle_level, .level_user_data = &o};
    moire_dmcmc *chains = NULL;
    moire_status status = dmcmc_new_with_hooks(&a.config, &p, 3, HH, WW, seeds,
                                               analytic_model, &a, &hooks, &chains);
    CHECK(status == MOIRE_OK, "new with a level hook: %s", moire_last_error());
    if (status != MOIRE_OK)
        return;
    const moire_dmcmc_stats *st = dmcmc_get_stats(chains);
    /* No calibration: burn-in integrator + burn-in sweeps only, one hook call per sweep. */
    CHECK(st->nfe_burn_in == p.burn_in_steps + p.burn_in && a.calls == st->nfe_burn_in,
          "burn-in with a hook: %d NFE reported, %d model calls (want %d)", st->nfe_burn_in,
          a.calls, p.burn_in_steps + p.burn_in);
    CHECK(o.calls == p.burn_in && st->level_classifier, "hook calls at burn-in: %d", o.calls);
    float *out = malloc(3 * CHW * sizeof(float));
    double sum = 0, sumsq = 0, track = 0;
    const int emissions = 8;
    for (int e = 0; e < emissions && status == MOIRE_OK; e++) {
        status = dmcmc_next(chains, out);
        CHECK(status == MOIRE_OK, "next: %s", moire_last_error());
        for (int j = 0; j < 3 * CHW; j++) {
            sum += out[j];
            sumsq += (double)out[j] * out[j];
        }
        for (int c = 0; c < 3; c++) {
            const double *state = dmcmc_chain_state(chains, c);
            track += fabs(log(dmcmc_chain_sigma(chains, c) / true_sigma(state)));
        }
    }
    CHECK(o.calls == p.burn_in + emissions * p.skip, "hook calls: %d", o.calls);
    /* The hook reads the states after the Langevin step: the chains' current states. */
    bool same = true;
    for (int c = 0; c < 3; c++) {
        const double *state = dmcmc_chain_state(chains, c);
        for (int j = 0; j < CHW; j++)
            same &= o.last[(size_t)c * CHW + j] == (float)state[j];
    }
    CHECK(same, "the hook did not see the post-step states");
    const double N = (double)emissions * 3 * CHW;
    const double mean = sum / N, sd = sqrt(sumsq / N - mean * mean);
    printf("level hook: %d calls, mean %.3f sd %.3f (data %.1f, %.1f), |log(s/σ)| %.3f, "
           "burn-in %d NFE\n", o.calls, mean, sd, MU, SD, track / (emissions * 3),
           st->nfe_burn_in);
    CHECK(fabs(mean - MU) < 0.06 && fabs(sd - SD) < 0.12, "samples with the hook: %.3f, %.3f",
          mean, sd);
    /* Damping lags the level by about one sweep's change: the oracle is tracked closely. */
    CHECK(track / (emissions * 3) < 0.1, "levels with the oracle hook: |log ratio| %.3f",
          track / (emissions * 3));
    dmcmc_free(chains);
    free(out);

    /* A failing hook fails the run with its own status and message. */
    analytic b;
    analytic_init(&b, MOIRE_OBJECTIVE_RECTIFIED_FLOW);
    memset(&o, 0, sizeof o);
    o.fail_after = 3;
    chains = NULL;
    status = dmcmc_new_with_hooks(&b.config, &p, 3, HH, WW, seeds, analytic_model, &b,
                                  &hooks, &chains);
    CHECK(status == MOIRE_ERROR_IO && !chains && strstr(moire_last_error(), "oracle"),
          "a failing hook: %s (%s)", moire_status_to_string(status), moire_last_error());
    dmcmc_free(chains);

    moire_dmcmc_level level;
    CHECK(moire_dmcmc_level_from_name("classifier", &level) == MOIRE_OK &&
              level == MOIRE_DMCMC_LEVEL_CLASSIFIER &&
              strcmp(moire_dmcmc_level_name(MOIRE_DMCMC_LEVEL_RESIDUAL), "residual") == 0,
          "level names");
    CHECK(moire_dmcmc_level_from_name("oracle", &level) == MOIRE_ERROR_INVALID_ARGUMENT,
          "an unknown level name accepted");
    moire_dmcmc_params bad = moire_dmcmc_params_default();
    bad.level = (moire_dmcmc_level)7;
    chains = NULL;
    CHECK(dmcmc_new(&b.config, &bad, 3, HH, WW, seeds, analytic_model, &b, &chains) ==
              MOIRE_ERROR_INVALID_ARGUMENT && !chains,
          "level 7 accepted");
}

int main(void)
{
    test_langevin_arithmetic();
    test_estimate_unbiased();
    for (int obj = 0; obj < 2; obj++)
        for (int i = 0; i < MOIRE_DMCMC_INTEGRATOR_COUNT_; i++)
            test_chains(obj ? MOIRE_OBJECTIVE_RECTIFIED_FLOW : MOIRE_OBJECTIVE_DDPM_EPS,
                        (moire_dmcmc_integrator)i);
    test_guard_and_arguments();
    test_level_hook();
    return test_finish("dmcmc");
}
