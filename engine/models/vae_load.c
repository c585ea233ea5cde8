/* vae_load.c — loading the SD-VAE (AutoencoderKL, KL-f8): finding the weights and
 * config.json, binding both key layouts (diffusers and the original LDM one, optionally under
 * first_stage_model.) to the weight structs, inferring and checking the structure, and binding
 * the weights to the context's backend. vae.c runs it; docs/VAE.md is its spec.
 *
 * F32 weights point into the mmapped file, F16/BF16 ones are converted once into an owned
 * arena.
 */
#include "bind.h"
#include "context.h"
#include "dit_common.h"
#include "file_guard.h"
#include "internal.h"
#include "json_guard.h"
#include "ops.h"
#include "safetensors.h"
#include "vae.h"
#include "vae_parts.h"
#include "weight_binding.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------------------------
 * Loading: key names, structure inference, binding and checks
 * ---------------------------------------------------------------------------------------- */

typedef struct vae_loader {
    moire_vae *vae;
    const st_file *file;
    const char *path;
    const char *prefix;     /* "" or "first_stage_model." */
    bool ldm;
    bool old_attention;     /* diffusers query/key/value/proj_attn */
    weight_list weights;
} vae_loader;

static const st_tensor *find_key(const vae_loader *l, const char *fmt, ...) MOIRE_PRINTF(2, 3);
static const st_tensor *find_key(const vae_loader *l, const char *fmt, ...)
{
    char key[192];
    int used = snprintf(key, sizeof key, "%s", l->prefix);
    va_list args;
    va_start(args, fmt);
    vsnprintf(key + used, sizeof key - (size_t)used, fmt, args);
    va_end(args);
    return st_find(l->file, key);
}

/* One weight "<prefix><base>.<leaf>"; `linear`: an attention projection, [C, C] in diffusers
 * files and a [C, C, 1, 1] convolution in LDM ones. */
static void want(vae_loader *l, const float **field, const char *base, const char *leaf,
                 bool linear, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    weight_binding *b =
        weight_list_add(&l->weights, field, ndim, d0, d1, d2, d3, "%s%s.%s", l->prefix, base, leaf);
    if (b)
        b->also_1x1_conv = linear;
}

static void want_conv(vae_loader *l, vae_conv *c, const char *base, int co, int ci, int k)
{
    c->co = co, c->ci = ci, c->k = k;
    want(l, &c->weight, base, "weight", false, 4, co, ci, k, k);
    want(l, &c->bias, base, "bias", false, 1, co, 0, 0, 0);
}

static void want_linear(vae_loader *l, vae_conv *c, const char *base, int channels)
{
    c->co = c->ci = channels, c->k = 1;
    want(l, &c->weight, base, "weight", true, 2, channels, channels, 0, 0);
    want(l, &c->bias, base, "bias", false, 1, channels, 0, 0, 0);
}

static void want_norm(vae_loader *l, vae_norm *n, const char *base, int channels)
{
    want(l, &n->weight, base, "weight", false, 1, channels, 0, 0, 0);
    want(l, &n->bias, base, "bias", false, 1, channels, 0, 0, 0);
    n->channels = channels;
}

static void want_resnet(vae_loader *l, vae_resnet *r, const char *base, int ci, int co)
{
    char name[160];
    snprintf(name, sizeof name, "%s.norm1", base);
    want_norm(l, &r->norm1, name, ci);
    snprintf(name, sizeof name, "%s.conv1", base);
    want_conv(l, &r->conv1, name, co, ci, 3);
    snprintf(name, sizeof name, "%s.norm2", base);
    want_norm(l, &r->norm2, name, co);
    snprintf(name, sizeof name, "%s.conv2", base);
    want_conv(l, &r->conv2, name, co, co, 3);
    if (ci != co) {
        snprintf(name, sizeof name, "%s.%s", base, l->ldm ? "nin_shortcut" : "conv_shortcut");
        want_conv(l, &r->shortcut, name, co, ci, 1);
    }
}

