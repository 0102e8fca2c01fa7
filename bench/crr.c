/* Request-rate load generator for bench/overlay.py, netperf's TCP_CRR in ~100 lines:
 * every exchange is a new TCP connection, a 64 B request, a 64 B answer, and close
 * (the client closes with SO_LINGER 0, an RST, so no TIME_WAIT piles up in a run).
 * C on both ends, so the figure is the kernel's path and not an interpreter's loop.
 *
 *   crr server PORT [WORKERS]                   prints "ready", serves until killed
 *                                               (its workers die with it)
 *   crr client ADDR PORT SECONDS [STREAMS]      prints exchanges per second
 *
 * Built by the benchmark with `cc -O2` (gcc is in scripts/setup.sh). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SIZE 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* all of n bytes in (rd) or out, or -1 */
static int whole(int fd, char *buf, int n, int rd) {
    int done = 0;
    while (done < n) {
        ssize_t r = rd ? recv(fd, buf + done, n - done, 0)
                       : send(fd, buf + done, n - done, MSG_NOSIGNAL);
        if (r <= 0) return -1;
        done += r;
    }
    return 0;
}

static int server(int port, int workers) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    char buf[SIZE];
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) {
        perror("crr server");
        return 1;
    }
    for (int i = 1; i < workers; i++) {
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            break;
        }
    }
    printf("ready\n");
    fflush(stdout);
    memset(buf, 'a', SIZE);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        if (whole(c, buf, SIZE, 1) == 0) whole(c, buf, SIZE, 0);
        close(c);
    }
}

static long stream(const char *addr, int port, double seconds) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct linger rst = {1, 0};
    char buf[SIZE];
    long done = 0;
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
        fprintf(stderr, "crr client: not an IPv4 address: %s\n", addr);
        exit(2);
    }
    memset(buf, 'q', SIZE);
    for (double deadline = now() + seconds; now() < deadline; done++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
        if (connect(s, (struct sockaddr *)&a, sizeof a) || whole(s, buf, SIZE, 0) ||
            whole(s, buf, SIZE, 1)) {
            perror("crr client");
            exit(1);
        }
        close(s);
    }
    return done;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "server"))
        return server(atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 1);
    if (argc < 5 || strcmp(argv[1], "client")) {
        fprintf(stderr, "usage: crr server PORT [WORKERS] | "
                        "crr client ADDR PORT SECONDS [STREAMS]\n");
        return 2;
    }
    int streams = argc > 5 ? atoi(argv[5]) : 1, fds[2], status, failed = 0;
    double t0 = now();
    long total = 0, n;
    if (pipe(fds)) return 1;
    for (int i = 0; i < streams; i++) {
        if (fork() == 0) {
            n = stream(argv[2], atoi(argv[3]), atof(argv[4]));
            _exit(write(fds[1], &n, sizeof n) == sizeof n ? 0 : 1);
        }
    }
    close(fds[1]); /* a stream that dies without writing ends the read below */
    for (int i = 0; i < streams; i++) {
        if (read(fds[0], &n, sizeof n) == sizeof n) total += n;
        else failed = 1;
    }
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status)) failed = 1;
    if (failed) return 1;
    printf("%.0f\n", total / (now() - t0));
    return 0;
}
