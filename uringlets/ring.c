/*
 * ring.c -- the smallest layer that can drive io_uring from Python, compiled
 * into the cffi extension uringlets._ring.
 *
 * It sets a ring up, copies runs of pre-built SQE images into the SQ ring
 * (patching the few per-execution fields), enters the kernel, and drains CQEs
 * into caller-owned arrays.  Python calls it once per batch, never once per
 * SQE or CQE.  It decides nothing: which flags, which images, what a CQE
 * means, all of that is Python's.  Errors are returned as -errno.
 *
 * Sections: memory ordering, system calls, setup/teardown (cold), the
 * submit/reap path (hot; it allocates nothing).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ring_compat.h"
#include "ring.h"

/* ------------------------------------------------------------------------
 * Memory ordering.
 *
 * The SQ and CQ rings are shared with the kernel.  Each index has one
 * writer.  A writer that publishes data (SQEs, or consumed CQE slots) must
 * make the data visible before the index that announces it: a store-release.
 * A reader that learns of new data through an index must read the index
 * before the data: a load-acquire.  These macros are the only atomics in this
 * file; no other line touches a shared index.
 * ---------------------------------------------------------------------- */
#define load_acquire(p) atomic_load_explicit((_Atomic unsigned *)(p), memory_order_acquire)
#define store_release(p, v) atomic_store_explicit((_Atomic unsigned *)(p), (v), memory_order_release)
/* Relaxed: for an index only we write (our SQ tail, our CQ head). */
#define load_relaxed(p) atomic_load_explicit((_Atomic unsigned *)(p), memory_order_relaxed)

/* ------------------------------------------------------------------------
 * System calls (glibc 2.36 has no wrappers for these).
 * ---------------------------------------------------------------------- */
static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    long r = syscall(__NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete,
                     unsigned flags, void *arg, size_t argsz)
{
    long r = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags,
                     arg, argsz);
    return r < 0 ? -errno : (int)r;
}

static int sys_register(int fd, unsigned opcode, const void *arg,
                        unsigned nr_args)
{
    long r = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    return r < 0 ? -errno : (int)r;
}

/* ------------------------------------------------------------------------
 * Setup and teardown (cold).
 * ---------------------------------------------------------------------- */

/* Create a ring of `entries` SQEs and `cq_entries` CQEs (0: kernel default)
 * with `flags` (IORING_SETUP_*; CQSIZE is added when cq_entries is given).
 * Returns 0, or -errno with the ring left empty (fd == -1).  Falling back to
 * fewer flags on -EINVAL is the caller's decision. */
