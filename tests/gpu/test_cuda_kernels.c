/* test_cuda_kernels.c — every launcher of kernels/kernels.h added for the EC-DiT, text-encoder
 * and VAE ops (and the batched forms of the DiT ones), called directly, against a plain C
 * reference written here with the CPU code's semantics (engine/ops_cpu.c, text_encoder.c,
 * vae.c, classifier.c), on fresh random inputs (never zeros) and awkward shapes: hidden
 * 1152 and 1408, head sizes 1/18/72/88/128/200/512, 1..4096 keys, up to 16384 queries,
 * expert choice with tied (duplicate) tokens, a short last group, C clamped to the group,
 * groups above the shared-memory sort, experts taking 0/1/all tokens, > 1024 (token, expert)
 * pairs, GroupNorm of 512×64×64 in 32 groups. Reductions are also run twice and compared
 * bit for bit (the kernels use no float atomics).
 *
 * Tolerance: relative L2 error ≤ 1e-5 (≤ 1e-2 with bf16 expert weights); index outputs and
 * pure data movement exactly. Exits 77 (skip) when no CUDA device is visible; under the CUDA
 * emulator (tests/cuda-emu) there always is one. The largest shapes are left out when
 * MOIRE_KERNELS_TEST_QUICK=1, and by default on the emulator (built with MOIRE_CUDA_EMU: it
 * runs every GPU thread on the CPU), where MOIRE_KERNELS_TEST_QUICK=0 brings them back.
 *
 * The tensor-core cases come first (mma.cuh fragment layouts; moe_mma.cu's GEMMs vs fp32, vs
 * the SIMT kernels and, for the bf16-act pair, bit for bit; attention_mma.cu's flash attention
 * vs the double reference at tolerance 1e-2; under the emulator also the bytes gate_up and
 * flash attention read and write). MOIRE_KERNELS_TEST_ONLY=mma stops after them;
 * MOIRE_KERNELS_TEST_ONLY=flash runs only the fragment and attention ones.
 */
/* By path, so that no build needs kernels/ on its include path for this one header (the gpu
 * suite and the emulator's gpu-emu suite both build this file). */
#include "../../kernels/kernels.h"
#include "test_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOIRE_CUDA_EMU
#include "cuda_emu.h" /* global-memory traffic per kernel (test_moe_mma_traffic) */
#endif

static bool quick; /* MOIRE_KERNELS_TEST_QUICK: skip the largest shapes */

/* ---- device helpers ------------------------------------------------------------------- */

#define CUDA_CHECK(call)                                                                   \
    do {                                                                                   \
        cudaError_t err_ = (call);                                                         \
        CHECK(err_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(err_));             \
    } while (0)

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 4);
    CHECK(err == cudaSuccess, "cudaMalloc(%zu): %s", bytes, cudaGetErrorString(err));
    return p;
}

static void *dev_copy(const void *host, size_t bytes)
{
    void *p = dev_alloc(bytes);
    if (p && bytes)
        CUDA_CHECK(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice));
    return p;
}

/* Waits for the launches, then a host copy of `bytes` at `d` (caller frees). */
static void *dev_back(const void *d, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 4);
    CUDA_CHECK(cudaDeviceSynchronize());
    if (bytes)
        CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
    return h;
}

static void dev_free(void *p)
{
    if (p)
        CUDA_CHECK(cudaFree(p));
}

/* A launcher's own result (the launch error) is a check of its own. */
#define LAUNCH_OK(call) CUDA_CHECK(call)

static float *rnd(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc((n ? n : 1) * sizeof(float));
    test_fill_random(x, (int64_t)n, seed, lo, hi);
    return x;
}

static float *dev_rnd(size_t n, uint64_t seed, float lo, float hi, float **host)
{
    float *h = rnd(n, seed, lo, hi);
    float *d = dev_copy(h, n * sizeof(float));
    if (host)
        *host = h;
    else
        free(h);
    return d;
}

static void check_bits(const char *label, const void *a, const void *b, size_t bytes)
{
    const bool same = memcmp(a, b, bytes) == 0;
    CHECK(same, "%s: two runs differ", label);
    printf("%s %-44s bit-identical run to run\n", same ? "OK    " : "NOT OK", label);
}

static void check_ints(const char *label, const int32_t *got, const int32_t *want, int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            bad++;
            if (first < 0)
                first = i;
        }
    CHECK(bad == 0, "%s: %lld of %lld differ (first at %lld: %d vs %d)", label, (long long)bad,
          (long long)n, (long long)first, first >= 0 ? got[first] : 0,
          first >= 0 ? want[first] : 0);
    printf("%s %-44s exact (%lld)\n", bad ? "NOT OK" : "OK    ", label, (long long)n);
}

static float silu_ref(float v)
{
    return v / (1.0f + expf(-v));
}

/* ---- batched LayerNorm·modulate, gate·residual ---------------------------------------- */

/* Rows normalised with double statistics (ops_cpu.c). */
static void layernorm_row_ref(float *out, const float *x, int D, float eps)
{
    double sum = 0.0, sq = 0.0;
    for (int d = 0; d < D; d++)
        sum += x[d];
    const double mean = sum / D;
    for (int d = 0; d < D; d++)
        sq += (x[d] - mean) * (x[d] - mean);
    const double inv = 1.0 / sqrt(sq / D + (double)eps);
    for (int d = 0; d < D; d++)
        out[d] = (float)((x[d] - mean) * inv);
}

static void test_layernorm_modulate_n(int n, int T, int D, int64_t mod_stride, bool in_place)
{
    const size_t count = (size_t)n * T * D;
    const size_t mod_count = (size_t)(n - 1) * (size_t)mod_stride + (size_t)D;
    float *hx, *hshift, *hscale;
    float *x = dev_rnd(count, 11, -2, 3, &hx);
    float *shift = dev_rnd(mod_count, 12, -1, 1, &hshift);
    float *scale = dev_rnd(mod_count, 13, -1, 1, &hscale);
    float *y = in_place ? x : dev_alloc(count * sizeof(float));
    float *want = malloc(count * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++) {
            const size_t row = ((size_t)i * T + t) * D;
            layernorm_row_ref(want + row, hx + row, D, 1e-6f);
            for (int d = 0; d < D; d++)
                want[row + d] = want[row + d] * (1.0f + hscale[i * mod_stride + d]) +
                                hshift[i * mod_stride + d];
        }
    LAUNCH_OK(mk_layernorm_modulate_n(y, x, shift, scale, mod_stride, n, T, D, 1e-6f, 0));
    float *got = dev_back(y, count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "layernorm_modulate_n n%d T%d D%d%s", n, T, D,
             in_place ? " in place" : "");
    test_check_tensor(name, got, want, (int64_t)count, 1e-5);
    free(hx), free(hshift), free(hscale), free(want), free(got);
    if (!in_place)
        dev_free(y);
    dev_free(x), dev_free(shift), dev_free(scale);
}

/* gate·residual rounds like C (product, then sum): compared bit for bit. */
static void test_gate_residual_n(int n, int T, int D, int64_t y_stride, bool with_gate)
{
    const size_t count = (size_t)n * T * D;
    const size_t y_count = (size_t)(n - 1) * (size_t)y_stride + (size_t)T * D;
    const int64_t gate_stride = 3 * (int64_t)D;
    float *hx, *hy, *hg;
    float *x = dev_rnd(count, 21, -1, 1, &hx);
    float *y = dev_rnd(y_count, 22, -1, 1, &hy);
    float *g = dev_rnd((size_t)n * gate_stride, 23, -2, 2, &hg);
    float *want = malloc(count * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++)
            for (int d = 0; d < D; d++) {
                const size_t at = ((size_t)i * T + t) * D + d;
                const float yv = hy[i * y_stride + (size_t)t * D + d];
                want[at] = with_gate ? hx[at] + hg[i * gate_stride + d] * yv : hx[at] + yv;
            }
    LAUNCH_OK(mk_gate_residual_n(x, y, y_stride, with_gate ? g : NULL, gate_stride, n, T, D, 0));
    float *got = dev_back(x, count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "gate_residual_n n%d T%d D%d y_stride %lld%s", n, T, D,
             (long long)y_stride, with_gate ? "" : " no gate");
    test_check_exact(name, got, want, (int64_t)count);
    free(hx), free(hy), free(hg), free(want), free(got);
    dev_free(x), dev_free(y), dev_free(g);
}

/* ---- attention ------------------------------------------------------------------------ */

/* out[Tq, H·hd] (row stride H·hd) = per head softmax(scale·q kᵀ) v over the first Tk keys,
 * scores in float, softmax sum in double (ops_cpu.c); q and k optionally LayerNormed per
 * head with affine. */
static void attention_ref(float *out, const float *q, int64_t ldq, const float *k,
                          const float *v, int64_t ldkv, int Tq, int Tk, int H, int hd,
                          const float *qw, const float *qb, const float *kw, const float *kb,
                          float eps)
{
    const float scale = 1.0f / sqrtf((float)hd);
    float *qh = malloc((size_t)hd * sizeof(float));
    float *kh = malloc((size_t)Tk * hd * sizeof(float));
    double *s = malloc((size_t)Tk * sizeof(double));
    for (int h = 0; h < H; h++) {
        for (int j = 0; j < Tk; j++) {
            float *kr = kh + (size_t)j * hd;
            memcpy(kr, k + (size_t)j * ldkv + (size_t)h * hd, (size_t)hd * sizeof(float));
            if (qw) {
                layernorm_row_ref(kr, kr, hd, eps);
                for (int d = 0; d < hd; d++)
                    kr[d] = kr[d] * kw[d] + kb[d];
            }
        }
        for (int t = 0; t < Tq; t++) {
            memcpy(qh, q + (size_t)t * ldq + (size_t)h * hd, (size_t)hd * sizeof(float));
            if (qw) {
                layernorm_row_ref(qh, qh, hd, eps);
                for (int d = 0; d < hd; d++)
                    qh[d] = qh[d] * qw[d] + qb[d];
            }
            double max = -INFINITY, sum = 0.0;
            for (int j = 0; j < Tk; j++) {
                double acc = 0.0;
                for (int d = 0; d < hd; d++)
                    acc += (double)qh[d] * kh[(size_t)j * hd + d];
                s[j] = acc * scale;
                max = s[j] > max ? s[j] : max;
            }
            for (int j = 0; j < Tk; j++) {
                s[j] = exp(s[j] - max);
                sum += s[j];
            }
            float *o = out + (size_t)t * H * hd + (size_t)h * hd;
            for (int d = 0; d < hd; d++) {
                double acc = 0.0;
                for (int j = 0; j < Tk; j++)
                    acc += s[j] * v[(size_t)j * ldkv + (size_t)h * hd + d];
                o[d] = (float)(acc / sum);
            }
        }
    }
    free(qh), free(kh), free(s);
}

