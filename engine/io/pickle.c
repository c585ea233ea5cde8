/* pickle.c — the restricted pickle interpreter (see pickle.h).
 *
 * The machine mirrors CPython's _Unpickler: a stack, a mark stack (MARK starts a new frame
 * that later opcodes may not pop below), a memo indexed by BINPUT/BINGET. Objects live in a
 * private arena (freed in one go, so memo sharing and self-referencing lists need no
 * reference counting) and are plain data: "calling" an allowed global only builds one of
 * these objects, and a global that is not allowed stops the load before anything else
 * happens. Every read is checked against the end of the input; every count against a cap.
 */
#include "pickle.h"
#include "pickle_machine.h"

#include "internal.h"

#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PK_CONVERT_HINT                                                                    \
    "If you trust where the file came from, convert it to safetensors in a trusted Python "   \
    "(docs/CHECKPOINTS.md, \"Files Moiré refuses\")"

/* ------------------------------------------------------------------------------------------
 * Storage types
 * ---------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} storage_table[PK_STORAGE_TYPE_COUNT_] = {
    [PK_STORAGE_FLOAT] = {"FloatStorage", 4},     [PK_STORAGE_HALF] = {"HalfStorage", 2},
    [PK_STORAGE_BFLOAT16] = {"BFloat16Storage", 2}, [PK_STORAGE_DOUBLE] = {"DoubleStorage", 8},
    [PK_STORAGE_LONG] = {"LongStorage", 8},       [PK_STORAGE_INT] = {"IntStorage", 4},
    [PK_STORAGE_SHORT] = {"ShortStorage", 2},     [PK_STORAGE_CHAR] = {"CharStorage", 1},
    [PK_STORAGE_BYTE] = {"ByteStorage", 1},       [PK_STORAGE_BOOL] = {"BoolStorage", 1},
};

size_t pk_storage_element_size(pk_storage_type type)
{
    return (int)type >= 0 && type < PK_STORAGE_TYPE_COUNT_ ? storage_table[type].size : 0;
}

const char *pk_storage_type_name(pk_storage_type type)
{
    return (int)type >= 0 && type < PK_STORAGE_TYPE_COUNT_ ? storage_table[type].name : "?";
}

/* ------------------------------------------------------------------------------------------
 * The allow-list
 * ---------------------------------------------------------------------------------------- */

typedef enum pk_global {
    G_ORDERED_DICT,       /* collections.OrderedDict: the state_dict container            */
    G_REBUILD_TENSOR_V2,  /* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …) */
    G_REBUILD_TENSOR,     /* torch._utils._rebuild_tensor(storage, offset, size, stride)   */
    G_REBUILD_PARAMETER,  /* torch._utils._rebuild_parameter(tensor, requires_grad, hooks) */
    G_NAMESPACE,          /* argparse.Namespace: the "args" entry of training checkpoints  */
    G_STORAGE,            /* torch.<Type>Storage: only as the type in a persistent id      */
} pk_global;

static const struct {
    const char *module, *name;
    pk_global kind;
    pk_storage_type storage;
} allow_list[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, 0},
    {"torch._utils", "_rebuild_tensor", G_REBUILD_TENSOR, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAMETER, 0},
    {"argparse", "Namespace", G_NAMESPACE, 0},
    {"torch", "FloatStorage", G_STORAGE, PK_STORAGE_FLOAT},
    {"torch", "HalfStorage", G_STORAGE, PK_STORAGE_HALF},
    {"torch", "BFloat16Storage", G_STORAGE, PK_STORAGE_BFLOAT16},
    {"torch", "DoubleStorage", G_STORAGE, PK_STORAGE_DOUBLE},
    {"torch", "LongStorage", G_STORAGE, PK_STORAGE_LONG},
    {"torch", "IntStorage", G_STORAGE, PK_STORAGE_INT},
    {"torch", "ShortStorage", G_STORAGE, PK_STORAGE_SHORT},
    {"torch", "CharStorage", G_STORAGE, PK_STORAGE_CHAR},
    {"torch", "ByteStorage", G_STORAGE, PK_STORAGE_BYTE},
    {"torch", "BoolStorage", G_STORAGE, PK_STORAGE_BOOL},
};
#define ALLOW_COUNT ((int)(sizeof allow_list / sizeof allow_list[0]))

