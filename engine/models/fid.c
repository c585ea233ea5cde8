/* fid.c — feature statistics, a cyclic Jacobi eigensolver for symmetric matrices and the
 * Fréchet distance built on them (fid.h; the spec is tools/golden/classifier_ref.py).
 *
 * Why Jacobi: it is short, needs no LAPACK, and is among the most accurate symmetric
 * eigensolvers (small eigenvalues come out with small relative error, which matters when a
 * covariance is nearly singular). Its cost is about ten sweeps of n²/2 rotations of O(n)
 * each. One rotation at a time, that is strided memory traffic: a whole 512-dim FID took
 * 14 s. The sweeps here group the rotations by index blocks and apply each group's product
 * to the rest of the matrix with GEMMs (jacobi_blocked_sweep): 1.1 s for 512 dimensions and
 * 0.14 s for 256 (tests/test_fid.c, on a busy 2-core machine). The n³ products around the
 * eigendecompositions are BLAS too.
 */
#include "fid.h"

#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sweeps before giving up; finite input converges in about 10 (quadratically once the
 * off-diagonal part is small). */
#define JACOBI_MAX_SWEEPS 64
/* Converged when ‖offdiag(A)‖_F <= this · ‖A‖_F: the eigenvalues are then exact to that
 * relative level, far below what the FID needs, and rounding no longer gets in the way. */
#define JACOBI_TOLERANCE 1e-14
/* Index block of the blocked sweeps: pairs of blocks form 2b×2b sub-problems whose rotations
 * reach the rest of the matrix as GEMMs. Matrices up to 2b use the scalar sweep directly. */
#define JACOBI_BLOCK 16

moire_status fid_statistics(const float *features, int count, int dim, double *mean,
                            double *covariance)
{
    if (!features || !mean || !covariance || dim < 1)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "fid_statistics: features, mean and covariance are required and dim "
                          "must be positive (got %d)", dim);
    if (count < 2)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "FID statistics need at least 2 feature vectors for a covariance "
                          "(got %d); evaluate more images", count);
    const size_t rows = (size_t)count, cols = (size_t)dim;
    double *centered = malloc_array(rows * cols, sizeof(double)); /* [count, dim] */
    if (!centered)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "out of memory for the statistics of %d features of size %d", count,
                          dim);
    for (size_t j = 0; j < cols; j++)
        mean[j] = 0.0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            const float value = features[i * cols + j];
            if (!isfinite(value)) {
                free(centered);
                return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                                  "feature %zu of image %zu is not finite (%g); the classifier "
                                  "or its input is broken", j, i, (double)value);
            }
            mean[j] += value;
        }
    for (size_t j = 0; j < cols; j++)
        mean[j] /= (double)count;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            centered[i * cols + j] = (double)features[i * cols + j] - mean[j];
    /* covariance [dim, dim] = centeredᵀ · centered / (count − 1), unbiased like np.cov */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, count,
                1.0 / (double)(count - 1), centered, dim, centered, dim, 0.0, covariance, dim);
    /* The GEMM need not be bit-symmetric; the statistics are stored, so make them exact. */
    for (size_t i = 0; i < cols; i++)
        for (size_t j = i + 1; j < cols; j++) {
            const double average = 0.5 * (covariance[i * cols + j] + covariance[j * cols + i]);
            covariance[i * cols + j] = covariance[j * cols + i] = average;
        }
    free(centered);
    return MOIRE_OK;
}

/* Rotates rows p and q of a [*, n] row-major matrix: (r_p, r_q) ← (c·r_p − s·r_q,
 * s·r_p + c·r_q), in the tau form (tau = s / (1 + c)) that loses less to rounding. */
static void rotate_rows(double *row_p, double *row_q, int n, double s, double tau)
{
    for (int k = 0; k < n; k++) {
        const double g = row_p[k], h = row_q[k];
        row_p[k] = g - s * (h + g * tau);
        row_q[k] = h + s * (g - h * tau);
    }
}

/* One cyclic sweep of Jacobi rotations over the pairs p < q of the full symmetric matrix
 * a [m, m], each zeroing a_pq: a ← Jᵀ a J. split 0 visits every pair; split > 0 only the
 * pairs across it (p < split <= q). The rotations are accumulated into the rows of qt [m, m]
 * (qt ← Jᵀ qt) when it is not NULL. Elements too small to change either diagonal entry are
 * left alone. Returns the number of rotations. */