static void want_mid(vae_loader *l, vae_mid *m, const char *part, int channels)
{
    char base[160], name[192];
    snprintf(base, sizeof base, l->ldm ? "%s.mid.block_1" : "%s.mid_block.resnets.0", part);
    want_resnet(l, &m->resnet1, base, channels, channels);
    snprintf(base, sizeof base, l->ldm ? "%s.mid.block_2" : "%s.mid_block.resnets.1", part);
    want_resnet(l, &m->resnet2, base, channels, channels);
    /* norm, q, k, v, out under each naming */
    static const char *const names[3][5] = {
        {"group_norm", "to_q", "to_k", "to_v", "to_out.0"},  /* diffusers           */
        {"group_norm", "query", "key", "value", "proj_attn"}, /* diffusers before 0.15 */
        {"norm", "q", "k", "v", "proj_out"},                  /* LDM (1×1 convs)     */
    };
    const char *const *n = names[l->ldm ? 2 : l->old_attention ? 1 : 0];
    snprintf(base, sizeof base, l->ldm ? "%s.mid.attn_1" : "%s.mid_block.attentions.0", part);
    snprintf(name, sizeof name, "%s.%s", base, n[0]);
    want_norm(l, &m->attn.norm, name, channels);
    vae_conv *proj[4] = {&m->attn.q, &m->attn.k, &m->attn.v, &m->attn.proj};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s.%s", base, n[i + 1]);
        want_linear(l, proj[i], name, channels);
    }
}

/* Key base of a level: encoder down level i, or decoder up level i in execution order. */
static void level_base(const vae_loader *l, char *buf, size_t size, bool up, int i)
{
    const int levels = l->vae->info.levels;
    if (l->ldm)
        snprintf(buf, size, up ? "decoder.up.%d" : "encoder.down.%d", up ? levels - 1 - i : i);
    else
        snprintf(buf, size, up ? "decoder.up_blocks.%d" : "encoder.down_blocks.%d", i);
}

static void want_coder(vae_loader *l, bool decoder)
{
    moire_vae *vae = l->vae;
    const moire_vae_info *info = &vae->info;
    const int L = info->levels, z = info->latent_channels, top = info->block_out_channels[L - 1];
    vae_coder *c = decoder ? &vae->decoder : &vae->encoder;
    const char *part = decoder ? "decoder" : "encoder";
    char base[160], name[192];

    snprintf(name, sizeof name, "%s.conv_in", part);
    want_conv(l, &c->conv_in, name, decoder ? top : info->block_out_channels[0],
              decoder ? z : info->image_channels, 3);
    int channels = decoder ? top : info->block_out_channels[0];
    if (decoder)
        want_mid(l, &c->mid, part, top);
    for (int i = 0; i < L; i++) {
        vae_level *level = &c->levels[i];
        const int out = info->block_out_channels[decoder ? L - 1 - i : i];
        level_base(l, base, sizeof base, decoder, i);
        level->resnet_count = info->layers_per_block + (decoder ? 1 : 0);
        for (int j = 0; j < level->resnet_count; j++) {
            snprintf(name, sizeof name, l->ldm ? "%s.block.%d" : "%s.resnets.%d", base, j);
            want_resnet(l, &level->resnets[j], name, channels, out);
            channels = out;
        }
        if (i < L - 1) {
            if (l->ldm)
                snprintf(name, sizeof name, "%s.%s.conv", base, decoder ? "upsample" : "downsample");
            else
                snprintf(name, sizeof name, "%s.%s.0.conv", base,
                         decoder ? "upsamplers" : "downsamplers");
            want_conv(l, &level->resample, name, out, out, 3);
        }
    }
    if (!decoder)
        want_mid(l, &c->mid, part, top);
    snprintf(name, sizeof name, "%s.%s", part, l->ldm ? "norm_out" : "conv_norm_out");
    want_norm(l, &c->norm_out, name, channels);
    snprintf(name, sizeof name, "%s.conv_out", part);
    want_conv(l, &c->conv_out, name, decoder ? info->image_channels : 2 * z, channels, 3);
}

