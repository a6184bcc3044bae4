/*
 * faasd-init: the smallest possible PID 1 (and per-request runner) for exec-mode sandboxes.
 *
 * Exec-mode images may contain nothing but one static binary (no shell, no python), so this program is
 * bind-mounted read-only from the host and used twice:
 *
 *   faasd-init                                  the container's main process: reaps every child that
 *                                               gets re-parented to it, exits 0 on SIGTERM/SIGINT/SIGHUP.
 *   faasd-init --exec TIMEOUT_MS -- CMD ARGS... run by `runc exec` for each request: runs CMD in its own
 *                                               process group with our stdin/stdout/stderr, waits for it,
 *                                               kills the whole group when it is done or when TIMEOUT_MS
 *                                               (0 = none) passed, and exits with CMD's status (128+signal
 *                                               when killed). On timeout it writes the line
 *                                               "faasd-init: timeout" to stderr and exits 124.
 *
 *   faasd-init --main -- CMD ARGS...            PID 1 for a runtime that does not reap orphans itself (the
 *                                               Node agent): runs CMD as its child, forwards SIGTERM/SIGINT/
 *                                               SIGHUP to it, reaps every orphan, exits with CMD's status.
 *                                               `--main --listen-fd-from SOCK -- ...` first receives a
 *                                               listening socket over SCM_RIGHTS on SOCK and passes it to
 *                                               CMD as fd 3 (FAASD_LISTEN_FD=3): direct function address.
 *                                               `... SOCK --forward PORT -- ...`: a forwarder child serves
 *                                               fd 3 instead, relaying to 127.0.0.1:PORT (http mode).
 *
 * Doing the timeout in here means `runc exec` always ends by itself and reaps its child; a host that
 * killed `runc exec` instead would orphan the request process outside the container's pid namespace.
 *
 * Built by faasd with `gcc -static -Os`; depends on nothing but libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_EXIT 124

static void reap_all(void) {
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid <= 0) {
            return; /* 0: children still running; -1/ECHILD: none left */
        }
    }
}

static void blocked_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

static int as_exit_code(int status) {
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return 1;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int run_command(long timeout_ms, char **argv) {
    sigset_t set, empty;
    blocked_set(&set);
    sigemptyset(&empty);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("faasd-init: sigprocmask");
        return 126;
    }
    long deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    pid_t pid = fork();
    if (pid < 0) {
        perror("faasd-init: fork");
        return 126;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &empty, NULL);
        setpgid(0, 0);
        execvp(argv[0], argv);
        int err = errno;
        fprintf(stderr, "faasd-init: cannot run %s: %s\n", argv[0], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    setpgid(pid, pid);
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) {
            kill(-pid, SIGKILL); /* background processes do not outlive the request */
            return as_exit_code(status);
        }
        siginfo_t info;
        int sig;
        if (deadline) {
            long left = deadline - now_ms();
            if (left <= 0) {
                kill(-pid, SIGKILL);
                waitpid(pid, &status, 0);
                fprintf(stderr, "\nfaasd-init: timeout\n");
                return TIMEOUT_EXIT;
            }
            struct timespec ts = {left / 1000, (left % 1000) * 1000000L};
            sig = sigtimedwait(&set, &info, &ts);
        } else {
            sig = sigwaitinfo(&set, &info);
        }
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            kill(-pid, sig);
        }
        /* SIGCHLD, EAGAIN (deadline) or EINTR: loop and re-check */
    }
}

/* --listen-fd-from PATH: connect to the host's hand-over socket, receive one listening socket
 * (SCM_RIGHTS), make it fd 3 and tell the command so with FAASD_LISTEN_FD=3 (direct function address). */
static int receive_listen_fd(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        perror("faasd-init: socket");
        return -1;
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        fprintf(stderr, "faasd-init: cannot connect to %s: %s\n", path, strerror(errno));
        close(s);
        return -1;
    }
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    ssize_t n = recvmsg(s, &msg, 0);
    close(s);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (n <= 0 || c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
        fprintf(stderr, "faasd-init: no listening socket received from %s\n", path);
        return -1;
    }
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(fd));
    if (fd != 3) {
        if (dup2(fd, 3) < 0) {
            perror("faasd-init: dup2");
            close(fd);
            return -1;
        }
        close(fd);
    }
    setenv("FAASD_LISTEN_FD", "3", 1);
    return 3;
}

