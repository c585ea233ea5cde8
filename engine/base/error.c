/* error.c — status strings, the thread-local error message, checked allocation, clocks. */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ERROR_MESSAGE_MAX 2048

static _Thread_local char error_message[ERROR_MESSAGE_MAX];
/* The size that fits, set with the message of a too-large request (0 × 0: none). */
static _Thread_local int fitting_width, fitting_height;

const char *moire_status_to_string(moire_status status)
{
    switch (status) {
    case MOIRE_OK:                       return "ok";
    case MOIRE_ERROR_INVALID_ARGUMENT:   return "invalid argument";
    case MOIRE_ERROR_IO:                 return "input/output error";
    case MOIRE_ERROR_FORMAT:             return "corrupt or invalid file";
    case MOIRE_ERROR_UNSUPPORTED:        return "unsupported";
    case MOIRE_ERROR_OUT_OF_MEMORY:      return "out of memory";
    case MOIRE_ERROR_CANCELLED:          return "cancelled";
    case MOIRE_ERROR_BACKEND:            return "backend failure";
    }
    return "unknown status";
}

const char *moire_last_error(void)
{
    return error_message;
}

moire_status error_fail(moire_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    fitting_width = fitting_height = 0;
    return status;
}

void error_set_fitting_size(int width, int height)
{
    fitting_width = width;
    fitting_height = height;
}

bool moire_last_error_fitting_size(int *width, int *height)
{
    if (fitting_width <= 0 || fitting_height <= 0)
        return false;
    if (width)
        *width = fitting_width;
    if (height)
        *height = fitting_height;
    return true;
}

void error_prefix(const char *fmt, ...)
{
    char prefix[ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, args);
    va_end(args);
    char joined[2 * ERROR_MESSAGE_MAX + 4];
    snprintf(joined, sizeof joined, "%s: %s", prefix, error_message);
    /* Truncation is fine: the start of the message carries the context. */
    size_t length = strnlen(joined, sizeof error_message - 1);
    memcpy(error_message, joined, length);
    error_message[length] = '\0';
}

void error_clear(void)
{
    error_message[0] = '\0';
    fitting_width = fitting_height = 0;
}

void *malloc_array(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    size_t bytes = count * size;
    return malloc(bytes ? bytes : 1);
}

void *calloc_array(size_t count, size_t size)
{
    return calloc(count ? count : 1, size ? size : 1);
}

double clock_now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

uint64_t model_next_serial(void)
{
    static atomic_uint_fast64_t next = 1;
    return (uint64_t)atomic_fetch_add(&next, 1);
}
