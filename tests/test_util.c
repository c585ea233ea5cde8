/* test_util.c — see test_util.h. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int test_failures = 0;
int test_checks = 0;

double test_rel_error(const float *a, const float *b, int64_t n)
{
    double diff = 0.0, ref = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        diff += d * d;
        ref += (double)b[i] * (double)b[i];
    }
    if (!isfinite(diff))
        return INFINITY;
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

double test_max_abs_diff(const float *a, const float *b, int64_t n)
{
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst))
            worst = d; /* also catches NaN */
    }
    return worst;
}

void test_fill_random(float *x, int64_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        double u = (double)(s >> 11) / (double)(1ull << 53);
        x[i] = (float)(lo + (hi - lo) * u);
    }
}

bool test_check_tensor(const char *name, const float *got, const float *want, int64_t n,
                       double tolerance)
{
    double rel = test_rel_error(got, want, n);
    double mad = test_max_abs_diff(got, want, n);
    bool ok = rel <= tolerance;
    test_checks++;
    if (!ok)
        test_failures++;
    printf("%s %-40s n=%-8lld rel=%.3e maxabs=%.3e (tol %.0e)\n", ok ? "OK    " : "NOT OK", name,
           (long long)n, rel, mad, tolerance);
    return ok;
}

int test_finish(const char *test_name)
{
    printf("%s: checks: %d, failures: %d\n", test_name, test_checks, test_failures);
    return test_failures == 0 ? 0 : 1;
}

const char *test_data_path(const char *relative)
{
    static char path[4096];
    const char *root = getenv("MOIRE_TEST_DATA");
#ifdef MOIRE_TEST_DATA
    if (!root)
        root = MOIRE_TEST_DATA;
#endif
    if (!root)
        root = ".";
    snprintf(path, sizeof path, "%s/%s", root, relative);
    return path;
}

const char *test_tmp_dir(void)
{
    static char dir[256];
    if (!dir[0]) {
        strcpy(dir, "/tmp/moire-test-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return dir;
}

float *test_ref_tensor(const st_file *ref, const char *name, int64_t *numel)
{
    const st_tensor *t = st_find(ref, name);
    if (!t)
        return NULL;
    float *data = malloc((size_t)t->numel * sizeof(float));
    if (t->dtype == ST_I32) {
        for (int64_t i = 0; i < t->numel; i++)
            data[i] = (float)((const int32_t *)t->data)[i];
    } else {
        st_convert_to_f32(data, t->data, t->dtype, t->numel);
    }
    if (numel)
        *numel = t->numel;
    return data;
}
