/* The container process between clone and execve: namespaces, root filesystem, identity, exec.
 *
 * Runs in the child the shim cloned. Any failure is written to the error pipe as
 * "<exit code> <message>" and the child exits; success is the error pipe closing on execve.
 */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int g_errpipe = -1;

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "%d ", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    (void)write_full(g_errpipe, msg, strlen(msg));
    _exit(code);
}

#define DIE_ERRNO(fmt, ...) die(EXIT_SETUP, fmt ": %s", __VA_ARGS__, strerror(errno))

/* ---- paths inside the container, resolved after pivot_root ---- */

/* Open `path` (absolute, inside the container) as O_PATH without following /proc magic links, so
 * neither an image symlink nor /proc/self/fd can lead a mount outside the container. Missing
 * directories are created; a missing last component becomes a directory or (file=1) an empty file. */
static int open_in_container(const char *path, int create, int file) {
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd >= 0 || errno != ENOENT || !create)
        return fd;
    /* Walk component by component, creating what is missing. */
    char buf[4096];
    if (strlen(path) >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(buf, path);
    int dir = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    char *save = NULL;
    char *comp = strtok_r(buf, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        int last = next == NULL;
        struct open_how h = {.flags = O_PATH | O_CLOEXEC | (last ? 0 : O_DIRECTORY), .resolve = RESOLVE_NO_MAGICLINKS};
        int fd2 = (int)syscall(SYS_openat2, dir, comp, &h, sizeof h);
        if (fd2 < 0 && errno == ENOENT) {
            int made;
            if (last && file) {
                made = openat(dir, comp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (made >= 0)
                    close(made);
            } else
                made = mkdirat(dir, comp, 0755);
            if (made < 0 && errno != EEXIST) {
                close(dir);
                return -1;
            }
            fd2 = (int)syscall(SYS_openat2, dir, comp, &h, sizeof h);
        }
        close(dir);
        if (fd2 < 0)
            return -1;
        dir = fd2;
        comp = next;
    }
    return dir;
}

/* ---- root filesystem ---- */

struct bindsrc {
    int tree;    /* detached clone of the source mount (open_tree), made before pivot_root */
    int is_dir;
    char *dest;
};

static unsigned long mount_attr_flags(int ro) { return ro ? MOUNT_ATTR_RDONLY : 0; }

/* Parse "src\tdest\topts" and clone the source tree while host paths are still reachable. */
static void open_bind_source(const char *spec, struct bindsrc *b) {
    char *s = strdup(spec);
    char *dest = s ? strchr(s, '\t') : NULL;
    char *opts = dest ? strchr(dest + 1, '\t') : NULL;
    if (!opts)
        die(EXIT_SETUP, "invalid mount \"%s\": want <source>TAB<destination>TAB<options>", spec);
    *dest++ = 0;
    *opts++ = 0;
    if (dest[0] != '/')
        die(EXIT_SETUP, "invalid mount destination \"%s\": must be an absolute path", dest);
    int ro = 0, rec = 0;
    for (char *save = NULL, *t = strtok_r(opts, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "ro"))
            ro = 1;
        else if (!strcmp(t, "rw"))
            ro = 0;
        else if (!strcmp(t, "rbind"))
            rec = 1;
        else if (strcmp(t, "bind"))
            die(EXIT_SETUP, "invalid mount option \"%s\" for %s (use ro, rw, rbind)", t, dest);
    }
    struct stat st;
    if (stat(s, &st) < 0)
        die(EXIT_SETUP, "invalid mount source \"%s\": %s", s, strerror(errno));
    b->is_dir = S_ISDIR(st.st_mode);
    b->dest = dest;
    b->tree = open_tree(AT_FDCWD, s, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (rec ? AT_RECURSIVE : 0));
    if (b->tree < 0)
        DIE_ERRNO("bind mount source %s", s);
    struct mount_attr attr = {.attr_set = mount_attr_flags(ro), .attr_clr = ro ? 0 : MOUNT_ATTR_RDONLY};
    if (mount_setattr(b->tree, "", AT_EMPTY_PATH | (rec ? AT_RECURSIVE : 0), &attr, sizeof attr) < 0)
        DIE_ERRNO("bind mount %s: set %s", s, ro ? "ro" : "rw");
}

