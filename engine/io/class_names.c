/* class_names.c — loads the ImageNet class-name list (see class_names.h). */
#include "class_names.h"

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MOIRE_DATADIR
#define MOIRE_DATADIR ""
#endif
#ifndef MOIRE_SOURCE_DATADIR
#define MOIRE_SOURCE_DATADIR ""
#endif

#define CLASS_NAMES_MAX_BYTES (4u << 20)

static void free_names(char **names, int count)
{
    if (!names)
        return;
    for (int i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

/* Reads `path`; NULL unless it holds exactly `count` non-empty lines. */
static char **read_names(const char *path, int count)
{
    FILE *stream = fopen(path, "r");
    if (!stream)
        return NULL;
    char **names = calloc_array((size_t)count, sizeof(char *));
    char *line = NULL;
    size_t capacity = 0, total = 0;
    ssize_t length;
    int lines = 0;
    bool ok = names != NULL;
    while (ok && (length = getline(&line, &capacity, stream)) >= 0) {
        total += (size_t)length;
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r' ||
                              line[length - 1] == ' ' || line[length - 1] == '\t'))
            line[--length] = '\0';
        if (length == 0 && lines == count)
            continue; /* blank lines after the last class */
        if (length == 0 || lines >= count || total > CLASS_NAMES_MAX_BYTES ||
            memchr(line, '\0', (size_t)length)) {
            ok = false;
            break;
        }
        names[lines] = strdup(line);
        ok = names[lines++] != NULL;
    }
    free(line);
    fclose(stream);
    if (!ok || lines != count) {
        free_names(names, count);
        return NULL;
    }
    return names;
}

char **class_names_load_imagenet(int count)
{
    const char *dirs[MOIRE_DATA_DIRS_MAX];
    int n = moire_data_dirs(dirs);
    for (int i = 0; i < n; i++) {
        size_t size = strlen(dirs[i]) + sizeof CLASS_NAMES_IMAGENET_FILE + 2;
        char *path = malloc(size);
        if (!path)
            return NULL;
        snprintf(path, size, "%s/%s", dirs[i], CLASS_NAMES_IMAGENET_FILE);
        char **names = read_names(path, count);
        free(path);
        if (names)
            return names;
    }
    return NULL;
}

void class_names_describe_search(char *buffer, size_t size)
{
    const char *dirs[MOIRE_DATA_DIRS_MAX];
    int n = moire_data_dirs(dirs);
    size_t used = (size_t)snprintf(buffer, size, "no readable %s with %d class names was found "
                                   "in", CLASS_NAMES_IMAGENET_FILE, CLASS_NAMES_IMAGENET_COUNT);
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buffer + used, size - used, "%s %s", i ? "," : "", dirs[i]);
    if (used < size)
        snprintf(buffer + used, size - used, " (set MOIRE_DATA_DIR to the folder holding it)");
}
