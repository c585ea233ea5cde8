/* test_util.h — tiny test harness shared by the C tests: CHECK macros that count failures,
 * relative-error comparison and fresh random data (never zeros). */
#ifndef MOIRE_TEST_UTIL_H
#define MOIRE_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "safetensors.h"

extern int test_failures;
extern int test_checks;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        test_checks++;                                                                     \
        if (!(cond)) {                                                                     \
            test_failures++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* ‖a − b‖₂ / max(‖b‖₂, tiny) */
double test_rel_error(const float *a, const float *b, int64_t n);
double test_max_abs_diff(const float *a, const float *b, int64_t n);
/* Uniform in [lo, hi) from a small xorshift generator seeded by `seed`. */
void test_fill_random(float *x, int64_t n, uint64_t seed, float lo, float hi);
/* Compares and prints "OK name rel=… maxabs=…" or "NOT OK …"; counts a check. */
bool test_check_tensor(const char *name, const float *got, const float *want, int64_t n,
                       double tolerance);
/* Index tensors (expert ids, token ids, counts) compared exactly; counts a check. */
bool test_check_exact(const char *label, const float *got, const float *want, int64_t n);
/* Prints "checks: N, failures: M" and returns the exit code (0 or 1). */
int test_finish(const char *test_name);
/* Path under the tests/ source directory (static buffer). */
const char *test_data_path(const char *relative);
/* A fresh temporary directory for this test (created once). */
const char *test_tmp_dir(void);

/* A reference tensor from a golden file as fp32 (F32/F16/BF16 converted, I32 ids as floats);
 * NULL when the file has no tensor of that name. *numel (may be NULL) receives its size.
 * Caller frees. */
float *test_ref_tensor(const st_file *ref, const char *name, int64_t *numel);

/* A forward pass's intermediates against a golden file: pass test_compare_intermediate and a
 * test_intermediates to moire_ctx_set_debug_callback. Each tensor the pass reports is compared
 * with the file's "<prefix>.<layer>.<name>" (or "<prefix>.<name>") where the file records it:
 * index tensors exactly, the rest by relative error ≤ tolerance. */
typedef struct test_intermediates {
    const st_file *ref;
    const char *prefix;      /* the case: "a", "b"                               */
    const char *label;       /* before each key in the output ("cuda "); or NULL  */
    double tolerance;
    int compared;            /* tensors the file had                              */
} test_intermediates;
void test_compare_intermediate(const char *name, int layer, const float *data, int ndim,
                               const int64_t *shape, void *user_data);

#endif
