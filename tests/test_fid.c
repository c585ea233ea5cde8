/* test_fid.c — engine/fid.c: the Jacobi eigensolver, the feature statistics and the Fréchet
 * distance.
 *
 *  - eigendecompositions of random symmetric matrices, sizes on both sides of the blocked
 *    path (n > 32) with a ragged last block: reconstruction and orthogonality to 1e-12,
 *    ascending order, the same eigenvalues without eigenvectors; diagonal, zero and
 *    repeated-eigenvalue matrices; non-finite input refused;
 *  - FID of a feature set with itself ≈ 0;
 *  - FID against closed forms: diagonal covariances, and the same rotated by a random
 *    orthogonal matrix (commuting covariances): Σ (√a − √b)² + |Δμ|²;
 *  - FID against classifier_ref.frechet_distance on the float32 inputs stored in
 *    tests/golden/classifier_tiny.ref.safetensors (24-dim feature sets, 80-dim statistics);
 *  - timing of a 256-dim FID (512 with MOIRE_FID_BENCH=1).
 */
#include "fid.h"
#include "internal.h"
#include "safetensors.h"
#include "test_util.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EIGEN_TOLERANCE 1e-12
#define GOLDEN_TOLERANCE 1e-9 /* float64 on both sides from identical float32 inputs */

/* A random symmetric matrix [n, n] with entries in [-1, 1). */
static double *random_symmetric(int n, uint64_t seed)
{
    const size_t size = (size_t)n;
    float *raw = malloc(size * size * sizeof(float));
    double *a = malloc(size * size * sizeof(double));
    test_fill_random(raw, (int64_t)(size * size), seed, -1.0f, 1.0f);
    for (size_t i = 0; i < size; i++)
        for (size_t j = i; j < size; j++)
            a[i * size + j] = a[j * size + i] = raw[i * size + j];
    free(raw);
    return a;
}

/* ‖a − Σ λ_i v_i v_iᵀ‖_F / ‖a‖_F and ‖V Vᵀ − I‖_F. */
static void decomposition_errors(const double *a, int n, const double *values,
                                 const double *vectors, double *reconstruction,
                                 double *orthogonality)
{
    const size_t size = (size_t)n;
    double diff = 0.0, norm = 0.0, ortho = 0.0;
    for (size_t i = 0; i < size; i++)
        for (size_t j = 0; j < size; j++) {
            double sum = 0.0, dot = 0.0;
            for (size_t k = 0; k < size; k++) {
                sum += values[k] * vectors[k * size + i] * vectors[k * size + j];
                dot += vectors[i * size + k] * vectors[j * size + k];
            }
            const double d = a[i * size + j] - sum, o = dot - (i == j ? 1.0 : 0.0);
            diff += d * d;
            norm += a[i * size + j] * a[i * size + j];
            ortho += o * o;
        }
    *reconstruction = norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
    *orthogonality = sqrt(ortho);
}

static void check_decomposition(const char *label, const double *a, int n)
{
    const size_t size = (size_t)n;
    double *values = malloc(size * sizeof(double)), *only = malloc(size * sizeof(double));
    double *vectors = malloc(size * size * sizeof(double));
    moire_status status = fid_symmetric_eigen(a, n, values, vectors);
    CHECK(status == MOIRE_OK, "%s: %s", label, moire_last_error());
    status = fid_symmetric_eigen(a, n, only, NULL);
    CHECK(status == MOIRE_OK, "%s without vectors: %s", label, moire_last_error());
    double reconstruction, orthogonality, worst_only = 0.0, scale = 0.0;
    decomposition_errors(a, n, values, vectors, &reconstruction, &orthogonality);
    bool ascending = true;
    for (size_t i = 0; i < size; i++) {
        scale = fmax(scale, fabs(values[i]));
        worst_only = fmax(worst_only, fabs(values[i] - only[i]));
        if (i > 0 && values[i] < values[i - 1])
            ascending = false;
    }
    const bool ok = reconstruction <= EIGEN_TOLERANCE && orthogonality <= EIGEN_TOLERANCE &&
                    ascending && worst_only <= EIGEN_TOLERANCE * fmax(scale, 1.0);
    CHECK(ok, "%s: reconstruction %.2e, orthogonality %.2e, ascending %d, values-only diff "
              "%.2e", label, reconstruction, orthogonality, ascending, worst_only);
    printf("%s eigen %-30s n=%-4d reconstruction=%.1e orthogonality=%.1e\n",
           ok ? "OK    " : "NOT OK", label, n, reconstruction, orthogonality);
    free(values), free(only), free(vectors);
}

