/* tokenizer.c — EC-DiT's word-level tokenizer and the vocabulary that ships inside the model
 * file (metadata "moire.vocab", docs/ECDIT.md).
 *
 * Deliberately simple, so that a trainer in any language reproduces it exactly
 * (tools/golden/ecdit_ref.py: tokenize): ASCII letters are lowercased, every byte that is not
 * an ASCII letter or digit ends a word, bytes ≥ 0x80 belong to words (UTF-8 words stay whole
 * and are matched byte for byte), unknown words become [UNK], and the sequence is
 * [BOS] w1 … wk [EOS] padded with [PAD] to the model's max tokens.
 */
#include "ecdit.h"
#include "internal.h"
#include "json_guard.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>

static const char *const special_tokens[] = {"[PAD]", "[BOS]", "[EOS]", "[UNK]"};

/* qsort/bsearch over ids need the vocabulary; C has no closure, so sort pairs instead. */
typedef struct vocab_entry {
    const char *word;
    int32_t id;
} vocab_entry;

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const vocab_entry *)a)->word, ((const vocab_entry *)b)->word);
}

void ecdit_vocab_free(ecdit_vocab *vocab)
{
    if (!vocab)
        return;
    if (vocab->words)
        for (int i = 0; i < vocab->size; i++)
            free(vocab->words[i]);
    free(vocab->words);
    free(vocab->sorted);
    memset(vocab, 0, sizeof *vocab);
}

moire_status ecdit_vocab_load(ecdit_vocab *vocab, const char *json, int expected,
                              const char *path)
{
    memset(vocab, 0, sizeof *vocab);
    if (!json)
        return error_fail(MOIRE_ERROR_FORMAT,
                          "%s: metadata \"moire.vocab\" is missing; an EC-DiT file must ship "
                          "its vocabulary (export it with tools/golden/ecdit_ref.py)", path);
    JsonParser *parser = json_parser_new();
    JsonArray *array = NULL;
    moire_status status = MOIRE_OK;
    vocab_entry *entries = NULL;
    if (json_guard_load(parser, path, json, -1) == MOIRE_OK) {
        JsonNode *root = json_parser_get_root(parser);
        if (root && JSON_NODE_HOLDS_ARRAY(root))
            array = json_node_get_array(root);
    }
    if (!array) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"moire.vocab\" is not a JSON array of strings; fix "
                            "the metadata", path);
        goto done;
    }
    if ((int)json_array_get_length(array) != expected) {
        status = error_fail(MOIRE_ERROR_FORMAT,
                            "%s: metadata \"moire.vocab\" has %u words but text_vocab_size is "
                            "%d; fix the metadata", path, json_array_get_length(array),
                            expected);
        goto done;
    }
    vocab->size = expected;
    vocab->words = calloc_array((size_t)expected, sizeof(char *));
    vocab->sorted = malloc_array((size_t)expected, sizeof(int32_t));
    entries = malloc_array((size_t)expected, sizeof *entries);
    if (!vocab->words || !vocab->sorted || !entries) {
        status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < expected; i++) {
        JsonNode *node = json_array_get_element(array, (guint)i);
        const char *word = JSON_NODE_HOLDS_VALUE(node) &&
                                   json_node_get_value_type(node) == G_TYPE_STRING
                               ? json_node_get_string(node) : NULL;
        if (!word || !word[0]) {
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: metadata \"moire.vocab\": entry %d is not a non-empty "
                                "string; fix the metadata", path, i);
            goto done;
        }
        if (i < 4 && strcmp(word, special_tokens[i]) != 0) {
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: metadata \"moire.vocab\": entry %d is \"%s\" but must be "
                                "%s (the vocabulary starts [PAD] [BOS] [EOS] [UNK])", path, i,
                                word, special_tokens[i]);
            goto done;
        }
        if (!(vocab->words[i] = strdup(word))) {
            status = error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
            goto done;
        }
        entries[i] = (vocab_entry){vocab->words[i], i};
    }
    qsort(entries, (size_t)expected, sizeof *entries, compare_entries);
    for (int i = 0; i < expected; i++) {
        if (i > 0 && strcmp(entries[i - 1].word, entries[i].word) == 0) {
            status = error_fail(MOIRE_ERROR_FORMAT,
                                "%s: metadata \"moire.vocab\" lists \"%s\" twice; fix the "
                                "metadata", path, entries[i].word);
            goto done;
        }
        vocab->sorted[i] = entries[i].id;
    }
done:
    free(entries);
    g_object_unref(parser);
    if (status != MOIRE_OK)
        ecdit_vocab_free(vocab);
    return status;
}

int32_t ecdit_vocab_lookup(const ecdit_vocab *vocab, const char *word, size_t length)
{
    int lo = 0, hi = vocab->size - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const char *candidate = vocab->words[vocab->sorted[mid]];
        int c = strncmp(candidate, word, length);
        if (c == 0)
            c = candidate[length] == '\0' ? 0 : 1; /* candidate is longer */
        if (c == 0)
            return vocab->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return ECDIT_TOKEN_UNK;
}

bool ecdit_is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c >= 0x80;
}

void ecdit_tokenize(const ecdit_vocab *vocab, const char *text, int max_tokens, int32_t *ids,
                    ecdit_token_info *info)
{
    ecdit_token_info local = {0};
    int count = 0;
    ids[count++] = ECDIT_TOKEN_BOS;
    const char *c = text ? text : "";
    char word[256];
    while (*c) {
        if (!ecdit_is_word_byte((unsigned char)*c)) {
            c++;
            continue;
        }
        size_t length = 0;
        bool too_long = false;
        for (; ecdit_is_word_byte((unsigned char)*c); c++) {
            if (length < sizeof word)
                word[length++] = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
            else
                too_long = true; /* no vocabulary word is this long: [UNK] */
        }
        if (count >= max_tokens - 1) {
            local.dropped_words++;
            continue;
        }
        int32_t id = too_long ? ECDIT_TOKEN_UNK : ecdit_vocab_lookup(vocab, word, length);
        local.unknown_words += id == ECDIT_TOKEN_UNK;
        ids[count++] = id;
    }
    ids[count++] = ECDIT_TOKEN_EOS;
    local.length = count;
    while (count < max_tokens)
        ids[count++] = ECDIT_TOKEN_PAD;
    if (info)
        *info = local;
}
