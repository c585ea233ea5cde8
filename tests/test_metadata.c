/* test_metadata.c — the A1111 "parameters" text: exact layout, quoting, float formatting,
 * parsing (ours and foreign texts) and format → parse round trips. When the tiny test model
 * exists, moire_format_parameters / moire_format_settings_json are checked on it too. */
#include "moire-metadata.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void check_text(const char *name, const char *got, const char *want)
{
    CHECK(got && strcmp(got, want) == 0, "%s:\n got: [%s]\nwant: [%s]", name,
          got ? got : "(null)", want);
}

static moire_parameters sample_parameters(void)
{
    moire_parameters p = moire_parameters_init();
    p.prompt = (char *)"a photo of a golden retriever";
    p.negative_prompt = (char *)"blurry";
    p.steps = 50;
    p.sampler = (char *)"Euler a";
    p.schedule = (char *)"Karras";
    p.cfg_scale = 7.0f;
    p.has_seed = true;
    p.seed = 965400086;
    p.width = 256;
    p.height = 256;
    p.model = (char *)"dit_moe_s_8E2A";
    p.version = (char *)"Moir\xc3\xa9 0.1.0";
    return p;
}

static void test_exact_layout(void)
{
    moire_parameters p = sample_parameters();
    char *text = moire_parameters_format(&p);
    check_text("full", text,
               "a photo of a golden retriever\n"
               "Negative prompt: blurry\n"
               "Steps: 50, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, "
               "Seed: 965400086, Size: 256x256, Model: dit_moe_s_8E2A, Version: Moir\xc3\xa9 "
               "0.1.0");
    free(text);

    /* No negative line when empty; fractional CFG; denoising strength after Model. */
    p.negative_prompt = (char *)"";
    p.cfg_scale = 4.5f;
    p.denoising_strength = 0.75f;
    p.sampler = (char *)"DPM++ 2M";
    p.schedule = (char *)"Uniform";
    text = moire_parameters_format(&p);
    check_text("img2img", text,
               "a photo of a golden retriever\n"
               "Steps: 50, Sampler: DPM++ 2M, Schedule type: Uniform, CFG scale: 4.5, "
               "Seed: 965400086, Size: 256x256, Model: dit_moe_s_8E2A, Denoising strength: "
               "0.75, Version: Moir\xc3\xa9 0.1.0");
    free(text);

    /* Values with ',', ':' or quotes are JSON strings; the whole text is stripped. */
    p = sample_parameters();
    p.prompt = (char *)"  tench, Tinca tinca  ";
    p.negative_prompt = NULL;
    p.model = (char *)"weird: \"name\", v2";
    text = moire_parameters_format(&p);
    check_text("quoted", text,
               "tench, Tinca tinca  \n"
               "Steps: 50, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, "
               "Seed: 965400086, Size: 256x256, Model: \"weird: \\\"name\\\", v2\", "
               "Version: Moir\xc3\xa9 0.1.0");
    free(text);
}

static void test_float_format(void)
{
    char buffer[32];
    check_text("7", moire_format_float(7.0f, buffer, sizeof buffer), "7");
    check_text("4.5", moire_format_float(4.5f, buffer, sizeof buffer), "4.5");
    check_text("0.1", moire_format_float(0.1f, buffer, sizeof buffer), "0.1");
    check_text("1.25", moire_format_float(1.25f, buffer, sizeof buffer), "1.25");
    check_text("0.333…", moire_format_float(1.0f / 3.0f, buffer, sizeof buffer), "0.33333334");
}

static void test_parse(void)
{
    const char *a1111 =
        "masterpiece, best quality\nsecond line\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 965400086, "
        "Size: 512x768, Model hash: 45dee52b, Model: v1-5-pruned-emaonly, Denoising strength: "
        "0.75, Clip skip: 2, Lora hashes: \"add_detail: 7c6bad76eb54\", Version: v1.10.1\n";
    moire_parameters p;
    CHECK(moire_parse_parameters(a1111, &p) == MOIRE_OK, "parse: %s", moire_last_error());
    check_text("prompt", p.prompt, "masterpiece, best quality\nsecond line");
    check_text("negative", p.negative_prompt, "lowres, bad anatomy");
    CHECK(p.steps == 20, "steps %d", p.steps);
    check_text("sampler", p.sampler, "DPM++ 2M");
    check_text("schedule", p.schedule, "Karras");
    CHECK(p.cfg_scale == 7.0f, "cfg %g", (double)p.cfg_scale);
    CHECK(p.has_seed && p.seed == 965400086ull, "seed");
    CHECK(p.width == 512 && p.height == 768, "size %dx%d", p.width, p.height);
    check_text("model", p.model, "v1-5-pruned-emaonly");
    CHECK(fabsf(p.denoising_strength - 0.75f) < 1e-7f, "strength");
    check_text("version", p.version, "v1.10.1");
    bool found_lora = false;
    for (int i = 0; i < p.pair_count; i++)
        if (strcmp(p.keys[i], "Lora hashes") == 0) {
            found_lora = true;
            check_text("lora (unquoted)", p.values[i], "add_detail: 7c6bad76eb54");
        }
    CHECK(found_lora, "the Lora hashes pair is kept");
    CHECK(p.pair_count == 12, "pairs %d", p.pair_count);
    moire_parameters_clear(&p);

    /* No parameter line: everything is the prompt. */
    CHECK(moire_parse_parameters("just a prompt: with a colon", &p) == MOIRE_OK, "parse");
    check_text("prompt only", p.prompt, "just a prompt: with a colon");
    CHECK(p.steps == 0 && !p.has_seed && isnan(p.cfg_scale), "no values");
    moire_parameters_clear(&p);

    /* Only a parameter line (empty prompt). */
    CHECK(moire_parse_parameters("Steps: 5, Sampler: Euler, Seed: 3", &p) == MOIRE_OK, "parse");
    check_text("empty prompt", p.prompt, "");
    CHECK(p.steps == 5 && p.seed == 3, "values");
    moire_parameters_clear(&p);

    CHECK(moire_parse_parameters(NULL, &p) != MOIRE_OK, "NULL text fails");
}

