/* model_files.c — a model's files: which names are models, the default model, and the
 * companion files found beside a model (MODEL-features.safetensors, the classifier of
 * `moire eval`; MODEL-levels.safetensors, the dmcmc sampler's noise-level classifier). One
 * look-up for the CLI, the GUI, the plug-in and the loader (moire.h, "Model files"). */
#include "internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

bool moire_is_model_file_name(const char *name)
{
    return name && has_suffix(name, ".safetensors") && strlen(name) > strlen(".safetensors") &&
           !has_suffix(name, MOIRE_FEATURES_SUFFIX) && !has_suffix(name, ".ref.safetensors") &&
           !has_suffix(name, ".snapshot.safetensors") && !has_suffix(name, MOIRE_LEVELS_SUFFIX);
}

char *moire_find_model_in_dir(const char *dir)
{
    DIR *stream = dir ? opendir(dir) : NULL;
    if (!stream)
        return NULL;
    char best[1024] = "";
    struct dirent *entry;
    while ((entry = readdir(stream)) != NULL) {
        const char *name = entry->d_name;
        if (moire_is_model_file_name(name) && strlen(name) < sizeof best &&
            (!best[0] || strcmp(name, best) < 0))
            snprintf(best, sizeof best, "%s", name);
    }
    closedir(stream);
    if (!best[0])
        return NULL;
    size_t dir_length = strlen(dir);
    const char *separator = dir_length && dir[dir_length - 1] == '/' ? "" : "/";
    size_t size = dir_length + strlen(best) + 2;
    char *path = malloc(size);
    if (path)
        snprintf(path, size, "%s%s%s", dir, separator, best);
    return path;
}

char *moire_default_model_path(char *searched, size_t searched_size)
{
    const char *env = getenv("MOIRE_MODEL");
    if (env && env[0])
        return strdup(env);
    const char *dirs[MOIRE_DATA_DIRS_MAX];
    int count = moire_data_dirs(dirs);
    if (searched && searched_size)
        searched[0] = '\0';
    for (int d = 0; d < count; d++) {
        size_t size = strlen(dirs[d]) + sizeof "/models";
        char *models = malloc(size);
        if (!models)
            return NULL;
        snprintf(models, size, "%s/models", dirs[d]);
        if (searched && searched_size) {
            size_t used = strlen(searched);
            snprintf(searched + used, searched_size - used, "%s%s", d ? ", " : "", models);
        }
        char *found = moire_find_model_in_dir(models);
        free(models);
        if (found)
            return found;
    }
    return NULL;
}

char *moire_model_companion_path(const char *model_path, const char *suffix)
{
    if (!model_path || !suffix)
        return NULL;
    /* the stem: the path without its extension (a dot in the file name, not leading) */
    const char *slash = strrchr(model_path, '/');
    const char *dot = strrchr(model_path, '.');
    if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : model_path))
        dot = model_path + strlen(model_path);
    const size_t size = (size_t)(dot - model_path) + strlen(suffix) + 1;
    char *out = malloc(size);
    if (out)
        snprintf(out, size, "%.*s%s", (int)(dot - model_path), model_path, suffix);
    return out;
}