static void test_attention_n(int n, int T, int H, int hd, bool qk_norm)
{
    const int D = H * hd;
    const size_t qkv_count = (size_t)n * T * 3 * D, out_count = (size_t)n * T * D;
    float *hqkv, *hqw, *hqb, *hkw, *hkb;
    float *qkv = dev_rnd(qkv_count, 31, -1.5f, 1.5f, &hqkv);
    float *qw = dev_rnd((size_t)hd, 32, 0.5f, 1.5f, &hqw), *qb = dev_rnd((size_t)hd, 33, -.2f, .2f, &hqb);
    float *kw = dev_rnd((size_t)hd, 34, 0.5f, 1.5f, &hkw), *kb = dev_rnd((size_t)hd, 35, -.2f, .2f, &hkb);
    float *out = dev_alloc(out_count * sizeof(float));
    float *want = malloc(out_count * sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *base = hqkv + (size_t)i * T * 3 * D;
        attention_ref(want + (size_t)i * T * D, base, 3 * D, base + D, base + 2 * D, 3 * D, T, T,
                      H, hd, qk_norm ? hqw : NULL, hqb, hkw, hkb, 1e-6f);
    }
    LAUNCH_OK(mk_attention_n(out, qkv, n, T, H, hd, qk_norm ? qw : NULL, qb, kw, kb, 1e-6f, 0));
    float *got = dev_back(out, out_count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "attention_n n%d T%d H%d hd%d%s", n, T, H, hd,
             qk_norm ? " qk-norm" : "");
    test_check_tensor(name, got, want, (int64_t)out_count, 1e-5);
    LAUNCH_OK(mk_attention_n(out, qkv, n, T, H, hd, qk_norm ? qw : NULL, qb, kw, kb, 1e-6f, 0));
    float *again = dev_back(out, out_count * sizeof(float));
    check_bits(name, got, again, out_count * sizeof(float));
    free(hqkv), free(hqw), free(hqb), free(hkw), free(hkb), free(want), free(got), free(again);
    dev_free(qkv), dev_free(qw), dev_free(qb), dev_free(kw), dev_free(kb), dev_free(out);
}

/* packed: q, k, v inside one [rows, 3D] buffer (the text encoder's self-attention); else
 * q [Tq, D + 5] and k, v interleaved in one [L, 2D + 3] buffer (odd strides on purpose).
 * Keys beyond Tk are filled with large values: a kernel that reads them fails the test. */
static void test_cross_attention(int Tq, int Tk, int L, int H, int hd, bool packed)
{
    const int D = H * hd;
    const int64_t ldq = packed ? 3 * D : D + 5, ldkv = packed ? 3 * D : 2 * D + 3;
    const int rows_q = packed ? L : Tq;
    float *hq = rnd((size_t)rows_q * ldq, 41, -2, 2);
    float *hkv = packed ? hq : rnd((size_t)L * ldkv, 42, -1, 1);
    for (int j = Tk; j < L; j++) /* padding the mask must hide */
        for (int64_t c = 0; c < ldkv; c++)
            if (!packed || c >= D)
                hkv[(size_t)j * ldkv + c] = 1e4f;
    const float *hk = packed ? hq + D : hkv, *hv = packed ? hq + 2 * D : hkv + D;
    float *q = dev_copy(hq, (size_t)rows_q * ldq * sizeof(float));
    float *kv = packed ? q : dev_copy(hkv, (size_t)L * ldkv * sizeof(float));
    const float *k = packed ? q + D : kv, *v = packed ? q + 2 * D : kv + D;
    const size_t out_count = (size_t)Tq * D;
    float *out = dev_alloc(out_count * sizeof(float));
    float *want = malloc(out_count * sizeof(float));
    attention_ref(want, hq, ldq, hk, hv, ldkv, Tq, Tk, H, hd, NULL, NULL, NULL, NULL, 0.0f);
    LAUNCH_OK(mk_cross_attention(out, q, (int)ldq, k, v, (int)ldkv, Tq, Tk, H, hd, 0));
    float *got = dev_back(out, out_count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "cross_attention Tq%d Tk%d/%d H%d hd%d%s", Tq, Tk, L, H, hd,
             packed ? " packed" : "");
    test_check_tensor(name, got, want, (int64_t)out_count, 1e-5);
    LAUNCH_OK(mk_cross_attention(out, q, (int)ldq, k, v, (int)ldkv, Tq, Tk, H, hd, 0));
    float *again = dev_back(out, out_count * sizeof(float));
    check_bits(name, got, again, out_count * sizeof(float));
    free(hq), free(want), free(got), free(again);
    if (!packed)
        free(hkv), dev_free(kv);
    dev_free(q), dev_free(out);
}

/* ---- attention on tensor cores (attention_mma.cu) -------------------------------------- */

/* Device memory filled with NaN: an output the kernel forgets to write fails the check. */
static float *dev_nan(size_t count)
{
    float *h = malloc((count ? count : 1) * sizeof(float));
    for (size_t i = 0; i < count; i++)
        h[i] = NAN;
    float *d = dev_copy(h, count * sizeof(float));
    free(h);
    return d;
}

/* mk_attention_n_mma against the double reference (bf16 tolerance 1e-2), then run again and
 * compared bit for bit. */
static void test_attention_mma(int n, int T, int H, int hd, bool qk_norm)
{
    const int D = H * hd;
    const size_t qkv_count = (size_t)n * T * 3 * D, out_count = (size_t)n * T * D;
    float *hqkv, *hqw, *hqb, *hkw, *hkb;
    float *qkv = dev_rnd(qkv_count, 131, -1.5f, 1.5f, &hqkv);
    float *qw = dev_rnd((size_t)hd, 132, 0.5f, 1.5f, &hqw), *qb = dev_rnd((size_t)hd, 133, -.2f, .2f, &hqb);
    float *kw = dev_rnd((size_t)hd, 134, 0.5f, 1.5f, &hkw), *kb = dev_rnd((size_t)hd, 135, -.2f, .2f, &hkb);
    float *out = dev_nan(out_count);
    /* workspace all-ones bits (bf16 NaN): padding the pack forgets to zero poisons the output */
    const size_t ws_bytes = mk_attention_mma_workspace(n, T, T, H, hd);
    void *ws = dev_alloc(ws_bytes);
    CUDA_CHECK(cudaMemset(ws, 0xff, ws_bytes));
    float *want = malloc(out_count * sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *base = hqkv + (size_t)i * T * 3 * D;
        attention_ref(want + (size_t)i * T * D, base, 3 * D, base + D, base + 2 * D, 3 * D, T, T,
                      H, hd, qk_norm ? hqw : NULL, hqb, hkw, hkb, 1e-6f);
    }
    LAUNCH_OK(mk_attention_n_mma(out, qkv, n, T, H, hd, qk_norm ? qw : NULL, qb, kw, kb, 1e-6f,
                                 ws, 0));
    float *got = dev_back(out, out_count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "attention_n_mma n%d T%d H%d hd%d%s", n, T, H, hd,
             qk_norm ? " qk-norm" : "");
    test_check_tensor(name, got, want, (int64_t)out_count, 1e-2);
    LAUNCH_OK(mk_attention_n_mma(out, qkv, n, T, H, hd, qk_norm ? qw : NULL, qb, kw, kb, 1e-6f,
                                 ws, 0));
    float *again = dev_back(out, out_count * sizeof(float));
    check_bits(name, got, again, out_count * sizeof(float));
    free(hqkv), free(hqw), free(hqb), free(hkw), free(hkb), free(want), free(got), free(again);
    dev_free(qkv), dev_free(qw), dev_free(qb), dev_free(kw), dev_free(kb), dev_free(out);
    dev_free(ws);
}

/* mk_cross_attention_mma, the layouts of test_cross_attention (padding keys past Tk hold
 * 1e4: a kernel that reads them fails). */
static void test_cross_attention_mma(int Tq, int Tk, int L, int H, int hd, bool packed)
{
    const int D = H * hd;
    const int64_t ldq = packed ? 3 * D : D + 5, ldkv = packed ? 3 * D : 2 * D + 3;
    const int rows_q = packed ? L : Tq;
    float *hq = rnd((size_t)rows_q * ldq, 141, -2, 2);
    float *hkv = packed ? hq : rnd((size_t)L * ldkv, 142, -1, 1);
    for (int j = Tk; j < L; j++)
        for (int64_t c = 0; c < ldkv; c++)
            if (!packed || c >= D)
                hkv[(size_t)j * ldkv + c] = 1e4f;
    const float *hk = packed ? hq + D : hkv, *hv = packed ? hq + 2 * D : hkv + D;
    float *q = dev_copy(hq, (size_t)rows_q * ldq * sizeof(float));
    float *kv = packed ? q : dev_copy(hkv, (size_t)L * ldkv * sizeof(float));
    const float *k = packed ? q + D : kv, *v = packed ? q + 2 * D : kv + D;
    const size_t out_count = (size_t)Tq * D;
    float *out = dev_nan(out_count);
    const size_t ws_bytes = mk_attention_mma_workspace(1, Tq, Tk, H, hd);
    void *ws = dev_alloc(ws_bytes);
    CUDA_CHECK(cudaMemset(ws, 0xff, ws_bytes)); /* NaN: see test_attention_mma */
    float *want = malloc(out_count * sizeof(float));
    attention_ref(want, hq, ldq, hk, hv, ldkv, Tq, Tk, H, hd, NULL, NULL, NULL, NULL, 0.0f);
    LAUNCH_OK(mk_cross_attention_mma(out, q, (int)ldq, k, v, (int)ldkv, Tq, Tk, H, hd, ws, 0));
    float *got = dev_back(out, out_count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "cross_attention_mma Tq%d Tk%d/%d H%d hd%d%s", Tq, Tk, L, H, hd,
             packed ? " packed" : "");
    test_check_tensor(name, got, want, (int64_t)out_count, 1e-2);
    free(hq), free(want), free(got);
    if (!packed)
        free(hkv), dev_free(kv);
    dev_free(q), dev_free(out), dev_free(ws);
}

