/* sampler.c — every sampler over the one-evaluation model interface of sampler.h.
 *
 * docs/SAMPLERS.md is the spec (every formula below is written out there);
 * tools/golden/samplers_ref.py is an independent float64 implementation of it.
 *
 * Layout of the work:
 *   1. names and labels of samplers and schedules (sampler_plan.c);
 *   2. the plan: the levels (sampler s units), the model time of each level, and for the
 *      official DDPM sampler the respaced coefficient tables (sampler_plan.c);
 *   3. sampler_run (this file): argument checks, start state (txt2img or img2img), one loop over the
 *      steps that dispatches to the sampler's update, inpainting blend, progress callback.
 *
 * State and arithmetic are double; the model sees float inputs (x_in and t rounded once) and
 * returns float outputs. Every image draws its noise from its own seed (rng.h), so the
 * result for image i never depends on the batch it was run in.
 */
#include "sampler.h"
#include "sampler_plan.h"

#include "internal.h"
#include "ops.h"
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* ------------------------------------------------------------------------------------------
 * Sampling
 * ---------------------------------------------------------------------------------------- */

/* The run: every array lives in the memory of the backend that does the arithmetic (`ops`),
 * and every elementwise piece of a step is one ops->sampler_op call (formulas in
 * sampler_math.h). With a request's device model (generate.c on a CUDA context) that is the
 * device, and a whole step (model input, guided forward, update) can be recorded once as a
 * graph and replayed; otherwise it is the CPU table on host memory, which runs the same
 * expressions as the host loops it replaced, bit for bit. */
typedef struct run {
    const moire_sample_request *req;
    const moire_ops *ops;  /* the backend of every array below                  */
    moire_ops cpu_ops;     /* the CPU table, when the request brings no device  */
    moire_model_fn model;  /* q->device_model on a device, else q->model         */
    bool on_device;        /* ops is the request's (not cpu_ops)                */
    plan p;
    int C, Co;
    size_t hw, chw, total; /* per-image sizes and n·C·h·w */
    int nfe;
    /* backend memory */
    double *y;      /* [n,C,h,w] state                         */
    double *den;    /* [n,C,h,w] D of the latest evaluation    */
    double *old;    /* [n,C,h,w] dpm++2m: previous D; heun: corrector's D */
    double *y2;     /* [n,C,h,w] heun: predictor state         */
    float *x_in;    /* [n,C,h,w] model input                   */
    float *t_in;    /* [n]                                     */
    float *out;     /* [n,Co,h,w] raw model output             */
    float *x0;      /* [n,C,h,w] x̂0 for on_step, then the sample */
    double *coef;   /* [steps + 1, MOIRE_SAMPLER_COEFS] every step's scalars (last: 0) */
    float *noise;   /* [rows, n, C·h·w] every step's injected noise, or NULL */
    int32_t *step;  /* [1] the coefficient row of the step being run */
    /* host memory */
    double *y_host;     /* start state, and the state for the inpainting blend   */
    float *noise_host;  /* [C,h,w] one image's noise (start, blend)               */
    float *x0_host;     /* [n,C,h,w] for on_step and the result                   */
} run;

static void *run_alloc(run *r, size_t count, size_t size)
{
    if (count == 0)
        count = 1;
    if (count > SIZE_MAX / size)
        return NULL;
    void *ptr = r->ops->mem_alloc(r->ops, count * size);
    return ptr;
}

static void run_free(run *r)
{
    sampler_plan_free(&r->p);
    void *backend[] = {r->y, r->den, r->old, r->y2, r->x_in, r->t_in,
                       r->out, r->x0, r->coef, r->noise, r->step};
    for (size_t i = 0; i < sizeof backend / sizeof *backend; i++)
        if (backend[i])
            r->ops->mem_free(r->ops, backend[i]);
    free(r->y_host);
    free(r->noise_host);
    free(r->x0_host);
}

/* Image b's noise of `stream` (count C·h·w, offset 0, its own seed) into `dst`. */
static void draw_noise_into(const run *r, int b, uint64_t stream, float *dst)
{
    rng_normal(r->req->seeds[b], stream, 0, dst, (int64_t)r->chw);
}

