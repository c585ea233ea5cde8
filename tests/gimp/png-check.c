/* png-check.c — pixel and metadata checks on PNGs for the gimp test suite (no Python imaging
 * library on a bare Debian). Exit 0 when every check holds.
 *
 *   png-check varied A.png            A's pixels are not all equal (RGB)
 *   png-check same A.png B.png [TOL]  same size, RGB differs by at most TOL (default 0)
 *   png-check size A.png W H          A is W×H
 *   png-check params A.png            prints A's "parameters" text
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moire.h"

static moire_image *load(const char *path, char **parameters)
{
    moire_image *image = NULL;

    if (moire_png_load(path, &image, parameters, NULL) != MOIRE_OK) {
        fprintf(stderr, "png-check: %s: %s\n", path, moire_last_error());
        exit(1);
    }
    return image;
}

static int channel(const moire_image *image, size_t pixel, int c)
{
    return image->channels >= 3 ? image->pixels[pixel * image->channels + c]
                                : image->pixels[pixel * image->channels];
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "varied") == 0) {
        moire_image *a = load(argv[2], NULL);
        size_t n = (size_t)a->width * a->height;
        int distinct = 0;

        for (size_t i = 1; i < n && !distinct; i++)
            for (int c = 0; c < 3; c++)
                distinct |= channel(a, i, c) != channel(a, 0, c);
        printf("png-check: %s %dx%d, %s\n", argv[2], a->width, a->height,
               distinct ? "pixels vary" : "ALL PIXELS EQUAL");
        moire_image_free(a);
        return distinct ? 0 : 1;
    }
    if (argc >= 4 && strcmp(argv[1], "same") == 0) {
        moire_image *a = load(argv[2], NULL), *b = load(argv[3], NULL);
        int tol = argc > 4 ? atoi(argv[4]) : 0, worst = 0;

        if (a->width != b->width || a->height != b->height) {
            printf("png-check: size %dx%d vs %dx%d\n", a->width, a->height, b->width, b->height);
            return 1;
        }
        for (size_t i = 0; i < (size_t)a->width * a->height; i++)
            for (int c = 0; c < 3; c++) {
                int d = abs(channel(a, i, c) - channel(b, i, c));
                worst = d > worst ? d : worst;
            }
        printf("png-check: %s vs %s: max RGB difference %d (tolerance %d)\n", argv[2], argv[3],
               worst, tol);
        moire_image_free(a);
        moire_image_free(b);
        return worst <= tol ? 0 : 1;
    }
    if (argc >= 5 && strcmp(argv[1], "size") == 0) {
        moire_image *a = load(argv[2], NULL);
        int ok = a->width == atoi(argv[3]) && a->height == atoi(argv[4]);

        printf("png-check: %s is %dx%d\n", argv[2], a->width, a->height);
        moire_image_free(a);
        return ok ? 0 : 1;
    }
    if (argc >= 3 && strcmp(argv[1], "params") == 0) {
        char *parameters = NULL;
        moire_image *a = load(argv[2], &parameters);

        printf("%s\n", parameters ? parameters : "");
        free(parameters);
        moire_image_free(a);
        return 0;
    }
    fprintf(stderr, "usage: png-check varied A | same A B [TOL] | size A W H | params A\n");
    return 2;
}
