/* cmd-eval.c — `moire eval`: FID and prompt adherence of a model against an image
 * classifier. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * eval
 * ---------------------------------------------------------------------------------------- */

#define EVAL_DEFAULT_IMAGES 100
#define EVAL_DEFAULT_BATCH  8   /* the engine's own chunk of images per sampling run */
#define EVAL_GRID_COLUMNS   10
#define EVAL_GRID_MAX       400 /* images kept for --save-grid                        */

/* Item j of n spread evenly over k slots (k <= n): floor(j*k/n), so consecutive items share
 * a slot. It picks the class of each image (image j of N → class of the C run) and the
 * classifier class behind each of the C (class c of C → class of the K). A run of images
 * shares its prompt, so it is generated as one batch (or one DMCMC chain) with seeds S + j,
 * and the images do not depend on --batch. */
static int eval_class_of(int j, int n, int k)
{
    return (int)((int64_t)j * k / n);
}

/* `src` resampled to size × size by area averaging: each output pixel is the mean of the
 * source area it covers (partial pixels weighted), so a downscale keeps thin strokes. */
static moire_image *resize_area(const moire_image *src, int size)
{
    moire_image *dst = moire_image_new(size, size, src->channels);
    if (!dst)
        return NULL;
    const double step_x = (double)src->width / size, step_y = (double)src->height / size;
    for (int y = 0; y < size; y++) {
        const double y0 = y * step_y, y1 = y0 + step_y;
        for (int x = 0; x < size; x++) {
            const double x0 = x * step_x, x1 = x0 + step_x;
            double sum[4] = {0, 0, 0, 0}, area = 0.0;
            for (int py = (int)y0; py < src->height && py < y1; py++) {
                const double wy = fmin(py + 1.0, y1) - fmax((double)py, y0);
                for (int px = (int)x0; wy > 0.0 && px < src->width && px < x1; px++) {
                    const double wx = fmin(px + 1.0, x1) - fmax((double)px, x0);
                    if (wx <= 0.0)
                        continue;
                    const uint8_t *pixel =
                        src->pixels + ((size_t)py * src->width + (size_t)px) * src->channels;
                    for (int c = 0; c < src->channels && c < 4; c++)
                        sum[c] += wx * wy * pixel[c];
                    area += wx * wy;
                }
            }
            uint8_t *out = dst->pixels + ((size_t)y * size + (size_t)x) * dst->channels;
            for (int c = 0; c < dst->channels && c < 4; c++)
                out[c] = (uint8_t)lround(area > 0.0 ? sum[c] / area : 0.0);
        }
    }
    return dst;
}

/* Where the prompted class ranks among logits [k]: 0 = the classifier's top 1. Ties go to
 * the lower index, as an argmax would. */
static int class_rank(const float *logits, int k, int target)
{
    int rank = 0;
    for (int i = 0; i < k; i++)
        if (logits[i] > logits[target] || (logits[i] == logits[target] && i < target))
            rank++;
    return rank;
}

/* `text` as a JSON string. */
static void json_string(FILE *f, const char *text)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* The results of a run, for the summary and --json. */
typedef struct eval_result {
    const char *model, *classifier, *backend;
    int images, classes, classifier_classes, feature_dim; /* classes: those prompted */
    uint64_t seed;
    const char *sampler, *schedule;
    int steps;
    float cfg;
    int nfe_per_image;               /* DMCMC: per emission, as the paper counts it       */
    double nfe_per_image_amortized;  /* every evaluation of the run / images              */
    int reseeds;                     /* DMCMC chains re-seeded after leaving the band     */
    const moire_dmcmc_params *dmcmc; /* NULL unless the sampler is DMCMC */
    moire_dmcmc_level dmcmc_level;   /* DMCMC: the level estimate the chains used         */
    double fid;
    int top1, top5;                  /* images whose class was the top 1 / among the top 5 */
    double seconds;
} eval_result;

/* Writes the results as one JSON object to a temporary file beside `path`, then renames it,
 * so a reader never sees half a file. Returns 0 or EXIT_ERROR (message printed). */
