/* perf_model.c — the performance model of one DiT-MoE sampling step on the CUDA backend
 * (perf_model.h; docs/PERFORMANCE.md has the tables and the assumptions in words).
 *
 * The step is the sequence engine/models/forward.c + engine/models/dit_common.c issue through
 * kernels/ops_cuda.c with bf16 GEMM weights (the only precision modelled):
 *   embed:  linear(patches) · +pos · linear(freq) · SiLU · linear · gather(class) · + · SiLU
 *   depth × [ linear(adaLN) · LN·mod · linear(qkv) · attention · linear(proj) · gate·res
 *             · LN·mod · router linear (fp32) · top-k · route · gate‖up · down
 *             · shared gate‖up · shared down · combine · gate·res ]
 *   final:  linear(adaLN) · LN·mod · linear(head)
 * where every bf16 linear is mk_f32_to_bf16 of its input, then cublasLtMatmul with the bias
 * epilogue. Each row's issued bytes are counted the way the kernel's code touches global
 * memory, load by load (the CUDA emulator's per-kernel count: test_perf_model checks them);
 * its HBM bytes are the unique bytes (re-reads assumed to hit L1/L2, which at these sizes
 * hold a layer's activations: 50 MB L2 on the H100).
 *
 * Time per launch = max(HBM bytes / HBM bandwidth, issued bytes / L2 bandwidth,
 * FLOPs / the unit's peak, shared-memory wavefronts / their rate, a minimum kernel time).
 * This ignores wave quantisation, occupancy and latency effects: it is a floor for each
 * kernel as written, not a promise. */
#include "perf_model.h"
#include "moire.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* H100 SXM5 (80 GB HBM3). Sources: the H100 datasheet (3.35 TB/s HBM3, 989 TFLOP/s dense
 * bf16 tensor, 67 TFLOP/s fp32, 132 SMs, 1.98 GHz boost, PCIe Gen5 x16); issue 16's
 * working figures (3.0 TB/s sustained HBM, ≈ 700 TFLOP/s bf16 from cuBLASLt in practice).
 * Assumptions, to be replaced by measurements (tools/gpu-check.sh, nsys):
 *  - L2 5.5 TB/s: published microbenchmarks of the H100's L2 read bandwidth are 5.5-7 TB/s;
 *    the lower figure is used.
 *  - mma.sync 350 TFLOP/s: Hopper's full rate needs wgmma; mma.sync kernels top out near
 *    FlashAttention-2's ≈ 350 TFLOP/s on the H100 (FlashAttention-3 paper, arXiv 2407.08608).
 *  - shared memory: one 32-lane wavefront (a 4-byte LDS or a SHFL) per SM per clock.
 *  - launch costs: ≈ 3 µs of host time per kernel launch and 5 µs per cublasLtMatmul
 *    (cached plan), 1 µs of device idle between queued kernels, 0.5 µs inside a graph,
 *    2.5 µs minimum per kernel, 15 µs per step for the result download and its wait;
 *    PCIe at 40 GB/s for the per-step uploads. */
static const moire_perf_device h100_sxm = {
    .name = "H100 SXM (model)",
    .hbm_bytes_per_s = 3.0e12,
    .l2_bytes_per_s = 5.5e12,
    .pcie_bytes_per_s = 40e9,
    .cublaslt_flops = 700e12,
    .mma_flops = 350e12,
    .simt_flops = 67e12,
    .smem_wavefronts_per_s = 132 * 1.98e9,
    .min_kernel_s = 2.5e-6,
    .eager_gap_s = 1.0e-6,
    .graph_gap_s = 0.5e-6,
    .host_launch_s = 3.0e-6,
    .host_cublaslt_s = 5.0e-6,
    .host_sync_s = 15e-6,
};

moire_perf_shape perf_shape_for_bench(const moire_bench_geometry *g, int resolution,
                                      int batch)
{
    moire_perf_shape s;
    memset(&s, 0, sizeof s);
    s.depth = g->depth, s.hidden = g->hidden, s.heads = g->heads;
    s.experts = g->experts, s.top_k = g->top_k;
    s.expert_hidden = 4 * g->hidden, s.shared_hidden = 2 * g->hidden;
    s.images = 2 * batch;
    s.tokens = (resolution / 16) * (resolution / 16); /* latents /8, patch 2 */
    s.patch_dim = 4 * 2 * 2;
    s.head_out = 2 * 2 * (g->rectified_flow ? 4 : 8); /* S/B learn sigma: 8 channels */
    s.qk_norm = g->rectified_flow;
    s.bf16 = true;
    return s;
}

