/* class_prompts.c — a prompt as a class of a class-conditional model: a number, an exact
 * class name or synonym (case-insensitive), or an error listing the closest names (edit
 * distance and whole-word matches). */
#include "model.h"

#include "class_names.h"
#include "internal.h"

#include <ctype.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Class prompts: number, exact name or synonym, or the closest name
 * ---------------------------------------------------------------------------------------- */

/* A piece of text that is not NUL-terminated (a synonym inside a class name). */
typedef struct text_span {
    const char *start;
    size_t length;
} text_span;

static text_span trim_span(const char *start, size_t length)
{
    while (length > 0 && isspace((unsigned char)*start)) {
        start++;
        length--;
    }
    while (length > 0 && isspace((unsigned char)start[length - 1]))
        length--;
    return (text_span){start, length};
}

/* Steps through the comma-separated synonyms of a class name ("tench, Tinca tinca"). */
static bool next_synonym(const char **cursor, text_span *synonym)
{
    while (**cursor) {
        const char *start = *cursor;
        const char *comma = strchr(start, ',');
        size_t length = comma ? (size_t)(comma - start) : strlen(start);
        *cursor = comma ? comma + 1 : start + length;
        *synonym = trim_span(start, length);
        if (synonym->length > 0)
            return true;
    }
    return false;
}

static bool span_equal_nocase(text_span a, text_span b)
{
    return a.length == b.length && strncasecmp(a.start, b.start, a.length) == 0;
}

/* Spans longer than this are compared by their first bytes only: class names are short. */
#define RESOLVE_MAX_LENGTH 128

/* Case-insensitive Levenshtein distance (insert, delete, substitute: cost 1 each). */
static size_t edit_distance(text_span a, text_span b)
{
    size_t n = a.length < RESOLVE_MAX_LENGTH ? a.length : RESOLVE_MAX_LENGTH;
    size_t m = b.length < RESOLVE_MAX_LENGTH ? b.length : RESOLVE_MAX_LENGTH;
    size_t previous[RESOLVE_MAX_LENGTH + 1], current[RESOLVE_MAX_LENGTH + 1];
    for (size_t j = 0; j <= m; j++)
        previous[j] = j;
    for (size_t i = 1; i <= n; i++) {
        current[0] = i;
        for (size_t j = 1; j <= m; j++) {
            bool same = tolower((unsigned char)a.start[i - 1]) ==
                        tolower((unsigned char)b.start[j - 1]);
            size_t best = previous[j - 1] + (same ? 0 : 1);
            if (previous[j] + 1 < best)
                best = previous[j] + 1;
            if (current[j - 1] + 1 < best)
                best = current[j - 1] + 1;
            current[j] = best;
        }
        memcpy(previous, current, (m + 1) * sizeof(size_t));
    }
    return previous[m];
}

/* True when `prompt` occurs in `synonym` as whole words ("retriever" in "golden retriever",
 * but not "gold" in "goldfish"). */
static bool contains_whole_words(text_span synonym, text_span prompt)
{
    if (prompt.length == 0 || prompt.length > synonym.length)
        return false;
    for (size_t at = 0; at + prompt.length <= synonym.length; at++) {
        if (strncasecmp(synonym.start + at, prompt.start, prompt.length) != 0)
            continue;
        bool starts_word = at == 0 || !isalnum((unsigned char)synonym.start[at - 1]);
        size_t end = at + prompt.length;
        bool ends_word = end == synonym.length || !isalnum((unsigned char)synonym.start[end]);
        if (starts_word && ends_word)
            return true;
    }
    return false;
}

static double max_length(size_t a, size_t b)
{
    return (double)(a > b ? a : b);
}

/* How far `prompt` is from `synonym`, 0 = identical, ~1 = unrelated; only ranks the
 * suggestions of a failed lookup. A whole-word hit ranks first, then the whole synonym's
 * normalised edit distance, then (with a small penalty) the nearest single word, so
 * "retrevr" still suggests the retrievers. */
static double suggestion_score(text_span synonym, text_span prompt)
{
    if (contains_whole_words(synonym, prompt))
        return 0.05;
    double best = (double)edit_distance(prompt, synonym) /
                  max_length(prompt.length, synonym.length);
    const char *word = synonym.start, *end = synonym.start + synonym.length;
    while (word < end) {
        const char *word_end = word;
        while (word_end < end && !isspace((unsigned char)*word_end))
            word_end++;
        text_span single = {word, (size_t)(word_end - word)};
        if (single.length > 0 && single.length < synonym.length) {
            double score = 0.15 + (double)edit_distance(prompt, single) /
                                      max_length(prompt.length, single.length);
            if (score < best)
                best = score;
        }
        word = word_end + 1;
    }
    return best;
}

typedef struct class_suggestion {
    int class_id;
    double score;
    text_span synonym; /* the best-matching synonym, shown to the user */
} class_suggestion;

static int compare_suggestions(const void *a, const void *b)
{
    const class_suggestion *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return x->class_id - y->class_id;
}

/* Fails with INVALID_ARGUMENT: `lead` ("no class matches \"x\"") then up to five classes,
 * either those of `only` (count entries) or, when only is NULL, the nearest overall. */