/* What the tensor-core path refuses: hd past 128, no keys, no workspace. */
static void test_attention_mma_refusals(void)
{
    CHECK(mk_attention_mma_supported(72) && mk_attention_mma_supported(128) &&
              mk_attention_mma_supported(1) && !mk_attention_mma_supported(129) &&
              !mk_attention_mma_supported(512),
          "mk_attention_mma_supported: 1 ≤ hd ≤ 128");
    CHECK(mk_attention_mma_workspace(2, 256, 256, 16, 72) == (size_t)3 * 2 * 256 * 16 * 80 * 2,
          "workspace: q, k, v in bf16, hd 72 padded to 80");
    float dummy_ws[4];
    CHECK(mk_cross_attention_mma(NULL, NULL, 8, NULL, NULL, 8, 3, 0, 1, 8, dummy_ws, 0) ==
              cudaErrorInvalidValue,
          "mma attention over no keys must fail");
    CHECK(mk_attention_n_mma(NULL, NULL, 1, 4, 1, 200, NULL, NULL, NULL, NULL, 0, dummy_ws, 0) ==
              cudaErrorInvalidValue,
          "mma attention refuses hd 200");
    CHECK(mk_attention_n_mma(NULL, NULL, 1, 4, 1, 64, NULL, NULL, NULL, NULL, 0, NULL, 0) ==
              cudaErrorInvalidValue,
          "mma attention needs a workspace");
    LAUNCH_OK(mk_attention_n_mma(NULL, NULL, 0, 4, 1, 64, NULL, NULL, NULL, NULL, 0, NULL, 0));
    (void)cudaGetLastError();
}

/* ---- expert-choice router ------------------------------------------------------------- */

static int capacity_ref(int S, int E, float f)
{
    double c = ceil((double)S * (double)f / E);
    return c >= S ? S : (int)c;
}

typedef struct candidate {
    float score;
    int32_t token;
} candidate;

static int compare_candidates(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* cpu_router_expert_choice, sequentially. Returns M. */
static int64_t router_ec_ref(float *scores, int32_t *tokens, float *gates, const float *h,
                             const float *w, int n, int T, int group, int D, int E, float f)
{
    const int64_t N = (int64_t)n * T;
    double *logits = malloc((size_t)E * sizeof(double));
    for (int64_t t = 0; t < N; t++) {
        double max = -1.7976931348623157e308, sum = 0.0;
        for (int e = 0; e < E; e++) {
            double acc = 0.0;
            for (int d = 0; d < D; d++)
                acc += (double)h[t * D + d] * w[(size_t)e * D + d];
            logits[e] = acc;
            max = acc > max ? acc : max;
        }
        for (int e = 0; e < E; e++) {
            logits[e] = exp(logits[e] - max);
            sum += logits[e];
        }
        for (int e = 0; e < E; e++)
            scores[t * E + e] = (float)(logits[e] / sum);
    }
    free(logits);
    const int G = group <= 0 || group >= T ? T : group;
    int slots = 0;
    for (int start = 0; start < T; start += G)
        slots += capacity_ref(T - start < G ? T - start : G, E, f);
    const int64_t M = (int64_t)n * slots;
    candidate *cand = malloc((size_t)G * sizeof *cand);
    for (int image = 0; image < n; image++) {
        int64_t offset = (int64_t)image * slots;
        for (int start = 0; start < T; start += G) {
            const int S = T - start < G ? T - start : G, C = capacity_ref(S, E, f);
            const int64_t first = (int64_t)image * T + start;
            for (int e = 0; e < E; e++) {
                for (int s = 0; s < S; s++) {
                    cand[s].score = scores[(first + s) * E + e];
                    cand[s].token = (int32_t)(first + s);
                }
                qsort(cand, (size_t)S, sizeof *cand, compare_candidates);
                for (int c = 0; c < C; c++) {
                    tokens[e * M + offset + c] = cand[c].token;
                    gates[e * M + offset + c] = cand[c].score;
                }
            }
            offset += C;
        }
    }
    free(cand);
    return M;
}

/* duplicates: every 5th token is a copy of the token before it (exact score ties, which
 * the tie rule must break by token index the same way on both sides). */
static void test_router_expert_choice(int n, int T, int group, int D, int E, float f,
                                      bool duplicates)
{
    const int64_t N = (int64_t)n * T;
    float *hh = rnd((size_t)N * D, 51, -1, 1), *hw = rnd((size_t)E * D, 52, -0.2f, 0.2f);
    if (duplicates)
        for (int64_t t = 1; t < N; t += 5)
            memcpy(hh + t * D, hh + (t - 1) * D, (size_t)D * sizeof(float));
    const int G = group <= 0 || group >= T ? T : group;
    int64_t M_max = 0;
    for (int start = 0; start < T; start += G)
        M_max += capacity_ref(T - start < G ? T - start : G, E, f);
    M_max *= n;
    float *want_scores = malloc((size_t)N * E * sizeof(float));
    int32_t *want_tokens = malloc((size_t)(E * M_max + 1) * sizeof(int32_t));
    float *want_gates = malloc((size_t)(E * M_max + 1) * sizeof(float));
    const int64_t M = router_ec_ref(want_scores, want_tokens, want_gates, hh, hw, n, T, group, D,
                                    E, f);
    float *h = dev_copy(hh, (size_t)N * D * sizeof(float));
    float *w = dev_copy(hw, (size_t)E * D * sizeof(float));
    float *scores = dev_alloc((size_t)N * E * sizeof(float));
    int32_t *tokens = dev_alloc((size_t)(E * M + 1) * sizeof(int32_t));
    float *gates = dev_alloc((size_t)(E * M + 1) * sizeof(float));
    LAUNCH_OK(mk_router_expert_choice(scores, tokens, gates, h, w, n, T, group, D, E, f, 0));
    float *got_scores = dev_back(scores, (size_t)N * E * sizeof(float));
    int32_t *got_tokens = dev_back(tokens, (size_t)E * M * sizeof(int32_t));
    float *got_gates = dev_back(gates, (size_t)E * M * sizeof(float));
    char name[128];
    snprintf(name, sizeof name, "router_ec n%d T%d g%d D%d E%d f%.2g%s (M %lld)", n, T, group,
             D, E, f, duplicates ? " ties" : "", (long long)M);
    char label[160];
    snprintf(label, sizeof label, "%s scores", name);
    test_check_tensor(label, got_scores, want_scores, N * E, 1e-6);
    snprintf(label, sizeof label, "%s tokens", name);
    check_ints(label, got_tokens, want_tokens, E * M);
    snprintf(label, sizeof label, "%s gates", name);
    test_check_exact(label, got_gates, want_gates, E * M);
    LAUNCH_OK(mk_router_expert_choice(scores, tokens, gates, h, w, n, T, group, D, E, f, 0));
    float *again = dev_back(scores, (size_t)N * E * sizeof(float));
    int32_t *again_tokens = dev_back(tokens, (size_t)E * M * sizeof(int32_t));
    check_bits(name, got_scores, again, (size_t)N * E * sizeof(float));
    check_bits(name, got_tokens, again_tokens, (size_t)E * M * sizeof(int32_t));
    free(hh), free(hw), free(want_scores), free(want_tokens), free(want_gates);
    free(got_scores), free(got_tokens), free(got_gates), free(again), free(again_tokens);
    dev_free(h), dev_free(w), dev_free(scores), dev_free(tokens), dev_free(gates);
}

/* ---- expert-choice MoE ---------------------------------------------------------------- */

static uint16_t to_bf16(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* out[D] = down(SiLU(gate·x) ⊙ up·x) with gate_up [2F, D], down [D, F] (double sums). */
static void swiglu_ref(float *out, const float *x, const float *gate_up, const float *down,
                       int D, int F, float *act)
{
    for (int f = 0; f < F; f++) {
        double g = 0.0, u = 0.0;
        for (int d = 0; d < D; d++) {
            g += (double)x[d] * gate_up[(size_t)f * D + d];
            u += (double)x[d] * gate_up[(size_t)(F + f) * D + d];
        }
        act[f] = silu_ref((float)g) * (float)u;
    }
    for (int d = 0; d < D; d++) {
        double acc = 0.0;
        for (int f = 0; f < F; f++)
            acc += (double)act[f] * down[(size_t)d * F + f];
        out[d] = (float)acc;
    }
}

/* Each expert takes M distinct tokens (the first M of a random permutation of N; M = N: all
 * of them; M = 0: none). S = 0: no shared expert. */
static void test_moe_expert_choice(int N, int D, int F, int S, int E, int M, bool bf16)
{
    float *hh = rnd((size_t)N * D, 61, -1, 1);
    float *gu = rnd((size_t)E * 2 * F * D + 1, 62, -0.1f, 0.1f);
    float *dn = rnd((size_t)E * D * F + 1, 63, -0.1f, 0.1f);
    float *sgu = rnd((size_t)2 * S * D + 1, 64, -0.1f, 0.1f);
    float *sdn = rnd((size_t)D * S + 1, 65, -0.1f, 0.1f);
    float *hgates = rnd((size_t)E * M + 1, 66, 0.05f, 1.0f);
    int32_t *htokens = malloc((size_t)(E * M + 1) * sizeof(int32_t));
    int32_t *perm = malloc((size_t)N * sizeof(int32_t));
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int e = 0; e < E; e++) {
        for (int t = 0; t < N; t++)
            perm[t] = t;
        for (int t = N - 1; t > 0; t--) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            const int j = (int)(state % (uint64_t)(t + 1));
            const int32_t tmp = perm[t];
            perm[t] = perm[j], perm[j] = tmp;
        }
        memcpy(htokens + (size_t)e * M, perm, (size_t)M * sizeof(int32_t));
    }
    /* reference: experts in id order, then the shared expert (cpu_moe_expert_choice) */
    float *want = calloc((size_t)N * D, sizeof(float));
    float *row = malloc((size_t)D * sizeof(float));
    float *act = malloc((size_t)(F > S ? F : S) * sizeof(float) + 4);
    for (int e = 0; e < E; e++)
        for (int j = 0; j < M; j++) {
            const int32_t t = htokens[(size_t)e * M + j];
            swiglu_ref(row, hh + (size_t)t * D, gu + (size_t)e * 2 * F * D,
                       dn + (size_t)e * D * F, D, F, act);
            for (int d = 0; d < D; d++)
                want[(size_t)t * D + d] += hgates[(size_t)e * M + j] * row[d];
        }
    if (S > 0)
        for (int t = 0; t < N; t++) {
            swiglu_ref(row, hh + (size_t)t * D, sgu, sdn, D, S, act);
            for (int d = 0; d < D; d++)
                want[(size_t)t * D + d] += row[d];
        }

    const size_t wcount[4] = {(size_t)E * 2 * F * D, (size_t)E * D * F, (size_t)2 * S * D,
                              (size_t)D * S};
    const float *wsrc[4] = {gu, dn, sgu, sdn};
    void *wdev[4];
    for (int i = 0; i < 4; i++) {
        if (bf16) {
            uint16_t *b = malloc((wcount[i] + 1) * sizeof(uint16_t));
            for (size_t j = 0; j < wcount[i]; j++)
                b[j] = to_bf16(wsrc[i][j]);
            wdev[i] = dev_copy(b, wcount[i] * sizeof(uint16_t));
            free(b);
        } else {
            wdev[i] = dev_copy(wsrc[i], wcount[i] * sizeof(float));
        }
    }
    float *h = dev_copy(hh, (size_t)N * D * sizeof(float));
    int32_t *tokens = dev_copy(htokens, (size_t)E * M * sizeof(int32_t));
    float *gates = dev_copy(hgates, (size_t)E * M * sizeof(float));
    float *y = dev_alloc((size_t)N * D * sizeof(float));
    const size_t ws_bytes = mk_moe_expert_choice_workspace(N, D, F, S, E, M);
    CHECK(ws_bytes > 0, "workspace size for N %d", N);
    void *ws = dev_alloc(ws_bytes);
    LAUNCH_OK(mk_moe_expert_choice(y, h, N, D, wdev[0], wdev[1], F, wdev[2], wdev[3], S, bf16, E,
                                   M, tokens, gates, ws, 0));
    float *got = dev_back(y, (size_t)N * D * sizeof(float));
    char name[128];
    snprintf(name, sizeof name, "moe_ec N%d D%d F%d S%d E%d M%d%s", N, D, F, S, E, M,
             bf16 ? " bf16" : "");
    test_check_tensor(name, got, want, (int64_t)N * D, bf16 ? 1e-2 : 1e-5);
    LAUNCH_OK(mk_moe_expert_choice(y, h, N, D, wdev[0], wdev[1], F, wdev[2], wdev[3], S, bf16, E,
                                   M, tokens, gates, ws, 0));
    float *again = dev_back(y, (size_t)N * D * sizeof(float));
    check_bits(name, got, again, (size_t)N * D * sizeof(float));
    free(hh), free(gu), free(dn), free(sgu), free(sdn), free(hgates), free(htokens), free(perm);
    free(want), free(row), free(act), free(got), free(again);
    for (int i = 0; i < 4; i++)
        dev_free(wdev[i]);
    dev_free(h), dev_free(tokens), dev_free(gates), dev_free(y), dev_free(ws);
}

