/* dmcmc.h — Denoising Langevin Gibbs (Kim & Ye 2023), the DMCMC sampler, over the same model
 * interface as the other samplers (sampler.h: one CFG-guided model evaluation per call).
 *
 * Each chain c carries a state (y_c, s_c) in the variance-exploding form y = x0 + s·ε, the
 * k-diffusion convention of sampler.h for DDPM-ε models; rectified-flow models are wrapped as
 * the same VE denoiser (t = s/(1+s), x_t = y/(1+s)). A sweep is one unadjusted Langevin step at
 * the chain's level followed by a noise-level update; every `skip` sweeps the lowest-level state
 * of the window goes to a short integrator that starts at that state's own level, and a final
 * Tweedie step gives the emitted sample. The chains persist, so a stream of new variations
 * costs skip + integrator + 1 model evaluations each (docs/DMCMC.md).
 */
#ifndef MOIRE_DMCMC_H
#define MOIRE_DMCMC_H

#include "moire.h"
#include "sampler.h"

/* moire_dmcmc_integrator, moire_dmcmc_params, moire_dmcmc_params_default,
 * moire_dmcmc_integrator_name/from_name and moire_dmcmc_nfe_per_sample are public (moire.h). */

typedef struct moire_dmcmc_stats {
    int nfe_per_sample;    /* skip + integrator NFE + Tweedie, for the last emission      */
    int nfe_burn_in;       /* one-off: initial integrator, calibration, burn-in sweeps      */
    int nfe_reseed;        /* spent re-seeding chains that left the band                   */
    int reseeds;           /* chains re-seeded so far                                       */
    int emitted;           /* samples emitted per chain so far                              */
    double mean_start_sigma; /* mean level (VE) the integrator started from, last emission */
    bool level_classifier; /* levels come from the level hook, not the residual estimate  */
    int kicks;             /* diversity-guard kicks so far (params.guard_distance)          */
} moire_dmcmc_stats;

typedef struct moire_dmcmc moire_dmcmc;

/* Creates n chains of shape [C, h, w] (C = config->in_channels) with seeds[c], runs the
 * burn-in. The model function is called with batches of up to n images, each with its own t. */
moire_status dmcmc_new(const moire_model_config *config, const moire_dmcmc_params *params,
                       int n, int h, int w, const uint64_t *seeds, moire_model_fn model,
                       void *model_user_data, moire_dmcmc **out);
/* Called after every model evaluation with the evaluations done and expected for the current
 * phase (burn-in, or one emission); return false to cancel (→ MOIRE_ERROR_CANCELLED). */
typedef bool (*moire_dmcmc_progress_fn)(void *user_data, int done, int total);
/* The Gibbs level update's estimate: sigma[c] (VE σ) for the states y [n, C, h, w] (VE form,
 * float). A noise-level classifier (moire_classifier_estimate_sigma) is one. */
typedef moire_status (*moire_dmcmc_level_fn)(void *user_data, const float *states, int n,
                                             double *sigma);
typedef struct moire_dmcmc_hooks {
    moire_dmcmc_progress_fn progress;  /* NULL = no progress, no cancel                     */
    void *progress_user_data;
    /* NULL = the training-free residual estimate, calibrated at burn-in
       (dmcmc_estimate_sigma); set, the level after each Langevin step is read from the
       new state and the calibration's model evaluations are not spent. */
    moire_dmcmc_level_fn level;
    void *level_user_data;
} moire_dmcmc_hooks;
/* dmcmc_new with hooks (NULL = none); they are in place before the burn-in. */
moire_status dmcmc_new_with_hooks(const moire_model_config *config,
                                  const moire_dmcmc_params *params, int n, int h, int w,
                                  const uint64_t *seeds, moire_model_fn model,
                                  void *model_user_data, const moire_dmcmc_hooks *hooks,
                                  moire_dmcmc **out);
/* Chains that start from given pictures instead of from noise: states [n, C, h, w] (model
 * space, clean) re-noised to params->sigma_init, then params->burn_in sweeps; no burn-in
 * integrator. A chain that leaves the guard band restarts from its picture. The variations
 * stream (moire_stream_open) is this. */
moire_status dmcmc_new_from_states(const moire_model_config *config,
                                   const moire_dmcmc_params *params, int n, int h, int w,
                                   const uint64_t *seeds, const float *states,
                                   moire_model_fn model, void *model_user_data,
                                   const moire_dmcmc_hooks *hooks, moire_dmcmc **out);
/* Emits one new sample per chain into out[n, C, h, w]; then the diversity guard
 * (params.guard_distance) kicks chains whose sample is a near-copy of their previous one. */
moire_status dmcmc_next(moire_dmcmc *chains, float *out);
const moire_dmcmc_stats *dmcmc_get_stats(const moire_dmcmc *chains);
/* Current level of chain c (VE σ) and its state y_c [C, h, w] (VE form, double). */
double dmcmc_chain_sigma(const moire_dmcmc *chains, int c);
const double *dmcmc_chain_state(const moire_dmcmc *chains, int c);
/* RMS distance (model space) of chain c's last emission from the one before; +inf after the
 * first emission. */
double dmcmc_last_distance(const moire_dmcmc *chains, int c);
void dmcmc_free(moire_dmcmc *chains);

/* ---- exposed for the unit tests --------------------------------------------------------- */

/* One Langevin step on one chain: y ← y + ½·η_eff·(D − y)/s² + √η_eff·z, with
 * η_eff = min(η, s²) so the contraction a = η_eff/(2s²) never exceeds ½ (docs/DMCMC.md).
 * Returns the a used. */
double dmcmc_langevin_update(double *y, const double *denoised, const float *noise,
                             size_t count, double s, double eta);
/* The training-free level estimate after that step. m = mean((y − D(y; s))²) is measured on
 * the pre-step state; with the calibration f(s) = E‖y − D(y;s)‖²/(d s²) read as a shrinkage
 * denoiser of effective data variance v = s²(1 − f)/f, the true pre-step level solves
 * m = s⁴(v + σ²)/(v + s²)², i.e. σ̂² = m(v + s²)²/s⁴ − v (exact for Gaussian data, σ̂² = m for
 * data on a low-dimensional manifold where f → 1); where v > 4s² that inversion amplifies
 * the measurement noise too much and the plain m/f is used. It is then propagated through the step:
 * s'² = (1 − a)²·σ̂² + η_eff. */
double dmcmc_estimate_sigma(const double *y_before, const double *denoised, size_t count,
                            double s, double calibration, double a, double eta_eff);

#endif /* MOIRE_DMCMC_H */
