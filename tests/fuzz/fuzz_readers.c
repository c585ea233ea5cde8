/* fuzz_readers.c — libFuzzer target for the untrusted-file readers: the ZIP reader, the
 * restricted pickle interpreter and the safetensors reader (built and run by tools/fuzz.sh
 * with ASan + UBSan; 30 s of it run in the meson `fuzz` suite).
 *
 * Each input goes three ways:
 *   1. written to a memfd and opened by pt_open (zip → pickle → st_file) and, through the
 *      content dispatch, by model_file_open (which falls back to st_open for non-zips);
 *   2. st_open on the same bytes (safetensors header JSON, offsets, overlap checks);
 *   3. pk_load_state_dict on the raw bytes as a pickle, with storages resolved to a fixed
 *      64-byte buffer, so the interpreter is reached without a valid zip around it.
 * The library is compiled with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, which skips the
 * CRC-32 check of data.pkl so mutations inside the pickle of a zip seed stay reachable.
 * Every tensor handed out is read in full, so an out-of-bounds pointer is caught by ASan.
 */
#include "internal.h"
#include "pickle.h"
#include "pt_reader.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch_tensors(const st_file *file)
{
    uint8_t acc = 0;
    for (int i = 0; i < st_tensor_count(file); i++) {
        const st_tensor *t = st_tensor_at(file, i);
        const uint8_t *bytes = t->data;
        for (size_t b = 0; b < t->nbytes; b++)
            acc ^= bytes[b];
    }
    sink = acc;
}

static uint8_t storage_bytes[64];

static moire_status fixed_storage(void *user_data, const char *key, const uint8_t **out,
                                  size_t *size)
{
    if (key[0] == 'x') /* a missing storage */
        return error_fail(MOIRE_ERROR_FORMAT, "no storage '%s'", key);
    *out = storage_bytes;
    *size = sizeof storage_bytes;
    return MOIRE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();

    st_file *file = NULL;
    if (pt_open(path, &file, NULL) == MOIRE_OK) {
        touch_tensors(file);
        st_close(file);
    }
    if (st_open(path, &file) == MOIRE_OK) {
        touch_tensors(file);
        st_close(file);
    }

    pk_state_dict state_dict;
    if (pk_load_state_dict("fuzz", data, size, fixed_storage, NULL, &state_dict) == MOIRE_OK) {
        uint8_t acc = 0;
        for (int i = 0; i < state_dict.tensor_count; i++) {
            const uint8_t *bytes = state_dict.tensors[i].data;
            for (size_t b = 0; b < state_dict.tensors[i].nbytes; b++)
                acc ^= bytes[b];
        }
        sink = acc;
        pk_state_dict_clear(&state_dict);
    }
    return 0;
}