static int jacobi_sweep(double *a, int m, double *qt, int split)
{
    const size_t size = (size_t)m;
    const size_t p_end = split > 0 ? (size_t)split : size;
    int rotations = 0;
    for (size_t p = 0; p < p_end; p++) {
        for (size_t q = split > 0 ? (size_t)split : p + 1; q < size; q++) {
            double *row_p = a + p * size, *row_q = a + q * size;
            const double apq = row_p[q], app = row_p[p], aqq = row_q[q];
            const double g = 100.0 * fabs(apq);
            if (apq == 0.0 ||
                (fabs(app) + g == fabs(app) && fabs(aqq) + g == fabs(aqq)))
                continue;
            /* The angle that zeroes a_pq: t = tan θ, the root of smaller magnitude. */
            const double diff = aqq - app;
            double t;
            if (fabs(diff) + g == fabs(diff)) {
                t = apq / diff;
            } else {
                const double theta = 0.5 * diff / apq;
                t = 1.0 / (fabs(theta) + sqrt(1.0 + theta * theta));
                if (theta < 0.0)
                    t = -t;
            }
            const double c = 1.0 / sqrt(1.0 + t * t), s = t * c, tau = s / (1.0 + c);
            /* Rows p and q (contiguous), then the same values mirrored into the columns. */
            rotate_rows(row_p, row_q, m, s, tau);
            row_p[p] = app - t * apq;
            row_q[q] = aqq + t * apq;
            row_p[q] = row_q[p] = 0.0;
            for (size_t k = 0; k < size; k++) {
                if (k == p || k == q)
                    continue;
                a[k * size + p] = row_p[k];
                a[k * size + q] = row_q[k];
            }
            if (qt)
                rotate_rows(qt + p * size, qt + q * size, m, s, tau);
            rotations++;
        }
    }
    return rotations;
}

/* Σ_{p≠q} a_pq² and Σ a_pq² of a [n, n]. */
static void squared_norms(const double *a, int n, double *off_diagonal, double *total)
{
    double off = 0.0, diagonal = 0.0;
    for (size_t p = 0; p < (size_t)n; p++)
        for (size_t q = 0; q < (size_t)n; q++) {
            const double value = a[p * (size_t)n + q];
            if (p == q)
                diagonal += value * value;
            else
                off += value * value;
        }
    *off_diagonal = off;
    *total = off + diagonal;
}

/* Scratch of the blocked sweeps: the 2b×2b sub-problem and the rows it mixes. */
typedef struct jacobi_scratch {
    double *sub;       /* [m, m]  a restricted to the rows and columns of blocks I ∪ J   */
    double *sub_qt;    /* [m, m]  the sub-problem's accumulated rotation, transposed     */
    double *gathered;  /* [m, n]  rows I ∪ J of a (or of the eigenvectors)               */
    double *rotated;   /* [m, n]  sub_qt · gathered                                      */
    int *index;        /* [m]     the rows of I, then those of J                         */
} jacobi_scratch;

/* rows[index[i]] ← (sub_qt · rows[index])[i] for the m listed rows of rows [*, n]; the result
 * stays in scratch->rotated. */
static void rotate_listed_rows(double *rows, int n, int m, jacobi_scratch *scratch)
{
    const size_t width = (size_t)n;
    for (int i = 0; i < m; i++)
        memcpy(scratch->gathered + (size_t)i * width, rows + (size_t)scratch->index[i] * width,
               width * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0, scratch->sub_qt, m,
                scratch->gathered, n, 0.0, scratch->rotated, n);
    for (int i = 0; i < m; i++)
        memcpy(rows + (size_t)scratch->index[i] * width, scratch->rotated + (size_t)i * width,
               width * sizeof(double));
}

/* The rotations of one sub-problem: a[S, S] for the m indices S = scratch->index (block I,
 * then block J when split > 0) goes through jacobi_sweep, and its accumulated rotation Q
 * reaches the rest of a and v with GEMMs: rows S of a ← Qᵀ rows, columns S ← their transpose
 * (a is symmetric), the S×S block ← the sweep's result, rows S of v ← Qᵀ rows. */
static int jacobi_sub_problem(double *a, int n, double *v, int m, int split,
                              jacobi_scratch *scratch)
{
    const size_t width = (size_t)n, sub_size = (size_t)m;
    const int *index = scratch->index;
    for (size_t i = 0; i < sub_size; i++)
        for (size_t j = 0; j < sub_size; j++) {
            scratch->sub[i * sub_size + j] = a[(size_t)index[i] * width + (size_t)index[j]];
            scratch->sub_qt[i * sub_size + j] = i == j ? 1.0 : 0.0;
        }
    const int rotations = jacobi_sweep(scratch->sub, m, scratch->sub_qt, split);
    if (rotations == 0)
        return 0;
    rotate_listed_rows(a, n, m, scratch);
    for (size_t k = 0; k < width; k++)
        for (size_t i = 0; i < sub_size; i++)
            a[k * width + (size_t)index[i]] = scratch->rotated[i * width + k];
    for (size_t i = 0; i < sub_size; i++)
        for (size_t j = 0; j < sub_size; j++)
            a[(size_t)index[i] * width + (size_t)index[j]] = scratch->sub[i * sub_size + j];
    if (v)
        rotate_listed_rows(v, n, m, scratch);
    return rotations;
}

