/* cmd-generate.c — `moire generate`: images from a prompt or class, batches, img2img and
 * inpainting, DMCMC streams and routing maps, written as PNGs with their settings. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * generate
 * ---------------------------------------------------------------------------------------- */

/* A mask as 1 channel: the first channel of gray images, luminance of colour ones. */
static moire_image *mask_to_gray(const moire_image *image)
{
    if (image->channels == 1)
        return NULL; /* use as is */
    moire_image *gray = moire_image_new(image->width, image->height, 1);
    if (!gray)
        return NULL;
    size_t n = (size_t)image->width * (size_t)image->height;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *px = image->pixels + i * (size_t)image->channels;
        gray->pixels[i] = (uint8_t)((299 * px[0] + 587 * px[1] + 114 * px[2] + 500) / 1000);
    }
    return gray;
}

bool is_text_model(const moire_model_config *config)
{
    return strcmp(config->family, "ec-dit") == 0;
}

/* The routing map of image `index` as PNG: the mean over the MoE layers, then every layer,
 * each tile the image's size scaled up to at least 256 pixels on its short side. */
static int write_routing_map(const moire_routing_map *map, int index, int count,
                             const char *path, const moire_image *image)
{
    const int side = image->width < image->height ? image->width : image->height;
    const int scale = side >= 256 ? 1 : (256 + side - 1) / side;
    char *file = count == 1 ? strdup(path) : batch_path(path, index);
    moire_image *render = NULL;
    int rc = 0;
    if (!file) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    if (moire_routing_map_render(map, index, MOIRE_ROUTING_LAYER_TILED, MOIRE_ROUTING_VIEW_DEFAULT,
                                 image->width * scale, image->height * scale,
                                 &render) != MOIRE_OK ||
        moire_png_save(file, render, NULL, NULL) != MOIRE_OK) {
        rc = engine_error("--routing-map");
    } else {
        printf("%s\n", file);
        fflush(stdout);
    }
    moire_image_free(render);
    free(file);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *class_text = NULL, *negative = NULL,
               *seed_text = NULL, *width_text = NULL, *height_text = NULL, *batch_text = NULL,
               *init_path = NULL, *strength_text = NULL, *mask_path = NULL,
               *threads_text = NULL, *vae_path = NULL, *device_text = NULL, *output = NULL,
               *quiet = NULL, *routing_path = NULL, *stream_text = NULL,
               *stream_mode_text = NULL, *vary_path = NULL, *variation_text = NULL,
               *guard_text = NULL;
    sampler_options sampling = {0};
    const option_spec specs[] = {
        {"model", true, &model_path},        {"prompt", true, &prompt},
        {"class", true, &class_text},        {"negative", true, &negative},
        {"seed", true, &seed_text},          SAMPLER_OPTION_SPECS(sampling),
        {"width", true, &width_text},        {"height", true, &height_text},
        {"batch", true, &batch_text},        {"init", true, &init_path},
        {"strength", true, &strength_text},  {"mask", true, &mask_path},
        {"threads", true, &threads_text},    {"vae", true, &vae_path},
        {"device", true, &device_text},      {"output", true, &output},
        {"quiet", false, &quiet},            {"routing-map", true, &routing_path},
        {"stream", true, &stream_text},      {"stream-mode", true, &stream_mode_text},
        {"vary", true, &vary_path},          {"variation-strength", true, &variation_text},
        {"stream-guard", true, &guard_text},
    };
    int rc = parse_options("generate", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;

    /* 1. Everything that needs no file. */
    if (!model_path && (rc = default_model_or_usage_error(&model_path)))
        return rc;
    if (!output) {
        error_line("generate needs --output FILE.png");
        return EXIT_USAGE;
    }
    if (!prompt && !class_text) {
        error_line("generate needs --prompt TEXT or --class N (what to draw)");
        return EXIT_USAGE;
    }
    if (prompt && class_text) {
        error_line("give either --prompt or --class, not both");
        return EXIT_USAGE;
    }
    if (prompt && !prompt[0]) {
        error_line("--prompt is empty; give a class name of the model or use --class N");
        return EXIT_USAGE;
    }
    moire_generate_params params = moire_generate_params_default();
    params.prompt = prompt;
    params.negative_prompt = negative;
    if (class_text && (rc = parse_int("class", class_text, 0, INT_MAX - 1, &params.class_id)))
        return rc;
    if (seed_text && (rc = parse_seed(seed_text, &params.seed)))
        return rc;
    /* DMCMC (docs/DMCMC.md): --stream implies it. */
    moire_dmcmc_params dmcmc;
    int stream_rounds = 0;
    if (stream_text && (rc = parse_int("stream", stream_text, 1, 100000, &stream_rounds)))
        return rc;
    /* Streams for browsing: moire_stream_open's modes. */
    moire_stream_params stream_params = moire_stream_params_default();
    stream_params.mode = MOIRE_STREAM_CHAINS;
    if (stream_mode_text) {
        if (strcmp(stream_mode_text, "chains") == 0)
            stream_params.mode = MOIRE_STREAM_CHAINS;
        else if (strcmp(stream_mode_text, "new") == 0)
            stream_params.mode = MOIRE_STREAM_NEW_PICTURES;
        else if (strcmp(stream_mode_text, "vary") == 0)
            stream_params.mode = MOIRE_STREAM_VARIATIONS;
        else {
            error_line("--stream-mode %s: use chains, new or vary", stream_mode_text);
            return EXIT_USAGE;
        }
    }
    if (vary_path) {
        if (stream_mode_text && stream_params.mode != MOIRE_STREAM_VARIATIONS) {
            error_line("--vary makes a variations stream; leave out --stream-mode %s",
                       stream_mode_text);
            return EXIT_USAGE;
        }
        stream_params.mode = MOIRE_STREAM_VARIATIONS;
    }
    if ((stream_mode_text || vary_path || variation_text || guard_text) && !stream_text) {
        error_line("--stream-mode, --vary, --variation-strength and --stream-guard shape a "
                   "stream: give --stream N (rounds) too");
        return EXIT_USAGE;
    }
    if (stream_params.mode == MOIRE_STREAM_VARIATIONS && !vary_path) {
        error_line("--stream-mode vary needs --vary FILE.png (the picture to vary)");
        return EXIT_USAGE;
    }
    if (variation_text && stream_params.mode != MOIRE_STREAM_VARIATIONS) {
        error_line("--variation-strength applies to --vary FILE.png");
        return EXIT_USAGE;
    }
    if (variation_text && (rc = parse_float("variation-strength", variation_text, 0.0, 1.0,
                                            false, &stream_params.variation_strength)))
        return rc;
    if (guard_text && stream_params.mode == MOIRE_STREAM_CHAINS) {
        error_line("--stream-guard applies to --stream-mode new or vary");
        return EXIT_USAGE;
    }
    if (guard_text &&
        (rc = parse_float("stream-guard", guard_text, 0.0, 10.0, false, &stream_params.guard_distance)))
        return rc;
    /* --stream implies dmcmc, except for a new-pictures stream, whose sampler is --sampler's */
    const bool stream_forces_dmcmc =
        stream_text != NULL && stream_params.mode != MOIRE_STREAM_NEW_PICTURES;
    if ((rc = apply_sampler_options("generate", &sampling, stream_forces_dmcmc, &params,
                                    &dmcmc)))
        return rc;
    if (width_text && (rc = parse_int("width", width_text, 1, MOIRE_MAX_IMAGE_SIDE, &params.width)))
        return rc;
    if (height_text && (rc = parse_int("height", height_text, 1, MOIRE_MAX_IMAGE_SIDE, &params.height)))
        return rc;
    if (batch_text && (rc = parse_int("batch", batch_text, 1, 10000, &params.batch_count)))
        return rc;
    if (strength_text && !init_path) {
        error_line("--strength applies to img2img only; give --init FILE.png too");
        return EXIT_USAGE;
    }
    if (mask_path && !init_path) {
        error_line("--mask needs --init FILE.png (the image to inpaint)");
        return EXIT_USAGE;
    }
    if (init_path && !strength_text) {
        error_line("--init needs --strength X (0 < X <= 1: how much to change the image; "
                   "0.75 is a usual value)");
        return EXIT_USAGE;
    }
    if (strength_text &&
        (rc = parse_float("strength", strength_text, 0.0, 1.0, true, &params.strength)))
        return rc;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log;
    if ((rc = parse_context_options(threads_text, device_text, &ctx_params)))
        return rc;

    /* 2. The output paths, before the long run (a stream writes rounds × batch files:
     *    out-ROUND.png, or out-ROUND-IMAGE.png for a batch). */
    int count = params.batch_count * (stream_rounds > 0 ? stream_rounds : 1);
    char **paths = calloc((size_t)count, sizeof *paths);
    if (!paths) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    moire_model *model = NULL;
    moire_vae *vae = NULL;
    moire_ctx *ctx = NULL;
    moire_image *init = NULL, *mask = NULL, *mask_gray = NULL;
    moire_image **images = NULL;
    int image_count = 0;
    rc = 0;
    for (int i = 0; i < count && !rc; i++) {
        if (stream_rounds > 0 && params.batch_count > 1)
            paths[i] = stream_path(output, i / params.batch_count, i % params.batch_count);
        else
            paths[i] = count == 1 ? strdup(output) : batch_path(output, i);
        if (!paths[i]) {
            error_line("out of memory");
            rc = EXIT_ERROR;
        }
    }
    if (!rc)
        rc = check_output_path("--output", paths[0]);
    if (!rc && routing_path)
        rc = check_output_path("--routing-map", routing_path);
    moire_routing_map *routing_map = NULL;
    if (routing_path)
        params.routing_map = &routing_map;

    /* 3. The model and what depends on it. */
    if (!rc)
        rc = load_model(model_path, &model);
    if (!rc) {
        const moire_model_config *config = moire_model_get_config(model);
        int scale = config->space == MOIRE_SPACE_LATENT ? 8 : 1;
        int multiple = scale * config->patch_size;
        const char *what = config->space == MOIRE_SPACE_LATENT
                               ? "latent model: 8 x patch size"
                               : "pixel model: the patch size";
        if (params.width % multiple || params.height % multiple) {
            bool bad_width = params.width % multiple != 0;
            int value = bad_width ? params.width : params.height;
            int lower = value / multiple * multiple, upper = lower + multiple;
            char suggestion[64];
            if (lower > 0)
                snprintf(suggestion, sizeof suggestion, "%d or %d", lower, upper);
            else
                snprintf(suggestion, sizeof suggestion, "%d", upper);
            error_line("--%s %d is not a multiple of %d (%s); use e.g. %s",
                       bad_width ? "width" : "height", value, multiple, what, suggestion);
            rc = EXIT_ERROR;
        } else if (is_text_model(config) && class_text) {
            error_line("--class: %s is text-conditioned; describe the image with --prompt",
                       moire_model_name(model));
            rc = EXIT_ERROR;
        } else if (params.class_id >= config->num_classes) {
            error_line("--class %d is out of range: this model has classes 0..%d",
                       params.class_id, config->num_classes - 1);
            rc = EXIT_ERROR;
        } else if (prompt && !is_text_model(config)) {
            int class_id;
            if (moire_model_resolve_class(model, prompt, &class_id) != MOIRE_OK)
                rc = engine_error("--prompt");
        }
        if (!rc && negative && negative[0] && !is_text_model(config)) {
            int class_id;
            if (moire_model_resolve_class(model, negative, &class_id) != MOIRE_OK)
                rc = engine_error("--negative");
        }
    }
    if (!rc && vae_path) {
        if (moire_vae_load(vae_path, &vae) != MOIRE_OK)
            rc = engine_error("--vae");
        else
            params.vae = vae;
    }
    /* the declared size first: decoding costs width·height·4 bytes, and an image larger than
       any generation (a 1 MB PNG may declare 16384², 1 GB of pixels) is refused unread */
    if (!rc && init_path && check_image_side("--init", init_path))
        rc = EXIT_ERROR;
    if (!rc && mask_path && check_image_side("--mask", mask_path))
        rc = EXIT_ERROR;
    if (!rc && init_path) {
        if (moire_png_load(init_path, &init, NULL, NULL) != MOIRE_OK)
            rc = engine_error("--init");
        else
            params.init_image = init;
    }
    moire_image *vary = NULL;
    if (!rc && vary_path) {
        if (moire_png_load(vary_path, &vary, NULL, NULL) != MOIRE_OK)
            rc = engine_error("--vary");
        else
            stream_params.source = vary;
    }
    if (!rc && mask_path) {
        if (moire_png_load(mask_path, &mask, NULL, NULL) != MOIRE_OK) {
            rc = engine_error("--mask");
        } else {
            mask_gray = mask_to_gray(mask);
            if (mask->channels != 1 && !mask_gray)
                rc = engine_error("--mask");
            params.mask = mask_gray ? mask_gray : mask;
        }
    }
    if (!rc && moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK)
        rc = engine_error("--device");

    /* 4. The run. */
    if (!rc) {
        progress_state state = {.tty = isatty(2) != 0, .quiet = quiet != NULL,
                                .last_decile = -1, .last_image = 0};
        moire_callbacks callbacks;
        memset(&callbacks, 0, sizeof callbacks);
        callbacks.progress = on_progress;
        callbacks.user_data = &state;
        install_sigint(ctx);
        moire_status status = MOIRE_OK;
        int stream_written = 0;
        if (stream_rounds > 0) {
            /* Each round's files are written as soon as they exist, so an artist can watch
             * the variations arrive (and Ctrl-C keeps what was already written). */
            moire_stream *stream = NULL;
            status = moire_stream_open(ctx, model, &params, &stream_params, &callbacks, &stream);
            moire_stream_info opened;
            moire_stream_get_info(stream, &opened);
            for (int round = 0; status == MOIRE_OK && round < stream_rounds; round++) {
                moire_image **batch = NULL;
                int n = 0;
                status = moire_stream_next(stream, &batch, &n);
                for (int i = 0; status == MOIRE_OK && i < n; i++) {
                    const int index = round * params.batch_count + i;
                    /* a plain new-pictures round r uses seeds seed + r·batch + i */
                    const int seed_index = opened.chains ? i : index;
                    char *parameters = moire_format_parameters(model, &params, seed_index);
                    char *json = moire_format_settings_json(model, &params, seed_index);
                    if (!parameters || !json)
                        status = MOIRE_ERROR_OUT_OF_MEMORY;
                    else
                        status = moire_png_save(paths[index], batch[i], parameters, json);
                    if (status == MOIRE_OK && !quiet)
                        end_progress(&state);
                    if (status == MOIRE_OK) {
                        printf("%s\n", paths[index]);
                        stream_written++;
                    }
                    fflush(stdout);
                    free(parameters);
                    free(json);
                }
                moire_images_free(batch, n);
            }
            moire_stream_info info;
            moire_stream_get_info(stream, &info);
            if (status == MOIRE_OK && info.chains)
                print_dmcmc_nfe(&dmcmc, &info);
            else if (status == MOIRE_OK)
                fprintf(stderr, "moire: new pictures: %d NFE per image, %d per image slot in "
                                "all\n", info.nfe_per_image, info.nfe_total);
            if (status == MOIRE_OK && stream_params.mode != MOIRE_STREAM_CHAINS && info.chains)
                fprintf(stderr, "moire: diversity guard: %d kick(s)\n", info.kicks);
            moire_stream_free(stream);
            image_count = 0; /* written already */
        } else {
            status = moire_generate(ctx, model, &params, &callbacks, &images, &image_count);
            if (status == MOIRE_OK && params.sampler == MOIRE_SAMPLER_DMCMC)
                print_dmcmc_nfe(&dmcmc, NULL);
        }
        g_running_ctx = NULL;
        signal(SIGINT, SIG_DFL);
        end_progress(&state);
        if ((status == MOIRE_ERROR_CANCELLED || g_interrupted) && stream_written > 0) {
            fprintf(stderr, "moire: interrupted; the %d image(s) listed above were written\n",
                    stream_written);
            rc = EXIT_INTERRUPTED;
        } else if (status == MOIRE_ERROR_CANCELLED || g_interrupted) {
            fprintf(stderr, "moire: interrupted; nothing was written\n");
            rc = EXIT_INTERRUPTED;
        } else if (status != MOIRE_OK) {
            rc = engine_error(NULL);
        } else if (stream_rounds == 0 && image_count != count) {
            error_line("the engine returned %d images instead of %d", image_count, count);
            rc = EXIT_ERROR;
        }
    }

    /* 5. The files. */
    for (int i = 0; !rc && i < image_count; i++) {
        char *parameters = moire_format_parameters(model, &params, i);
        char *json = moire_format_settings_json(model, &params, i);
        if (!parameters || !json) {
            error_line("out of memory formatting the metadata");
            rc = EXIT_ERROR;
        } else if (moire_png_save(paths[i], images[i], parameters, json) != MOIRE_OK) {
            rc = engine_error(NULL);
        } else {
            printf("%s\n", paths[i]);
            fflush(stdout);
        }
        free(parameters);
        free(json);
    }
    for (int i = 0; !rc && routing_map && i < image_count; i++)
        rc = write_routing_map(routing_map, i, count, routing_path, images[i]);

    moire_routing_map_free(routing_map);
    moire_images_free(images, image_count);
    moire_ctx_free(ctx);
    moire_image_free(init);
    moire_image_free(mask);
    moire_image_free(vary);
    moire_image_free(mask_gray);
    moire_vae_free(vae);
    moire_model_free(model);
    for (int i = 0; i < count; i++)
        free(paths[i]);
    free(paths);
    return rc;
}
