"""``copy_file``: ``shutil.copyfile`` done in the kernel.  The bytes go
from the source's page cache into the engine's buffer and out to the
destination (reads with ``keep=False``): they never become Python objects.

Like ``shutil.copyfile`` it refuses the same file twice (``SameFileError``)
and named pipes (``SpecialFileError``) after a stat of each path, makes the
destination with mode 0o666 less the umask, truncates it, and copies the
content only (no metadata).  A file of at most ``COPY_CHUNK`` bytes is one
chain (open both, read, write, close both); a larger one is opened once
and copied by chains of one read and one write at the same offset,
``COPY_IN_FLIGHT`` of them at a time, until a read comes back short.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from functools import cache
from typing import Any

from ..async_engine import AsyncEngine
from ..engine import Engine
from ..syslet import Param, Syslet
from .driving import Helper, PathArg, adrive, drive, error

COPY_CHUNK = 1024 * 1024  # bytes one chain moves
COPY_IN_FLIGHT = 8  # chains of one large copy at a time (each has a COPY_CHUNK buffer)
OPEN_SOURCE = os.O_RDONLY | os.O_CLOEXEC
OPEN_TARGET = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


class _Copies:
    """``whole``: open the source and the target, read, write, close both
    (atoms 0-5); ``opened``: open both, exported; ``chunk``: read at an
    offset, write what was read at the same offset."""

    def __init__(self) -> None:
        s = Syslet()
        src = s.openat(Param("src"), OPEN_SOURCE)
        dst = s.openat(Param("dst"), OPEN_TARGET, 0o666)
        s.write(dst, s.read(src, COPY_CHUNK, 0, keep=False), 0)
        s.close(dst)
        s.close(src)
        self.whole = s.compile()

        s = Syslet()
        self.src = s.openat(Param("src"), OPEN_SOURCE)
        self.dst = s.openat(Param("dst"), OPEN_TARGET, 0o666)
        s.export(self.src)
        s.export(self.dst)
        self.opened = s.compile()

        s = Syslet()
        offset = Param("offset")
        s.write(Param("dst"), s.read(Param("src"), COPY_CHUNK, offset, keep=False), offset)
        self.chunk = s.compile()


@cache
def _copies() -> _Copies:
    return _Copies()


def _checked(src: Any, dst: Any) -> os.stat_result | None:
    """shutil.copyfile's checks before it opens anything; the source's stat."""
    stats: list[os.stat_result | None] = []
    for name in (src, dst):
        try:
            st = os.stat(name)
        except OSError:
            stats.append(None)
            continue
        if stat.S_ISFIFO(st.st_mode):
            raise shutil.SpecialFileError(f"`{name}` is a named pipe")
        stats.append(st)
    first, second = stats
    if first is not None and second is not None and os.path.samestat(first, second):
        raise shutil.SameFileError(f"{src!r} and {dst!r} are the same file")
    if first is not None and stat.S_ISDIR(first.st_mode):
        raise error(errno.EISDIR, os.fspath(src))  # where open(src, "rb") fails
    return first


def _copy_file(src_path: PathArg, dst_path: PathArg) -> Helper[Any]:
    copies = _copies()
    src, dst = os.fspath(src_path), os.fspath(dst_path)
    first = _checked(src_path, dst_path)  # (shutil names them as given)
    if first is None or first.st_size < COPY_CHUNK:
        (c,) = yield copies.whole, [{"src": src, "dst": dst}]
        r = c.results
        for index, name in ((0, src), (1, dst), (2, src), (3, dst), (4, dst), (5, src)):
            if r[index] is not None and r[index] < 0:
                raise error(-r[index], name)
        if r[2] != COPY_CHUNK and r[3] == r[2]:
            return dst_path  # the whole file, all written
        # (it may have grown to COPY_CHUNK, or the write came back short: the
        # chunks below copy it all again, and a write that fails says why)
    (c,) = yield copies.opened, [{"src": src, "dst": dst}]
    fds = [fd for fd in (c[copies.src], c[copies.dst]) if fd is not None]
    try:
        if c.results[0] < 0:
            raise error(-c.results[0], src)
        if c.results[1] < 0:
            raise error(-c.results[1], dst)
        src_fd, dst_fd = fds
        offset = 0
        while True:  # rounds of COPY_IN_FLIGHT chunks, until a read comes back short
            offsets = [offset + i * COPY_CHUNK for i in range(COPY_IN_FLIGHT)]
            done = yield (
                copies.chunk,
                [{"src": src_fd, "dst": dst_fd, "offset": o} for o in offsets],
            )
            for o, c in zip(offsets, done, strict=True):
                read, wrote = c.results
                if read is not None and read < 0:
                    raise error(-read, src)
                if wrote is not None and wrote < 0:
                    raise error(-wrote, dst)
                if wrote != read:  # a short write: from there again, as a plain loop would
                    offset = o + (wrote or 0)
                    break
                if read != COPY_CHUNK:
                    return dst_path  # (a file that shrank meanwhile ends at its first short read)
            else:
                offset = offsets[-1] + COPY_CHUNK
    finally:
        for fd in fds:
            os.close(fd)


def copy_file(src: PathArg, dst: PathArg, *, engine: Engine | None = None) -> Any:
    """``shutil.copyfile(src, dst)`` in the kernel (see the module
    docstring); returns ``dst``.  Errors name the path they concern."""
    return drive(_copy_file(src, dst), engine)


async def acopy_file(src: PathArg, dst: PathArg, *, engine: AsyncEngine | None = None) -> Any:
    """``copy_file`` from a coroutine."""
    return await adrive(_copy_file(src, dst), engine)
