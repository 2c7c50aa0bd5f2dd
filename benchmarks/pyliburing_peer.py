"""The python-liburing peer: PyPI ``liburing`` pinned at 2024.5.3, for nop4, nop1 and file3.

Written the way its README shows: one ``io_uring_get_sqe`` + ``io_uring_prep_*``
call per SQE (plus ``io_uring_sqe_set_flags`` / ``io_uring_sqe_set_data64``),
``io_uring_submit_and_wait`` once per batch of 64 chains (nop1: once per
single NOP), then ``io_uring_wait_cqe`` + ``io_uring_cqe_seen`` per CQE.  The chains are the C
reference's (``benchmarks/c/uring_ref.c``): the same links, the same
``CQE_SKIP_SUCCESS`` on all but a chain's tail, the same direct descriptors
for file3 (openat_direct -> read with IOSQE_FIXED_FILE -> close_direct), and
the ring set up with the same flags (SINGLE_ISSUER | DEFER_TASKRUN |
SUBMIT_ALL).  Every chain posts exactly one CQE; each must have res == 0 (a
failed or short read breaks the link and posts the read's own CQE instead).

Why 2024.5.3: the 2026 releases ship wheels built with AVX-512 that die with
SIGILL on CPUs without it.  2024.5.3 has no wheel for this Python: pip builds
it from the sdist (Cython, bundled C liburing 2.6).  Built with Cython 3.3,
its flag and setup constants (``liburing.IOSQE_IO_LINK``, ...) are missing at
the package's top level, although its own tests use them there; they are
taken from the enum classes ``liburing.queue.__queue_define__`` and
``liburing.syscall.__syscall_define__`` instead (``CONSTANTS_FROM``).

``status()`` imports the package and runs one batch of nop4 in a child process
first (``python pyliburing_peer.py --probe``), so an import or a first call
that dies (SIGILL) is reported instead of killing a benchmark worker.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import subprocess
import sys
from typing import Any

PIN = "2024.5.3"
BATCH = 64
SIZE = 4096
SQ_ENTRIES = 256  # >= BATCH * 4 (nop4) and BATCH * 3 (file3)
CONSTANTS_FROM = "unknown"


@functools.cache
def status() -> str | None:
    """None if liburing==PIN imports and runs here, else what happened."""
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--probe"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run the import check: {exc}"
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return f"`import liburing` died with {sig}" + (
            " (illegal instruction: a wheel built for a newer CPU)" if sig == "SIGILL" else ""
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"`import liburing` failed: {last}"
    version = proc.stdout.strip()
    if version != PIN:
        return (
            f"liburing {version} is installed, not the pinned {PIN} (pip install liburing=={PIN})"
        )
    return None


@functools.cache
def api() -> Any:
    """The liburing module, with the flag constants as attributes of ``api().K``."""
    global CONSTANTS_FROM
    import liburing

    class K:
        pass

    names = {
        "IOSQE_IO_LINK": "queue",
        "IOSQE_CQE_SKIP_SUCCESS": "queue",
        "IOSQE_FIXED_FILE": "queue",
        "IORING_SETUP_SINGLE_ISSUER": "syscall",
        "IORING_SETUP_DEFER_TASKRUN": "syscall",
        "IORING_SETUP_SUBMIT_ALL": "syscall",
    }
    try:
        for name in names:
            setattr(K, name, int(getattr(liburing, name)))
        CONSTANTS_FROM = "liburing"
    except (AttributeError, ImportError):
        enums = {
            "queue": importlib.import_module("liburing.queue").__queue_define__,
            "syscall": importlib.import_module("liburing.syscall").__syscall_define__,
        }
        for name, module in names.items():
            setattr(K, name, int(getattr(enums[module], name)))
        CONSTANTS_FROM = "liburing.queue.__queue_define__ / liburing.syscall.__syscall_define__"
    liburing.K = K
    return liburing


@functools.cache
def ring() -> Any:
    """One ring per worker process, with a sparse table of BATCH direct descriptors."""
    L = api()
    r = L.io_uring()
    flags = (
        L.K.IORING_SETUP_SINGLE_ISSUER
        | L.K.IORING_SETUP_DEFER_TASKRUN
        | L.K.IORING_SETUP_SUBMIT_ALL
    )
    L.io_uring_queue_init(SQ_ENTRIES, r, flags)
    L.io_uring_register_files_sparse(r, BATCH)
    return r


def _fail(what: str, detail: object) -> None:
    raise RuntimeError(f"{what}: {detail!r}")


def run_nop4(loops: int) -> None:
    """``loops`` batches of 64 chains of 4 linked NOPs (time it around this)."""
    L, r = api(), ring()
    get_sqe, prep_nop = L.io_uring_get_sqe, L.io_uring_prep_nop
    set_flags, set_data64 = L.io_uring_sqe_set_flags, L.io_uring_sqe_set_data64
    submit_and_wait, wait_cqe, cqe_seen = (
        L.io_uring_submit_and_wait,
        L.io_uring_wait_cqe,
        L.io_uring_cqe_seen,
    )
    link = L.K.IOSQE_IO_LINK | L.K.IOSQE_CQE_SKIP_SUCCESS
    cqe = L.io_uring_cqe()
    for _ in range(loops):
        for c in range(1, BATCH + 1):
            sqe = get_sqe(r)
            prep_nop(sqe)
            set_flags(sqe, link)
            sqe = get_sqe(r)
            prep_nop(sqe)
            set_flags(sqe, link)
            sqe = get_sqe(r)
            prep_nop(sqe)
            set_flags(sqe, link)
            sqe = get_sqe(r)
            prep_nop(sqe)
            set_data64(sqe, c)  # the tail posts the chain's CQE
        submit_and_wait(r, BATCH)
        for _ in range(BATCH):
            if (err := wait_cqe(r, cqe)) < 0:
                _fail("nop4-pyliburing: io_uring_wait_cqe", err)
            if cqe.res != 0:
                _fail("nop4-pyliburing: failed CQE", (cqe.user_data, cqe.res))
            cqe_seen(r, cqe)


def run_nop1(loops: int) -> None:
    """``loops`` single NOPs, one ``io_uring_submit_and_wait`` each (time it
    around this): what one ``Engine.run`` of a 1-nop program is compared with."""
    L, r = api(), ring()
    get_sqe, prep_nop, set_data64 = (
        L.io_uring_get_sqe,
        L.io_uring_prep_nop,
        L.io_uring_sqe_set_data64,
    )
    submit_and_wait, wait_cqe, cqe_seen = (
        L.io_uring_submit_and_wait,
        L.io_uring_wait_cqe,
        L.io_uring_cqe_seen,
    )
    cqe = L.io_uring_cqe()
    for _ in range(loops):
        sqe = get_sqe(r)
        prep_nop(sqe)
        set_data64(sqe, 1)
        submit_and_wait(r, 1)
        if (err := wait_cqe(r, cqe)) < 0:
            _fail("nop1-pyliburing: io_uring_wait_cqe", err)
        if cqe.res != 0:
            _fail("nop1-pyliburing: failed CQE", (cqe.user_data, cqe.res))
        cqe_seen(r, cqe)


@functools.cache
def _buffers() -> tuple[bytearray, list[memoryview]]:
    buf = bytearray(BATCH * SIZE)
    view = memoryview(buf)
    return buf, [view[k * SIZE : (k + 1) * SIZE] for k in range(BATCH)]


def run_file3(loops: int, batches: list[list[bytes]]) -> None:
    """``loops`` passes over ``batches`` (lists of at most 64 paths): per path
    openat_direct(slot) -> read 4 KiB (fixed file) -> close_direct(slot)."""
    L, r = api(), ring()
    _, views = _buffers()
    get_sqe, set_flags, set_data64 = (
        L.io_uring_get_sqe,
        L.io_uring_sqe_set_flags,
        L.io_uring_sqe_set_data64,
    )
    prep_openat_direct, prep_read, prep_close_direct = (
        L.io_uring_prep_openat_direct,
        L.io_uring_prep_read,
        L.io_uring_prep_close_direct,
    )
    submit_and_wait, wait_cqe, cqe_seen = (
        L.io_uring_submit_and_wait,
        L.io_uring_wait_cqe,
        L.io_uring_cqe_seen,
    )
    link = L.K.IOSQE_IO_LINK | L.K.IOSQE_CQE_SKIP_SUCCESS
    link_fixed = link | L.K.IOSQE_FIXED_FILE
    rdonly = os.O_RDONLY
    cqe = L.io_uring_cqe()
    for _ in range(loops):
        for paths in batches:
            for slot, path in enumerate(paths):
                sqe = get_sqe(r)
                prep_openat_direct(sqe, path, rdonly, slot)
                set_flags(sqe, link)
                sqe = get_sqe(r)
                prep_read(sqe, slot, views[slot], SIZE, 0)
                set_flags(sqe, link_fixed)
                sqe = get_sqe(r)
                prep_close_direct(sqe, slot)
                set_data64(sqe, slot + 1)  # the tail posts the chain's CQE
            n = len(paths)
            submit_and_wait(r, n)
            for _ in range(n):
                if (err := wait_cqe(r, cqe)) < 0:
                    _fail("file3-pyliburing: io_uring_wait_cqe", err)
                if cqe.res != 0:
                    _fail("file3-pyliburing: failed or short CQE", (cqe.user_data, cqe.res))
                cqe_seen(r, cqe)


if __name__ == "__main__" and sys.argv[1:] == ["--probe"]:
    run_nop4(1)
    print(api().__version__)
