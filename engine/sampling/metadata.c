/* metadata.c — the "parameters" (A1111 layout) and "moire" (JSON) texts stored in PNGs, and
 * a parser for the former.
 *
 * The A1111 rules followed here (hosts.md §4.1): the whole text is stripped; the negative
 * prompt line appears only when non-empty; the parameter line is ", ".join("Key: value") in
 * A1111's key order; a value containing ',', ':' or '\n' is written as a JSON string
 * (json.dumps(…, ensure_ascii=False)). The parser mirrors parse_generation_parameters():
 * the last line is the parameter line when the key/value pattern matches it at least 3 times.
 *
 * Batch images differ only in their seed (seed + index); nothing else about the batch is
 * written, so image i of a batch carries exactly the texts of a single run with its seed.
 */
#include "moire-metadata.h"

#include "generate.h"
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * A growing string
 * ---------------------------------------------------------------------------------------- */

typedef struct strbuf {
    char *data;
    size_t length, capacity;
    bool failed; /* an allocation failed: the result will be NULL */
} strbuf;

static void sb_append_n(strbuf *sb, const char *s, size_t n)
{
    if (sb->failed)
        return;
    if (sb->length + n + 1 > sb->capacity) {
        size_t capacity = sb->capacity ? sb->capacity : 256;
        while (capacity < sb->length + n + 1)
            capacity *= 2;
        char *data = realloc(sb->data, capacity);
        if (!data) {
            sb->failed = true;
            return;
        }
        sb->data = data;
        sb->capacity = capacity;
    }
    memcpy(sb->data + sb->length, s, n);
    sb->length += n;
    sb->data[sb->length] = '\0';
}

static void sb_append(strbuf *sb, const char *s)
{
    sb_append_n(sb, s, strlen(s));
}

static void sb_printf(strbuf *sb, const char *fmt, ...) MOIRE_PRINTF(2, 3);
static void sb_printf(strbuf *sb, const char *fmt, ...)
{
    char buffer[512];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(buffer, sizeof buffer, fmt, args);
    va_end(args);
    if (n < 0)
        sb->failed = true;
    else
        sb_append_n(sb, buffer, (size_t)n < sizeof buffer ? (size_t)n : sizeof buffer - 1);
}

/* Returns the string (caller frees) or NULL when an allocation failed. */
static char *sb_finish(strbuf *sb)
{
    if (!sb->failed && !sb->data)
        sb_append(sb, "");
    if (sb->failed) {
        free(sb->data);
        return NULL;
    }
    return sb->data;
}

/* A JSON string literal, like json.dumps(s, ensure_ascii=False). */
static void sb_json_string(strbuf *sb, const char *s)
{
    sb_append(sb, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':  sb_append(sb, "\\\""); break;
        case '\\': sb_append(sb, "\\\\"); break;
        case '\n': sb_append(sb, "\\n"); break;
        case '\r': sb_append(sb, "\\r"); break;
        case '\t': sb_append(sb, "\\t"); break;
        case '\b': sb_append(sb, "\\b"); break;
        case '\f': sb_append(sb, "\\f"); break;
        default:
            if (*p < 0x20)
                sb_printf(sb, "\\u%04x", *p);
            else
                sb_append_n(sb, (const char *)p, 1);
        }
    }
    sb_append(sb, "\"");
}

/* A JSON number for a float (null when not finite). */
static void sb_json_float(strbuf *sb, float value)
{
    char number[32];
    sb_append(sb, isfinite(value) ? moire_format_float(value, number, sizeof number) : "null");
}

/* A1111's quote(): verbatim unless the value contains ',', ':' or a newline. */
static void sb_quoted_value(strbuf *sb, const char *value)
{
    if (strpbrk(value, ",:\n"))
        sb_json_string(sb, value);
    else
        sb_append(sb, value);
}

const char *moire_format_float(float value, char *buffer, size_t size)
{
    if (isnan(value)) {
        snprintf(buffer, size, "nan");
        return buffer;
    }
    if (isinf(value)) {
        snprintf(buffer, size, value < 0 ? "-inf" : "inf");
        return buffer;
    }
    for (int precision = 1; precision <= 9; precision++) {
        snprintf(buffer, size, "%.*g", precision, (double)value);
        if (strtof(buffer, NULL) == value)
            break;
    }
    return buffer;
}

/* ------------------------------------------------------------------------------------------
 * The "parameters" text
 * ---------------------------------------------------------------------------------------- */

