/*
 * echo_server.c - loopback TCP echo server for the network benchmarks.
 *
 * Usage:
 *   echo_server [-c BYTES] [PORT]
 *
 * Listens on 127.0.0.1:PORT (default 0: a free port chosen by the kernel),
 * prints that port as one line on stdout once it accepts connections, and
 * echoes whatever each connection sends until the peer closes it.  One thread,
 * epoll (level-triggered), non-blocking sockets, any number of connections.
 *
 *   -c BYTES   close a connection as soon as BYTES bytes have been echoed on
 *              it.  For one-shot clients (connect, send N, recv N, close) with
 *              -c N the server closes first, so the TIME_WAIT sockets are the
 *              server's (all on its one port) and not the client's: loopback
 *              clients then do not run out of ephemeral ports.
 *
 * Stop it with SIGTERM or SIGINT (it also gets SIGTERM when its parent dies).
 * Errors go to stderr with a non-zero exit status.
 *
 * Build: cc -O2 -Wall -Wextra echo_server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_EVENTS 256

/* Per-connection state, indexed by fd; `pending` holds what a write left over. */
struct conn {
	char *pending;
	size_t len, off;
	unsigned long long echoed;
};

static struct conn *conns;
static int nconns;
static int epfd;
static unsigned long long close_after;	/* 0: never */

static void die(const char *what)
{
	fprintf(stderr, "echo_server: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long parse_num(const char *s, const char *name, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "echo_server: %s must be an integer in %ld..%ld, got '%s'\n",
			name, lo, hi, s);
		exit(2);
	}
	return v;
}

/* As many descriptors as the hard limit allows; the conn table follows it. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit");
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("setrlimit");
	nconns = rl.rlim_cur > (1 << 20) ? 1 << 20 : (int)rl.rlim_cur;
	conns = calloc((size_t)nconns, sizeof(*conns));
	if (!conns)
		die("calloc");
}

static void set_events(int fd, unsigned events, int op)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	if (epoll_ctl(epfd, op, fd, &ev) < 0)
		die("epoll_ctl");
}

static void drop(int fd)
{
	struct conn *c = &conns[fd];

	free(c->pending);
	memset(c, 0, sizeof(*c));
	close(fd);	/* also removes it from the epoll set */
}

/*
 * Send data: the pending rest of an earlier echo (from_pending) or what was
 * just read.  Returns 0 when all of it went, 1 when the socket is full (the
 * rest is kept in `pending` and the fd waits for EPOLLOUT instead of EPOLLIN,
 * which also stops reading from a client that does not read), -1 when the
 * connection is gone.
 */
static int put(int fd, const char *data, size_t len, int from_pending)
{
	struct conn *c = &conns[fd];

	while (len) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -1;
			if (from_pending) {
				c->off = (size_t)(data - c->pending);
			} else {
				c->pending = malloc(len);
				if (!c->pending)
					die("malloc");
				memcpy(c->pending, data, len);
				c->off = 0;
				c->len = len;
				set_events(fd, EPOLLOUT, EPOLL_CTL_MOD);
			}
			return 1;
		}
		data += n;
		len -= (size_t)n;
		c->echoed += (unsigned long long)n;
	}
	if (from_pending) {
		free(c->pending);
		c->pending = NULL;
		c->len = c->off = 0;
		set_events(fd, EPOLLIN, EPOLL_CTL_MOD);
	}
	return 0;
}

/* After a complete echo: close the connection once -c BYTES went out. */
static void echoed(int fd, int ret)
{
	if (ret < 0 || (ret == 0 && close_after && conns[fd].echoed >= close_after))
		drop(fd);
}

static void on_readable(int fd, char *buf)
{
	ssize_t n = recv(fd, buf, BUF_SIZE, 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {		/* peer closed (0) or reset (<0) */
		drop(fd);
		return;
	}
	echoed(fd, put(fd, buf, (size_t)n, 0));
}

static void on_writable(int fd)
{
	struct conn *c = &conns[fd];

	echoed(fd, put(fd, c->pending + c->off, c->len - c->off, 1));
}

static void on_listener(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE) {
				fprintf(stderr, "echo_server: accept4: %s\n", strerror(errno));
				return;
			}
			die("accept4");
		}
		if (fd >= nconns) {
			fprintf(stderr, "echo_server: fd %d beyond the table, dropped\n", fd);
			close(fd);
			continue;
		}
		set_events(fd, EPOLLIN, EPOLL_CTL_ADD);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct epoll_event events[MAX_EVENTS];
	socklen_t addrlen = sizeof(addr);
	char *buf;
	int opt, lfd, one = 1;
	long port = 0;
	pid_t parent;

	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c') {
			fprintf(stderr, "usage: echo_server [-c BYTES] [PORT]\n");
			return 2;
		}
		close_after = (unsigned long long)parse_num(optarg, "BYTES", 1, 1L << 40);
	}
	if (argc - optind > 1) {
		fprintf(stderr, "usage: echo_server [-c BYTES] [PORT]\n");
		return 2;
	}
	if (optind < argc)
		port = parse_num(argv[optind], "PORT", 0, 65535);

	/* Do not outlive the process (thread) that started us. */
	parent = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
		die("prctl");
	if (getppid() != parent)
		return 0;	/* it died before prctl */
	raise_nofile();
	buf = malloc(BUF_SIZE);
	if (!buf)
		die("malloc");

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt SO_REUSEADDR");
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((unsigned short)port);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind");
	if (listen(lfd, SOMAXCONN) < 0)	/* capped by net.core.somaxconn */
		die("listen");
	if (getsockname(lfd, (struct sockaddr *)&addr, &addrlen) < 0)
		die("getsockname");

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	set_events(lfd, EPOLLIN, EPOLL_CTL_ADD);

	printf("%u\n", ntohs(addr.sin_port));
	fflush(stdout);

	for (;;) {
		int n = epoll_wait(epfd, events, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			unsigned ev = events[i].events;

			if (fd == lfd)
				on_listener(lfd);
			else if (!conns[fd].pending)
				on_readable(fd, buf);	/* EPOLLIN, or HUP/ERR: recv says which */
			else if (ev & (EPOLLHUP | EPOLLERR))
				drop(fd);		/* the rest can no longer go out */
			else
				on_writable(fd);
		}
	}
}