moire_status pk_out_of_memory(const machine *m)
{
    return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory reading the pickle",
                      m->path);
}

static bool grow_array(void **array, size_t *capacity, size_t needed, size_t element_size)
{
    if (needed <= *capacity)
        return true;
    size_t new_capacity = *capacity ? *capacity : 16;
    while (new_capacity < needed)
        new_capacity *= 2;
    void *grown = realloc(*array, new_capacity * element_size);
    if (!grown)
        return false;
    *array = grown;
    *capacity = new_capacity;
    return true;
}

static pk_obj *new_obj(machine *m, pk_kind kind)
{
    if (m->object_count >= m->max_objects)
        return NULL;
    if (!grow_array((void **)&m->objects, &m->object_capacity, m->object_count + 1,
                    sizeof(pk_obj *)))
        return NULL;
    pk_obj *obj = calloc(1, sizeof *obj);
    if (!obj)
        return NULL;
    obj->kind = kind;
    m->objects[m->object_count++] = obj;
    return obj;
}

static void free_obj(pk_obj *obj)
{
    if (obj->kind == K_TUPLE || obj->kind == K_LIST)
        free(obj->u.seq.items);
    else if (obj->kind == K_DICT) {
        free(obj->u.dict.keys);
        free(obj->u.dict.values);
    }
    free(obj);
}

void pk_machine_free(machine *m)
{
    for (size_t i = 0; i < m->object_count; i++)
        free_obj(m->objects[i]);
    free(m->objects);
    free(m->stack);
    free(m->marks);
    free(m->memo);
}

/* A printable rendering of file-supplied text for messages (non-ASCII bytes become '?'). */
void pk_printable(char *out, size_t out_size, const char *text, size_t length)
{
    size_t n = 0;
    for (size_t i = 0; i < length && n + 4 < out_size; i++) {
        unsigned char c = (unsigned char)text[i];
        out[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (length > n && n + 4 >= out_size) {
        out[n++] = '.';
        out[n++] = '.';
        out[n++] = '.';
    }
    out[n] = '\0';
}

const char *pk_kind_name(pk_kind kind)
{
    static const char *const names[] = {"None",  "bool", "int",    "float",  "str",
                                        "tuple", "list", "dict",   "global", "storage",
                                        "tensor", "object"};
    return names[kind];
}

/* ------------------------------------------------------------------------------------------
 * Stack helpers
 * ---------------------------------------------------------------------------------------- */

static size_t frame_base(const machine *m)
{
    return m->mark_count ? m->marks[m->mark_count - 1] : 0;
}

static moire_status corrupt(const machine *m, size_t at, const char *what)
{
    return error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle (data.pkl) is corrupt at byte %zu: "
                      "%s; the file is damaged or not a PyTorch checkpoint: download it again",
                      m->path, at, what);
}

static moire_status push(machine *m, pk_obj *obj)
{
    if (!obj)
        return m->object_count >= m->max_objects
                   ? error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle creates more than %zu "
                                "objects, more than a file of this size can hold (a "
                                "state_dict needs about one per 16 bytes of the file); "
                                "refusing it", m->path, m->max_objects)
                   : pk_out_of_memory(m);
    if (m->stack_count >= PK_MAX_STACK)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle stack grows past %d entries; "
                          "refusing it (a state_dict needs far fewer)", m->path, PK_MAX_STACK);
    if (!grow_array((void **)&m->stack, &m->stack_capacity, m->stack_count + 1,
                    sizeof(pk_obj *)))
        return pk_out_of_memory(m);
    m->stack[m->stack_count++] = obj;
    return MOIRE_OK;
}

/* Pops one object of the current frame, or NULL (and a message) when the frame is empty. */
static pk_obj *pop(machine *m, size_t at)
{
    if (m->stack_count <= frame_base(m)) {
        corrupt(m, at, "an opcode pops from an empty stack");
        return NULL;
    }
    return m->stack[--m->stack_count];
}

static pk_obj *top(machine *m, size_t at)
{
    if (m->stack_count <= frame_base(m)) {
        corrupt(m, at, "an opcode reads an empty stack");
        return NULL;
    }
    return m->stack[m->stack_count - 1];
}

