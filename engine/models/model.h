/* model.h — a DiT-MoE model as plain data: the config and fp32 weight pointers named after
 * the checkpoint keys (blocks.{i}.attn.qkv.weight → blocks[i].attn.qkv_weight).
 *
 * Weights stored as F32 in the file point straight into the mmapped safetensors file; F16
 * and BF16 ones are converted once into an owned arena at load. Shapes use the legend
 *   D hidden, H heads, hd = D/H head_dim, E experts, F expert width, S shared width,
 *   C in channels, Co out channels, p patch, K num_classes (+1 null row), T tokens.
 * Linear weights are [out, in] (PyTorch), so y = x·Wᵀ + b.
 */
#ifndef MOIRE_MODEL_H
#define MOIRE_MODEL_H

#include "moire.h"
#include "dit_common.h"
#include "pt_reader.h"
#include "safetensors.h"

typedef struct dit_attention_weights {
    const float *qkv_weight;    /* attn.qkv.weight | attn.Wqkv.weight        [3D, D] */
    const float *qkv_bias;      /* attn.qkv.bias   | attn.Wqkv.bias          [3D]    */
    const float *q_norm_weight; /* attn.q_norm.weight (QK_NORM layout only)  [hd]    */
    const float *q_norm_bias;   /* attn.q_norm.bias                          [hd]    */
    const float *k_norm_weight; /* attn.k_norm.weight                        [hd]    */
    const float *k_norm_bias;   /* attn.k_norm.bias                          [hd]    */
    const float *proj_weight;   /* attn.proj.weight | attn.out_proj.weight   [D, D]  */
    const float *proj_bias;     /* attn.proj.bias   | attn.out_proj.bias     [D]     */
} dit_attention_weights;

/* SwiGLU MLP without biases: down(SiLU(gate(x)) ⊙ up(x)). */
typedef struct dit_swiglu_weights {
    const float *gate_proj_weight; /* gate_proj.weight [F, D] */
    const float *up_proj_weight;   /* up_proj.weight   [F, D] */
    const float *down_proj_weight; /* down_proj.weight [D, F] */
    int hidden;                    /* F                        */
} dit_swiglu_weights;

typedef struct dit_block_weights {
    const float *adaLN_modulation_weight; /* adaLN_modulation.1.weight [6D, D] */
    const float *adaLN_modulation_bias;   /* adaLN_modulation.1.bias   [6D]    */
    dit_attention_weights attn;
    const float *moe_gate_weight;         /* moe.gate.weight (router, no bias) [E, D] */
    dit_swiglu_weights *experts;          /* moe.experts.{e}.*  [E]                    */
    dit_swiglu_weights shared_experts;    /* moe.shared_experts.* (hidden 0 = absent)  */
} dit_block_weights;

typedef struct dit_weights {
    const float *pos_embed;                /* pos_embed [1, T, D] (optional: recomputed)   */
    const float *x_embedder_proj_weight;   /* x_embedder.proj.weight [D, C, p, p]           */
    const float *x_embedder_proj_bias;     /* x_embedder.proj.bias   [D]                    */
    const float *t_embedder_mlp0_weight;   /* t_embedder.mlp.0.weight [D, 256]              */
    const float *t_embedder_mlp0_bias;     /* t_embedder.mlp.0.bias   [D]                   */
    const float *t_embedder_mlp2_weight;   /* t_embedder.mlp.2.weight [D, D]                */
    const float *t_embedder_mlp2_bias;     /* t_embedder.mlp.2.bias   [D]                   */
    const float *y_embedder_table;         /* y_embedder.embedding_table.weight [K+1, D]    */
    dit_block_weights *blocks;             /* [depth]                                       */
    const float *final_adaLN_modulation_weight; /* final_layer.adaLN_modulation.1.weight [2D, D] */
    const float *final_adaLN_modulation_bias;   /* final_layer.adaLN_modulation.1.bias   [2D]    */
    const float *final_linear_weight;      /* final_layer.linear.weight [p·p·Co, D]         */
    const float *final_linear_bias;        /* final_layer.linear.bias   [p·p·Co]            */
} dit_weights;