/* The sampler_op arguments every piece shares. */
static moire_sampler_args step_args(const run *r, moire_sampler_op op)
{
    moire_sampler_args a = {
        .op = op,
        .n = r->req->n,
        .chw = (int64_t)r->chw,
        .out_stride = (int64_t)r->Co * (int64_t)r->hw,
        .learned_variance = r->req->config->learn_sigma ? 1 : 0,
        .y = r->y, .y2 = r->y2, .den = r->den, .old = r->old,
        .x_in = r->x_in, .t_in = r->t_in, .x0 = r->x0,
        .model_out = r->out,
        .noise = r->noise,
        .coef = r->coef,
        .step = r->step,
    };
    return a;
}

static moire_status sampler_op(const run *r, const moire_sampler_args *a)
{
    return r->ops->sampler_op(r->ops, a);
}

/* One model evaluation of `src` with slot's input scale and time: model input, model. */
static moire_status evaluate(run *r, const double *src, int slot)
{
    moire_sampler_args a = step_args(r, MOIRE_SAMPLER_OP_MODEL_INPUT);
    a.src = src;
    a.slot = slot;
    moire_status st = sampler_op(r, &a);
    if (st == MOIRE_OK)
        st = r->model(r->req->model_user_data, r->x_in, r->t_in, r->out);
    r->nfe++;
    return st;
}

/* The k-diffusion denoiser: evaluate `src` and dst = src − s·out (s the slot's level). */
static moire_status denoise(run *r, const double *src, double *dst, int slot)
{
    moire_status st = evaluate(r, src, slot);
    if (st != MOIRE_OK)
        return st;
    moire_sampler_args a = step_args(r, MOIRE_SAMPLER_OP_DENOISE);
    a.src = src;
    a.dst = dst;
    a.slot = slot;
    return sampler_op(r, &a);
}

static bool heun_corrects(const plan *p, int i)
{
    /* Heun's last step to 0 is Euler (EDM Alg. 1) */
    return p->sampler == MOIRE_SAMPLER_HEUN && p->levels[i + 1] != 0.0;
}

/* Model evaluations of step i. */
static int step_evaluations(const plan *p, int i)
{
    return heun_corrects(p, i) ? 2 : 1;
}

/* Does step i inject noise (and so read a row of the noise table)? *up_out: DDIM's noise
 * scale (eta: the request's DDIM η; Euler ancestral uses 1). */
static bool step_noise_scale(const plan *p, int i, double eta, double *up_out);

/* Row i of the coefficient table: every scalar step i needs (sampler_math.h lists the
 * slots). Computed exactly as the host loops computed them, so the CPU result is unchanged.
 * `have_old`/`old_lambda` carry DPM++ 2M's previous λ across the rows. */
