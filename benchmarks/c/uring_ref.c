/*
 * uring_ref.c - C/liburing reference numbers for the Python io_uring benchmarks.
 *
 * Usage:
 *   uring_ref nop   LOOPS BATCH CHAIN          BATCH chains of CHAIN linked NOPs per loop
 *   uring_ref nop4  LOOPS [BATCH]              the same with CHAIN = 4
 *   uring_ref nop1  LOOPS                      one NOP per io_uring_submit_and_wait
 *                                              (nop with BATCH = CHAIN = 1): the cost
 *                                              of one submit-and-wait round trip
 *   uring_ref file3 LOOPS DIR NFILES [BATCH]   openat_direct -> read 4 KiB -> close_direct
 *   uring_ref readfiles LOOPS DIR NFILES [BATCH]   read_files' chain: openat_direct -> read
 *                                              16 KiB -> read 1 -> close_direct (batch 1024)
 *                                              for DIR/f0000 .. DIR/f{NFILES-1:04d}
 *   uring_ref writefile LOOPS DIR              write_file's chains, one call after another:
 *                                              openat_direct DIR/.tmp (O_CREAT|O_EXCL) ->
 *                                              write 4 KiB -> fsync -> close_direct; then
 *                                              renameat over DIR/target -> openat_direct DIR
 *                                              -> fsync -> close_direct
 *   uring_ref copyfile LOOPS SRC DST           copy_file's chain at its best (the size is
 *                                              known, 4 KiB, so one trip): openat_direct SRC
 *                                              -> openat_direct DST (O_CREAT|O_TRUNC) ->
 *                                              read 4 KiB -> write 4 KiB -> close both
 *   uring_ref file1 LOOPS DIR NFILES           the same, one chain per
 *                                              io_uring_submit_and_wait (file3 with
 *                                              BATCH = 1)
 *   uring_ref file3refill LOOPS DIR NFILES [INFLIGHT]
 *                                              the file3 chain over LOOPS passes of
 *                                              the files, INFLIGHT (64) chains in
 *                                              flight, each completed chain's slot
 *                                              refilled with the next file at once
 *   uring_ref tcp5  LOOPS PORT [BATCH]         socket_direct -> connect 127.0.0.1:PORT ->
 *                                              send 64 B -> recv 64 B -> close_direct,
 *                                              BATCH chains (connections) per loop; PORT
 *                                              must echo (benchmarks/c/echo_server)
 *   uring_ref rr    LOOPS PORT [BATCH]         BATCH connections to 127.0.0.1:PORT, opened
 *                                              before timing; each does LOOPS linked
 *                                              send 64 B -> recv 64 B request-responses,
 *                                              its next one queued as soon as its last
 *                                              one completes (PORT must echo, without -c);
 *                                              blocking sockets with TCP_NODELAY, passed
 *                                              as plain fds (not registered files), as
 *                                              uringlets' rr does
 *
 * Prints exactly one line on stdout:  elapsed_ns=<int> executions=<int>
 * where elapsed_ns covers only the measured loops (CLOCK_MONOTONIC) and
 * executions is the number of chains completed (LOOPS*BATCH or LOOPS*NFILES,
 * LOOPS for nop1; for rr LOOPS*BATCH request-responses).
 * LOOPS may be 0: setup and teardown only (the baseline of a syscall count).
 * The submission ring is sized to hold one loop's SQEs (BATCH * SQEs per chain,
 * rounded up to a power of two), so each loop is one io_uring_enter to submit
 * and wait, plus more only if the CQEs come in several goes.  rr's loops are
 * not in step: it makes one io_uring_enter per round of completions (wait for
 * at least one, submitting the requests queued since the last round); so
 * does file3refill.
 * Errors go to stderr with a non-zero exit status.
 *
 * Build: cc -O2 -Wall -Wextra uring_ref.c -luring
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 32768	/* the kernel's IORING_MAX_ENTRIES */
#define READ_SIZE 4096
#define MSG_SIZE 64
#define LINK_SKIP (IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS)

