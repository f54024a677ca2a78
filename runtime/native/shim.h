/* Declarations shared by the shim's C files (see docs/architecture.md, "The shim"). */
#ifndef FLOTILLA_SHIM_H
#define FLOTILLA_SHIM_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Docker's exit codes for a container that never started. */
#define EXIT_NOT_FOUND 127
#define EXIT_NOT_EXEC 126
#define EXIT_SETUP 125

struct strlist {
    char **v;
    int n;
};

/* Everything shim.conf (or exec/<id>.conf) can say; strings point into the file's buffer. */
struct conf {
    struct strlist args, env, cgroups, mounts, masked, readonly_paths, rlimits;
    const char *cwd, *user, *hostname, *lowerdir, *upperdir, *workdir, *rootfs;
    const char *netns, *log, *oom_score_adj;
    int readonly, no_new_privs, tty, stdin_open, wait_attach, init;
    int ns_flags;      /* CLONE_NEW* passed to clone (never CLONE_NEWCGROUP) */
    int ns_cgroup;     /* unshare(CLONE_NEWCGROUP) after joining the cgroups */
    int caps_set;      /* 0: keep every capability */
    uint64_t caps;     /* bit n = capability n */
    pid_t pid;         /* exec mode: the container's init pid */
};

/* What the container child needs from the supervising shim. */
struct child_io {
    int errpipe;       /* close-on-exec; a failure is written here as "<code> <message>" */
    int ptysock;       /* tty: the child sends the pty master over it; else -1 */
    int rootsock;      /* run mode with a rootfs: the child sends an O_PATH fd of its new root over
                          it, so the shim holds the overlay mount past the container's exit; else -1 */
    int stdin_fd, stdout_fd, stderr_fd; /* non-tty: the child's ends of the pipes */
    int ns_fds[6];     /* exec mode: namespaces to join (-1: already shared) */
    int shim_pidfd;    /* pidfd of the shim: readable once it has died */
    int exec_mode;
    int cgroup_born;   /* index in conf.cgroups of the cgroup2 directory the child was cloned
                          into (CLONE_INTO_CGROUP); -1: none */
};

/* conf.c */
int conf_load(const char *path, struct conf *c, char *err, size_t errlen);

/* container.c: runs in the cloned child, never returns */
void container_main(const struct conf *c, const struct child_io *io) __attribute__((noreturn));

/* jsonlog.c */
struct logstream {
    const char *name;  /* "stdout" or "stderr" */
    char buf[16384];
    size_t len;
};
void jsonlog_feed(int logfd, struct logstream *s, const char *data, size_t len);
void jsonlog_flush(int logfd, struct logstream *s);
size_t json_escape(char *out, const unsigned char *in, size_t len);
void rfc3339nano(char *out, size_t outlen);

/* util.c */
int write_full(int fd, const void *buf, size_t len);
int write_file_atomic(const char *path, const char *data, size_t len);
int write_string(const char *path, const char *s);
int mkdir_all(const char *path, mode_t mode);
/* This process's argv strings (main sets them), and a way to show `text` as its command line in
 * /proc/<pid>/cmdline instead: for processes forked from the shim that are not "the shim of
 * <bundle>" (the runtime recognises a shim by that command line). */
extern char *g_args_start, *g_args_end;
void set_cmdline(const char *text);

#endif