/* Ends the current frame: *items = its objects (still on the stack array), *count. */
static moire_status pop_mark(machine *m, size_t at, pk_obj ***items, size_t *count)
{
    if (m->mark_count == 0)
        return corrupt(m, at, "an opcode needs a MARK that is not there");
    size_t base = m->marks[--m->mark_count];
    *items = m->stack ? m->stack + base : NULL; /* MARK before anything was ever pushed */
    *count = m->stack_count - base;
    m->stack_count = base;
    return MOIRE_OK;
}

static pk_obj *new_seq(machine *m, pk_kind kind, pk_obj **items, size_t count)
{
    pk_obj *obj = new_obj(m, kind);
    if (!obj)
        return NULL;
    if (count > 0) {
        obj->u.seq.items = malloc_array(count, sizeof(pk_obj *));
        if (!obj->u.seq.items)
            return NULL;
        memcpy(obj->u.seq.items, items, count * sizeof(pk_obj *));
    }
    obj->u.seq.count = obj->u.seq.capacity = count;
    return obj;
}

static bool list_append(pk_obj *list, pk_obj *item)
{
    if (!grow_array((void **)&list->u.seq.items, &list->u.seq.capacity, list->u.seq.count + 1,
                    sizeof(pk_obj *)))
        return false;
    list->u.seq.items[list->u.seq.count++] = item;
    return true;
}

static bool dict_set(pk_obj *dict, pk_obj *key, pk_obj *value)
{
    size_t capacity = dict->u.dict.capacity;
    if (!grow_array((void **)&dict->u.dict.keys, &capacity, dict->u.dict.count + 1,
                    sizeof(pk_obj *)))
        return false;
    capacity = dict->u.dict.capacity;
    if (!grow_array((void **)&dict->u.dict.values, &capacity, dict->u.dict.count + 1,
                    sizeof(pk_obj *)))
        return false;
    dict->u.dict.capacity = capacity;
    dict->u.dict.keys[dict->u.dict.count] = key;
    dict->u.dict.values[dict->u.dict.count++] = value;
    return true;
}

bool pk_string_is(const pk_obj *obj, const char *text)
{
    return obj && obj->kind == K_STRING && obj->u.string.length == strlen(text) &&
           memcmp(obj->u.string.bytes, text, obj->u.string.length) == 0;
}

/* ------------------------------------------------------------------------------------------
 * Globals, persistent ids, tensors
 * ---------------------------------------------------------------------------------------- */

static moire_status resolve_global(machine *m, const char *module, size_t module_length,
                                   const char *name, size_t name_length)
{
    for (int i = 0; i < ALLOW_COUNT; i++) {
        if (strlen(allow_list[i].module) == module_length &&
            strlen(allow_list[i].name) == name_length &&
            memcmp(allow_list[i].module, module, module_length) == 0 &&
            memcmp(allow_list[i].name, name, name_length) == 0) {
            pk_obj *obj = new_obj(m, K_GLOBAL);
            if (obj)
                obj->u.global = i;
            return push(m, obj);
        }
    }
    char module_text[96], name_text[96];
    pk_printable(module_text, sizeof module_text, module, module_length);
    pk_printable(name_text, sizeof name_text, name, name_length);
    return error_fail(MOIRE_ERROR_UNSUPPORTED,
                      "%s: the checkpoint calls %s.%s, which a state_dict never needs; "
                      "refusing to load it (nothing in the file was run). Moiré reads only "
                      "tensors and plain containers from a .pt file. " PK_CONVERT_HINT,
                      m->path, module_text, name_text);
}

static bool get_int(const pk_obj *obj, int64_t *out)
{
    if (!obj || (obj->kind != K_INT && obj->kind != K_BOOL))
        return false;
    *out = obj->kind == K_INT ? obj->u.integer : obj->u.boolean;
    return true;
}

