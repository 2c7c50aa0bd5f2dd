"""The op catalogue: everything uringlets knows about each system call.

One entry per op, read by every other module and by no one restated:

* ``args``: the argument schema (name, kind, default); the builder validates
  against it, and ``kind`` says how a value reaches the SQE and the blocking
  call (``fd`` may be a Ref, ``path`` becomes a NUL-terminated buffer, ...);
* ``prep``: how to fill the SQE, written against the small ``SqeWriter``
  protocol that ``translate.py`` implements (constants now, patch points for
  what changes per execution);
* ``call``: the blocking-call equivalent, used by the thread engine, the
  reference interpreter and the io_uring engine's userspace steps;
* ``result``: the result kind, which fixes the normalised result, the value
  ``c[ref]`` returns and, with ``full_length``, the kernel's failure rule.

The kernel's failure rule (when it breaks an ``IOSQE_IO_LINK``) is: a negative
result, or for ops with a ``full_length`` a transfer of any other length
(``read``/``write``: any short transfer; ``send``/``recv``: only with
``MSG_WAITALL``).  Since 6.0 some handlers (statx, unlinkat, mkdirat,
renameat, fsync) set a negative result *without* failing the request, unless
the error came before the handler ran (a bad fd): for those
``error_breaks_link`` is False, the kernel can be trusted neither to stop at
their errors nor to go on, and their errors post a CQE only without
``IOSQE_CQE_SKIP_SUCCESS``.  Results are *normalised* before a stop rule sees them, so
both engines agree: an atom that creates a descriptor reports 0 (the
descriptor lives in a slot or a private fd, reachable through its Ref), a
``timeout`` that slept its full time reports 0 (the kernel says ``-ETIME``).
"""

from __future__ import annotations

import errno
import math
import os
import select
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MAX_ATOMS = 64
MAX_TRANSFER = 1 << 28  # bytes one read or write may move (256 MiB)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
STATX_BASIC_STATS = 0x7FF
STATX_SIZE = 256

# Result kinds: what a successful atom returns, normalised.
ZERO = "zero"  # 0 on success (close, unlinkat, ...)
FD = "fd"  # creates a descriptor; 0 on success, the descriptor via its Ref
COUNT = "count"  # bytes transferred (write, send)
BYTES = "bytes"  # bytes received; c[ref] is the data (read, recv)
STAT = "stat"  # 0 on success; c[ref] is an os.stat_result
SLEEP = "sleep"  # 0 after the full sleep

REQUIRED: Any = object()


@dataclass(frozen=True)
class Arg:
    """One argument.  ``kind`` is one of: ``fd`` (Ref to a descriptor-making
    atom, or an int fd), ``dirfd`` (None or an int fd), ``path``, ``int``,
    ``flags`` (an int fixed at compile time), ``size`` (0..MAX_TRANSFER, fixed
    at compile time: it sizes the buffer), ``offset`` (None = the file
    position, or >= 0), ``data`` (bytes, a Ref to a bytes-result atom, or a
    Param), ``seconds``, ``bool``.  Kinds ``path``, ``int``, ``offset``,
    ``data`` and ``fd`` also take a Param, bound per execution."""

    name: str
    kind: str
    default: Any = REQUIRED


class SqeWriter(Protocol):
    """What ``prep`` functions write through (implemented by translate.py).
    Every method takes the raw argument value (a constant, a Param or a Ref)
    and records a constant or a per-execution patch point."""

    def int(self, field: str, value: Any) -> None: ...
    def fd(self, value: Any) -> None: ...
    def close_target(self, value: Any) -> None: ...
    def new_descriptor(self) -> None: ...
    def path(self, field: str, value: Any) -> None: ...
    def out_buffer(self, field: str, size: int) -> None: ...
    def const_buffer(self, field: str, data: bytes) -> None: ...
    def data(self, addr_field: str, len_field: str, value: Any) -> None: ...
    def kernel_flag(self, field: str, name: str) -> None: ...


