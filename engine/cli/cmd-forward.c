/* cmd-forward.c — `moire forward`: one model evaluation on a .npy tensor, for checking
 * numerics against another implementation. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------------------------
 * forward
 * ---------------------------------------------------------------------------------------- */

int cmd_forward(int argc, char **argv)
{
    const char *model_path = NULL, *input = NULL, *t_text = NULL, *class_text = NULL,
               *prompt = NULL, *output = NULL, *threads_text = NULL, *device_text = NULL;
    const option_spec specs[] = {
        {"model", true, &model_path},     {"input", true, &input},
        {"t", true, &t_text},             {"class", true, &class_text},
        {"prompt", true, &prompt},        {"output", true, &output},
        {"threads", true, &threads_text}, {"device", true, &device_text},
    };
    int rc = parse_options("forward", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;
    if (!model_path || !input || !t_text || !output) {
        error_line("forward needs --model, --input, --t and --output (see 'moire help "
                   "forward')");
        return EXIT_USAGE;
    }
    if (!class_text == !prompt) {
        error_line("forward needs exactly one of --class N or --prompt TEXT");
        return EXIT_USAGE;
    }
    float t;
    if ((rc = parse_float("t", t_text, 0.0, 1e6, false, &t)))
        return rc;
    int class_id = -1;
    if (class_text && (rc = parse_int("class", class_text, 0, INT_MAX, &class_id)))
        return rc;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log;
    if ((rc = parse_context_options(threads_text, device_text, &ctx_params)))
        return rc;
    if ((rc = check_output_path("--output", output)))
        return rc;

    moire_npy x = {0};
    moire_model *model = NULL;
    moire_ctx *ctx = NULL;
    float *t_all = NULL, *out = NULL;
    int32_t *classes = NULL;
    if (moire_npy_load(input, &x) != MOIRE_OK) {
        rc = engine_error("--input");
        goto done;
    }
    if ((rc = load_model(model_path, &model)))
        goto done;
    const moire_model_config *c = moire_model_get_config(model);
    if (x.ndim != 3 && x.ndim != 4) {
        error_line("--input %s: shape has %d dimensions; expected [n, C, h, w] or [C, h, w]",
                   input, x.ndim);
        rc = EXIT_ERROR;
        goto done;
    }
    int64_t n = x.ndim == 4 ? x.shape[0] : 1;
    int64_t channels = x.shape[x.ndim - 3], h = x.shape[x.ndim - 2], w = x.shape[x.ndim - 1];
    if (channels != c->in_channels) {
        error_line("--input %s: %lld channels, but the model takes %d", input,
                   (long long)channels, c->in_channels);
        rc = EXIT_ERROR;
        goto done;
    }
    if (n < 1 || h < 1 || w < 1 || n > 4096 || h > 4096 || w > 4096 || h % c->patch_size ||
        w % c->patch_size) {
        error_line("--input %s: n=%lld, h=%lld, w=%lld; n must be 1..4096 and h, w positive "
                   "multiples of the patch size %d",
                   input, (long long)n, (long long)h, (long long)w, c->patch_size);
        rc = EXIT_ERROR;
        goto done;
    }
    if (is_text_model(c) && !prompt) {
        error_line("--class: %s is text-conditioned; give --prompt TEXT", moire_model_name(model));
        rc = EXIT_ERROR;
        goto done;
    }
    if (class_text && class_id > c->num_classes) {
        error_line("--class %d is out of range: use 0..%d (%d = the null class)", class_id,
                   c->num_classes, c->num_classes);
        rc = EXIT_ERROR;
        goto done;
    }
    if (prompt && !is_text_model(c) &&
        moire_model_resolve_class(model, prompt, &class_id) != MOIRE_OK) {
        rc = engine_error("--prompt");
        goto done;
    }
    if (c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW && t > 1.0f) {
        error_line("--t %s is out of range for a rectified-flow model: use 0..1", t_text);
        rc = EXIT_ERROR;
        goto done;
    }
    if (c->objective == MOIRE_OBJECTIVE_DDPM_EPS && t > (float)(c->num_train_timesteps - 1)) {
        error_line("--t %s is out of range for this DDPM model: use 0..%d", t_text,
                   c->num_train_timesteps - 1);
        rc = EXIT_ERROR;
        goto done;
    }
    t_all = malloc((size_t)n * sizeof *t_all);
    classes = malloc((size_t)n * sizeof *classes);
    out = malloc((size_t)n * (size_t)c->out_channels * (size_t)h * (size_t)w * sizeof *out);
    if (!t_all || !classes || !out) {
        error_line("out of memory");
        rc = EXIT_ERROR;
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        t_all[i] = t;
        classes[i] = class_id;
    }
    if (moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK) {
        rc = engine_error("--device");
        goto done;
    }
    install_sigint(ctx);
    moire_status status = MOIRE_OK;
    if (is_text_model(c)) {
        const char **prompts = malloc((size_t)n * sizeof *prompts);
        for (int64_t i = 0; prompts && i < n; i++)
            prompts[i] = prompt;
        status = prompts ? moire_forward_text(ctx, model, (int)n, (int)h, (int)w, x.data, t_all,
                                              prompts, out)
                         : MOIRE_ERROR_OUT_OF_MEMORY;
        free(prompts);
    } else {
        status = moire_forward(ctx, model, (int)n, (int)h, (int)w, x.data, t_all, classes, out);
    }
    g_running_ctx = NULL;
    signal(SIGINT, SIG_DFL);
    if (status == MOIRE_ERROR_CANCELLED || g_interrupted) {
        fprintf(stderr, "moire: interrupted; nothing was written\n");
        rc = EXIT_INTERRUPTED;
        goto done;
    }
    if (status != MOIRE_OK) {
        rc = engine_error(NULL);
        goto done;
    }
    int64_t shape[4] = {n, c->out_channels, h, w};
    if (x.ndim == 4)
        status = moire_npy_save(output, 4, shape, out);
    else
        status = moire_npy_save(output, 3, shape + 1, out);
    if (status != MOIRE_OK) {
        rc = engine_error(NULL);
        goto done;
    }
    printf("%s\n", output);
done:
    moire_ctx_free(ctx);
    moire_model_free(model);
    moire_npy_free(&x);
    free(t_all);
    free(classes);
    free(out);
    return rc;
}