static void fill_coefficients(const run *r, int i, double *c, int noise_row, bool *have_old,
                              double *old_lambda)
{
    const plan *p = &r->p;
    const moire_sample_request *q = r->req;
    for (int k = 0; k < MOIRE_SAMPLER_COEFS; k++)
        c[k] = 0.0;
    double s = p->levels[i], s_next = p->levels[i + 1];
    c[MOIRE_COEF_IN_SCALE0] = sampler_plan_is_ve(p) ? 1.0 / sqrt(1.0 + s * s) : 1.0;
    c[MOIRE_COEF_TIME0] = p->model_times[i];
    c[MOIRE_COEF_LEVEL0] = s;
    if (heun_corrects(p, i)) {
        c[MOIRE_COEF_IN_SCALE1] = sampler_plan_is_ve(p) ? 1.0 / sqrt(1.0 + s_next * s_next) : 1.0;
        c[MOIRE_COEF_TIME1] = p->model_times[i + 1];
        c[MOIRE_COEF_LEVEL1] = s_next;
    }
    c[MOIRE_COEF_NOISE_ROW] = noise_row;
    switch (p->sampler) {
    case MOIRE_SAMPLER_DDPM: {
        int k = p->steps - 1 - i;
        c[MOIRE_COEF_IN_SCALE0] = 1.0; /* the official sampler feeds x_t itself */
        c[MOIRE_COEF_A] = p->sqrt_recip_ab[k];
        c[MOIRE_COEF_B] = p->sqrt_recipm1_ab[k];
        c[MOIRE_COEF_C] = p->coef1[k];
        c[MOIRE_COEF_D] = p->coef2[k];
        c[MOIRE_COEF_E] = p->log_beta[k];
        c[MOIRE_COEF_F] = p->log_post_var[k];
        c[MOIRE_COEF_NOISE] = k > 0 ? 1.0 : 0.0;
        break;
    }
    case MOIRE_SAMPLER_RF_EULER:
        c[MOIRE_COEF_IN_SCALE0] = 1.0;
        c[MOIRE_COEF_A] = s;
        c[MOIRE_COEF_B] = s - s_next;
        break;
    case MOIRE_SAMPLER_EULER:
    case MOIRE_SAMPLER_HEUN:
        c[MOIRE_COEF_A] = s;
        c[MOIRE_COEF_B] = s_next;
        c[MOIRE_COEF_C] = s_next - s;
        break;
    case MOIRE_SAMPLER_DDIM:
    case MOIRE_SAMPLER_EULER_ANCESTRAL: {
        /* DDIM (η) and Euler ancestral (η = 1) in the general x = α·x0 + σ·ε form. */
        double a, sg, a2, sg2, up;
        sampler_plan_level_alpha_sigma(p, s, &a, &sg);
        sampler_plan_level_alpha_sigma(p, s_next, &a2, &sg2);
        double c_eps = 0.0;
        step_noise_scale(p, i, (double)q->eta, &up);
        if (sg2 > 0.0)
            c_eps = sqrt(fmax(0.0, sg2 * sg2 - up * up));
        else
            a2 = 1.0;
        c[MOIRE_COEF_A] = a;
        c[MOIRE_COEF_B] = sg;
        c[MOIRE_COEF_C] = a2;
        c[MOIRE_COEF_D] = c_eps;
        c[MOIRE_COEF_E] = up;
        c[MOIRE_COEF_NOISE] = up > 0.0 ? 1.0 : 0.0;
        break;
    }
    case MOIRE_SAMPLER_DPMPP_2M: {
        /* DPM-Solver++(2M), data prediction, λ = ln(α/σ); a previous λ of −∞ (RF at t = 1)
         * makes the step first order. */
        double a, sg, a2, sg2;
        sampler_plan_level_alpha_sigma(p, s, &a, &sg);
        sampler_plan_level_alpha_sigma(p, s_next, &a2, &sg2);
        double lambda = a > 0.0 ? log(a) - log(sg) : -INFINITY;
        if (sg2 == 0.0) {
            c[MOIRE_COEF_FLAG] = 1.0;
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
            c[MOIRE_COEF_A] = w_old;
            c[MOIRE_COEF_B] = sg2 / sg;
            c[MOIRE_COEF_C] = a2 * phi;
        }
        *have_old = true;
        *old_lambda = lambda;
        break;
    }
    default:
        break;
    }
}

static bool step_noise_scale(const plan *p, int i, double eta, double *up_out)
{
    *up_out = 0.0;
    if (p->sampler == MOIRE_SAMPLER_EULER_ANCESTRAL)
        eta = 1.0; /* Euler ancestral is DDIM at η = 1 */
    if (p->sampler == MOIRE_SAMPLER_DDPM)
        return p->steps - 1 - i > 0;
    if (p->sampler != MOIRE_SAMPLER_DDIM && p->sampler != MOIRE_SAMPLER_EULER_ANCESTRAL)
        return false;
    double a, sg, a2, sg2;
    sampler_plan_level_alpha_sigma(p, p->levels[i], &a, &sg);
    sampler_plan_level_alpha_sigma(p, p->levels[i + 1], &a2, &sg2);
    if (sg2 > 0.0) {
        double qq = (a * sg2) / (a2 * sg);
        *up_out = eta * sg2 * sqrt(fmax(0.0, 1.0 - qq * qq));
    }
    return *up_out > 0.0;
}

