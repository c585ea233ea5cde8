/* sampler.h — samplers over one denoiser interface (docs/SAMPLERS.md is the spec).
 *
 * The sampler sees the network only through moire_model_fn: one evaluation, already
 * classifier-free-guided by the caller (generate.c batches the conditional and
 * unconditional halves). The sampler owns everything else: the noise-level schedule, the
 * conversion between its state and the model's input and time, the x̂0 estimate, the noise
 * (rng.h), img2img start and the inpainting mask.
 *
 * Parametrisation (k-diffusion convention, D = x̂0):
 *   DDPM-ε models (variance preserving): state y = x_t/√ᾱ (VE form), level s = σ = √((1−ᾱ)/ᾱ);
 *     model input x_t = y/√(1+σ²), model time t(σ) interpolated between the discrete
 *     timesteps in log σ; D = y − σ·ε.
 *   Rectified-flow models: state y = x_t, level s = t ∈ (0, 1]; model input y, time t;
 *     D = y − t·v.
 * The official samplers (MOIRE_SAMPLER_DDPM, MOIRE_SAMPLER_RF_EULER) are implemented in the
 * model's native form exactly as the DiT-MoE code does.
 */
#ifndef MOIRE_SAMPLER_H
#define MOIRE_SAMPLER_H

#include "moire.h"

/* One guided model evaluation. x_in[n, C, h, w] is the model's input, t[n] its time input
 * (DDPM: fractional timestep in [0, T−1]; RF: t ∈ [0, 1]); out[n, Co, h, w] receives the raw
 * guided output (ε or v in channels 0..C−1, variance interpolation after them). */
typedef moire_status (*moire_model_fn)(void *user_data, const float *x_in, const float *t,
                                       float *out);

typedef struct moire_sample_request {
    const moire_model_config *config; /* objective, T, β, channels                     */
    moire_sampler sampler;            /* not MOIRE_SAMPLER_DEFAULT                      */
    moire_schedule schedule;          /* DEFAULT = uniform                              */
    int steps;                        /* ≥ 1                                            */
    float eta;                        /* DDIM η                                         */
    int n, h, w;                      /* images and spatial size; C = in_channels       */
    const uint64_t *seeds;            /* [n] one seed per image                         */
    const float *init;                /* [n, C, h, w] clean image for img2img, or NULL  */
    float strength;                   /* (0, 1] with init: fraction of steps run         */
    const float *mask;                /* [h, w] in [0,1], 1 = regenerate; NULL = all     */
    moire_model_fn model;
    void *model_user_data;
    /* After every step: x0_estimate[n, C, h, w] (NULL on the steps x0_every skips). Return
     * false to cancel. May be NULL. */
    bool (*on_step)(void *user_data, int step, int step_count, int nfe,
                    const float *x0_estimate);
    void *on_step_user_data;
    /* Which steps on_step gets the x̂0 estimate on: 0 every step; k > 0 every k-th and the
     * last; < 0 none. On a device each one is a download (a host wait). */
    int x0_every;
    /* The device path: `device_model` is `model` on backend memory (x_in, t, out are
     * `ops` arrays). With both set, the whole run — state, sampler arithmetic, the model —
     * stays in the backend and each step is recorded once as a graph and replayed
     * (MOIRE_CUDA_GRAPH=0: no graphs). Runs with an inpainting mask, or whose injected noise
     * would not fit a bounded device table, use `model` on the host instead. */
    const struct moire_ops *ops;
    moire_model_fn device_model;
} moire_sample_request;

/* Runs the sampler; out[n, C, h, w] receives the final sample (x̂0 at level 0).
 * *out_nfe (may be NULL) receives the number of model evaluations. */
moire_status sampler_run(const moire_sample_request *request, float *out, int *out_nfe);

/* The levels the sampler visits: levels[0..steps] (descending, levels[steps] = 0) in the
 * sampler's s units, and the model time for each of the first `steps` levels. Exposed for
 * tests and docs. Returns the number of steps actually produced (= steps). */
moire_status sampler_levels(const moire_model_config *config, moire_sampler sampler,
                            moire_schedule schedule, int steps, double *levels,
                            double *model_times);

#endif /* MOIRE_SAMPLER_H */
