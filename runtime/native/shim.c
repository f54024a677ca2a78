/* flotilla-shim: one small process per container (or exec) that outlives the agent.
 *
 *   flotilla-shim run <bundle-dir>
 *   flotilla-shim exec <bundle-dir> <exec-id>
 *
 * It detaches (fork + setsid), starts the container process in its namespaces (container.c),
 * reports "started <pid> <shim-pid>" once it exists, then "ok <pid> <shim-pid>" or "error <code> <message>"
 * on fd 3, then owns the process's stdio:
 * the json-file log, the attach socket and its clients, reaping, and the exit file. The contract
 * with the Python side is "The shim" in docs/architecture.md.
 */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <linux/magic.h>

#define REPORT_FD 3
#define MAX_CLIENTS 64
#define MAX_FRAME (1 << 20)
#define CLIENT_SEND_TIMEOUT_MS 5000
#define DRAIN_IDLE_MS 200

enum { F_STDIN = 0, F_STDOUT = 1, F_STDERR = 2, F_EXIT = 3, F_STDIN_CLOSE = 4, F_RESIZE = 5 };

struct client {
    int fd;
    unsigned char *buf;
    size_t len, cap;
};

static int g_report = REPORT_FD;
static const char *g_exit_path, *g_sock_path;
static struct client g_clients[MAX_CLIENTS];
static int g_nclients;

/* ---- report pipe and exit file ---- */

static void report(const char *fmt, ...) {
    if (g_report < 0)
        return;
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* The reader may be gone (agent killed): EPIPE is ignored, the container goes on. */
    (void)write_full(g_report, line, strlen(line));
}

/* An O_PATH fd of the container's root, from the container process (run mode with a rootfs). */
static int g_rootfd = -1;

/* The last reference to an overlay mount going away makes the kernel sync the whole upper
 * filesystem (generic_shutdown_super -> ovl_sync_fs -> sync_filesystem of the host's ext4): ~3 ms
 * here, and it used to happen in the container's exit, before the shim could even reap it. The
 * shim holds that reference instead (g_rootfd) and, once the container is gone, hands it to a
 * child that exits as soon as the shim has dropped its own copy: the sync runs in that child,
 * while the exit status is reported; the writes of the container are synced as before, only not
 * on the path of `wait`. If the fork fails, the shim drops the fd itself (and pays the sync). */
static void release_rootfs(void) {
    if (g_rootfd < 0)
        return;
    int p[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
        pid_t r = fork();
        if (r == 0) {
            /* Not "run <bundle>" any more: the runtime recognises a container's shim by that
             * command line, and this process only finishes the sync. */
            set_cmdline("flotilla-shim (releasing a root filesystem)");
            char b;
            close(p[1]);
            while (read(p[0], &b, 1) < 0 && errno == EINTR)
                ;
            _exit(0); /* holding the last reference: it goes (and the sync runs) with this exit */
        }
        close(g_rootfd); /* before the pipe: the child's copy must be the last one */
        close(p[0]);
        close(p[1]);
    } else {
        close(g_rootfd);
    }
    g_rootfd = -1;
}

static void write_exit(int code, int sig) {
    char ts[64], buf[160];
    rfc3339nano(ts, sizeof ts);
    int n = snprintf(buf, sizeof buf, "code=%d\nsignal=%d\nfinished=%s\n", code, sig, ts);
    (void)write_file_atomic(g_exit_path, buf, (size_t)n);
}

/* A failure before the container process runs: exit file first, then the report line. */
static void fail(int code, const char *msg) __attribute__((noreturn));
static void fail(int code, const char *msg) {
    char one[1024];
    snprintf(one, sizeof one, "%s", msg);
    for (char *p = one; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (g_exit_path)
        write_exit(code, 0);
    report("error %d %s\n", code, one);
    if (g_sock_path)
        unlink(g_sock_path);
    exit(1);
}

static void failf(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void failf(int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(code, msg);
}

/* ---- attach clients ---- */

static int send_timeout(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* A slow client gets a few seconds; a stuck one is dropped rather than stall the log. */
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, CLIENT_SEND_TIMEOUT_MS) > 0)
                continue;
        }
        return -1;
    }
    return 0;
}