/* Which forward pass a model runs: config.family as an enum. */
typedef enum moire_family_tag {
    MOIRE_FAMILY_DIT_MOE = 0, /* "dit-moe": class-conditional, token choice (forward.c)    */
    MOIRE_FAMILY_EC_DIT = 1,  /* "ec-dit": text-conditional, expert choice (ecdit.c)       */
} moire_family_tag;

struct ecdit_model; /* ecdit.h */

struct moire_model {
    moire_model_config config;
    uint64_t serial;          /* unique in the process (model_next_serial): the key of the
                                 model's weights on a backend (bind.h), never its address */
    dit_weights weights;
    st_file *file;            /* the mapping F32 weights point into                       */
    float *arena;             /* converted F16/BF16 weights                              */
    size_t arena_floats;
    char *path;
    char *name;               /* basename                                               */
    char dtype_name[8];       /* "F32", "F16", "BF16", "mixed"                            */
    int64_t parameter_count;
    int unused_tensor_count;  /* tensors in the file that no weight binds (ignored)       */
    char **class_names;       /* [num_classes] or NULL; from metadata "moire.class_names" */
    /* Official defaults of the family (docs/SAMPLERS.md). */
    moire_sampler default_sampler;
    int default_steps;
    float default_cfg;
    moire_family_tag family;
    struct ecdit_model *ecdit; /* EC-DiT weights and vocabulary (NULL for DiT-MoE; then
                                  `weights` above is used)                              */
    moire_classifier *level_classifier; /* MODEL-levels.safetensors, the dmcmc sampler's
                                  noise-level classifier; NULL when there is none         */
};

/* Fills `config` from the metadata JSON object string (key "moire.config"); unknown keys
 * are ignored, missing ones keep the values already in `config`. */
moire_status dit_config_from_json(moire_model_config *config, const char *json);
/* Writes the config as a JSON object string (caller frees with free()). */
char *dit_config_to_json(const moire_model_config *config);
/* Infers the config from key names and shapes of a DiT-MoE state dict. */
moire_status dit_config_infer(moire_model_config *config, const st_file *file);
/* Checks the config is self-consistent and within sane limits (message on failure). */
moire_status dit_config_validate(const moire_model_config *config);
/* A "moire.config" JSON read over the DiT-MoE defaults, the family checked (an unknown one is
 * named before its keys); then dit_config_check_required once the family's own keys are read:
 * the first geometry key missing (or 0) is named. */
moire_status dit_config_read(moire_model_config *config, const char *json);
moire_status dit_config_check_required(const moire_model_config *config);
/* The end of both families' validation: enum values, betas, LayerNorm epsilon. */
moire_status model_config_check_common(const moire_model_config *config);
/* Parses "blocks.{i}." at the start of a checkpoint key; returns i, or -1 when it does not
 * match. When `rest` is given it receives the text after the prefix. */
int model_block_index(const char *name, const char **rest);
/* Binds every DiT-MoE weight of model->file to model->dit (model_weights.c). */
moire_status dit_model_bind(moire_model *model);

struct weight_list;
struct weight_file_kind;
/* Binds a family's weight list (weight_binding.h) against model->file and records in the
 * model what it bound: the fp32 arena, parameter count, unused tensors, dtype name. */
moire_status model_bind_weight_list(moire_model *model, struct weight_list *list,
                                    const struct weight_file_kind *kind);

/* Converting (pt_convert.c) */

typedef struct pt_convert_report {
    int tensor_count;
    char dtype_name[8];           /* of the tensors: "F32", "F16", "BF16" or "mixed"       */
    moire_model_config config;
    pt_info info;
    bool class_names_written;     /* the ImageNet names went into moire.class_names       */
} pt_convert_report;

/* Writes `in_path` (a .pt checkpoint, or a safetensors file) as a safetensors file at
 * `out_path`, atomically: the same tensors, bit for bit, in their own dtypes, plus
 * "moire.config" (inferred from the keys and shapes unless the input carries one) and,
 * for a 1000-class model, "moire.class_names". `report` may be NULL. */
moire_status pt_convert(const char *in_path, const char *out_path, pt_convert_report *report);

#endif /* MOIRE_MODEL_H */
