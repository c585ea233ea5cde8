/* fuzz_png.c — libFuzzer target for PNG files: the text-chunk reader (no pixels, the path
 * of `moire info --image`), the full decoder (libpng with its chunk limits) and the
 * parameters parser on whatever text comes out. Built by tools/fuzz.sh. */
#include "fuzz_common.h"

#include <stdbool.h>
#include "internal.h"
#include "moire-metadata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file("f.png", data, size);
    moire_png_info info;
    bool small = false;
    if (moire_png_read_info(path, &info) == MOIRE_OK) {
        /* decoding pixels costs width·height by design (bounded by IMAGE_MAX_PIXELS): only
           small images are decoded here, so the fuzzer spends its time on the parsers */
        small = (long long)info.width * info.height <= (1 << 20);
        moire_parameters parameters;
        if (info.parameters && moire_parse_parameters(info.parameters, &parameters) == MOIRE_OK)
            moire_parameters_clear(&parameters);
        moire_png_info_clear(&info);
    }
    moire_image *image = NULL;
    char *text = NULL, *json = NULL;
    if (small && moire_png_load(path, &image, &text, &json) == MOIRE_OK) {
        fuzz_touch(image->pixels,
                   (size_t)image->width * (size_t)image->height * (size_t)image->channels);
        moire_image_free(image);
        free(text);
        free(json);
    }
    return 0;
}
