/* cmd-convert.c — `moire convert`: a PyTorch checkpoint written as a safetensors model. */
#include "cli.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------
 * convert
 * ---------------------------------------------------------------------------------------- */

int cmd_convert(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL};
    int count = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return print_help("convert");
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            error_line("convert: unknown option '%s' (see 'moire help convert')", argv[i]);
            return EXIT_USAGE;
        }
        if (count == 2) {
            error_line("convert takes two paths, IN.pt and OUT.safetensors (see 'moire help "
                       "convert')");
            return EXIT_USAGE;
        }
        paths[count++] = argv[i];
    }
    if (count != 2) {
        error_line("convert needs an input checkpoint and an output path: moire convert IN.pt "
                   "OUT.safetensors");
        return EXIT_USAGE;
    }
    if (check_output_path("the output", paths[1]) != 0)
        return EXIT_ERROR;
    moire_convert_report report;
    if (moire_convert_checkpoint(paths[0], paths[1], &report) != MOIRE_OK)
        return engine_error(NULL);
    const moire_model_config *c = &report.config;
    printf("%s\n", paths[1]);
    fprintf(stderr, "moire: wrote %d tensors (%s): dit-moe %s layout, depth %d, hidden %d, "
            "%d experts (top-%d), %d classes, %s",
            report.tensor_count, report.dtype_name,
            c->attention_layout == MOIRE_ATTENTION_QK_NORM ? "qk-norm (XL/G)" : "qkv (S/B)",
            c->depth, c->hidden_size, c->num_experts, c->top_k, c->num_classes,
            c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW ? "rectified flow" : "DDPM-eps");
    if (report.wrapper[0])
        fprintf(stderr, "; unwrapped {\"%s\": ...}", report.wrapper);
    if (report.stripped_prefix)
        fprintf(stderr, "; removed the 'module.' key prefix");
    if (report.skipped_entries)
        fprintf(stderr, "; skipped %d non-tensor entries", report.skipped_entries);
    if (report.class_names_written)
        fprintf(stderr, "; ImageNet class names included");
    fputc('\n', stderr);
    return 0;
}