static void format_structure(char *buffer, size_t size, const moire_vae_info *info)
{
    size_t used = (size_t)snprintf(buffer, size, "block_out_channels (");
    for (int i = 0; i < info->levels && used < size; i++)
        used += (size_t)snprintf(buffer + used, size - used, "%s%d", i ? ", " : "",
                                 info->block_out_channels[i]);
    if (used < size)
        snprintf(buffer + used, size - used, "), layers_per_block %d, %d latent channels",
                 info->layers_per_block, info->latent_channels);
}

/* Tensors under encoder./decoder. that nothing binds mean the inferred structure is wrong
 * (a level or resnet the inference did not see), which would silently drop layers. */
static moire_status check_unbound(const char *name, void *user_data)
{
    const vae_loader *l = user_data;
    const size_t plen = strlen(l->prefix);
    if (strncmp(name, l->prefix, plen) != 0)
        return MOIRE_OK;
    const char *rest = name + plen;
    bool decoder = strncmp(rest, "decoder.", 8) == 0;
    bool encoder = strncmp(rest, "encoder.", 8) == 0;
    if ((!decoder && !encoder) || (encoder && !l->vae->info.has_encoder))
        return MOIRE_OK;
    for (int b = 0; b < l->weights.count; b++)
        if (strcmp(l->weights.items[b].key, name) == 0)
            return MOIRE_OK;
    char structure[160];
    format_structure(structure, sizeof structure, &l->vae->info);
    return error_fail(MOIRE_ERROR_FORMAT,
                      "%s: tensor '%s' does not fit an SD-VAE with %s (inferred from the "
                      "decoder); the file has a different structure", l->path, name, structure);
}

static int dim_of(const st_tensor *t, int d)
{
    return t && t->ndim > d && t->shape[d] > 0 && t->shape[d] <= VAE_MAX_CHANNELS
               ? (int)t->shape[d]
               : -1;
}

/* Finds the key layout and prefix, then levels, channels, layers_per_block and latent
 * channels from the decoder's shapes. */
static moire_status infer_structure(vae_loader *l)
{
    moire_vae_info *info = &l->vae->info;
    static const char *const prefixes[] = {"", "first_stage_model."};
    const st_tensor *conv_in = NULL;
    for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes && !conv_in; p++) {
        l->prefix = prefixes[p];
        conv_in = find_key(l, "decoder.conv_in.weight");
    }
    if (!conv_in)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: not an SD-VAE: there is no 'decoder.conv_in.weight' (diffusers "
                          "AutoencoderKL) or 'first_stage_model.decoder.conv_in.weight' (a "
                          "Stable Diffusion checkpoint); give the VAE's "
                          "diffusion_pytorch_model.safetensors or its directory", l->path);
    if (find_key(l, "decoder.mid_block.resnets.0.conv1.weight")) {
        l->ldm = false;
        l->old_attention = find_key(l, "decoder.mid_block.attentions.0.query.weight") != NULL;
    } else if (find_key(l, "decoder.mid.block_1.conv1.weight")) {
        l->ldm = true;
    } else {
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the decoder has no mid block ('%sdecoder.mid_block.resnets.0.*' "
                          "or '%sdecoder.mid.block_1.*'); the file is not a complete SD-VAE",
                          l->path, l->prefix, l->prefix);
    }
    info->layout = l->ldm ? "ldm" : "diffusers";

    int levels = 0;
    while (levels < MOIRE_VAE_MAX_LEVELS + 1 &&
           (l->ldm ? find_key(l, "decoder.up.%d.block.0.conv1.weight", levels)
                   : find_key(l, "decoder.up_blocks.%d.resnets.0.conv1.weight", levels)))
        levels++;
    if (levels < 1 || levels > MOIRE_VAE_MAX_LEVELS)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the decoder has %d up levels; an SD-VAE has 1..%d (KL-f8: 4)",
                          l->path, levels, MOIRE_VAE_MAX_LEVELS);
    info->levels = levels;
    for (int i = 0; i < levels; i++) {
        /* channel index c: LDM up.{c}, diffusers up_blocks.{levels−1−c} */
        const st_tensor *t = l->ldm
                                 ? find_key(l, "decoder.up.%d.block.0.conv1.weight", i)
                                 : find_key(l, "decoder.up_blocks.%d.resnets.0.conv1.weight",
                                            levels - 1 - i);
        info->block_out_channels[i] = dim_of(t, 0);
        if (info->block_out_channels[i] < 1)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: decoder level %d has a malformed conv1 weight", l->path, i);
    }
    int resnets = 0;
    while (resnets < VAE_MAX_RESNETS + 1 &&
           (l->ldm ? find_key(l, "decoder.up.%d.block.%d.conv1.weight", levels - 1, resnets)
                   : find_key(l, "decoder.up_blocks.0.resnets.%d.conv1.weight", resnets)))
        resnets++;
    if (resnets < 2 || resnets > VAE_MAX_RESNETS)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: the decoder's first up level has %d resnets; an SD-VAE has "
                          "layers_per_block + 1 = 2..%d (KL-f8: 3)", l->path, resnets,
                          VAE_MAX_RESNETS);
    info->layers_per_block = resnets - 1;
    info->latent_channels = dim_of(conv_in, 1);
    if (conv_in->ndim != 4 || info->latent_channels < 1 || info->latent_channels > 64)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: '%sdecoder.conv_in.weight' has an unexpected shape; expected "
                          "[C, z, 3, 3] with z ≤ 64 latent channels", l->path, l->prefix);
    /* RGB (the SD VAEs) or RGBA (Moiré's own 128-px emoji VAE, tools/train/train_vae128.py) */
    const st_tensor *conv_out = find_key(l, "decoder.conv_out.weight");
    info->image_channels = conv_out && conv_out->ndim == 4 ? dim_of(conv_out, 0) : 0;
    if (info->image_channels != 3 && info->image_channels != 4)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: '%sdecoder.conv_out.weight' %s; expected [3 or 4, C, 3, 3] "
                          "(RGB or RGBA)", l->path, l->prefix,
                          conv_out ? "has an unexpected shape" : "is missing");
    info->downscale = 1 << (levels - 1);
    info->has_encoder = find_key(l, "encoder.conv_in.weight") != NULL;
    return MOIRE_OK;
}