moire_parameters moire_parameters_init(void)
{
    moire_parameters p;
    memset(&p, 0, sizeof p);
    p.cfg_scale = NAN;
    p.denoising_strength = NAN;
    return p;
}

void moire_parameters_clear(moire_parameters *parameters)
{
    if (!parameters)
        return;
    free(parameters->prompt);
    free(parameters->negative_prompt);
    free(parameters->sampler);
    free(parameters->schedule);
    free(parameters->model);
    free(parameters->version);
    for (int i = 0; i < parameters->pair_count; i++) {
        free(parameters->keys[i]);
        free(parameters->values[i]);
    }
    free(parameters->keys);
    free(parameters->values);
    *parameters = moire_parameters_init();
}

static bool is_py_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

char *moire_parameters_format(const moire_parameters *p)
{
    strbuf sb = {0};
    char number[32];
    sb_append(&sb, p->prompt ? p->prompt : "");
    if (p->negative_prompt && p->negative_prompt[0]) {
        sb_append(&sb, "\nNegative prompt: ");
        sb_append(&sb, p->negative_prompt);
    }
    sb_append(&sb, "\n");

    const char *separator = "";
#define PAIR_BEGIN(key)                                                                    \
    do {                                                                                   \
        sb_append(&sb, separator);                                                         \
        sb_append(&sb, key ": ");                                                          \
        separator = ", ";                                                                  \
    } while (0)
    if (p->steps > 0) {
        PAIR_BEGIN("Steps");
        sb_printf(&sb, "%d", p->steps);
    }
    if (p->sampler) {
        PAIR_BEGIN("Sampler");
        sb_quoted_value(&sb, p->sampler);
    }
    if (p->schedule) {
        PAIR_BEGIN("Schedule type");
        sb_quoted_value(&sb, p->schedule);
    }
    if (!isnan(p->cfg_scale)) {
        PAIR_BEGIN("CFG scale");
        sb_append(&sb, moire_format_float(p->cfg_scale, number, sizeof number));
    }
    if (p->has_seed) {
        PAIR_BEGIN("Seed");
        sb_printf(&sb, "%llu", (unsigned long long)p->seed);
    }
    if (p->width > 0 && p->height > 0) {
        PAIR_BEGIN("Size");
        sb_printf(&sb, "%dx%d", p->width, p->height);
    }
    if (p->model) {
        PAIR_BEGIN("Model");
        sb_quoted_value(&sb, p->model);
    }
    if (!isnan(p->denoising_strength)) {
        PAIR_BEGIN("Denoising strength");
        sb_append(&sb, moire_format_float(p->denoising_strength, number, sizeof number));
    }
    for (int i = 0; i < p->extra_count && i < 4; i++) {
        sb_append(&sb, separator);
        sb_append(&sb, p->extra_keys[i]);
        sb_append(&sb, ": ");
        separator = ", ";
        sb_quoted_value(&sb, p->extra_values[i]);
    }
    if (p->version) {
        PAIR_BEGIN("Version");
        sb_quoted_value(&sb, p->version);
    }
#undef PAIR_BEGIN

    char *text = sb_finish(&sb);
    if (!text)
        return NULL;
    /* Python's str.strip() on the whole text. */
    size_t length = strlen(text), start = 0;
    while (length > 0 && is_py_space(text[length - 1]))
        text[--length] = '\0';
    while (start < length && is_py_space(text[start]))
        start++;
    memmove(text, text + start, length - start + 1);
    return text;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static bool is_word_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80; /* Python's \w is Unicode-aware */
}

static char *dup_range(const char *s, size_t n)
{
    char *copy = malloc(n + 1);
    if (copy) {
        memcpy(copy, s, n);
        copy[n] = '\0';
    }
    return copy;
}

static void put_utf8(strbuf *sb, uint32_t cp)
{
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_append_n(sb, out, n);
}

static bool read_hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return false;
    }
    *out = v;
    return true;
}

