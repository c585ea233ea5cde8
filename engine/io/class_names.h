/* class_names.h — the ImageNet-1k class names shipped in data/imagenet_classes.txt (one
 * per line, line N = class N; provenance in data/LICENSES.md), used for any model with
 * 1000 classes whose file carries no "moire.class_names" metadata.
 *
 * The file is looked up in $MOIRE_DATA_DIR, then MOIRE_DATADIR (the install directory,
 * <prefix>/share/moire), then MOIRE_SOURCE_DATADIR (the source tree's data/); both are
 * compile-time defines set by engine/meson.build.
 */
#ifndef MOIRE_CLASS_NAMES_H
#define MOIRE_CLASS_NAMES_H

#include <stddef.h>

#define CLASS_NAMES_IMAGENET_FILE "imagenet_classes.txt"
#define CLASS_NAMES_IMAGENET_COUNT 1000

/* The names as a malloc'd array of `count` malloc'd strings (free each, then the array),
 * or NULL when no readable file with exactly `count` non-empty lines is found. */
char **class_names_load_imagenet(int count);

/* One sentence for error messages: where the file was looked for. */
void class_names_describe_search(char *buffer, size_t size);

#endif /* MOIRE_CLASS_NAMES_H */