static moire_status check_groups(const moire_vae *vae)
{
    const moire_vae_info *info = &vae->info;
    for (int i = 0; i < info->levels; i++)
        if (info->block_out_channels[i] % info->norm_num_groups)
            return error_fail(MOIRE_ERROR_FORMAT,
                              "%s: level %d has %d channels, not a multiple of the %d GroupNorm "
                              "groups; set norm_num_groups in config.json", vae->path, i,
                              info->block_out_channels[i], info->norm_num_groups);
    return MOIRE_OK;
}

static moire_status bind_all(vae_loader *l)
{
    moire_vae *vae = l->vae;
    const int z = vae->info.latent_channels;
    want_conv(l, &vae->post_quant_conv, "post_quant_conv", z, z, 1);
    want_coder(l, true);
    if (vae->info.has_encoder) {
        want_conv(l, &vae->quant_conv, "quant_conv", 2 * z, 2 * z, 1);
        want_coder(l, false);
    }
    char structure[160], missing_fix[256], shape_source[224];
    format_structure(structure, sizeof structure, &vae->info);
    snprintf(missing_fix, sizeof missing_fix, "(%s layout, %s): download the VAE again",
             vae->info.layout, structure);
    snprintf(shape_source, sizeof shape_source, "an SD-VAE with %s (inferred from the decoder)",
             structure);
    const weight_file_kind kind = {
        .name = "SD-VAE",
        .missing_fix = missing_fix,
        .shape_source = shape_source,
        .shape_fix = "the file is damaged or not a KL-f8 autoencoder",
        .corrupt_fix = "the VAE file is corrupt: download it again",
        .check_unbound = check_unbound,
        .user_data = l,
    };
    weight_bind_result bound;
    moire_status status = weight_list_bind(&l->weights, l->file, l->path, &kind, &bound);
    vae->arena = bound.arena;
    return status;
}


/* ---- every parameterised layer, for numbering and binding ---- */

typedef struct vae_walker {
    void (*conv)(struct vae_walker *w, vae_conv *c);
    void (*norm)(struct vae_walker *w, vae_norm *n);
} vae_walker;