/* ('storage', torch.<Type>Storage, key, location, numel) → a storage object. */
static moire_status persistent_load(machine *m, size_t at, pk_obj *pid)
{
    if (pid->kind != K_TUPLE || pid->u.seq.count != 5 ||
        !pk_string_is(pid->u.seq.items[0], "storage"))
        return corrupt(m, at, "a persistent id is not ('storage', type, key, location, "
                       "numel)");
    pk_obj **items = pid->u.seq.items;
    if (items[1]->kind != K_GLOBAL || allow_list[items[1]->u.global].kind != G_STORAGE)
        return corrupt(m, at, "a persistent id's storage type is not a torch storage class");
    if (items[2]->kind != K_STRING || items[2]->u.string.length == 0 ||
        items[2]->u.string.length >= sizeof(((pk_obj *)0)->u.storage.key) ||
        memchr(items[2]->u.string.bytes, '\0', items[2]->u.string.length) ||
        memchr(items[2]->u.string.bytes, '/', items[2]->u.string.length))
        return corrupt(m, at, "a storage key is not a short name");
    if (items[3]->kind != K_STRING)
        return corrupt(m, at, "a storage location is not a string");
    int64_t numel;
    if (!get_int(items[4], &numel) || numel < 0)
        return corrupt(m, at, "a storage size is not a non-negative integer");
    pk_obj *storage = new_obj(m, K_STORAGE);
    if (!storage)
        return push(m, NULL);
    storage->u.storage.type = allow_list[items[1]->u.global].storage;
    memcpy(storage->u.storage.key, items[2]->u.string.bytes, items[2]->u.string.length);
    storage->u.storage.key[items[2]->u.string.length] = '\0';
    size_t element_size = pk_storage_element_size(storage->u.storage.type);
    const uint8_t *data = NULL;
    size_t size = 0;
    moire_status status = m->storage_fn(m->user_data, storage->u.storage.key, &data, &size);
    if (status != MOIRE_OK)
        return status;
    if ((uint64_t)numel > size / element_size)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: storage '%s' declares %lld elements of %zu "
                          "bytes but holds %zu bytes: past the end of its data; the file is "
                          "truncated or hostile: download it again", m->path,
                          storage->u.storage.key, (long long)numel, element_size, size);
    storage->u.storage.data = data;
    storage->u.storage.nbytes = (size_t)numel * element_size;
    return push(m, storage);
}

static bool int_tuple(const pk_obj *obj, int64_t *values, int *count)
{
    if (!obj || obj->kind != K_TUPLE || obj->u.seq.count > ST_MAX_DIMS)
        return false;
    for (size_t i = 0; i < obj->u.seq.count; i++)
        if (!get_int(obj->u.seq.items[i], &values[i]))
            return false;
    *count = (int)obj->u.seq.count;
    return true;
}

/* _rebuild_tensor(_v2)(storage, storage_offset, size, stride, …) */
static moire_status rebuild_tensor(machine *m, size_t at, const pk_obj *args)
{
    if (args->u.seq.count < 4)
        return corrupt(m, at, "_rebuild_tensor gets fewer than 4 arguments");
    const pk_obj *storage = args->u.seq.items[0];
    int64_t offset, shape[ST_MAX_DIMS], stride[ST_MAX_DIMS];
    int ndim, stride_count;
    if (storage->kind != K_STORAGE)
        return corrupt(m, at, "_rebuild_tensor's first argument is not a storage");
    if (!get_int(args->u.seq.items[1], &offset) || offset < 0)
        return corrupt(m, at, "a tensor's storage offset is not a non-negative integer");
    if (!int_tuple(args->u.seq.items[2], shape, &ndim) ||
        !int_tuple(args->u.seq.items[3], stride, &stride_count) || stride_count != ndim)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: a tensor in storage '%s' has a size or "
                          "stride that is not a tuple of at most %d integers; the file is "
                          "corrupt or not supported", m->path, storage->u.storage.key,
                          ST_MAX_DIMS);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] != 0 && numel > (INT64_MAX / 8) / shape[d]))
            return error_fail(MOIRE_ERROR_FORMAT, "%s: a tensor in storage '%s' declares an "
                              "impossible size (dimension %d is %lld); the file is corrupt or "
                              "hostile", m->path, storage->u.storage.key, d,
                              (long long)shape[d]);
        numel *= shape[d];
    }
    size_t element_size = pk_storage_element_size(storage->u.storage.type);
    uint64_t capacity = storage->u.storage.nbytes / element_size;
    if (numel > 0 && ((uint64_t)offset > capacity || (uint64_t)numel > capacity - (uint64_t)offset))
        return error_fail(MOIRE_ERROR_FORMAT, "%s: a tensor of %lld elements at offset %lld "
                          "reaches past the end of its storage '%s' (%llu elements); the file "
                          "is truncated or hostile: download it again", m->path,
                          (long long)numel, (long long)offset, storage->u.storage.key,
                          (unsigned long long)capacity);
    bool contiguous = true;
    int64_t expected = 1;
    for (int d = ndim - 1; d >= 0 && numel > 0; d--) {
        if (shape[d] != 1 && stride[d] != expected)
            contiguous = false;
        expected *= shape[d];
    }
    pk_obj *tensor = new_obj(m, K_TENSOR);
    if (tensor) {
        tensor->u.tensor.storage = storage;
        tensor->u.tensor.offset = offset;
        tensor->u.tensor.numel = numel;
        tensor->u.tensor.ndim = ndim;
        memcpy(tensor->u.tensor.shape, shape, sizeof shape);
        tensor->u.tensor.contiguous = contiguous;
    }
    return push(m, tensor);
}