static void die(const char *what, int err)
{
	fprintf(stderr, "uring_ref: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static long parse_num(const char *s, const char *name, long min)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < min) {
		fprintf(stderr, "uring_ref: %s must be an integer >= %ld, got '%s'\n", name, min,
			s);
		exit(2);
	}
	return v;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Set up a ring for `sqes` SQEs per submit (rounded up to a power of two) with
 * the fast-path flags, falling back to plain flags on -EINVAL.
 */
static void ring_init(struct io_uring *ring, long sqes)
{
	struct io_uring_params p;
	unsigned entries = 8;
	int ret;

	if (sqes > MAX_ENTRIES) {
		fprintf(stderr, "uring_ref: %ld SQEs per submit exceed %d\n", sqes, MAX_ENTRIES);
		exit(2);
	}
	while (entries < sqes)
		entries <<= 1;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL;
	ret = io_uring_queue_init_params(entries, ring, &p);
	if (ret == -EINVAL) {
		fprintf(stderr, "uring_ref: setup flags unsupported, falling back\n");
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(entries, ring, &p);
	}
	if (ret < 0)
		die("io_uring_queue_init_params", ret);
}

static struct io_uring_sqe *get_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe) {
		fprintf(stderr, "uring_ref: submission queue full\n");
		exit(1);
	}
	return sqe;
}

/*
 * Submit everything queued and reap exactly `chains` CQEs.  Every SQE but a
 * chain's tail carries CQE_SKIP_SUCCESS, so each chain posts exactly one CQE:
 * the tail's on success, or the first failing SQE's (the kernel then also
 * suppresses the CQEs of the cancelled rest of the link).
 * Returns the number of CQEs with res != 0 (all ops used here return 0).
 */
static long submit_and_reap(struct io_uring *ring, unsigned chains)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen;
	long errors = 0;
	int ret;

	ret = io_uring_submit_and_wait(ring, chains);
	if (ret < 0)
		die("io_uring_submit_and_wait", ret);
	while (chains) {
		seen = 0;
		io_uring_for_each_cqe(ring, head, cqe) {
			if (cqe->res != 0 && errors++ < 10)
				fprintf(stderr, "uring_ref: chain %llu failed: res=%d (%s)\n",
					(unsigned long long)cqe->user_data, cqe->res,
					cqe->res < 0 ? strerror(-cqe->res) : "unexpected");
			if (++seen == chains)
				break;
		}
		io_uring_cq_advance(ring, seen);
		chains -= seen;
		if (chains && (ret = io_uring_wait_cqe(ring, &cqe)) < 0)
			die("io_uring_wait_cqe", ret);
	}
	return errors;
}

/* nop: per loop BATCH chains of CHAIN linked NOPs, only the tail posts a CQE. */
static void run_nop(long loops, long batch, long chain)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	long errors = 0;
	uint64_t t0, t1;

	ring_init(&ring, batch * chain);

	t0 = now_ns();
	for (long l = 0; l < loops; l++) {
		for (long c = 0; c < batch; c++) {
			for (long k = 0; k < chain; k++) {
				sqe = get_sqe(&ring);
				io_uring_prep_nop(sqe);
				io_uring_sqe_set_data64(sqe, (uint64_t)c);
				if (k < chain - 1)
					io_uring_sqe_set_flags(sqe, LINK_SKIP);
			}
		}
		errors += submit_and_reap(&ring, batch);
	}
	t1 = now_ns();

	io_uring_queue_exit(&ring);
	if (errors) {
		fprintf(stderr, "uring_ref: nop: %ld failed CQEs\n", errors);
		exit(1);
	}
	printf("elapsed_ns=%llu executions=%ld\n", (unsigned long long)(t1 - t0), loops * batch);
}

/* The file set's paths: DIR/f0000 .. DIR/f{NFILES-1:04d}. */
static char **file3_paths(const char *dir, long nfiles)
{
	char **paths = calloc(nfiles, sizeof(*paths));

	if (!paths)
		die("calloc", ENOMEM);
	for (long i = 0; i < nfiles; i++)
		if (asprintf(&paths[i], "%s/f%04ld", dir, i) < 0)
			die("asprintf", ENOMEM);
	return paths;
}

/* Setup of the file benchmarks (not timed): a buffer of `size` bytes per
 * chain of a batch, a ring of `entries` SQEs, a sparse table of `batch`
 * direct-descriptor slots. */
static char *files_setup(struct io_uring *ring, long batch, size_t size, unsigned entries)
{
	char *bufs;
	int ret = posix_memalign((void **)&bufs, 4096, (size_t)batch * size);

	if (ret)
		die("posix_memalign", ret);
	ring_init(ring, entries);
	ret = io_uring_register_files_sparse(ring, (unsigned)batch);
	if (ret < 0)
		die("io_uring_register_files_sparse", ret);
	return bufs;
}