static void test_eigen(void)
{
    const int sizes[] = {1, 2, 5, 24, 32, 33, 47, 80, 130};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        double *a = random_symmetric(sizes[s], 100 + s);
        check_decomposition("random symmetric", a, sizes[s]);
        free(a);
    }

    /* Already diagonal (nothing to rotate), all zero, and a repeated eigenvalue: 3·I + u uᵀ
       has eigenvalue 3 with multiplicity n − 1. */
    const int n = 40;
    double *a = calloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n; i++)
        a[i * n + i] = (double)((i * 7) % 11) - 5.0;
    check_decomposition("diagonal", a, n);
    memset(a, 0, (size_t)n * n * sizeof(double));
    check_decomposition("zero", a, n);
    float u[40];
    test_fill_random(u, n, 7, -1.0f, 1.0f);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            a[i * n + j] = (i == j ? 3.0 : 0.0) + (double)u[i] * (double)u[j];
    check_decomposition("repeated eigenvalue", a, n);
    double values[40];
    fid_symmetric_eigen(a, n, values, NULL);
    int threes = 0;
    for (int i = 0; i < n; i++)
        threes += fabs(values[i] - 3.0) < 1e-12;
    CHECK(threes == n - 1, "repeated eigenvalue: %d eigenvalues are 3, want %d", threes, n - 1);

    a[5 * n + 9] = NAN;
    CHECK(fid_symmetric_eigen(a, n, values, NULL) == MOIRE_ERROR_INVALID_ARGUMENT,
          "NaN input must be refused");
    CHECK(strstr(moire_last_error(), "not finite") != NULL, "message: %s", moire_last_error());
    free(a);
}

/* ---- Fréchet distance ------------------------------------------------------------------ */

static void check_value(const char *label, double got, double want, double tolerance)
{
    const double rel = fabs(got - want) / fmax(fabs(want), 1e-300);
    const bool ok = rel <= tolerance;
    CHECK(ok, "%s: %.17g, want %.17g", label, got, want);
    printf("%s fid   %-30s got=%.12f want=%.12f rel=%.1e (tol %.0e)\n",
           ok ? "OK    " : "NOT OK", label, got, want, rel, tolerance);
}

static void test_self_distance(void)
{
    const int dims[] = {24, 80};
    for (int d = 0; d < 2; d++) {
        const int count = 300, dim = dims[d];
        float *features = malloc((size_t)count * dim * sizeof(float));
        test_fill_random(features, (int64_t)count * dim, 11 + d, -1.0f, 2.0f);
        /* correlate neighbouring dimensions so the covariance is not near-diagonal */
        for (int i = 0; i < count; i++)
            for (int j = 1; j < dim; j++)
                features[i * dim + j] += 0.7f * features[i * dim + j - 1];
        double *mu = malloc(dim * sizeof(double));
        double *sigma = malloc((size_t)dim * dim * sizeof(double));
        CHECK(fid_statistics(features, count, dim, mu, sigma) == MOIRE_OK, "%s",
              moire_last_error());
        double distance = 1.0, trace = 0.0;
        CHECK(fid_frechet_distance(mu, sigma, mu, sigma, dim, &distance) == MOIRE_OK, "%s",
              moire_last_error());
        for (int i = 0; i < dim; i++)
            trace += sigma[i * dim + i];
        const bool ok = fabs(distance) <= 1e-12 * trace;
        CHECK(ok, "FID of a set with itself: %.3e (trace %.3f)", distance, trace);
        printf("%s fid   self, dim %-24d %.2e (trace %.1f)\n", ok ? "OK    " : "NOT OK", dim,
               distance, trace);
        free(features), free(mu), free(sigma);
    }
}

