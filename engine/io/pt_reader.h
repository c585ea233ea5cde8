/* pt_reader.h — PyTorch checkpoints (.pt / .pth / .bin written by torch.save ≥ 1.6) as
 * st_files.
 *
 * A checkpoint is a ZIP archive (zip_reader.h) holding `<name>/data.pkl`, a pickle that
 * describes the object, and `<name>/data/<key>` storages with the raw little-endian
 * tensor bytes. The pickle is run by the restricted interpreter of pickle.h (an allow-list;
 * it never executes code) and the state dict's tensors become an st_file whose data points
 * straight into the mmapped archive, so the model loader treats a .pt exactly like a
 * metadata-less safetensors file. Format and rules: docs/CHECKPOINTS.md.
 */
#ifndef MOIRE_PT_READER_H
#define MOIRE_PT_READER_H

#include "moire.h"
#include "safetensors.h"

/* The pickle may be at most this large (inflated): a 33 GB DiT-MoE-G state dict's pickle
 * is under 1 MB; anything near this is hostile. */
#define PT_PICKLE_MAX_BYTES (64u << 20)

typedef struct pt_info {
    char wrapper[32];      /* "" or the key unwrapped: "ema", "model", "state_dict", "module" */
    bool stripped_prefix;  /* "module." was removed from the keys                         */
    int skipped_entries;   /* non-tensor entries of the state dict                          */
} pt_info;

/* True when the file starts with a ZIP local header ("PK\3\4"). */
bool         pt_file_is_zip(const char *path);
/* Opens a torch.save checkpoint. `info` may be NULL. */
moire_status pt_open(const char *path, st_file **out, pt_info *info);
/* Opens a model file by content: a zip → pt_open; an old (pre-1.6) torch.save pickle →
 * a message saying how to re-save it; anything else → st_open (safetensors). */
moire_status model_file_open(const char *path, st_file **out);

/* `moire convert` (pt_convert: a checkpoint as safetensors, config included) needs the model
 * config and is models/pt_convert.c, declared in model.h. */

#endif /* MOIRE_PT_READER_H */
