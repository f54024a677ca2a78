/* Parse shim.conf: NUL-terminated key=value records; unknown keys and repeats are errors. */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int list_add(struct strlist *l, char *s) {
    char **v = realloc(l->v, sizeof(char *) * (size_t)(l->n + 2));
    if (!v)
        return -1;
    l->v = v;
    l->v[l->n++] = s;
    l->v[l->n] = NULL;
    return 0;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_flag(const char *key, const char *v, int *out, char *err, size_t errlen) {
    if (strcmp(v, "1") == 0)
        *out = 1;
    else if (strcmp(v, "0") == 0)
        *out = 0;
    else
        return fail(err, errlen, "shim.conf: %s must be 0 or 1, got \"%s\"", key, v);
    return 0;
}

static int parse_namespaces(struct conf *c, const char *v, char *err, size_t errlen) {
    char buf[256];
    if (strlen(v) >= sizeof buf)
        return fail(err, errlen, "shim.conf: namespaces too long");
    strcpy(buf, v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "pid"))
            c->ns_flags |= CLONE_NEWPID;
        else if (!strcmp(t, "mnt"))
            c->ns_flags |= CLONE_NEWNS;
        else if (!strcmp(t, "uts"))
            c->ns_flags |= CLONE_NEWUTS;
        else if (!strcmp(t, "ipc"))
            c->ns_flags |= CLONE_NEWIPC;
        else if (!strcmp(t, "net"))
            c->ns_flags |= CLONE_NEWNET;
        else if (!strcmp(t, "cgroup"))
            c->ns_cgroup = 1;
        else
            return fail(err, errlen, "shim.conf: unknown namespace \"%s\" (use pid,mnt,uts,ipc,net,cgroup)", t);
    }
    return 0;
}

static int parse_caps(struct conf *c, const char *v, char *err, size_t errlen) {
    c->caps_set = 1;
    c->caps = 0;
    const char *p = v;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long n = strtoul(p, &end, 10);
        if (end == p || errno || n > 63 || (*end && *end != ','))
            return fail(err, errlen, "shim.conf: caps must be comma-separated numbers 0-63, got \"%s\"", v);
        c->caps |= 1ULL << n;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Keys whose value is a single string, and where in struct conf it goes. */
struct strkey {
    const char *name;
    size_t off;
};
static const struct strkey str_keys[] = {
    {"cwd", offsetof(struct conf, cwd)},           {"user", offsetof(struct conf, user)},
    {"hostname", offsetof(struct conf, hostname)}, {"lowerdir", offsetof(struct conf, lowerdir)},
    {"upperdir", offsetof(struct conf, upperdir)}, {"workdir", offsetof(struct conf, workdir)},
    {"rootfs", offsetof(struct conf, rootfs)},     {"netns", offsetof(struct conf, netns)},
    {"log", offsetof(struct conf, log)},           {"oom_score_adj", offsetof(struct conf, oom_score_adj)},
};
static const struct strkey list_keys[] = {
    {"arg", offsetof(struct conf, args)},          {"env", offsetof(struct conf, env)},
    {"cgroup", offsetof(struct conf, cgroups)},    {"mount", offsetof(struct conf, mounts)},
    {"masked", offsetof(struct conf, masked)},     {"readonly_path", offsetof(struct conf, readonly_paths)},
    {"rlimit", offsetof(struct conf, rlimits)},
};
static const struct strkey flag_keys[] = {
    {"readonly", offsetof(struct conf, readonly)},       {"no_new_privs", offsetof(struct conf, no_new_privs)},
    {"tty", offsetof(struct conf, tty)},                 {"stdin", offsetof(struct conf, stdin_open)},
    {"wait_attach", offsetof(struct conf, wait_attach)}, {"init", offsetof(struct conf, init)},
};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static int apply(struct conf *c, char *key, char *val, unsigned *seen, char *err, size_t errlen) {
    for (size_t i = 0; i < N(list_keys); i++)
        if (!strcmp(key, list_keys[i].name))
            return list_add((struct strlist *)((char *)c + list_keys[i].off), val) ? fail(err, errlen, "out of memory") : 0;
    /* Single-valued keys: bit i of *seen marks key i so a repeat is caught. */
    unsigned bit = 1;
    for (size_t i = 0; i < N(str_keys); i++, bit <<= 1)
        if (!strcmp(key, str_keys[i].name)) {
            if (*seen & bit)
                return fail(err, errlen, "shim.conf: key \"%s\" given twice", key);
            *seen |= bit;
            *(const char **)((char *)c + str_keys[i].off) = val;
            return 0;
        }
    for (size_t i = 0; i < N(flag_keys); i++, bit <<= 1)
        if (!strcmp(key, flag_keys[i].name)) {
            if (*seen & bit)
                return fail(err, errlen, "shim.conf: key \"%s\" given twice", key);
            *seen |= bit;
            return parse_flag(key, val, (int *)((char *)c + flag_keys[i].off), err, errlen);
        }
    if (!strcmp(key, "namespaces")) {
        if (*seen & bit)
            return fail(err, errlen, "shim.conf: key \"namespaces\" given twice");
        *seen |= bit;
        return parse_namespaces(c, val, err, errlen);
    }
    bit <<= 1;
    if (!strcmp(key, "caps")) {
        if (*seen & bit)
            return fail(err, errlen, "shim.conf: key \"caps\" given twice");
        *seen |= bit;
        return parse_caps(c, val, err, errlen);
    }
    bit <<= 1;
    if (!strcmp(key, "pid")) {
        if (*seen & bit)
            return fail(err, errlen, "shim.conf: key \"pid\" given twice");
        *seen |= bit;
        char *end;
        long p = strtol(val, &end, 10);
        if (*val == 0 || *end || p <= 0)
            return fail(err, errlen, "shim.conf: pid must be a positive number, got \"%s\"", val);
        c->pid = (pid_t)p;
        return 0;
    }
    return fail(err, errlen, "shim.conf: unknown key \"%s\"", key);
}

/* Load and validate `path` into *c; on failure write a one-line reason into err. */
int conf_load(const char *path, struct conf *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size > (16 << 20)) {
        close(fd);
        return fail(err, errlen, "%s: unreadable or larger than 16 MiB", path);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return fail(err, errlen, "out of memory");
    }
    size_t len = 0;
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len && buf[len - 1] != 0)
        return fail(err, errlen, "%s: last record is not NUL-terminated (truncated file?)", path);
    buf[len] = 0;
    unsigned seen = 0;
    for (size_t i = 0; i < len;) {
        char *rec = buf + i;
        size_t rlen = strlen(rec);
        i += rlen + 1;
        char *eq = strchr(rec, '=');
        if (!eq)
            return fail(err, errlen, "%s: record \"%.40s\" has no '='", path, rec);
        *eq = 0;
        if (apply(c, rec, eq + 1, &seen, err, errlen) < 0)
            return -1;
    }
    if (c->args.n == 0)
        return fail(err, errlen, "shim.conf: no command (at least one \"arg\" record is needed)");
    return 0;
}