@dataclass(frozen=True)
class Op:
    """One catalogue entry.  ``kernel_op`` names the io_uring opcode (None:
    the op always runs in userspace, on a real fd).  ``full_length(args)`` is
    the length whose short transfer the kernel treats as failure (None: only
    negative results fail)."""

    name: str
    args: tuple[Arg, ...]
    result: str
    call: Callable[[Mapping[str, Any]], Any]
    kernel_op: str | None = None
    prep: Callable[[SqeWriter, Mapping[str, Any]], None] | None = None
    full_length: Callable[[Mapping[str, Any]], int | None] = lambda a: None
    closes_fd: bool = False
    error_breaks_link: bool = True
    # poll() events the blocking call may wait for on its ``fd`` argument
    # (0: it never waits on a descriptor); lets the thread engine interrupt it.
    waits_for: int = 0

    @property
    def creates_fd(self) -> bool:
        return self.result == FD

    def normalise(self, raw: int) -> int:
        """The result a stop rule sees, from the kernel's CQE result."""
        if self.result == SLEEP and raw == -errno.ETIME:
            return 0
        if self.result == FD and raw > 0:
            return 0
        return raw

    def kernel_fails(self, result: int, args: Mapping[str, Any], full: int | None = None) -> bool:
        """Whether the kernel certainly breaks a soft link after this
        (normalised) result.  ``full`` overrides the length for transfers
        whose length is known only per execution."""
        if result < 0:
            return self.error_breaks_link
        if full is None:
            full = self.full_length(args)
        return full is not None and result != full

    def success_result(self, args: Mapping[str, Any]) -> int | None:
        """The only normalised result the kernel counts as success, if there
        is exactly one."""
        if self.result in (ZERO, FD, STAT, SLEEP):
            return 0
        return self.full_length(args)

    def skippable(self, args: Mapping[str, Any]) -> bool:
        """Whether ``IOSQE_CQE_SKIP_SUCCESS`` is safe: a skipped CQE must mean
        the one success result, so every error must be a kernel failure."""
        return self.error_breaks_link and self.success_result(args) is not None

    def sample_results(self, args: Mapping[str, Any]) -> tuple[int, ...]:
        """Representatives of every class of result this atom can produce."""
        if self.result in (ZERO, FD, STAT, SLEEP):
            return (-errno.EIO, 0)
        full = self.full_length(args)
        if full is None:
            return (-errno.EIO, 0, 1, 1 << 20)
        return tuple(sorted({-errno.EIO, 0, min(1, full), max(full - 1, 0), full}))

    def outcome(self, returned: Any) -> tuple[int, Any]:
        """(normalised result, value) from what the blocking call returned."""
        if self.result == COUNT:
            return int(returned), None
        if self.result == BYTES:
            return len(returned), bytes(returned)
        if self.result in (FD, STAT):
            return 0, returned
        return 0, None


def errno_result(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)


# --------------------------------------------------------------------------
# statx decoding (the io_uring engine's buffer -> the os.stat_result os.stat
# would give).
# --------------------------------------------------------------------------
_STATX = struct.Struct("=IIQIIIH2xQQQQ" + "qIi" * 4 + "IIII")


def decode_statx(buf: bytes) -> os.stat_result:
    (
        _mask,
        blksize,
        _attrs,
        nlink,
        uid,
        gid,
        mode,
        ino,
        size,
        blocks,
        _attr_mask,
        a_s, a_ns, _r1,
        _b_s, _b_ns, _r2,
        c_s, c_ns, _r3,
        m_s, m_ns, _r4,
        rdev_major, rdev_minor, dev_major, dev_minor,
    ) = _STATX.unpack_from(buf)  # fmt: skip
    dev = os.makedev(dev_major, dev_minor)
    rdev = os.makedev(rdev_major, rdev_minor)
    times_ns = (a_s * 10**9 + a_ns, m_s * 10**9 + m_ns, c_s * 10**9 + c_ns)
    return os.stat_result(
        (
            mode,
            ino,
            dev,
            nlink,
            uid,
            gid,
            size,
            a_s,
            m_s,
            c_s,
            *(t / 1e9 for t in times_ns),
            *times_ns,
            blksize,
            blocks,
            rdev,
        )
    )