int ur_setup(struct ur_ring *ring, unsigned entries, unsigned cq_entries,
             unsigned flags)
{
    struct io_uring_params p;
    unsigned *array;
    unsigned i;
    int err;

    memset(ring, 0, sizeof(*ring));
    ring->fd = -1;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    err = sys_setup(entries, &p);
    if (err < 0)
        return err;
    ring->fd = err;
    ring->features = p.features;
    ring->setup_flags = p.flags;
    ring->sq_entries = p.sq_entries;
    ring->cq_entries = p.cq_entries;

    ring->sq_map_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    ring->cq_map_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if ((p.features & IORING_FEAT_SINGLE_MMAP) && ring->cq_map_size > ring->sq_map_size)
        ring->sq_map_size = ring->cq_map_size;
    ring->sq_map = mmap(NULL, ring->sq_map_size, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_POPULATE, ring->fd, IORING_OFF_SQ_RING);
    if (ring->sq_map == MAP_FAILED) {
        ring->sq_map = NULL;
        err = -errno;
        goto fail;
    }
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        ring->cq_map = ring->sq_map;
    } else {
        ring->cq_map = mmap(NULL, ring->cq_map_size, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_POPULATE, ring->fd, IORING_OFF_CQ_RING);
        if (ring->cq_map == MAP_FAILED) {
            ring->cq_map = NULL;
            err = -errno;
            goto fail;
        }
    }
    ring->sqe_map_size = p.sq_entries * sizeof(struct io_uring_sqe);
    ring->sqe_map = mmap(NULL, ring->sqe_map_size, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, ring->fd, IORING_OFF_SQES);
    if (ring->sqe_map == MAP_FAILED) {
        ring->sqe_map = NULL;
        err = -errno;
        goto fail;
    }

    ring->sq_head = (unsigned *)((char *)ring->sq_map + p.sq_off.head);
    ring->sq_tail = (unsigned *)((char *)ring->sq_map + p.sq_off.tail);
    ring->sq_mask = (unsigned *)((char *)ring->sq_map + p.sq_off.ring_mask);
    ring->sq_flags = (unsigned *)((char *)ring->sq_map + p.sq_off.flags);
    ring->cq_head = (unsigned *)((char *)ring->cq_map + p.cq_off.head);
    ring->cq_tail = (unsigned *)((char *)ring->cq_map + p.cq_off.tail);
    ring->cq_mask = (unsigned *)((char *)ring->cq_map + p.cq_off.ring_mask);
    ring->sqes = ring->sqe_map;
    ring->cqes = (char *)ring->cq_map + p.cq_off.cqes;

    /* The SQ index array maps ring position i to SQE i, once and for all;
     * ur_push then only writes SQEs and the tail.  The kernel reads the array
     * only after the store-release of a tail that follows these stores. */
    array = (unsigned *)((char *)ring->sq_map + p.sq_off.array);
    for (i = 0; i < p.sq_entries; i++)
        array[i] = i;
    return 0;

fail:
    ur_teardown(ring);
    return err;
}

/* Unmap and close.  Safe on a ring that failed half way, and twice.
 * Closing the fd makes the kernel cancel whatever is still in flight; the
 * caller must have reaped every CQE first if buffers are to be freed. */
void ur_teardown(struct ur_ring *ring)
{
    if (ring->sqe_map)
        munmap(ring->sqe_map, ring->sqe_map_size);
    if (ring->cq_map && ring->cq_map != ring->sq_map)
        munmap(ring->cq_map, ring->cq_map_size);
    if (ring->sq_map)
        munmap(ring->sq_map, ring->sq_map_size);
    ring->sqe_map = ring->cq_map = ring->sq_map = NULL;
    if (ring->fd >= 0)
        close(ring->fd);
    ring->fd = -1;
}

/* Fill supported[op] with 1 for each opcode < n the kernel supports.
 * Returns the number of opcodes the kernel knows, or -errno. */
int ur_probe_ops(int ring_fd, uint8_t *supported, unsigned n)
{
    struct {
        struct io_uring_probe probe;
        struct io_uring_probe_op ops[256];
    } buf;
    unsigned i;
    int err;

    memset(&buf, 0, sizeof(buf));
    memset(supported, 0, n);
    err = sys_register(ring_fd, IORING_REGISTER_PROBE, &buf, 256);
    if (err < 0)
        return err;
    for (i = 0; i < buf.probe.ops_len && i < 256; i++) {
        unsigned op = buf.ops[i].op;
        if (op < n && (buf.ops[i].flags & IO_URING_OP_SUPPORTED))
            supported[op] = 1;
    }
    return buf.probe.ops_len;
}

/* Register a sparse fixed-file table of n empty slots.  Returns 0 or -errno. */
int ur_register_sparse_files(struct ur_ring *ring, unsigned n)
{
    struct io_uring_rsrc_register reg;

    memset(&reg, 0, sizeof(reg));
    reg.nr = n;
    reg.flags = IORING_RSRC_REGISTER_SPARSE;
    return sys_register(ring->fd, IORING_REGISTER_FILES2, &reg, sizeof(reg));
}

/* Register an eventfd the kernel signals when completions are posted (with
 * DEFER_TASKRUN: when completion work is queued for the next enter), or
 * unregister it (fd < 0).  Returns 0 or -errno. */
int ur_register_eventfd(struct ur_ring *ring, int fd)
{
    if (fd < 0)
        return sys_register(ring->fd, IORING_UNREGISTER_EVENTFD, NULL, 0);
    return sys_register(ring->fd, IORING_REGISTER_EVENTFD, &fd, 1);
}