/* REDUCE / NEWOBJ: "calls" an allowed global, which only builds data. */
static moire_status call_global(machine *m, size_t at, const pk_obj *callable,
                                const pk_obj *args, bool newobj)
{
    if (callable->kind != K_GLOBAL) {
        char what[64];
        snprintf(what, sizeof what, "%s calls a %s, not a class or function",
                 newobj ? "NEWOBJ" : "REDUCE", pk_kind_name(callable->kind));
        return corrupt(m, at, what);
    }
    if (args->kind != K_TUPLE)
        return corrupt(m, at, "call arguments are not a tuple");
    int index = callable->u.global;
    switch (allow_list[index].kind) {
    case G_ORDERED_DICT:
        if (args->u.seq.count != 0)
            return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: OrderedDict is built with "
                              "arguments; only the empty form torch.save writes is supported",
                              m->path);
        return push(m, new_obj(m, K_DICT));
    case G_NAMESPACE:
        return push(m, new_obj(m, K_OBJECT));
    case G_REBUILD_TENSOR_V2:
    case G_REBUILD_TENSOR:
        if (newobj)
            break;
        return rebuild_tensor(m, at, args);
    case G_REBUILD_PARAMETER:
        if (newobj)
            break;
        if (args->u.seq.count < 1 || args->u.seq.items[0]->kind != K_TENSOR)
            return corrupt(m, at, "_rebuild_parameter's first argument is not a tensor");
        return push(m, args->u.seq.items[0]);
    case G_STORAGE:
        break;
    }
    return error_fail(MOIRE_ERROR_UNSUPPORTED,
                      "%s: the checkpoint calls %s.%s in a way a state_dict never does "
                      "(%s); refusing to load it (nothing in the file was run). " PK_CONVERT_HINT,
                      m->path, allow_list[index].module, allow_list[index].name,
                      newobj ? "NEWOBJ" : "REDUCE");
}

/* ------------------------------------------------------------------------------------------
 * The interpreter loop
 * ---------------------------------------------------------------------------------------- */

static bool need(const machine *m, size_t count)
{
    return m->size - m->pos >= count;
}

static uint64_t read_le(const uint8_t *p, int count)
{
    uint64_t value = 0;
    for (int i = count - 1; i >= 0; i--)
        value = (value << 8) | p[i];
    return value;
}

static moire_status memo_put(machine *m, size_t at, uint64_t index)
{
    pk_obj *obj = top(m, at);
    if (!obj)
        return MOIRE_ERROR_FORMAT;
    if (index >= PK_MAX_MEMO)
        return error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle memo index %llu is over the "
                          "%d limit; refusing it", m->path, (unsigned long long)index,
                          PK_MAX_MEMO);
    size_t old_capacity = m->memo_capacity;
    if (!grow_array((void **)&m->memo, &m->memo_capacity, (size_t)index + 1, sizeof(pk_obj *)))
        return pk_out_of_memory(m);
    if (m->memo_capacity > old_capacity)
        memset(m->memo + old_capacity, 0, (m->memo_capacity - old_capacity) * sizeof(pk_obj *));
    if (!m->memo[index])
        m->memo_used++;
    m->memo[index] = obj;
    return MOIRE_OK;
}

