/* Docker's json-file log: one JSON object per line of output, escaped as Go's encoding/json does. */
#include "shim.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when it is invalid (overlong, surrogate, cut). */
static size_t utf8_len(const unsigned char *p, size_t avail) {
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else
        return 0;
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Escape `in` as the inside of a JSON string; `out` needs 6*len bytes. Invalid UTF-8 becomes U+FFFD. */
size_t json_escape(char *out, const unsigned char *in, size_t len) {
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (size_t i = 0; i < len;) {
        unsigned char c = in[i];
        if (c >= 0x80) {
            size_t n = utf8_len(in + i, len - i);
            if (n == 0) {
                memcpy(o, "\\ufffd", 6);
                o += 6;
                i++;
            } else if (n == 3 && c == 0xe2 && in[i + 1] == 0x80 && (in[i + 2] == 0xa8 || in[i + 2] == 0xa9)) {
                memcpy(o, in[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
                o += 6;
                i += 3;
            } else {
                memcpy(o, in + i, n);
                o += n;
                i += n;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default:
            /* Go also escapes <, > and & so logs are safe to embed in HTML. */
            if (c < 0x20 || c == '<' || c == '>' || c == '&') {
                memcpy(o, "\\u00", 4);
                o[4] = hex[c >> 4];
                o[5] = hex[c & 15];
                o += 6;
            } else
                *o++ = (char)c;
        }
    }
    return (size_t)(o - out);
}

/* Current UTC time as Go's RFC3339Nano (trailing zeros of the fraction dropped, as Docker writes it). */
void rfc3339nano(char *out, size_t outlen) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ts.tv_nsec) {
        char frac[16];
        snprintf(frac, sizeof frac, ".%09ld", ts.tv_nsec);
        size_t f = strlen(frac);
        while (frac[f - 1] == '0')
            frac[--f] = 0;
        snprintf(out + n, outlen - n, "%sZ", frac);
    } else
        snprintf(out + n, outlen - n, "Z");
}

static void emit(int logfd, const char *stream, const char *data, size_t len) {
    static char line[16384 * 6 + 128];
    char ts[64];
    if (logfd < 0 || len == 0)
        return;
    rfc3339nano(ts, sizeof ts);
    size_t n = 0;
    memcpy(line, "{\"log\":\"", 8);
    n = 8;
    n += json_escape(line + n, (const unsigned char *)data, len);
    n += (size_t)snprintf(line + n, sizeof line - n, "\",\"stream\":\"%s\",\"time\":\"%s\"}\n", stream, ts);
    /* A full disk must not stop the container: the line is lost, the output still reaches attach clients. */
    (void)write_full(logfd, line, n);
}

/* Buffer output and log it line by line (a line keeps its '\n'); a line longer than the buffer is split. */
void jsonlog_feed(int logfd, struct logstream *s, const char *data, size_t len) {
    while (len > 0) {
        size_t take = sizeof s->buf - s->len;
        if (take > len)
            take = len;
        memcpy(s->buf + s->len, data, take);
        s->len += take;
        data += take;
        len -= take;
        size_t start = 0;
        for (size_t i = 0; i < s->len; i++)
            if (s->buf[i] == '\n') {
                emit(logfd, s->name, s->buf + start, i + 1 - start);
                start = i + 1;
            }
        if (start == 0 && s->len == sizeof s->buf) {
            emit(logfd, s->name, s->buf, s->len);
            start = s->len;
        }
        memmove(s->buf, s->buf + start, s->len - start);
        s->len -= start;
    }
}

/* Log what is left of an unterminated last line (at EOF). */
void jsonlog_flush(int logfd, struct logstream *s) {
    emit(logfd, s->name, s->buf, s->len);
    s->len = 0;
}