/* Replace slots [offset, offset + n) with fds (-1 empties a slot, closing the
 * file it held).  Synchronous.  Returns the number updated or -errno. */
int ur_update_files(struct ur_ring *ring, unsigned offset, const int32_t *fds,
                    unsigned n)
{
    struct io_uring_files_update up;

    memset(&up, 0, sizeof(up));
    up.offset = offset;
    up.fds = (uint64_t)(uintptr_t)fds;
    return sys_register(ring->fd, IORING_REGISTER_FILES_UPDATE, &up, n);
}

/* ------------------------------------------------------------------------
 * Submit and reap (hot).
 * ---------------------------------------------------------------------- */

/* Free SQ entries.  Without SQPOLL the kernel moves the SQ head only inside
 * io_uring_enter, on this thread, so a relaxed load would do; the acquire
 * costs nothing on x86 and keeps this right if SQPOLL is ever used. */
unsigned ur_sq_space(struct ur_ring *ring)
{
    unsigned head = load_acquire(ring->sq_head);
    unsigned tail = load_relaxed(ring->sq_tail);
    return ring->sq_entries - (tail - head);
}

/* CQEs waiting in the CQ ring.  Acquire pairs with the kernel's release of
 * the tail: a count read here covers CQEs whose contents are visible. */
unsigned ur_cq_ready(struct ur_ring *ring)
{
    return load_acquire(ring->cq_tail) - load_relaxed(ring->cq_head);
}

/* The SQ ring flags the kernel sets (IORING_SQ_CQ_OVERFLOW: CQEs wait in the
 * kernel's overflow list and reach the CQ ring at the next enter with
 * GETEVENTS).  Acquire pairs with the kernel's update of the flags. */
unsigned ur_sq_flags(struct ur_ring *ring)
{
    return load_acquire(ring->sq_flags);
}

/* For each of nexec executions, copy SQE images [first, first + count) into
 * the SQ ring and apply the patches of that range.  The values are stored by
 * column: value v of execution e is values[v * vstride + e].  The flags in
 * `last_flags_clear` are cleared on the last SQE of each run, so each run is
 * a complete chain.  Execution e's SQEs get user_data image.user_data +
 * ud_first + e * ud_step (the images carry the atom byte; the caller gives
 * the execution's base and the step between executions), so no column of
 * per-execution user_data is needed.  Only whole runs are queued.  Returns
 * the number of
 * executions queued (fewer than nexec when the SQ ring is full: enter, then
 * call again from the next execution), or -EINVAL for a run that can never
 * fit. */
int ur_push(struct ur_ring *ring, const void *images, unsigned first,
            unsigned count, const struct ur_patch *patches, unsigned npatches,
            const int64_t *values, unsigned vstride, unsigned nexec,
            uint8_t last_flags_clear, uint64_t ud_first, uint64_t ud_step)
{
    const struct io_uring_sqe *src = (const struct io_uring_sqe *)images + first;
    struct io_uring_sqe *sqes = ring->sqes;
    unsigned mask = *ring->sq_mask;
    unsigned tail = load_relaxed(ring->sq_tail);
    unsigned space = ur_sq_space(ring);
    unsigned e, i, p;

    if (count == 0 || count > ring->sq_entries)
        return -EINVAL;
    for (e = 0; e < nexec && space >= count; e++, space -= count) {

        uint64_t ud = ud_first + (uint64_t)e * ud_step;

        for (i = 0; i < count; i++) {
            struct io_uring_sqe *sqe = &sqes[(tail + i) & mask];

            *sqe = src[i];
            sqe->user_data += ud;
        }
        for (p = 0; p < npatches; p++) {
            const struct ur_patch *pt = &patches[p];
            char *field;
            uint64_t v;

            if (pt->sqe < first || pt->sqe >= first + count)
                continue;
            field = (char *)&sqes[(tail + pt->sqe - first) & mask] + pt->offset;
            v = (uint64_t)(values[(size_t)pt->value * vstride + e] + pt->addend);
            if (pt->width == 8) {
                memcpy(field, &v, 8);
            } else if (pt->width == 4) {
                uint32_t u = (uint32_t)v;
                memcpy(field, &u, 4);
            } else {
                uint16_t u = (uint16_t)v;
                memcpy(field, &u, 2);
            }
        }
        sqes[(tail + count - 1) & mask].flags &= (uint8_t)~last_flags_clear;
        /* The first request of a hard-linked run always posts: refused at
         * submission with CQE_SKIP_SUCCESS it would silence the rest of
         * the link (SKIP_LINK_CQES), and a hard link otherwise goes on, so
         * the engine could not tell the two apart. */
        if (sqes[tail & mask].flags & IOSQE_IO_HARDLINK)
            sqes[tail & mask].flags &= (uint8_t)~IOSQE_CQE_SKIP_SUCCESS;
        tail += count;
    }
    if (e) {
        /* Publish: the SQEs written above must be visible before the kernel
         * can see the new tail (pairs with the kernel's acquire of sq.tail). */
        store_release(ring->sq_tail, tail);
        ring->pending += e * count;
    }
    return (int)e;
}