/* ---- tensor cores: mma.cuh fragments and the MoE GEMMs of moe_mma.cu ------------------- */

static float from_bf16(uint16_t b)
{
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One warp, d = a · B + c (16×16×16, bf16 in, fp32 out), B given as bt[n][k] and b[k][n]:
 * mode 0 the fragments straight from the PTX ISA's formulas, 1 ldmatrix.x4, 2 ldmatrix.x4.trans
 * for B. Every element distinct (random), so a lane or register mixed up shows. The products
 * of bf16 values are exact in fp32: only the summation order differs from the reference. */
static void test_mma_fragments(uint64_t seed)
{
    float *ha = rnd(256, seed, -2, 2), *hb = rnd(256, seed + 1, -2, 2);
    float *hc = rnd(256, seed + 2, -1, 1);
    uint16_t a16[256], b16[256], bt16[256];
    for (int i = 0; i < 256; i++) {
        a16[i] = to_bf16(ha[i]);
        b16[i] = to_bf16(hb[i]); /* b[k][n] */
    }
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 16; n++)
            bt16[n * 16 + k] = b16[k * 16 + n];
    float want[256], want_chained[256];
    uint16_t p16[256]; /* bf16(a·B), the first product of mode 3, summed in fp32 */
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            double s = hc[m * 16 + n];
            float p = 0.0f;
            for (int k = 0; k < 16; k++) {
                s += (double)from_bf16(a16[m * 16 + k]) * from_bf16(b16[k * 16 + n]);
                p += from_bf16(a16[m * 16 + k]) * from_bf16(b16[k * 16 + n]);
            }
            want[m * 16 + n] = (float)s;
            p16[m * 16 + n] = to_bf16(p);
        }
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            double s = hc[m * 16 + n];
            for (int k = 0; k < 16; k++)
                s += (double)from_bf16(p16[m * 16 + k]) * from_bf16(b16[k * 16 + n]);
            want_chained[m * 16 + n] = (float)s;
        }
    uint16_t *a = dev_copy(a16, sizeof a16), *b = dev_copy(b16, sizeof b16);
    uint16_t *bt = dev_copy(bt16, sizeof bt16);
    float *c = dev_copy(hc, 256 * sizeof(float));
    float *d = dev_alloc(256 * sizeof(float));
    static const char *const what[4] = {"PTX formulas", "ldmatrix", "ldmatrix.trans",
                                        "accumulators as A, chained"};
    for (int mode = 0; mode < 4; mode++) {
        CUDA_CHECK(cudaMemset(d, 0xff, 256 * sizeof(float))); /* NaN where nothing is written */
        LAUNCH_OK(mk_mma_fragment_test(d, a, bt, b, c, mode, 0));
        float *got = dev_back(d, 256 * sizeof(float));
        char name[96];
        snprintf(name, sizeof name, "mma m16n8k16 bf16 fragments (%s) seed %llu", what[mode],
                 (unsigned long long)seed);
        /* mode 3: the first product's fp32 sum order is the hardware's; one bf16 ulp moved
         * in one entry stays far below 2e-3, a wrong fragment layout is O(1) */
        test_check_tensor(name, got, mode == 3 ? want_chained : want, 256,
                          mode == 3 ? 2e-3 : 1e-5);
        free(got);
    }
    free(ha), free(hb), free(hc);
    dev_free(a), dev_free(b), dev_free(bt), dev_free(c), dev_free(d);
}

/* got == want byte for byte (a result that must equal another kernel's exactly). */
static void check_same_bits(const char *label, const void *got, const void *want, size_t bytes)
{
    const bool same = memcmp(got, want, bytes) == 0;
    CHECK(same, "%s: differs from the expected bits", label);
    printf("%s %-44s bit-identical to the expected\n", same ? "OK    " : "NOT OK", label);
}

/* Routing patterns for test_moe_mma. */
enum moe_pattern {
    MOE_RANDOM,        /* k distinct random experts per token                              */
    MOE_EDGES,         /* expert 0 never, expert 1 exactly once, expert 2 by every token   */
    MOE_ALL_ON_ONE,    /* every token's first choice is expert E-1 (an expert with T rows) */
};

/* The routed experts of a top-k MoE layer through mk_moe_route, then the tensor-core GEMMs
 * (mk_moe_gate_up_mma, mk_moe_down_mma), against a double-precision reference from the fp32
 * activations and the bf16 weights (≤ 1e-2: the activations are rounded to bf16 on the
 * tensor cores) and against the SIMT bf16 kernels of moe.cu. Outputs start as NaN, so an
 * unwritten row fails. dense: offsets NULL (the shared expert's form), E = 1, k = 1. */
