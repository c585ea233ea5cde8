/* sampler_math.h — the per-element arithmetic of the samplers that run on a backend (the
 * `sampler_op` entry of engine/ops.h), written once and compiled twice: by the C compiler for
 * the CPU table (engine/ops_cpu.c) and by nvcc / the CUDA emulator for the CUDA table
 * (kernels/sampler.cu, which defines MOIRE_SAMPLER_FN as a device function first).
 *
 * Every formula is sampler.c's, in the same order of operations and in double, so the CPU
 * table gives bit-identical results to the host loops it replaced (the golden tests and the
 * README image check that). The scalars of a step (levels, coefficients) are not arguments:
 * they are read from a row of MOIRE_SAMPLER_COEFS doubles in backend memory that sampler.c
 * precomputes for every step, so a captured CUDA graph replays unchanged from step to step
 * (the row is picked by a step counter in backend memory, see moire_sampler_args in ops.h).
 */
#ifndef MOIRE_SAMPLER_MATH_H
#define MOIRE_SAMPLER_MATH_H

#include <math.h>

#ifndef MOIRE_SAMPLER_FN
#define MOIRE_SAMPLER_FN static inline
#endif

/* The pieces of a step (ops.h `sampler_op`; kernels/sampler.cu uses the same values). */
typedef enum moire_sampler_op {
    MOIRE_SAMPLER_OP_MODEL_INPUT,  /* x_in = (float)(IN_SCALE·src), t_in[n] = (float)TIME;
                                      slot 0 or 1 picks IN_SCALE0/TIME0 or …1         */
    MOIRE_SAMPLER_OP_DENOISE,      /* dst = src − LEVEL·out (LEVEL0/1 by slot)         */
    MOIRE_SAMPLER_OP_DDPM,         /* y ← DDPM ancestral update, den = x̂0             */
    MOIRE_SAMPLER_OP_RF_EULER,     /* den = y − t·v, y ← y − dt·v                      */
    MOIRE_SAMPLER_OP_EULER,        /* y ← y + ds·(y − den)/s                           */
    MOIRE_SAMPLER_OP_HEUN_PREDICT, /* y2 = y + ds·(y − den)/s                          */
    MOIRE_SAMPLER_OP_HEUN_CORRECT, /* y ← y + ds·½·((y − den)/s + (y2 − old)/s_next)   */
    MOIRE_SAMPLER_OP_DDIM,         /* y ← α'·den + c_ε·ε (+ up·noise)                  */
    MOIRE_SAMPLER_OP_DPMPP_2M,     /* y ← ratio·y + α'φ·D₂, old = den                   */
    MOIRE_SAMPLER_OP_TO_FLOAT,     /* x0 = (float)src (progress estimate, final sample) */
    MOIRE_SAMPLER_OP_ADVANCE,      /* *step += 1 (the last op of a step)                */
} moire_sampler_op;

/* The slots of one step's coefficient row. Which ones a sampler reads is listed per op. */
enum {
    MOIRE_COEF_IN_SCALE0 = 0, /* model input = (float)(scale · state), first evaluation    */
    MOIRE_COEF_TIME0 = 1,     /* its model time                                             */
    MOIRE_COEF_IN_SCALE1 = 2, /* Heun's corrector evaluation                               */
    MOIRE_COEF_TIME1 = 3,
    MOIRE_COEF_LEVEL0 = 4,    /* s of the first evaluation (D = y − s·out)                 */
    MOIRE_COEF_LEVEL1 = 5,    /* s of the corrector evaluation                             */
    MOIRE_COEF_A = 6,         /* sampler-specific, see below                               */
    MOIRE_COEF_B = 7,
    MOIRE_COEF_C = 8,
    MOIRE_COEF_D = 9,
    MOIRE_COEF_E = 10,
    MOIRE_COEF_F = 11,
    MOIRE_COEF_NOISE = 12,    /* > 0: add noise; row NOISE_ROW of the noise table          */
    MOIRE_COEF_NOISE_ROW = 13,
    MOIRE_COEF_FLAG = 14,     /* DPM++ 2M: 1 on the last step (y = D)                      */
    MOIRE_SAMPLER_COEFS = 16,
};
/* Coefficients A..F per sampler:
 *   DDPM official: A √(1/ᾱ'), B √(1/ᾱ' − 1), C coef1, D coef2, E ln β', F ln posterior var.
 *   RF Euler:      A t, B dt = t − t_next.
 *   Euler, Heun:   A s, B s_next, C ds = s_next − s.
 *   DDIM / Euler a: A α, B σ, C α_next, D c_ε, E the noise scale ("up").
 *   DPM++ 2M:      A w_old (0 on a first-order step), B σ_next/σ, C α_next·φ. */

/* DDPM ancestral, one element: x the state, eps the model's ε, var_out its variance
 * interpolation output (learned variance only), noise the step's noise. Returns the new
 * state; *x0 receives the x̂0 estimate. */
MOIRE_SAMPLER_FN double moire_sampler_ddpm(const double *c, double x, double eps, int learned,
                                           double var_out, double noise, double *x0_out)
{
    double x0 = c[MOIRE_COEF_A] * x - c[MOIRE_COEF_B] * eps;
    double mean = c[MOIRE_COEF_C] * x0 + c[MOIRE_COEF_D] * x;
    *x0_out = x0;
    if (c[MOIRE_COEF_NOISE] > 0.0) {
        double f = 0.0; /* learn_sigma off: the (clipped) posterior variance */
        if (learned)
            f = (var_out + 1.0) * 0.5;
        double logvar = f * c[MOIRE_COEF_E] + (1.0 - f) * c[MOIRE_COEF_F];
        mean += exp(0.5 * logvar) * noise;
    }
    return mean;
}

/* DDIM (η) and Euler ancestral: y from D and the old y. */
MOIRE_SAMPLER_FN double moire_sampler_ddim(const double *c, double y, double d, double noise)
{
    double eps = (y - c[MOIRE_COEF_A] * d) / c[MOIRE_COEF_B];
    double out = c[MOIRE_COEF_C] * d + c[MOIRE_COEF_D] * eps;
    if (c[MOIRE_COEF_E] > 0.0)
        out += c[MOIRE_COEF_E] * noise;
    return out;
}

/* DPM-Solver++(2M): y from D, the previous D and the old y. */
MOIRE_SAMPLER_FN double moire_sampler_dpmpp_2m(const double *c, double y, double d, double old)
{
    if (c[MOIRE_COEF_FLAG] > 0.0)
        return d;
    double w_old = c[MOIRE_COEF_A];
    double dd = w_old != 0.0 ? (1.0 + w_old) * d - w_old * old : d;
    return c[MOIRE_COEF_B] * y + c[MOIRE_COEF_C] * dd;
}

#endif /* MOIRE_SAMPLER_MATH_H */
