"""cffi (API mode) build of ``uringlets._ring``: the io_uring ring layer.

Inputs: ``ring.c`` (the hot path), ``ring_setup.c`` (the cold half),
``ring.h`` (the interface cffi sees) and ``ring_sys.h`` (what the two share)
beside this file, and the kernel's uapi header ``linux/io_uring.h``
(Debian/Ubuntu package ``linux-libc-dev``, 6.1 or newer).  Values newer than
that header come from ``ring_compat.h``.  Needs only gcc and the Python
headers (``python3-dev``); no liburing.

Environment switches:
  URINGLETS_CFLAGS   extra compiler flags (e.g. ``-O0 -g`` to debug)
"""

from __future__ import annotations

import os
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
UAPI_HEADER = pathlib.Path("/usr/include/linux/io_uring.h")
EXTRA_CFLAGS = os.environ.get("URINGLETS_CFLAGS", "").split()

# Constants Python needs, each taken from the header by the compiler ("...").
CONSTANTS: tuple[str, ...] = (
    # opcodes present in the 6.1 header
    "IORING_OP_NOP",
    "IORING_OP_FSYNC",
    "IORING_OP_TIMEOUT",
    "IORING_OP_ASYNC_CANCEL",
    "IORING_OP_LINK_TIMEOUT",
    "IORING_OP_OPENAT",
    "IORING_OP_OPENAT2",
    "IORING_OP_CLOSE",
    "IORING_OP_STATX",
    "IORING_OP_READ",
    "IORING_OP_WRITE",
    "IORING_OP_SPLICE",
    "IORING_OP_RENAMEAT",
    "IORING_OP_UNLINKAT",
    "IORING_OP_MKDIRAT",
    "IORING_OP_SOCKET",
    "IORING_OP_CONNECT",
    "IORING_OP_ACCEPT",
    "IORING_OP_SEND",
    "IORING_OP_RECV",
    "IORING_OP_SENDMSG",
    "IORING_OP_RECVMSG",
    "IORING_OP_SHUTDOWN",
    "IORING_OP_URING_CMD",
    "IORING_OP_LAST",
    # opcodes newer than the 6.1 header (ring_compat.h)
    "URINGLETS_OP_FIXED_FD_INSTALL",
    "URINGLETS_OP_FTRUNCATE",
    "URINGLETS_OP_BIND",
    "URINGLETS_OP_LISTEN",
    "URINGLETS_SOCKET_URING_OP_SETSOCKOPT",
    "IORING_SETUP_R_DISABLED",
    # SQE flags
    "IOSQE_FIXED_FILE",
    "IOSQE_IO_LINK",
    "IOSQE_IO_HARDLINK",
    "IOSQE_ASYNC",
    "IOSQE_CQE_SKIP_SUCCESS",
    # setup flags and features
    "IORING_SETUP_CQSIZE",
    "IORING_SETUP_CLAMP",
    "IORING_SETUP_SUBMIT_ALL",
    "IORING_SETUP_COOP_TASKRUN",
    "IORING_SETUP_SINGLE_ISSUER",
    "IORING_SETUP_DEFER_TASKRUN",
    "IORING_SETUP_TASKRUN_FLAG",
    "IORING_SQ_CQ_OVERFLOW",
    "IORING_FEAT_NODROP",
    "IORING_FEAT_EXT_ARG",
    "IORING_FEAT_CQE_SKIP",
    "IORING_FEAT_RW_CUR_POS",
    "IORING_FEAT_LINKED_FILE",
    # per-op flags
    "IORING_FSYNC_DATASYNC",
    "IORING_TIMEOUT_ETIME_SUCCESS",
    "IORING_ASYNC_CANCEL_ALL",
    "IORING_ASYNC_CANCEL_USERDATA",
    "IORING_FIXED_FD_NO_CLOEXEC",
    "IORING_FILE_INDEX_ALLOC",
    "SPLICE_F_FD_IN_FIXED",
)


def _check_inputs() -> None:
    if not UAPI_HEADER.exists():
        sys.exit(
            f"uringlets: {UAPI_HEADER} is missing; install the kernel headers "
            "(Debian/Ubuntu: apt-get install linux-libc-dev)"
        )


def _cdef() -> str:
    declarations = (HERE / "ring.h").read_text()
    constants = "\n".join(f"#define {name} ..." for name in CONSTANTS)
    return declarations + "\n" + constants + "\n"


_check_inputs()
ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "uringlets._ring",
    '#include "ring_compat.h"\n#include "ring.h"\n',
    # Relative to the project root, where setuptools runs cffi_modules.
    sources=["uringlets/ring.c", "uringlets/ring_setup.c"],
    include_dirs=["uringlets"],
    depends=["uringlets/ring.h", "uringlets/ring_compat.h", "uringlets/ring_sys.h"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", *EXTRA_CFLAGS],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