/* Queues step i: its evaluations and updates, then the step counter's advance. */
static moire_status issue_step(run *r, int i)
{
    const plan *p = &r->p;
    moire_status st = MOIRE_OK;
    moire_sampler_args a;
    switch (p->sampler) {
    case MOIRE_SAMPLER_DDPM:
    case MOIRE_SAMPLER_RF_EULER:
        st = evaluate(r, r->y, 0);
        a = step_args(r, p->sampler == MOIRE_SAMPLER_DDPM ? MOIRE_SAMPLER_OP_DDPM
                                                          : MOIRE_SAMPLER_OP_RF_EULER);
        if (st == MOIRE_OK)
            st = sampler_op(r, &a);
        break;
    case MOIRE_SAMPLER_EULER:
    case MOIRE_SAMPLER_HEUN:
        st = denoise(r, r->y, r->den, 0);
        if (st == MOIRE_OK && !heun_corrects(p, i)) {
            a = step_args(r, MOIRE_SAMPLER_OP_EULER);
            st = sampler_op(r, &a);
            break;
        }
        /* the corrector's D goes to `old`, so `den` keeps D(y; s) for the progress estimate */
        a = step_args(r, MOIRE_SAMPLER_OP_HEUN_PREDICT);
        if (st == MOIRE_OK)
            st = sampler_op(r, &a);
        if (st == MOIRE_OK)
            st = denoise(r, r->y2, r->old, 1);
        a = step_args(r, MOIRE_SAMPLER_OP_HEUN_CORRECT);
        if (st == MOIRE_OK)
            st = sampler_op(r, &a);
        break;
    case MOIRE_SAMPLER_DDIM:
    case MOIRE_SAMPLER_EULER_ANCESTRAL:
    case MOIRE_SAMPLER_DPMPP_2M:
        st = denoise(r, r->y, r->den, 0);
        a = step_args(r, p->sampler == MOIRE_SAMPLER_DPMPP_2M ? MOIRE_SAMPLER_OP_DPMPP_2M
                                                              : MOIRE_SAMPLER_OP_DDIM);
        if (st == MOIRE_OK)
            st = sampler_op(r, &a);
        break;
    default:
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_run: unknown sampler %d",
                          (int)p->sampler);
    }
    a = step_args(r, MOIRE_SAMPLER_OP_ADVANCE);
    if (st == MOIRE_OK)
        st = sampler_op(r, &a);
    return st;
}

/* Downloads (float)src into r->x0_host: the progress estimate, or the final sample. */
static moire_status fetch_float(run *r, const double *src)
{
    moire_sampler_args a = step_args(r, MOIRE_SAMPLER_OP_TO_FLOAT);
    a.src = src;
    moire_status st = sampler_op(r, &a);
    if (st == MOIRE_OK)
        st = r->ops->download(r->ops, r->x0_host, r->x0, r->total * sizeof(float));
    return st;
}

static moire_status check_request(const moire_sample_request *q, float *out)
{
    if (!q || !out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_run: request or out is NULL");
    if (!q->model)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_run: no model function");
    if (q->n < 1 || q->h < 1 || q->w < 1)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler_run: n = %d images of %d×%d; all must be ≥ 1", q->n, q->h,
                          q->w);
    if (!q->seeds)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_run: seeds is NULL");
    if (q->steps < 1 || q->steps > STEPS_MAX)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler_run: steps %d is out of range [1, %d]", q->steps, STEPS_MAX);
    if (!(q->eta >= 0.0f && q->eta <= 1.0f))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler_run: DDIM eta %g is out of range [0, 1]", (double)q->eta);
    if (q->init && !(q->strength > 0.0f && q->strength <= 1.0f))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler_run: img2img strength %g is out of range (0, 1]",
                          (double)q->strength);
    if (q->mask && !q->init)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "sampler_run: a mask needs an init image (inpainting keeps the init "
                          "where the mask is 0)");
    if (q->mask)
        for (size_t j = 0; j < (size_t)q->h * (size_t)q->w; j++)
            if (!(q->mask[j] >= 0.0f && q->mask[j] <= 1.0f))
                return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                                  "sampler_run: mask value %g at pixel %zu is outside [0, 1]",
                                  (double)q->mask[j], j);
    return MOIRE_OK;
}

