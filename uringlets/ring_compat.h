/*
 * ring_compat.h -- io_uring ABI values newer than the oldest uapi header we
 * build against (Debian 12 ships the 6.1 header).
 *
 * Opcodes are enum members in the header, so the preprocessor cannot tell
 * whether a header has one.  The opcodes added after 6.1 are therefore
 * defined here once, under our own prefix, with the release that added them;
 * the ABI never renumbers.  Flags that are macros are defined only where the
 * header lacks them.  Whether the *running* kernel supports any of these is
 * probed at run time (IORING_REGISTER_PROBE), never assumed.
 */
#ifndef URINGLETS_RING_COMPAT_H
#define URINGLETS_RING_COMPAT_H

#include <linux/io_uring.h>

#ifndef IORING_SETUP_DEFER_TASKRUN
#error "linux/io_uring.h is older than 6.1: install a newer linux-libc-dev"
#endif

#define URINGLETS_OP_FIXED_FD_INSTALL 54      /* 6.8 */
#define URINGLETS_OP_FTRUNCATE 55             /* 6.9 */
#define URINGLETS_OP_BIND 56                  /* 6.11 */
#define URINGLETS_OP_LISTEN 57                /* 6.11 */

/* IORING_OP_URING_CMD on a socket: cmd_op values (6.7). */
#define URINGLETS_SOCKET_URING_OP_SETSOCKOPT 3  /* 6.7 */

#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)    /* 6.6 */
#endif

#ifndef IORING_FIXED_FD_NO_CLOEXEC
#define IORING_FIXED_FD_NO_CLOEXEC (1U << 0)  /* 6.8 */
#endif

#ifndef IORING_ASYNC_CANCEL_USERDATA
#define IORING_ASYNC_CANCEL_USERDATA (1U << 4) /* 6.6 */
#endif

#endif /* URINGLETS_RING_COMPAT_H */
