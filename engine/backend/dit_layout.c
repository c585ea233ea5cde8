/* dit_layout.c — see dit_layout.h. */
#include "dit_layout.h"

#include <math.h>
#include <stddef.h>

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