/* json.loads of a string literal s[0..n) (quotes included); NULL when it is not valid. */
static char *json_unquote(const char *s, size_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"')
        return NULL;
    strbuf sb = {0};
    for (size_t i = 1; i + 1 < n; i++) {
        if (s[i] != '\\') {
            sb_append_n(&sb, s + i, 1);
            continue;
        }
        if (i + 2 >= n)
            goto bad;
        char e = s[++i];
        switch (e) {
        case '"':  sb_append(&sb, "\""); break;
        case '\\': sb_append(&sb, "\\"); break;
        case '/':  sb_append(&sb, "/"); break;
        case 'b':  sb_append(&sb, "\b"); break;
        case 'f':  sb_append(&sb, "\f"); break;
        case 'n':  sb_append(&sb, "\n"); break;
        case 'r':  sb_append(&sb, "\r"); break;
        case 't':  sb_append(&sb, "\t"); break;
        case 'u': {
            uint32_t cp, low;
            if (i + 5 >= n || !read_hex4(s + i + 1, &cp))
                goto bad;
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 7 < n && s[i + 1] == '\\' &&
                s[i + 2] == 'u' && read_hex4(s + i + 3, &low) && low >= 0xDC00 &&
                low < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                i += 6;
            }
            if (cp == 0)
                goto bad;
            put_utf8(&sb, cp);
            break;
        }
        default:
            goto bad;
        }
    }
    return sb_finish(&sb);
bad:
    free(sb.data);
    return NULL;
}

/* Scanning state kept across the matches of one line, so that the whole line is parsed in
 * linear time (a regex engine retrying at every position is quadratic: issue 19 measured
 * 11 s for 256 KiB). */
typedef struct param_scan {
    /* The last quoted value scanned: from the quote at `quote_open` to its closing quote at
     * `quote_close` (or where the scan stopped, unterminated). A later value that opens
     * with an escaped quote inside that range stops at the same place: the escape pairs
     * line up, because that quote was the second byte of a `\"` pair. */
    const char *quote_open, *quote_close;
} param_scan;

/* One match of A1111's re_param at `pos`:
 *   \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)
 * Fills the key and value ranges and returns the end of the match. On no match returns NULL
 * and sets *resume past every start position that cannot match either: a start anywhere in
 * the whitespace and key run just scanned reaches the same non-':' byte. */
static const char *match_param(param_scan *scan, const char *pos, const char *end,
                               const char **key, size_t *key_len, const char **value,
                               size_t *value_len, const char **resume)
{
    const char *p = pos;
    *resume = pos + 1;
    while (p < end && is_py_space(*p))
        p++;
    if (p >= end || !is_word_char((unsigned char)*p)) {
        *resume = p > pos ? p : pos + 1;
        return NULL;
    }
    const char *k = p++;
    const char *run = p;
    while (p < end && (is_word_char((unsigned char)*p) || *p == ' ' || *p == '-' || *p == '/'))
        p++;
    if (p == run || p >= end || *p != ':') {
        *resume = p > pos ? p : pos + 1;
        return NULL;
    }
    *key = k;
    *key_len = (size_t)(p - k);
    p++;
    while (p < end && is_py_space(*p))
        p++;
    if (p < end && *p == '"') {
        const char *q;
        if (scan->quote_open && p > scan->quote_open && p < scan->quote_close) {
            q = scan->quote_close;
        } else {
            q = p + 1;
            while (q < end && *q != '"') {
                if (*q == '\\') {
                    if (q + 1 >= end)
                        break;
                    q++;
                }
                q++;
            }
            scan->quote_open = p;
            scan->quote_close = q;
        }
        bool any = q > p + 1;
        if (any && q < end && *q == '"' && (q + 1 == end || q[1] == ',')) {
            *value = p;
            *value_len = (size_t)(q + 1 - p);
            return q + 1 < end ? q + 2 : end;
        }
    }
    const char *v = p;
    while (p < end && *p != ',')
        p++;
    *value = v;
    *value_len = (size_t)(p - v);
    return p < end ? p + 1 : end;
}

static int count_params(const char *line, const char *end)
{
    int count = 0;
    const char *pos = line;
    param_scan scan = {0};
    while (pos < end) {
        const char *key, *value, *resume;
        size_t key_len, value_len;
        const char *next = match_param(&scan, pos, end, &key, &key_len, &value, &value_len,
                                       &resume);
        if (next) {
            count++;
            pos = next;
        } else {
            pos = resume;
        }
    }
    return count;
}

