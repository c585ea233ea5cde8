/* ops_cpu_common.c — what every part of the CPU backend (ops_cpu*.c) uses: the threaded GEMM,
 * the op-call counter, the host view of a weight, and the row helpers of the attention and
 * MoE ops (softmax rows, one SwiGLU expert on gathered rows).
 */
#include "dit_layout.h"
#include "internal.h"
#include "ops.h"
#include "ops_cpu_parts.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* C[M,N] = alpha · A[M,K] · op(B), op(B) = Bᵀ for B [N,K] (b_transposed) or B for B [K,N].
 * Split across the op table's threads by rows of C, or by columns when M is too small to
 * split. Each element's K-reduction is done by one single-threaded sgemm, so for a given
 * thread count results are deterministic. */
static void gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    const CBLAS_TRANSPOSE tb = b_transposed ? CblasTrans : CblasNoTrans;
    const int threads = ops->n_threads;
    if (threads <= 1 || 2.0 * M * N * K < 4e6) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, N, K, alpha, A, lda, B, ldb, 0.0f, C,
                    ldc);
        return;
    }
    if (M >= 8 * threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            const int m0 = (int)((int64_t)M * part / threads);
            const int m1 = (int)((int64_t)M * (part + 1) / threads);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m1 - m0, N, K, alpha,
                        A + (size_t)m0 * lda, lda, B, ldb, 0.0f, C + (size_t)m0 * ldc, ldc);
        }
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            const int n0 = (int)((int64_t)N * part / threads);
            const int n1 = (int)((int64_t)N * (part + 1) / threads);
            const float *b_part = b_transposed ? B + (size_t)n0 * ldb : B + n0;
            if (n1 > n0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, n1 - n0, K, alpha, A, lda,
                            b_part, ldb, 0.0f, C + n0, ldc);
        }
    }
}

void ops_cpu_gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    gemm(ops, b_transposed, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

/* Every op entry counts itself (ops_cpu_calls): a model run on another backend must not
 * move this counter, which is how the tests prove that nothing fell back to the host. */
atomic_uint_fast64_t ops_cpu_call_count;

uint64_t ops_cpu_calls(void)
{
    return (uint64_t)atomic_load(&ops_cpu_call_count);
}


const float *ops_cpu_host_of(const moire_tensor *t)
{
    return tensor_present(t) ? (const float *)t->data : NULL;
}

/* Each of the `rows` rows of scores[rows, cols] becomes its softmax, in place: the row's
 * maximum subtracted before exp (no overflow), the sum in double. The attention ops' middle
 * step; parallel over rows when the work is large. */
void ops_cpu_softmax_rows(const moire_ops *ops, float *scores, int rows, int cols)
{
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)rows * cols > PARALLEL_MIN_WORK)
    for (int t = 0; t < rows; t++) {
        float *row = scores + (size_t)t * cols;
        float max = -FLT_MAX;
        for (int j = 0; j < cols; j++)
            max = fmaxf(max, row[j]);
        double sum = 0.0;
        for (int j = 0; j < cols; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < cols; j++)
            row[j] *= inv;
    }
}

/* Expert e of a stack on m gathered rows: out[m,D] = down(SiLU(gate(x)) ⊙ up(x)).
 * scratch holds 2·m·F floats. */
void ops_cpu_swiglu_rows(const moire_ops *ops, float *out, const float *x, int m, int D,
                         const moire_swiglu *mlp, int e, float *scratch)
{
    const int F = mlp->hidden;
    float *gate = scratch, *up = scratch + (size_t)m * F;
    gemm(ops, true, m, F, D, 1.0f, x, D, tensor_part(&mlp->gate_up, 2 * e), D, gate, F);
    gemm(ops, true, m, F, D, 1.0f, x, D, tensor_part(&mlp->gate_up, 2 * e + 1), D, up, F);
    const int64_t count = (int64_t)m * F;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        gate[i] = silu(gate[i]) * up[i];
    gemm(ops, true, m, D, F, 1.0f, gate, F, tensor_part(&mlp->down, e), F, out, D);
}

int ops_cpu_widest(const moire_swiglu *a, const moire_swiglu *b)
{
    const int wa = swiglu_present(a) ? a->hidden : 0;
    const int wb = swiglu_present(b) ? b->hidden : 0;
    return wa > wb ? wa : wb;
}