/* Submit every pending SQE and run completions: waits for min_complete CQEs
 * (0: do not wait) for at most timeout_ns (< 0: no limit).
 * With DEFER_TASKRUN completions are only posted inside this call, so the
 * reaper calls it with GETEVENTS even when it does not wait.
 * Returns the number of SQEs the kernel consumed, or -errno (-ETIME when the
 * wait timed out, -EINTR on a signal, -EBUSY when the CQ overflowed and must
 * be reaped first).  `pending` drops by what the kernel consumed. */
int ur_enter(struct ur_ring *ring, unsigned min_complete, int64_t timeout_ns)
{
    unsigned flags = IORING_ENTER_GETEVENTS;
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    void *argp = NULL;
    size_t argsz = 0;
    int r;

    if (min_complete && timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        memset(&arg, 0, sizeof(arg));
        arg.ts = (uint64_t)(uintptr_t)&ts;
        flags |= IORING_ENTER_EXT_ARG;
        argp = &arg;
        argsz = sizeof(arg);
    }
    r = sys_enter(ring->fd, ring->pending, min_complete, flags, argp, argsz);
    if (r > 0)
        ring->pending -= (unsigned)r > ring->pending ? ring->pending : (unsigned)r;
    return r;
}

/* Copy up to max CQEs out of the CQ ring and hand the CQ slots back to the
 * kernel, sorting them while copying.  A CQE is *clean* when its user_data
 * with the k field cleared equals fast_ud[batch] of its batch, batch <
 * nbatches (the user_data that ends a clean execution of that batch; 0:
 * none; with nbatches 0 fast_ud may be NULL and no CQE is clean): its k and
 * res go to clean_k/clean_res, and *nclean counts them.  They are cut into
 * *nruns runs of consecutive clean CQEs of one batch, described in
 * clean_runs, UR_RUN_FIELDS int32 per run (room for max runs): the batch,
 * the end of the run in clean_k/clean_res (its start is the previous run's
 * end, or 0), the lowest and highest res (a stop rule is then tested on two
 * numbers), and the first k when the run's k are consecutive (k0, k0 + 1,
 * ...), else -1.  A batch may have several runs when batches interleave.
 * A posted CQE of a batch on its clean path (posted may be NULL: none) is
 * stored in that batch's posted results (ring.h, struct ur_posted) and
 * counted in *nposted.  Every other CQE goes to user_data/res, in ring
 * order.  Returns the number taken in all (clean, posted and others).
 * Only the CQ ring is shared here: fast_ud and posted are the caller's;
 * posted[b].res is written, and only while Python has it set (the
 * single-issuer owner thread runs both, so no ordering is needed). */
