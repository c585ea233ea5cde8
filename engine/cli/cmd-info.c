/* cmd-info.c — `moire info`: a model's config, or the settings stored in a PNG. */
#include "cli.h"

#include <inttypes.h>
#include <math.h>

/* ------------------------------------------------------------------------------------------
 * info
 * ---------------------------------------------------------------------------------------- */

/* The EC-DiT part of `moire info`: routing, MoE layout, text encoder. */
static void print_ecdit_info(const moire_model_config *c)
{
    const int tokens = (c->input_size / c->patch_size) * (c->input_size / c->patch_size);
    const int group = c->routing_group_tokens > 0 && c->routing_group_tokens < tokens
                          ? c->routing_group_tokens : tokens;
    const double cap = ceil((double)group * c->capacity_factor / c->num_experts);
    printf("experts:           %d routed, expert choice: capacity factor %g, each expert takes "
           "%d of every %d tokens; width %d; shared width %d\n", c->num_experts,
           (double)c->capacity_factor, cap > group ? group : (int)cap, group, c->expert_hidden,
           c->shared_expert_hidden);
    if (group == tokens)
        printf("routing groups:    one image\n");
    else
        printf("routing groups:    %d consecutive tokens of one image (the last one shorter)\n",
               group);
    printf("MoE blocks:       ");
    int moe = 0;
    for (int i = 0; i < c->depth; i++)
        if (c->moe_every > 0 && i % c->moe_every == c->moe_every - 1) {
            printf("%s %d", moe ? "," : "", i);
            moe++;
        }
    printf("%s (of %d); dense SwiGLU width %d\n", moe ? "" : " none", c->depth, c->dense_hidden);
    printf("text encoder:      %d layers, hidden %d, %d heads, MLP %d, up to %d tokens, "
           "vocabulary of %d words\n", c->text_layers, c->text_hidden, c->text_heads,
           c->text_mlp_hidden, c->text_max_tokens, c->text_vocab_size);
}

static int info_model(const char *path)
{
    moire_model *model = NULL;
    int rc = load_model(path, &model);
    if (rc)
        return rc;
    const moire_model_config *c = moire_model_get_config(model);
    moire_sampler sampler;
    int steps;
    float cfg;
    char number[32];
    moire_model_get_defaults(model, &sampler, &steps, &cfg);
    int64_t params = moire_model_parameter_count(model);
    int scale = c->space == MOIRE_SPACE_LATENT ? 8 : 1;
    printf("model:             %s\n", moire_model_name(model));
    printf("family:            %s\n", c->family);
    printf("parameters:        %" PRId64 " (%.2f M)\n", params, (double)params / 1e6);
    printf("dtype:             %s\n", moire_model_dtype_name(model));
    printf("depth:             %d\n", c->depth);
    printf("hidden size:       %d\n", c->hidden_size);
    printf("heads:             %d (head dim %d)\n", c->num_heads,
           c->num_heads ? c->hidden_size / c->num_heads : 0);
    printf("patch size:        %d\n", c->patch_size);
    printf("channels:          %d in, %d out%s\n", c->in_channels, c->out_channels,
           c->learn_sigma ? " (learned sigma)" : "");
    if (is_text_model(c)) {
        print_ecdit_info(c);
    } else {
        printf("experts:           %d routed, top-%d, width %d; shared width %d\n",
               c->num_experts, c->top_k, c->expert_hidden, c->shared_expert_hidden);
    }
    printf("attention layout:  %s\n", c->attention_layout != MOIRE_ATTENTION_QK_NORM
                                          ? "qkv (attn.qkv, attn.proj)"
                                      : is_text_model(c)
                                          ? "qk-norm (attn.qkv, q_norm/k_norm, attn.proj)"
                                          : "qk-norm (attn.Wqkv, q_norm/k_norm, out_proj)");
    printf("objective:         %s\n", c->objective == MOIRE_OBJECTIVE_RECTIFIED_FLOW
                                          ? "rectified flow (v-prediction)"
                                          : "DDPM (epsilon-prediction)");
    if (c->objective == MOIRE_OBJECTIVE_DDPM_EPS)
        printf("train timesteps:   %d, beta %g..%g (linear)\n", c->num_train_timesteps,
               (double)c->beta_start, (double)c->beta_end);
    printf("space:             %s\n", c->space == MOIRE_SPACE_LATENT ? "latent (SD-VAE, /8)"
                                                                     : "pixel");
    printf("input size:        %d (images %dx%d)\n", c->input_size, c->input_size * scale,
           c->input_size * scale);
    printf("layernorm eps:     %g\n", (double)c->layernorm_eps);
    printf("defaults:          sampler %s, %d steps, CFG %s\n", moire_sampler_name(sampler),
           steps, moire_format_float(cfg, number, sizeof number));
    const moire_classifier *levels = moire_model_level_classifier(model);
    if (levels)
        printf("noise levels:      a classifier beside the model (%d bins) for --sampler dmcmc\n",
               moire_classifier_num_classes(levels));
    else
        printf("noise levels:      no classifier; --sampler dmcmc estimates them from the model\n");
    if (is_text_model(c)) {
        printf("conditioning:      text prompts (--prompt; \"\" = unconditional, --negative)\n");
        moire_model_free(model);
        return 0;
    }
    printf("classes:           %d\n", c->num_classes);
    int shown = 0;
    for (int i = 0; i < c->num_classes && shown < 5; i++) {
        const char *name = moire_model_class_name(model, i);
        if (!name)
            break;
        printf("  %d: %s\n", i, name);
        shown++;
    }
    if (shown == 0)
        printf("  (no class names in the file; use --class N)\n");
    else if (shown < c->num_classes)
        printf("  …\n");
    moire_model_free(model);
    return 0;
}