static void test_moe_mma(int T, int k, int E, int D, int F, enum moe_pattern pattern, bool dense)
{
    const int P = T * k;
    float *hh = rnd((size_t)T * D, 71, -1, 1);
    float *gu = rnd((size_t)E * 2 * F * D, 72, -0.08f, 0.08f);
    float *dn = rnd((size_t)E * D * F, 73, -0.08f, 0.08f);
    float *hw = rnd((size_t)P, 74, 0.05f, 1.0f);
    int32_t *ids = malloc((size_t)P * sizeof(int32_t));
    uint64_t state = 0x243f6a8885a308d3ull ^ (uint64_t)(T * 131 + E * 7 + pattern);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e;
            bool again;
            do {
                state ^= state << 13, state ^= state >> 7, state ^= state << 17;
                e = (int)(state % (uint64_t)E);
                if (pattern == MOE_EDGES) {
                    if (j == 0)
                        e = 2;
                    else if (t == T / 2)
                        e = 1;
                    else if (e < 3)
                        e = 3 + (int)(state % (uint64_t)(E - 3));
                } else if (pattern == MOE_ALL_ON_ONE && j == 0) {
                    e = E - 1;
                }
                again = false;
                for (int i = 0; i < j; i++)
                    again |= ids[t * k + i] == e;
            } while (again);
            ids[t * k + j] = e;
        }
    if (dense)
        for (int p = 0; p < P; p++)
            ids[p] = 0;

    /* bf16 weights; the reference uses exactly these values */
    const size_t ngu = (size_t)E * 2 * F * D, ndn = (size_t)E * D * F;
    uint16_t *gu16 = malloc(ngu * sizeof(uint16_t)), *dn16 = malloc(ndn * sizeof(uint16_t));
    for (size_t i = 0; i < ngu; i++)
        gu16[i] = to_bf16(gu[i]), gu[i] = from_bf16(gu16[i]);
    for (size_t i = 0; i < ndn; i++)
        dn16[i] = to_bf16(dn[i]), dn[i] = from_bf16(dn16[i]);

    float *h = dev_copy(hh, (size_t)T * D * sizeof(float));
    void *wgu = dev_copy(gu16, ngu * sizeof(uint16_t)), *wdn = dev_copy(dn16, ndn * sizeof(uint16_t));
    int32_t *top_ids = dev_copy(ids, (size_t)P * sizeof(int32_t));
    float *top_w = dev_copy(hw, (size_t)P * sizeof(float));
    int32_t *offsets = dev_alloc((size_t)(E + 1) * sizeof(int32_t));
    int32_t *tile_offsets = dev_alloc((size_t)(E + 1) * sizeof(int32_t));
    int32_t *sorted_token = dev_alloc((size_t)P * sizeof(int32_t));
    float *sorted_weight = dev_alloc((size_t)P * sizeof(float));
    int32_t *slot_of_pair = dev_alloc((size_t)P * sizeof(int32_t));
    float *act = dev_alloc((size_t)P * F * sizeof(float)), *act_simt = dev_alloc((size_t)P * F * sizeof(float));
    float *out = dev_alloc((size_t)P * D * sizeof(float)), *out_simt = dev_alloc((size_t)P * D * sizeof(float));
    CUDA_CHECK(cudaMemset(act, 0xff, (size_t)P * F * sizeof(float)));
    CUDA_CHECK(cudaMemset(out, 0xff, (size_t)P * D * sizeof(float)));
    uint16_t *act16 = dev_alloc((size_t)P * F * sizeof(uint16_t));
    float *out16 = dev_alloc((size_t)P * D * sizeof(float));
    CUDA_CHECK(cudaMemset(act16, 0xff, (size_t)P * F * sizeof(uint16_t)));
    CUDA_CHECK(cudaMemset(out16, 0xff, (size_t)P * D * sizeof(float)));
    const int max_tiles = (P + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M + E;

    int32_t *h_off = NULL, *h_tok = NULL;
    if (dense) {
        LAUNCH_OK(mk_moe_gate_up_mma(act, h, wgu, NULL, NULL, NULL, P, 1, D, F, 0, 0));
        LAUNCH_OK(mk_moe_gate_up(act_simt, h, wgu, 1, NULL, NULL, NULL, P, 1, D, F, 0, 0));
        LAUNCH_OK(mk_moe_down_mma(out, act, wdn, NULL, NULL, P, 1, D, F, 0, 0));
        LAUNCH_OK(mk_moe_down(out_simt, act_simt, wdn, 1, NULL, NULL, P, 1, D, F, 0, 0));
        LAUNCH_OK(mk_moe_gate_up_mma_bf16(act16, h, wgu, NULL, NULL, NULL, P, 1, D, F, 0, 0));
        LAUNCH_OK(mk_moe_down_mma_bf16(out16, act16, wdn, NULL, NULL, P, 1, D, F, 0, 0));
    } else {
        LAUNCH_OK(mk_moe_route(offsets, tile_offsets, sorted_token, sorted_weight, slot_of_pair,
                               top_ids, top_w, T, k, E, 0));
        LAUNCH_OK(mk_moe_gate_up_mma(act, h, wgu, offsets, tile_offsets, sorted_token, 0, E, D, F,
                                     max_tiles, 0));
        LAUNCH_OK(mk_moe_gate_up(act_simt, h, wgu, 1, offsets, tile_offsets, sorted_token, 0, E, D,
                                 F, max_tiles, 0));
        LAUNCH_OK(mk_moe_down_mma(out, act, wdn, offsets, tile_offsets, 0, E, D, F, max_tiles, 0));
        LAUNCH_OK(mk_moe_down(out_simt, act_simt, wdn, 1, offsets, tile_offsets, 0, E, D, F,
                              max_tiles, 0));
        LAUNCH_OK(mk_moe_gate_up_mma_bf16(act16, h, wgu, offsets, tile_offsets, sorted_token, 0,
                                          E, D, F, max_tiles, 0));
        LAUNCH_OK(mk_moe_down_mma_bf16(out16, act16, wdn, offsets, tile_offsets, 0, E, D, F,
                                       max_tiles, 0));
        h_off = dev_back(offsets, (size_t)(E + 1) * sizeof(int32_t));
        h_tok = dev_back(sorted_token, (size_t)P * sizeof(int32_t));
    }
    float *got_act = dev_back(act, (size_t)P * F * sizeof(float));
    float *got_act_simt = dev_back(act_simt, (size_t)P * F * sizeof(float));
    float *got_out = dev_back(out, (size_t)P * D * sizeof(float));
    float *got_out_simt = dev_back(out_simt, (size_t)P * D * sizeof(float));

    /* reference, slot by slot: expert e = the segment of offsets holding the slot */
    float *want_act = malloc((size_t)P * F * sizeof(float));
    float *want_out = malloc((size_t)P * D * sizeof(float));
    int e = 0;
    for (int s = 0; s < P; s++) {
        while (!dense && s >= h_off[e + 1])
            e++;
        const float *x = hh + (size_t)(dense ? s : h_tok[s]) * D;
        const float *wg = gu + (size_t)e * 2 * F * D, *wd = dn + (size_t)e * D * F;
        float *a_row = want_act + (size_t)s * F;
        for (int f = 0; f < F; f++) {
            double g = 0.0, u = 0.0;
            for (int d = 0; d < D; d++) {
                g += (double)x[d] * wg[(size_t)f * D + d];
                u += (double)x[d] * wg[(size_t)(F + f) * D + d];
            }
            a_row[f] = silu_ref((float)g) * (float)u;
        }
        for (int d = 0; d < D; d++) {
            double acc = 0.0;
            for (int f = 0; f < F; f++)
                acc += (double)a_row[f] * wd[(size_t)d * F + f];
            want_out[(size_t)s * D + d] = (float)acc;
        }
    }
    char name[160];
    const char *pat = dense ? "dense" : pattern == MOE_EDGES ? "experts 0/1/all"
                                      : pattern == MOE_ALL_ON_ONE ? "all on one"
                                                                  : "random";
    snprintf(name, sizeof name, "moe mma gate_up T%d k%d E%d D%d F%d %s (vs fp32)", T, k, E, D, F, pat);
    test_check_tensor(name, got_act, want_act, (int64_t)P * F, 1e-2);
    snprintf(name, sizeof name, "moe mma down T%d k%d E%d D%d F%d %s (vs fp32)", T, k, E, D, F, pat);
    test_check_tensor(name, got_out, want_out, (int64_t)P * D, 1e-2);
    snprintf(name, sizeof name, "moe mma gate_up T%d k%d E%d D%d F%d %s (vs SIMT bf16)", T, k, E, D, F, pat);
    test_check_tensor(name, got_act, got_act_simt, (int64_t)P * F, 1e-2);
    snprintf(name, sizeof name, "moe mma down T%d k%d E%d D%d F%d %s (vs SIMT bf16)", T, k, E, D, F, pat);
    test_check_tensor(name, got_out, got_out_simt, (int64_t)P * D, 1e-2);

    /* the bf16-act pair: act = the fp32 pair's act rounded (RNE), down's result bit for bit
     * (the fp32 pair rounds act the same way on its way into the tensor cores) */
    uint16_t *got_act16 = dev_back(act16, (size_t)P * F * sizeof(uint16_t));
    float *got_out16 = dev_back(out16, (size_t)P * D * sizeof(float));
    uint16_t *want_act16 = malloc((size_t)P * F * sizeof(uint16_t) + 2);
    for (size_t i = 0; i < (size_t)P * F; i++)
        want_act16[i] = to_bf16(got_act[i]);
    snprintf(name, sizeof name, "moe mma gate_up bf16 act T%d k%d E%d D%d F%d %s", T, k, E, D, F, pat);
    check_same_bits(name, got_act16, want_act16, (size_t)P * F * sizeof(uint16_t));
    snprintf(name, sizeof name, "moe mma down from bf16 act T%d k%d E%d D%d F%d %s", T, k, E, D, F, pat);
    check_same_bits(name, got_out16, got_out, (size_t)P * D * sizeof(float));
    free(got_act16), free(got_out16), free(want_act16);
    dev_free(act16), dev_free(out16);

    free(hh), free(gu), free(dn), free(hw), free(ids), free(gu16), free(dn16);
    free(h_off), free(h_tok), free(got_act), free(got_act_simt), free(got_out), free(got_out_simt);
    free(want_act), free(want_out);
    dev_free(h), dev_free(wgu), dev_free(wdn), dev_free(top_ids), dev_free(top_w);
    dev_free(offsets), dev_free(tile_offsets), dev_free(sorted_token), dev_free(sorted_weight);
    dev_free(slot_of_pair), dev_free(act), dev_free(act_simt), dev_free(out), dev_free(out_simt);
}

#ifdef MOIRE_CUDA_EMU
/* Global-memory bytes one kernel (by name) read in the launches since the last reset. */
static uint64_t emu_bytes_read(const char *kernel)
{
    cuda_emu_kernel_counters rows[256];
    const int n = cuda_emu_kernel_counters_get(rows, 256);
    uint64_t bytes = 0;
    for (int i = 0; i < n && i < 256; i++)
        if (strcmp(rows[i].name, kernel) == 0)
            bytes += rows[i].bytes_read;
    return bytes;
}

/* The point of the tensor-core tiles: with at most 128 rows per expert (the XL CFG batch
 * averages 128), every weight byte is read from global memory once per GEMM — counted by
 * the emulator. The SIMT kernel's 64-row tiles read an expert's weights once per 64 rows. */
