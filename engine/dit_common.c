/* dit_common.c — see dit_common.h. */
#include "dit_common.h"
#include "ops.h"

#include <math.h>
#include <string.h>

void dit_patchify(float *patches, const float *x, int n, int C, int h, int w, int p)
{
    const int gh = h / p, gw = w / p, T = gh * gw, patch_dim = C * p * p;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < gh; r++)
            for (int c = 0; c < gw; c++) {
                float *dst = patches + ((size_t)i * T + (size_t)r * gw + c) * patch_dim;
                for (int ch = 0; ch < C; ch++)
                    for (int pi = 0; pi < p; pi++)
                        for (int pj = 0; pj < p; pj++)
                            *dst++ = x[(((size_t)i * C + ch) * h + r * p + pi) * w + c * p + pj];
            }
}

void dit_unpatchify(float *out, const float *head, int n, int Co, int h, int w, int p)
{
    const int gh = h / p, gw = w / p, T = gh * gw, head_dim = p * p * Co;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < gh; r++)
            for (int c = 0; c < gw; c++) {
                const float *src = head + ((size_t)i * T + (size_t)r * gw + c) * head_dim;
                for (int pi = 0; pi < p; pi++)
                    for (int pj = 0; pj < p; pj++)
                        for (int ch = 0; ch < Co; ch++)
                            out[(((size_t)i * Co + ch) * h + r * p + pi) * w + c * p + pj] =
                                src[(pi * p + pj) * Co + ch];
            }
}

void dit_timestep_frequencies(float *out, const float *t, int n)
{
    const int half = DIT_TIMESTEP_FREQ_DIM / 2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            double arg = (double)t[i] * exp(-log(10000.0) * j / half);
            out[(size_t)i * DIT_TIMESTEP_FREQ_DIM + j] = (float)cos(arg);
            out[(size_t)i * DIT_TIMESTEP_FREQ_DIM + half + j] = (float)sin(arg);
        }
}

void dit_positions(float *pos, const float *stored, int trained_grid, int gh, int gw, int D)
{
    if (stored && gh == trained_grid && gw == trained_grid) {
        memcpy(pos, stored, (size_t)gh * gw * D * sizeof(float));
        return;
    }
    const int quarter = D / 4;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            float *row = pos + ((size_t)r * gw + c) * D;
            for (int i = 0; i < quarter; i++) {
                double omega = 1.0 / pow(10000.0, (double)i / quarter);
                row[i] = (float)sin(c * omega);
                row[quarter + i] = (float)cos(c * omega);
                row[2 * quarter + i] = (float)sin(r * omega);
                row[3 * quarter + i] = (float)cos(r * omega);
            }
        }
}

void dit_add_positions(float *tokens, const float *pos, int n, int T, int D)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < T; j++) {
            float *tok = tokens + ((size_t)i * T + j) * D;
            const float *pe = pos + (size_t)j * D;
            for (int d = 0; d < D; d++)
                tok[d] += pe[d];
        }
}

moire_status dit_final_layer(const moire_ops *ops, float *head, float *normed, float *modulation,
                             const float *tokens, const float *cond_act,
                             const float *adaLN_weight, const float *adaLN_bias,
                             const float *linear_weight, const float *linear_bias, int n, int T,
                             int D, int head_dim, float eps)
{
    moire_status status = ops->linear(ops, modulation, cond_act, adaLN_weight, adaLN_bias, n, D,
                                      2 * D);
    for (int i = 0; i < n && status == MOIRE_OK; i++) {
        const float *shift = modulation + (size_t)i * 2 * D, *scale = shift + D;
        const size_t off = (size_t)i * T * D;
        status = ops->layernorm_modulate(ops, normed + off, tokens + off, shift, scale, T, D, eps);
    }
    if (status == MOIRE_OK)
        status = ops->linear(ops, head, normed, linear_weight, linear_bias, n * T, D, head_dim);
    return status;
}