static void frame_header(unsigned char h[8], int type, size_t len) {
    h[0] = (unsigned char)type;
    h[1] = h[2] = h[3] = 0;
    h[4] = (unsigned char)(len >> 24);
    h[5] = (unsigned char)(len >> 16);
    h[6] = (unsigned char)(len >> 8);
    h[7] = (unsigned char)len;
}

static void drop_client(int i) {
    close(g_clients[i].fd);
    free(g_clients[i].buf);
    g_clients[i] = g_clients[--g_nclients];
}

static void broadcast(int type, const void *data, size_t len) {
    unsigned char h[8];
    frame_header(h, type, len);
    for (int i = 0; i < g_nclients; i++) {
        if (send_timeout(g_clients[i].fd, h, 8) < 0 || send_timeout(g_clients[i].fd, data, len) < 0)
            drop_client(i--);
    }
}

static void add_client(int fd) {
    if (g_nclients == MAX_CLIENTS) {
        close(fd);
        return;
    }
    g_clients[g_nclients++] = (struct client){.fd = fd};
}

/* ---- the supervised process's stdio ---- */

struct io_state {
    int out_fd, err_fd;      /* read ends (pty master for a tty); -1 at EOF */
    int stdin_fd;            /* write end (a dup of the pty master for a tty); -1 when closed */
    int tty_master;          /* for resize; -1 without a tty */
    int accept_stdin;
    unsigned char *pending;  /* stdin bytes the process has not read yet */
    size_t plen, pcap;
    int eof_requested;
    int logfd;
    struct logstream logs[3];
};

static void close_stdin(struct io_state *s) {
    if (s->stdin_fd >= 0)
        close(s->stdin_fd);
    s->stdin_fd = -1;
    s->plen = 0;
}

static void flush_stdin(struct io_state *s) {
    while (s->stdin_fd >= 0 && s->plen > 0) {
        ssize_t n = write(s->stdin_fd, s->pending, s->plen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) { /* the process closed its stdin: what is left can never be read */
            close_stdin(s);
            return;
        }
        memmove(s->pending, s->pending + n, s->plen - (size_t)n);
        s->plen -= (size_t)n;
    }
    if (s->eof_requested && s->stdin_fd >= 0 && s->plen == 0) {
        if (s->tty_master >= 0) {
            /* A pty cannot be half-closed: send the terminal's EOF character, as a typist would. */
            struct termios t;
            char eof = tcgetattr(s->tty_master, &t) == 0 ? (char)t.c_cc[VEOF] : 4;
            (void)write(s->stdin_fd, &eof, 1);
            s->eof_requested = 0;
        } else
            close_stdin(s);
    }
}

static void handle_frame(struct io_state *s, int type, const unsigned char *p, size_t len) {
    switch (type) {
    case F_STDIN:
        if (!s->accept_stdin || s->stdin_fd < 0 || s->eof_requested)
            return;
        if (s->plen + len > s->pcap) {
            s->pcap = (s->plen + len) * 2;
            s->pending = realloc(s->pending, s->pcap);
        }
        memcpy(s->pending + s->plen, p, len);
        s->plen += len;
        flush_stdin(s);
        break;
    case F_STDIN_CLOSE:
        if (s->accept_stdin) {
            s->eof_requested = 1;
            flush_stdin(s);
        }
        break;
    case F_RESIZE:
        if (s->tty_master >= 0 && len == 4) {
            struct winsize ws = {.ws_row = (unsigned short)(p[0] << 8 | p[1]), .ws_col = (unsigned short)(p[2] << 8 | p[3])};
            (void)ioctl(s->tty_master, TIOCSWINSZ, &ws);
        }
        break;
    default:
        break; /* unknown frames are ignored so newer clients keep working */
    }
}

