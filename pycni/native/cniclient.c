/*
 * cniclient: the compiled plugin executable written by `netctl plugins install`.
 *
 * A Python plugin process costs 10-25 ms before it does anything (the interpreter and
 * its imports); this program costs about 1 ms. It answers VERSION itself and hands
 * every other verb to the resident agent (runtime/agent.py) over its unix socket,
 * speaking exactly the wire format of pycni/agent_client.py (read that first: the
 * request, "R"/"F"/"A", "G" with the stderr fd, and the fallback rule). When the agent
 * cannot take the call it execs the Python entry (pycni/entry.py) with the same
 * environment and the stdin it has already read (a memfd on fd 0), so nothing is lost:
 *
 *   no socket / refused      -> entry "start": start an agent on demand, run in-process
 *   untrusted socket or dir  -> entry "local": run in-process, never talk to it
 *   "F", EOF/timeout/error before "G" is sent
 *                            -> entry "local" (the agent cannot have run the verb)
 *   "G" sent, answer not whole
 *                            -> entry "lost": CNI error 11, the verb is never run again
 *
 * What it needs to know (the plugin's name and module, the pycni version and its
 * VERSION answer, the interpreter and the package paths) is in a text trailer that the
 * installer appends to a copy of this binary per plugin; see runtime/install.py.
 * Plain C99 + Linux, no library beyond libc, so any C compiler builds it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

#define TRAILER_TAG "\n#pycni-trailer "
#define MAX_TRAILER 65536
#define MAX_STDIN (16u * 1024u * 1024u)
#define DEFAULT_SOCKET "/run/pycni/agent.sock"
#define READY_TIMEOUT_MS 10000

/* Values from the trailer. */
static char *t_name, *t_module, *t_version, *t_python, *t_path0, *t_path1, *t_versionjson,
    *t_autostart;

/* What was read from stdin (kept for the fallback). */
static unsigned char *in_buf;
static size_t in_len;
static int in_read; /* stdin has been consumed */

static void die_plain(const char *msg)
{
    /* The last resort: no trailer, no interpreter. Still a CNI error, never silence. */
    printf("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"pycni plugin client: %s\"}\n", msg);
    fflush(stdout);
    _exit(1);
}

static char *field(char *text, const char *key)
{
    size_t n = strlen(key);
    char *p = text;
    while (p && *p) {
        char *end = strchr(p, '\n');
        if (strncmp(p, key, n) == 0 && p[n] == '=') {
            if (end)
                *end = '\0';
            return p + n + 1;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* The trailer: "...key=value\n...\n#pycni-trailer <decimal size of all of it>\n" at the
 * end of our own executable. */
static int read_trailer(void)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 64) {
        close(fd);
        return -1;
    }
    char tail[64];
    if (pread(fd, tail, sizeof tail, st.st_size - (off_t)sizeof tail) != (ssize_t)sizeof tail) {
        close(fd);
        return -1;
    }
    /* the last line */
    int i = (int)sizeof tail - 2;
    while (i > 0 && tail[i] != '\n')
        i--;
    size_t taglen = strlen(TRAILER_TAG);
    if (i < 0 || (size_t)(sizeof tail - (size_t)i) <= taglen ||
        memcmp(tail + i, TRAILER_TAG, taglen) != 0) {
        close(fd);
        return -1;
    }
    long size = strtol(tail + i + taglen, NULL, 10);
    if (size <= 0 || size > MAX_TRAILER || size > st.st_size) {
        close(fd);
        return -1;
    }
    char *text = malloc((size_t)size + 1);
    if (!text || pread(fd, text, (size_t)size, st.st_size - size) != size) {
        close(fd);
        return -1;
    }
    close(fd);
    text[size] = '\0';
    /* Each lookup cuts its line; look every key up from a fresh copy. */
    char *keys[] = {"name",  "module", "version",     "python",
                    "path0", "path1",  "versionjson", "autostart"};
    char **dst[] = {&t_name,  &t_module, &t_version,     &t_python,
                    &t_path0, &t_path1,  &t_versionjson, &t_autostart};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char *copy = strdup(text);
        char *v = copy ? field(copy, keys[k]) : NULL;
        if (!v)
            return -1;
        *dst[k] = v;
    }
    free(text);
    return 0;
}

