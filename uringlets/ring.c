/*
 * ring.c -- the smallest layer that can drive io_uring from Python, compiled
 * into the cffi extension uringlets._ring: the hot path.
 *
 * It copies runs of pre-built SQE images into the SQ ring (patching the few
 * per-execution fields), enters the kernel, and drains CQEs into
 * caller-owned arrays.  Python calls it once per batch, never once per SQE
 * or CQE.  It decides nothing: which flags, which images, what a CQE means,
 * all of that is Python's.  Errors are returned as -errno.  It allocates
 * nothing.  Setting a ring up and tearing it down (cold) is ring_setup.c;
 * the memory-ordering steps and the system calls are ring_sys.h.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "ring_sys.h"
#include "ring.h"

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