static moire_status memo_get(machine *m, size_t at, uint64_t index)
{
    if (index >= m->memo_capacity || !m->memo[index])
        return corrupt(m, at, "BINGET of a memo entry that was never stored");
    return push(m, m->memo[index]);
}

/* Pushes a str/bytes of `length` bytes at the current position. */
static moire_status push_string(machine *m, size_t at, uint64_t length)
{
    if (!need(m, length))
        return corrupt(m, at, "a string runs past the end of the pickle");
    pk_obj *obj = new_obj(m, K_STRING);
    if (obj) {
        obj->u.string.bytes = (const char *)m->in + m->pos;
        obj->u.string.length = (size_t)length;
    }
    m->pos += (size_t)length;
    return push(m, obj);
}

static moire_status push_int(machine *m, int64_t value)
{
    pk_obj *obj = new_obj(m, K_INT);
    if (obj)
        obj->u.integer = value;
    return push(m, obj);
}

/* GLOBAL's argument: "module\nname\n". */
static moire_status read_line(machine *m, size_t at, const char **text, size_t *length)
{
    size_t room = m->size - m->pos;
    if (room > 256)
        room = 256;
    const uint8_t *end = memchr(m->in + m->pos, '\n', room);
    if (!end)
        return corrupt(m, at, "a GLOBAL name is not a short newline-terminated line");
    *text = (const char *)m->in + m->pos;
    *length = (size_t)(end - (m->in + m->pos));
    m->pos += *length + 1;
    return MOIRE_OK;
}