static int write_eval_json(const char *path, const eval_result *r)
{
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        error_line("--json: cannot create %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return EXIT_ERROR;
    }
    fprintf(f, "{\"model\": ");
    json_string(f, r->model);
    fprintf(f, ", \"classifier\": ");
    json_string(f, r->classifier);
    fprintf(f, ", \"images\": %d, \"classes\": %d, \"classifier_classes\": %d, "
               "\"feature_dim\": %d, \"seed\": %" PRIu64 ", \"sampler\": ",
            r->images, r->classes, r->classifier_classes, r->feature_dim, r->seed);
    json_string(f, r->sampler);
    fprintf(f, ", \"schedule\": ");
    json_string(f, r->schedule);
    fprintf(f, ", \"steps\": %d, \"cfg\": %.7g, \"nfe_per_image\": %d, "
               "\"nfe_per_image_amortized\": %.17g, \"reseeds\": %d",
            r->steps, (double)r->cfg, r->nfe_per_image, r->nfe_per_image_amortized, r->reseeds);
    if (r->dmcmc)
        fprintf(f, ", \"dmcmc\": {\"eta\": %.7g, \"skip\": %d, \"integrator\": \"%s\", "
                   "\"integrator_steps\": %d, \"burn_in\": %d, \"level\": \"%s\"}",
                (double)r->dmcmc->eta, r->dmcmc->skip,
                moire_dmcmc_integrator_name(r->dmcmc->integrator), r->dmcmc->integrator_steps,
                r->dmcmc->burn_in, moire_dmcmc_level_name(r->dmcmc_level));
    fprintf(f, ", \"fid\": %.17g, \"top1\": %.17g, \"top5\": %.17g, \"top1_hits\": %d, "
               "\"top5_hits\": %d, \"seconds_per_image\": %.6g, \"seconds\": %.6g, "
               "\"backend\": ",
            r->fid, (double)r->top1 / r->images, (double)r->top5 / r->images, r->top1, r->top5,
            r->seconds / r->images, r->seconds);
    json_string(f, r->backend);
    fprintf(f, "}\n");
    const bool written = fflush(f) == 0 && !ferror(f) && fsync(fd) == 0;
    if (fclose(f) != 0 || !written) {
        error_line("--json: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return EXIT_ERROR;
    }
    if (moire_output_replace(tmp, path) != MOIRE_OK) {
        error_line("--json: %s", moire_last_error());
        unlink(tmp);
        return EXIT_ERROR;
    }
    return 0;
}

/* The kept images as one PNG: EVAL_GRID_COLUMNS per row, each cell an image as generated,
 * zero (transparent black) where the last row is not full. */
static int write_eval_grid(const char *path, moire_image *const *images, int count)
{
    const int columns = count < EVAL_GRID_COLUMNS ? count : EVAL_GRID_COLUMNS;
    const int rows = (count + columns - 1) / columns;
    const int cell_w = images[0]->width, cell_h = images[0]->height;
    const int channels = images[0]->channels;
    moire_image *grid = moire_image_new(columns * cell_w, rows * cell_h, channels);
    if (!grid) {
        error_line("--save-grid: out of memory for a %dx%d grid", columns * cell_w,
                   rows * cell_h);
        return EXIT_ERROR;
    }
    memset(grid->pixels, 0, (size_t)grid->width * (size_t)grid->height * (size_t)channels);
    for (int i = 0; i < count; i++) {
        const moire_image *image = images[i];
        const int x0 = (i % columns) * cell_w, y0 = (i / columns) * cell_h;
        const int width = cell_w < image->width ? cell_w : image->width;
        for (int y = 0; y < cell_h && y < image->height && image->channels == channels; y++)
            memcpy(grid->pixels + ((size_t)(y0 + y) * grid->width + (size_t)x0) * channels,
                   image->pixels + (size_t)y * image->width * channels,
                   (size_t)width * channels);
    }
    int rc = 0;
    if (moire_png_save(path, grid, NULL, NULL) != MOIRE_OK)
        rc = engine_error("--save-grid");
    moire_image_free(grid);
    return rc;
}

/* Fills images[0..count) with the next `count` emissions of a one-chain DMCMC stream, the
 * image of each, and adds every emission's model evaluations to *nfe_total. progress->done
 * follows the image being made (it starts at the first). *made is the number of images
 * returned; on failure or cancel the ones made are freed and *made is 0. */
static moire_status eval_stream_take(moire_stream *stream, int count, eval_progress *progress,
                                     moire_image **images, int *made, int64_t *nfe_total)
{
    const int first = progress->done;
    moire_status status = MOIRE_OK;
    *made = 0;
    for (int i = 0; i < count && status == MOIRE_OK; i++) {
        /* moire_stream_next clears the context's cancel flag when it starts, so a Ctrl-C
           that came between two emissions is only seen here. */
        if (g_interrupted) {
            status = MOIRE_ERROR_CANCELLED;
            break;
        }
        progress->done = first + i;
        moire_image **emitted = NULL;
        int emitted_count = 0;
        status = moire_stream_next(stream, &emitted, &emitted_count);
        if (status == MOIRE_OK && emitted_count > 0) {
            moire_stream_info info;
            moire_stream_get_info(stream, &info);
            *nfe_total += info.nfe_per_image;
            images[(*made)++] = emitted[0];
            emitted[0] = NULL;
        }
        moire_images_free(emitted, emitted_count);
    }
    progress->done = first;
    if (status != MOIRE_OK) {
        for (int i = 0; i < *made; i++) {
            moire_image_free(images[i]);
            images[i] = NULL;
        }
        *made = 0;
    }
    return status;
}

int cmd_eval(int argc, char **argv)
{
    const char *model_path = NULL, *classifier_text = NULL, *images_text = NULL,
               *classes_text = NULL, *seed_text = NULL, *batch_text = NULL,
               *threads_text = NULL,
               *device_text = NULL, *json_path = NULL, *grid_path = NULL, *quiet = NULL,
               *features_path = NULL;
    sampler_options sampling = {0};
    const option_spec specs[] = {
        {"model", true, &model_path},     {"classifier", true, &classifier_text},
        {"features", true, &features_path},
        {"images", true, &images_text},   {"classes", true, &classes_text},
        {"seed", true, &seed_text},       {"batch", true, &batch_text},
        SAMPLER_OPTION_SPECS(sampling),
        {"threads", true, &threads_text}, {"device", true, &device_text},
        {"json", true, &json_path},       {"save-grid", true, &grid_path},
        {"quiet", false, &quiet},
    };
    int rc = parse_options("eval", argc, argv, 2, specs, (int)(sizeof specs / sizeof *specs));
    if (rc)
        return rc;

    /* 1. Everything that needs no file. */
    if (!model_path && (rc = default_model_or_usage_error(&model_path)))
        return rc;
    int image_count = EVAL_DEFAULT_IMAGES, batch = EVAL_DEFAULT_BATCH;
    if (images_text && (rc = parse_int("images", images_text, 2, 1000000, &image_count)))
        return rc;
    if (batch_text && (rc = parse_int("batch", batch_text, 1, 10000, &batch)))
        return rc;
    int class_count = 0; /* 0 = min(N, K), once K is known */
    if (classes_text && (rc = parse_int("classes", classes_text, 1, 1000000, &class_count)))
        return rc;
    if (class_count > image_count) {
        error_line("--classes %d: more classes than the %d images; each class needs at least "
                   "one image", class_count, image_count);
        return EXIT_USAGE;
    }
    moire_generate_params params = moire_generate_params_default();
    params.seed = 0;
    if (seed_text && (rc = parse_seed(seed_text, &params.seed)))
        return rc;
    const uint64_t first_seed = params.seed;
    moire_dmcmc_params dmcmc;
    if ((rc = apply_sampler_options("eval", &sampling, false, &params, &dmcmc)))
        return rc;
    moire_ctx_params ctx_params = moire_ctx_params_default();
    ctx_params.log = print_engine_log_once;
    if ((rc = parse_context_options(threads_text, device_text, &ctx_params)))
        return rc;
    if (json_path && (rc = check_output_path("--json", json_path)))
        return rc;
    if (grid_path && (rc = check_output_path("--save-grid", grid_path)))
        return rc;
    if (features_path && (rc = check_output_path("--features", features_path)))
        return rc;

    /* The classifier: --classifier, $MOIRE_CLASSIFIER, or the one beside the model. */
    const char *env_classifier = getenv("MOIRE_CLASSIFIER");
    const bool classifier_named = classifier_text || (env_classifier && env_classifier[0]);
    char *classifier_path =
        classifier_text    ? strdup(classifier_text)
        : classifier_named ? strdup(env_classifier)
                           : moire_model_companion_path(model_path, MOIRE_FEATURES_SUFFIX);
    if (!classifier_path) {
        error_line("out of memory");
        return EXIT_ERROR;
    }
    if (!classifier_named && access(classifier_path, F_OK) != 0) {
        error_line("no classifier for %s: %s does not exist; give --classifier FILE or set "
                   "$MOIRE_CLASSIFIER (tools/train/train_classifier.py trains one)", model_path,
                   classifier_path);
        free(classifier_path);
        return EXIT_ERROR;
    }

    /* 2. The model, the classifier, and whether they fit together. */
    moire_model *model = NULL;
    moire_classifier *classifier = NULL;
    moire_ctx *ctx = NULL;
    int *class_ids = NULL;
    float *features = NULL, *logits = NULL;
    int *image_class = NULL, *image_rank = NULL; /* [N] for --features */
    moire_image **kept = NULL; /* [EVAL_GRID_MAX] for --save-grid, as generated */
    int kept_count = 0;
    if ((rc = load_model(model_path, &model)))
        goto done;
    if (moire_classifier_load(classifier_path, &classifier) != MOIRE_OK) {
        rc = engine_error("--classifier");
        goto done;
    }
    const moire_model_config *config = moire_model_get_config(model);
    const int K = moire_classifier_num_classes(classifier);
    const int D = moire_classifier_feature_dim(classifier);
    const int input_size = moire_classifier_input_size(classifier);
    if (class_count > K) {
        error_line("--classes %d: the classifier %s has only %d classes", class_count,
                   classifier_path, K);
        rc = EXIT_USAGE;
        goto done;
    }
    if (class_count == 0)
        class_count = image_count < K ? image_count : K;
    class_ids = calloc((size_t)K, sizeof *class_ids);
    features = malloc((size_t)image_count * (size_t)D * sizeof *features); /* [N, D] */
    logits = malloc((size_t)batch * (size_t)K * sizeof *logits);          /* [B, K] */
    kept = grid_path ? calloc(EVAL_GRID_MAX, sizeof *kept) : NULL;
    image_class = calloc((size_t)image_count, sizeof *image_class);
    image_rank = calloc((size_t)image_count, sizeof *image_rank);
    if (!class_ids || !features || !logits || (grid_path && !kept) || !image_class ||
        !image_rank) {
        error_line("out of memory for the features of %d images", image_count);
        rc = EXIT_ERROR;
        goto done;
    }
    /* A class-conditional model must know every class of the classifier by name. */
    for (int k = 0; k < K && !is_text_model(config); k++) {
        const char *name = moire_classifier_class_name(classifier, k);
        if (moire_model_resolve_class(model, name, &class_ids[k]) != MOIRE_OK) {
            error_line("--classifier: class '%s' of %s is not a class of %s: %s", name,
                       classifier_path, moire_model_name(model), moire_last_error());
            rc = EXIT_ERROR;
            goto done;
        }
    }
    const int model_side = config->input_size * (config->space == MOIRE_SPACE_LATENT ? 8 : 1);
    if (model_side != input_size && !quiet)
        fprintf(stderr, "moire: eval: the model makes %dx%d images; they are resized to %dx%d "
                        "for the classifier\n", model_side, model_side, input_size, input_size);
    if (moire_ctx_new(&ctx_params, &ctx) != MOIRE_OK) {
        rc = engine_error("--device");
        goto done;
    }

    /* 3. The run: each run of same-class images in chunks of up to --batch, generated then
     *    classified. A plain sampler makes a chunk with one moire_generate call. DMCMC runs
     *    the class's whole run as one stream with one chain, the way an artist browses a
     *    prompt: the burn-in is paid once per class and each image is one emission. */
    eval_progress progress = {.tty = isatty(2) != 0, .quiet = quiet != NULL,
                              .total = image_count};
    moire_callbacks callbacks;
    memset(&callbacks, 0, sizeof callbacks);
    callbacks.progress = on_eval_progress;
    callbacks.user_data = &progress;
    install_sigint(ctx);
    const bool dmcmc_run = params.sampler == MOIRE_SAMPLER_DMCMC;
    moire_stream *stream = NULL; /* DMCMC: the chain of the current class's run */
    int top1 = 0, top5 = 0, nfe = 0, last_decile = 0, reseeds = 0;
    moire_dmcmc_level level_used = MOIRE_DMCMC_LEVEL_RESIDUAL; /* DMCMC, as the chains report */
    int64_t nfe_total = 0, nfe_burn_in = 0, nfe_reseed = 0; /* DMCMC, all chains */
    const double started = wall_seconds();
    moire_status status = MOIRE_OK;
    for (int first = 0; first < image_count && status == MOIRE_OK && !rc && !g_interrupted;) {
        const int c = eval_class_of(first, image_count, class_count);
        const int k = eval_class_of(c, class_count, K);
        int count = 1;
        while (first + count < image_count && count < batch &&
               eval_class_of(first + count, image_count, class_count) == c)
            count++;
        const bool run_ends = first + count == image_count ||
                              eval_class_of(first + count, image_count, class_count) != c;
        params.prompt = moire_classifier_class_name(classifier, k);
        params.class_id = is_text_model(config) ? -1 : class_ids[k];
        progress.done = first;
        progress.nfe = 0;
        moire_image **images = NULL;
        int made = 0;
        if (dmcmc_run) {
            if (!stream) { /* the first chunk of the class's run */
                params.seed = first_seed + (uint64_t)first;
                params.batch_count = 1;
                progress.burning_in = true;
                status = moire_stream_new(ctx, model, &params, &callbacks, &stream);
                progress.burning_in = false;
            }
            images = status == MOIRE_OK ? calloc((size_t)count, sizeof *images) : NULL;
            if (status == MOIRE_OK && !images) {
                end_progress_line(&progress);
                error_line("out of memory for %d images", count);
                rc = EXIT_ERROR;
            } else if (status == MOIRE_OK) {
                status = eval_stream_take(stream, count, &progress, images, &made, &nfe_total);
            }
            if (stream && run_ends) {
                /* The chain's one-off costs, known once it has made its last image. */
                moire_stream_info info;
                moire_stream_get_info(stream, &info);
                nfe_burn_in += info.nfe_one_off;
                nfe_reseed += info.nfe_reseed;
                reseeds += info.reseeds;
                level_used = info.level;
                moire_stream_free(stream);
                stream = NULL;
            }
        } else {
            params.seed = first_seed + (uint64_t)first;
            params.batch_count = count;
            status = moire_generate(ctx, model, &params, &callbacks, &images, &made);
        }
        if (status == MOIRE_OK && !rc && made != count) {
            end_progress_line(&progress);
            error_line("the engine returned %d images instead of %d", made, count);
            rc = EXIT_ERROR;
        }
        if (progress.nfe > nfe)
            nfe = progress.nfe;
        /* The classifier sees input_size × input_size; the grid shows them as generated. */
        for (int i = 0; status == MOIRE_OK && !rc && i < made; i++) {
            moire_image *generated = images[i];
            if (generated->width != input_size || generated->height != input_size) {
                images[i] = resize_area(generated, input_size);
                if (!images[i]) {
                    images[i] = generated;
                    end_progress_line(&progress);
                    error_line("out of memory resizing the images");
                    rc = EXIT_ERROR;
                    break;
                }
            }
            if (kept && first + i < EVAL_GRID_MAX) {
                /* a resized image's original moves to the grid; an unresized one is
                   copied there after the classifier has seen it */
                kept[first + i] = generated != images[i] ? generated : NULL;
                kept_count = first + i + 1;
            } else if (generated != images[i]) {
                moire_image_free(generated);
            }
        }
        if (status == MOIRE_OK && !rc &&
            moire_classifier_run(classifier, (const moire_image *const *)images, made,
                                 features + (size_t)first * D, logits) != MOIRE_OK) {
            end_progress_line(&progress);
            rc = engine_error("--classifier");
        }
        for (int i = 0; status == MOIRE_OK && !rc && i < made; i++) {
            const int rank = class_rank(logits + (size_t)i * K, K, k);
            top1 += rank == 0;
            top5 += rank < 5;
            image_class[first + i] = k;
            image_rank[first + i] = rank;
            if (kept && first + i < EVAL_GRID_MAX && !kept[first + i]) {
                kept[first + i] = images[i];
                images[i] = NULL;
            }
        }
        moire_images_free(images, made);
        first += count;
        if (!progress.quiet && !progress.tty && first * 10 / image_count > last_decile) {
            last_decile = first * 10 / image_count;
            fprintf(stderr, "images %d/%d\n", first, image_count);
        }
    }
    const double seconds = wall_seconds() - started;
    moire_stream_free(stream); /* a run cut short by an error or Ctrl-C */
    g_running_ctx = NULL;
    signal(SIGINT, SIG_DFL);
    end_progress_line(&progress);
    if (rc)
        goto done;
    if (status == MOIRE_ERROR_CANCELLED || g_interrupted) {
        fprintf(stderr, "moire: interrupted; nothing was written\n");
        rc = EXIT_INTERRUPTED;
        goto done;
    }
    if (status != MOIRE_OK) {
        rc = engine_error(NULL);
        goto done;
    }

    /* 4. The results. */
    eval_result result = {.model = moire_model_name(model), .classifier = classifier_path,
                          .backend = moire_ctx_backend_name(ctx), .images = image_count,
                          .classes = class_count, .classifier_classes = K, .feature_dim = D,
                          .seed = first_seed, .reseeds = reseeds, .top1 = top1, .top5 = top5,
                          .seconds = seconds, .dmcmc_level = level_used};
    if (moire_classifier_fid(classifier, features, image_count, &result.fid) != MOIRE_OK) {
        rc = engine_error("FID");
        goto done;
    }
    moire_sampler default_sampler;
    int default_steps;
    float default_cfg;
    moire_model_get_defaults(model, &default_sampler, &default_steps, &default_cfg);
    const moire_sampler sampler =
        params.sampler == MOIRE_SAMPLER_DEFAULT ? default_sampler : params.sampler;
    result.sampler = moire_sampler_name(sampler);
    result.schedule = moire_schedule_name(params.schedule == MOIRE_SCHEDULE_DEFAULT
                                              ? MOIRE_SCHEDULE_UNIFORM
                                              : params.schedule);
    result.cfg = params.cfg_scale < 0.0f ? default_cfg : params.cfg_scale;
    if (sampler == MOIRE_SAMPLER_DMCMC) {
        /* Per image, the paper's accounting, as `moire generate` reports it; amortised,
           everything the chains evaluated, burn-in and re-seeds included. */
        result.steps = dmcmc.integrator_steps;
        result.nfe_per_image = moire_dmcmc_nfe_per_sample(&dmcmc);
        result.nfe_per_image_amortized =
            (double)(nfe_total + nfe_burn_in + nfe_reseed) / image_count;
        result.dmcmc = &dmcmc;
    } else {
        /* As the engine counted them (moire_progress.nfe): one per model call of the
           sampler, whatever the batch. Nothing is paid once, so both counts agree. */
        result.steps = params.steps > 0 ? params.steps : default_steps;
        result.nfe_per_image = nfe;
        result.nfe_per_image_amortized = nfe;
    }
    char cfg_text[32];
    printf("model:          %s\n", result.model);
    printf("classifier:     %s (%d classes, %d features)\n", classifier_path, K, D);
    printf("images:         %d over %d classes (seeds %" PRIu64 "..%" PRIu64 ")\n", image_count,
           class_count, first_seed, first_seed + (uint64_t)image_count - 1);
    printf("sampler:        %s, %d steps, %s schedule, CFG %s\n", result.sampler, result.steps,
           result.schedule, moire_format_float(result.cfg, cfg_text, sizeof cfg_text));
    if (result.dmcmc) {
        const int tweedie_nfe = dmcmc.tweedie ? 1 : 0;
        printf("NFE per image:  %d (skip %d + %s %d + Tweedie %d)\n", result.nfe_per_image,
               dmcmc.skip, moire_dmcmc_integrator_name(dmcmc.integrator),
               result.nfe_per_image - dmcmc.skip - tweedie_nfe, tweedie_nfe);
        printf("NFE per image incl. burn-in: %.2f (one chain per class: %" PRId64 " NFE of "
               "burn-in, %d re-seed(s) costing %" PRId64 " NFE)\n",
               result.nfe_per_image_amortized, nfe_burn_in, reseeds, nfe_reseed);
        printf("noise levels:   from the %s\n", level_used == MOIRE_DMCMC_LEVEL_CLASSIFIER
                                                    ? "noise-level classifier"
                                                    : "residual estimate");
    } else
        printf("NFE per image:  %d%s\n", result.nfe_per_image,
               result.cfg != 1.0f ? " (a CFG step counts once)" : "");
    printf("FID:            %.4f\n", result.fid);
    printf("top-1:          %.1f %% (%d of %d)\n", 100.0 * top1 / image_count, top1,
           image_count);
    printf("top-5:          %.1f %% (%d of %d)\n", 100.0 * top5 / image_count, top5,
           image_count);
    printf("time:           %.3f s per image (%.1f s, %s)\n", seconds / image_count, seconds,
           result.backend);
    fflush(stdout);
    if (json_path && (rc = write_eval_json(json_path, &result)))
        goto done;
    if (grid_path && kept_count > 0 && (rc = write_eval_grid(grid_path, kept, kept_count)))
        goto done;
    if (features_path) {
        /* [N, D + 2]: the features, then the prompted class and its rank (0 = top-1), for
           the statistics tools/eval/ computes (KID, diversity, recall, error bars). */
        float *table = malloc((size_t)image_count * (size_t)(D + 2) * sizeof *table);
        if (!table) {
            error_line("--features: out of memory");
            rc = EXIT_ERROR;
            goto done;
        }
        for (int i = 0; i < image_count; i++) {
            memcpy(table + (size_t)i * (D + 2), features + (size_t)i * D, (size_t)D * sizeof *table);
            table[(size_t)i * (D + 2) + D] = (float)image_class[i];
            table[(size_t)i * (D + 2) + D + 1] = (float)image_rank[i];
        }
        const int64_t shape[2] = {image_count, D + 2};
        const moire_status saved = moire_npy_save(features_path, 2, shape, table);
        free(table);
        if (saved != MOIRE_OK) {
            rc = engine_error("--features");
            goto done;
        }
    }

done:
    for (int i = 0; kept && i < EVAL_GRID_MAX; i++)
        moire_image_free(kept[i]);
    free(kept);
    free(features);
    free(logits);
    free(class_ids);
    free(image_class);
    free(image_rank);
    moire_ctx_free(ctx);
    moire_classifier_free(classifier);
    moire_model_free(model);
    free(classifier_path);
    return rc;
}
