/* numeric_guard.c — the finiteness check run on a model's output after each forward pass
 * and on the final sample before it becomes an image (issue 19: a model with NaN or huge
 * weights used to give a garbage image and exit status 0). */
#include "internal.h"

#include <math.h>

moire_status numeric_check_finite(const float *values, size_t count, const char *model_name,
                                  const char *what)
{
    for (size_t i = 0; i < count; i++) {
        if (isfinite(values[i]))
            continue;
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: %s holds %s (value %zu of %zu); the weights are damaged or out "
                          "of range (finite but so large that the arithmetic overflows): "
                          "download or re-export the model", model_name ? model_name : "model",
                          what, isnan(values[i]) ? "NaN" : "an infinity", i, count);
    }
    return MOIRE_OK;
}