moire_status pk_machine_run(machine *m, pk_obj **result)
{
    moire_status status = MOIRE_OK;
    while (status == MOIRE_OK) {
        size_t at = m->pos;
        if (!need(m, 1))
            return error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle (data.pkl) ends without a "
                              "STOP opcode; the file is truncated: download it again", m->path);
        uint8_t op = m->in[m->pos++];
        pk_obj *a, *b, *c, **items;
        size_t count;
        switch (op) {
        case 0x80: /* PROTO */
            if (!need(m, 1) || m->in[m->pos] > 5)
                return corrupt(m, at, "unsupported pickle protocol");
            m->pos++;
            break;
        case 0x95: /* FRAME: a length hint */
            if (!need(m, 8))
                return corrupt(m, at, "truncated FRAME");
            m->pos += 8;
            break;
        case '.': /* STOP */
            if (!(*result = pop(m, at)))
                return MOIRE_ERROR_FORMAT;
            return MOIRE_OK;
        case '(': /* MARK */
            if (m->mark_count >= PK_MAX_MARKS)
                return error_fail(MOIRE_ERROR_FORMAT, "%s: the pickle nests more than %d "
                                  "MARKs; refusing it", m->path, PK_MAX_MARKS);
            if (!grow_array((void **)&m->marks, &m->mark_capacity, m->mark_count + 1,
                            sizeof(size_t)))
                return pk_out_of_memory(m);
            m->marks[m->mark_count++] = m->stack_count;
            break;
        case '}': /* EMPTY_DICT */
            status = push(m, new_obj(m, K_DICT));
            break;
        case ']': /* EMPTY_LIST */
            status = push(m, new_seq(m, K_LIST, NULL, 0));
            break;
        case ')': /* EMPTY_TUPLE */
            status = push(m, new_seq(m, K_TUPLE, NULL, 0));
            break;
        case 'N': /* NONE */
            status = push(m, new_obj(m, K_NONE));
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if ((a = new_obj(m, K_BOOL)))
                a->u.boolean = op == 0x88;
            status = push(m, a);
            break;
        case 'X':  /* BINUNICODE */
        case 'B':  /* BINBYTES */
        case 'T':  /* BINSTRING (signed length; a negative one is refused below) */
            if (!need(m, 4))
                return corrupt(m, at, "truncated string length");
            count = (size_t)read_le(m->in + m->pos, 4);
            m->pos += 4;
            if (op == 'T' && count > INT32_MAX)
                return corrupt(m, at, "negative string length");
            status = push_string(m, at, count);
            break;
        case 0x8c: /* SHORT_BINUNICODE */
        case 'C':  /* SHORT_BINBYTES */
        case 'U':  /* SHORT_BINSTRING */
            if (!need(m, 1))
                return corrupt(m, at, "truncated string length");
            count = m->in[m->pos++];
            status = push_string(m, at, count);
            break;
        case 0x8d: /* BINUNICODE8 */
        case 0x8e: /* BINBYTES8 */
            if (!need(m, 8))
                return corrupt(m, at, "truncated string length");
            {
                uint64_t length = read_le(m->in + m->pos, 8);
                m->pos += 8;
                status = push_string(m, at, length);
            }
            break;
        case 'J': /* BININT */
            if (!need(m, 4))
                return corrupt(m, at, "truncated BININT");
            status = push_int(m, (int32_t)(uint32_t)read_le(m->in + m->pos, 4));
            m->pos += 4;
            break;
        case 'K': /* BININT1 */
            if (!need(m, 1))
                return corrupt(m, at, "truncated BININT1");
            status = push_int(m, m->in[m->pos++]);
            break;
        case 'M': /* BININT2 */
            if (!need(m, 2))
                return corrupt(m, at, "truncated BININT2");
            status = push_int(m, (int64_t)read_le(m->in + m->pos, 2));
            m->pos += 2;
            break;
        case 0x8a: /* LONG1 */
        case 0x8b: /* LONG4 */
        {
            int width = op == 0x8a ? 1 : 4;
            if (!need(m, (size_t)width))
                return corrupt(m, at, "truncated LONG length");
            uint64_t length = read_le(m->in + m->pos, width);
            m->pos += (size_t)width;
            if (length > 8)
                return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: the pickle holds an integer "
                                  "of %llu bytes (at byte %zu); a state_dict never needs more "
                                  "than 64 bits", m->path, (unsigned long long)length, at);
            if (!need(m, (size_t)length))
                return corrupt(m, at, "truncated LONG");
            uint64_t value = length ? read_le(m->in + m->pos, (int)length) : 0;
            if (length > 0 && length < 8 && (m->in[m->pos + length - 1] & 0x80))
                value |= ~0ull << (8 * length); /* sign-extend */
            m->pos += (size_t)length;
            status = push_int(m, (int64_t)value);
            break;
        }
        case 'G': /* BINFLOAT, big-endian */
            if (!need(m, 8))
                return corrupt(m, at, "truncated BINFLOAT");
            {
                uint64_t bits = 0;
                for (int i = 0; i < 8; i++)
                    bits = (bits << 8) | m->in[m->pos + (size_t)i];
                m->pos += 8;
                if ((a = new_obj(m, K_FLOAT)))
                    memcpy(&a->u.integer, &bits, sizeof bits); /* kept as raw bits */
                status = push(m, a);
            }
            break;
        case 't': /* TUPLE */
            if ((status = pop_mark(m, at, &items, &count)) == MOIRE_OK)
                status = push(m, new_seq(m, K_TUPLE, items, count));
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            count = (size_t)(op - 0x84);
            if (m->stack_count - frame_base(m) < count)
                return corrupt(m, at, "TUPLEn with too few items on the stack");
            m->stack_count -= count;
            status = push(m, new_seq(m, K_TUPLE, m->stack + m->stack_count, count));
            break;
        case 'a': /* APPEND */
            if (!(b = pop(m, at)) || !(a = top(m, at)))
                return MOIRE_ERROR_FORMAT;
            if (a->kind != K_LIST)
                return corrupt(m, at, "APPEND to something that is not a list");
            if (!list_append(a, b))
                return pk_out_of_memory(m);
            break;
        case 'e': /* APPENDS */
            if ((status = pop_mark(m, at, &items, &count)) != MOIRE_OK)
                return status;
            if (!(a = top(m, at)))
                return MOIRE_ERROR_FORMAT;
            if (a->kind != K_LIST)
                return corrupt(m, at, "APPENDS to something that is not a list");
            for (size_t i = 0; i < count; i++)
                if (!list_append(a, items[i]))
                    return pk_out_of_memory(m);
            break;
        case 's': /* SETITEM */
            if (!(c = pop(m, at)) || !(b = pop(m, at)) || !(a = top(m, at)))
                return MOIRE_ERROR_FORMAT;
            if (a->kind != K_DICT)
                return corrupt(m, at, "SETITEM on something that is not a dict");
            if (!dict_set(a, b, c))
                return pk_out_of_memory(m);
            break;
        case 'u': /* SETITEMS */
            if ((status = pop_mark(m, at, &items, &count)) != MOIRE_OK)
                return status;
            if (!(a = top(m, at)))
                return MOIRE_ERROR_FORMAT;
            if (a->kind != K_DICT || count % 2 != 0)
                return corrupt(m, at, "SETITEMS on something that is not a dict, or an odd "
                               "number of items");
            for (size_t i = 0; i < count; i += 2)
                if (!dict_set(a, items[i], items[i + 1]))
                    return pk_out_of_memory(m);
            break;
        case 'c': /* GLOBAL */
        {
            const char *module, *name;
            size_t module_length, name_length;
            if ((status = read_line(m, at, &module, &module_length)) != MOIRE_OK ||
                (status = read_line(m, at, &name, &name_length)) != MOIRE_OK)
                return status;
            status = resolve_global(m, module, module_length, name, name_length);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(m, at)) || !(a = pop(m, at)))
                return MOIRE_ERROR_FORMAT;
            if (a->kind != K_STRING || b->kind != K_STRING)
                return corrupt(m, at, "STACK_GLOBAL with a module or name that is not a "
                               "string");
            status = resolve_global(m, a->u.string.bytes, a->u.string.length,
                                    b->u.string.bytes, b->u.string.length);
            break;
        case 'R': /* REDUCE */
        case 0x81: /* NEWOBJ */
            if (!(b = pop(m, at)) || !(a = pop(m, at)))
                return MOIRE_ERROR_FORMAT;
            status = call_global(m, at, a, b, op == 0x81);
            break;
        case 'b': /* BUILD: setstate; our objects are inert, so the state is dropped */
            if (!(b = pop(m, at)) || !(a = top(m, at)))
                return MOIRE_ERROR_FORMAT;
            if (a->kind != K_DICT && a->kind != K_OBJECT && a->kind != K_TENSOR &&
                a->kind != K_LIST)
                return corrupt(m, at, "BUILD on an object that takes no state");
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(m, at)))
                return MOIRE_ERROR_FORMAT;
            status = persistent_load(m, at, a);
            break;
        case 'q': /* BINPUT */
            if (!need(m, 1))
                return corrupt(m, at, "truncated BINPUT");
            status = memo_put(m, at, m->in[m->pos++]);
            break;
        case 'r': /* LONG_BINPUT */
            if (!need(m, 4))
                return corrupt(m, at, "truncated LONG_BINPUT");
            status = memo_put(m, at, read_le(m->in + m->pos, 4));
            m->pos += 4;
            break;
        case 0x94: /* MEMOIZE */
            status = memo_put(m, at, m->memo_used);
            break;
        case 'h': /* BINGET */
            if (!need(m, 1))
                return corrupt(m, at, "truncated BINGET");
            status = memo_get(m, at, m->in[m->pos++]);
            break;
        case 'j': /* LONG_BINGET */
            if (!need(m, 4))
                return corrupt(m, at, "truncated LONG_BINGET");
            status = memo_get(m, at, read_le(m->in + m->pos, 4));
            m->pos += 4;
            break;
        case '0': /* POP */
            if (m->stack_count > frame_base(m))
                m->stack_count--;
            else
                status = pop_mark(m, at, &items, &count);
            break;
        case '1': /* POP_MARK */
            status = pop_mark(m, at, &items, &count);
            break;
        case '2': /* DUP */
            if (!(a = top(m, at)))
                return MOIRE_ERROR_FORMAT;
            status = push(m, a);
            break;
        default:
            return error_fail(MOIRE_ERROR_UNSUPPORTED, "%s: the pickle uses opcode 0x%02x at "
                              "byte %zu, which torch.save does not write for a state_dict; "
                              "refusing it. " PK_CONVERT_HINT, m->path, op, at);
        }
    }
    return status;
}

