/* fuzz_model.c — libFuzzer target for a whole model load with its companion: the input is
 * split at the first "MOIRE-COMPANION" (the dictionary has the token) into MODEL.safetensors
 * and MODEL-levels.safetensors (the noise-level classifier loaded automatically beside a
 * model), then moire_model_load runs over both: safetensors, moire.config, class names,
 * defaults, the weight binding and the classifier metadata. Without the token there is no
 * companion. Built by tools/fuzz.sh. */
#include "fuzz_common.h"
#include "internal.h"

static const char separator[] = "MOIRE-COMPANION";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *cut = memmem(data, size, separator, sizeof separator - 1);
    size_t model_size = cut ? (size_t)(cut - data) : size;
    const char *model_path = fuzz_write_file("m.safetensors", data, model_size);
    const char *companion_path = fuzz_write_file("m-levels.safetensors", NULL, 0);
    if (cut) {
        size_t skip = model_size + sizeof separator - 1;
        fuzz_write_file("m-levels.safetensors", data + skip, size - skip);
    } else {
        unlink(companion_path);
    }
    moire_model *model = NULL;
    if (moire_model_load(model_path, &model) == MOIRE_OK)
        moire_model_free(model);
    return 0;
}
