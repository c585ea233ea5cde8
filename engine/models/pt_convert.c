/* pt_convert.c — `moire convert`: a PyTorch checkpoint (or a safetensors file) written as a
 * safetensors model file with its config ("moire.config", inferred as the loader does) and,
 * for a 1000-class model, the ImageNet class names. Reading is io/pt_reader.c's; this file is
 * in models/ because the config is the model's (it was in pt_reader.c, which made the reader
 * and model.c import each other). moire_convert_checkpoint is the public face (moire.h). */
#include "model.h"

#include "class_names.h"
#include "internal.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A JSON array of strings (escaped as the safetensors writer does for its header). */
static char *names_to_json(char **names, int count)
{
    GString *json = g_string_new("[");
    for (int i = 0; i < count; i++) {
        if (i)
            g_string_append_c(json, ',');
        g_string_append_c(json, '"');
        for (const unsigned char *c = (const unsigned char *)names[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                g_string_append_printf(json, "\\%c", *c);
            else if (*c < 0x20)
                g_string_append_printf(json, "\\u%04x", *c);
            else
                g_string_append_c(json, (char)*c);
        }
        g_string_append_c(json, '"');
    }
    g_string_append_c(json, ']');
    return g_string_free(json, FALSE);
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

moire_status pt_convert(const char *in_path, const char *out_path, pt_convert_report *report)
{
    pt_convert_report local;
    if (!report)
        report = &local;
    memset(report, 0, sizeof *report);
    if (!in_path || !out_path)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "convert: an input and an output "
                          "path are needed");
    if (same_file(in_path, out_path))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "convert: %s is both the input and "
                          "the output; choose another output path", out_path);
    st_file *file = NULL;
    moire_status status = pt_file_is_zip(in_path) ? pt_open(in_path, &file, &report->info)
                                                  : model_file_open(in_path, &file);
    if (status != MOIRE_OK)
        return status;

    /* the config: the input's own, or inferred exactly as the loader does */
    moire_model_config *config = &report->config;
    const char *config_json = st_metadata_get(file, "moire.config");
    status = dit_config_infer(config, file);
    if (status == MOIRE_OK && config_json)
        status = dit_config_from_json(config, config_json);
    if (status == MOIRE_OK)
        status = dit_config_validate(config);
    if (status != MOIRE_OK) {
        error_prefix("%s", in_path);
        st_close(file);
        return status;
    }

    st_writer *writer = st_writer_new();
    if (!writer) {
        st_close(file);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "convert: out of memory");
    }
    for (int i = 0; i < st_metadata_count(file); i++) {
        const char *key = st_metadata_key_at(file, i);
        st_writer_set_metadata(writer, key, st_metadata_get(file, key));
    }
    char *json = dit_config_to_json(config);
    if (json)
        st_writer_set_metadata(writer, "moire.config", json);
    free(json);
    if (config->num_classes == CLASS_NAMES_IMAGENET_COUNT &&
        !st_metadata_get(file, "moire.class_names")) {
        char **names = class_names_load_imagenet(CLASS_NAMES_IMAGENET_COUNT);
        if (names) {
            char *names_json = names_to_json(names, CLASS_NAMES_IMAGENET_COUNT);
            st_writer_set_metadata(writer, "moire.class_names", names_json);
            g_free(names_json);
            report->class_names_written = true;
            for (int i = 0; i < CLASS_NAMES_IMAGENET_COUNT; i++)
                free(names[i]);
            free(names);
        }
    }
    const char *slash = strrchr(in_path, '/');
    st_writer_set_metadata(writer, "moire.converted_from", slash ? slash + 1 : in_path);

    unsigned dtypes = 0;
    for (int i = 0; i < st_tensor_count(file) && status == MOIRE_OK; i++) {
        const st_tensor *tensor = st_tensor_at(file, i);
        status = st_writer_add_raw(writer, tensor->name, tensor->dtype, tensor->ndim,
                                   tensor->shape, tensor->data);
        if (tensor->dtype == ST_F32 || tensor->dtype == ST_F16 || tensor->dtype == ST_BF16)
            dtypes |= 1u << tensor->dtype;
    }
    report->tensor_count = st_tensor_count(file);
    snprintf(report->dtype_name, sizeof report->dtype_name, "%s",
             __builtin_popcount(dtypes) != 1 ? "mixed"
             : (dtypes & (1u << ST_F16)) ? "F16"
             : (dtypes & (1u << ST_BF16)) ? "BF16" : "F32");
    if (status == MOIRE_OK)
        status = st_writer_save(writer, out_path);
    st_writer_free(writer);
    st_close(file);
    return status;
}

moire_status moire_convert_checkpoint(const char *in_path, const char *out_path,
                                      moire_convert_report *report)
{
    pt_convert_report internal;
    moire_status status = pt_convert(in_path, out_path, &internal);
    if (report) {
        memset(report, 0, sizeof *report);
        report->tensor_count = internal.tensor_count;
        snprintf(report->dtype_name, sizeof report->dtype_name, "%s", internal.dtype_name);
        report->config = internal.config;
        snprintf(report->wrapper, sizeof report->wrapper, "%s", internal.info.wrapper);
        report->stripped_prefix = internal.info.stripped_prefix;
        report->skipped_entries = internal.info.skipped_entries;
        report->class_names_written = internal.class_names_written;
    }
    return status;
}
