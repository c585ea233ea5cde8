/* ecdit.h — EC-DiT internals (docs/ECDIT.md): the weights as plain data named after the
 * checkpoint keys, the word-level vocabulary and tokenizer, the text encoder's output, and the
 * forward pass. Shapes use the legend of model.h plus
 *   Dt text hidden, Ft text MLP width, V vocabulary, L max tokens, Fd dense SwiGLU width,
 *   P prompts, M expert-choice slots per expert (Σ over routing groups of C).
 */
#ifndef MOIRE_ECDIT_H
#define MOIRE_ECDIT_H

#include "context.h"
#include "model.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- weights -------------------------------------------------------------------------- */

typedef struct ecdit_text_layer_weights {
    const float *norm1_weight, *norm1_bias; /* text_encoder.layers.{j}.norm1.*   [Dt]          */
    const float *qkv_weight, *qkv_bias;     /* attn.qkv.*                        [3Dt, Dt]     */
    const float *proj_weight, *proj_bias;   /* attn.proj.*                       [Dt, Dt]      */
    const float *norm2_weight, *norm2_bias; /* norm2.*                           [Dt]          */
    const float *fc1_weight, *fc1_bias;     /* mlp.fc1.*                         [Ft, Dt]      */
    const float *fc2_weight, *fc2_bias;     /* mlp.fc2.*                         [Dt, Ft]      */
} ecdit_text_layer_weights;

typedef struct ecdit_text_weights {
    const float *token_embedding;             /* text_encoder.token_embedding.weight [V, Dt] */
    const float *position_embedding;          /* text_encoder.position_embedding.weight [L, Dt] */
    ecdit_text_layer_weights *layers;         /* [text_layers]                               */
    const float *final_norm_weight, *final_norm_bias;   /* text_encoder.final_norm.* [Dt]    */
    const float *pooled_proj_weight, *pooled_proj_bias; /* text_encoder.pooled_proj.* [D, Dt] */
} ecdit_text_weights;

typedef struct ecdit_block_weights {
    const float *adaLN_modulation_weight; /* blocks.{i}.adaLN_modulation.1.weight [9D, D]     */
    const float *adaLN_modulation_bias;   /* [9D]                                             */
    dit_attention_weights attn;           /* attn.qkv, attn.proj; attn.{q,k}_norm (qk_norm)    */
    const float *cross_q_weight, *cross_q_bias;       /* cross_attn.q.*    [D, D]             */
    const float *cross_kv_weight, *cross_kv_bias;     /* cross_attn.kv.*   [2D, Dt]           */
    const float *cross_proj_weight, *cross_proj_bias; /* cross_attn.proj.* [D, D]             */
    bool is_moe;                          /* i % moe_every == moe_every − 1                   */
    const float *moe_gate_weight;         /* moe.gate.weight (router, no bias) [E, D]          */
    dit_swiglu_weights *experts;          /* moe.experts.{e}.* [E]                             */
    dit_swiglu_weights shared_experts;    /* moe.shared_experts.* (hidden 0 = none)            */
    dit_swiglu_weights mlp;               /* mlp.* (dense blocks, width Fd)                   */
} ecdit_block_weights;

typedef struct ecdit_weights {
    const float *pos_embed;               /* pos_embed [1, T, D] (optional: recomputed)        */
    const float *x_embedder_proj_weight;  /* x_embedder.proj.weight [D, C, p, p]               */
    const float *x_embedder_proj_bias;    /* [D]                                               */
    const float *t_embedder_mlp0_weight;  /* t_embedder.mlp.0.weight [D, 256]                  */
    const float *t_embedder_mlp0_bias;
    const float *t_embedder_mlp2_weight;  /* t_embedder.mlp.2.weight [D, D]                    */
    const float *t_embedder_mlp2_bias;
    ecdit_text_weights text;
    ecdit_block_weights *blocks;          /* [depth]                                           */
    const float *final_adaLN_modulation_weight; /* final_layer.adaLN_modulation.1.weight [2D, D] */
    const float *final_adaLN_modulation_bias;
    const float *final_linear_weight;     /* final_layer.linear.weight [p·p·Co, D]             */
    const float *final_linear_bias;
} ecdit_weights;

/* ---- vocabulary and tokenizer (tokenizer.c) -------------------------------------------- */

#define ECDIT_TOKEN_PAD 0
#define ECDIT_TOKEN_BOS 1
#define ECDIT_TOKEN_EOS 2
#define ECDIT_TOKEN_UNK 3