static void attach_tree(int tree, const char *dest, int is_dir) {
    int target = open_in_container(dest, 1, !is_dir);
    if (target < 0)
        DIE_ERRNO("mount destination %s", dest);
    if (move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        DIE_ERRNO("bind mount on %s", dest);
    close(target);
    close(tree);
}

/* Mount a fresh filesystem on a path inside the container (created if missing). The mount goes on
 * "." after fchdir to the resolved directory: no path is looked up a second time, and /proc need
 * not exist yet. */
static void mount_fs(const char *fstype, const char *dest, unsigned long flags, const char *data) {
    int target = open_in_container(dest, 1, 0);
    if (target < 0 || fchdir(target) < 0)
        DIE_ERRNO("mount %s on %s", fstype, dest);
    if (mount(fstype, ".", fstype, flags, data) < 0)
        DIE_ERRNO("mount %s on %s", fstype, dest);
    if (chdir("/") < 0)
        DIE_ERRNO("chdir /%s", "");
    close(target);
}

static void make_dev(void) {
    static const struct {
        const char *name;
        unsigned maj, min;
    } nodes[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    static const char *links[][2] = {{"/proc/self/fd", "/dev/fd"},
                                     {"/proc/self/fd/0", "/dev/stdin"},
                                     {"/proc/self/fd/1", "/dev/stdout"},
                                     {"/proc/self/fd/2", "/dev/stderr"},
                                     {"pts/ptmx", "/dev/ptmx"},
                                     {"/proc/kcore", "/dev/core"}};
    mount_fs("tmpfs", "/dev", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char p[64];
        snprintf(p, sizeof p, "/dev/%s", nodes[i].name);
        if (mknod(p, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0 || chmod(p, 0666) < 0)
            DIE_ERRNO("mknod %s", p);
    }
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (symlink(links[i][0], links[i][1]) < 0)
            DIE_ERRNO("symlink %s", links[i][1]);
    mount_fs("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    mount_fs("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    mount_fs("mqueue", "/dev/mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* Docker's masked paths: a file is covered by /dev/null, a directory by an empty read-only tmpfs. */
static void mask_path(const char *path) {
    int target = open_in_container(path, 0, 0);
    if (target < 0) {
        if (errno == ENOENT)
            return;
        DIE_ERRNO("masked path %s", path);
    }
    struct stat st;
    if (fstat(target, &st) < 0)
        DIE_ERRNO("masked path %s", path);
    if (S_ISDIR(st.st_mode)) {
        if (fchdir(target) < 0 || mount("tmpfs", ".", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") < 0 ||
            chdir("/") < 0)
            DIE_ERRNO("mask %s", path);
    } else {
        int tree = open_tree(AT_FDCWD, "/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0 || move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            DIE_ERRNO("mask %s", path);
        close(tree);
    }
    close(target);
}

/* Docker's read-only paths: the path is bind-mounted onto itself read-only. */
static void readonly_path(const char *path) {
    int target = open_in_container(path, 0, 0);
    if (target < 0) {
        if (errno == ENOENT)
            return;
        DIE_ERRNO("read-only path %s", path);
    }
    int tree = open_tree(target, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    if (tree < 0)
        DIE_ERRNO("read-only path %s", path);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
    if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0 ||
        move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        DIE_ERRNO("read-only path %s", path);
    close(tree);
    close(target);
}

static void setup_rootfs(const struct conf *c) {
    /* Nothing we mount may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        DIE_ERRNO("make / rprivate%s", "");
    struct bindsrc *binds = calloc((size_t)c->mounts.n + 1, sizeof *binds);
    for (int i = 0; i < c->mounts.n; i++)
        open_bind_source(c->mounts.v[i], &binds[i]);

    if (c->lowerdir) {
        char opts[4096];
        int n = c->upperdir ? snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", c->lowerdir,
                                       c->upperdir, c->workdir ? c->workdir : "")
                            : snprintf(opts, sizeof opts, "lowerdir=%s", c->lowerdir);
        if (n >= (int)sizeof opts)
            die(EXIT_SETUP, "overlay options longer than %zu bytes (too many or too long layer paths)", sizeof opts);
        if (mount("overlay", c->rootfs, "overlay", 0, opts) < 0)
            DIE_ERRNO("mount overlay on %s", c->rootfs);
    } else if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
        DIE_ERRNO("bind rootfs %s", c->rootfs);

    /* pivot_root(".", "."): the old root ends up on top of the new one and is detached at once. */
    if (chdir(c->rootfs) < 0)
        DIE_ERRNO("chdir %s", c->rootfs);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        DIE_ERRNO("pivot_root %s", c->rootfs);
    if (umount2(".", MNT_DETACH) < 0)
        DIE_ERRNO("detach old root%s", "");
    if (chdir("/") < 0)
        DIE_ERRNO("chdir /%s", "");

    mount_fs("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    make_dev();
    mount_fs("sysfs", "/sys", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    for (int i = 0; i < c->mounts.n; i++)
        attach_tree(binds[i].tree, binds[i].dest, binds[i].is_dir);
    free(binds);
    for (int i = 0; i < c->masked.n; i++)
        mask_path(c->masked.v[i]);
    for (int i = 0; i < c->readonly_paths.n; i++)
        readonly_path(c->readonly_paths.v[i]);
    if (c->cwd && c->cwd[0] == '/') {
        int fd = open_in_container(c->cwd, 1, 0);
        if (fd < 0)
            DIE_ERRNO("create working directory %s", c->cwd);
        close(fd);
    }
    if (c->readonly && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
        DIE_ERRNO("remount / read-only%s", "");
}

/* ---- identity: user, groups, capabilities ---- */

struct ident {
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int ngroups;
    char home[512];
    char name[256];
};

static int all_digits(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Read one of the container's files (/etc/passwd, /etc/group); NULL when it does not exist. */
static char *slurp(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return buf;
}

/* Split a colon-separated line into at most `max` fields in place; returns the field count. */
static int split_fields(char *line, char **f, int max) {
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == ':') {
            *p = 0;
            f[n++] = p + 1;
        }
    return n;
}

/* Resolve `user` ("uid", "uid:gid", "name", "name:group") as Docker does, from the container's files. */
static void resolve_user(const char *spec, struct ident *id) {
    memset(id, 0, sizeof *id);
    strcpy(id->home, "/");
    char u[512];
    snprintf(u, sizeof u, "%s", spec ? spec : "");
    char *g = strchr(u, ':');
    if (g)
        *g++ = 0;
    int have_user = 0;
    char *passwd = slurp("/etc/passwd");
    if (u[0]) {
        for (char *save = NULL, *line = passwd ? strtok_r(passwd, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save)) {
            char *f[7];
            if (split_fields(line, f, 7) < 7)
                continue;
            if (strcmp(f[0], u) && !(all_digits(u) && !strcmp(f[2], u)))
                continue;
            id->uid = (uid_t)strtoul(f[2], NULL, 10);
            id->gid = (gid_t)strtoul(f[3], NULL, 10);
            snprintf(id->home, sizeof id->home, "%s", f[5]);
            snprintf(id->name, sizeof id->name, "%s", f[0]);
            have_user = 1;
            break;
        }
        if (!have_user) {
            if (!all_digits(u))
                die(EXIT_SETUP, "unable to find user %s: no matching entries in passwd file", u);
            id->uid = (uid_t)strtoul(u, NULL, 10);
            id->gid = 0;
        }
    } else {
        /* No user given: root, with root's home if passwd has it. */
        for (char *save = NULL, *line = passwd ? strtok_r(passwd, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save)) {
            char *f[7];
            if (split_fields(line, f, 7) == 7 && !strcmp(f[2], "0")) {
                snprintf(id->home, sizeof id->home, "%s", f[5]);
                snprintf(id->name, sizeof id->name, "%s", f[0]);
                break;
            }
        }
    }
    free(passwd);

    char *group = slurp("/etc/group");
    if (g && g[0]) {
        int found = 0;
        char *copy = group ? strdup(group) : NULL;
        for (char *save = NULL, *line = copy ? strtok_r(copy, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save)) {
            char *f[4];
            if (split_fields(line, f, 4) < 3)
                continue;
            if (!strcmp(f[0], g) || (all_digits(g) && !strcmp(f[2], g))) {
                id->gid = (gid_t)strtoul(f[2], NULL, 10);
                found = 1;
                break;
            }
        }
        free(copy);
        if (!found) {
            if (!all_digits(g))
                die(EXIT_SETUP, "unable to find group %s: no matching entries in group file", g);
            id->gid = (gid_t)strtoul(g, NULL, 10);
        }
    }
    /* Supplementary groups: every group listing the user's name as a member, and only when no group
     * was given explicitly (runc's GetExecUser, hence Docker's behaviour). */
    if (group && id->name[0] && !(g && g[0])) {
        for (char *save = NULL, *line = strtok_r(group, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char *f[4];
            if (split_fields(line, f, 4) < 4)
                continue;
            for (char *s2 = NULL, *m = strtok_r(f[3], ",", &s2); m; m = strtok_r(NULL, ",", &s2))
                if (!strcmp(m, id->name) && id->ngroups < 64) {
                    gid_t gg = (gid_t)strtoul(f[2], NULL, 10);
                    if (gg != id->gid)
                        id->groups[id->ngroups++] = gg;
                }
        }
    }
    free(group);
}

static int last_cap(void) {
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    char b[16] = {0};
    if (fd >= 0) {
        ssize_t n = read(fd, b, sizeof b - 1);
        close(fd);
        if (n > 0)
            return atoi(b);
    }
    return CAP_LAST_CAP;
}

static void drop_bounding(const struct conf *c, int lastcap) {
    if (!c->caps_set)
        return;
    for (int i = 0; i <= lastcap; i++)
        if (!(c->caps & (1ULL << i)) && prctl(PR_CAPBSET_DROP, i, 0, 0, 0) < 0 && errno != EINVAL)
            DIE_ERRNO("drop capability %d from the bounding set", i);
}

static void set_caps(const struct conf *c, int lastcap) {
    uint64_t mask = c->caps_set ? c->caps : (lastcap >= 63 ? ~0ULL : (1ULL << (lastcap + 1)) - 1);
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    for (int i = 0; i < 2; i++) {
        uint32_t m = (uint32_t)(mask >> (32 * i));
        d[i].effective = d[i].permitted = d[i].inheritable = m;
    }
    if (syscall(SYS_capset, &h, d) < 0)
        DIE_ERRNO("set capabilities%s", "");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        DIE_ERRNO("clear ambient capabilities%s", "");
}

static void switch_user(const struct ident *id) {
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        DIE_ERRNO("keep capabilities%s", "");
    if (setgroups((size_t)id->ngroups, id->groups) < 0)
        DIE_ERRNO("setgroups%s", "");
    if (setresgid(id->gid, id->gid, id->gid) < 0)
        DIE_ERRNO("setgid %u", id->gid);
    if (setresuid(id->uid, id->uid, id->uid) < 0)
        DIE_ERRNO("setuid %u", id->uid);
}

/* A network namespace made at clone time (network "none") holds only `lo`, and down: bring it up
 * as Docker does. Doing it here instead of in the agent saves the agent a namespace to create,
 * bind-mount and later delete for every such container: nothing of it exists on the host. */
static void loopback_up(void) {
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        DIE_ERRNO("read the flags of lo%s", "");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        DIE_ERRNO("bring lo up%s", "");
    close(s);
}

static void set_rlimits(const struct conf *c) {
    static const struct {
        const char *name;
        int res;
    } names[] = {{"AS", RLIMIT_AS},           {"CORE", RLIMIT_CORE},       {"CPU", RLIMIT_CPU},
                 {"DATA", RLIMIT_DATA},       {"FSIZE", RLIMIT_FSIZE},     {"LOCKS", RLIMIT_LOCKS},
                 {"MEMLOCK", RLIMIT_MEMLOCK}, {"MSGQUEUE", RLIMIT_MSGQUEUE}, {"NICE", RLIMIT_NICE},
                 {"NOFILE", RLIMIT_NOFILE},   {"NPROC", RLIMIT_NPROC},     {"RSS", RLIMIT_RSS},
                 {"RTPRIO", RLIMIT_RTPRIO},   {"RTTIME", RLIMIT_RTTIME},   {"SIGPENDING", RLIMIT_SIGPENDING},
                 {"STACK", RLIMIT_STACK}};
    for (int i = 0; i < c->rlimits.n; i++) {
        char name[32];
        unsigned long long soft, hard;
        if (sscanf(c->rlimits.v[i], "%31[A-Z]:%llu:%llu", name, &soft, &hard) != 3)
            die(EXIT_SETUP, "invalid rlimit \"%s\": want NAME:soft:hard", c->rlimits.v[i]);
        int res = -1;
        for (size_t j = 0; j < sizeof names / sizeof names[0]; j++)
            if (!strcmp(names[j].name, name))
                res = names[j].res;
        if (res < 0)
            die(EXIT_SETUP, "unknown rlimit \"%s\"", name);
        struct rlimit rl = {.rlim_cur = soft, .rlim_max = hard};
        if (setrlimit(res, &rl) < 0)
            DIE_ERRNO("setrlimit %s", c->rlimits.v[i]);
    }
}

/* ---- stdio ---- */

static void send_fd(int sock, int fd, const char *what) {
    char dummy = 'p';
    struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    if (sendmsg(sock, &m, 0) < 0)
        DIE_ERRNO("send %s to the shim", what);
}

/* A pty from the container's own devpts, so the slave's name exists inside; the master goes to the shim. */
/* /dev/console is the container's terminal, as with runc: the pty slave bound over an empty file. */
static void bind_console(int master) {
    int n;
    if (ioctl(master, TIOCGPTN, &n) < 0)
        DIE_ERRNO("pty number%s", "");
    char slave[64];
    snprintf(slave, sizeof slave, "/dev/pts/%d", n);
    int target = open_in_container("/dev/console", 1, 1);
    int tree = target < 0 ? -1 : open_tree(AT_FDCWD, slave, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0 || move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        DIE_ERRNO("bind %s on /dev/console", slave);
    close(tree);
    close(target);
}

static void setup_tty(int sock, uid_t uid, int console) {
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        DIE_ERRNO("open /dev/pts/ptmx%s", "");
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        DIE_ERRNO("unlock pty%s", "");
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0)
        DIE_ERRNO("open pty slave%s", "");
    if (fchown(slave, uid, (gid_t)-1) < 0)
        DIE_ERRNO("chown pty slave%s", "");
    if (console)
        bind_console(master);
    send_fd(sock, master, "the pty master");
    close(master);
    close(sock);
    for (int i = 0; i < 3; i++)
        if (dup2(slave, i) < 0)
            DIE_ERRNO("dup2 pty%s", "");
    if (slave > 2)
        close(slave);
    if (ioctl(0, TIOCSCTTY, 0) < 0)
        DIE_ERRNO("set controlling terminal%s", "");
}

static void setup_pipes(const struct child_io *io) {
    int fds[3] = {io->stdin_fd, io->stdout_fd, io->stderr_fd};
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            DIE_ERRNO("dup2 stdio%s", "");
    for (int i = 0; i < 3; i++)
        if (fds[i] > 2)
            close(fds[i]);
}

/* ---- exec ---- */

static const char *env_get(const struct conf *c, const char *name) {
    size_t n = strlen(name);
    for (int i = c->env.n - 1; i >= 0; i--)
        if (!strncmp(c->env.v[i], name, n) && c->env.v[i][n] == '=')
            return c->env.v[i] + n + 1;
    return NULL;
}

static int is_executable_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

/* Go's exec.LookPath inside the container, with Docker's messages. */
static void resolve_and_exec(const struct conf *c, char **envp) {
    const char *name = c->args.v[0];
    char path[4096];
    if (!strchr(name, '/')) {
        const char *pathvar = env_get(c, "PATH");
        if (!pathvar)
            pathvar = DEFAULT_PATH;
        const char *p = pathvar;
        int found = 0;
        while (!found) {
            const char *end = strchrnul(p, ':');
            int dl = (int)(end - p);
            snprintf(path, sizeof path, "%.*s/%s", dl ? dl : 1, dl ? p : ".", name);
            if (is_executable_file(path))
                found = 1;
            if (!*end)
                break;
            p = end + 1;
        }
        if (!found)
            die(EXIT_NOT_FOUND, "exec: \"%s\": executable file not found in $PATH", name);
    } else {
        snprintf(path, sizeof path, "%s", name);
    }
    execve(path, c->args.v, envp);
    int e = errno;
    if (e == ENOENT)
        die(EXIT_NOT_FOUND, "exec: \"%s\": stat %s: no such file or directory", name, path);
    if (e == EACCES || e == ENOEXEC || e == EISDIR || e == EPERM)
        die(EXIT_NOT_EXEC, "exec: \"%s\": %s", name, e == EISDIR ? "is a directory" : "permission denied");
    die(EXIT_SETUP, "exec: \"%s\": %s", name, strerror(e));
}

/* `--init` (Docker's docker-init, i.e. tini): this process stays the container's pid 1 and runs the
 * command as its child. A pid-namespace init gets no signal it has no handler for, so a plain
 * `sleep` as pid 1 ignores `docker stop`'s SIGTERM and waits out the grace period; as the child it
 * dies at once. The init forwards every signal it gets to the child, reaps every process that
 * ends up its child (orphans included), and exits with the child's status (128+signal when it
 * was killed, as a shell and tini report it). The child gets its own process group, the
 * terminal's foreground one with a tty, so that ^C reaches it and not the init. Returns in the
 * child only, with signals as they were; the init never returns. */
static void init_noop(int sig) { (void)sig; }

static void run_as_init(int tty) {
    sigset_t all, old;
    sigfillset(&all);
    /* Faults only the init's own code could raise stay deadly: it must never hang on one. */
    int faults[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++)
        sigdelset(&all, faults[i]);
    sigprocmask(SIG_SETMASK, &all, &old);
    /* Named before the fork (the command's execve replaces the child's copy), and the command
     * starts only once the init holds nothing but stdio: the child waits for EOF on `ready`,
     * whose write end the init's close_range closes. So neither `top` nor the command itself
     * can ever see the shim's command line or fds in pid 1. */
    set_cmdline("flotilla-init"); /* not the shim's command line with the bundle's host path */
    prctl(PR_SET_NAME, "flotilla-init", 0, 0, 0);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        DIE_ERRNO("pipe%s", "");
    pid_t init = getpid();
    pid_t child = fork();
    if (child < 0)
        DIE_ERRNO("fork the command under the init%s", "");
    if (child == 0) {
        /* Dies with its init, as the init with its shim (fork cleared the setting for the child). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != init)
            _exit(EXIT_SETUP);
        close(ready[1]);
        char byte;
        while (read(ready[0], &byte, 1) < 0 && errno == EINTR)
            ;
        close(ready[0]);
        setpgid(0, 0);
        if (tty)
            (void)tcsetpgrp(0, getpid()); /* SIGTTOU is blocked here: no stop for a background caller */
        sigprocmask(SIG_SETMASK, &old, NULL);
        return;
    }
    /* Handlers that never run (every such signal is blocked and taken by sigwaitinfo) but make the
     * signals "caught": while the init waits in sigwaitinfo, /proc shows them unblocked, and the
     * runtime decides from SigCgt/SigBlk whether a stop signal reached the init (kernel.takes_signal). */
    struct sigaction noop = {.sa_handler = init_noop};
    sigfillset(&noop.sa_mask);
    for (int s = 1; s <= 64; s++)
        if (sigismember(&all, s))
            (void)sigaction(s, &noop, NULL); /* glibc's reserved ones refuse: they are not sent to us */
    /* Only stdio stays open: the error pipe reaches the shim through the child alone now (it
     * closes at the child's execve, or carries its exec error), and no other fd of the shim's
     * (its pidfd, ...) may stay within the container's reach. Last, as it lets the command start. */
    syscall(SYS_close_range, 3U, ~0U, 0U); /* `ready` too */
    g_errpipe = -1;
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&all, &si);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == child)
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
}

/* Environment for execve: the configured one, plus HOME (from passwd) and PATH when missing, as Docker. */
static char **build_env(const struct conf *c, const struct ident *id) {
    char **envp = calloc((size_t)c->env.n + 3, sizeof(char *));
    int n = 0;
    for (int i = 0; i < c->env.n; i++)
        envp[n++] = c->env.v[i];
    if (!env_get(c, "PATH"))
        envp[n++] = "PATH=" DEFAULT_PATH;
    if (!env_get(c, "HOME")) {
        char *h = malloc(strlen(id->home) + 6);
        sprintf(h, "HOME=%s", id->home);
        envp[n++] = h;
    }
    envp[n] = NULL;
    return envp;
}

static void join_namespaces(const struct child_io *io) {
    /* Order matters: the mount namespace last, since it changes what paths mean. */
    static const int types[6] = {CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, 0, CLONE_NEWNS};
    for (int i = 0; i < 6; i++)
        if (io->ns_fds[i] >= 0 && types[i] && setns(io->ns_fds[i], types[i]) < 0)
            DIE_ERRNO("join the container's namespace (type %#x)", types[i]);
}

void container_main(const struct conf *c, const struct child_io *io) {
    g_errpipe = io->errpipe;
    /* The shim blocks signals and ignores SIGPIPE, and whoever started it may have ignored others
     * (even glibc's reserved real-time ones, which signal() refuses): the container starts with
     * every disposition at its default and nothing blocked. */
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    for (int s = 1; s <= 64; s++)
        if (s != SIGKILL && s != SIGSTOP)
            syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof dfl.mask);
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
    if (setsid() < 0)
        DIE_ERRNO("setsid%s", "");
    umask(022);

    if (c->netns) {
        int fd = open(c->netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
            DIE_ERRNO("join network namespace %s", c->netns);
        close(fd);
    }
    /* The cgroup2 directory (if any) was joined at clone time (CLONE_INTO_CGROUP). In a v1
     * hierarchy this single-threaded process moves its only thread through `tasks`: "0" there
     * migrates the caller alone, which the kernel does without the global threadgroup rwsem, so
     * it costs ~20 us where a `cgroup.procs` write waits ~10 ms for an RCU grace period. */
    for (int i = 0; i < c->cgroups.n; i++) {
        if (i == io->cgroup_born)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/tasks", c->cgroups.v[i]);
        if (write_string(p, "0") < 0)
            DIE_ERRNO("join cgroup %s", c->cgroups.v[i]);
    }
    if (io->exec_mode) {
        join_namespaces(io);
    } else {
        if (c->ns_cgroup && unshare(CLONE_NEWCGROUP) < 0)
            DIE_ERRNO("new cgroup namespace%s", "");
        if (c->ns_flags & CLONE_NEWNET)
            loopback_up();
        setup_rootfs(c); /* main() made sure there is a mount namespace and a rootfs */
        if (io->rootsock >= 0) {
            /* The shim keeps a reference to the overlay past our exit (see release_rootfs in shim.c). */
            int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (root < 0)
                DIE_ERRNO("open the new root%s", "");
            send_fd(io->rootsock, root, "the root");
            close(root);
            close(io->rootsock);
        }
        if (c->hostname && sethostname(c->hostname, strlen(c->hostname)) < 0)
            DIE_ERRNO("sethostname %s", c->hostname);
    }
    if (c->oom_score_adj && write_string("/proc/self/oom_score_adj", c->oom_score_adj) < 0)
        DIE_ERRNO("set oom_score_adj %s", c->oom_score_adj);
    set_rlimits(c);

    struct ident id;
    resolve_user(c->user, &id);
    if (io->exec_mode && c->cwd && c->cwd[0] == '/') {
        int fd = open_in_container(c->cwd, 1, 0);
        if (fd >= 0)
            close(fd);
    }
    if (c->tty)
        setup_tty(io->ptysock, id.uid, !io->exec_mode);
    else
        setup_pipes(io);

    int lastcap = last_cap();
    drop_bounding(c, lastcap);
    switch_user(&id);
    set_caps(c, lastcap);
    /* The process never outlives its shim: nobody would reap it, log it or record its exit. Set
     * after the credential change (which clears it); the pidfd closes the race with an early death. */
    struct pollfd shim_gone = {.fd = io->shim_pidfd, .events = POLLIN};
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || poll(&shim_gone, 1, 0) != 0)
        _exit(EXIT_SETUP);
    if (c->cwd && chdir(c->cwd) < 0)
        DIE_ERRNO("chdir to working directory %s", c->cwd);
    if (c->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        DIE_ERRNO("set no_new_privs%s", "");
    if (c->init && !io->exec_mode)
        run_as_init(c->tty);
    resolve_and_exec(c, build_env(c, &id));
    _exit(EXIT_SETUP); /* not reached: resolve_and_exec either execs or dies */
}