/* Teardown of the file benchmarks; exits 1 if any chain failed. */
static void files_teardown(struct io_uring *ring, char **paths, long nfiles, char *bufs,
			   const char *what, long errors)
{
	io_uring_queue_exit(ring);
	for (long i = 0; i < nfiles; i++)
		free(paths[i]);
	free(paths);
	free(bufs);
	if (errors) {
		fprintf(stderr, "uring_ref: %s: %ld failed CQEs\n", what, errors);
		exit(1);
	}
}

/*
 * Queue one file3 chain into direct-descriptor `slot`: openat_direct -> read
 * 4 KiB into `buf` (fixed file) -> close_direct, linked, CQE_SKIP_SUCCESS on
 * all but the close, so the chain posts one CQE (res 0 when all went well; a
 * failed open or a failed or short read posts that SQE's own CQE instead).
 */
static void file3_queue(struct io_uring *ring, const char *path, unsigned slot, char *buf,
			uint64_t ud)
{
	struct io_uring_sqe *sqe;

	sqe = get_sqe(ring);
	io_uring_prep_openat_direct(sqe, AT_FDCWD, path, O_RDONLY, 0, slot);
	io_uring_sqe_set_data64(sqe, ud);
	io_uring_sqe_set_flags(sqe, LINK_SKIP);

	sqe = get_sqe(ring);
	io_uring_prep_read(sqe, (int)slot, buf, READ_SIZE, 0);
	io_uring_sqe_set_data64(sqe, ud);
	io_uring_sqe_set_flags(sqe, LINK_SKIP | IOSQE_FIXED_FILE);

	sqe = get_sqe(ring);
	io_uring_prep_close_direct(sqe, slot);
	io_uring_sqe_set_data64(sqe, ud);	/* tail: posts the CQE */
}

/* file3: openat_direct -> read 4 KiB (fixed file) -> close_direct, per file. */
static void run_file3(long loops, const char *dir, long nfiles, long batch)
{
	struct io_uring ring;
	char **paths;
	char *bufs;
	long errors = 0;
	uint64_t t0, t1;

	/* Setup (not timed): paths, per-chain buffers, ring, sparse file table. */
	paths = file3_paths(dir, nfiles);
	bufs = files_setup(&ring, batch, READ_SIZE, (unsigned)batch * 3);

	t0 = now_ns();
	for (long l = 0; l < loops; l++) {
		for (long first = 0; first < nfiles; first += batch) {
			long n = nfiles - first < batch ? nfiles - first : batch;

			for (long c = 0; c < n; c++)	/* user_data: the file index */
				file3_queue(&ring, paths[first + c], (unsigned)c,
					    bufs + c * READ_SIZE, (uint64_t)(first + c));
			errors += submit_and_reap(&ring, (unsigned)n);
		}
	}
	t1 = now_ns();

	files_teardown(&ring, paths, nfiles, bufs, "file3", errors);
	printf("elapsed_ns=%llu executions=%ld\n", (unsigned long long)(t1 - t0), loops * nfiles);
}

/*
 * readfiles: the chain of uringlets' read_files, per file: openat_direct ->
 * read 16 KiB (hard-linked: a short read is the usual result, its CQE posts)
 * -> read 1 byte (hard-linked: 0 means the end was reached) -> close_direct;
 * BATCH chains per submit_and_wait, three CQEs each.  A file's bytes stay in
 * its buffer (what C hands a caller is a pointer and a length).
 */
