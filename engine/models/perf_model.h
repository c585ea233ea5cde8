/* perf_model.h — a performance model of one DiT-MoE sampling step on the CUDA backend
 * (issue 16, docs/PERFORMANCE.md): the step's kernel sequence, as kernels/ops_cuda.c issues
 * it, with each kernel's global-memory traffic, unique (HBM) bytes and FLOPs computed from
 * the kernel's code, and a roofline time per kernel on a given device.
 *
 * The issued bytes are exactly what the CUDA emulator counts (tests/cuda-emu, per kernel
 * name), and tests/gpu/test_perf_model.c holds the two together on small shapes, so the
 * model cannot silently drift from the kernels. The unique bytes, the device figures and the
 * launch costs are assumptions, written down in perf_model.c and docs/PERFORMANCE.md.
 * Internal to the engine and its tools. */
#ifndef MOIRE_PERF_MODEL_H
#define MOIRE_PERF_MODEL_H

#include <stdbool.h>
#include <stdint.h>

/* Which execution unit bounds a kernel's arithmetic. */
typedef enum moire_perf_unit {
    MOIRE_PERF_SIMT,     /* CUDA-core fp32 kernels (elementwise, LayerNorm, SIMT attention) */
    MOIRE_PERF_MMA,      /* the project's mma.sync m16n8k16 kernels (moe_mma.cu)            */
    MOIRE_PERF_CUBLASLT, /* cuBLASLt GEMMs (wgmma on sm_90)                                 */
    MOIRE_PERF_COPY,     /* host ↔ device copies over PCIe                                  */
} moire_perf_unit;

/* One forward of a DiT-MoE over a CFG batch. */
typedef struct moire_perf_shape {
    int depth, hidden, heads, experts, top_k;
    int expert_hidden, shared_hidden; /* F (4·D) and S (2·D, 0 = no shared expert)       */
    int images;                       /* forward batch n: 2 × images per step with CFG   */
    int tokens;                       /* T per image: (resolution / 16)²                 */
    int patch_dim;                    /* in_channels · p²                                */
    int head_out;                     /* p² · out_channels                               */
    bool qk_norm;                     /* XL/G layout: per-head LayerNorm of q and k      */
    bool bf16;                        /* bf16 GEMM weights (MOIRE_CUDA_PRECISION=bf16)   */
    /* Expected kernels, not written yet (rows marked `expected`): */
    bool bf16_activations; /* h handed to the experts and to cuBLASLt in bf16: no f32→bf16
                              passes, the gate‖up A operand in bf16 (moe_mma A_BF16)      */
} moire_perf_shape;

/* One row of the step: a kernel, how often it runs, and what one step of it costs. */
typedef struct moire_perf_kernel {
    const char *op;     /* where in the step: "block: qkv linear"                          */
    const char *kernel; /* the kernel's name as the CUDA emulator reports it               */
    moire_perf_unit unit;
    bool expected;      /* a kernel not in the tree yet, modelled from its design          */
    int64_t launches;   /* per step                                                        */
    double bytes_read, bytes_written; /* global traffic as issued (= the emulator's count) */
    double hbm_bytes;   /* of which unique, i.e. what HBM must serve (estimate)            */
    double flops;       /* as executed (padded tiles included)                             */
    double smem_wavefronts; /* shared-memory / shuffle wavefronts (SIMT attention)         */
} moire_perf_kernel;

/* A device's figures (all per second). */
typedef struct moire_perf_device {
    const char *name;
    double hbm_bytes_per_s, l2_bytes_per_s, pcie_bytes_per_s;
    double cublaslt_flops, mma_flops, simt_flops;
    double smem_wavefronts_per_s; /* one 32-lane shared-memory wavefront per SM per clock */
    double min_kernel_s;          /* the shortest a kernel takes (launch, one wave, drain) */
    double eager_gap_s;           /* device idle between two queued kernels                */
    double graph_gap_s;           /* the same inside a replayed CUDA graph                 */
    double host_launch_s;         /* host time to issue one kernel launch                  */
    double host_cublaslt_s;       /* host time to issue one cublasLtMatmul                 */
    double host_sync_s;           /* the result download's wait and the call overheads     */
} moire_perf_device;

/* The shape of `moire bench`'s model of geometry g (engine/models/bench.c: F = 4·D, S = 2·D,
 * patch 2, 4 latent channels) at resolution² pixels with batch images and CFG (2·batch
 * images per forward), bf16 weights. */
struct moire_bench_geometry;
moire_perf_shape perf_shape_for_bench(const struct moire_bench_geometry *g,
                                      int resolution, int batch);

/* The H100 SXM figures the tables use (sources in perf_model.c). */
const moire_perf_device *perf_h100_sxm(void);

/* The step's kernels, in order of first appearance (per-block kernels once, launches ×
 * depth). Writes at most `capacity` rows; returns how many the step has. */
int perf_step_kernels(const moire_perf_shape *shape, moire_perf_kernel *rows,
                      int capacity);

/* Seconds for all of a row's launches: launches × max(HBM, L2, arithmetic, shared-memory
 * time, the minimum kernel time), each term from the row's per-launch figures. */
double perf_kernel_seconds(const moire_perf_kernel *row, const moire_perf_device *device);

typedef struct moire_perf_step {
    int64_t launches;     /* kernels + cuBLASLt calls                                     */
    double device_s;      /* Σ kernel seconds (copies included)                           */
    double eager_s;       /* today: stream launches, max(device + gaps, host issue) + sync */
    double graph_s;       /* one CUDA graph per step: device + graph gaps + sync          */
    double hbm_bytes, flops;
    double attention_s, experts_s, cublaslt_s, other_s; /* device_s by kind               */
} moire_perf_step;

void perf_step_time(const moire_perf_kernel *rows, int count,
                    const moire_perf_device *device, moire_perf_step *out);

#endif /* MOIRE_PERF_MODEL_H */