const moire_perf_device *perf_h100_sxm(void)
{
    return &h100_sxm;
}

/* The rows being built; rows past `capacity` are counted but not stored. Per-launch figures
 * are accumulated, then multiplied by the launch count at the end (moire_perf_kernel holds
 * per-step totals). A kernel that appears twice with the same name and shape (the two
 * LayerNorms of a block) is one row with twice the launches. */
typedef struct builder {
    moire_perf_kernel *rows;
    int capacity, count;
} builder;

static moire_perf_kernel *add(builder *b, const char *op, const char *kernel,
                              moire_perf_unit unit, int64_t launches)
{
    static moire_perf_kernel sink;
    b->count++;
    moire_perf_kernel *r = b->count <= b->capacity ? &b->rows[b->count - 1] : &sink;
    memset(r, 0, sizeof *r);
    r->op = op, r->kernel = kernel, r->unit = unit, r->launches = launches;
    return r;
}

/* Scale a row's per-launch figures to the step. */
static void per_step(moire_perf_kernel *r)
{
    const double n = (double)r->launches;
    r->bytes_read *= n, r->bytes_written *= n, r->hbm_bytes *= n, r->flops *= n;
    r->smem_wavefronts *= n;
}

static double ceil_div(double a, double b)
{
    return (double)(((int64_t)a + (int64_t)b - 1) / (int64_t)b);
}

/* mk_f32_to_bf16 of `count` floats: one 4-byte read, one 2-byte write each. */
static void f32_to_bf16(builder *b, const char *op, int64_t launches, double count)
{
    moire_perf_kernel *r = add(b, op, "f32_to_bf16_kernel", MOIRE_PERF_SIMT, launches);
    r->bytes_read = 4 * count, r->bytes_written = 2 * count;
    r->hbm_bytes = 6 * count;
    per_step(r);
}

/* y[M,N] = x[M,K]·w[N,K]ᵀ + b through cublasLtMatmul (m = N, n = M, k = K): the emulator's
 * reference counts A and B once in the input type and D once in fp32 (not the bias). */
static void lt_linear(builder *b, const char *op, int64_t launches, double M, double K,
                      double N, bool bf16_in)
{
    moire_perf_kernel *r = add(b, op, bf16_in ? "cublasLtMatmul (bf16)" : "cublasLtMatmul (fp32)",
                               MOIRE_PERF_CUBLASLT, launches);
    const double in = bf16_in ? 2 : 4;
    r->bytes_read = (N * K + K * M) * in;
    r->bytes_written = M * N * 4;
    r->hbm_bytes = r->bytes_read + r->bytes_written + N * 4;
    r->flops = 2 * M * N * K;
    per_step(r);
}

/* A bf16 linear as ops_cuda.c's linear_rows runs it (or, with bf16 activations expected,
 * the GEMM alone). */
static void linear(builder *b, const moire_perf_shape *s, const char *op, int64_t launches,
                   double M, double K, double N)
{
    if (!s->bf16_activations)
        f32_to_bf16(b, op, launches, M * K);
    lt_linear(b, op, launches, M, K, N, true);
}

/* layernorm_modulate_kernel over R = n·T rows: mk_row_stats reads the row twice, the
 * apply reads it again with shift and scale; one write. */
static void layernorm_modulate(builder *b, const char *op, int64_t launches, double n,
                               double R, double D)
{
    moire_perf_kernel *r = add(b, op, "layernorm_modulate_kernel", MOIRE_PERF_SIMT, launches);
    r->bytes_read = R * D * 4 * 5;
    r->bytes_written = R * D * 4;
    r->hbm_bytes = R * D * 4 * 2 + n * 2 * D * 4;
    r->flops = R * D * 8;
    per_step(r);
}

/* gate_residual_kernel: x += gate ⊙ y (count = n·T·D); y_rows = the rows y has (T when it
 * is broadcast over the images, y_stride 0). */
static void gate_residual(builder *b, const char *op, int64_t launches, double count,
                          double y_count, double gate_count)
{
    moire_perf_kernel *r = add(b, op, "gate_residual_kernel", MOIRE_PERF_SIMT, launches);
    r->bytes_read = count * (8 + (gate_count > 0 ? 4 : 0));
    r->bytes_written = count * 4;
    r->hbm_bytes = count * 8 + y_count * 4 + gate_count * 4;
    r->flops = count * 2;
    per_step(r);
}

/* The rows of expert e when P pairs are spread evenly over E experts (the model's routing
 * assumption; random routers at the XL batch are close to it). */