static void walk_resnet(vae_walker *w, vae_resnet *r)
{
    w->norm(w, &r->norm1), w->conv(w, &r->conv1), w->norm(w, &r->norm2);
    w->conv(w, &r->conv2);
    if (r->shortcut.weight)
        w->conv(w, &r->shortcut);
}

static void walk_coder(vae_walker *w, vae_coder *c, int levels)
{
    w->conv(w, &c->conv_in);
    for (int i = 0; i < levels; i++) {
        for (int j = 0; j < c->levels[i].resnet_count; j++)
            walk_resnet(w, &c->levels[i].resnets[j]);
        if (c->levels[i].resample.weight)
            w->conv(w, &c->levels[i].resample);
    }
    walk_resnet(w, &c->mid.resnet1);
    w->norm(w, &c->mid.attn.norm);
    w->conv(w, &c->mid.attn.q), w->conv(w, &c->mid.attn.k), w->conv(w, &c->mid.attn.v);
    w->conv(w, &c->mid.attn.proj);
    walk_resnet(w, &c->mid.resnet2);
    w->norm(w, &c->norm_out);
    w->conv(w, &c->conv_out);
}

static void walk_vae(vae_walker *w, moire_vae *vae)
{
    w->conv(w, &vae->post_quant_conv);
    walk_coder(w, &vae->decoder, vae->info.levels);
    if (vae->info.has_encoder) {
        w->conv(w, &vae->quant_conv);
        walk_coder(w, &vae->encoder, vae->info.levels);
    }
}

typedef struct slot_counter {
    vae_walker base;
    int next;
} slot_counter;

static void number_conv(vae_walker *w, vae_conv *c)
{
    c->slot = ((slot_counter *)w)->next++;
}

static void number_norm(vae_walker *w, vae_norm *n)
{
    n->slot = ((slot_counter *)w)->next++;
}

static void assign_slots(moire_vae *vae)
{
    slot_counter counter = {{number_conv, number_norm}, 0};
    walk_vae(&counter.base, vae);
    vae->slot_count = counter.next;
}

typedef struct slot_binder {
    vae_walker base;
    binder *b;
    moire_tensor *tensors;
} slot_binder;

static void bind_conv(vae_walker *w, vae_conv *c)
{
    slot_binder *sb = (slot_binder *)w;
    binder_tensor(sb->b, &sb->tensors[2 * c->slot], c->weight, c->co,
                  (int64_t)c->ci * c->k * c->k, MOIRE_WEIGHT_GEMM);
    binder_tensor(sb->b, &sb->tensors[2 * c->slot + 1], c->bias, 1, c->co, MOIRE_WEIGHT_EXACT);
}

static void bind_norm(vae_walker *w, vae_norm *n)
{
    slot_binder *sb = (slot_binder *)w;
    binder_tensor(sb->b, &sb->tensors[2 * n->slot], n->weight, 1, n->channels,
                  MOIRE_WEIGHT_EXACT);
    binder_tensor(sb->b, &sb->tensors[2 * n->slot + 1], n->bias, 1, n->channels,
                  MOIRE_WEIGHT_EXACT);
}

/* diffusers config.json: scaling_factor and norm_num_groups. Other AutoencoderKL fields are
 * checked against the weights so that a mismatched pair is reported, not silently used. */