int ur_reap_split(struct ur_ring *ring, const uint64_t *fast_ud,
                  struct ur_posted *posted,
                  unsigned nbatches, uint64_t *user_data, int32_t *res,
                  uint32_t *clean_k, int32_t *clean_res, unsigned max,
                  unsigned *nclean, int32_t *clean_runs, unsigned *nruns,
                  unsigned *nposted)
{
    const struct io_uring_cqe *cqes = ring->cqes;
    unsigned mask = *ring->cq_mask;
    unsigned head = load_relaxed(ring->cq_head);
    /* Acquire: the CQEs the kernel posted before moving the tail are visible. */
    unsigned tail = load_acquire(ring->cq_tail);
    uint64_t k_field = (uint64_t)UR_UD_K_MASK << UR_UD_K_SHIFT;
    unsigned n = 0, nc = 0, no = 0, nr = 0, np = 0, run_start = 0;
    int32_t *run = clean_runs - UR_RUN_FIELDS; /* the current run, once nr > 0 */

    while (head != tail && n < max) {
        const struct io_uring_cqe *cqe = &cqes[head & mask];
        uint64_t ud = cqe->user_data;
        uint64_t b = (ud >> UR_UD_BATCH_SHIFT) & UR_UD_BATCH_MASK;

        if (b < nbatches && fast_ud[b] != 0 && (ud & ~k_field) == fast_ud[b]) {
            int32_t k = (int32_t)((ud >> UR_UD_K_SHIFT) & UR_UD_K_MASK);

            if (nr == 0 || run[0] != (int32_t)b) { /* a new run */
                run += UR_RUN_FIELDS;
                nr++;
                run_start = nc;
                run[0] = (int32_t)b;
                run[2] = run[3] = cqe->res;
                run[4] = k;
            } else {
                run[2] = cqe->res < run[2] ? cqe->res : run[2];
                run[3] = cqe->res > run[3] ? cqe->res : run[3];
                if (run[4] >= 0 && k != run[4] + (int32_t)(nc - run_start))
                    run[4] = -1;
            }
            clean_k[nc] = (uint32_t)k;
            clean_res[nc] = cqe->res;
            nc++;
            run[1] = (int32_t)nc;
        } else if (posted && b < nbatches && posted[b].res &&
                   /* the same batch and generation, the first run (aux 0),
                    * an atom that posts on the clean path */
                   (ud & ~(k_field | 0xFFFULL)) == (fast_ud[b] & ~(k_field | 0xFFFULL)) &&
                   (ud & 0xF00) == 0 && posted[b].place[ud & 0xFF] &&
                   ((ud >> UR_UD_K_SHIFT) & UR_UD_K_MASK) < posted[b].n) {
            uint64_t k = (ud >> UR_UD_K_SHIFT) & UR_UD_K_MASK;

            posted[b].res[k * posted[b].width + posted[b].place[ud & 0xFF] - 1] = cqe->res;
            np++;
        } else {
            user_data[no] = ud;
            res[no] = cqe->res;
            no++;
        }
        n++;
        head++;
    }
    if (n) {
        /* Release: our reads of the CQEs complete before the kernel may reuse
         * their slots (pairs with the kernel's acquire of cq.head). */
        store_release(ring->cq_head, head);
    }
    *nclean = nc;
    *nruns = nr;
    *nposted = np;
    return (int)n;
}


/* The start addresses of the NUL-terminated strings packed one after another
 * in blob (len bytes): starts[i] = base + the offset of string i, for the
 * first n of them.  Returns how many NULs the blob holds, so a blob of n
 * strings none of which holds a NUL of its own returns exactly n.  Plain
 * memory, no ring: nothing to order. */
long ur_string_starts(const char *blob, size_t len, int64_t base,
                      int64_t *starts, long n)
{
    long count = 0;
    size_t at = 0;

    while (at < len) {
        const char *nul = memchr(blob + at, 0, len - at);

        if (!nul)
            break;
        if (count < n)
            starts[count] = base + (int64_t)at;
        count++;
        at = (size_t)(nul - blob) + 1;
    }
    return count;
}