static bool add_pair(moire_parameters *out, const char *key, size_t key_len, const char *value,
                     size_t value_len)
{
    while (key_len > 0 && key[key_len - 1] == ' ')
        key_len--;
    while (value_len > 0 && is_py_space(value[value_len - 1]))
        value_len--;
    char **keys = realloc(out->keys, (size_t)(out->pair_count + 1) * sizeof *keys);
    if (keys)
        out->keys = keys;
    char **values = realloc(out->values, (size_t)(out->pair_count + 1) * sizeof *values);
    if (values)
        out->values = values;
    if (!keys || !values)
        return false;
    char *k = dup_range(key, key_len);
    char *v = NULL;
    if (value_len >= 2 && value[0] == '"' && value[value_len - 1] == '"')
        v = json_unquote(value, value_len);
    if (!v)
        v = dup_range(value, value_len);
    if (!k || !v) {
        free(k);
        free(v);
        return false;
    }
    out->keys[out->pair_count] = k;
    out->values[out->pair_count] = v;
    out->pair_count++;
    return true;
}

static char *dup_string(const char *s)
{
    return dup_range(s, strlen(s));
}

static bool parse_int64(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static void interpret_pair(moire_parameters *out, const char *key, const char *value,
                           bool *oom)
{
    long long n;
    char *end;
    char **slot = NULL;
    if (strcmp(key, "Steps") == 0 && parse_int64(value, 1, 1000000, &n)) {
        out->steps = (int)n;
    } else if (strcmp(key, "CFG scale") == 0) {
        float v = strtof(value, &end);
        if (end != value && !*end)
            out->cfg_scale = v;
    } else if (strcmp(key, "Denoising strength") == 0) {
        float v = strtof(value, &end);
        if (end != value && !*end)
            out->denoising_strength = v;
    } else if (strcmp(key, "Seed") == 0) {
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (end != value && !*end && !errno && value[0] != '-') {
            out->seed = v;
            out->has_seed = true;
        }
    } else if (strcmp(key, "Size") == 0) {
        int w = 0, h = 0, used = 0;
        if (sscanf(value, "%9dx%9d%n", &w, &h, &used) == 2 && !value[used] && w > 0 && h > 0) {
            out->width = w;
            out->height = h;
        }
    } else if (strcmp(key, "Sampler") == 0) {
        slot = &out->sampler;
    } else if (strcmp(key, "Schedule type") == 0) {
        slot = &out->schedule;
    } else if (strcmp(key, "Model") == 0) {
        slot = &out->model;
    } else if (strcmp(key, "Version") == 0) {
        slot = &out->version;
    }
    if (slot && !*slot) {
        *slot = dup_string(value);
        if (!*slot)
            *oom = true;
    }
}

/* Appends line [s, s+n) stripped to `sb`, separated by '\n' from what is there. */
static void append_line(strbuf *sb, const char *s, size_t n)
{
    while (n > 0 && is_py_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_py_space(s[n - 1]))
        n--;
    if (sb->length > 0)
        sb_append(sb, "\n");
    sb_append_n(sb, s, n);
}

moire_status moire_parse_parameters(const char *text, moire_parameters *out)
{
    if (!out)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_parse_parameters: no output");
    *out = moire_parameters_init();
    if (!text)
        return error_fail(MOIRE_ERROR_FORMAT, "no parameters text");

    const char *begin = text, *end = text + strlen(text);
    while (begin < end && is_py_space(*begin))
        begin++;
    while (end > begin && is_py_space(end[-1]))
        end--;

    /* The last line is the parameter line if the pattern matches it at least 3 times. */
    const char *last = end;
    while (last > begin && last[-1] != '\n')
        last--;
    const char *lines_end = end;
    if (count_params(last, end) >= 3)
        lines_end = last > begin ? last - 1 : begin;
    else
        last = NULL;

    strbuf prompt = {0}, negative = {0};
    bool in_negative = false;
    for (const char *line = begin; line < lines_end;) {
        const char *eol = memchr(line, '\n', (size_t)(lines_end - line));
        if (!eol)
            eol = lines_end;
        const char *s = line;
        while (s < eol && is_py_space(*s))
            s++;
        static const char marker[] = "Negative prompt:";
        if ((size_t)(eol - s) >= sizeof marker - 1 && memcmp(s, marker, sizeof marker - 1) == 0) {
            in_negative = true;
            s += sizeof marker - 1;
        }
        append_line(in_negative ? &negative : &prompt, s, (size_t)(eol - s));
        line = eol + 1;
    }
    out->prompt = sb_finish(&prompt);
    out->negative_prompt = sb_finish(&negative);
    bool oom = !out->prompt || !out->negative_prompt;

    if (last && !oom) {
        const char *pos = last;
        param_scan scan = {0};
        while (pos < end && !oom) {
            const char *key, *value, *resume;
            size_t key_len, value_len;
            const char *next = match_param(&scan, pos, end, &key, &key_len, &value,
                                           &value_len, &resume);
            if (!next) {
                pos = resume;
                continue;
            }
            pos = next;
            if (!add_pair(out, key, key_len, value, value_len)) {
                oom = true;
                break;
            }
            interpret_pair(out, out->keys[out->pair_count - 1],
                           out->values[out->pair_count - 1], &oom);
        }
    }
    if (oom) {
        moire_parameters_clear(out);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory parsing parameters");
    }
    return MOIRE_OK;
}

/* ------------------------------------------------------------------------------------------
 * From a model and moire_generate_params
 * ---------------------------------------------------------------------------------------- */

typedef struct resolved {
    moire_resolved_params params; /* every default resolved, as the generation used them */
    uint64_t seed;                /* of this image: seed + image_index                    */
} resolved;

/* The settings a run used, by the one rule the generation itself applies
 * (generate_resolve_params); fails only for parameters no generation would have accepted. */
static bool resolve(const moire_model *model, const moire_generate_params *params,
                    int image_index, resolved *r)
{
    if (generate_resolve_params(model, params, &r->params) != MOIRE_OK)
        return false;
    r->seed = params->seed + (uint64_t)(image_index > 0 ? image_index : 0);
    return true;
}

/* The prompt line: the prompt as given, else the class's name (or "class N"). */
static const char *prompt_text(const moire_model *model, const moire_generate_params *params,
                               char *buffer, size_t size)
{
    if (params->prompt && params->prompt[0])
        return params->prompt;
    if (params->class_id >= 0) {
        const char *name = moire_model_class_name(model, params->class_id);
        if (name)
            return name;
        snprintf(buffer, size, "class %d", params->class_id);
        return buffer;
    }
    return "";
}

char *moire_format_parameters(const moire_model *model, const moire_generate_params *params,
                              int image_index)
{
    if (!model || !params)
        return NULL;
    resolved r;
    if (!resolve(model, params, image_index, &r))
        return NULL;
    char class_buffer[32];
    const char *name = moire_model_name(model);
    char *model_stem = dup_string(name ? name : "");
    if (!model_stem)
        return NULL;
    char *dot = strrchr(model_stem, '.');
    if (dot && dot != model_stem)
        *dot = '\0';

    moire_parameters p = moire_parameters_init();
    p.prompt = (char *)prompt_text(model, params, class_buffer, sizeof class_buffer);
    p.negative_prompt = (char *)params->negative_prompt;
    p.steps = r.params.steps;
    p.sampler = (char *)moire_sampler_label(r.params.sampler);
    p.schedule = (char *)moire_schedule_label(r.params.schedule);
    p.cfg_scale = r.params.cfg_scale;
    p.has_seed = true;
    p.seed = r.seed;
    p.width = r.params.width;
    p.height = r.params.height;
    p.model = model_stem[0] ? model_stem : NULL;
    if (params->init_image)
        p.denoising_strength = params->strength;
    char dmcmc_text[128], nfe_text[16];
    if (r.params.sampler == MOIRE_SAMPLER_DMCMC) {
        moire_dmcmc_params d = params->dmcmc ? *params->dmcmc : moire_dmcmc_params_default();
        /* The level estimate changes the images: record the one the chains used. */
        snprintf(dmcmc_text, sizeof dmcmc_text, "eta %g, skip %d, %s %d steps%s, levels %s",
                 (double)d.eta, d.skip, moire_dmcmc_integrator_name(d.integrator),
                 d.integrator_steps, d.tweedie ? ", Tweedie" : "",
                 moire_dmcmc_level_name(generate_resolve_dmcmc_level(model, &d, &r.params)));
        snprintf(nfe_text, sizeof nfe_text, "%d", moire_dmcmc_nfe_per_sample(&d));
        p.steps = d.integrator_steps;
        p.extra_keys[0] = "DMCMC";
        p.extra_values[0] = dmcmc_text;
        p.extra_keys[1] = "NFE";
        p.extra_values[1] = nfe_text;
        p.extra_count = 2;
    }
    p.version = (char *)"Moir\xc3\xa9 " MOIRE_VERSION_STRING;
    char *text = moire_parameters_format(&p);
    free(model_stem);
    return text;
}

/* Resolves a class prompt without disturbing the caller's last error message. */
static int resolve_class_quietly(const moire_model *model, const char *prompt)
{
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", moire_last_error());
    int class_id = -1;
    if (moire_model_resolve_class(model, prompt, &class_id) != MOIRE_OK)
        class_id = -1;
    if (saved[0])
        error_fail(MOIRE_OK, "%s", saved);
    else
        error_clear();
    return class_id;
}

char *moire_format_settings_json(const moire_model *model, const moire_generate_params *params,
                                 int image_index)
{
    if (!model || !params)
        return NULL;
    resolved r;
    if (!resolve(model, params, image_index, &r))
        return NULL;
    strbuf sb = {0};

    int class_id = params->class_id;
    if (class_id < 0 && params->prompt && params->prompt[0])
        class_id = resolve_class_quietly(model, params->prompt);
    int negative_class_id = -1;
    bool has_negative = params->negative_prompt && params->negative_prompt[0];
    if (has_negative)
        negative_class_id = resolve_class_quietly(model, params->negative_prompt);

    sb_append(&sb, "{\"moire_version\": ");
    sb_json_string(&sb, MOIRE_VERSION_STRING);
    sb_append(&sb, ", \"model\": ");
    sb_json_string(&sb, moire_model_name(model) ? moire_model_name(model) : "");
    sb_append(&sb, ", \"prompt\": ");
    sb_json_string(&sb, params->prompt ? params->prompt : "");
    sb_printf(&sb, ", \"class_id\": %d", class_id);
    const char *class_name = class_id >= 0 ? moire_model_class_name(model, class_id) : NULL;
    if (class_name) {
        sb_append(&sb, ", \"class_name\": ");
        sb_json_string(&sb, class_name);
    }
    sb_append(&sb, ", \"negative_prompt\": ");
    sb_json_string(&sb, has_negative ? params->negative_prompt : "");
    if (has_negative)
        sb_printf(&sb, ", \"negative_class_id\": %d", negative_class_id);
    sb_printf(&sb, ", \"seed\": %llu", (unsigned long long)r.seed);
    sb_printf(&sb, ", \"steps\": %d", r.params.steps);
    sb_append(&sb, ", \"cfg_scale\": ");
    sb_json_float(&sb, r.params.cfg_scale);
    sb_printf(&sb, ", \"cfg_mode\": \"%s\"",
              r.params.cfg_mode == MOIRE_CFG_FIRST_THREE ? "first3" : "all");
    sb_append(&sb, ", \"sampler\": ");
    sb_json_string(&sb, moire_sampler_name(r.params.sampler));
    sb_append(&sb, ", \"schedule\": ");
    sb_json_string(&sb, moire_schedule_name(r.params.schedule));
    sb_append(&sb, ", \"eta\": ");
    sb_json_float(&sb, params->eta);
    sb_printf(&sb, ", \"width\": %d, \"height\": %d", r.params.width, r.params.height);
    sb_printf(&sb, ", \"init_image\": %s", params->init_image ? "true" : "false");
    if (params->init_image) {
        sb_append(&sb, ", \"strength\": ");
        sb_json_float(&sb, params->strength);
    }
    sb_printf(&sb, ", \"mask\": %s", params->mask ? "true" : "false");
    if (r.params.sampler == MOIRE_SAMPLER_DMCMC) {
        moire_dmcmc_params d = params->dmcmc ? *params->dmcmc : moire_dmcmc_params_default();
        sb_append(&sb, ", \"dmcmc\": {\"eta\": ");
        sb_json_float(&sb, d.eta);
        sb_printf(&sb, ", \"skip\": %d, \"integrator\": \"%s\", \"integrator_steps\": %d, "
                       "\"tweedie\": %s, \"tweedie_sigma\": ",
                  d.skip, moire_dmcmc_integrator_name(d.integrator), d.integrator_steps,
                  d.tweedie ? "true" : "false");
        sb_json_float(&sb, d.tweedie_sigma);
        sb_printf(&sb, ", \"burn_in_steps\": %d, \"burn_in\": %d, \"sigma_init\": ",
                  d.burn_in_steps, d.burn_in);
        sb_json_float(&sb, d.sigma_init);
        sb_printf(&sb, ", \"level\": \"%s\", \"nfe_per_image\": %d}",
                  moire_dmcmc_level_name(generate_resolve_dmcmc_level(model, &d, &r.params)),
                  moire_dmcmc_nfe_per_sample(&d));
    }
    sb_append(&sb, "}");
    return sb_finish(&sb);
}