static double expert_rows(double P, int E, int e)
{
    const int64_t p = (int64_t)P;
    return (double)(p / E + (e < p % E ? 1 : 0));
}

#define MMA_BM 128
#define MMA_BN 128
#define MMA_WARPS 8

/* One moe_mma_kernel launch (kernels/moe_mma.cu), grouped (E experts, P pairs from
 * mk_moe_route) or dense (E = 1, offsets NULL, P rows). K, N as in the kernel (gate‖up:
 * K = D, N = F; down: K = F, N = D). a_elem: 4 (fp32 A) or 2 (bf16 A); out_elem likewise. */
static void moe_mma(builder *b, const moire_perf_shape *s, const char *op, const char *kernel,
                    bool expected, int64_t launches, bool grouped, bool dual, int E, double P,
                    double K, double N, double a_elem, double out_elem)
{
    moire_perf_kernel *r = add(b, op, kernel, MOIRE_PERF_MMA, launches);
    r->expected = expected;
    const double grid_x = ceil_div(N, MMA_BN);
    double tiles = 0; /* 128-row tiles that do work */
    for (int e = 0; e < (grouped ? E : 1); e++)
        tiles += ceil_div(grouped ? expert_rows(P, E, e) : P, MMA_BM);
    const double w_rows = dual ? 2 * N : N;
    double read = 0;
    if (grouped) {
        /* the grid: min(max_tiles, ⌊(max_tiles + E) / 2⌋), max_tiles = ⌈P/64⌉ + E; every
           block's 8 warps each scan offsets[x], offsets[x + 1] for the experts (E ≤ 32
           here), so that the tile lookup needs no shared memory */
        const double max_tiles = ceil_div(P, 64) + E;
        const double half = (double)(((int64_t)max_tiles + E) / 2);
        const double grid_y = max_tiles < half ? max_tiles : half;
        read += grid_x * grid_y * MMA_WARPS * 8.0 * E;
        if (dual)
            read += grid_x * P * 4; /* sorted_token, one int per row per block */
    }
    read += grid_x * P * K * a_elem;   /* A rows, once per 128-column N-tile    */
    read += tiles * w_rows * K * 2;    /* the weights, once per 128-row M-tile  */
    r->bytes_read = read;
    r->bytes_written = P * N * out_elem;
    r->hbm_bytes = P * K * a_elem + (grouped ? E : 1) * w_rows * K * 2 + r->bytes_written;
    r->flops = tiles * MMA_BM * K * w_rows * 2;
    per_step(r);
}

/* attention_small_kernel<NV> (kernels/attention.cu): a block = 16 query rows of one head of
 * one image; K/V rows stream through shared memory 32 at a time (with qk-norm: the K row's
 * LayerNorm redone per block, reading the norm weights again). */
static void attention_simt(builder *b, const moire_perf_shape *s, int64_t launches)
{
    static const char *const names[] = {"attention_small_kernel<1>", "attention_small_kernel<2>",
                                        "attention_small_kernel<3>", "attention_small_kernel<4>"};
    const double n = s->images, T = s->tokens, H = s->heads, hd = s->hidden / s->heads;
    const int nv = (int)ceil_div(hd, 32);
    moire_perf_kernel *r = add(b, "block: attention (SIMT)", names[nv - 1], MOIRE_PERF_SIMT,
                               launches);
    const double norm = s->qk_norm ? 2 : 0;
    const double q_blocks = ceil_div(T, 16), k_tiles = ceil_div(T, 32);
    r->bytes_read = n * H * (T * hd * 4 * (1 + norm) + q_blocks * T * hd * 4 * (2 + norm));
    r->bytes_written = n * T * H * hd * 4;
    r->hbm_bytes = n * T * 3 * H * hd * 4 + r->bytes_written;
    r->flops = n * H * (q_blocks * 16) * (k_tiles * 32) * hd * 4;
    /* per query row and key tile: the score loop (q broadcast + k row: 2 wavefronts per d),
       max and sum (10 shuffles), P·V (32 × (1 shuffle + NV loads)); per key tile and block:
       the K/V rows into shared memory (2·NV stores, + 10 shuffles with the norm). */
    r->smem_wavefronts = n * H * q_blocks * k_tiles *
                         (16 * (2 * hd + 10 + 32.0 * (nv + 1)) + 32 * (2.0 * nv + 5 * norm));
    per_step(r);
}

