/* file_guard.h — opening untrusted inputs and replacing outputs safely.
 *
 * Inputs: every reader opens its file through file_open_input, which opens without
 * blocking (O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer forever),
 * checks the open descriptor (fstat, not the path: no window for a swap) and refuses
 * anything but a regular file — FIFO, device, directory, socket — with a message naming
 * what it is. Companion files found beside a model go through the same gate.
 *
 * Outputs: writers create "<path>.XXXXXX" beside the target and finish with
 * moire_output_replace, which renames it over the target only when the target is a regular
 * file or does not exist. A symbolic link as the target is refused (not followed): renaming
 * over it would replace the link, and following it would write wherever it points; the
 * message asks for the real path. Devices, FIFOs and directories are refused too (as root,
 * `--output /dev/full` used to replace the device node with a PNG).
 * moire_check_output_path runs the same test up front, before any work is done.
 */
#ifndef MOIRE_FILE_GUARD_H
#define MOIRE_FILE_GUARD_H

#include "moire.h"

#include <stdint.h>
#include <stdio.h>

/* Opens `path` read-only (close-on-exec, blocking mode restored after the check). `what`
 * names the expected kind in the message ("a .safetensors model", "a PNG image"). On
 * success *out_fd is the descriptor and *out_size (may be NULL) the file's size. */
moire_status file_open_input(const char *path, const char *what, int *out_fd,
                             uint64_t *out_size);
/* The same as a stdio stream ("rb"). */
moire_status file_fopen_input(const char *path, const char *what, FILE **out_stream,
                              uint64_t *out_size);

/* moire_check_output_path and moire_output_replace are public API (moire.h). */

/* The advice after "cannot create/write <path>: <strerror(err)>", starting with "; " (or ""):
 * ENOENT says "create the directory first" only when the directory is really missing (in
 * /proc or /sys it exists but takes no new files). */
const char *file_output_hint(const char *path, int err);

/* "a FIFO (named pipe)", "a directory", … for a st_mode (for messages). */
const char *file_kind_name(unsigned mode);

#endif /* MOIRE_FILE_GUARD_H */
