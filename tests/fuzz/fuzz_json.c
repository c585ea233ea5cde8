/* fuzz_json.c — libFuzzer target for the JSON gate (engine/json_guard.c) and what sits
 * behind it: the safetensors header parser (the input as a header of a file with no data)
 * and the A1111 "parameters" parser on the same bytes as text. Built by tools/fuzz.sh. */
#include "fuzz_common.h"
#include "internal.h"
#include "moire-metadata.h"
#include "json_guard.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[160];
    moire_json_check((const char *)data, (long long)size, why, sizeof why);
    JsonParser *parser = json_parser_new();
    json_guard_load(parser, "fuzz", (const char *)data, (long long)size);
    g_object_unref(parser);

    /* the bytes as a safetensors header (8-byte length + header) */
    uint8_t *file = malloc(size + 8);
    for (int i = 0; i < 8; i++)
        file[i] = (uint8_t)((uint64_t)size >> (8 * i));
    memcpy(file + 8, data, size);
    const char *path = fuzz_write_file("h.safetensors", file, size + 8);
    free(file);
    st_file *st = NULL;
    if (st_open(path, &st) == MOIRE_OK) {
        for (int i = 0; i < st_tensor_count(st); i++)
            fuzz_touch(st_tensor_at(st, i)->data, st_tensor_at(st, i)->nbytes);
        st_close(st);
    }

    /* the bytes as PNG "parameters" text */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    moire_parameters parameters;
    if (moire_parse_parameters(text, &parameters) == MOIRE_OK)
        moire_parameters_clear(&parameters);
    free(text);
    return 0;
}