static void test_round_trip(void)
{
    moire_parameters p = sample_parameters();
    p.prompt = (char *)"caf\xc3\xa9, \"quoted\"\nline two: x";
    p.negative_prompt = (char *)"Moir\xc3\xa9 \xe2\x80\x93 caf\xc3\xa9";
    p.model = (char *)"model, with: comma";
    p.cfg_scale = 1.5f;
    p.denoising_strength = 0.6f;
    p.seed = 18446744073709551615ull;
    char *text = moire_parameters_format(&p);
    moire_parameters q;
    CHECK(text && moire_parse_parameters(text, &q) == MOIRE_OK, "parse");
    check_text("rt prompt", q.prompt, p.prompt);
    check_text("rt negative", q.negative_prompt, p.negative_prompt);
    CHECK(q.steps == p.steps, "rt steps");
    check_text("rt sampler", q.sampler, p.sampler);
    check_text("rt schedule", q.schedule, p.schedule);
    CHECK(q.cfg_scale == p.cfg_scale, "rt cfg");
    CHECK(q.has_seed && q.seed == p.seed, "rt seed %llu", (unsigned long long)q.seed);
    CHECK(q.width == p.width && q.height == p.height, "rt size");
    check_text("rt model", q.model, p.model);
    CHECK(q.denoising_strength == p.denoising_strength, "rt strength");
    check_text("rt version", q.version, p.version);
    /* Formatting the parsed values gives the same text back. */
    char *again = moire_parameters_format(&q);
    check_text("rt text", again, text);
    free(again);
    free(text);
    moire_parameters_clear(&q);
}

static void test_with_model(void)
{
    const char *path = test_data_path("golden/tiny_qkv.safetensors");
    if (access(path, R_OK) != 0) {
        printf("SKIP model checks: %s not found\n", path);
        return;
    }
    moire_model *model = NULL;
    if (moire_model_load(path, &model) != MOIRE_OK) {
        CHECK(false, "load %s: %s", path, moire_last_error());
        return;
    }
    moire_generate_params params = moire_generate_params_default();
    params.class_id = 3;
    params.seed = 7;
    params.steps = 10;
    params.cfg_scale = 4.0f;
    params.sampler = MOIRE_SAMPLER_EULER;
    char *text = moire_format_parameters(model, &params, 1);
    moire_parameters p;
    CHECK(text && moire_parse_parameters(text, &p) == MOIRE_OK, "parse");
    const char *name = moire_model_class_name(model, 3);
    char fallback[32];
    snprintf(fallback, sizeof fallback, "class 3");
    check_text("class prompt", p.prompt, name ? name : fallback);
    CHECK(p.steps == 10 && p.has_seed && p.seed == 8, "steps/seed");
    check_text("sampler label", p.sampler, "Euler");
    check_text("model stem", p.model, "tiny_qkv");
    check_text("version", p.version, "Moir\xc3\xa9 0.1.0");
    CHECK(strstr(text, "Denoising strength") == NULL, "no strength without init");
    const moire_model_config *config = moire_model_get_config(model);
    int trained = config->space == MOIRE_SPACE_LATENT ? config->input_size * 8
                                                      : config->input_size;
    CHECK(p.width == trained && p.height == trained, "default size %dx%d", p.width, p.height);
    moire_parameters_clear(&p);
    free(text);

    char *json = moire_format_settings_json(model, &params, 1);
    CHECK(json && strstr(json, "\"seed\": 8") && strstr(json, "\"class_id\": 3") &&
              strstr(json, "\"sampler\": \"euler\""),
          "json: %s", json ? json : "(null)");
    free(json);
    moire_model_free(model);
}

int main(void)
{
    test_exact_layout();
    test_float_format();
    test_parse();
    test_round_trip();
    test_with_model();
    return test_finish("metadata");
}
