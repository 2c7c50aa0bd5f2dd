/*
 * ring_setup.c -- the cold half of the ring layer (the hot path is ring.c):
 * set a ring up and tear it down, probe the ops the kernel has, register
 * the fixed-file table, an eventfd and restrictions, and openat2 for the
 * blocking side.  Errors are returned as -errno.
 */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "ring_sys.h"
#include "ring.h"

/* ------------------------------------------------------------------------
 * Setup and teardown (cold).
 * ---------------------------------------------------------------------- */

/* Map one of the ring's regions into *map (left NULL on failure, so that
 * ur_teardown unmaps only what was mapped).  Returns 0 or -errno. */
static int map_region(int fd, size_t size, off_t offset, void **map)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);

    if (p == MAP_FAILED) {
        *map = NULL;
        return -errno;
    }
    *map = p;
    return 0;
}

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
    err = map_region(ring->fd, ring->sq_map_size, IORING_OFF_SQ_RING, &ring->sq_map);
    if (err < 0)
        goto fail;
    if (p.features & IORING_FEAT_SINGLE_MMAP)
        ring->cq_map = ring->sq_map;
    else if ((err = map_region(ring->fd, ring->cq_map_size, IORING_OFF_CQ_RING,
                               &ring->cq_map)) < 0)
        goto fail;
    ring->sqe_map_size = p.sq_entries * sizeof(struct io_uring_sqe);
    err = map_region(ring->fd, ring->sqe_map_size, IORING_OFF_SQES, &ring->sqe_map);
    if (err < 0)
        goto fail;

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