static void test_moe_mma_traffic(void)
{
    /* the XL CFG batch's routing: 2 × 256 tokens, top-2 of 8 experts, 128 pairs each */
    const int T = 512, k = 2, E = 8, D = 64, F = 128, P = T * k;
    float *hh = rnd((size_t)T * D, 81, -1, 1);
    float *gu = rnd((size_t)E * 2 * F * D, 82, -0.1f, 0.1f);
    int32_t *ids = malloc((size_t)P * sizeof(int32_t));
    float *hw = rnd((size_t)P, 83, 0.1f, 1.0f);
    for (int t = 0; t < T; t++) /* experts t % 8 and (t + 3) % 8 */
        ids[t * k] = t % E, ids[t * k + 1] = (t + 3) % E;
    uint16_t *gu16 = malloc((size_t)E * 2 * F * D * sizeof(uint16_t));
    for (size_t i = 0; i < (size_t)E * 2 * F * D; i++)
        gu16[i] = to_bf16(gu[i]);
    float *h = dev_copy(hh, (size_t)T * D * sizeof(float));
    void *w = dev_copy(gu16, (size_t)E * 2 * F * D * sizeof(uint16_t));
    int32_t *top_ids = dev_copy(ids, (size_t)P * sizeof(int32_t));
    float *top_w = dev_copy(hw, (size_t)P * sizeof(float));
    int32_t *offsets = dev_alloc((size_t)(E + 1) * 4), *tile_offsets = dev_alloc((size_t)(E + 1) * 4);
    int32_t *sorted_token = dev_alloc((size_t)P * 4), *slot = dev_alloc((size_t)P * 4);
    float *sorted_weight = dev_alloc((size_t)P * 4), *act = dev_alloc((size_t)P * F * 4);
    const int max_tiles = (P + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M + E;
    LAUNCH_OK(mk_moe_route(offsets, tile_offsets, sorted_token, sorted_weight, slot, top_ids,
                           top_w, T, k, E, 0));
    CUDA_CHECK(cudaDeviceSynchronize());
    cuda_emu_counters_reset();
    LAUNCH_OK(mk_moe_gate_up_mma(act, h, w, offsets, tile_offsets, sorted_token, 0, E, D, F,
                                 max_tiles, 0));
    LAUNCH_OK(mk_moe_gate_up(act, h, w, 1, offsets, tile_offsets, sorted_token, 0, E, D, F,
                             max_tiles, 0));
    CUDA_CHECK(cudaDeviceSynchronize());
    const uint64_t weights = (uint64_t)E * 2 * F * D * 2;
    /* A once per 128-column N-tile: F = 128 is one N-tile, so h is read exactly once */
    const uint64_t a_rows = (uint64_t)P * D * 4 * ((F + 127) / 128);
    /* dispatch reads per block: offsets (2 per expert by each of the 8 warps) and 128
     * sorted_token */
    const uint64_t blocks = (uint64_t)((F + 127) / 128) * ((max_tiles + E) / 2);
    const uint64_t index = blocks * (8 * 2 * E * 4 + 128 * 4);
    const uint64_t mma = emu_bytes_read("moe_mma_kernel<true, false, false>");
    const uint64_t simt = emu_bytes_read("grouped_gemm_kernel<unsigned short, true>");
    CHECK(mma >= weights + a_rows && mma <= weights + a_rows + index,
          "moe_mma gate_up read %llu bytes: expected the weights once (%llu) + A per N-tile "
          "(%llu) + at most %llu of dispatch",
          (unsigned long long)mma, (unsigned long long)weights, (unsigned long long)a_rows,
          (unsigned long long)index);
    printf("OK     global bytes read by gate_up, %d pairs on %d experts (D %d, F %d): tensor-core "
           "%llu, SIMT %llu (weights %llu)\n",
           P, E, D, F, (unsigned long long)mma, (unsigned long long)simt,
           (unsigned long long)weights);
    free(hh), free(gu), free(ids), free(hw), free(gu16);
    dev_free(h), dev_free(w), dev_free(top_ids), dev_free(top_w), dev_free(offsets);
    dev_free(tile_offsets), dev_free(sorted_token), dev_free(slot), dev_free(sorted_weight);
    dev_free(act);
}
#endif

#ifdef MOIRE_CUDA_EMU
static uint64_t emu_bytes_written(const char *kernel)
{
    cuda_emu_kernel_counters rows[256];
    const int n = cuda_emu_kernel_counters_get(rows, 256);
    uint64_t bytes = 0;
    for (int i = 0; i < n && i < 256; i++)
        if (strcmp(rows[i].name, kernel) == 0)
            bytes += rows[i].bytes_written;
    return bytes;
}

/* Flash attention's global traffic, counted by the emulator, at the XL/2 head (hd 72 → 80
 * padded) for 2 images (CFG) of T 256, 2 heads (the per-head numbers scale with H):
 *  - the pack writes exactly the bf16 workspace (q, k, v once, padded) and the flash kernel
 *    exactly the output: no Tq×Tk matrix is written anywhere;
 *  - the flash kernel reads Q once and K, V once per 64-row query block, in bf16:
 *    n·H·HP·2·(T + ⌈T/64⌉·2·T) bytes, asserted exactly;
 *  - beside it, what the fp32 SIMT kernel (attention.cu, 16-row query blocks, K LayerNormed
 *    again per block) reads for the same call. */
static void test_attention_mma_traffic(void)
{
    const int n = 2, T = 256, H = 2, hd = 72, HP = 80, D = H * hd;
    float *qkv = dev_rnd((size_t)n * T * 3 * D, 151, -1, 1, NULL);
    float *w = dev_rnd((size_t)hd, 152, 0.5f, 1.5f, NULL), *b = dev_rnd((size_t)hd, 153, -.2f, .2f, NULL);
    float *out = dev_alloc((size_t)n * T * D * sizeof(float));
    const size_t ws_bytes = mk_attention_mma_workspace(n, T, T, H, hd);
    void *ws = dev_alloc(ws_bytes);
    CUDA_CHECK(cudaDeviceSynchronize());
    cuda_emu_counters_reset();
    LAUNCH_OK(mk_attention_n_mma(out, qkv, n, T, H, hd, w, b, w, b, 1e-6f, ws, 0));
    LAUNCH_OK(mk_attention_n(out, qkv, n, T, H, hd, w, b, w, b, 1e-6f, 0));
    CUDA_CHECK(cudaDeviceSynchronize());
    const uint64_t blocks = (uint64_t)(T + 63) / 64;
    const uint64_t want_read = (uint64_t)n * H * HP * 2 * (T + blocks * 2 * T);
    const uint64_t out_bytes = (uint64_t)n * T * D * sizeof(float);
    const uint64_t flash_read = emu_bytes_read("flash_attention_kernel<80>");
    const uint64_t flash_written = emu_bytes_written("flash_attention_kernel<80>");
    const uint64_t pack_read = emu_bytes_read("attention_pack_kernel");
    const uint64_t pack_written = emu_bytes_written("attention_pack_kernel");
    const uint64_t simt_read = emu_bytes_read("attention_small_kernel<3>");
    CHECK(flash_read == want_read, "flash kernel read %llu bytes, expected %llu",
          (unsigned long long)flash_read, (unsigned long long)want_read);
    CHECK(flash_written == out_bytes && pack_written == ws_bytes,
          "flash wrote %llu (output %llu), pack %llu (workspace %llu): nothing else may be "
          "written",
          (unsigned long long)flash_written, (unsigned long long)out_bytes,
          (unsigned long long)pack_written, (unsigned long long)ws_bytes);
    CHECK(simt_read > 0, "the SIMT kernel's reads were counted");
    printf("OK     attention n%d T%d H%d hd%d, global bytes: pack read %llu, wrote %llu "
           "(bf16 q,k,v); flash read %llu (Q once, K+V %llu times), wrote %llu (= output; "
           "a T×T fp32 matrix would be %llu); SIMT fp32 kernel read %llu\n",
           n, T, H, hd, (unsigned long long)pack_read, (unsigned long long)pack_written,
           (unsigned long long)flash_read, (unsigned long long)blocks,
           (unsigned long long)flash_written, (unsigned long long)n * H * T * T * 4,
           (unsigned long long)simt_read);
    dev_free(qkv), dev_free(w), dev_free(b), dev_free(out), dev_free(ws);
}
#endif

/* The shapes the tensor-core path refuses (D or F not a multiple of 8) are refused. */
static void test_moe_mma_refusals(void)
{
    CHECK(mk_moe_mma_supported(1152, 4608) && mk_moe_mma_supported(1408, 104),
          "mk_moe_mma_supported accepts multiples of 8");
    CHECK(!mk_moe_mma_supported(1150, 4608) && !mk_moe_mma_supported(1152, 100),
          "mk_moe_mma_supported refuses D or F not a multiple of 8");
    CHECK(mk_moe_gate_up_mma(NULL, NULL, NULL, NULL, NULL, NULL, 4, 1, 12, 16, 0, 0) ==
              cudaErrorInvalidValue,
          "mk_moe_gate_up_mma refuses D 12");
    (void)cudaGetLastError();
}

/* ---- text encoder ops ----------------------------------------------------------------- */

static void test_layernorm_affine(int T, int D, bool in_place)
{
    const size_t count = (size_t)T * D;
    float *hx, *hw, *hb;
    float *x = dev_rnd(count, 71, -3, 2, &hx);
    float *w = dev_rnd((size_t)D, 72, 0.5f, 1.5f, &hw), *b = dev_rnd((size_t)D, 73, -1, 1, &hb);
    float *y = in_place ? x : dev_alloc(count * sizeof(float));
    float *want = malloc(count * sizeof(float));
    for (int t = 0; t < T; t++) {
        layernorm_row_ref(want + (size_t)t * D, hx + (size_t)t * D, D, 1e-5f);
        for (int d = 0; d < D; d++)
            want[(size_t)t * D + d] = want[(size_t)t * D + d] * hw[d] + hb[d];
    }
    LAUNCH_OK(mk_layernorm_affine(y, x, w, b, T, D, 1e-5f, 0));
    float *got = dev_back(y, count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "layernorm_affine T%d D%d%s", T, D, in_place ? " in place" : "");
    test_check_tensor(name, got, want, (int64_t)count, 1e-5);
    free(hx), free(hw), free(hb), free(want), free(got);
    if (!in_place)
        dev_free(y);
    dev_free(x), dev_free(w), dev_free(b);
}

static void test_text_small_ops(void)
{
    /* GELU (erf), in place, in double on both sides */
    const int64_t count = 10007;
    float *hx;
    float *x = dev_rnd((size_t)count, 81, -6, 6, &hx);
    float *want = malloc((size_t)count * sizeof(float));
    for (int64_t i = 0; i < count; i++)
        want[i] = (float)(0.5 * hx[i] * (1.0 + erf(hx[i] / sqrt(2.0))));
    LAUNCH_OK(mk_gelu_erf(x, x, count, 0));
    float *got = dev_back(x, (size_t)count * sizeof(float));
    test_check_tensor("gelu_erf 10007 in place", got, want, count, 1e-7);
    free(hx), free(want), free(got), dev_free(x);

    /* gather: token embedding rows, with repeats */
    const int V = 301, D = 77, rows = 259;
    float *htable;
    float *table = dev_rnd((size_t)V * D, 82, -1, 1, &htable);
    int32_t *hids = malloc((size_t)rows * sizeof(int32_t));
    for (int r = 0; r < rows; r++)
        hids[r] = (int32_t)((r * 7919 + 13) % V);
    hids[1] = hids[0];
    hids[rows - 1] = V - 1;
    int32_t *ids = dev_copy(hids, (size_t)rows * sizeof(int32_t));
    float *y = dev_alloc((size_t)rows * D * sizeof(float));
    float *want_rows = malloc((size_t)rows * D * sizeof(float));
    for (int r = 0; r < rows; r++)
        memcpy(want_rows + (size_t)r * D, htable + (size_t)hids[r] * D, D * sizeof(float));
    LAUNCH_OK(mk_gather_rows(y, table, ids, rows, D, 0));
    float *got_rows = dev_back(y, (size_t)rows * D * sizeof(float));
    test_check_exact("gather_rows 259×77 of 301", got_rows, want_rows, (int64_t)rows * D);
    free(htable), free(hids), free(want_rows), free(got_rows);
    dev_free(table), dev_free(ids), dev_free(y);

    /* masked mean over the real tokens: lengths 1, L, something between, and one > L
     * (clamped) */
    const int P = 4, L = 77, Dt = 768;
    const int32_t hlen[4] = {1, 77, 30, 500};
    float *hxs;
    float *xs = dev_rnd((size_t)P * L * Dt, 83, -1, 1, &hxs);
    int32_t *len = dev_copy(hlen, sizeof hlen);
    float *out = dev_alloc((size_t)P * Dt * sizeof(float));
    float *want_mean = malloc((size_t)P * Dt * sizeof(float));
    for (int p = 0; p < P; p++) {
        const int n = hlen[p] > L ? L : hlen[p];
        for (int d = 0; d < Dt; d++) {
            double sum = 0.0;
            for (int j = 0; j < n; j++)
                sum += hxs[((size_t)p * L + j) * Dt + d];
            want_mean[(size_t)p * Dt + d] = (float)(sum / n);
        }
    }
    LAUNCH_OK(mk_masked_mean_rows(out, xs, len, P, L, Dt, 0));
    float *got_mean = dev_back(out, (size_t)P * Dt * sizeof(float));
    test_check_exact("masked_mean_rows P4 L77 D768", got_mean, want_mean, (int64_t)P * Dt);
    free(hxs), free(want_mean), free(got_mean), dev_free(xs), dev_free(len), dev_free(out);
}

/* ---- image ops ------------------------------------------------------------------------ */

static void test_im2col(int ci, int H, int W, int k, int stride, bool band)
{
    const int pad_lo = stride == 1 ? k / 2 : 0, pad_hi = stride == 1 ? k / 2 : 1;
    const int Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    const int Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    const int oy0 = band ? Ho / 3 : 0, rows = band ? Ho - Ho / 3 - 1 : Ho;
    const int K = ci * k * k;
    const size_t n = (size_t)rows * Wo, count = (size_t)K * n;
    float *hx;
    float *x = dev_rnd((size_t)ci * H * W, 91, -1, 1, &hx);
    float *col = dev_alloc(count * sizeof(float));
    float *want = malloc(count * sizeof(float));
    for (int kk = 0; kk < K; kk++) {
        const int c = kk / (k * k), ky = kk / k % k, kx = kk % k;
        for (int row = 0; row < rows; row++)
            for (int ox = 0; ox < Wo; ox++) {
                const int iy = (oy0 + row) * stride - pad_lo + ky, ix = ox * stride - pad_lo + kx;
                want[(size_t)kk * n + (size_t)row * Wo + ox] =
                    iy >= 0 && iy < H && ix >= 0 && ix < W ? hx[((size_t)c * H + iy) * W + ix]
                                                           : 0.0f;
            }
    }
    if (band)
        LAUNCH_OK(mk_im2col_band(col, x, ci, H, W, k, stride, pad_lo, Wo, oy0, rows, 0));
    else
        LAUNCH_OK(mk_im2col(col, x, ci, H, W, k, stride, pad_lo, pad_hi, Ho, Wo, 0));
    float *got = dev_back(col, count * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "im2col ci%d %dx%d k%d s%d%s", ci, H, W, k, stride,
             band ? " band" : "");
    test_check_exact(name, got, want, (int64_t)count);
    free(hx), free(want), free(got), dev_free(x), dev_free(col);
}

/* vae.c group_norm with double statistics. */
static void group_norm_ref(float *y, const float *x, const float *w, const float *b, int C,
                           size_t HW, int G, float eps, bool with_silu, const float *stats_of)
{
    const int per = C / G;
    for (int g = 0; g < G; g++) {
        const float *xg = stats_of + (size_t)g * per * HW;
        const size_t count = (size_t)per * HW;
        double sum = 0.0, sq = 0.0;
        for (size_t i = 0; i < count; i++)
            sum += xg[i];
        const double mean = sum / count;
        for (size_t i = 0; i < count; i++)
            sq += (xg[i] - mean) * (xg[i] - mean);
        const double inv = 1.0 / sqrt(sq / count + eps);
        for (int c = g * per; c < (g + 1) * per; c++) {
            const float a = (float)(inv * w[c]), bb = (float)(b[c] - mean * inv * w[c]);
            for (size_t i = 0; i < HW; i++) {
                const float v = x[(size_t)c * HW + i] * a + bb;
                y[(size_t)c * HW + i] = with_silu ? silu_ref(v) : v;
            }
        }
    }
}

/* fused (in place) and statistics + apply; apply also with another tensor's statistics (a
 * tile normalised with the whole image's). Inputs have an offset (mean ≠ 0) on purpose. */
static void test_group_norm(int C, int H, int W, int G, bool with_silu)
{
    const size_t HW = (size_t)H * W, count = (size_t)C * HW;
    float *hx, *hw, *hb, *hother;
    float *x = dev_rnd(count, 101, 2, 5, &hx);
    float *other = dev_rnd(count, 102, -3, 1, &hother);
    float *w = dev_rnd((size_t)C, 103, 0.5f, 1.5f, &hw), *b = dev_rnd((size_t)C, 104, -1, 1, &hb);
    float *want = malloc(count * sizeof(float));
    char name[96];

    group_norm_ref(want, hx, hw, hb, C, HW, G, 1e-6f, with_silu, hx);
    float *y = dev_alloc(count * sizeof(float));
    LAUNCH_OK(mk_group_norm(y, x, w, b, C, (int64_t)HW, G, 1e-6f, with_silu, 0));
    float *got = dev_back(y, count * sizeof(float));
    snprintf(name, sizeof name, "group_norm C%d %dx%d G%d%s", C, H, W, G, with_silu ? " silu" : "");
    test_check_tensor(name, got, want, (int64_t)count, 1e-5);
    LAUNCH_OK(mk_group_norm(y, x, w, b, C, (int64_t)HW, G, 1e-6f, with_silu, 0));
    float *again = dev_back(y, count * sizeof(float));
    check_bits(name, got, again, count * sizeof(float));
    free(got), free(again);

    float *mean_inv = dev_alloc((size_t)G * 2 * sizeof(float));
    LAUNCH_OK(mk_group_norm_stats(mean_inv, other, C, (int64_t)HW, G, 1e-6f, 0));
    LAUNCH_OK(mk_group_norm_apply(x, x, mean_inv, w, b, C, (int64_t)HW, G, with_silu, 0));
    group_norm_ref(want, hx, hw, hb, C, HW, G, 1e-6f, with_silu, hother);
    got = dev_back(x, count * sizeof(float));
    snprintf(name, sizeof name, "group_norm stats+apply C%d %dx%d G%d in place", C, H, W, G);
    test_check_tensor(name, got, want, (int64_t)count, 1e-5);
    free(got);

    LAUNCH_OK(mk_group_norm(other, other, w, b, C, (int64_t)HW, G, 1e-6f, with_silu, 0));
    group_norm_ref(want, hother, hw, hb, C, HW, G, 1e-6f, with_silu, hother);
    got = dev_back(other, count * sizeof(float));
    snprintf(name, sizeof name, "group_norm C%d %dx%d G%d fused in place", C, H, W, G);
    test_check_tensor(name, got, want, (int64_t)count, 1e-5);
    free(got);

    free(hx), free(hw), free(hb), free(hother), free(want);
    dev_free(x), dev_free(other), dev_free(w), dev_free(b), dev_free(y), dev_free(mean_inv);
}

static void test_image_small_ops(int C, int H, int W)
{
    const size_t HW = (size_t)H * W, count = (size_t)C * HW;
    float *hx, *hx2, *hb;
    float *x = dev_rnd(count, 111, -1, 1, &hx);
    float *x2 = dev_rnd(count, 112, -1, 1, &hx2);
    float *b = dev_rnd((size_t)C, 113, -1, 1, &hb);
    float *want = malloc(4 * count * sizeof(float));
    float *y = dev_alloc(4 * count * sizeof(float));
    float *got;
    char name[96];

    for (size_t i = 0; i < count; i++)
        want[i] = hx[i] + hb[i / HW];
    CUDA_CHECK(cudaMemcpy(y, x, count * sizeof(float), cudaMemcpyDeviceToDevice));
    LAUNCH_OK(mk_add_channel_bias(y, b, C, (int64_t)HW, 0));
    got = dev_back(y, count * sizeof(float));
    snprintf(name, sizeof name, "add_channel_bias C%d %dx%d", C, H, W);
    test_check_exact(name, got, want, (int64_t)count);
    free(got);

    for (int c = 0; c < C; c++)
        for (int yy = 0; yy < 2 * H; yy++)
            for (int xx = 0; xx < 2 * W; xx++)
                want[((size_t)c * 2 * H + yy) * 2 * W + xx] = hx[((size_t)c * H + yy / 2) * W + xx / 2];
    LAUNCH_OK(mk_upsample_nearest2x(y, x, C, H, W, 0));
    got = dev_back(y, 4 * count * sizeof(float));
    snprintf(name, sizeof name, "upsample_nearest2x C%d %dx%d", C, H, W);
    test_check_exact(name, got, want, (int64_t)(4 * count));
    free(got);

    /* transpose as [C, HW] → [HW, C] */
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < HW; i++)
            want[i * C + c] = hx[(size_t)c * HW + i];
    LAUNCH_OK(mk_transpose(y, x, C, (int)HW, 0));
    got = dev_back(y, count * sizeof(float));
    snprintf(name, sizeof name, "transpose %dx%zu", C, HW);
    test_check_exact(name, got, want, (int64_t)count);
    free(got);

    for (size_t i = 0; i < count; i++)
        want[i] = 0.7071f * hx[i];
    LAUNCH_OK(mk_scale(y, x, 0.7071f, (int64_t)count, 0));
    got = dev_back(y, count * sizeof(float));
    test_check_exact("scale", got, want, (int64_t)count);
    free(got);

    for (size_t i = 0; i < count; i++)
        want[i] = hx[i] + hx2[i];
    LAUNCH_OK(mk_add(y, x, x2, (int64_t)count, 0));
    got = dev_back(y, count * sizeof(float));
    test_check_exact("add", got, want, (int64_t)count);
    free(got);

    for (size_t i = 0; i < count; i++)
        want[i] = hx[i] > 0.0f ? hx[i] : 0.0f;
    LAUNCH_OK(mk_relu(y, x, (int64_t)count, 0));
    got = dev_back(y, count * sizeof(float));
    test_check_exact("relu", got, want, (int64_t)count);
    free(got);

    const int h2 = H / 2, w2 = W / 2;
    for (int c = 0; c < C; c++)
        for (int yy = 0; yy < h2; yy++)
            for (int xx = 0; xx < w2; xx++) {
                const float *p = hx + ((size_t)c * H + 2 * yy) * W + 2 * xx;
                want[((size_t)c * h2 + yy) * w2 + xx] = 0.25f * ((p[0] + p[1]) + (p[W] + p[W + 1]));
            }
    LAUNCH_OK(mk_avgpool2(y, x, C, H, W, 0));
    got = dev_back(y, (size_t)C * h2 * w2 * sizeof(float));
    snprintf(name, sizeof name, "avgpool2 C%d %dx%d", C, H, W);
    test_check_exact(name, got, want, (int64_t)C * h2 * w2);
    free(got);

    /* copy_2d: paste the top-left (H−3)×(W−2) of x2 into x at row 2, column 1, per channel
     * plane flattened as [C·H, W] rows */
    memcpy(want, hx, count * sizeof(float));
    const int rows = C * H - 5;
    const int64_t cols = W - 2;
    for (int r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            want[(size_t)(r + 2) * W + 1 + c] = hx2[(size_t)r * W + c];
    LAUNCH_OK(mk_copy_2d(x + 2 * W + 1, W, x2, W, rows, cols, 0));
    got = dev_back(x, count * sizeof(float));
    snprintf(name, sizeof name, "copy_2d %dx%lld", rows, (long long)cols);
    test_check_exact(name, got, want, (int64_t)count);
    free(got);

    free(hx), free(hx2), free(hb), free(want);
    dev_free(x), dev_free(x2), dev_free(b), dev_free(y);
}

/* count ≤ 0 enqueues nothing and succeeds (NULL pointers are never touched). */
static void test_empty_launches(void)
{
    LAUNCH_OK(mk_gelu_erf(NULL, NULL, 0, 0));
    LAUNCH_OK(mk_scale(NULL, NULL, 2.0f, 0, 0));
    LAUNCH_OK(mk_cross_attention(NULL, NULL, 8, NULL, NULL, 8, 0, 5, 1, 8, 0));
    LAUNCH_OK(mk_layernorm_modulate_n(NULL, NULL, NULL, NULL, 0, 0, 5, 8, 1e-6f, 0));
    LAUNCH_OK(mk_group_norm(NULL, NULL, NULL, NULL, 0, 16, 1, 1e-6f, 0, 0));
    LAUNCH_OK(mk_router_expert_choice(NULL, NULL, NULL, NULL, NULL, 0, 16, 0, 8, 4, 1.0f, 0));
    CHECK(mk_cross_attention(NULL, NULL, 8, NULL, NULL, 8, 3, 0, 1, 8, 0) ==
              cudaErrorInvalidValue,
          "attention over no keys must fail");
    cudaGetLastError(); /* clear nothing-launched state */
    CUDA_CHECK(cudaDeviceSynchronize());
}

int main(void)
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("SKIP: no CUDA device visible\n");
        return 77;
    }
    const char *q = getenv("MOIRE_KERNELS_TEST_QUICK");