#define READFILES_SIZE 16384
static void run_readfiles(long loops, const char *dir, long nfiles, long batch)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	char **paths;
	char *bufs, tail[1];
	long errors = 0, bytes = 0;
	uint64_t t0, t1;
	unsigned head;
	int ret;

	paths = file3_paths(dir, nfiles);
	bufs = files_setup(&ring, batch, READFILES_SIZE, (unsigned)batch * 4);

	t0 = now_ns();
	for (long l = 0; l < loops; l++) {
		for (long first = 0; first < nfiles; first += batch) {
			long n = nfiles - first < batch ? nfiles - first : batch;
			unsigned want = (unsigned)n * 3, seen;
			struct io_uring_sqe *sqe;

			for (long c = 0; c < n; c++) {
				sqe = get_sqe(&ring);
				io_uring_prep_openat_direct(sqe, AT_FDCWD, paths[first + c], O_RDONLY,
							    0, (unsigned)c);
				io_uring_sqe_set_data64(sqe, 0);
				io_uring_sqe_set_flags(sqe, LINK_SKIP);
				sqe = get_sqe(&ring);
				io_uring_prep_read(sqe, (int)c, bufs + c * READFILES_SIZE,
						   READFILES_SIZE, 0);
				io_uring_sqe_set_data64(sqe, 1);
				io_uring_sqe_set_flags(sqe, IOSQE_IO_HARDLINK | IOSQE_FIXED_FILE);
				sqe = get_sqe(&ring);
				io_uring_prep_read(sqe, (int)c, tail, 1, READFILES_SIZE);
				io_uring_sqe_set_data64(sqe, 2);
				io_uring_sqe_set_flags(sqe, IOSQE_IO_HARDLINK | IOSQE_FIXED_FILE);
				sqe = get_sqe(&ring);
				io_uring_prep_close_direct(sqe, (unsigned)c);
				io_uring_sqe_set_data64(sqe, 3);
			}
			ret = io_uring_submit_and_wait(&ring, want);
			if (ret < 0)
				die("io_uring_submit_and_wait", ret);
			while (want) {
				seen = 0;
				io_uring_for_each_cqe(&ring, head, cqe) {
					if (cqe->res < 0 || (cqe->user_data == 2 && cqe->res != 0))
						errors++;
					else if (cqe->user_data == 1)
						bytes += cqe->res;
					if (++seen == want)
						break;
				}
				io_uring_cq_advance(&ring, seen);
				want -= seen;
				if (want && (ret = io_uring_wait_cqe(&ring, &cqe)) < 0)
					die("io_uring_wait_cqe", ret);
			}
		}
	}
	t1 = now_ns();

	files_teardown(&ring, paths, nfiles, bufs, "readfiles", errors);
	printf("elapsed_ns=%llu executions=%ld bytes=%ld\n", (unsigned long long)(t1 - t0),
	       loops * nfiles, bytes);
}

/*
 * file3refill: LOOPS passes over the NFILES files (LOOPS * NFILES chains),
 * with INFLIGHT chains in flight, refilled as they complete.  Chain k reads
 * file k % NFILES into direct-descriptor slot s (user_data = s), buffer s.
 *
 * Timed loop: queue the first INFLIGHT chains, then repeat
 * io_uring_submit_and_wait(1) (which also submits what was queued since the
 * last call), drain every CQE there is, check each (res == 0: the chain's
 * close; anything else is the failing SQE's CQE) and queue the next file's
 * chain into the slot it freed, until every chain is done.  So at most
 * INFLIGHT chains are ever in flight, as in uringlets' file3-refill.
 */
static void run_file3_refill(long loops, const char *dir, long nfiles, long inflight)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	unsigned head, seen;
	char **paths;
	char *bufs;
	long errors = 0, total = loops * nfiles, next = 0, active = 0;
	uint64_t t0, t1;
	int ret;

	/* Setup (not timed): paths, per-slot buffers, ring, sparse file table. */
	paths = file3_paths(dir, nfiles);
	/* at most one chain (3 SQEs) per slot queued */
	bufs = files_setup(&ring, inflight, READ_SIZE, (unsigned)inflight * 3);

	t0 = now_ns();
	for (long s = 0; s < inflight && next < total; s++, next++, active++)
		file3_queue(&ring, paths[next % nfiles], (unsigned)s, bufs + s * READ_SIZE,
			    (uint64_t)s);
	while (active) {
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0)
			die("io_uring_submit_and_wait", ret);
		seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			long s = (long)cqe->user_data;

			seen++;
			if (cqe->res != 0 && errors++ < 10)
				fprintf(stderr, "uring_ref: file3refill: slot %ld failed: res=%d (%s)\n",
					s, cqe->res, cqe->res < 0 ? strerror(-cqe->res) : "short");
			if (next < total) {
				file3_queue(&ring, paths[next % nfiles], (unsigned)s,
					    bufs + s * READ_SIZE, (uint64_t)s);
				next++;
			} else {
				active--;
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
	t1 = now_ns();

	io_uring_queue_exit(&ring);
	for (long i = 0; i < nfiles; i++)
		free(paths[i]);
	free(paths);
	free(bufs);
	if (errors) {
		fprintf(stderr, "uring_ref: file3refill: %ld failed CQEs\n", errors);
		exit(1);
	}
	printf("elapsed_ns=%llu executions=%ld\n", (unsigned long long)(t1 - t0), total);
}