static moire_status read_config_json(moire_vae *vae, const char *config_path, bool required)
{
    /* An untrusted file like every other input: a regular file of sane size, checked for
       nesting and duplicate keys before json-glib sees it (json_guard.h). */
    FILE *stream = NULL;
    uint64_t size = 0;
    moire_status status = file_fopen_input(config_path, "a VAE config.json", &stream, &size);
    if (status != MOIRE_OK)
        return status;
    if (size > ((uint64_t)1 << 20)) {
        fclose(stream);
        return error_fail(MOIRE_ERROR_FORMAT, "%s: %llu bytes is too large for a VAE config "
                          "(at most 1 MB); fix or remove the file", config_path,
                          (unsigned long long)size);
    }
    char *text = malloc((size_t)size + 1);
    const size_t got = text ? fread(text, 1, (size_t)size, stream) : 0;
    fclose(stream);
    if (!text || got != size) {
        free(text);
        return error_fail(MOIRE_ERROR_IO, "%s: could not be read; fix or remove the file",
                          config_path);
    }
    text[size] = '\0';
    JsonParser *parser = json_parser_new();
    status = json_guard_load(parser, config_path, text, (long long)size);
    free(text);
    if (status != MOIRE_OK) {
        error_prefix("fix or remove the file");
        g_object_unref(parser);
        return status;
    }
    JsonNode *root = json_parser_get_root(parser);
    JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
    const char *class_name = o && json_object_has_member(o, "_class_name")
                                 ? json_object_get_string_member(o, "_class_name")
                                 : NULL;
    if (!o || (class_name && strcmp(class_name, "AutoencoderKL") != 0)) {
        if (required)
            status = error_fail(MOIRE_ERROR_UNSUPPORTED,
                                "%s: _class_name is %s, not AutoencoderKL; Moiré decodes with "
                                "the SD KL-f8 VAE (sd-vae-ft-mse)", config_path,
                                class_name ? class_name : "missing");
        g_object_unref(parser);
        return status; /* a sibling config.json of something else: not ours */
    }
    moire_vae_info *info = &vae->info;
    if (json_object_has_member(o, "scaling_factor")) {
        double s = json_object_get_double_member(o, "scaling_factor");
        if (!(s > 0.0 && s < 1e3))
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: scaling_factor %g must be positive",
                                config_path, s);
        info->scaling_factor = (float)s;
    }
    JsonNode *shift = json_object_get_member(o, "shift_factor");
    if (status == MOIRE_OK && shift && !JSON_NODE_HOLDS_NULL(shift))
        status = error_fail(MOIRE_ERROR_UNSUPPORTED,
                            "%s: shift_factor is set: this is not the SD 1.x/2.x KL-f8 VAE "
                            "DiT-MoE was trained with; use sd-vae-ft-mse", config_path);
    if (status == MOIRE_OK && json_object_has_member(o, "norm_num_groups")) {
        int64_t g = json_object_get_int_member(o, "norm_num_groups");
        if (g < 1 || g > 1024)
            status = error_fail(MOIRE_ERROR_FORMAT, "%s: norm_num_groups %lld is out of range",
                                config_path, (long long)g);
        info->norm_num_groups = (int)g;
    }
    if (status == MOIRE_OK && json_object_has_member(o, "layers_per_block") &&
        json_object_get_int_member(o, "layers_per_block") != info->layers_per_block)
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: layers_per_block %lld does not match the weights (%d); the "
                            "config and the weights are from different VAEs", config_path,
                            (long long)json_object_get_int_member(o, "layers_per_block"),
                            info->layers_per_block);
    if (status == MOIRE_OK && json_object_has_member(o, "latent_channels") &&
        json_object_get_int_member(o, "latent_channels") != info->latent_channels)
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: latent_channels %lld does not match the weights (%d); the "
                            "config and the weights are from different VAEs", config_path,
                            (long long)json_object_get_int_member(o, "latent_channels"),
                            info->latent_channels);
    static const char *const channel_keys[] = {"in_channels", "out_channels"};
    for (int i = 0; i < 2 && status == MOIRE_OK; i++)
        if (json_object_has_member(o, channel_keys[i]) &&
            json_object_get_int_member(o, channel_keys[i]) != info->image_channels)
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: %s %lld does not match the weights (%d image channels); "
                                "the config and the weights are from different VAEs",
                                config_path, channel_keys[i],
                                (long long)json_object_get_int_member(o, channel_keys[i]),
                                info->image_channels);
    g_object_unref(parser);
    return status;
}

static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* DIR → DIR/diffusion_pytorch_model.safetensors (or DIR/vae/…); the config.json beside the
 * weights file is read when it exists. `required` says it was found through a directory. */