/* Read what a client sent; returns -1 when it is gone or sent garbage. */
static int client_input(struct io_state *s, struct client *c) {
    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 65536 + 8;
        c->buf = realloc(c->buf, c->cap);
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    size_t off = 0;
    while (c->len - off >= 8) {
        unsigned char *h = c->buf + off;
        size_t plen = (size_t)h[4] << 24 | (size_t)h[5] << 16 | (size_t)h[6] << 8 | h[7];
        if (plen > MAX_FRAME)
            return -1;
        if (c->len - off < 8 + plen)
            break;
        handle_frame(s, h[0], h + 8, plen);
        off += 8 + plen;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

/* Output of the process: to the log (line by line) and to every client (as it comes). */
static int pump_output(struct io_state *s, int *fd, int stream) {
    char buf[32768];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) { /* EOF, or EIO from a pty master once every slave is closed */
        close(*fd);
        *fd = -1;
        if (s->tty_master >= 0 && stream == F_STDOUT)
            s->tty_master = -1;
        return 0;
    }
    if (s->logfd >= 0)
        jsonlog_feed(s->logfd, &s->logs[stream], buf, (size_t)n);
    broadcast(stream, buf, (size_t)n);
    return 0;
}

/* ---- start-up ---- */

static int listen_attach(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (fd < 0 || strlen(path) >= sizeof a.sun_path)
        return -1;
    strcpy(a.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0)
        return -1;
    return fd;
}

/* wait_attach: block until the first client connects, or give up when the runtime goes away. */
static void wait_first_client(int lfd) {
    report("ready\n");
    for (;;) {
        struct pollfd pf[2] = {{.fd = lfd, .events = POLLIN}, {.fd = g_report, .events = 0}};
        if (poll(pf, g_report >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            failf(EXIT_SETUP, "wait for attach: %s", strerror(errno));
        }
        if (g_report >= 0 && (pf[1].revents & (POLLERR | POLLHUP)))
            fail(EXIT_SETUP, "the runtime went away before attaching");
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c >= 0) {
            add_client(c);
            return;
        }
    }
}

static int recv_fd(int sock) {
    char dummy;
    struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
    ssize_t n;
    do
        n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
    if (!cm || cm->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

/* Exec mode: the namespaces of the container's init, in container.c's order; the pid namespace is
 * joined here (it applies to the children we create), the others by the child. */
static void open_exec_namespaces(pid_t pid, struct child_io *io) {
    static const char *names[6] = {"cgroup", "ipc", "uts", "net", "pid", "mnt"};
    for (int i = 0; i < 6; i++) {
        char p[64], self[64];
        struct stat a, b;
        snprintf(p, sizeof p, "/proc/%d/ns/%s", (int)pid, names[i]);
        snprintf(self, sizeof self, "/proc/self/ns/%s", names[i]);
        io->ns_fds[i] = open(p, O_RDONLY | O_CLOEXEC);
        if (io->ns_fds[i] < 0)
            failf(EXIT_SETUP, "container process %d is not running: open %s: %s", (int)pid, p, strerror(errno));
        if (fstat(io->ns_fds[i], &a) == 0 && stat(self, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            close(io->ns_fds[i]);
            io->ns_fds[i] = -1;
        }
    }
    /* A container always has its own mount namespace; sharing ours means the pid is no container
     * (e.g. it died and the pid was reused by a host process): never exec into the host. */
    if (io->ns_fds[5] < 0)
        failf(EXIT_SETUP, "process %d is not a container (it shares the host's mount namespace)", (int)pid);
    if (io->ns_fds[4] >= 0 && setns(io->ns_fds[4], CLONE_NEWPID) < 0)
        failf(EXIT_SETUP, "join the pid namespace of %d: %s", (int)pid, strerror(errno));
}

static int valid_exec_id(const char *id) {
    if (!*id || !strcmp(id, ".") || !strcmp(id, "..") || strlen(id) > 128)
        return 0;
    for (const char *p = id; *p; p++)
        if (*p == '/')
            return 0;
    return 1;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Check every `cgroup` of the conf and open the cgroup2 one (at most one) for CLONE_INTO_CGROUP:
 * the child is then born in it, with no migration at all. v1 directories are joined by the
 * child through `tasks` (container.c). Returns the fd, or -1 without a cgroup2 directory. */
static int open_cgroup2(const struct conf *c, struct child_io *io) {
    int fd = -1;
    io->cgroup_born = -1;
    for (int i = 0; i < c->cgroups.n; i++) {
        struct statfs sf;
        if (statfs(c->cgroups.v[i], &sf) < 0)
            failf(EXIT_SETUP, "cgroup %s: %s", c->cgroups.v[i], strerror(errno));
        if (sf.f_type == CGROUP_SUPER_MAGIC)
            continue;
        if (sf.f_type != CGROUP2_SUPER_MAGIC)
            failf(EXIT_SETUP, "cgroup %s is not on a cgroup filesystem", c->cgroups.v[i]);
        if (fd >= 0)
            failf(EXIT_SETUP, "cgroup %s: only one cgroup2 directory can be joined", c->cgroups.v[i]);
        fd = open(c->cgroups.v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            failf(EXIT_SETUP, "cgroup %s: %s", c->cgroups.v[i], strerror(errno));
        io->cgroup_born = i;
    }
    return fd;
}

/* clone3's arguments up to `cgroup` (CLONE_ARGS_SIZE_VER2), declared here because glibc's
 * <sched.h> and <linux/sched.h> do not mix. */
struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};
#define FLOTILLA_CLONE_INTO_CGROUP 0x200000000ULL

static void write_pid_file(const char *path, pid_t pid) {
    char b[32];
    int n = snprintf(b, sizeof b, "%d\n", (int)pid);
    if (write_file_atomic(path, b, (size_t)n) < 0)
        failf(EXIT_SETUP, "write %s: %s", path, strerror(errno));
}

/* ---- supervision ---- */

static void supervise(struct io_state *s, int sfd, int lfd, pid_t init) __attribute__((noreturn));
static void supervise(struct io_state *s, int sfd, int lfd, pid_t init) {
    int status = -1;
    for (;;) {
        struct pollfd pf[5 + MAX_CLIENTS];
        int n = 0, i_out = -1, i_err = -1, i_in = -1;
        pf[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        if (s->out_fd >= 0)
            i_out = n, pf[n++] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
        if (s->err_fd >= 0)
            i_err = n, pf[n++] = (struct pollfd){.fd = s->err_fd, .events = POLLIN};
        if (s->stdin_fd >= 0 && s->plen > 0)
            i_in = n, pf[n++] = (struct pollfd){.fd = s->stdin_fd, .events = POLLOUT};
        int i_cl = n;
        /* While stdin is backed up, clients are not read: their sockets push back instead. */
        for (int i = 0; i < g_nclients; i++)
            pf[n++] = (struct pollfd){.fd = g_clients[i].fd, .events = s->plen > 0 ? 0 : POLLIN};
        int exited = status >= 0;
        int r = poll(pf, (nfds_t)n, exited ? DRAIN_IDLE_MS : -1);
        if (r < 0 && errno != EINTR)
            break;
        if (r == 0 && exited)
            break; /* the process is gone and its output went quiet (e.g. a daemonized child without a pid ns) */
        if (r <= 0)
            continue;
        if (pf[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo != SIGCHLD) {
                    if (status < 0)
                        kill(init, (int)si.ssi_signo);
                    continue;
                }
                int st;
                pid_t p;
                while ((p = waitpid(-1, &st, WNOHANG)) > 0)
                    if (p == init)
                        status = st;
            }
        }
        if (pf[1].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0)
                add_client(c);
        }
        if (i_out >= 0 && pf[i_out].revents)
            pump_output(s, &s->out_fd, F_STDOUT);
        if (i_err >= 0 && pf[i_err].revents)
            pump_output(s, &s->err_fd, F_STDERR);
        if (i_in >= 0 && pf[i_in].revents)
            flush_stdin(s);
        /* Clients may have been dropped by broadcast above; match poll entries by fd. */
        for (int k = i_cl; k < n; k++) {
            if (!pf[k].revents)
                continue;
            for (int i = 0; i < g_nclients; i++)
                if (g_clients[i].fd == pf[k].fd) {
                    if (client_input(s, &g_clients[i]) < 0)
                        drop_client(i);
                    break;
                }
        }
        if (status >= 0 && s->out_fd < 0 && s->err_fd < 0)
            break;
    }
    for (int i = 1; i < 3; i++)
        if (s->logfd >= 0)
            jsonlog_flush(s->logfd, &s->logs[i]);
    release_rootfs();
    int code = 255, sig = 0;
    if (status >= 0 && WIFEXITED(status))
        code = WEXITSTATUS(status);
    else if (status >= 0 && WIFSIGNALED(status))
        sig = WTERMSIG(status), code = 128 + sig;
    write_exit(code, sig);
    char txt[16];
    int tl = snprintf(txt, sizeof txt, "%d", code);
    broadcast(F_EXIT, txt, (size_t)tl);
    while (g_nclients)
        drop_client(0);
    unlink(g_sock_path);
    exit(0);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    g_args_start = argv[0];
    g_args_end = argv[argc - 1] + strlen(argv[argc - 1]);
    if (fcntl(REPORT_FD, F_SETFD, FD_CLOEXEC) < 0)
        g_report = -1; /* started by hand, without a report pipe */
    close_range(REPORT_FD + 1, ~0U, 0);
    int exec_mode = argc == 4 && !strcmp(argv[1], "exec");
    if (!(argc == 3 && !strcmp(argv[1], "run")) && !exec_mode) {
        fprintf(stderr, "usage: flotilla-shim run <bundle-dir> | flotilla-shim exec <bundle-dir> <exec-id>\n");
        return 2;
    }
    if (chdir(argv[2]) < 0)
        failf(EXIT_SETUP, "bundle %s: %s", argv[2], strerror(errno));
    char conf_path[256], exit_path[256], sock_path[256];
    if (exec_mode) {
        if (!valid_exec_id(argv[3]))
            failf(EXIT_SETUP, "invalid exec id \"%s\": want 1-128 characters without '/'", argv[3]);
        snprintf(conf_path, sizeof conf_path, "exec/%s.conf", argv[3]);
        snprintf(exit_path, sizeof exit_path, "exec/%s.exit", argv[3]);
        snprintf(sock_path, sizeof sock_path, "exec/%s.sock", argv[3]);
    } else {
        strcpy(conf_path, "shim.conf");
        strcpy(exit_path, "exit");
        strcpy(sock_path, "attach.sock");
    }
    g_exit_path = exit_path;
    static struct conf c;
    char err[512];
    if (conf_load(conf_path, &c, err, sizeof err) < 0)
        fail(EXIT_SETUP, err);
    if (exec_mode && !c.pid)
        failf(EXIT_SETUP, "%s: pid is required in exec mode", conf_path);
    if (!exec_mode && c.pid)
        failf(EXIT_SETUP, "%s: pid is only for exec mode", conf_path);
    if (!exec_mode && (!(c.ns_flags & CLONE_NEWNS) || !c.rootfs))
        failf(EXIT_SETUP, "%s: a container needs the mnt namespace and a rootfs (it is mounted inside)", conf_path);
    if (!exec_mode && c.hostname && !(c.ns_flags & CLONE_NEWUTS))
        failf(EXIT_SETUP, "%s: hostname needs the uts namespace (it would rename the host)", conf_path);
    if (!exec_mode && c.netns && (c.ns_flags & CLONE_NEWNET))
        failf(EXIT_SETUP, "%s: netns joins a network namespace: leave net out of namespaces", conf_path);

    /* Detach: the runtime reaps this intermediate at once; the shim is re-parented to init. */
    pid_t p = fork();
    if (p < 0)
        failf(EXIT_SETUP, "fork: %s", strerror(errno));
    if (p > 0)
        _exit(0);
    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    if (!exec_mode)
        write_pid_file("shim.pid", getpid());

    struct io_state s = {.out_fd = -1, .err_fd = -1, .stdin_fd = -1, .tty_master = -1, .logfd = -1};
    s.logs[1].name = "stdout";
    s.logs[2].name = "stderr";
    s.accept_stdin = c.stdin_open;
    if (c.log && !exec_mode) {
        s.logfd = open(c.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (s.logfd < 0)
            failf(EXIT_SETUP, "open log %s: %s", c.log, strerror(errno));
    }
    int lfd = listen_attach(sock_path);
    if (lfd < 0)
        failf(EXIT_SETUP, "attach socket %s: %s", sock_path, strerror(errno));
    g_sock_path = sock_path;

    sigset_t mask;
    sigemptyset(&mask);
    int fwd[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++)
        sigaddset(&mask, fwd[i]);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        failf(EXIT_SETUP, "signalfd: %s", strerror(errno));

    if (c.wait_attach)
        wait_first_client(lfd);

    struct child_io io = {.ptysock = -1, .rootsock = -1, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1,
                          .exec_mode = exec_mode};
    for (int i = 0; i < 6; i++)
        io.ns_fds[i] = -1;
    int ptysock[2] = {-1, -1}, rootsock[2] = {-1, -1}, in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, ep[2];
    if (!exec_mode && c.lowerdir) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rootsock) < 0)
            failf(EXIT_SETUP, "socketpair: %s", strerror(errno));
        io.rootsock = rootsock[1];
    }
    if (c.tty) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ptysock) < 0)
            failf(EXIT_SETUP, "socketpair: %s", strerror(errno));
        io.ptysock = ptysock[1];
    } else {
        if ((c.stdin_open ? pipe2(in, O_CLOEXEC) : ((in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0 ? -1 : 0)) < 0 ||
            pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
            failf(EXIT_SETUP, "stdio pipes: %s", strerror(errno));
        io.stdin_fd = in[0];
        io.stdout_fd = out[1];
        io.stderr_fd = errp[1];
    }
    io.shim_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (io.shim_pidfd < 0)
        failf(EXIT_SETUP, "pidfd_open: %s", strerror(errno));
    if (pipe2(ep, O_CLOEXEC) < 0)
        failf(EXIT_SETUP, "pipe: %s", strerror(errno));
    io.errpipe = ep[1];
    if (exec_mode)
        open_exec_namespaces(c.pid, &io);

    int cgroup2 = open_cgroup2(&c, &io);

    /* A fork-like clone3 (no new stack): the child continues here with a copy of everything,
     * born in the cgroup2 directory when there is one. */
    struct clone_args_v2 ca = {.flags = (uint64_t)(exec_mode ? 0 : c.ns_flags), .exit_signal = SIGCHLD};
    if (cgroup2 >= 0) {
        ca.flags |= FLOTILLA_CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)cgroup2;
    }
    long child = syscall(SYS_clone3, &ca, sizeof ca);
    if (child < 0)
        failf(EXIT_SETUP, "clone: %s", strerror(errno));
    if (child == 0) {
        if (cgroup2 >= 0)
            close(cgroup2); /* a host directory: never within reach of the container, not even via /proc/self/fd */
        container_main(&c, &io);
    }
    pid_t init = (pid_t)child;

    if (cgroup2 >= 0)
        close(cgroup2);
    /* Announced before the process is set up, so the runtime records it (an fsync) meanwhile. */
    report("started %d %d\n", (int)init, (int)getpid());
    close(ep[1]);
    close(io.shim_pidfd);
    for (int i = 0; i < 6; i++)
        if (io.ns_fds[i] >= 0)
            close(io.ns_fds[i]);
    if (rootsock[1] >= 0)
        close(rootsock[1]);
    if (c.tty) {
        close(ptysock[1]);
        int master = recv_fd(ptysock[0]); /* -1 when the child failed before opening the pty */
        close(ptysock[0]);
        if (master >= 0) {
            set_nonblock(master);
            s.out_fd = master;
            s.tty_master = master;
            if (c.stdin_open) {
                s.stdin_fd = fcntl(master, F_DUPFD_CLOEXEC, 0);
            }
        }
    } else {
        close(in[0]);
        close(out[1]);
        close(errp[1]);
        s.out_fd = out[0];
        s.err_fd = errp[0];
        set_nonblock(out[0]);
        set_nonblock(errp[0]);
        if (c.stdin_open) {
            s.stdin_fd = in[1];
            set_nonblock(in[1]);
        }
    }

    /* The error pipe closes on a successful execve; otherwise it carries "<code> <message>". */
    char msg[1100];
    size_t mlen = 0;
    for (;;) {
        ssize_t n = read(ep[0], msg + mlen, sizeof msg - 1 - mlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        mlen += (size_t)n;
    }
    close(ep[0]);
    if (mlen > 0) {
        msg[mlen] = 0;
        waitpid(init, NULL, 0);
        char *sp = strchr(msg, ' ');
        int code = atoi(msg);
        fail(code >= 125 && code <= 127 ? code : EXIT_SETUP, sp ? sp + 1 : msg);
    }
    if (rootsock[0] >= 0) {
        g_rootfd = recv_fd(rootsock[0]); /* sent before the execve that closed the error pipe */
        close(rootsock[0]);
    }
    if (!exec_mode)
        write_pid_file("init.pid", init);
    report("ok %d %d\n", (int)init, (int)getpid());
    if (g_report >= 0)
        close(g_report);
    g_report = -1;
    supervise(&s, sfd, lfd, init);
}