/* --forward PORT (after --listen-fd-from): for a server that cannot take an inherited socket (http-mode
 * functions), a child of PID 1 accepts on fd 3 and relays every connection to 127.0.0.1:PORT inside the
 * sandbox, one process per connection. */
static int forward_port = 0;

static int send_all(int fd, const char *buf, ssize_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, (size_t)n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        buf += w;
        n -= w;
    }
    return 0;
}

static void relay(int a, int b) {
    static char buf[65536];
    int open_a = 1, open_b = 1;
    while (open_a || open_b) {
        struct pollfd p[2] = {{open_a ? a : -1, POLLIN, 0}, {open_b ? b : -1, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            int from = i ? b : a, to = i ? a : b;
            ssize_t n = read(from, buf, sizeof(buf));
            if (n <= 0) {
                shutdown(to, SHUT_WR);
                if (i) {
                    open_b = 0;
                } else {
                    open_a = 0;
                }
                continue;
            }
            if (send_all(to, buf, n) < 0) {
                return;
            }
        }
    }
}

static int connect_local(int port) {
    for (int attempt = 0; attempt < 1000; attempt++) { /* the server may still be starting: ~10 s */
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) {
            return -1;
        }
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((unsigned short)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            return s;
        }
        close(s);
        usleep(10000);
    }
    return -1;
}

static void run_forwarder(int listen_fd, int port) {
    sigset_t empty;
    sigemptyset(&empty);
    signal(SIGCHLD, SIG_IGN); /* connection processes are reaped by the kernel */
    sigprocmask(SIG_SETMASK, &empty, NULL);
    for (;;) {
        struct pollfd p = {listen_fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0) {
            continue;
        }
        int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            continue; /* EAGAIN: another worker of the function took it */
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(listen_fd);
            int s = connect_local(port);
            if (s >= 0) {
                relay(c, s);
            }
            _exit(0);
        }
        close(c);
    }
}

static int run_main(char **argv) {
    sigset_t set, empty;
    blocked_set(&set);
    sigemptyset(&empty);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("faasd-init: sigprocmask");
        return 126;
    }
    if (forward_port > 0 && fcntl(3, F_GETFD) >= 0) {
        fcntl(3, F_SETFD, FD_CLOEXEC); /* the server does not get it: the forwarder serves it */
        unsetenv("FAASD_LISTEN_FD");
        pid_t fwd = fork();
        if (fwd == 0) {
            run_forwarder(3, forward_port);
            _exit(0);
        }
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("faasd-init: fork");
        return 126;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &empty, NULL);
        execvp(argv[0], argv);
        int err = errno;
        fprintf(stderr, "faasd-init: cannot run %s: %s\n", argv[0], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        if (sig != SIGCHLD) {
            kill(pid, sig);
            continue;
        }
        for (;;) {
            int status;
            pid_t got = waitpid(-1, &status, WNOHANG);
            if (got <= 0) {
                break;
            }
            if (got == pid) {
                reap_all();
                return as_exit_code(status);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("faasd-init 2");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--exec") == 0) {
        if (argc < 5 || strcmp(argv[3], "--") != 0) {
            fprintf(stderr, "usage: faasd-init --exec TIMEOUT_MS -- COMMAND [ARGS...]\n");
            return 126;
        }
        return run_command(strtol(argv[2], NULL, 10), argv + 4);
    }

    if (argc > 3 && strcmp(argv[1], "--main") == 0 && strcmp(argv[2], "--listen-fd-from") == 0) {
        receive_listen_fd(argv[3]); /* without it the command still runs, without a direct address */
        argv[3] = argv[1]; /* -> [.., --main, --, COMMAND...] */
        argv += 2;
        argc -= 2;
        if (argc > 3 && strcmp(argv[2], "--forward") == 0) {
            forward_port = atoi(argv[3]);
            argv[3] = argv[1];
            argv += 2;
            argc -= 2;
        }
    }
    if (argc > 1 && strcmp(argv[1], "--main") == 0) {
        if (argc < 4 || strcmp(argv[2], "--") != 0) {
            fprintf(stderr, "usage: faasd-init --main -- COMMAND [ARGS...]\n");
            return 126;
        }
        return run_main(argv + 3);
    }

    sigset_t set;
    int sig;
    blocked_set(&set);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("faasd-init: sigprocmask");
        return 1;
    }
    for (;;) {
        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        reap_all();
        if (sig != SIGCHLD) {
            return 0;
        }
    }
}
