/* vae.c — the SD-VAE (AutoencoderKL, KL-f8: sd-vae-ft-mse / sd-vae-ft-ema): loading, and the
 * decoder and encoder as a straight sequence of backend ops (ops.h), fp32, so it runs on the
 * CPU reference or on CUDA alike.
 *
 * docs/VAE.md is its spec; tools/golden/vae_ref.py the float64 PyTorch reference it is tested
 * against. The ops it needs: conv2d (im2col + GEMM in bands on the CPU), GroupNorm as
 * statistics + apply, nearest ×2 upsampling, and the mid block's single-head attention as the
 * backend's attention over [T, C] rows (transposed in and out).
 *
 * Weights are plain structs named after the diffusers keys; both key layouts (diffusers and the
 * original LDM one, optionally under first_stage_model.) bind to the same structs. F32 weights
 * point into the mmapped file, F16/BF16 ones are converted once into an owned arena.
 *
 * Layout of one image's activations: planar [C, H, W], row-major.
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
#include "weight_binding.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VAE_MAX_RESNETS (8 + 1)     /* layers_per_block ≤ 8; the decoder has one more     */
#define VAE_GN_EPS 1e-6             /* GroupNorm ε of the KL-f8 autoencoder               */
#define VAE_MAX_SIDE 1024           /* latent pixels per side (8192 image pixels at f8)    */
#define VAE_MAX_CHANNELS 8192

/* ------------------------------------------------------------------------------------------
 * Weights
 * ---------------------------------------------------------------------------------------- */

typedef struct vae_conv {
    const float *weight; /* [co, ci, k, k]  (attention projections: [C, C] or [C, C, 1, 1]) */
    const float *bias;   /* [co]                                                            */
    int co, ci, k;
    int slot;            /* its weight and bias in a backend binding: tensors 2·slot, 2·slot+1 */
} vae_conv;

typedef struct vae_norm {
    const float *weight; /* [C] */
    const float *bias;   /* [C] */
    int channels;        /* C */
    int slot;            /* as vae_conv */
} vae_norm;

typedef struct vae_resnet {
    vae_norm norm1;      /* over ci                                                   */
    vae_conv conv1;      /* 3×3, ci → co                                              */
    vae_norm norm2;      /* over co                                                   */
    vae_conv conv2;      /* 3×3, co → co                                              */
    vae_conv shortcut;   /* 1×1 ci → co when ci ≠ co (conv_shortcut | nin_shortcut)    */
} vae_resnet;

typedef struct vae_attention {
    vae_norm norm;          /* group_norm | norm                                       */
    vae_conv q, k, v, proj; /* to_q … to_out.0 | query … proj_attn | q … proj_out       */
} vae_attention;

typedef struct vae_mid {
    vae_resnet resnet1, resnet2; /* mid_block.resnets.0/1 | mid.block_1/2 */
    vae_attention attn;          /* mid_block.attentions.0 | mid.attn_1   */
} vae_mid;

/* One resolution level, in execution order: encoder levels[0] is full resolution, decoder
 * levels[0] the lowest (diffusers up_blocks.0; LDM up.{levels−1}). */
typedef struct vae_level {
    vae_resnet resnets[VAE_MAX_RESNETS];
    int resnet_count;
    vae_conv resample; /* downsamplers.0.conv / upsamplers.0.conv; weight NULL at the last level */
} vae_level;

typedef struct vae_coder {
    vae_conv conv_in;
    vae_level levels[MOIRE_VAE_MAX_LEVELS];
    vae_mid mid;
    vae_norm norm_out; /* conv_norm_out | norm_out */
    vae_conv conv_out;
} vae_coder;

