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

bool test_check_exact(const char *label, const float *got, const float *want, int64_t n)
{
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; i++)
        mismatches += got[i] != want[i];
    CHECK(mismatches == 0, "%s: %lld of %lld indices differ", label, (long long)mismatches,
          (long long)n);
    printf("%s %-44s exact (%lld)\n", mismatches ? "NOT OK" : "OK    ", label, (long long)n);
    return mismatches == 0;
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

/* The debug names whose values are indices or counts, not activations. */
static bool is_index_tensor(const char *name)
{
    static const char *const names[] = {"topk_ids", "ec_tokens", "expert_count", "text_ids"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

void test_compare_intermediate(const char *name, int layer, const float *data, int ndim,
                               const int64_t *shape, void *user_data)
{
    test_intermediates *cap = user_data;
    char key[128], label[160];
    if (layer >= 0)
        snprintf(key, sizeof key, "%s.%d.%s", cap->prefix, layer, name);
    else
        snprintf(key, sizeof key, "%s.%s", cap->prefix, name);
    int64_t numel = 1, ref_numel = 0;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    float *want = test_ref_tensor(cap->ref, key, &ref_numel);
    if (!want)
        return; /* the reference does not record every intermediate */
    cap->compared++;
    CHECK(ref_numel == numel, "%s: %lld elements, reference has %lld", key, (long long)numel,
          (long long)ref_numel);
    if (ref_numel == numel) {
        snprintf(label, sizeof label, "%s%s", cap->label ? cap->label : "", key);
        if (is_index_tensor(name))
            test_check_exact(label, data, want, numel);
        else
            test_check_tensor(label, data, want, numel, cap->tolerance);
    }
    free(want);
}