static void read_stdin(void)
{
    size_t cap = 1 << 16;
    in_buf = malloc(cap);
    if (!in_buf)
        die_plain("out of memory");
    in_read = 1;
    for (;;) {
        if (in_len == cap) {
            if (cap > MAX_STDIN) /* skel refuses it in-process with the usual error */
                break;
            cap *= 2;
            unsigned char *b = realloc(in_buf, cap);
            if (!b)
                die_plain("out of memory");
            in_buf = b;
        }
        ssize_t n = read(0, in_buf + in_len, cap - in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* a read error: the fallback's skel reports it */
        in_len += (size_t)n;
    }
}

/* Put what we read from stdin back on fd 0 for the Python entry. */
static void restore_stdin(void)
{
    if (!in_read)
        return;
    int fd = memfd_create("pycni-stdin", 0);
    if (fd < 0)
        fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
    if (fd < 0)
        die_plain("cannot hand stdin over to the Python entry");
    size_t off = 0;
    while (off < in_len) {
        ssize_t n = write(fd, in_buf + off, in_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die_plain("cannot hand stdin over to the Python entry");
        off += (size_t)n;
    }
    lseek(fd, 0, SEEK_SET);
    if (fd != 0) {
        dup2(fd, 0);
        close(fd);
    }
}

/* exec the Python entry: how = "" (as the Python executable would), "local", "start"
 * or "lost". Never returns. */
/* The executable's own arguments (only without CNI_COMMAND: `dhcp daemon ...`); the
 * Python side sees them as sys.argv[1:], as a Python launcher script would. */
static char **g_args;
static int g_nargs;

static void exec_python(const char *how)
{
    restore_stdin();
    char *fixed[] = {
        t_python,
        "-IS",
        "-c",
        "import sys;a=sys.argv;sys.argv=[a[3]]+a[7:];sys.path.insert(0,a[1]);"
        "sys.path.append(a[2]);from pycni.entry import main;main(a[3],a[4],a[5],a[6]=='1')",
        t_path0,
        t_path1,
        t_name,
        t_module,
        (char *)how,
        t_autostart,
    };
    enum { NFIXED = sizeof fixed / sizeof fixed[0] };
    char **argv = malloc((NFIXED + (size_t)g_nargs + 1) * sizeof(char *));
    if (!argv)
        die_plain("out of memory");
    memcpy(argv, fixed, sizeof fixed);
    for (int i = 0; i < g_nargs; i++)
        argv[NFIXED + i] = g_args[i];
    argv[NFIXED + g_nargs] = NULL;
    execve(t_python, argv, environ);
    if (strcmp(how, "lost") == 0) {
        printf("{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"the pycni agent's worker ended "
               "before it answered\",\"details\":\"the operation may have been partly applied; "
               "retry it (DEL is always safe to retry)\"}\n");
        fflush(stdout);
        _exit(1);
    }
    die_plain("cannot exec the Python interpreter");
}

static int owner_ok(uid_t uid) { return uid == 0 || uid == geteuid(); }

/* 1 when the socket may be trusted: a socket owned by root (or us) in a directory
 * owned by root (or us) that no group or other may write to (issue 14 item 6; the
 * agent's peer check is the same rule the other way round). 0: untrusted; -1: absent. */
static int socket_trusted(const char *path)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof dir)
        return 0;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    struct stat st;
    if (lstat(dir, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode) || !owner_ok(st.st_uid) || (st.st_mode & (S_IWGRP | S_IWOTH)))
        return 0;
    if (lstat(path, &st) < 0)
        return -1;
    if (!S_ISSOCK(st.st_mode) || !owner_ok(st.st_uid))
        return 0;
    return 1;
}

static int send_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL); /* EPIPE, not SIGPIPE */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* n bytes or -1 (EOF, error or timeout first) */
static int recv_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* The rest of an "A" message: prints it and exits, or returns -1 when cut short. */
static int answer(int fd)
{
    unsigned char head[8];
    if (recv_exact(fd, head, 8) < 0)
        return -1;
    int32_t code = (int32_t)get_u32(head);
    uint32_t size = get_u32(head + 4);
    unsigned char *out = malloc(size ? size : 1);
    if (!out || recv_exact(fd, out, size) < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(1, out + off, size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            code = code ? code : 1;
            break;
        }
        off += (size_t)n;
    }
    _exit(code & 0xff);
}

static int send_go(int fd)
{
    char go = 'G';
    struct iovec iov = {&go, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } c;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fcntl(2, F_GETFD) >= 0) { /* our stderr becomes the worker's fd 2 */
        memset(&c, 0, sizeof c);
        msg.msg_control = c.buf;
        msg.msg_controllen = sizeof c.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        int two = 2;
        memcpy(CMSG_DATA(cm), &two, sizeof two);
    }
    for (;;) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n == 1)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

