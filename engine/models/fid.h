/* fid.h — Gaussian feature statistics and the Fréchet distance between two Gaussians (FID),
 * in double precision, with the symmetric eigensolver they need (cyclic Jacobi).
 *
 * The formula is tools/golden/classifier_ref.frechet_distance, the spec:
 *
 *     d² = |mu1 − mu2|² + Tr(S1) + Tr(S2) − 2 Tr((S1^½ S2 S1^½)^½)
 *
 * with S1^½ from the eigendecomposition of S1 (negative eigenvalues clipped to 0) and the last
 * trace the sum of the square roots of the eigenvalues of the symmetrised S1^½ S2 S1^½ (again
 * clipped). For symmetric positive semi-definite S1, S2 this equals the usual
 * Tr(sqrtm(S1 S2)) form, without the complex matrix square root of a non-symmetric product.
 *
 * Matrices are dense, row-major, [dim, dim]. Nothing here depends on the classifier: any
 * [count, dim] feature set works.
 */
#ifndef MOIRE_FID_H
#define MOIRE_FID_H

#include "moire.h"

/* Mean [dim] and unbiased covariance [dim, dim] (divided by count − 1, as np.cov) of
 * features [count, dim]. count >= 2; every feature must be finite. */
moire_status fid_statistics(const float *features, int count, int dim, double *mean,
                            double *covariance);

/* Eigendecomposition of the symmetric matrix a [n, n] (only its upper triangle is read) by
 * cyclic Jacobi rotations: eigenvalues [n] in ascending order and, when eigenvectors is not
 * NULL, the orthonormal eigenvectors as its rows [n, n] (row i belongs to eigenvalue i), so
 * a = Σ_i eigenvalues[i] · v_i v_iᵀ. Fails on non-finite input or if the rotations do not
 * converge (they always do for finite input; the limit is a guard). */
moire_status fid_symmetric_eigen(const double *a, int n, double *eigenvalues,
                                 double *eigenvectors);

/* The Fréchet distance (squared, the FID convention) between N(mu1, sigma1) and
 * N(mu2, sigma2); mu [dim], sigma [dim, dim] symmetric. */
moire_status fid_frechet_distance(const double *mu1, const double *sigma1, const double *mu2,
                                  const double *sigma2, int dim, double *out_distance);

#endif /* MOIRE_FID_H */