static moire_status fail_with_suggestions(const moire_model *model, text_span prompt,
                                          const char *lead, const int *only, int only_count)
{
    int classes = model->config.num_classes;
    class_suggestion *ranked = malloc_array((size_t)classes, sizeof *ranked);
    if (!ranked)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory resolving a class");
    int count = 0;
    for (int k = 0; k < classes; k++) {
        if (only) {
            bool listed = false;
            for (int i = 0; i < only_count && !listed; i++)
                listed = only[i] == k;
            if (!listed)
                continue;
        }
        class_suggestion suggestion = {k, 2.0, {model->class_names[k], 0}};
        const char *cursor = model->class_names[k];
        text_span synonym;
        while (next_synonym(&cursor, &synonym)) {
            double score = suggestion_score(synonym, prompt);
            if (score < suggestion.score) {
                suggestion.score = score;
                suggestion.synonym = synonym;
            }
        }
        ranked[count++] = suggestion;
    }
    qsort(ranked, (size_t)count, sizeof *ranked, compare_suggestions);
    char list[1024] = "";
    size_t used = 0;
    for (int i = 0; i < count && i < 5 && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%.*s (%d)", i ? ", " : "",
                                 (int)ranked[i].synonym.length, ranked[i].synonym.start,
                                 ranked[i].class_id);
    free(ranked);
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "%s; did you mean: %s%s", lead, list,
                      count > 5 ? ", …" : "");
}

/* "207" → 207 when the prompt is an integer (sign allowed so "-1" reports the range). */
static bool parse_class_number(text_span prompt, long long *out)
{
    size_t i = prompt.start[0] == '-' || prompt.start[0] == '+' ? 1 : 0;
    if (i == prompt.length)
        return false;
    for (size_t j = i; j < prompt.length; j++)
        if (!isdigit((unsigned char)prompt.start[j]))
            return false;
    char digits[32];
    if (prompt.length >= sizeof digits) {
        *out = LLONG_MAX; /* absurdly long number: out of range either way */
        return true;
    }
    memcpy(digits, prompt.start, prompt.length);
    digits[prompt.length] = '\0';
    *out = strtoll(digits, NULL, 10);
    return true;
}

moire_status moire_model_resolve_class(const moire_model *model, const char *prompt_text,
                                       int *out_class_id)
{
    int classes = model->config.num_classes;
    text_span prompt = trim_span(prompt_text ? prompt_text : "",
                                 prompt_text ? strlen(prompt_text) : 0);
    if (prompt.length == 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "empty class prompt; give a class name or a number 0..%d",
                          classes - 1);
    if (classes == 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s is unconditional (0 classes); it takes no class prompt",
                          model->name);

    long long number;
    if (parse_class_number(prompt, &number)) {
        if (number < 0 || number >= classes)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "class %.*s is out of range: model %s has classes 0..%d",
                              (int)prompt.length, prompt.start, model->name, classes - 1);
        *out_class_id = (int)number;
        return MOIRE_OK;
    }
    if (!model->class_names) {
        char where[512] = "";
        if (classes == CLASS_NAMES_IMAGENET_COUNT)
            class_names_describe_search(where, sizeof where);
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "model %s ships no class names, so \"%.*s\" cannot be looked up; use "
                          "a class number 0..%d (--class N)%s%s", model->name,
                          (int)prompt.length, prompt.start, classes - 1, where[0] ? "; " : "",
                          where);
    }

    /* 1. exact name or synonym, case-insensitive */
    for (int k = 0; k < classes; k++) {
        const char *cursor = model->class_names[k];
        text_span synonym;
        if (span_equal_nocase(trim_span(cursor, strlen(cursor)), prompt)) {
            *out_class_id = k;
            return MOIRE_OK;
        }
        while (next_synonym(&cursor, &synonym)) {
            if (span_equal_nocase(synonym, prompt)) {
                *out_class_id = k;
                return MOIRE_OK;
            }
        }
    }

    /* 2. whole words of a synonym ("retriever"): accepted only when one class has them */
    int *matches = malloc_array((size_t)classes, sizeof(int));
    if (!matches)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory resolving a class");
    int match_count = 0;
    for (int k = 0; k < classes; k++) {
        const char *cursor = model->class_names[k];
        text_span synonym;
        while (next_synonym(&cursor, &synonym)) {
            if (contains_whole_words(synonym, prompt)) {
                matches[match_count++] = k;
                break;
            }
        }
    }
    char lead[320];
    if (match_count == 1) {
        *out_class_id = matches[0];
        free(matches);
        return MOIRE_OK;
    }
    if (match_count > 1) {
        snprintf(lead, sizeof lead, "class prompt \"%.*s\" is ambiguous: %d classes match",
                 (int)prompt.length, prompt.start, match_count);
        moire_status status = fail_with_suggestions(model, prompt, lead, matches, match_count);
        free(matches);
        return status;
    }

    /* 3. a typo: the nearest whole synonym within a third of the prompt's length, accepted
          when no other class is as near */
    size_t best_distance = SIZE_MAX;
    int best_count = 0;
    for (int k = 0; k < classes; k++) {
        const char *cursor = model->class_names[k];
        text_span synonym;
        size_t class_distance = SIZE_MAX;
        while (next_synonym(&cursor, &synonym)) {
            size_t distance = edit_distance(prompt, synonym);
            if (distance < class_distance)
                class_distance = distance;
        }
        if (class_distance < best_distance) {
            best_distance = class_distance;
            best_count = 0;
        }
        if (class_distance == best_distance)
            matches[best_count++] = k;
    }
    if (best_distance * 3 <= prompt.length && best_count == 1) {
        *out_class_id = matches[0];
        free(matches);
        return MOIRE_OK;
    }
    free(matches);
    snprintf(lead, sizeof lead, "no class matches \"%.*s\"", (int)prompt.length, prompt.start);
    return fail_with_suggestions(model, prompt, lead, NULL, 0);
}
