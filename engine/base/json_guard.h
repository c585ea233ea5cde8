/* json_guard.h — the one gate every untrusted JSON text passes before json-glib sees it.
 *
 * json-glib's parser recurses once per nesting level with no limit, so 100,000 '[' in a
 * 200 KB safetensors header overflow the stack; and it keeps the last of two members with
 * the same name, so a header naming one tensor twice silently loses one. moire_json_check
 * scans the text once (linear time, memory proportional to the number of keys of the open
 * objects) and refuses both before the parser runs. json_guard_load is the check followed
 * by json_parser_load_from_data; every JSON read of the engine (safetensors header,
 * moire.config, vocabularies, companion and classifier metadata, tokenizer, EC-DiT config)
 * and of the studio (the PNG "moire" settings restore) goes through one of the two.
 *
 * Only nesting and duplicate names are checked here; syntax is json-glib's job (a text that
 * passes the check may still be invalid JSON, and is then refused by the parser).
 */
#ifndef MOIRE_JSON_GUARD_H
#define MOIRE_JSON_GUARD_H

#include "moire-metadata.h"
#include "moire.h"

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>

/* Deepest nesting of arrays and objects accepted. Moiré's own JSON is at most 4 deep (a
 * safetensors header: object → tensor object → shape array); 64 leaves room for any
 * sensible writer and keeps json-glib's recursion a few KB of stack. */
#define MOIRE_JSON_MAX_DEPTH 64

/* Memory json-glib may spend on a text of L bytes: MOIRE_JSON_BASE_BUDGET + 16·L (the
 * engine's bound for a file's metadata, docs/ENGINE.md "Hostile files"). A real safetensors
 * header costs ~20 bytes of tree per byte of text, so headers up to ~10 MB pass; 1 MB of
 * empty objects ("{},{},…", ~290 bytes of tree each) does not. */
#define MOIRE_JSON_BASE_BUDGET (48.0 * 1000 * 1000)

/* moire_json_check (the structural check of untrusted JSON) is public: moire-metadata.h. */

/* moire_json_check, then json_parser_load_from_data. On failure returns MOIRE_ERROR_FORMAT
 * with the message "<what>: <reason>" (moire_last_error()). */
moire_status json_guard_load(JsonParser *parser, const char *what, const char *text,
                             long long length);

#endif /* MOIRE_JSON_GUARD_H */
