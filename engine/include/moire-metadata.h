/* moire-metadata.h — the A1111 "parameters" text: formatting from resolved values and parsing
 * back (for `moire info --image` and the GUI's "reuse settings").
 *
 * Layout (hosts.md §4.1): the prompt (may span lines), a "Negative prompt: …" line only when
 * the negative prompt is non-empty, then one line of "Key: value" pairs joined by ", ".
 * Values containing ',', ':' or a newline are written as JSON strings.
 */
#ifndef MOIRE_METADATA_H
#define MOIRE_METADATA_H

#include "moire.h"

/* One generation's settings as written in (or read from) a "parameters" text. Strings are
 * owned by the struct when it comes from moire_parse_parameters (moire_parameters_clear
 * frees them); for formatting they are only borrowed. */
typedef struct moire_parameters {
    char *prompt;             /* "" when empty                                           */
    char *negative_prompt;    /* NULL or "" = no "Negative prompt:" line                 */
    int steps;                /* 0 = absent                                              */
    char *sampler;            /* A1111 label, "Euler a"; NULL = absent                    */
    char *schedule;           /* "Uniform", "Karras"; NULL = absent                      */
    float cfg_scale;          /* NaN = absent                                            */
    bool has_seed;
    uint64_t seed;
    int width, height;        /* 0 = absent                                              */
    char *model;              /* model name without extension; NULL = absent             */
    float denoising_strength; /* NaN = absent (txt2img)                                  */
    char *version;            /* "Moiré 0.1.0"; NULL = absent                            */
    /* Formatting only: further pairs written before Version (values quoted as needed),
     * e.g. "DMCMC", "NFE". */
    int extra_count;
    const char *extra_keys[4];
    const char *extra_values[4];
    /* Parsing only: every pair of the parameter line in order, values unquoted. */
    int pair_count;
    char **keys;
    char **values;
} moire_parameters;

/* An empty struct: numbers absent (NaN / 0), strings NULL. */
moire_parameters moire_parameters_init(void);
/* Frees the strings of a struct filled by moire_parse_parameters and re-initialises it. */
void moire_parameters_clear(moire_parameters *parameters);

/* The exact A1111 text for already-resolved values (caller frees with free()); NULL only
 * when out of memory. moire_format_parameters() resolves a model and params into this. */
char *moire_parameters_format(const moire_parameters *parameters);

/* Parses an A1111-style "parameters" text (ours, A1111's, sd.cpp's, Forge's). Unknown keys
 * are kept in keys/values. Fails (MOIRE_ERROR_FORMAT) only on NULL text or when out of
 * memory; a text without a parameter line yields just a prompt. */
moire_status moire_parse_parameters(const char *text, moire_parameters *out);

/* Shortest decimal that reads back as the same float, "7" for 7.0, "4.5", like Python's
 * str(); `buffer` needs 32 bytes. Non-finite values print as "nan"/"inf". */
const char *moire_format_float(float value, char *buffer, size_t size);

/* The settings JSON of a PNG (its "moire" chunk) is untrusted input: hosts check it with
 * moire_json_check before handing it to a JSON parser. Checks `text` (length bytes, or up to
 * the NUL when length < 0). Returns true when it nests at most 64 levels deep, no object has
 * two members of the same name (names compared after unescaping) and the parsed tree fits
 * the engine's memory budget for a file's metadata (48 MB + 16 bytes per byte of text).
 * Otherwise returns false and writes a one-line reason, such as "nested deeper than 64 levels
 * at byte 64" or "member \"a\" appears twice in one object (byte 12)", to why[why_size]. */
bool moire_json_check(const char *text, long long length, char *why, size_t why_size);

#endif /* MOIRE_METADATA_H */