/*
 * tcp5: one short TCP connection per chain, five linked SQEs:
 *
 *   SOCKET  (socket_direct into slot c)  IO_LINK | CQE_SKIP_SUCCESS
 *   CONNECT (slot c, 127.0.0.1:PORT)     IO_LINK | CQE_SKIP_SUCCESS | FIXED_FILE
 *   SEND    64 B, MSG_WAITALL            IO_LINK | CQE_SKIP_SUCCESS | FIXED_FILE
 *   RECV    64 B, MSG_WAITALL            IO_LINK | CQE_SKIP_SUCCESS | FIXED_FILE
 *   CLOSE   (close_direct of slot c)     tail: posts the chain's one CQE
 *
 * MSG_WAITALL makes a short send or recv fail the request (io_uring's
 * min_ret), so it breaks the link and posts its CQE (res = bytes moved) and is
 * counted as an error.  The echoed bytes are compared after every batch.
 */
static void run_tcp5(long loops, long port, long batch)
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	char msg[MSG_SIZE];
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	char *bufs;
	long errors = 0, wrong = 0;
	uint64_t t0, t1;
	int ret;

	if (port > 65535) {
		fprintf(stderr, "uring_ref: PORT must be <= 65535\n");
		exit(2);
	}
	/* Setup (not timed): message, per-chain buffers, ring, sparse file table. */
	memset(msg, 'x', sizeof(msg));
	bufs = calloc((size_t)batch, MSG_SIZE);
	if (!bufs)
		die("calloc", ENOMEM);
	ring_init(&ring, batch * 5);
	ret = io_uring_register_files_sparse(&ring, (unsigned)batch);
	if (ret < 0)
		die("io_uring_register_files_sparse", ret);

	t0 = now_ns();
	for (long l = 0; l < loops; l++) {
		for (long c = 0; c < batch; c++) {
			unsigned slot = (unsigned)c;
			char *buf = bufs + c * MSG_SIZE;
			uint64_t ud = (uint64_t)c;

			sqe = get_sqe(&ring);
			io_uring_prep_socket_direct(sqe, AF_INET, SOCK_STREAM, 0, slot, 0);
			io_uring_sqe_set_data64(sqe, ud);
			io_uring_sqe_set_flags(sqe, LINK_SKIP);

			sqe = get_sqe(&ring);
			io_uring_prep_connect(sqe, (int)slot, (struct sockaddr *)&addr,
					      sizeof(addr));
			io_uring_sqe_set_data64(sqe, ud);
			io_uring_sqe_set_flags(sqe, LINK_SKIP | IOSQE_FIXED_FILE);

			sqe = get_sqe(&ring);
			io_uring_prep_send(sqe, (int)slot, msg, MSG_SIZE, MSG_WAITALL);
			io_uring_sqe_set_data64(sqe, ud);
			io_uring_sqe_set_flags(sqe, LINK_SKIP | IOSQE_FIXED_FILE);

			sqe = get_sqe(&ring);
			io_uring_prep_recv(sqe, (int)slot, buf, MSG_SIZE, MSG_WAITALL);
			io_uring_sqe_set_data64(sqe, ud);
			io_uring_sqe_set_flags(sqe, LINK_SKIP | IOSQE_FIXED_FILE);

			sqe = get_sqe(&ring);
			io_uring_prep_close_direct(sqe, slot);
			io_uring_sqe_set_data64(sqe, ud);	/* tail: posts the CQE */
		}
		errors += submit_and_reap(&ring, (unsigned)batch);
		for (long c = 0; c < batch; c++) {
			char *buf = bufs + c * MSG_SIZE;

			if (memcmp(buf, msg, MSG_SIZE) != 0)
				wrong++;
			memset(buf, 0, MSG_SIZE);
		}
	}
	t1 = now_ns();

	io_uring_queue_exit(&ring);
	free(bufs);
	if (errors || wrong) {
		fprintf(stderr, "uring_ref: tcp5: %ld failed CQEs, %ld wrong echoes\n", errors,
			wrong);
		exit(1);
	}
	printf("elapsed_ns=%llu executions=%ld\n", (unsigned long long)(t1 - t0), loops * batch);
}

/*
 * rr setup (not timed): `n` blocking TCP connections to `addr`, as the Python
 * peers' sockets are made (workloads.connected_sockets): connect, TCP_NODELAY,
 * one echo of `msg` checked.  Returns the fds.
 */
