/* npy.h — NumPy .npy files for `moire forward` and the tests: the API (moire_npy,
 * moire_npy_load, moire_npy_save, moire_npy_free) is public, in moire.h. */
#ifndef MOIRE_NPY_H
#define MOIRE_NPY_H

#include "moire.h"

#define NPY_MAX_DIMS MOIRE_NPY_MAX_DIMS

#endif /* MOIRE_NPY_H */
