/* sampler_plan.h — the plan of a sampling run, shared by sampler_plan.c (which builds it) and
 * sampler.c (which runs it); private to those two files. */
#ifndef MOIRE_SAMPLER_PLAN_H
#define MOIRE_SAMPLER_PLAN_H

#include "sampler.h"

#include <stdbool.h>

#define STEPS_MAX 10000

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

void sampler_plan_free(plan *p);

bool sampler_plan_is_ve(const plan *p);

/* x = α(s)·x0 + σ(s)·ε of the k-diffusion state: VE α = 1, σ = s; RF α = 1 − s, σ = s. */
void sampler_plan_level_alpha_sigma(const plan *p, double s, double *alpha, double *sigma);

moire_status sampler_plan_build(const moire_model_config *c, moire_sampler sampler,
                                moire_schedule schedule, int steps, plan *p);

#endif /* MOIRE_SAMPLER_PLAN_H */