/* Inpainting: y ← m·y + (1−m)·(a·init + b·n) at level index `level` (noise MASK + step).
 * Runs on the host state: a masked run always uses the CPU table (see choose_backend). */
static void blend_known(run *r, int level, int step)
{
    const moire_sample_request *q = r->req;
    double a = r->p.state_a[level], bcoef = r->p.state_b[level];
    for (int b = 0; b < q->n; b++) {
        size_t base = (size_t)b * r->chw;
        if (bcoef != 0.0)
            draw_noise_into(r, b, MOIRE_RNG_STREAM_MASK + (uint64_t)step, r->noise_host);
        for (size_t j = 0; j < r->chw; j++) {
            double m = (double)q->mask[j % r->hw];
            double known = a * (double)q->init[base + j];
            if (bcoef != 0.0)
                known += bcoef * (double)r->noise_host[j];
            r->y[base + j] = m * r->y[base + j] + (1.0 - m) * known;
        }
    }
}

/* The device noise table is bounded; past it (huge pixel-space batches with hundreds of noisy
 * steps) the run stays on the host. */
#define DEVICE_NOISE_MAX_BYTES ((size_t)512 << 20)

/* The request's device when it brings one and the run can live there: no inpainting mask
 * (its blend is host code), a noise table within bounds. Otherwise the CPU table, with the
 * host model. */
static moire_status choose_backend(run *r, int first)
{
    const moire_sample_request *q = r->req;
    size_t noisy = 0;
    for (int i = first; i < r->p.steps; i++) {
        double up;
        noisy += step_noise_scale(&r->p, i, (double)q->eta, &up) ? 1 : 0;
    }
    bool device = q->ops && q->device_model && !q->mask &&
                  noisy * r->total * sizeof(float) <= DEVICE_NOISE_MAX_BYTES;
    if (device) {
        r->ops = q->ops;
        r->model = q->device_model;
        r->on_device = true;
        return MOIRE_OK;
    }
    moire_status st = ops_cpu_init(&r->cpu_ops, 1);
    r->ops = &r->cpu_ops;
    r->model = q->model;
    return st;
}

/* Starting state on the host (double, as the host loops), uploaded once. */
static void start_state(run *r, int first, bool from_init)
{
    const moire_sample_request *q = r->req;
    const plan *p = &r->p;
    for (int b = 0; b < q->n; b++) {
        size_t base = (size_t)b * r->chw;
        if (from_init) {
            draw_noise_into(r, b, MOIRE_RNG_STREAM_IMG2IMG, r->noise_host);
            for (size_t j = 0; j < r->chw; j++)
                r->y_host[base + j] = p->state_a[first] * (double)q->init[base + j] +
                                      p->state_b[first] * (double)r->noise_host[j];
        } else {
            draw_noise_into(r, b, MOIRE_RNG_STREAM_INIT, r->noise_host);
            /* DDPM official: x_T = noise; k-diffusion: y = s_0·noise (RF: s_0 = 1). */
            double scale = p->sampler == MOIRE_SAMPLER_DDPM ? 1.0 : p->levels[0];
            for (size_t j = 0; j < r->chw; j++)
                r->y_host[base + j] = scale * (double)r->noise_host[j];
        }
    }
}

/* Every step's coefficients and every injected noise, made on the host (the same random
 * streams as ever) and uploaded once, so no step copies anything from the host. */