static moire_status resolve_paths(const char *path, char **weights, char **config,
                                  bool *config_required)
{
    *weights = *config = NULL;
    *config_required = false;
    if (is_directory(path)) {
        static const char *const subdirs[] = {"", "/vae"};
        for (size_t i = 0; i < 2 && !*weights; i++) {
            char *candidate = g_strdup_printf("%s%s/diffusion_pytorch_model.safetensors", path,
                                              subdirs[i]);
            if (is_file(candidate)) {
                *weights = strdup(candidate);
                char *cfg = g_strdup_printf("%s%s/config.json", path, subdirs[i]);
                if (is_file(cfg)) {
                    *config = strdup(cfg);
                    *config_required = true;
                }
                g_free(cfg);
            }
            g_free(candidate);
        }
        if (!*weights)
            return error_fail(MOIRE_ERROR_IO,
                              "%s: a directory without diffusion_pytorch_model.safetensors (or "
                              "vae/diffusion_pytorch_model.safetensors); download the VAE as "
                              "safetensors (docs/VAE.md)", path);
        return MOIRE_OK;
    }
    *weights = strdup(path);
    char *dir = g_path_get_dirname(path);
    char *cfg = g_build_filename(dir, "config.json", NULL);
    if (is_file(cfg))
        *config = strdup(cfg);
    g_free(cfg);
    g_free(dir);
    return MOIRE_OK;
}

moire_status moire_vae_load(const char *path, moire_vae **out_vae)
{
    if (!out_vae)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_vae_load: out_vae is NULL");
    *out_vae = NULL;
    if (!path || !*path)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_vae_load: no path given; pass a VAE directory or .safetensors");
    char *weights = NULL, *config = NULL;
    bool config_required = false;
    moire_status status = resolve_paths(path, &weights, &config, &config_required);
    moire_vae *vae = status == MOIRE_OK ? calloc(1, sizeof *vae) : NULL;
    if (status == MOIRE_OK && !vae)
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (status == MOIRE_OK) {
        vae->path = weights;
        weights = NULL;
        vae->info.scaling_factor = MOIRE_VAE_SCALING_FACTOR;
        vae->info.norm_num_groups = 32;
        status = st_open(vae->path, &vae->file);
    }
    vae_loader loader = {.vae = vae, .file = vae ? vae->file : NULL,
                         .path = vae ? vae->path : NULL};
    if (status == MOIRE_OK)
        status = infer_structure(&loader);
    if (status == MOIRE_OK && config)
        status = read_config_json(vae, config, config_required);
    if (status == MOIRE_OK)
        status = check_groups(vae);
    if (status == MOIRE_OK)
        status = bind_all(&loader);
    if (status == MOIRE_OK) {
        assign_slots(vae);
        vae->serial = model_next_serial();
    }
    weight_list_free(&loader.weights);
    free(weights);
    free(config);
    if (status != MOIRE_OK) {
        moire_vae_free(vae);
        return status;
    }
    *out_vae = vae;
    return MOIRE_OK;
}

void moire_vae_free(moire_vae *vae)
{
    if (!vae)
        return;
    free(vae->arena);
    st_close(vae->file);
    free(vae->path);
    free(vae);
}

const moire_vae_info *moire_vae_get_info(const moire_vae *vae)
{
    return vae ? &vae->info : NULL;
}

static void vae_free_bound(void *p)
{
    free(p);
}

/* The VAE's weights on the context's backend, uploaded on first use (bind.h). */
moire_status vae_bind(moire_ctx *ctx, const moire_vae *vae, const moire_tensor **out)
{
    bind_slot *slot = binding_find(ctx, BINDING_VAE, vae->serial);
    if (slot) {
        *out = slot->bound;
        return MOIRE_OK;
    }
    moire_tensor *tensors = calloc_array((size_t)2 * vae->slot_count, sizeof *tensors);
    if (!tensors)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding the VAE");
    slot = binding_claim(ctx, BINDING_VAE, vae->serial);
    slot->bound = tensors;
    slot->free_bound = vae_free_bound;
    slot_binder sb = {{bind_conv, bind_norm}, &slot->tensors, tensors};
    walk_vae(&sb.base, (moire_vae *)vae); /* walks only; nothing in the VAE changes */
    const moire_status status = slot->tensors.status;
    if (status != MOIRE_OK) {
        error_prefix("the VAE on the %s backend", ctx->ops.name);
        binding_drop(ctx, slot);
        return status;
    }
    *out = tensors;
    return MOIRE_OK;
}

