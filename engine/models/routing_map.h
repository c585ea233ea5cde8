/* routing_map.h — recording which experts processed which tokens during a generate run, for
 * the public moire_routing_map (moire.h, "Routing maps"; docs/ECDIT.md).
 *
 * generate.c creates a recorder for a run and hangs it on the context; the forward passes
 * (forward.c for token choice, ecdit.c for expert choice) report every MoE layer's routing,
 * and the recorder keeps the conditional images of the batch (the first `count` images of a
 * forward; the unconditional half of CFG is not recorded). */
#ifndef MOIRE_ROUTING_MAP_H
#define MOIRE_ROUTING_MAP_H

#include "moire.h"

#include <stdint.h>

typedef struct routing_recorder routing_recorder;

/* A recorder for `images` images of grid_h × grid_w tokens; NULL when out of memory. */
routing_recorder *routing_recorder_new(const moire_model *model, int images, int grid_h,
                                       int grid_w);
void routing_recorder_free(routing_recorder *recorder);
/* The next forwards belong to images [first, first + count) of the run. */
void routing_recorder_set_chunk(routing_recorder *recorder, int first, int count);
/* One model evaluation of the current chunk (call once per guided model call). */
void routing_recorder_count_evaluation(routing_recorder *recorder);
/* Token choice: top_ids[rows of the forward batch × T, k] of block `block`. */
void routing_record_topk(routing_recorder *recorder, int block, int T, const int32_t *top_ids,
                         int k);
/* Expert choice: tokens[E, M] (global row ids of the forward batch) of block `block`. */
void routing_record_expert_choice(routing_recorder *recorder, int block, int T,
                                  const int32_t *tokens, int E, int M);
/* Turns the sums into the averaged map and frees the recorder; NULL when out of memory. */
moire_routing_map *routing_recorder_finish(routing_recorder *recorder);

#endif /* MOIRE_ROUTING_MAP_H */