/* One blocked cyclic sweep: the indices fall into blocks of `block`; first the pairs inside
 * each block, then for every pair of blocks I < J the pairs across them. Every pair (p, q)
 * is rotated once, as in a scalar cyclic sweep (a block-cyclic order, which converges the
 * same way), but the O(n) updates of each sub-problem are a few GEMMs instead of one strided
 * pass per rotation. Returns the number of rotations. */
static int jacobi_blocked_sweep(double *a, int n, double *v, int block, jacobi_scratch *scratch)
{
    const int block_count = (n + block - 1) / block;
    int rotations = 0;
    for (int bi = 0; bi < block_count; bi++) {
        int m = 0;
        for (int k = bi * block; k < n && k < (bi + 1) * block; k++)
            scratch->index[m++] = k;
        rotations += jacobi_sub_problem(a, n, v, m, 0, scratch);
    }
    for (int bi = 0; bi < block_count; bi++) {
        for (int bj = bi + 1; bj < block_count; bj++) {
            int m = 0;
            for (int k = bi * block; k < n && k < (bi + 1) * block; k++)
                scratch->index[m++] = k;
            const int split = m;
            for (int k = bj * block; k < n && k < (bj + 1) * block; k++)
                scratch->index[m++] = k;
            rotations += jacobi_sub_problem(a, n, v, m, split, scratch);
        }
    }
    return rotations;
}

moire_status fid_symmetric_eigen(const double *a_in, int n, double *eigenvalues,
                                 double *eigenvectors)
{
    if (!a_in || !eigenvalues || n < 1)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "fid_symmetric_eigen: a matrix and eigenvalues are required and n "
                          "must be positive (got %d)", n);
    const size_t size = (size_t)n;
    const bool blocked = n > 2 * JACOBI_BLOCK;
    const int sub_max = 2 * JACOBI_BLOCK;
    double *a = malloc_array(size * size, sizeof(double)); /* [n, n] working copy */
    jacobi_scratch scratch = {0};
    if (blocked) {
        scratch.sub = malloc_array((size_t)sub_max * sub_max, sizeof(double));
        scratch.sub_qt = malloc_array((size_t)sub_max * sub_max, sizeof(double));
        scratch.gathered = malloc_array((size_t)sub_max * size, sizeof(double));
        scratch.rotated = malloc_array((size_t)sub_max * size, sizeof(double));
        scratch.index = malloc_array((size_t)sub_max, sizeof(int));
    }
    moire_status status = MOIRE_OK;
    if (!a || (blocked && (!scratch.sub || !scratch.sub_qt || !scratch.gathered ||
                           !scratch.rotated || !scratch.index))) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                            "out of memory for the eigendecomposition of a %d×%d matrix", n, n);
        goto done;
    }
    /* The full symmetric matrix from the upper triangle: rotations update two rows
       (contiguous) and mirror them into the two columns. */
    for (size_t i = 0; i < size; i++)
        for (size_t j = i; j < size; j++) {
            const double value = a_in[i * size + j];
            if (!isfinite(value)) {
                status = error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                                    "eigendecomposition: element (%zu, %zu) of the %d×%d "
                                    "matrix is not finite (%g)", i, j, n, n, value);
                goto done;
            }
            a[i * size + j] = a[j * size + i] = value;
        }
    double *v = eigenvectors; /* [n, n] rows = eigenvectors (the columns of V in A = V Λ Vᵀ) */
    if (v) {
        memset(v, 0, size * size * sizeof(double));
        for (size_t i = 0; i < size; i++)
            v[i * size + i] = 1.0;
    }

    /* Sweep until the off-diagonal part is at the rounding level of the whole matrix (each
       sweep squares it once it is small), or until a sweep finds nothing left to rotate. */
    bool converged = false;
    for (int sweep = 0; sweep < JACOBI_MAX_SWEEPS && !converged; sweep++) {
        double off, total;
        squared_norms(a, n, &off, &total);
        if (off <= JACOBI_TOLERANCE * JACOBI_TOLERANCE * total) {
            converged = true;
            break;
        }
        const int rotations = blocked ? jacobi_blocked_sweep(a, n, v, JACOBI_BLOCK, &scratch)
                                      : jacobi_sweep(a, n, v, 0);
        converged = rotations == 0;
    }
    if (!converged) {
        status = error_fail(MOIRE_ERROR_BACKEND,
                            "the Jacobi eigensolver did not converge in %d sweeps on a %d×%d "
                            "matrix; the statistics are probably badly scaled",
                            JACOBI_MAX_SWEEPS, n, n);
        goto done;
    }
    for (size_t i = 0; i < size; i++)
        eigenvalues[i] = a[i * size + i];

    /* Ascending order (selection sort: n swaps of whole rows at most). */
    for (size_t i = 0; i + 1 < size; i++) {
        size_t smallest = i;
        for (size_t j = i + 1; j < size; j++)
            if (eigenvalues[j] < eigenvalues[smallest])
                smallest = j;
        if (smallest == i)
            continue;
        const double value = eigenvalues[i];
        eigenvalues[i] = eigenvalues[smallest];
        eigenvalues[smallest] = value;
        if (v)
            for (size_t k = 0; k < size; k++) {
                const double swap = v[i * size + k];
                v[i * size + k] = v[smallest * size + k];
                v[smallest * size + k] = swap;
            }
    }
