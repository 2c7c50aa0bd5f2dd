"""File-system ops of the catalogue: nop, openat, openat2, close, read, write, fsync,
statx, fstat, unlinkat, mkdirat, renameat, timeout."""

from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Mapping
from typing import Any

from .._ring import lib
from .base import (
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    BYTES,
    C_INT,
    COUNT,
    FD,
    SLEEP,
    STAT,
    STATX_BASIC_STATS,
    STATX_SIZE,
    U32,
    ZERO,
    Arg,
    Op,
    SqeWriter,
)

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
    w.set("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.set("len", a["mode"])
    w.set("op_flags", a["flags"])
    w.new_descriptor("op_flags", os.O_CLOEXEC)


def _call_openat(a: Mapping[str, Any]) -> int:
    return os.open(a["path"], a["flags"], a["mode"], dir_fd=a["dir_fd"])


# struct open_how (linux/openat2.h): flags, mode, resolve, three __u64
_OPEN_HOW = struct.Struct("=QQQ")
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
_RESOLVE_ALL = 0x3F  # (and RESOLVE_CACHED, 0x20)


def _prep_openat2(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.set("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.set("len", _OPEN_HOW.size)
    direct = w.new_descriptor(None, os.O_CLOEXEC)
    flags = a["flags"] | (0 if direct else os.O_CLOEXEC)
    # SQE addr2 (the bytes of "off") points at the open_how, which the
    # kernel copies at prep: a constant of the program, kept by its plan.
    w.const_buffer("off", _OPEN_HOW.pack(flags, a["mode"], a["resolve"]))


def _call_openat2(a: Mapping[str, Any]) -> int:
    path = a["path"]
    fd = lib.ur_openat2(
        _dirfd(a["dir_fd"]), path, a["flags"] | os.O_CLOEXEC, a["mode"], a["resolve"]
    )
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd), os.fsdecode(path))
    return int(fd)


def _prep_close(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.close_target(a["fd"])


def _prep_read(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.out_buffer("addr", a["size"])
    w.set("len", a["size"])
    w.set("off", -1 if a["offset"] is None else a["offset"])


def _call_read(a: Mapping[str, Any]) -> bytes:
    if a["offset"] is None:
        return os.read(a["fd"], a["size"])
    return os.pread(a["fd"], a["size"], a["offset"])


def _prep_write(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.data("addr", "len", a["data"])
    w.set("off", -1 if a["offset"] is None else a["offset"])


def _call_write(a: Mapping[str, Any]) -> int:
    if a["offset"] is None:
        return os.write(a["fd"], a["data"])
    return os.pwrite(a["fd"], a["data"], a["offset"])


def _size_length(a: Mapping[str, Any]) -> int | None:
    size = a["size"]
    return size if isinstance(size, int) else None  # (a Param: per execution)


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
    w.set("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.set("len", STATX_BASIC_STATS)
    w.set("op_flags", 0 if a["follow_symlinks"] else AT_SYMLINK_NOFOLLOW)
    w.out_buffer("off", STATX_SIZE)


def _call_statx(a: Mapping[str, Any]) -> os.stat_result:
    return os.stat(a["path"], dir_fd=a["dir_fd"], follow_symlinks=a["follow_symlinks"])


def _call_fstat(a: Mapping[str, Any]) -> os.stat_result:
    return os.fstat(a["fd"])


def _prep_unlinkat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.set("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.set("op_flags", AT_REMOVEDIR if a["rmdir"] else 0)


def _call_unlinkat(a: Mapping[str, Any]) -> None:
    (os.rmdir if a["rmdir"] else os.unlink)(a["path"], dir_fd=a["dir_fd"])


def _prep_mkdirat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.set("fd", _dirfd(a["dir_fd"]))
    w.path("addr", a["path"])
    w.set("len", a["mode"])


def _call_mkdirat(a: Mapping[str, Any]) -> None:
    os.mkdir(a["path"], a["mode"], dir_fd=a["dir_fd"])


def _prep_renameat(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.set("fd", _dirfd(a["src_dir_fd"]))
    w.path("addr", a["src"])
    w.set("len", _dirfd(a["dst_dir_fd"]))
    w.path("off", a["dst"])


def _call_renameat(a: Mapping[str, Any]) -> None:
    os.rename(a["src"], a["dst"], src_dir_fd=a["src_dir_fd"], dst_dir_fd=a["dst_dir_fd"])


def timespec(seconds: float) -> bytes:
    """A ``struct __kernel_timespec``."""
    nsec = round(seconds * 1e9)
    return struct.pack("=qq", nsec // 10**9, nsec % 10**9)


def _prep_timeout(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.const_buffer("addr", timespec(a["seconds"]))
    w.set("len", 1)
    w.set("off", 0)  # no completion count: a pure timer
    # Report a full sleep as success, so it neither posts a CQE under
    # CQE_SKIP_SUCCESS nor breaks a soft link.
    w.kernel_flag("op_flags", "IORING_TIMEOUT_ETIME_SUCCESS")


# The SQE that bounds a timed atom (``timeout=``): linked after it, it
# cancels the atom when it fires.  It always posts a CQE (-ETIME when it
# fired, else -ECANCELED), after or before the atom's.
LINK_TIMEOUT_OP = "LINK_TIMEOUT"


def prep_link_timeout(w: SqeWriter, seconds: float) -> None:
    w.const_buffer("addr", timespec(seconds))
    w.set("len", 1)


def _call_timeout(a: Mapping[str, Any]) -> None:
    time.sleep(a["seconds"])


def _call_nop(a: Mapping[str, Any]) -> None:
    return None


_DIR_FD = Arg("dir_fd", "dirfd", None)
# open flags: SQE open_flags (__u32), os.open's C int; a mode: SQE len
# (__u32), os.open's / os.mkdir's C int.
_MODE = Arg("mode", "int", 0o777, fits=(U32, C_INT))

OPS: tuple[Op, ...] = (
    Op("nop", (), ZERO, _call_nop, "NOP", _prep_nop),
    Op(
        "openat",
        (Arg("path", "path"), Arg("flags", "flags", fits=(U32, C_INT)), _MODE, _DIR_FD),
        FD,
        _call_openat,
        "OPENAT",
        _prep_openat,
        opens_files=True,
    ),
    # openat2(2): open with RESOLVE_* rules (RESOLVE_BENEATH keeps the
    # path under dir_fd); the mode must be 0 unless flags create a file.
    Op(
        "openat2",
        (
            Arg("path", "path"),
            Arg("flags", "flags", fits=(U32, C_INT)),
            Arg("mode", "int", 0, fits=(U32, C_INT)),
            Arg("resolve", "flags", 0, fits=(U32, C_INT)),
            _DIR_FD,
        ),
        FD,
        _call_openat2,
        "OPENAT2",
        _prep_openat2,
        opens_files=True,
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
        (Arg("fd", "fd"), Arg("size", "size", bindable=True), Arg("offset", "offset", None)),
        BYTES,
        _call_read,
        "READ",
        _prep_read,
        length=_size_length,
        short_fails=lambda a: True,
        # io_uring answers a zero-length read with 0 without asking the file;
        # read(2) reports EISDIR for a directory, so those run in userspace
        # (a size Param is never bound to 0).
        kernel_when=lambda a: _size_length(a) != 0,
        waits_for=select.POLLIN,
    ),
    Op(
        "write",
        (Arg("fd", "fd"), Arg("data", "data"), Arg("offset", "offset", None)),
        COUNT,
        _call_write,
        "WRITE",
        _prep_write,
        length=_data_length,
        short_fails=lambda a: True,
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
        decode=lambda region, r: decode_statx(region[:]),
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
        (Arg("path", "path"), _MODE, _DIR_FD),
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
