/* internal.h — helpers shared by libmoire's sources (not installed).
 *
 * Error reporting: a failing function calls error_fail(status, fmt, …), which records the
 * message in a thread-local buffer (read back by moire_last_error()) and returns the status,
 * so the idiom is `return error_fail(MOIRE_ERROR_FORMAT, "%s: header length %llu is past the
 * end of the file (%llu bytes); the file is truncated: download it again", path, …);`.
 */
#ifndef MOIRE_INTERNAL_H
#define MOIRE_INTERNAL_H

#include "moire.h"

#include <stdarg.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MOIRE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MOIRE_PRINTF(a, b)
#endif

/* Records the message for moire_last_error() and returns `status`. */
moire_status error_fail(moire_status status, const char *fmt, ...) MOIRE_PRINTF(2, 3);
/* Prepends "context: " to the current thread's error message (for call chains). */
void error_prefix(const char *fmt, ...) MOIRE_PRINTF(1, 2);
void error_clear(void);
/* Attaches the largest size that fits to the failure just recorded (memory_estimate.c). */
void error_set_fitting_size(int width, int height);

/* Checked allocation helpers: NULL on overflow or failure (callers report OUT_OF_MEMORY). */
void *malloc_array(size_t count, size_t size);
void *calloc_array(size_t count, size_t size);

/* A number never returned before in this process (from 1): identifies a loaded model or VAE
 * for the backends' weight bindings, which must never match a freed object's successor. */
uint64_t model_next_serial(void);

/* MOIRE_OK when all `count` values are finite; otherwise MOIRE_ERROR_FORMAT saying that
 * `what` of model `model_name` holds a NaN or an infinity (damaged or out-of-range weights)
 * and how to fix it. (numeric_guard.c) */
moire_status numeric_check_finite(const float *values, size_t count, const char *model_name,
                                  const char *what);

/* Monotonic seconds, for progress estimates. */
double clock_now_seconds(void);

#endif /* MOIRE_INTERNAL_H */