/* ur_reap_split into the caller's inbox, recorded in one step: box[UR_BOX_OTHERS]
 * CQEs in user_data/res (box[UR_BOX_OTHERS_DONE] of them routed so far), and
 * box[UR_BOX_CLEAN] clean endings in box[UR_BOX_RUNS] runs
 * (box[UR_BOX_RUNS_DONE] finished).  The counts land in the box before
 * Python sees a return value, so a Python signal handler that raises after
 * this call returns cannot make anyone forget CQEs already taken from the
 * CQ ring.  Refuses (returns 0, copies nothing) while the box still holds
 * CQEs not routed.  inbox->taken counts every CQE ever taken (the waits'
 * lower bound of CQEs still to come is what was promised less this).
 * Returns the number copied. */
int ur_reap_box(struct ur_ring *ring, struct ur_inbox *inbox)
{
    unsigned *box = inbox->box;
    unsigned nclean, nruns, nposted;
    int n;

    if (box[UR_BOX_OTHERS_DONE] < box[UR_BOX_OTHERS] ||
        box[UR_BOX_RUNS_DONE] < box[UR_BOX_RUNS])
        return 0;
    n = ur_reap_split(ring, inbox->fast_ud, inbox->posted, inbox->nbatches, inbox->user_data,
                      inbox->res, inbox->clean_k, inbox->clean_res, inbox->max,
                      &nclean, inbox->clean_runs, &nruns, &nposted);
    box[UR_BOX_OTHERS] = (unsigned)n - nclean - nposted;
    box[UR_BOX_OTHERS_DONE] = 0;
    box[UR_BOX_CLEAN] = nclean;
    box[UR_BOX_RUNS] = nruns;
    box[UR_BOX_RUNS_DONE] = 0;
    inbox->taken += (uint64_t)n;
    return n;
}

/* The posted CQEs of executions ks[0..n) of one batch (`width` int32 per
 * execution in the batch's array, ur_reap_split writes them): how many
 * have not come.  Read by the owner thread that also writes them, so no
 * ordering is needed. */
unsigned ur_posted_missing(const int32_t *posted, unsigned width, const uint32_t *ks,
                           unsigned n)
{
    unsigned missing = 0;

    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < width; j++)
            missing += (uint32_t)posted[(size_t)ks[i] * width + j] == UR_NOT_POSTED_BITS;
    return missing;
}

/* Column j of those posted CQEs: out[i] = posted[ks[i] * width + j]. */
void ur_posted_column(const int32_t *posted, unsigned width, unsigned j, const uint32_t *ks,
                      unsigned n, int32_t *out)
{
    for (unsigned i = 0; i < n; i++)
        out[i] = posted[(size_t)ks[i] * width + j];
}

/* One trip of the reaper, in one call from Python: submit what is pending
 * and wait for min_complete CQEs for at most timeout_ns (ur_enter), then
 * move what the CQ ring holds into the inbox (ur_reap_box).  The system
 * call is skipped when nothing is pending and either the CQ ring already
 * holds min_complete CQEs (at least one) or there is nothing to wait for
 * (min_complete 0 and nothing in flight); a poll of an empty CQ ring does
 * enter, because with DEFER_TASKRUN completions are posted only inside
 * the call.  With an eventfd watching the ring (`watched`), every call
 * enters while executions are in flight: the kernel signals the eventfd
 * only when its deferred work list goes from empty to non-empty, so a call
 * that left work in that list (the CQ ring already held enough) would let
 * an event loop sleep through everything that completes after it.
 * box[UR_BOX_MORE] says whether the caller must come round
 * again (with min_complete 0) once it has routed the inbox: SQEs are
 * pending, CQEs wait in the overflow list, or the inbox was filled.
 *
 * Returns 1 when the wait (if any) is over, 0 when it is not (it timed
 * out, a signal interrupted it, or the kernel said try again: -ETIME,
 * -EINTR, -EAGAIN, -ENOMEM, the SQEs stay pending), the count of SQEs
 * submitted saying nothing of the wait; else the -errno of the enter
 * (-EBUSY: reap and come again; anything else the caller cannot recover
 * from).  The inbox is filled whatever the enter returned. */
