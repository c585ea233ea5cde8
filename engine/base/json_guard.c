/* json_guard.c — nesting-depth and duplicate-name check run on untrusted JSON before
 * json-glib parses it (see json_guard.h for why).
 *
 * One pass over the bytes: a stack of open containers (at most MOIRE_JSON_MAX_DEPTH, so a
 * fixed array), and for each open object a hash set of its member names, created at its
 * first member. Strings are skipped with their escapes; member names are unescaped before
 * they are compared, so "a" and "\u0061" are the same name (as they are to json-glib).
 * Time is linear in the text; memory is the names of the objects open at one time.
 */
#include "json_guard.h"

#include "internal.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

typedef struct open_container {
    bool is_object;
    GHashTable *names; /* member names seen so far (objects only; NULL until the first)  */
} open_container;

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_hex4(const char *s, const char *end, gunichar *out)
{
    if (end - s < 4)
        return false;
    gunichar v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(s[i]);
        if (h < 0)
            return false;
        v = v * 16 + (gunichar)h;
    }
    *out = v;
    return true;
}

/* Skips the string whose opening quote is at *pos; appends its unescaped bytes to `name`
 * when it is not NULL. Returns false for an unterminated string (left to the parser). */
static bool scan_string(const char **pos, const char *end, GString *name)
{
    const char *p = *pos + 1;
    while (p < end && *p != '"') {
        if (*p != '\\') {
            const char *run = p;
            while (p < end && *p != '"' && *p != '\\')
                p++;
            if (name)
                g_string_append_len(name, run, p - run);
            continue;
        }
        if (p + 1 >= end)
            return false;
        char e = p[1];
        p += 2;
        if (!name)
            continue;
        gunichar cp;
        switch (e) {
        case 'b': g_string_append_c(name, '\b'); break;
        case 'f': g_string_append_c(name, '\f'); break;
        case 'n': g_string_append_c(name, '\n'); break;
        case 'r': g_string_append_c(name, '\r'); break;
        case 't': g_string_append_c(name, '\t'); break;
        case 'u':
            if (!read_hex4(p, end, &cp))
                return false; /* invalid escape: the parser reports it */
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                gunichar low;
                if (read_hex4(p + 2, end, &low) && low >= 0xDC00 && low < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) {
                /* a lone surrogate has no UTF-8 form: keep it distinct, escaped */
                g_string_append_printf(name, "\\u%04X", (unsigned)cp);
            } else {
                char utf8[8];
                g_string_append_len(name, utf8, g_unichar_to_utf8(cp, utf8));
            }
            break;
        default: /* '"', '\\', '/' and anything else stand for themselves */
            g_string_append_c(name, e);
            break;
        }
    }
    if (p >= end)
        return false;
    *pos = p + 1;
    return true;
}

bool moire_json_check(const char *text, long long length, char *why, size_t why_size)
{
    if (why_size)
        why[0] = '\0';
    if (!text)
        return true;
    const char *begin = text;
    const char *end = text + (length < 0 ? (long long)strlen(text) : length);
    open_container stack[MOIRE_JSON_MAX_DEPTH];
    int depth = 0;
    /* what json-glib's tree will cost (measured on json-glib 1.6: ~110 bytes a node, ~190
       more for an object, ~110 for each member's key and hash entry): every value but the
       root follows a ',' or is the first of a non-empty container */
    unsigned long long commas = 0, first_values = 0, objects = 0, members = 0;
    bool just_opened = false;
    bool expect_name = false; /* the next string, if any, names an object member */
    bool ok = true;
    GString *name = g_string_new(NULL);

    for (const char *p = begin; p < end && ok;) {
        char c = *p;
        if (just_opened && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            first_values += c != '}' && c != ']';
            just_opened = false;
        }
        if (c == '{' || c == '[') {
            if (depth == MOIRE_JSON_MAX_DEPTH) {
                snprintf(why, why_size, "nested deeper than %d levels at byte %lld",
                         MOIRE_JSON_MAX_DEPTH, (long long)(p - begin));
                ok = false;
                break;
            }
            stack[depth].is_object = c == '{';
            stack[depth].names = NULL;
            depth++;
            just_opened = true;
            objects += c == '{';
            expect_name = c == '{';
            p++;
        } else if (c == '}' || c == ']') {
            if (depth > 0) {
                depth--;
                if (stack[depth].names)
                    g_hash_table_destroy(stack[depth].names);
            }
            expect_name = false;
            p++;
        } else if (c == ',') {
            expect_name = depth > 0 && stack[depth - 1].is_object;
            commas++;
            p++;
        } else if (c == ':') {
            members++;
            p++;
        } else if (c == '"') {
            const char *start = p;
            bool is_name = expect_name && depth > 0 && stack[depth - 1].is_object;
            expect_name = false;
            if (is_name)
                g_string_truncate(name, 0);
            if (!scan_string(&p, end, is_name ? name : NULL))
                break; /* unterminated or bad escape: json-glib reports it */
            if (!is_name)
                continue;
            open_container *object = &stack[depth - 1];
            if (!object->names)
                object->names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
            if (g_hash_table_contains(object->names, name->str)) {
                snprintf(why, why_size, "member \"%.60s%s\" appears twice in one object "
                         "(byte %lld)", name->str, name->len > 60 ? "…" : "",
                         (long long)(start - begin));
                ok = false;
                break;
            }
            g_hash_table_add(object->names, g_strndup(name->str, name->len));
        } else {
            p++;
        }
    }
    while (depth > 0) {
        depth--;
        if (stack[depth].names)
            g_hash_table_destroy(stack[depth].names);
    }
    g_string_free(name, TRUE);
    if (ok) {
        const unsigned long long values = commas + first_values + 1;
        const double tree_bytes = 112.0 * (double)values +
                                  192.0 * (double)objects + 112.0 * (double)members;
        const double budget = MOIRE_JSON_BASE_BUDGET + 16.0 * (double)(end - begin);
        if (tree_bytes > budget) {
            snprintf(why, why_size, "%llu values in %lld bytes would take about %.0f MB to "
                     "parse, over the budget of %.0f MB for a text this size",
                     values, (long long)(end - begin), tree_bytes / 1e6,
                     budget / 1e6);
            ok = false;
        }
    }
    return ok;
}

moire_status json_guard_load(JsonParser *parser, const char *what, const char *text,
                             long long length)
{
    if (!text)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: no JSON text", what);
    char why[160];
    if (!moire_json_check(text, length, why, sizeof why))
        return error_fail(MOIRE_ERROR_FORMAT, "%s: %s", what, why);
    GError *error = NULL;
    if (!json_parser_load_from_data(parser, text, length < 0 ? -1 : (gssize)length, &error)) {
        moire_status status = error_fail(MOIRE_ERROR_FORMAT, "%s: not valid JSON (%s)", what,
                                         error ? error->message : "parse error");
        g_clear_error(&error);
        return status;
    }
    return MOIRE_OK;
}