done:
    free(a);
    free(scratch.sub), free(scratch.sub_qt), free(scratch.gathered), free(scratch.rotated);
    free(scratch.index);
    return status;
}

moire_status fid_frechet_distance(const double *mu1, const double *sigma1, const double *mu2,
                                  const double *sigma2, int dim, double *out_distance)
{
    if (!mu1 || !sigma1 || !mu2 || !sigma2 || !out_distance || dim < 1)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "fid_frechet_distance: every argument is required and dim must be "
                          "positive (got %d)", dim);
    const size_t n = (size_t)dim;
    double *eigenvalues = malloc_array(n, sizeof(double));
    double *vectors = malloc_array(n * n, sizeof(double)); /* [dim, dim] rows v_i  */
    double *root = malloc_array(n * n, sizeof(double));    /* [dim, dim] S1^½      */
    double *product = malloc_array(n * n, sizeof(double)); /* [dim, dim] S1^½ S2   */
    double *inner = malloc_array(n * n, sizeof(double));   /* [dim, dim] S1^½ S2 S1^½ */
    moire_status status = MOIRE_OK;
    if (!eigenvalues || !vectors || !root || !product || !inner) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                            "out of memory for the Fréchet distance of %d-dimensional features",
                            dim);
        goto done;
    }

    /* S1^½ = Σ_i √max(λ_i, 0) v_i v_iᵀ = Bᵀ B with the rows of B = λ_i^¼ v_i. */
    status = fid_symmetric_eigen(sigma1, dim, eigenvalues, vectors);
    if (status != MOIRE_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        const double scale = sqrt(sqrt(fmax(eigenvalues[i], 0.0)));
        for (size_t k = 0; k < n; k++)
            vectors[i * n + k] *= scale;
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, dim, 1.0, vectors, dim,
                vectors, dim, 0.0, root, dim);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dim, dim, dim, 1.0, root, dim,
                sigma2, dim, 0.0, product, dim);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dim, dim, dim, 1.0, product, dim,
                root, dim, 0.0, inner, dim);
    /* Symmetrised: rounding makes the product slightly asymmetric. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            inner[i * n + j] = inner[j * n + i] = 0.5 * (inner[i * n + j] + inner[j * n + i]);
    status = fid_symmetric_eigen(inner, dim, eigenvalues, NULL);
    if (status != MOIRE_OK)
        goto done;

    double trace_sqrt = 0.0, trace1 = 0.0, trace2 = 0.0, mean_term = 0.0;
    for (size_t i = 0; i < n; i++) {
        trace_sqrt += sqrt(fmax(eigenvalues[i], 0.0));
        trace1 += sigma1[i * n + i];
        trace2 += sigma2[i * n + i];
        const double d = mu1[i] - mu2[i];
        mean_term += d * d;
    }
    const double distance = mean_term + trace1 + trace2 - 2.0 * trace_sqrt;
    if (!isfinite(distance)) {
        status = error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                            "the Fréchet distance is not finite (%g): the means or covariances "
                            "hold non-finite values", distance);
        goto done;
    }
    *out_distance = distance;
done:
    free(eigenvalues), free(vectors), free(root), free(product), free(inner);
    return status;
}