int ur_cycle(struct ur_ring *ring, struct ur_inbox *inbox, unsigned min_complete,
             int64_t timeout_ns, unsigned in_flight, unsigned watched)
{
    unsigned *box = inbox->box;
    unsigned ready = ur_cq_ready(ring);
    int verdict = 1;
    int n;

    if (ring->pending ||
        !((!min_complete && !in_flight) ||
          (!(watched && in_flight) && ready && ready >= min_complete))) {
        int r = ur_enter(ring, min_complete, timeout_ns);

        /* A poll runs at most 20 items of deferred work (DEFER_TASKRUN);
         * the kernel signals the eventfd only when its list of them goes
         * from empty to non-empty, so what a poll leaves would never wake
         * an event loop.  While the kernel says work is left (SQ_TASKRUN,
         * with TASKRUN_FLAG; always, without it), ask for every CQE the CQ
         * ring holds with a zero timeout: that runs all of it.  (A zero
         * timeout costs an hrtimer, so only then.) */
        if (!min_complete && in_flight && watched && r >= 0 &&
            (!(ring->setup_flags & IORING_SETUP_TASKRUN_FLAG) ||
             (ur_sq_flags(ring) & IORING_SQ_TASKRUN))) {
            int rest = ur_enter(ring, ring->cq_entries, 0);

            if (rest < 0 && rest != -ETIME)
                r = rest;
        }
        if (r >= 0)
            verdict = r == 0 || !min_complete || ur_cq_ready(ring) >= min_complete;
        else if (r == -ETIME || r == -EINTR || r == -EAGAIN || r == -ENOMEM)
            verdict = 0;
        else if (r == -EBUSY)
            verdict = 1; /* CQEs wait in the overflow list: reap them first */
        else
            verdict = r;
    }
    n = ur_reap_box(ring, inbox);
    box[UR_BOX_MORE] = ring->pending || (ur_sq_flags(ring) & IORING_SQ_CQ_OVERFLOW) ||
                       (unsigned)n == inbox->max;
    return verdict;
}

/* The address of a bytes object's buffer, which cffi passes without a copy
 * (CPython ends every bytes buffer with a NUL: a path needs no joining).
 * The caller keeps the object alive while the kernel may read it. */
int64_t ur_address(const char *bytes)
{
    return (int64_t)(intptr_t)bytes;
}

/* The restrictions: one entry per allowed SQE opcode, the allowed SQE flags,
 * and the register opcodes this file issues on a live ring (closing slots,
 * the eventfd); everything else is refused by the kernel (-EACCES) once the
 * ring is enabled.  Registering is possible only while the ring is disabled
 * (IORING_SETUP_R_DISABLED), once. */
int ur_restrict(struct ur_ring *ring, const uint8_t *sqe_ops, unsigned nops, uint8_t sqe_flags)
{
    static const uint8_t register_ops[] = {
        IORING_REGISTER_FILES_UPDATE, IORING_REGISTER_EVENTFD, IORING_UNREGISTER_EVENTFD,
    };
    unsigned nreg = sizeof register_ops / sizeof register_ops[0];
    struct io_uring_restriction res[256 + 8];
    unsigned i, n = 0;
    int err;

    if (nops > 256)
        return -EINVAL;
    memset(res, 0, sizeof res);
    for (i = 0; i < nops; i++) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = sqe_ops[i];
    }
    for (i = 0; i < nreg; i++) {
        res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
        res[n++].register_op = register_ops[i];
    }
    res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res[n++].sqe_flags = sqe_flags;
    err = sys_register(ring->fd, IORING_REGISTER_RESTRICTIONS, res, n);
    if (err < 0)
        return err;
    return sys_register(ring->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
}

/* Returns the new descriptor, or -errno.  The struct is the kernel's
 * open_how (flags, mode, resolve: three u64, in that order). */
int ur_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve)
{
    uint64_t how[3] = {flags, mode, resolve};
    long fd = syscall(SYS_openat2, dirfd, path, how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}
