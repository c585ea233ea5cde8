/* npy.h — NumPy .npy files (version 1.0/2.0, little-endian float32/float64/float16 and
 * int32/int64 read as float; always written as float32 version 1.0), for `moire forward`
 * and the tests. Fortran-order arrays are refused. */
#ifndef MOIRE_NPY_H
#define MOIRE_NPY_H

#include "moire.h"

#define NPY_MAX_DIMS 8

typedef struct moire_npy {
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t numel;
    float *data; /* owned */
} moire_npy;

moire_status moire_npy_load(const char *path, moire_npy *out);
/* Atomic (temporary file + rename). */
moire_status moire_npy_save(const char *path, int ndim, const int64_t *shape,
                            const float *data);
void moire_npy_free(moire_npy *npy);

#endif /* MOIRE_NPY_H */
