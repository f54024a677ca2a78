/* Small file helpers of the shim: full writes, atomic replace, mkdir -p. */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* write() until everything is out: pipes and files may take a buffer in pieces. */
int write_full(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write + rename, so a reader (or a kill -9) only ever sees the old or the whole new file.
 * No fsync: the files written here (shim.pid, init.pid, exit) describe processes, which a power
 * loss ends anyway; the exit status becomes durable in the agent's record when it finalizes the
 * exit, and an exit file lost with the power reads as "dead" (docs/runtime.md, "Performance"). */
int write_file_atomic(const char *path, const char *data, size_t len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (write_full(fd, data, len) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* Write a short string to an existing file such as cgroup.procs or oom_score_adj. */
int write_string(const char *path, const char *s) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = write_full(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

/* mkdir -p: every missing component is created with `mode`; existing ones are fine. */
int mkdir_all(const char *path, mode_t mode) {
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

char *g_args_start, *g_args_end;

void set_cmdline(const char *text) {
    if (!g_args_start)
        return;
    size_t room = (size_t)(g_args_end - g_args_start);
    size_t n = strlen(text) < room ? strlen(text) : room;
    memcpy(g_args_start, text, n);
    memset(g_args_start + n, 0, room - n);
}