static moire_status upload_tables(run *r, int first)
{
    const moire_sample_request *q = r->req;
    const plan *p = &r->p;
    const int steps = p->steps;
    /* one row past the last step: the counter ends there, and the final TO_FLOAT reads it */
    double *coef = calloc_array((size_t)(steps + 1) * MOIRE_SAMPLER_COEFS, sizeof(double));
    int *noise_row = malloc_array((size_t)steps, sizeof(int));
    if (!coef || !noise_row) {
        free(coef);
        free(noise_row);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "sampler_run: out of memory");
    }
    int rows = 0;
    for (int i = first; i < steps; i++) {
        double up;
        noise_row[i] = step_noise_scale(p, i, (double)q->eta, &up) ? rows++ : 0;
    }
    bool have_old = false;
    double old_lambda = -INFINITY;
    for (int i = first; i < steps; i++)
        fill_coefficients(r, i, coef + (size_t)i * MOIRE_SAMPLER_COEFS, noise_row[i],
                          &have_old, &old_lambda);
    moire_status st = r->ops->upload(r->ops, r->coef, coef,
                                     (size_t)(steps + 1) * MOIRE_SAMPLER_COEFS * sizeof(double));
    int32_t step = first;
    if (st == MOIRE_OK)
        st = r->ops->upload(r->ops, r->step, &step, sizeof step);
    if (st == MOIRE_OK && rows > 0) {
        r->noise = run_alloc(r, (size_t)rows * r->total, sizeof(float));
        float *host = r->noise ? malloc_array((size_t)rows * r->total, sizeof(float)) : NULL;
        if (!host) {
            st = r->noise ? error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "sampler_run: out of memory")
                          : MOIRE_ERROR_OUT_OF_MEMORY;
        } else {
            for (int i = first; i < steps; i++) {
                double up;
                if (!step_noise_scale(p, i, (double)q->eta, &up))
                    continue;
                for (int b = 0; b < q->n; b++)
                    draw_noise_into(r, b, MOIRE_RNG_STREAM_STEP + (uint64_t)i,
                                    host + ((size_t)noise_row[i] * q->n + b) * r->chw);
            }
            st = r->ops->upload(r->ops, r->noise, host, (size_t)rows * r->total * sizeof(float));
            free(host);
        }
    }
    free(coef);
    free(noise_row);
    return st;
}

/* Step i is recorded and replayed as a graph when it has the shape of the recorded one: the
 * same pieces in the same order (all steps of a sampler but Heun's last, which is Euler). */
static bool graphs_wanted(void)
{
    const char *env = getenv("MOIRE_CUDA_GRAPH");
    return !(env && strcmp(env, "0") == 0);
}

/* Makes the activation arena its high-water size now (an empty pass), so the recorded
 * forward takes every block from the arena and allocates nothing while recording. */
static moire_status settle_arena(const moire_ops *ops)
{
    if (!ops->arena)
        return MOIRE_OK;
    moire_status st = arena_begin(ops->arena);
    if (st == MOIRE_OK)
        arena_end(ops->arena);
    return st;
}

