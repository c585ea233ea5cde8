/* file_guard.c — regular-file-only inputs and replace-only-regular-files outputs (see
 * file_guard.h). */
#include "file_guard.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *file_kind_name(unsigned mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO (named pipe)";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "not a regular file";
}

moire_status file_open_input(const char *path, const char *what, int *out_fd,
                             uint64_t *out_size)
{
    *out_fd = -1;
    if (!path || !path[0])
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "no file name given for %s", what);
    /* O_NONBLOCK: open() of a FIFO with no writer would block here forever; O_NOCTTY: a
       terminal device must not become our controlling terminal */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int err = errno;
        return error_fail(MOIRE_ERROR_IO,
                          "%s: cannot open: %s; check the path and permissions", path,
                          strerror(err));
    }
    struct stat info;
    if (fstat(fd, &info) != 0) {
        int err = errno;
        close(fd);
        return error_fail(MOIRE_ERROR_IO, "%s: cannot read its status: %s", path,
                          strerror(err));
    }
    if (!S_ISREG(info.st_mode)) {
        close(fd);
        return error_fail(MOIRE_ERROR_IO, "%s is %s, not a regular file; pass %s", path,
                          file_kind_name(info.st_mode), what);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    *out_fd = fd;
    if (out_size)
        *out_size = (uint64_t)info.st_size;
    return MOIRE_OK;
}

moire_status file_fopen_input(const char *path, const char *what, FILE **out_stream,
                              uint64_t *out_size)
{
    *out_stream = NULL;
    int fd;
    moire_status status = file_open_input(path, what, &fd, out_size);
    if (status != MOIRE_OK)
        return status;
    FILE *stream = fdopen(fd, "rb");
    if (!stream) {
        close(fd);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    *out_stream = stream;
    return MOIRE_OK;
}

const char *file_output_hint(const char *path, int err)
{
    if (err == ENOENT) {
        const char *slash = path ? strrchr(path, '/') : NULL;
        if (!slash)
            return "; choose another output path";
        char dir[4096];
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof dir)
            return "; choose another output path";
        memcpy(dir, path, n);
        dir[n] = '\0';
        struct stat info;
        if (stat(dir, &info) != 0)
            return "; create the directory first, or choose another output path";
        return "; that directory does not take new files: choose another output path";
    }
    if (err == EACCES || err == EPERM || err == EROFS)
        return "; choose a directory you can write to";
    if (err == ENOSPC || err == EDQUOT)
        return "; free some disk space";
    if (err == EISDIR)
        return "; it is a directory: give a file name";
    return "";
}

moire_status moire_check_output_path(const char *path)
{
    if (!path || !path[0])
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "no output path given");
    struct stat info;
    if (lstat(path, &info) != 0) {
        if (errno == ENOENT)
            return MOIRE_OK;
        /* ENOTDIR, EACCES, ELOOP…: the writer's own open reports these with a hint */
        return MOIRE_OK;
    }
    if (S_ISREG(info.st_mode))
        return MOIRE_OK;
    if (S_ISLNK(info.st_mode))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "%s is a symbolic link; outputs never replace or follow links: give "
                          "the path it points to, or another name", path);
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                      "%s is %s; an output replaces only a regular file: choose another "
                      "output path", path, file_kind_name(info.st_mode));
}

moire_status moire_output_replace(const char *tmp_path, const char *path)
{
    moire_status status = moire_check_output_path(path);
    if (status != MOIRE_OK)
        return status;
    if (rename(tmp_path, path) != 0) {
        int err = errno;
        return error_fail(MOIRE_ERROR_IO, "%s: cannot replace the file: %s%s", path,
                          strerror(err),
                          err == EACCES || err == EPERM || err == EROFS
                          ? "; choose a directory you can write to" : "");
    }
    return MOIRE_OK;
}