# --------------------------------------------------------------------------
# The entries.
# --------------------------------------------------------------------------
def _dirfd(value: int | None) -> int:
    return AT_FDCWD if value is None else value


def _prep_nop(w: SqeWriter, a: Mapping[str, Any]) -> None:
    pass


def _prep_openat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.int("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.int("len", a["mode"])
    # A direct descriptor is never in the fd table, so O_CLOEXEC means nothing
    # to it and the kernel refuses it (-EINVAL); Python's os.open always adds
    # it, so dropping it keeps both engines alike.
    w.int("op_flags", a["flags"] & ~os.O_CLOEXEC)
    w.new_descriptor()


def _call_openat(a: Mapping[str, Any]) -> int:
    return os.open(a["path"], a["flags"], a["mode"], dir_fd=a["dir_fd"])


def _prep_close(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.close_target(a["fd"])


def _prep_read(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.out_buffer("addr", a["size"])
    w.int("len", a["size"])
    w.int("off", -1 if a["offset"] is None else a["offset"])


def _call_read(a: Mapping[str, Any]) -> bytes:
    if a["offset"] is None:
        return os.read(a["fd"], a["size"])
    return os.pread(a["fd"], a["size"], a["offset"])


def _prep_write(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.data("addr", "len", a["data"])
    w.int("off", -1 if a["offset"] is None else a["offset"])


def _call_write(a: Mapping[str, Any]) -> int:
    if a["offset"] is None:
        return os.write(a["fd"], a["data"])
    return os.pwrite(a["fd"], a["data"], a["offset"])


def _data_length(a: Mapping[str, Any]) -> int | None:
    data = a["data"]
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None


def _prep_fsync(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    if a["datasync"]:
        w.kernel_flag("op_flags", "IORING_FSYNC_DATASYNC")


def _call_fsync(a: Mapping[str, Any]) -> None:
    (os.fdatasync if a["datasync"] else os.fsync)(a["fd"])


def _prep_statx(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.int("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.int("len", STATX_BASIC_STATS)
    w.int("op_flags", 0 if a["follow_symlinks"] else AT_SYMLINK_NOFOLLOW)
    w.out_buffer("off", STATX_SIZE)


def _call_statx(a: Mapping[str, Any]) -> os.stat_result:
    return os.stat(a["path"], dir_fd=a["dir_fd"], follow_symlinks=a["follow_symlinks"])


def _call_fstat(a: Mapping[str, Any]) -> os.stat_result:
    return os.fstat(a["fd"])


def _prep_unlinkat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.int("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.int("op_flags", AT_REMOVEDIR if a["rmdir"] else 0)


def _call_unlinkat(a: Mapping[str, Any]) -> None:
    (os.rmdir if a["rmdir"] else os.unlink)(a["path"], dir_fd=a["dir_fd"])


def _prep_mkdirat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.int("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.int("len", a["mode"])


def _call_mkdirat(a: Mapping[str, Any]) -> None:
    os.mkdir(a["path"], a["mode"], dir_fd=a["dir_fd"])


def _prep_renameat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.int("fd", _dirfd(a["src_dir_fd"]))
    w.path("addr", a["src"])
    w.int("len", _dirfd(a["dst_dir_fd"]))
    w.path("off", a["dst"])


def _call_renameat(a: Mapping[str, Any]) -> None:
    os.rename(a["src"], a["dst"], src_dir_fd=a["src_dir_fd"], dst_dir_fd=a["dst_dir_fd"])


def _prep_timeout(w: SqeWriter, a: Mapping[str, Any]) -> None:
    seconds = a["seconds"]
    nsec = round(seconds * 1e9)
    w.const_buffer("addr", struct.pack("=qq", nsec // 10**9, nsec % 10**9))
    w.int("len", 1)
    w.int("off", 0)  # no completion count: a pure timer
    # Report a full sleep as success, so it neither posts a CQE under
    # CQE_SKIP_SUCCESS nor breaks a soft link.
    w.kernel_flag("op_flags", "IORING_TIMEOUT_ETIME_SUCCESS")


def _call_timeout(a: Mapping[str, Any]) -> None:
    time.sleep(a["seconds"])


def _call_nop(a: Mapping[str, Any]) -> None:
    return None


_DIR_FD = Arg("dir_fd", "dirfd", None)

CATALOGUE: dict[str, Op] = {
    op.name: op
    for op in (
        Op("nop", (), ZERO, _call_nop, "NOP", _prep_nop),
        Op(
            "openat",
            (Arg("path", "path"), Arg("flags", "flags"), Arg("mode", "int", 0o777), _DIR_FD),
            FD,
            _call_openat,
            "OPENAT",
            _prep_openat,
        ),
        Op(
            "close",
            (Arg("fd", "fd"),),
            ZERO,
            lambda a: os.close(a["fd"]),
            "CLOSE",
            _prep_close,
            closes_fd=True,
        ),
        Op(
            "read",
            (Arg("fd", "fd"), Arg("size", "size"), Arg("offset", "offset", None)),
            BYTES,
            _call_read,
            "READ",
            _prep_read,
            full_length=lambda a: a["size"],
            waits_for=select.POLLIN,
        ),
        Op(
            "write",
            (Arg("fd", "fd"), Arg("data", "data"), Arg("offset", "offset", None)),
            COUNT,
            _call_write,
            "WRITE",
            _prep_write,
            full_length=_data_length,
            waits_for=select.POLLOUT,
        ),
        Op(
            "fsync",
            (Arg("fd", "fd"), Arg("datasync", "bool", False)),
            ZERO,
            _call_fsync,
            "FSYNC",
            _prep_fsync,
            error_breaks_link=False,
        ),
        Op(
            "statx",
            (Arg("path", "path"), _DIR_FD, Arg("follow_symlinks", "bool", True)),
            STAT,
            _call_statx,
            "STATX",
            _prep_statx,
            error_breaks_link=False,
        ),
        # The kernel cannot stat a direct descriptor: fstat runs in userspace
        # on a real fd (a slot is first installed as one, then closed).
        Op("fstat", (Arg("fd", "fd"),), STAT, _call_fstat),
        Op(
            "unlinkat",
            (Arg("path", "path"), _DIR_FD, Arg("rmdir", "bool", False)),
            ZERO,
            _call_unlinkat,
            "UNLINKAT",
            _prep_unlinkat,
            error_breaks_link=False,
        ),
        Op(
            "mkdirat",
            (Arg("path", "path"), Arg("mode", "int", 0o777), _DIR_FD),
            ZERO,
            _call_mkdirat,
            "MKDIRAT",
            _prep_mkdirat,
            error_breaks_link=False,
        ),
        Op(
            "renameat",
            (
                Arg("src", "path"),
                Arg("dst", "path"),
                Arg("src_dir_fd", "dirfd", None),
                Arg("dst_dir_fd", "dirfd", None),
            ),
            ZERO,
            _call_renameat,
            "RENAMEAT",
            _prep_renameat,
            error_breaks_link=False,
        ),
        Op("timeout", (Arg("seconds", "seconds"),), SLEEP, _call_timeout, "TIMEOUT", _prep_timeout),
    )
}


def check_seconds(value: float) -> bool:
    return math.isfinite(value) and 0 <= value <= 10**6