/* Σ (√a_i − √b_i)² + |Δμ|² for covariances Q diag(a) Qᵀ and Q diag(b) Qᵀ (Q = I or random
 * orthogonal): the two commute, so (S1^½ S2 S1^½)^½ = Q diag(√(a b)) Qᵀ. */
static void test_closed_form(void)
{
    const int dim = 50;
    const size_t n = dim;
    float a[50], b[50], mu1[50], mu2[50];
    test_fill_random(a, dim, 21, 0.1f, 4.0f);
    test_fill_random(b, dim, 22, 0.1f, 4.0f);
    test_fill_random(mu1, dim, 23, -1.0f, 1.0f);
    test_fill_random(mu2, dim, 24, -1.0f, 1.0f);
    a[3] = 0.0f; /* a singular covariance: the clipped square root must handle it */
    double want = 0.0, m1[50], m2[50];
    for (int i = 0; i < dim; i++) {
        const double d = sqrt((double)a[i]) - sqrt((double)b[i]), dm = (double)mu1[i] - mu2[i];
        want += d * d + dm * dm;
        m1[i] = mu1[i];
        m2[i] = mu2[i];
    }
    double *q = malloc(n * n * sizeof(double)), *eigen = malloc(n * sizeof(double));
    double *s1 = calloc(n * n, sizeof(double)), *s2 = calloc(n * n, sizeof(double));
    double *random = random_symmetric(dim, 31);
    fid_symmetric_eigen(random, dim, eigen, q); /* rows of q: a random orthonormal basis */
    for (int rotated = 0; rotated < 2; rotated++) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double x = 0.0, y = 0.0;
                for (size_t k = 0; k < n; k++) {
                    const double qi = rotated ? q[k * n + i] : (double)(k == i);
                    const double qj = rotated ? q[k * n + j] : (double)(k == j);
                    x += qi * (double)a[k] * qj;
                    y += qi * (double)b[k] * qj;
                }
                s1[i * n + j] = x;
                s2[i * n + j] = y;
            }
        double got = NAN;
        CHECK(fid_frechet_distance(m1, s1, m2, s2, dim, &got) == MOIRE_OK, "%s",
              moire_last_error());
        /* Rotated, the zero eigenvalue comes back as ±1e-16 and its square root, 1e-8,
           enters the trace twice: that case is exact only to ~1e-9 (numpy's too). */
        check_value(rotated ? "closed form, rotated" : "closed form, diagonal", got, want,
                    rotated ? 1e-8 : 1e-12);
    }
    free(q), free(eigen), free(s1), free(s2), free(random);
}

static double golden_number(JsonObject *golden, const char *key)
{
    const char *text = json_object_has_member(golden, key)
                           ? json_object_get_string_member(golden, key)
                           : NULL;
    return text ? g_ascii_strtod(text, NULL) : NAN;
}