/* The tensor-core flash attention (kernels/attention_mma.cu), which ops_cuda.c runs with bf16
 * weights for head sizes up to 128; two launches:
 *  - attention_pack_kernel: each (token, head) row of q, k and v read once (q and k
 *    LayerNormed here, reading the norm weights again per row), written as bf16 [n, H, T, HP],
 *    HP = hd rounded up to 16;
 *  - flash_attention_kernel<HP>: a block = 64 query rows of one head of one image; Q read
 *    once, all of K and V once per query block (cp.async), mma.sync; out fp32.
 * With bf16_activations the pack reads bf16. */
static void attention_flash(builder *b, const moire_perf_shape *s, int64_t launches)
{
    const double n = s->images, T = s->tokens, H = s->heads, hd = s->hidden / s->heads;
    const double in = s->bf16_activations ? 2 : 4;
    const double HP = ceil_div(hd, 16) * 16, norm = s->qk_norm ? 2 : 0;
    moire_perf_kernel *r = add(b, "block: attention pack", "attention_pack_kernel",
                               MOIRE_PERF_SIMT, launches);
    r->bytes_read = n * T * H * (3 * hd * in + norm * 2 * hd * 4);
    r->bytes_written = 3 * n * T * H * HP * 2;
    r->hbm_bytes = n * T * H * 3 * hd * in + r->bytes_written;
    r->flops = n * T * H * hd * 2 * 8;
    per_step(r);

    static char name[48];
    snprintf(name, sizeof name, "flash_attention_kernel<%d>", (int)HP);
    r = add(b, "block: attention flash", name, MOIRE_PERF_MMA, launches);
    const double q_blocks = ceil_div(T, 64);
    r->bytes_read = n * H * (T * HP * 2 + q_blocks * T * HP * 2 * 2);
    r->bytes_written = n * T * H * hd * 4;
    r->hbm_bytes = 3 * n * H * T * HP * 2 + r->bytes_written;
    r->flops = n * H * (q_blocks * 64) * (ceil_div(T, 64) * 64) * HP * 4;
    per_step(r);
}

int perf_step_kernels(const moire_perf_shape *s, moire_perf_kernel *rows, int capacity)
{
    builder b = {rows, capacity, 0};
    const double n = s->images, T = s->tokens, N = n * T, D = s->hidden;
    const double E = s->experts, k = s->top_k, F = s->expert_hidden, S = s->shared_hidden;
    const double P = N * k;
    const int64_t L = s->depth;
    const double a16 = s->bf16_activations;

    /* The per-step uploads (patches, positions, timestep frequencies, class ids) and the
       result's download: pinned staging + cudaMemcpyAsync. */
    moire_perf_kernel *copy = add(&b, "copies: inputs up, result down", "memcpy", MOIRE_PERF_COPY, 5);
    copy->hbm_bytes = (N * s->patch_dim + T * D + n * 256 + n) * 4 + N * s->head_out * 4;

    /* embed */
    linear(&b, s, "embed: patch linear", 1, N, s->patch_dim, D);
    gate_residual(&b, "embed: + positions", 1, N * D, T * D, 0);
    linear(&b, s, "embed: timestep MLP in", 1, n, 256, D);
    {
        moire_perf_kernel *r = add(&b, "embed: SiLU (×2)", "silu_kernel", MOIRE_PERF_SIMT, 2);
        r->bytes_read = n * D * 4, r->bytes_written = n * D * 4, r->hbm_bytes = 8 * n * D;
        per_step(r);
    }
    linear(&b, s, "embed: timestep MLP out", 1, n, D, D);
    {
        moire_perf_kernel *r = add(&b, "embed: class rows", "gather_rows_kernel", MOIRE_PERF_SIMT, 1);
        r->bytes_read = n * D * 8, r->bytes_written = n * D * 4, r->hbm_bytes = n * D * 8;
        per_step(r);
    }
    gate_residual(&b, "embed: c = t + y", 1, n * D, n * D, 0);

    /* blocks */
    linear(&b, s, "block: adaLN linear", L, n, D, 6 * D);
    layernorm_modulate(&b, "block: LN·modulate (×2)", 2 * L, n, N, D);
    linear(&b, s, "block: qkv linear", L, N, D, 3 * D);
    if (s->bf16 && s->hidden / s->heads <= 128) /* ops_cuda.c's choice (cuda_attention) */
        attention_flash(&b, s, L);
    else
        attention_simt(&b, s, L);
    linear(&b, s, "block: proj linear", L, N, D, D);
    gate_residual(&b, "block: gate·residual (×2)", 2 * L, N * D, N * D, n * D);
    lt_linear(&b, "block: router linear (fp32)", L, N, D, E, false);
    {
        moire_perf_kernel *r = add(&b, "block: router softmax·top-k", "router_topk_kernel",
                                   MOIRE_PERF_SIMT, L);
        r->bytes_read = N * E * 8, r->bytes_written = N * k * 8;
        r->hbm_bytes = N * E * 4 + N * k * 8;
        per_step(r);
    }
    {
        moire_perf_kernel *r = add(&b, "block: route (1 block)", "moe_route_kernel",
                                   MOIRE_PERF_SIMT, L);
        r->bytes_read = 12 * P, r->bytes_written = 12 * P + 8 * (E + 1);
        r->hbm_bytes = r->bytes_read + r->bytes_written;
        per_step(r);
    }
    const char *gate_up = a16 ? "moe_mma_kernel<true, true, true>"
                              : "moe_mma_kernel<true, false, true>";
    moe_mma(&b, s, "block: experts gate‖up (mma)", gate_up, a16, L, true, true, (int)E, P, D, F,
            a16 ? 2 : 4, 2);
    moe_mma(&b, s, "block: experts down (mma)", "moe_mma_kernel<false, true, false>", false, L, true,
            false, (int)E, P, F, D, 2, 4);
    if (S > 0) {
        moe_mma(&b, s, "block: shared gate‖up (mma)", gate_up, a16, L, false, true, 1, N, D, S,
                a16 ? 2 : 4, 2);
        moe_mma(&b, s, "block: shared down (mma)", "moe_mma_kernel<false, true, false>", false, L,
                false, false, 1, N, S, D, 2, 4);
    }
    {
        moire_perf_kernel *r = add(&b, "block: combine", "moe_combine_kernel", MOIRE_PERF_SIMT, L);
        r->bytes_read = N * D * (S > 0 ? 4 : 0) + N * D * k * 12;
        r->bytes_written = N * D * 4;
        r->hbm_bytes = N * D * (S > 0 ? 4 : 0) + P * D * 4 + P * 8 + N * D * 4;
        r->flops = N * D * k * 2;
        per_step(r);
    }

    /* final layer */
    linear(&b, s, "final: adaLN linear", 1, n, D, 2 * D);
    layernorm_modulate(&b, "final: LN·modulate", 1, n, N, D);
    linear(&b, s, "final: head linear", 1, N, D, s->head_out);
    return b.count;
}

