/*
 * ring_sys.h -- internal to the ring layer (ring.c, ring_setup.c): the
 * memory-ordering steps on the indexes shared with the kernel, and the
 * io_uring system calls.  Not part of the cffi interface (ring.h is).
 */
#ifndef URINGLETS_RING_SYS_H
#define URINGLETS_RING_SYS_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ring_compat.h"

/* ------------------------------------------------------------------------
 * Memory ordering.
 *
 * The SQ and CQ rings are shared with the kernel.  Each index has one
 * writer.  A writer that publishes data (SQEs, or consumed CQE slots) must
 * make the data visible before the index that announces it: a store-release.
 * A reader that learns of new data through an index must read the index
 * before the data: a load-acquire.  These macros are the only atomics of the
 * ring layer; no other line touches a shared index.
 * ---------------------------------------------------------------------- */
#define load_acquire(p) atomic_load_explicit((_Atomic unsigned *)(p), memory_order_acquire)
#define store_release(p, v) atomic_store_explicit((_Atomic unsigned *)(p), (v), memory_order_release)
/* Relaxed: for an index only we write (our SQ tail, our CQ head). */
#define load_relaxed(p) atomic_load_explicit((_Atomic unsigned *)(p), memory_order_relaxed)

/* ------------------------------------------------------------------------
 * System calls (glibc 2.36 has no wrappers for these).
 * ---------------------------------------------------------------------- */
static inline int sys_setup(unsigned entries, struct io_uring_params *p)
{
    long r = syscall(__NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

static inline int sys_enter(int fd, unsigned to_submit, unsigned min_complete,
                     unsigned flags, void *arg, size_t argsz)
{
    long r = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags,
                     arg, argsz);
    return r < 0 ? -errno : (int)r;
}

static inline int sys_register(int fd, unsigned opcode, const void *arg,
                        unsigned nr_args)
{
    long r = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    return r < 0 ? -errno : (int)r;
}

#endif