static void test_against_python(void)
{
    const char *path = test_data_path("golden/classifier_tiny.ref.safetensors");
    st_file *ref = NULL;
    if (st_open(path, &ref) != MOIRE_OK) {
        CHECK(false, "cannot open %s: %s", path, moire_last_error());
        return;
    }
    JsonParser *parser = json_parser_new();
    const char *json = st_metadata_get(ref, "moire.golden");
    CHECK(json && json_parser_load_from_data(parser, json, -1, NULL), "moire.golden metadata");
    JsonObject *golden = json_node_get_object(json_parser_get_root(parser));

    /* 24-dim feature sets: statistics and distance on the C side. */
    int64_t na = 0, nb = 0;
    float *fa = test_ref_tensor(ref, "fid.a", &na), *fb = test_ref_tensor(ref, "fid.b", &nb);
    const int dim = 24, count = (int)(na / dim);
    double mu1[24], mu2[24], s1[24 * 24], s2[24 * 24], got = NAN;
    CHECK(fa && fb && na == nb && count == 300, "fid.a / fid.b [300, 24]");
    if (fa && fb && count == 300) {
        CHECK(fid_statistics(fa, count, dim, mu1, s1) == MOIRE_OK, "%s", moire_last_error());
        CHECK(fid_statistics(fb, count, dim, mu2, s2) == MOIRE_OK, "%s", moire_last_error());
        CHECK(fid_frechet_distance(mu1, s1, mu2, s2, dim, &got) == MOIRE_OK, "%s",
              moire_last_error());
        check_value("python, 24-dim feature sets", got, golden_number(golden, "fid_ab"),
                    GOLDEN_TOLERANCE);
    }
    free(fa), free(fb);

    /* 80-dim statistics: the blocked eigensolver. */
    float *f[4] = {test_ref_tensor(ref, "fid80.mu1", NULL),
                   test_ref_tensor(ref, "fid80.sigma1", NULL),
                   test_ref_tensor(ref, "fid80.mu2", NULL),
                   test_ref_tensor(ref, "fid80.sigma2", NULL)};
    const int sizes[4] = {80, 80 * 80, 80, 80 * 80};
    double *d[4];
    for (int i = 0; i < 4; i++) {
        d[i] = malloc(sizes[i] * sizeof(double));
        for (int j = 0; f[i] && j < sizes[i]; j++)
            d[i][j] = f[i][j];
    }
    CHECK(f[0] && f[1] && f[2] && f[3], "fid80.* tensors");
    if (f[0] && f[1] && f[2] && f[3]) {
        CHECK(fid_frechet_distance(d[0], d[1], d[2], d[3], 80, &got) == MOIRE_OK, "%s",
              moire_last_error());
        check_value("python, 80-dim statistics", got, golden_number(golden, "fid80"),
                    GOLDEN_TOLERANCE);
    }
    for (int i = 0; i < 4; i++)
        free(f[i]), free(d[i]);
    g_object_unref(parser);
    st_close(ref);
}

static void test_errors(void)
{
    float one[3] = {1, 2, 3};
    double mu[3], sigma[9];
    CHECK(fid_statistics(one, 1, 3, mu, sigma) == MOIRE_ERROR_INVALID_ARGUMENT,
          "one feature vector has no covariance");
    CHECK(strstr(moire_last_error(), "at least 2") != NULL, "message: %s", moire_last_error());
    float bad[6] = {1, 2, 3, 4, INFINITY, 6};
    CHECK(fid_statistics(bad, 2, 3, mu, sigma) == MOIRE_ERROR_INVALID_ARGUMENT,
          "an infinite feature is refused");
    CHECK(strstr(moire_last_error(), "not finite") != NULL, "message: %s", moire_last_error());
}

static void time_distance(int dim)
{
    const size_t n = (size_t)dim;
    const int count = 2 * dim;
    float *x = malloc((size_t)count * n * sizeof(float));
    float *y = malloc((size_t)count * n * sizeof(float));
    test_fill_random(x, (int64_t)(count * n), 41, 0.0f, 1.0f);
    test_fill_random(y, (int64_t)(count * n), 42, 0.0f, 1.0f);
    for (int i = 0; i < count; i++)
        for (size_t j = 1; j < n; j++)
            x[i * n + j] += 0.5f * x[i * n + j - 1];
    double *mu1 = malloc(n * sizeof(double)), *mu2 = malloc(n * sizeof(double));
    double *s1 = malloc(n * n * sizeof(double)), *s2 = malloc(n * n * sizeof(double));
    fid_statistics(x, count, dim, mu1, s1);
    fid_statistics(y, count, dim, mu2, s2);
    double distance = NAN;
    const double started = clock_now_seconds();
    const moire_status status = fid_frechet_distance(mu1, s1, mu2, s2, dim, &distance);
    const double took = clock_now_seconds() - started;
    CHECK(status == MOIRE_OK && isfinite(distance), "dim %d: %s", dim, moire_last_error());
    printf("       FID of %d-dim statistics: %.3f s (%.3f)\n", dim, took, distance);
    free(x), free(y), free(mu1), free(mu2), free(s1), free(s2);
}

int main(void)
{
    test_eigen();
    test_self_distance();
    test_closed_form();
    test_against_python();
    test_errors();
    time_distance(256);
    if (getenv("MOIRE_FID_BENCH"))
        time_distance(512);
    return test_finish("fid");
}