typedef struct ecdit_vocab {
    int size;
    char **words;    /* [size]; words[0..3] = "[PAD]" "[BOS]" "[EOS]" "[UNK]"              */
    int32_t *sorted; /* [size] ids ordered by strcmp of their words, for bsearch            */
} ecdit_vocab;

/* Parses metadata "moire.vocab" (a JSON array of `expected` distinct non-empty strings, the
 * four special tokens first). `path` is for messages. */
moire_status ecdit_vocab_load(ecdit_vocab *vocab, const char *json, int expected,
                              const char *path);
void ecdit_vocab_free(ecdit_vocab *vocab);
/* The id of `word` (bytes [word, word + length)), or ECDIT_TOKEN_UNK. */
int32_t ecdit_vocab_lookup(const ecdit_vocab *vocab, const char *word, size_t length);

typedef struct ecdit_token_info {
    int length;        /* real tokens, [BOS] … [EOS]                                       */
    int unknown_words; /* words mapped to [UNK]                                            */
    int dropped_words; /* words past max_tokens − 2                                         */
} ecdit_token_info;

/* ids[max_tokens] = [BOS] w1 … wk [EOS] [PAD] …: ASCII lowercased, split at every byte that
 * is not an ASCII letter or digit (bytes ≥ 0x80 are letters, so UTF-8 words stay whole).
 * max_tokens ≥ 2. `info` may be NULL. */
void ecdit_tokenize(const ecdit_vocab *vocab, const char *text, int max_tokens, int32_t *ids,
                    ecdit_token_info *info);
/* The tokenizer's word bytes: ASCII letters and digits, and every byte ≥ 0x80. */
bool ecdit_is_word_byte(unsigned char c);

/* ---- the model ------------------------------------------------------------------------- */

struct ecdit_model {
    ecdit_weights weights;
    ecdit_vocab vocab;
};

/* Config (ecdit_model.c): fills the EC-DiT keys of "moire.config" (and the family defaults
 * of keys the JSON lacks: rectified flow, pixel space), then checks the whole config. */
moire_status ecdit_config_from_json(moire_model_config *config, const char *json);
moire_status ecdit_config_validate(const moire_model_config *config);
/* Binds every weight of model->config (presence, shape, dtype, finiteness; F16/BF16 into
 * one fp32 arena, model->arena) and loads the vocabulary. Sets model->ecdit. */
moire_status ecdit_model_bind(moire_model *model);
void         ecdit_model_free(struct ecdit_model *ecdit, int depth);
bool         ecdit_block_is_moe(const moire_model_config *config, int block);

/* ---- text conditioning (text_encoder.c) -------------------------------------------------- */

typedef struct ecdit_text_cond {
    const moire_ops *ops; /* the backend whose memory `tokens` and `pooled` are in         */
    int prompts;     /* P                                                                  */
    int max_tokens;  /* L                                                                  */
    int32_t *ids;    /* [P, L] (host)                                                      */
    int *lengths;    /* [P] real tokens (host); keys past it (padding) are masked           */
    float *tokens;   /* [P, L, Dt] the text encoder's output (after final_norm), backend   */
    float *pooled;   /* [P, D] mean over the real tokens, projected to D, backend           */
    int unknown_words, dropped_words; /* summed over the prompts, for warnings              */
} ecdit_text_cond;

/* Tokenizes and encodes P prompts (NULL = "") on the context's backend; the result stays in
 * its memory for every forward of a generate call. Debug tensors: text_ids, text_out,
 * text_pooled. */
moire_status ecdit_text_encode(moire_ctx *ctx, const moire_model *model, int prompts,
                               const char *const *texts, ecdit_text_cond *out);
void ecdit_text_cond_free(ecdit_text_cond *cond);

/* ---- forward (ecdit.c) --------------------------------------------------------------------- */

/* x [n, C, h, w], t [n], image i conditioned on prompt prompt_of[i] of `text`;
 * out [n, Co, h, w]. No argument checks (moire_forward_text does them). */
moire_status ecdit_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                           const float *x, const float *t, const ecdit_text_cond *text,
                           const int *prompt_of, float *out);

/* ecdit_forward on backend arrays: x, t, out in the context's backend memory, positions
 * [T, D] from dit_positions_on_backend. Uploads and downloads nothing, so a sampling step
 * built on it can be recorded as a graph. */
moire_status ecdit_forward_on_backend(moire_ctx *ctx, const moire_model *model, int n, int h,
                                      int w, const float *x, const float *t,
                                      const ecdit_text_cond *text, const int *prompt_of,
                                      const float *positions, float *out);

#endif /* MOIRE_ECDIT_H */