static void set_timeouts(int fd, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static long ready_timeout_ms(void)
{
    const char *text = getenv("PYCNI_AGENT_TIMEOUT");
    if (text && *text) {
        char *end;
        double v = strtod(text, &end);
        if (*end == '\0' && v > 0 && v < 1e6)
            return (long)(v * 1000) > 0 ? (long)(v * 1000) : 1;
    }
    return READY_TIMEOUT_MS;
}

/* As agent_client.autostart_enabled: PYCNI_AGENT_AUTOSTART=0/1, else the installed default. */
static int autostart_enabled(void)
{
    const char *v = getenv("PYCNI_AGENT_AUTOSTART");
    if (v && (strcmp(v, "0") == 0 || strcmp(v, "1") == 0))
        return v[0] == '1';
    return strcmp(t_autostart, "1") == 0;
}

/* Hand the call to the agent. Returns only when the caller must fall back: "local" or
 * "start" (nothing ran); after "G" it exits with the answer or execs "lost". */
static const char *forward(void)
{
    const char *path = getenv("PYCNI_AGENT_SOCKET");
    if (!path || !*path)
        path = DEFAULT_SOCKET;
    const char *absent = autostart_enabled() ? "start" : "local";
    int trusted = socket_trusted(path);
    if (trusted < 0)
        return absent;
    if (trusted == 0)
        return "local";
    /* A path longer than sun_path goes through its directory's descriptor, as
     * pycni/unixpath.py does (the agent binds it that way). */
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int dirfd = -1;
    if (strlen(path) < sizeof addr.sun_path) {
        strcpy(addr.sun_path, path);
    } else {
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        if (!slash || (size_t)(slash - path) >= sizeof dir)
            return "local";
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        dirfd = open(slash == path ? "/" : dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            return errno == ENOENT ? absent : "local";
        int len = snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/%s", dirfd,
                           slash + 1);
        if (len < 0 || (size_t)len >= sizeof addr.sun_path) {
            close(dirfd);
            return "local";
        }
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (dirfd >= 0)
            close(dirfd);
        return "local";
    }
    set_timeouts(fd, ready_timeout_ms());
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    int e = errno;
    if (dirfd >= 0)
        close(dirfd);
    if (rc < 0) {
        close(fd);
        return (e == ECONNREFUSED || e == ENOENT) ? absent : "local";
    }
    /* The environment exactly as os.environb has it: KEY=VALUE items, NUL-separated. */
    size_t env_len = 0, items = 0;
    for (char **e = environ; *e; e++) {
        if (**e == '=' || !strchr(*e, '='))
            continue;
        env_len += strlen(*e) + (items ? 1 : 0);
        items++;
    }
    char *env = malloc(env_len + 1);
    if (!env)
        return "local";
    size_t off = 0;
    items = 0;
    for (char **e = environ; *e; e++) {
        if (**e == '=' || !strchr(*e, '='))
            continue;
        if (items++)
            env[off++] = '\0';
        size_t l = strlen(*e);
        memcpy(env + off, *e, l);
        off += l;
    }
    mode_t mask = umask(022);
    umask(mask);
    unsigned char head[24];
    memcpy(head, "PCA1", 4);
    put_u32(head + 4, (uint32_t)mask);
    put_u32(head + 8, (uint32_t)strlen(t_version));
    put_u32(head + 12, (uint32_t)strlen(t_module));
    put_u32(head + 16, (uint32_t)env_len);
    put_u32(head + 20, (uint32_t)in_len);
    struct iovec iov[5] = {
        {head, sizeof head},
        {t_version, strlen(t_version)},
        {t_module, strlen(t_module)},
        {env, env_len},
        {in_buf, in_len},
    };
    char kind = 0;
    if (send_all(fd, iov, 5) < 0 || recv_exact(fd, &kind, 1) < 0) {
        close(fd);
        return "local";
    }
    if (kind == 'A') { /* refused or malformed: the agent's answer is final */
        answer(fd);
        close(fd);
        return "local";
    }
    if (kind != 'R' || send_go(fd) < 0) {
        close(fd);
        return "local";
    }
    /* From here on the verb may run: never run it ourselves. */
    set_timeouts(fd, 0); /* it takes as long as it takes; the runtime has a timeout */
    if (recv_exact(fd, &kind, 1) == 0 && kind == 'A')
        answer(fd);
    close(fd);
    exec_python("lost");
    return NULL;
}

int main(int argc, char **argv)
{
    if (read_trailer() < 0)
        die_plain("this executable has no pycni trailer; reinstall with `netctl plugins install`");
    const char *command = getenv("CNI_COMMAND");
    if (command && strcmp(command, "VERSION") == 0) {
        fputs(t_versionjson, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        return ferror(stdout) ? 1 : 0;
    }
    if (!command || !*command) {
        g_args = argv + 1;
        g_nargs = argc > 1 ? argc - 1 : 0;
        exec_python(""); /* the "about" text and the usage error come from skel */
    }
    const char *off = getenv("PYCNI_AGENT");
    if (off && strcmp(off, "0") == 0)
        exec_python(""); /* as the Python entry: never the agent */
    read_stdin();
    if (in_len > MAX_STDIN)
        exec_python("local");
    exec_python(forward());
    return 1;
}