double perf_kernel_seconds(const moire_perf_kernel *r, const moire_perf_device *d)
{
    if (r->launches <= 0)
        return 0.0;
    const double n = (double)r->launches;
    if (r->unit == MOIRE_PERF_COPY)
        return n * d->min_kernel_s + r->hbm_bytes / d->pcie_bytes_per_s;
    const double peak = r->unit == MOIRE_PERF_MMA        ? d->mma_flops
                        : r->unit == MOIRE_PERF_CUBLASLT ? d->cublaslt_flops
                                                         : d->simt_flops;
    double t = d->min_kernel_s;
    const double terms[] = {
        r->hbm_bytes / n / d->hbm_bytes_per_s,
        (r->bytes_read + r->bytes_written) / n / d->l2_bytes_per_s,
        r->flops / n / peak,
        r->smem_wavefronts / n / d->smem_wavefronts_per_s,
    };
    for (size_t i = 0; i < sizeof terms / sizeof *terms; i++)
        t = terms[i] > t ? terms[i] : t;
    return n * t;
}

void perf_step_time(const moire_perf_kernel *rows, int count,
                    const moire_perf_device *d, moire_perf_step *out)
{
    memset(out, 0, sizeof *out);
    double host = 0.0;
    for (int i = 0; i < count; i++) {
        const moire_perf_kernel *r = &rows[i];
        const double t = perf_kernel_seconds(r, d);
        out->device_s += t;
        out->hbm_bytes += r->hbm_bytes;
        out->flops += r->flops;
        if (r->unit == MOIRE_PERF_COPY) {
            out->other_s += t;
            host += (double)r->launches * d->host_launch_s;
            continue;
        }
        out->launches += r->launches;
        host += (double)r->launches *
                (r->unit == MOIRE_PERF_CUBLASLT ? d->host_cublaslt_s : d->host_launch_s);
        if (strstr(r->op, "attention"))
            out->attention_s += t;
        else if (r->unit == MOIRE_PERF_MMA)
            out->experts_s += t;
        else if (r->unit == MOIRE_PERF_CUBLASLT)
            out->cublaslt_s += t;
        else
            out->other_s += t;
    }
    const double eager_device = out->device_s + (double)out->launches * d->eager_gap_s;
    out->eager_s = (eager_device > host ? eager_device : host) + d->host_sync_s;
    out->graph_s = out->device_s + (double)out->launches * d->graph_gap_s + d->host_sync_s;
}
