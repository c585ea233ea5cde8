/* bench.h — random-weight models of the released DiT-MoE geometries, built in memory, and
 * backend figures for `moire bench` (docs/PERFORMANCE.md). Internal to the engine and its CLI. */
#ifndef MOIRE_BENCH_H
#define MOIRE_BENCH_H

#include "moire.h"

typedef struct moire_bench_geometry {
    const char *name;  /* "S/2", "B/2", "XL/2", "G/2", "tiny"                             */
    int depth, hidden, heads, experts, top_k;
    bool rectified_flow; /* XL/G: qk-norm layout, 50 RF steps; S/B: qkv, 250 DDPM steps   */
} moire_bench_geometry;

/* The geometry called `name` (case-insensitive; "XL/2-8E2A" or "xl" work too), or NULL. */
const moire_bench_geometry *moire_bench_geometry_find(const char *name);
/* All known geometries, NULL-terminated. */
const moire_bench_geometry *const *moire_bench_geometries(void);

/* A model with the geometry's shapes for images of resolution² pixels (SD-VAE latents /8)
 * and random weights (uniform, ±1/√D): not loadable, not meaningful, only fast to build:
 * the weight tensors are windows into one small random pool, so memory on the host stays
 * small while every tensor has its own address (a device backend copies each separately). */
moire_status moire_bench_model_new(const moire_bench_geometry *g, int resolution,
                                   moire_model **out_model);

/* Device name, memory, peak memory of this context's backend and a measured copy bandwidth
 * (CUDA: device-to-device; CPU: memcpy; read + write counted). */
typedef struct moire_bench_stats {
    char device_name[128];
    double memory_total_bytes, memory_peak_bytes, copy_bytes_per_s;
    int weight_bytes_per_parameter; /* 4 (fp32) or 2 (bf16 GEMM weights)                    */
} moire_bench_stats;
moire_status moire_bench_stats_get(const moire_ctx *ctx, moire_bench_stats *stats);

#endif /* MOIRE_BENCH_H */
