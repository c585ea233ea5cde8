/* dit_layout.h — the DiT's data layouts that both the models and the backend's ops need:
 * image ↔ patch tokens and the sinusoidal timestep features. Plain host loops; the CPU table's
 * patchify / timestep ops call them (so they live in the backend layer), dit_common.c too. */
#pragma once

#define DIT_TIMESTEP_FREQ_DIM 256

/* x[n, C, h, w] → patches[n·T, C·p·p], T = (h/p)·(w/p), token = row·(w/p) + col; each patch
 * flattened as (channel, row-in-patch, col-in-patch), like a conv weight [D, C, p, p]. */
void dit_patchify(float *patches, const float *x, int n, int C, int h, int w, int p);

/* head[n·T, p·p·Co] → out[n, Co, h, w]: head[i, r·gw + c, (pi·p + pj)·Co + ch] is
 * out[i, ch, r·p + pi, c·p + pj]. */
void dit_unpatchify(float *out, const float *head, int n, int Co, int h, int w, int p);

/* t[n] → out[n, 256]: [cos(t·f_i), sin(t·f_i)], f_i = exp(−ln(10000)·i/128), cos first. */
void dit_timestep_frequencies(float *out, const float *t, int n);