struct moire_vae {
    moire_vae_info info;
    vae_conv quant_conv;      /* 1×1, 2z → 2z (encoder side)  */
    vae_conv post_quant_conv; /* 1×1, z → z (decoder side)    */
    vae_coder encoder, decoder;
    st_file *file;
    float *arena;             /* converted F16/BF16 weights   */
    char *path;
    uint64_t serial;          /* the key of its bindings (bind.h) */
    int slot_count;           /* convolutions and norms, numbered by assign_slots */
};

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
    return moire_fail(MOIRE_ERROR_FORMAT,
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
        return moire_fail(MOIRE_ERROR_FORMAT,
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
        return moire_fail(MOIRE_ERROR_FORMAT,
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
        return moire_fail(MOIRE_ERROR_FORMAT,
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
            return moire_fail(MOIRE_ERROR_FORMAT,
                              "%s: decoder level %d has a malformed conv1 weight", l->path, i);
    }
    int resnets = 0;
    while (resnets < VAE_MAX_RESNETS + 1 &&
           (l->ldm ? find_key(l, "decoder.up.%d.block.%d.conv1.weight", levels - 1, resnets)
                   : find_key(l, "decoder.up_blocks.0.resnets.%d.conv1.weight", resnets)))
        resnets++;
    if (resnets < 2 || resnets > VAE_MAX_RESNETS)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "%s: the decoder's first up level has %d resnets; an SD-VAE has "
                          "layers_per_block + 1 = 2..%d (KL-f8: 3)", l->path, resnets,
                          VAE_MAX_RESNETS);
    info->layers_per_block = resnets - 1;
    info->latent_channels = dim_of(conv_in, 1);
    if (conv_in->ndim != 4 || info->latent_channels < 1 || info->latent_channels > 64)
        return moire_fail(MOIRE_ERROR_FORMAT,
                          "%s: '%sdecoder.conv_in.weight' has an unexpected shape; expected "
                          "[C, z, 3, 3] with z ≤ 64 latent channels", l->path, l->prefix);
    /* RGB (the SD VAEs) or RGBA (Moiré's own 128-px emoji VAE, tools/train/train_vae128.py) */
    const st_tensor *conv_out = find_key(l, "decoder.conv_out.weight");
    info->image_channels = conv_out && conv_out->ndim == 4 ? dim_of(conv_out, 0) : 0;
    if (info->image_channels != 3 && info->image_channels != 4)
        return moire_fail(MOIRE_ERROR_FORMAT,
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
            return moire_fail(MOIRE_ERROR_FORMAT,
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
        return moire_fail(MOIRE_ERROR_FORMAT, "%s: %llu bytes is too large for a VAE config "
                          "(at most 1 MB); fix or remove the file", config_path,
                          (unsigned long long)size);
    }
    char *text = malloc((size_t)size + 1);
    const size_t got = text ? fread(text, 1, (size_t)size, stream) : 0;
    fclose(stream);
    if (!text || got != size) {
        free(text);
        return moire_fail(MOIRE_ERROR_IO, "%s: could not be read; fix or remove the file",
                          config_path);
    }
    text[size] = '\0';
    JsonParser *parser = json_parser_new();
    status = json_guard_load(parser, config_path, text, (long long)size);
    free(text);
    if (status != MOIRE_OK) {
        moire_error_prefix("fix or remove the file");
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
            status = moire_fail(MOIRE_ERROR_UNSUPPORTED,
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
            status = moire_fail(MOIRE_ERROR_FORMAT, "%s: scaling_factor %g must be positive",
                                config_path, s);
        info->scaling_factor = (float)s;
    }
    JsonNode *shift = json_object_get_member(o, "shift_factor");
    if (status == MOIRE_OK && shift && !JSON_NODE_HOLDS_NULL(shift))
        status = moire_fail(MOIRE_ERROR_UNSUPPORTED,
                            "%s: shift_factor is set: this is not the SD 1.x/2.x KL-f8 VAE "
                            "DiT-MoE was trained with; use sd-vae-ft-mse", config_path);
    if (status == MOIRE_OK && json_object_has_member(o, "norm_num_groups")) {
        int64_t g = json_object_get_int_member(o, "norm_num_groups");
        if (g < 1 || g > 1024)
            status = moire_fail(MOIRE_ERROR_FORMAT, "%s: norm_num_groups %lld is out of range",
                                config_path, (long long)g);
        info->norm_num_groups = (int)g;
    }
    if (status == MOIRE_OK && json_object_has_member(o, "layers_per_block") &&
        json_object_get_int_member(o, "layers_per_block") != info->layers_per_block)
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s: layers_per_block %lld does not match the weights (%d); the "
                            "config and the weights are from different VAEs", config_path,
                            (long long)json_object_get_int_member(o, "layers_per_block"),
                            info->layers_per_block);
    if (status == MOIRE_OK && json_object_has_member(o, "latent_channels") &&
        json_object_get_int_member(o, "latent_channels") != info->latent_channels)
        status = moire_fail(MOIRE_ERROR_FORMAT,
                            "%s: latent_channels %lld does not match the weights (%d); the "
                            "config and the weights are from different VAEs", config_path,
                            (long long)json_object_get_int_member(o, "latent_channels"),
                            info->latent_channels);
    static const char *const channel_keys[] = {"in_channels", "out_channels"};
    for (int i = 0; i < 2 && status == MOIRE_OK; i++)
        if (json_object_has_member(o, channel_keys[i]) &&
            json_object_get_int_member(o, channel_keys[i]) != info->image_channels)
            status = moire_fail(MOIRE_ERROR_FORMAT,
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
            return moire_fail(MOIRE_ERROR_IO,
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
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_vae_load: out_vae is NULL");
    *out_vae = NULL;
    if (!path || !*path)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_vae_load: no path given; pass a VAE directory or .safetensors");
    char *weights = NULL, *config = NULL;
    bool config_required = false;
    moire_status status = resolve_paths(path, &weights, &config, &config_required);
    moire_vae *vae = status == MOIRE_OK ? calloc(1, sizeof *vae) : NULL;
    if (status == MOIRE_OK && !vae)
        status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
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

/* ------------------------------------------------------------------------------------------
 * Compute: a straight sequence of op calls (ops.h) on the context's backend. Activations are
 * backend buffers from mem_alloc, one per live tensor, freed as soon as it is dead (a decode
 * runs once per image, so unlike the sampling step it may allocate).
 * ---------------------------------------------------------------------------------------- */

/* A tiled decode's whole-image GroupNorm statistics (see vae_decode_image). Each tile runs
 * the up path once per GroupNorm in it: the pass for GroupNorm `target` applies the already
 * known whole-image statistics of the GroupNorms before it, gathers the target's input over
 * the pixels the tile owns (its core) into `partial`, and stops there; after the last tile
 * the merged statistics become known. A final pass applies all of them. Memory stays one
 * tile's activations plus a few numbers per GroupNorm. */
typedef struct vae_tiled_norms {
    int seen;        /* GroupNorms of the up path met so far in this tile's pass             */
    int target;      /* the GroupNorm whose statistics this pass gathers; −1: final pass     */
    int tile_h, tile_w;  /* the tile, latent pixels                                          */
    int core[4];     /* the latent pixels the tile owns: rows [0], [1]), columns [2], [3])  */
    float *known;    /* [up-path GroupNorms, groups, 2] whole-image mean and 1/σ (host)     */
    double *partial; /* [groups, 3] pixel count, mean and M2 of the target so far (host)    */
    float *host_stats; /* [groups, 2] one tile's statistics, downloaded (host)              */
} vae_tiled_norms;

/* What group_norm returns once the target GroupNorm's statistics are gathered: the tile's
 * pass stops there (never returned by the public functions). */
#define VAE_GATHERED ((moire_status)0x7fff)

typedef struct vae_run {
    moire_ctx *ctx;
    const moire_ops *ops;
    const moire_tensor *bound; /* the VAE's weights on the backend: 2·slot, 2·slot + 1 */
    float *stats;              /* [groups, 2] GroupNorm statistics (backend)            */
    int groups;
    bool emit; /* send intermediates to the debug callback (off for tiles) */
    vae_tiled_norms *tiled;    /* set while the up path runs on a tile                  */
} vae_run;

static void vae_free_bound(void *p)
{
    free(p);
}

/* The VAE's weights on the context's backend, uploaded on first use (bind.h). */
static moire_status vae_bind(moire_ctx *ctx, const moire_vae *vae, const moire_tensor **out)
{
    bind_slot *slot = binding_find(ctx, BINDING_VAE, vae->serial);
    if (slot) {
        *out = slot->bound;
        return MOIRE_OK;
    }
    moire_tensor *tensors = moire_calloc_array((size_t)2 * vae->slot_count, sizeof *tensors);
    if (!tensors)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding the VAE");
    slot = binding_claim(ctx, BINDING_VAE, vae->serial);
    slot->bound = tensors;
    slot->free_bound = vae_free_bound;
    slot_binder sb = {{bind_conv, bind_norm}, &slot->tensors, tensors};
    walk_vae(&sb.base, (moire_vae *)vae); /* walks only; nothing in the VAE changes */
    const moire_status status = slot->tensors.status;
    if (status != MOIRE_OK) {
        moire_error_prefix("the VAE on the %s backend", ctx->ops.name);
        binding_drop(ctx, slot);
        return status;
    }
    *out = tensors;
    return MOIRE_OK;
}

static float *alloc_floats(const vae_run *r, size_t count, moire_status *status)
{
    if (*status != MOIRE_OK)
        return NULL;
    float *p = count <= SIZE_MAX / sizeof(float)
                   ? r->ops->mem_alloc(r->ops, count * sizeof(float))
                   : NULL;
    if (!p)
        *status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                             "the VAE needs %.1f MB more memory; decode a smaller image (or "
                             "let it tile: moire_vae_decode tiles above %d latent pixels)",
                             (double)count * sizeof(float) / 1e6, MOIRE_VAE_TILE);
    return p;
}

static void release(const vae_run *r, float *p)
{
    if (p)
        r->ops->mem_free(r->ops, p);
}

static moire_status check_cancel(const vae_run *r)
{
    if (atomic_load(&r->ctx->cancel_requested))
        return moire_fail(MOIRE_ERROR_CANCELLED, "VAE cancelled");
    return MOIRE_OK;
}

static void emit(const vae_run *r, const char *name, int layer, const float *x, int C, int H,
                 int W)
{
    if (!r->emit || !r->ctx->debug_fn)
        return;
    moire_status status;
    float *host = dit_download_copy(r->ops, x, (size_t)C * H * W * sizeof(float), &status);
    if (!host)
        return;
    const int64_t shape[4] = {1, C, H, W};
    r->ctx->debug_fn(name, layer, host, 4, shape, r->ctx->debug_user_data);
    free(host);
}

/* out[co, Ho, Wo] = conv(x[ci, H, W]) + bias. Stride 1: k/2 zero padding on every side.
 * Stride 2 (the encoder's downsampler): one zero row/column on the bottom/right only. */
static moire_status conv2d(const vae_run *r, const vae_conv *c, const float *x, int H, int W,
                           int stride, float *out)
{
    const int k = c->k, pad_lo = stride == 1 ? k / 2 : 0, pad_hi = stride == 1 ? k / 2 : 1;
    return r->ops->conv2d(r->ops, out, x, &r->bound[2 * c->slot], &r->bound[2 * c->slot + 1],
                          c->ci, H, W, c->co, k, stride, pad_lo, pad_hi);
}

/* Merges the statistics of the target GroupNorm's input x [C, H, W] (a tile's activations,
 * H = s·tile_h) over the tile's core into t->partial (Chan et al.'s pairwise update, in
 * double). The backend reduces the core; only [groups, 2] numbers come back. */
static moire_status gather_core_stats(const vae_run *r, const float *x, int C, size_t HW)
{
    vae_tiled_norms *t = r->tiled;
    int s = 1; /* this activation's pixels per latent pixel */
    while ((size_t)s * s * t->tile_h * t->tile_w < HW)
        s *= 2;
    const int W = s * t->tile_w, rows = s * (t->core[1] - t->core[0]);
    const int cols = s * (t->core[3] - t->core[2]);
    const size_t plane = (size_t)rows * cols;
    moire_status status = MOIRE_OK;
    float *core = alloc_floats(r, (size_t)C * plane, &status); /* [C, rows, cols] */
    for (int c = 0; c < C && status == MOIRE_OK; c++)
        status = r->ops->copy_2d(r->ops, core + c * plane, cols,
                                 x + c * HW + (size_t)s * t->core[0] * W + (size_t)s * t->core[2],
                                 W, rows, cols);
    if (status == MOIRE_OK)
        status = r->ops->group_norm_stats(r->ops, r->stats, core, C, (int64_t)plane, r->groups,
                                          (float)VAE_GN_EPS);
    if (status == MOIRE_OK)
        status = r->ops->download(r->ops, t->host_stats, r->stats,
                                  (size_t)2 * r->groups * sizeof(float));
    release(r, core);
    if (status != MOIRE_OK)
        return status;
    const double n_b = (double)(C / r->groups) * plane;
    for (int g = 0; g < r->groups && n_b > 0; g++) {
        double *p = t->partial + 3 * g; /* count, mean, M2 */
        const double mean_b = t->host_stats[2 * g], inv = t->host_stats[2 * g + 1];
        double var_b = 1.0 / (inv * inv) - VAE_GN_EPS;
        var_b = var_b > 0.0 ? var_b : 0.0;
        const double n = p[0] + n_b, delta = mean_b - p[1];
        p[2] += var_b * n_b + delta * delta * p[0] * n_b / n;
        p[1] += delta * n_b / n;
        p[0] = n;
    }
    return VAE_GATHERED;
}

/* out[C, HW] = GroupNorm(x) · weight + bias, then SiLU when asked. out may be x. In a tiled
 * decode's up path the statistics are the whole image's (vae_tiled_norms). */
static moire_status group_norm(const vae_run *r, const vae_norm *nrm, const float *x, int C,
                               size_t HW, bool with_silu, float *out)
{
    moire_status status = MOIRE_OK;
    if (r->tiled) {
        vae_tiled_norms *t = r->tiled;
        const int index = t->seen++;
        if (index == t->target)
            return gather_core_stats(r, x, C, HW);
        status = r->ops->upload(r->ops, r->stats, t->known + (size_t)2 * r->groups * index,
                                (size_t)2 * r->groups * sizeof(float));
    } else {
        status = r->ops->group_norm_stats(r->ops, r->stats, x, C, (int64_t)HW, r->groups,
                                          (float)VAE_GN_EPS);
    }
    if (status == MOIRE_OK)
        status = r->ops->group_norm_apply(r->ops, out, x, r->stats, &r->bound[2 * nrm->slot],
                                          &r->bound[2 * nrm->slot + 1], C, (int64_t)HW,
                                          r->groups, with_silu);
    return status;
}

/* *x [ci, H, W] → [co, H, W]: norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus the input
 * (through the 1×1 shortcut when ci ≠ co). Replaces *x. */
static moire_status resnet(const vae_run *r, const vae_resnet *b, float **x, int H, int W)
{
    const int ci = b->conv1.ci, co = b->conv1.co;
    const size_t HW = (size_t)H * W, widest = (size_t)(ci > co ? ci : co) * HW;
    moire_status status = MOIRE_OK;
    float *h = alloc_floats(r, widest, &status), *t = alloc_floats(r, (size_t)co * HW, &status);
    float *out = alloc_floats(r, (size_t)co * HW, &status);
    if (status == MOIRE_OK)
        status = group_norm(r, &b->norm1, *x, ci, HW, true, h);
    if (status == MOIRE_OK)
        status = conv2d(r, &b->conv1, h, H, W, 1, t);
    if (status == MOIRE_OK)
        status = group_norm(r, &b->norm2, t, co, HW, true, h);
    if (status == MOIRE_OK)
        status = conv2d(r, &b->conv2, h, H, W, 1, out);
    if (status == MOIRE_OK && b->shortcut.weight) {
        status = conv2d(r, &b->shortcut, *x, H, W, 1, t);
        if (status == MOIRE_OK)
            status = r->ops->add(r->ops, out, out, t, (int64_t)co * HW);
    } else if (status == MOIRE_OK) {
        status = r->ops->add(r->ops, out, out, *x, (int64_t)co * HW);
    }
    release(r, h), release(r, t);
    if (status != MOIRE_OK) {
        release(r, out);
        return status;
    }
    release(r, *x);
    *x = out;
    return check_cancel(r);
}

/* x[C, T] += proj(softmax(q kᵀ / √C) v) with q, k, v = 1×1 projections of GroupNorm(x):
 * one head over the T = H·W positions, as the backend's attention over [T, C] rows. */
static moire_status attention(const vae_run *r, const vae_attention *a, float *x, int C, int T)
{
    const size_t CT = (size_t)C * T;
    const moire_ops *ops = r->ops;
    moire_status status = MOIRE_OK;
    float *h = alloc_floats(r, CT, &status), *q = alloc_floats(r, CT, &status);
    float *k = alloc_floats(r, CT, &status), *v = alloc_floats(r, CT, &status);
    float *qkv_t = alloc_floats(r, 3 * CT, &status), *o = alloc_floats(r, CT, &status);
    if (status == MOIRE_OK)
        status = group_norm(r, &a->norm, x, C, (size_t)T, false, h);
    const vae_conv *proj[3] = {&a->q, &a->k, &a->v};
    float *dst[3] = {q, k, v};
    for (int i = 0; i < 3 && status == MOIRE_OK; i++)
        status = conv2d(r, proj[i], h, 1, T, 1, dst[i]);
    /* qkv_t[3][T, C] = qᵀ, kᵀ, vᵀ: attention wants token rows */
    for (int i = 0; i < 3 && status == MOIRE_OK; i++)
        status = ops->transpose(ops, qkv_t + i * CT, dst[i], C, T);
    if (status == MOIRE_OK)
        status = ops->cross_attention(ops, h, qkv_t, C, qkv_t + CT, qkv_t + 2 * CT, C, T, T, 1,
                                      C);
    if (status == MOIRE_OK) /* h[T, C] → o[C, T] */
        status = ops->transpose(ops, o, h, T, C);
    if (status == MOIRE_OK)
        status = conv2d(r, &a->proj, o, 1, T, 1, h);
    if (status == MOIRE_OK)
        status = ops->add(ops, x, x, h, (int64_t)CT);
    release(r, h), release(r, q), release(r, k), release(r, v), release(r, qkv_t);
    release(r, o);
    return status == MOIRE_OK ? check_cancel(r) : status;
}

static moire_status mid_block(const vae_run *r, const vae_mid *m, float **x, int C, int H,
                              int W)
{
    moire_status status = resnet(r, &m->resnet1, x, H, W);
    if (status == MOIRE_OK)
        status = attention(r, &m->attn, *x, C, H * W);
    if (status == MOIRE_OK)
        status = resnet(r, &m->resnet2, x, H, W);
    return status;
}

/* Replaces *x [C, H, W] with conv(*x) (stride 1 or 2). */
static moire_status conv_replace(const vae_run *r, const vae_conv *c, float **x, int H, int W,
                                 int stride)
{
    const size_t out_plane = stride == 1 ? (size_t)H * W : (size_t)(H / 2) * (W / 2);
    moire_status status = MOIRE_OK;
    float *out = alloc_floats(r, (size_t)c->co * out_plane, &status);
    if (out)
        status = conv2d(r, c, *x, H, W, stride, out);
    if (status != MOIRE_OK) {
        release(r, out);
        return status;
    }
    release(r, *x);
    *x = out;
    return MOIRE_OK;
}

static moire_status run_init(vae_run *r, moire_ctx *ctx, const moire_vae *vae,
                             bool emit_tensors)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->ops = &ctx->ops;
    r->groups = vae->info.norm_num_groups;
    r->emit = emit_tensors;
    moire_status status = vae_bind(ctx, vae, &r->bound);
    r->stats = alloc_floats(r, (size_t)2 * r->groups, &status);
    return status;
}

static void run_done(vae_run *r)
{
    release(r, r->stats);
    r->stats = NULL;
}

/* The decoder up to its mid block, at latent resolution: latent [z, h, w] (host, model space)
 * → *out [top, h, w] (backend, owned by the caller). */
static moire_status decode_mid(const vae_run *r, const moire_vae *vae, int h, int w,
                               const float *latent, float **out)
{
    const moire_vae_info *info = &vae->info;
    const vae_coder *d = &vae->decoder;
    const int z = info->latent_channels, top = info->block_out_channels[info->levels - 1];
    const size_t count = (size_t)z * h * w;
    moire_status status = MOIRE_OK;
    float *x = alloc_floats(r, count, &status);
    if (!x)
        return status;
    status = r->ops->upload(r->ops, x, latent, count * sizeof(float));
    if (status == MOIRE_OK)
        status = r->ops->scale(r->ops, x, x, 1.0f / info->scaling_factor, (int64_t)count);
    if (status == MOIRE_OK)
        status = conv_replace(r, &vae->post_quant_conv, &x, h, w, 1);
    if (status == MOIRE_OK)
        status = conv_replace(r, &d->conv_in, &x, h, w, 1);
    if (status == MOIRE_OK)
        status = mid_block(r, &d->mid, &x, top, h, w);
    if (status != MOIRE_OK) {
        release(r, x);
        return status;
    }
    emit(r, "vae.decoder.mid_out", -1, x, top, h, w);
    *out = x;
    return MOIRE_OK;
}

/* The rest of the decoder: x [top, h, w] (backend, freed here) → rgb [image_channels, f·h,
 * f·w] (host). */
static moire_status decode_up(const vae_run *r, const moire_vae *vae, int h, int w, float *x,
                              float *rgb)
{
    const moire_vae_info *info = &vae->info;
    const vae_coder *d = &vae->decoder;
    int H = h, W = w, C = info->block_out_channels[info->levels - 1];
    moire_status status = MOIRE_OK;
    for (int i = 0; i < info->levels && status == MOIRE_OK; i++) {
        const vae_level *level = &d->levels[i];
        for (int j = 0; j < level->resnet_count && status == MOIRE_OK; j++)
            status = resnet(r, &level->resnets[j], &x, H, W);
        C = level->resnets[level->resnet_count - 1].conv1.co;
        if (status == MOIRE_OK && level->resample.weight) {
            /* nearest-neighbour ×2, then a 3×3 conv */
            float *up = alloc_floats(r, (size_t)C * 4 * H * W, &status);
            if (up)
                status = r->ops->upsample_nearest2x(r->ops, up, x, C, H, W);
            if (status == MOIRE_OK) {
                release(r, x);
                x = up;
                H *= 2, W *= 2;
                status = conv_replace(r, &level->resample, &x, H, W, 1);
            } else {
                release(r, up);
            }
        }
        if (status == MOIRE_OK)
            emit(r, "vae.decoder.up_out", i, x, C, H, W);
    }
    const int out_channels = info->image_channels;
    float *rgb_dev = alloc_floats(r, (size_t)out_channels * H * W, &status);
    if (status == MOIRE_OK)
        status = group_norm(r, &d->norm_out, x, C, (size_t)H * W, true, x);
    if (status == MOIRE_OK)
        status = conv2d(r, &d->conv_out, x, H, W, 1, rgb_dev);
    if (status == MOIRE_OK)
        status = r->ops->download(r->ops, rgb, rgb_dev,
                                  (size_t)out_channels * H * W * sizeof(float));
    release(r, x), release(r, rgb_dev);
    return status;
}

/* latent [z, h, w] → rgb [image_channels, f·h, f·w], one image, no tiling (host arrays). */
static moire_status decode_one(const vae_run *r, const moire_vae *vae, int h, int w,
                               const float *latent, float *rgb)
{
    float *x = NULL;
    moire_status status = decode_mid(r, vae, h, w, latent, &x);
    return status == MOIRE_OK ? decode_up(r, vae, h, w, x, rgb) : status;
}

/* Tile origins along one axis of n latent pixels: tiles of `size` (≤ n), evenly spread with
 * at least `overlap` shared pixels between neighbours, the first at 0 and the last at n − size. */
static int tile_origins(int n, int size, int overlap, int *origins, int max_count)
{
    if (n <= size) {
        origins[0] = 0;
        return 1;
    }
    const int step = size - overlap;
    int count = (n - overlap + step - 1) / step;
    count = count < 2 ? 2 : (count > max_count ? max_count : count);
    for (int i = 0; i < count; i++)
        origins[i] = (int)((int64_t)i * (n - size) / (count - 1));
    return count;
}

/* Where each tile's own pixels begin along one axis: cuts[i] for tile i (cuts[0] = 0,
 * cuts[count] = n), in the middle of the overlap with the previous tile, so a tile owns the
 * pixels at least overlap/2 away from its neighbours' edges, and the cores partition the axis. */
static void tile_cuts(const int *origins, int count, int size, int n, int *cuts)
{
    cuts[0] = 0;
    for (int i = 1; i < count; i++)
        cuts[i] = (origins[i] + origins[i - 1] + size) / 2;
    cuts[count] = n;
}

/* The GroupNorms of the decoder's up path, in execution order: two per ResNet, plus norm_out. */
static int up_path_norms(const moire_vae *vae)
{
    int count = 1;
    for (int i = 0; i < vae->info.levels; i++)
        count += 2 * vae->decoder.levels[i].resnet_count;
    return count;
}

/* One pass over the tiles of mid [top, h, w] (backend): the up path of each, with t->target
 * set. A gathering pass (target ≥ 0) stops each tile at the target GroupNorm; the final pass
 * (target −1) writes each tile's core of the image into rgb [image_channels, f·h, f·w]. */
static moire_status tiles_pass(vae_run *r, const moire_vae *vae, int h, int w, const float *mid,
                               const int *ys, const int *cut_y, int ny, const int *xs,
                               const int *cut_x, int nx, float *tile_rgb, float *rgb)
{
    vae_tiled_norms *t = r->tiled;
    const int f = vae->info.downscale, top = vae->info.block_out_channels[vae->info.levels - 1];
    const int th = t->tile_h, tw = t->tile_w;
    const size_t plane = (size_t)f * h * f * w, tile_plane = (size_t)f * th * f * tw;
    moire_status status = MOIRE_OK;
    for (int ty = 0; ty < ny && status == MOIRE_OK; ty++)
        for (int tx = 0; tx < nx && status == MOIRE_OK; tx++) {
            t->seen = 0;
            t->core[0] = cut_y[ty] - ys[ty], t->core[1] = cut_y[ty + 1] - ys[ty];
            t->core[2] = cut_x[tx] - xs[tx], t->core[3] = cut_x[tx + 1] - xs[tx];
            float *tile_in = alloc_floats(r, (size_t)top * th * tw, &status);
            for (int c = 0; c < top && status == MOIRE_OK; c++)
                status = r->ops->copy_2d(r->ops, tile_in + (size_t)c * th * tw, tw,
                                         mid + ((size_t)c * h + ys[ty]) * w + xs[tx], w, th, tw);
            if (status != MOIRE_OK) {
                release(r, tile_in);
                break;
            }
            status = decode_up(r, vae, th, tw, tile_in, tile_rgb); /* frees tile_in */
            if (t->target >= 0) {
                if (status == VAE_GATHERED)
                    status = MOIRE_OK;
                else if (status == MOIRE_OK) /* cannot happen: the up path has the target */
                    status = moire_fail(MOIRE_ERROR_BACKEND, "tiled VAE: GroupNorm %d not met",
                                        t->target);
                continue;
            }
            if (status != MOIRE_OK)
                break;
            const int W = f * w, TW = f * tw;
            for (int c = 0; c < vae->info.image_channels; c++)
                for (int y = f * t->core[0]; y < f * t->core[1]; y++)
                    memcpy(rgb + c * plane + (size_t)(f * ys[ty] + y) * W + f * cut_x[tx],
                           tile_rgb + c * tile_plane + (size_t)y * TW + f * t->core[2],
                           (size_t)f * (t->core[3] - t->core[2]) * sizeof(float));
        }
    return status;
}

/* Turns the merged partial sums of GroupNorm `index` into its whole-image mean and 1/σ. */
static void finish_norm_stats(vae_tiled_norms *t, int groups, int index)
{
    float *known = t->known + (size_t)2 * groups * index;
    for (int g = 0; g < groups; g++) {
        const double *p = t->partial + 3 * g;
        known[2 * g] = (float)p[1];
        known[2 * g + 1] = (float)(1.0 / sqrt(p[2] / p[0] + VAE_GN_EPS));
    }
}

moire_status vae_decode_image(moire_ctx *ctx, const moire_vae *vae, int h, int w,
                              const float *latent, float *rgb, int tile, int overlap)
{
    vae_run r;
    moire_status status = run_init(&r, ctx, vae, true);
    if (status != MOIRE_OK) {
        run_done(&r);
        return status;
    }
    if (tile <= 0 || (h <= tile && w <= tile)) {
        status = decode_one(&r, vae, h, w, latent, rgb);
        run_done(&r);
        return status;
    }
    /* The mid block (with the only attention) runs once on the whole latent: it is cheap at
     * latent resolution and keeps the global attention exact. Only the up path is tiled, and
     * its GroupNorms use the whole image's statistics, gathered over the tiles one GroupNorm
     * at a time (vae_tiled_norms). Each output pixel comes from the one tile that owns it. */
    float *mid = NULL;
    status = decode_mid(&r, vae, h, w, latent, &mid);
    if (status != MOIRE_OK) {
        run_done(&r);
        return status;
    }
    r.emit = false;
    const int f = vae->info.downscale, norms = up_path_norms(vae);
    const int th = h < tile ? h : tile, tw = w < tile ? w : tile;
    int ys[VAE_MAX_SIDE], xs[VAE_MAX_SIDE], cut_y[VAE_MAX_SIDE + 1], cut_x[VAE_MAX_SIDE + 1];
    const int ny = tile_origins(h, th, overlap, ys, VAE_MAX_SIDE);
    const int nx = tile_origins(w, tw, overlap, xs, VAE_MAX_SIDE);
    tile_cuts(ys, ny, th, h, cut_y);
    tile_cuts(xs, nx, tw, w, cut_x);
    vae_tiled_norms t = {.tile_h = th, .tile_w = tw};
    t.known = moire_malloc_array((size_t)2 * r.groups * norms, sizeof(float));
    t.partial = moire_malloc_array((size_t)3 * r.groups, sizeof(double));
    t.host_stats = moire_malloc_array((size_t)2 * r.groups, sizeof(float));
    float *tile_rgb = moire_malloc_array((size_t)vae->info.image_channels * f * th * f * tw,
                                         sizeof(float));
    if (!t.known || !t.partial || !t.host_stats || !tile_rgb)
        status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the VAE tiles");
    r.tiled = &t;
    for (int target = 0; target <= norms && status == MOIRE_OK; target++) {
        t.target = target < norms ? target : -1;
        memset(t.partial, 0, (size_t)3 * r.groups * sizeof(double));
        status = tiles_pass(&r, vae, h, w, mid, ys, cut_y, ny, xs, cut_x, nx, tile_rgb, rgb);
        if (status == MOIRE_OK && target < norms)
            finish_norm_stats(&t, r.groups, target);
    }
    r.tiled = NULL;
    release(&r, mid);
    free(t.known), free(t.partial), free(t.host_stats), free(tile_rgb);
    run_done(&r);
    return status;
}

moire_status vae_encode_image(moire_ctx *ctx, const moire_vae *vae, int height, int width,
                              const float *rgb, float *latent)
{
    const moire_vae_info *info = &vae->info;
    if (!info->has_encoder)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "%s holds only the VAE decoder; encoding an image (img2img) needs "
                          "the full VAE: use the complete diffusion_pytorch_model.safetensors "
                          "of sd-vae-ft-mse", vae->path);
    vae_run r;
    moire_status status = run_init(&r, ctx, vae, true);
    const vae_coder *e = &vae->encoder;
    const int z = info->latent_channels;
    int H = height, W = width, C = info->image_channels;
    float *x = alloc_floats(&r, (size_t)C * H * W, &status);
    if (status == MOIRE_OK)
        status = r.ops->upload(r.ops, x, rgb, (size_t)C * H * W * sizeof(float));
    if (status == MOIRE_OK)
        status = conv_replace(&r, &e->conv_in, &x, H, W, 1);
    for (int i = 0; i < info->levels && status == MOIRE_OK; i++) {
        const vae_level *level = &e->levels[i];
        for (int j = 0; j < level->resnet_count && status == MOIRE_OK; j++)
            status = resnet(&r, &level->resnets[j], &x, H, W);
        if (status == MOIRE_OK && level->resample.weight) {
            status = conv_replace(&r, &level->resample, &x, H, W, 2);
            H /= 2, W /= 2;
        }
    }
    C = info->block_out_channels[info->levels - 1];
    if (status == MOIRE_OK)
        status = mid_block(&r, &e->mid, &x, C, H, W);
    if (status == MOIRE_OK) {
        emit(&r, "vae.encoder.mid_out", -1, x, C, H, W);
        status = group_norm(&r, &e->norm_out, x, C, (size_t)H * W, true, x);
    }
    if (status == MOIRE_OK)
        status = conv_replace(&r, &e->conv_out, &x, H, W, 1);
    if (status == MOIRE_OK)
        status = conv_replace(&r, &vae->quant_conv, &x, H, W, 1);
    /* moments = mean (first z channels), log-variance; img2img uses the mean */
    const size_t count = (size_t)z * H * W;
    if (status == MOIRE_OK)
        status = r.ops->scale(r.ops, x, x, info->scaling_factor, (int64_t)count);
    if (status == MOIRE_OK)
        status = r.ops->download(r.ops, latent, x, count * sizeof(float));
    release(&r, x);
    run_done(&r);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Public entry points: argument checks, batches
 * ---------------------------------------------------------------------------------------- */

moire_status moire_vae_decode_tiled(moire_ctx *ctx, const moire_vae *vae, int n, int h, int w,
                                    int tile, int overlap, const float *latents, float *rgb)
{
    if (!ctx || !vae || !latents || !rgb)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_vae_decode: a required pointer is NULL");
    if (n < 1 || n > 4096)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch size %d is out of range (1..4096)", n);
    if (h < 1 || w < 1 || h > VAE_MAX_SIDE || w > VAE_MAX_SIDE)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "latent size %dx%d is out of range (1..%d per side)", w, h,
                          VAE_MAX_SIDE);
    if (tile < 0 || (tile > 0 && (overlap < 0 || overlap >= tile)))
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "VAE tile %d with overlap %d: use tile > overlap >= 0 (tile 0 = no "
                          "tiling)", tile, overlap);
    atomic_store(&ctx->cancel_requested, 0);
    const moire_vae_info *info = &vae->info;
    const size_t in = (size_t)info->latent_channels * h * w;
    const size_t out = (size_t)info->image_channels * info->downscale * h * info->downscale * w;
    for (int i = 0; i < n; i++) {
        moire_status status =
            vae_decode_image(ctx, vae, h, w, latents + i * in, rgb + i * out, tile, overlap);
        if (status != MOIRE_OK)
            return status;
    }
    return MOIRE_OK;
}

moire_status moire_vae_decode(moire_ctx *ctx, const moire_vae *vae, int n, int h, int w,
                              const float *latents, float *rgb)
{
    return moire_vae_decode_tiled(ctx, vae, n, h, w, MOIRE_VAE_TILE, MOIRE_VAE_TILE_OVERLAP,
                                  latents, rgb);
}

moire_status moire_vae_encode(moire_ctx *ctx, const moire_vae *vae, int n, int height, int width,
                              const float *rgb, float *latents)
{
    if (!ctx || !vae || !rgb || !latents)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_vae_encode: a required pointer is NULL");
    const int f = vae->info.downscale;
    if (n < 1 || n > 4096)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch size %d is out of range (1..4096)", n);
    if (height < f || width < f || height > f * VAE_MAX_SIDE || width > f * VAE_MAX_SIDE ||
        height % f || width % f)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "image size %dx%d cannot be encoded: use multiples of %d up to %d "
                          "pixels per side", width, height, f, f * VAE_MAX_SIDE);
    atomic_store(&ctx->cancel_requested, 0);
    const size_t in = (size_t)vae->info.image_channels * height * width;
    const size_t out = (size_t)vae->info.latent_channels * (height / f) * (width / f);
    for (int i = 0; i < n; i++) {
        moire_status status = vae_encode_image(ctx, vae, height, width, rgb + i * in,
                                               latents + i * out);
        if (status != MOIRE_OK)
            return status;
    }
    return MOIRE_OK;
}
