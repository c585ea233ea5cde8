/* fuzz_npy.c — libFuzzer target for the .npy reader (header dictionary, shapes, dtypes,
 * finiteness). Built by tools/fuzz.sh. */
#include "fuzz_common.h"
#include "internal.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file("f.npy", data, size);
    moire_npy npy;
    if (moire_npy_load(path, &npy) == MOIRE_OK)
        moire_npy_free(&npy);
    return 0;
}