#ifdef MOIRE_CUDA_EMU
    quick = !q || !*q || strcmp(q, "0") != 0;
#else
    quick = q && *q && strcmp(q, "0") != 0;
#endif

    /* MOIRE_KERNELS_TEST_ONLY=mma: only the tensor-core cases (for work on them in the
     * emulator, where the whole program takes minutes) */
    const char *only = getenv("MOIRE_KERNELS_TEST_ONLY");
    const bool only_mma = only && strcmp(only, "mma") == 0;
    const bool only_flash = only && strcmp(only, "flash") == 0; /* the attention cases */

    /* tensor cores (mma.cuh, moe_mma.cu): fragment layouts, then the MoE GEMMs on awkward
     * shapes — F not a multiple of the 128-column tile (F 200: a second N-tile with 72
     * columns, D 136: a down N-tile of 8 columns), K (D for gate_up, F for down) not a
     * multiple of 32, hidden 1152 and 1408, experts with 0 / 1 / all tokens, one expert with
     * 520 rows (5 M-tiles), 1040 (token, expert) pairs, the dense (shared expert) form */
    test_mma_fragments(1);
    test_mma_fragments(2);
    if (!only_flash) {
        test_moe_mma_refusals();
        test_moe_mma(40, 2, 4, 64, 72, MOE_RANDOM, false);
        test_moe_mma(200, 2, 5, 40, 24, MOE_EDGES, false);
        test_moe_mma(520, 2, 8, 40, 16, MOE_ALL_ON_ONE, false);
        test_moe_mma(20, 2, 3, 1152, 40, MOE_RANDOM, false);
        test_moe_mma(30, 2, 4, 1408, 104, MOE_EDGES, false);
        test_moe_mma(150, 1, 1, 64, 48, MOE_RANDOM, true);
        test_moe_mma(60, 2, 4, 136, 200, MOE_EDGES, false);
        if (!quick)
            test_moe_mma(256, 2, 8, 1152, 128, MOE_RANDOM, false);
#ifdef MOIRE_CUDA_EMU
        test_moe_mma_traffic();
#endif
    }

    /* attention on tensor cores (attention_mma.cu): head sizes 64, 72, 88 (padded to 80, 96),
     * 128 and an odd 18; token counts off the 64-row tile (1, 17, 63, 130, 257); several
     * images; with and without qk-norm; cross-attention with a key mask and odd strides */
    test_attention_mma_refusals();
    test_attention_mma(2, 17, 3, 64, false);
    test_attention_mma(2, 63, 2, 72, true);
    test_attention_mma(3, 257, 2, 88, true);
    test_attention_mma(2, 130, 2, 88, false);
    test_attention_mma(1, 1, 4, 128, true);
    test_attention_mma(2, 65, 2, 128, false);
    test_attention_mma(2, 33, 2, 18, true);
    if (!quick) {
        test_attention_mma(2, 256, 16, 72, true); /* XL/2 at 256², CFG */
        test_attention_mma(1, 1024, 2, 88, true);
    }
    test_cross_attention_mma(77, 12, 77, 4, 64, true);
    test_cross_attention_mma(257, 30, 77, 3, 72, false);
    test_cross_attention_mma(100, 77, 80, 2, 88, false);
    test_cross_attention_mma(33, 50, 50, 2, 128, false);
    test_cross_attention_mma(7, 1, 19, 1, 40, false);