moire_status sampler_run(const moire_sample_request *request, float *out, int *out_nfe)
{
    moire_status st = check_request(request, out);
    if (st != MOIRE_OK)
        return st;
    const moire_sample_request *q = request;
    run r;
    memset(&r, 0, sizeof r);
    r.req = q;
    st = sampler_plan_build(q->config, q->sampler, q->schedule, q->steps, &r.p);
    if (st != MOIRE_OK)
        return st;
    const plan *p = &r.p;
    r.C = q->config->in_channels;
    r.Co = q->config->out_channels;
    r.hw = (size_t)q->h * (size_t)q->w;
    r.chw = (size_t)r.C * r.hw;
    r.total = (size_t)q->n * r.chw;
    size_t total_out = (size_t)q->n * (size_t)r.Co * r.hw;

    /* Which steps run: all, or the last round(strength·steps) of them for img2img. */
    int steps = p->steps, first = 0;
    bool from_init = q->init && q->strength < 1.0f;
    if (from_init) {
        int n_run = (int)floor((double)q->strength * (double)steps + 0.5);
        n_run = n_run < 1 ? 1 : (n_run > steps ? steps : n_run);
        first = steps - n_run;
    }
    st = choose_backend(&r, first);
    if (st != MOIRE_OK) {
        sampler_plan_free(&r.p);
        return st;
    }
    r.y = run_alloc(&r, r.total, sizeof(double));
    r.den = run_alloc(&r, r.total, sizeof(double));
    r.old = run_alloc(&r, r.total, sizeof(double));
    r.y2 = run_alloc(&r, r.total, sizeof(double));
    r.x_in = run_alloc(&r, r.total, sizeof(float));
    r.t_in = run_alloc(&r, (size_t)q->n, sizeof(float));
    r.out = run_alloc(&r, total_out, sizeof(float));
    r.x0 = run_alloc(&r, r.total, sizeof(float));
    r.coef = run_alloc(&r, (size_t)(steps + 1) * MOIRE_SAMPLER_COEFS, sizeof(double));
    r.step = run_alloc(&r, 1, sizeof(int32_t));
    r.y_host = calloc_array(r.total, sizeof(double));
    r.noise_host = malloc_array(r.chw, sizeof(float));
    r.x0_host = malloc_array(r.total, sizeof(float));
    if (!r.y || !r.den || !r.old || !r.y2 || !r.x_in || !r.t_in || !r.out || !r.x0 ||
        !r.coef || !r.step || !r.y_host || !r.noise_host || !r.x0_host) {
        run_free(&r);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "sampler_run: out of memory for %d images of %d×%d×%d", q->n, r.C,
                          q->h, q->w);
    }

    start_state(&r, first, from_init);
    st = r.ops->upload(r.ops, r.y, r.y_host, r.total * sizeof(double));
    /* zeroed: the first DPM++ 2M step weighs it by 0, and 0 × garbage can be NaN */
    if (st == MOIRE_OK) {
        memset(r.y_host, 0, r.total * sizeof(double));
        st = r.ops->upload(r.ops, r.old, r.y_host, r.total * sizeof(double));
    }
    if (st == MOIRE_OK)
        st = upload_tables(&r, first);

    /* The loop. On a device, step `first` runs directly (it sizes the arena and the GEMM
     * plans); the next step of each shape (the number of model evaluations: Heun's last step
     * has one) is recorded as a graph, and every later step of that shape replays it: one
     * graph launch per step, no allocation, no host wait. The CPU table records nothing
     * (graph_end gives NULL), so there every step runs directly. */
    bool try_graph = r.on_device && graphs_wanted();
    moire_graph *graphs[2] = {NULL, NULL};
    for (int i = first; i < steps && st == MOIRE_OK; i++) {
        const int shape = step_evaluations(p, i) - 1;
        if (graphs[shape]) {
            st = r.ops->graph_launch(r.ops, graphs[shape]);
            r.nfe += step_evaluations(p, i);
        } else if (try_graph && i > first) {
            st = settle_arena(r.ops);
            if (st == MOIRE_OK)
                st = r.ops->graph_begin(r.ops);
            if (st == MOIRE_OK) {
                moire_status issued = issue_step(&r, i);
                st = r.ops->graph_end(r.ops, &graphs[shape]);
                if (issued != MOIRE_OK)
                    st = issued;
            }
            if (st == MOIRE_OK && graphs[shape])
                st = r.ops->graph_launch(r.ops, graphs[shape]);
            else if (st == MOIRE_OK)
                try_graph = false; /* the backend runs work directly: the step has run */
        } else {
            st = issue_step(&r, i);
        }
        if (st != MOIRE_OK)
            break;
        if (q->mask)
            blend_known(&r, i + 1, i);
        if (q->on_step) {
            int step = i - first + 1, count = steps - first;
            bool wants = q->x0_every == 0 ||
                         (q->x0_every > 0 && (step % q->x0_every == 0 || step == count));
            if (wants)
                st = fetch_float(&r, r.den);
            if (st == MOIRE_OK &&
                !q->on_step(q->on_step_user_data, step, count, r.nfe, wants ? r.x0_host : NULL))
                st = error_fail(MOIRE_ERROR_CANCELLED, "sampling cancelled at step %d of %d",
                                step, count);
        }
    }
    for (int k = 0; k < 2; k++)
        if (graphs[k])
            r.ops->graph_free(r.ops, graphs[k]);
    if (st == MOIRE_OK)
        st = fetch_float(&r, r.y);
    if (st == MOIRE_OK) {
        memcpy(out, r.x0_host, r.total * sizeof(float));
        if (out_nfe)
            *out_nfe = r.nfe;
    }
    run_free(&r);
    return st;
}
