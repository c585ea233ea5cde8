/* fuzz_common.h — helpers shared by the libFuzzer targets of tests/fuzz/: the input as a
 * file the engine's path-based readers can open, and a sink that reads tensors in full so
 * ASan sees every byte a reader hands out. Built only by tools/fuzz.sh (clang, libFuzzer,
 * ASan + UBSan). */
#ifndef MOIRE_FUZZ_COMMON_H
#define MOIRE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t fuzz_sink;

/* Writes `size` bytes to `name` in a per-process directory under /dev/shm (or /tmp) and
 * returns its path (static buffer per name slot). Readers that look at the file name
 * (".safetensors", "-levels.safetensors") need a real name, which a memfd lacks. */
static const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size)
{
    static char dir[64];
    static char paths[4][128];
    static int slot;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/dev/shm/moire-fuzz-%d", (int)getpid());
        if (mkdir(dir, 0700) != 0) {
            snprintf(dir, sizeof dir, "/tmp/moire-fuzz-%d", (int)getpid());
            mkdir(dir, 0700);
        }
    }
    char *path = paths[slot++ % 4];
    snprintf(path, 128, "%s/%s", dir, name);
    FILE *stream = fopen(path, "wb");
    if (!stream || (size && fwrite(data, 1, size, stream) != size))
        abort();
    fclose(stream);
    return path;
}

static void fuzz_touch(const void *data, size_t size)
{
    const uint8_t *bytes = data;
    uint8_t acc = 0;
    for (size_t i = 0; i < size; i++)
        acc ^= bytes[i];
    fuzz_sink = acc;
}

#endif