static int info_image(const char *path)
{
    /* the size and texts only: no pixel is decoded (a hostile file declaring 16384² would
       otherwise cost a gigabyte just to print its settings) */
    moire_png_info info;
    if (moire_png_read_info(path, &info) != MOIRE_OK)
        return engine_error(NULL);
    char *parameters = info.parameters, *json = info.moire_json;
    int rc = 0;
    printf("image:             %s (%dx%d, %d channel%s)\n", path, info.width, info.height,
           info.channels, info.channels == 1 ? "" : "s");
    if (!parameters && !json) {
        error_line("%s has no generation settings (no \"parameters\" or \"moire\" text chunk)",
                   path);
        rc = EXIT_ERROR;
    }
    if (parameters) {
        printf("parameters:\n%s\n\n", parameters);
        moire_parameters p;
        if (moire_parse_parameters(parameters, &p) == MOIRE_OK) {
            char number[32];
            printf("prompt:            %s\n", p.prompt ? p.prompt : "");
            if (p.negative_prompt && p.negative_prompt[0])
                printf("negative prompt:   %s\n", p.negative_prompt);
            if (p.steps)
                printf("steps:             %d\n", p.steps);
            if (p.sampler)
                printf("sampler:           %s\n", p.sampler);
            if (p.schedule)
                printf("schedule:          %s\n", p.schedule);
            if (!isnan(p.cfg_scale))
                printf("cfg scale:         %s\n",
                       moire_format_float(p.cfg_scale, number, sizeof number));
            if (p.has_seed)
                printf("seed:              %" PRIu64 "\n", p.seed);
            if (p.width)
                printf("size:              %dx%d\n", p.width, p.height);
            if (p.model)
                printf("model:             %s\n", p.model);
            if (!isnan(p.denoising_strength))
                printf("denoising strength: %s\n",
                       moire_format_float(p.denoising_strength, number, sizeof number));
            if (p.version)
                printf("version:           %s\n", p.version);
            moire_parameters_clear(&p);
        }
    }
    if (json)
        printf("moire:             %s\n", json);
    moire_png_info_clear(&info);
    return rc;
}

int cmd_info(int argc, char **argv)
{
    const char *model_path = NULL, *image_path = NULL;
    const option_spec specs[] = {{"model", true, &model_path}, {"image", true, &image_path}};
    int rc = parse_options("info", argc, argv, 2, specs, 2);
    if (rc)
        return rc;
    if (!model_path == !image_path) {
        error_line("info needs exactly one of --model FILE or --image FILE.png");
        return EXIT_USAGE;
    }
    return model_path ? info_model(model_path) : info_image(image_path);
}