#ifdef MOIRE_CUDA_EMU
    test_attention_mma_traffic();
#endif
    if (only_mma || only_flash)
        return test_finish("cuda_kernels");

    test_empty_launches();

    test_layernorm_modulate_n(3, 7, 1152, 6 * 1152, false);
    test_layernorm_modulate_n(2, 257, 1408, 1408, true);
    test_layernorm_modulate_n(4, 1, 1152, 0, false);
    test_gate_residual_n(3, 7, 1152, 7 * 1152, true);
    test_gate_residual_n(2, 257, 1408, 0, true);
    test_gate_residual_n(3, 77, 768, 0, false);

    test_attention_n(2, 257, 3, 72, true);
    test_attention_n(3, 7, 2, 88, false);
    test_attention_n(1, 1, 4, 128, true);
    test_attention_n(2, 33, 2, 18, true);
    if (!quick) {
        test_attention_n(2, 1024, 2, 72, true);
        test_attention_n(1, 4096, 1, 72, true);
    }

    /* text encoder self-attention (packed, keys stop at the prompt length) and DiT cross-
     * attention to the text (separate buffers, odd strides) */
    test_cross_attention(77, 12, 77, 4, 64, true);
    test_cross_attention(77, 1, 77, 2, 96, true);
    test_cross_attention(257, 30, 77, 3, 72, false);
    test_cross_attention(100, 77, 80, 2, 88, false);
    test_cross_attention(33, 50, 50, 2, 128, false);
    test_cross_attention(7, 19, 19, 1, 1, false);
    test_cross_attention(40, 70, 70, 2, 200, false);
    test_cross_attention(64, 64, 64, 1, 512, false); /* the VAE's single head */
    test_cross_attention(9, 33, 33, 1, 700, false);
    test_cross_attention(11, 21, 21, 1, 300, false);
    test_cross_attention(5, 9, 9, 1, 1024, false); /* the widest head supported */
    if (!quick) {
        test_cross_attention(7, 4096, 4100, 2, 72, false);
        test_cross_attention(16384, 77, 77, 1, 72, false);
        test_cross_attention(256, 1024, 1024, 1, 512, false);
        test_cross_attention(1024, 4096, 4096, 1, 128, false);
    }

    /* expert choice: short last group (257 = 4·64 + 1), C clamped to the group (f·S/E > S),
     * ties, E 256, one group of 4096 (largest shared-memory sort), one above it (ranking) */
    test_router_expert_choice(2, 257, 64, 96, 8, 2.0f, true);
    test_router_expert_choice(1, 100, 30, 1152, 4, 8.0f, true);
    test_router_expert_choice(3, 7, 0, 1408, 16, 1.0f, false);
    test_router_expert_choice(1, 300, 0, 64, 256, 1.5f, true);
    test_router_expert_choice(2, 64, 0, 40, 16, 10.0f, true); /* 1280 pairs */
    test_router_expert_choice(1, 1, 0, 33, 5, 1.0f, false);
    if (!quick) {
        test_router_expert_choice(1, 4096, 0, 128, 16, 1.0f, true);
        test_router_expert_choice(1, 5000, 0, 32, 4, 1.0f, true);
    }
    /* the largest group the shared-memory sort takes; one token more (radix selection of
     * C ≤ MK_EC_SORT_MAX, then the sort), with a short last group too; C above
     * MK_EC_SORT_MAX (ranking) */
    test_router_expert_choice(1, MK_EC_SORT_MAX, 0, 8, 2, 1.0f, true);
    test_router_expert_choice(1, MK_EC_SORT_MAX + 1, 0, 8, 2, 1.5f, true);
    test_router_expert_choice(2, 6000, 5000, 8, 4, 2.0f, true);
    test_router_expert_choice(1, MK_EC_SORT_MAX + 1, 0, 8, 2, 2.5f, true);

    /* expert-choice MoE: every expert M rows (0, 1, some, all of N), shared or not, bf16 */
    test_moe_expert_choice(100, 96, 40, 48, 4, 30, false);
    test_moe_expert_choice(100, 96, 40, 48, 4, 30, true);
    test_moe_expert_choice(70, 64, 72, 0, 3, 70, false);   /* every expert takes all */
    test_moe_expert_choice(50, 64, 32, 24, 5, 1, false);   /* one token each          */
    test_moe_expert_choice(50, 64, 32, 24, 5, 0, false);   /* none: shared only       */
    test_moe_expert_choice(200, 40, 24, 16, 16, 80, false); /* 1280 (token, expert) pairs */
    test_moe_expert_choice(65, 1152, 64, 32, 2, 65, false);
    if (!quick)
        test_moe_expert_choice(257, 1408, 96, 64, 8, 96, true);

    test_layernorm_affine(7, 1152, false);
    test_layernorm_affine(257, 768, true);
    test_layernorm_affine(1, 1408, false);
    test_text_small_ops();

    test_im2col(3, 13, 17, 3, 1, false);
    test_im2col(5, 16, 16, 3, 2, false);
    test_im2col(4, 9, 11, 1, 1, false);
    test_im2col(3, 20, 15, 3, 1, true);
    test_group_norm(64, 17, 33, 32, true);
    test_group_norm(96, 8, 8, 32, false);
    if (!quick)
        test_group_norm(512, 64, 64, 32, true);
    else
        test_group_norm(512, 16, 16, 32, true);
    test_image_small_ops(5, 9, 11);
    test_image_small_ops(3, 64, 70);

    return test_finish("cuda_kernels");
}