static int *rr_connect(const struct sockaddr_in *addr, long n, const char *msg)
{
	char got[MSG_SIZE];
	int one = 1;
	int *fds = calloc((size_t)n, sizeof(*fds));

	if (!fds)
		die("calloc", ENOMEM);
	for (long c = 0; c < n; c++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			die("socket", errno);
		if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
			die("connect", errno);
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			die("setsockopt(TCP_NODELAY)", errno);
		if (send(fd, msg, MSG_SIZE, MSG_NOSIGNAL) != MSG_SIZE)
			die("setup send", errno);
		if (recv(fd, got, MSG_SIZE, MSG_WAITALL) != MSG_SIZE ||
		    memcmp(got, msg, MSG_SIZE) != 0) {
			fprintf(stderr, "uring_ref: rr: the echo server answered the setup echo "
					"wrongly\n");
			exit(1);
		}
		fds[c] = fd;
	}
	return fds;
}

/* Queue connection c's request: two linked SQEs, only the recv posts a CQE. */
static void rr_queue(struct io_uring *ring, int fd, const char *msg, char *buf, uint64_t c)
{
	struct io_uring_sqe *sqe;

	sqe = get_sqe(ring);
	io_uring_prep_send(sqe, fd, msg, MSG_SIZE, MSG_WAITALL);
	io_uring_sqe_set_data64(sqe, c);
	io_uring_sqe_set_flags(sqe, LINK_SKIP);

	sqe = get_sqe(ring);
	io_uring_prep_recv(sqe, fd, buf, MSG_SIZE, MSG_WAITALL);
	io_uring_sqe_set_data64(sqe, c);	/* tail: posts the request's CQE */
}

/*
 * rr: request-response on BATCH open connections, each doing LOOPS requests
 * in turn, all BATCH busy at once:
 *
 *   SEND  64 B, MSG_WAITALL   IO_LINK | CQE_SKIP_SUCCESS   user_data = connection
 *   RECV  64 B, MSG_WAITALL   tail: posts the request's one CQE (res = 64)
 *
 * The sockets are plain (blocking) fds, not registered files: the same as
 * uringlets' rr program, which takes the socket as a Param("fd") int (the
 * sockets are bench_net.rr_sockets(True), blocking, TCP_NODELAY).  Fixed files
 * would save an fget/fput per SQE; they are left out to keep the comparison
 * like for like.
 *
 * Timed loop: queue every connection's first request, then repeat
 * io_uring_submit_and_wait(1) (which also submits what was queued since the
 * last call), drain every CQE there is, check each (res == 64 and the echoed
 * bytes) and queue that connection's next request if it has any left, until
 * all LOOPS*BATCH requests are done.  As in tcp5, a short or failed send or
 * recv breaks the link and posts the request's one CQE with res != 64; it is
 * counted and the connection goes on with its next request.
 */
static void run_rr(long loops, long port, long batch)
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	char msg[MSG_SIZE];
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	unsigned head, seen;
	char *bufs;
	long *left;
	int *fds;
	long errors = 0, wrong = 0, active;
	uint64_t t0, t1;
	int ret;

	if (port > 65535) {
		fprintf(stderr, "uring_ref: PORT must be <= 65535\n");
		exit(2);
	}
	/*
	 * Setup (not timed): SIGPIPE ignored as in Python (a send to a closed
	 * connection then fails with -EPIPE instead of killing the process),
	 * message, connections, per-connection buffers, ring.
	 */
	signal(SIGPIPE, SIG_IGN);
	memset(msg, 'x', sizeof(msg));
	fds = rr_connect(&addr, batch, msg);
	bufs = calloc((size_t)batch, MSG_SIZE);
	left = calloc((size_t)batch, sizeof(*left));
	if (!bufs || !left)
		die("calloc", ENOMEM);
	for (long c = 0; c < batch; c++)
		left[c] = loops;
	ring_init(&ring, batch * 2);	/* at most one request (2 SQEs) per connection */

	t0 = now_ns();
	active = loops ? batch : 0;	/* connections with a request in flight */
	for (long c = 0; c < active; c++)
		rr_queue(&ring, fds[c], msg, bufs + c * MSG_SIZE, (uint64_t)c);
	while (active) {
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0)
			die("io_uring_submit_and_wait", ret);
		seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			long c = (long)cqe->user_data;
			char *buf = bufs + c * MSG_SIZE;

			seen++;
			if (cqe->res != MSG_SIZE) {
				if (errors++ < 10)
					fprintf(stderr, "uring_ref: rr: connection %ld failed: "
							"res=%d (%s)\n", c, cqe->res,
						cqe->res < 0 ? strerror(-cqe->res) : "short");
			} else if (memcmp(buf, msg, MSG_SIZE) != 0) {
				wrong++;
			}
			memset(buf, 0, MSG_SIZE);
			if (--left[c])
				rr_queue(&ring, fds[c], msg, buf, (uint64_t)c);
			else
				active--;
		}
		io_uring_cq_advance(&ring, seen);
	}
	t1 = now_ns();

	io_uring_queue_exit(&ring);
	for (long c = 0; c < batch; c++)
		close(fds[c]);
	free(fds);
	free(bufs);
	free(left);
	if (errors || wrong) {
		fprintf(stderr, "uring_ref: rr: %ld failed CQEs, %ld wrong echoes\n", errors, wrong);
		exit(1);
	}
	printf("elapsed_ns=%llu executions=%ld\n", (unsigned long long)(t1 - t0), loops * batch);
}

/* Submit what is queued, wait for `want` CQEs, and count the failed ones. */
static long wait_all(struct io_uring *ring, unsigned want)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen;
	long errors = 0;
	int ret = io_uring_submit_and_wait(ring, want);

	if (ret < 0)
		die("io_uring_submit_and_wait", ret);
	while (want) {
		seen = 0;
		io_uring_for_each_cqe(ring, head, cqe) {
			if (cqe->res < 0 && errors++ < 10)
				fprintf(stderr, "uring_ref: step %llu failed: %s\n",
					(unsigned long long)cqe->user_data, strerror(-cqe->res));
			if (++seen == want)
				break;
		}
		io_uring_cq_advance(ring, seen);
		want -= seen;
		if (want && (ret = io_uring_wait_cqe(ring, &cqe)) < 0)
			die("io_uring_wait_cqe", ret);
	}
	return errors;
}

/* After its prep (which clears the flags): user_data, FIXED_FILE when it
 * names a slot, and IO_LINK for all but the chain's last SQE. */
static void step(struct io_uring_sqe *sqe, uint64_t ud, int fixed, int last)
{
	io_uring_sqe_set_data64(sqe, ud);
	if (fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
	if (!last)
		sqe->flags |= IOSQE_IO_LINK;
}

/* The ring of the one-call-at-a-time chains below: 8 SQEs, 2 slots. */
static void chain_ring(struct io_uring *ring)
{
	int ret;

	ring_init(ring, 8);
	ret = io_uring_register_files_sparse(ring, 2);
	if (ret < 0)
		die("io_uring_register_files_sparse", ret);
}

/* Tear the ring down and print the one line (or fail if any step did). */
static void chain_report(struct io_uring *ring, const char *what, long errors, uint64_t ns,
			 long loops)
{
	io_uring_queue_exit(ring);
	if (errors) {
		fprintf(stderr, "uring_ref: %s: %ld failed CQEs\n", what, errors);
		exit(1);
	}
	printf("elapsed_ns=%llu executions=%ld\n", (unsigned long long)ns, loops);
}

/* writefile: write_file's two chains per loop (every SQE posts a CQE). */
static void run_writefile(long loops, const char *dir)
{
	struct io_uring ring;
	char tmp[4096], target[4096], data[4096];
	long errors = 0;
	uint64_t t0, t1;

	memset(data, 'x', sizeof(data));
	snprintf(tmp, sizeof(tmp), "%s/.target.tmp", dir);
	snprintf(target, sizeof(target), "%s/target", dir);
	chain_ring(&ring);
	t0 = now_ns();
	for (long l = 0; l < loops; l++) {
		struct io_uring_sqe *sqe;

		sqe = get_sqe(&ring);
		io_uring_prep_openat_direct(sqe, AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_EXCL, 0666, 0);
		step(sqe, 0, 0, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_write(sqe, 0, data, sizeof(data), 0);
		step(sqe, 1, 1, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_fsync(sqe, 0, 0);
		step(sqe, 2, 1, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_close_direct(sqe, 0);
		step(sqe, 3, 0, 1);
		errors += wait_all(&ring, 4);

		sqe = get_sqe(&ring);
		io_uring_prep_renameat(sqe, AT_FDCWD, tmp, AT_FDCWD, target, 0);
		step(sqe, 4, 0, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_openat_direct(sqe, AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0, 1);
		step(sqe, 5, 0, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_fsync(sqe, 1, 0);
		step(sqe, 6, 1, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_close_direct(sqe, 1);
		step(sqe, 7, 0, 1);
		errors += wait_all(&ring, 4);
	}
	t1 = now_ns();
	chain_report(&ring, "writefile", errors, t1 - t0, loops);
}

/* copyfile: copy_file's chain for a 4 KiB file, one trip per loop. */
static void run_copyfile(long loops, const char *src, const char *dst)
{
	struct io_uring ring;
	char buf[4096];
	long errors = 0;
	uint64_t t0, t1;

	chain_ring(&ring);
	t0 = now_ns();
	for (long l = 0; l < loops; l++) {
		struct io_uring_sqe *sqe;

		sqe = get_sqe(&ring);
		io_uring_prep_openat_direct(sqe, AT_FDCWD, src, O_RDONLY, 0, 0);
		step(sqe, 0, 0, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_openat_direct(sqe, AT_FDCWD, dst, O_WRONLY | O_CREAT | O_TRUNC, 0666, 1);
		step(sqe, 1, 0, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_read(sqe, 0, buf, sizeof(buf), 0);
		step(sqe, 2, 1, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_write(sqe, 1, buf, sizeof(buf), 0);
		step(sqe, 3, 1, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_close_direct(sqe, 1);
		step(sqe, 4, 0, 0);
		sqe = get_sqe(&ring);
		io_uring_prep_close_direct(sqe, 0);
		step(sqe, 5, 0, 1);
		errors += wait_all(&ring, 6);
	}
	t1 = now_ns();
	chain_report(&ring, "copyfile", errors, t1 - t0, loops);
}

static void usage(void)
{
	fprintf(stderr, "usage: uring_ref nop LOOPS BATCH CHAIN\n"
			"       uring_ref nop4 LOOPS [BATCH]\n"
			"       uring_ref nop1 LOOPS\n"
			"       uring_ref file3 LOOPS DIR NFILES [BATCH]\n"
			"       uring_ref file1 LOOPS DIR NFILES\n"
			"       uring_ref readfiles LOOPS DIR NFILES [BATCH]\n"
			"       uring_ref writefile LOOPS DIR\n"
			"       uring_ref copyfile LOOPS SRC DST\n"
			"       uring_ref file3refill LOOPS DIR NFILES [INFLIGHT]\n"
			"       uring_ref tcp5 LOOPS PORT [BATCH]\n"
			"       uring_ref rr LOOPS PORT [BATCH]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long loops;

	if (argc < 3)
		usage();
	loops = parse_num(argv[2], "LOOPS", 0);
	if (!strcmp(argv[1], "nop") && argc == 5) {
		run_nop(loops, parse_num(argv[3], "BATCH", 1), parse_num(argv[4], "CHAIN", 1));
	} else if (!strcmp(argv[1], "nop4") && argc <= 4) {
		run_nop(loops, argc > 3 ? parse_num(argv[3], "BATCH", 1) : 64, 4);
	} else if (!strcmp(argv[1], "nop1") && argc == 3) {
		run_nop(loops, 1, 1);
	} else if (!strcmp(argv[1], "file3") && (argc == 5 || argc == 6)) {
		run_file3(loops, argv[3], parse_num(argv[4], "NFILES", 1),
			  argc > 5 ? parse_num(argv[5], "BATCH", 1) : 64);
	} else if (!strcmp(argv[1], "readfiles") && (argc == 5 || argc == 6)) {
		run_readfiles(loops, argv[3], parse_num(argv[4], "NFILES", 1),
			      argc > 5 ? parse_num(argv[5], "BATCH", 1) : 1024);
	} else if (!strcmp(argv[1], "writefile") && argc == 4) {
		run_writefile(loops, argv[3]);
	} else if (!strcmp(argv[1], "copyfile") && argc == 5) {
		run_copyfile(loops, argv[3], argv[4]);
	} else if (!strcmp(argv[1], "file1") && argc == 5) {
		run_file3(loops, argv[3], parse_num(argv[4], "NFILES", 1), 1);
	} else if (!strcmp(argv[1], "file3refill") && (argc == 5 || argc == 6)) {
		run_file3_refill(loops, argv[3], parse_num(argv[4], "NFILES", 1),
				 argc > 5 ? parse_num(argv[5], "INFLIGHT", 1) : 64);
	} else if (!strcmp(argv[1], "tcp5") && (argc == 4 || argc == 5)) {
		run_tcp5(loops, parse_num(argv[3], "PORT", 1),
			 argc > 4 ? parse_num(argv[4], "BATCH", 1) : 64);
	} else if (!strcmp(argv[1], "rr") && (argc == 4 || argc == 5)) {
		run_rr(loops, parse_num(argv[3], "PORT", 1),
		       argc > 4 ? parse_num(argv[4], "BATCH", 1) : 64);
	} else {
		usage();
	}
	return 0;
}
