"""``copy_file``: ``shutil.copyfile`` done in the kernel.  The bytes go from
the source's page cache through a pipe into the destination's (splice, the
one copy sendfile makes too): they never become Python objects.

Like ``shutil.copyfile`` it refuses the same file twice (``SameFileError``)
and named pipes (``SpecialFileError``) after a stat of each path, makes the
destination with mode 0o666 less the umask, truncates it, and copies the
content only (no metadata).

A file of up to ``SMALL_COPY`` bytes (by its stat) goes in one chain of
reads and writes through the engine's buffer: open both, read the stat's
size (a size Param), write what was read, read one byte more (0: the end,
as a plain read loop's last read), close both.  One trip, no pipe, and no
splice (io_uring hands every splice to its workers).  A file that shrank
meanwhile writes what the read got (the engine resumes the link with that
length); one that grew, or a short write, goes the general way below.

The general chain: open both, then *pairs* of splices, source -> pipe -> target,
each at the descriptors' positions and hard-linked (a pair that moves less
than the pipe holds, or nothing, does not stop the chain), then close both.
Because the pipe carries the length, no atom needs to know it in advance: a
file of up to ``MAX_PAIRS - 1`` pipes' worth is copied in one trip to the
kernel, whatever its size turns out to be.  The copy is whole when a pair
finds the source's end (moves 0 bytes in) and everything that went into the
pipe came out; a larger file keeps its descriptors (exported) for more
chains of pairs.  The helper owns the pipe: made per call, sized to the file
(at most ``PIPE_SIZE``), closed on every path.

Where the kernel cannot splice the source or the target at all (the first
splice fails), the copy falls back to reads and writes through the engine's
buffer (``keep=False``), as shutil falls back from sendfile to read/write.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Sequence
from functools import cache
from typing import Any

from ..async_engine import AsyncEngine
from ..engine import Engine
from ..syslet import NEVER_STOP, Param, Ref, Syslet
from .driving import Helper, PathArg, adrive, drive, error, kernel_progress_engine

SMALL_COPY = 64 * 1024  # the largest file copied by one read and one write
PIPE_SIZE = 1024 * 1024  # the most a pipe is asked to hold (fs.pipe-max-size's default)
MAX_PAIRS = 30  # splice pairs in one chain (2 opens + 60 splices + 2 closes = 64 atoms)
COPY_CHUNK = 1024 * 1024  # bytes one chain moves on the read/write fallback
COPY_IN_FLIGHT = 8  # chains of one read/write fallback at a time (each a COPY_CHUNK buffer)
OPEN_SOURCE = os.O_RDONLY | os.O_CLOEXEC
OPEN_TARGET = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
Name = str | bytes  # a path as os.fspath gives it


class _Pairs:
    """A chain of ``pairs`` splice pairs.  ``opens``: it opens both files
    (atoms 0-1) and closes them at the end (``whole``) or exports them
    (``exports``); else the descriptors are the Params ``src`` and ``dst``.
    ``first`` is the index of the first pair's first splice."""

    def __init__(self, pairs: int, opens: bool, exports: bool) -> None:
        s = Syslet()
        src: Ref | Param = Param("src")
        dst: Ref | Param = Param("dst")
        if opens:
            src = s.openat(Param("src_path"), OPEN_SOURCE)
            dst = s.openat(Param("dst_path"), OPEN_TARGET, 0o666)
            if exports:
                s.export(src)
                s.export(dst)
        self.src, self.dst, self.first = src, dst, len(s)
        pipe_in, pipe_out = Param("pipe_in"), Param("pipe_out")
        for _ in range(pairs):
            s.splice(src, pipe_in, PIPE_SIZE, stop=NEVER_STOP)
            s.splice(pipe_out, dst, PIPE_SIZE, stop=NEVER_STOP)
        if opens and not exports:
            s.close(dst)
            s.close(src)
        self.program = s.compile()


@cache
def _pairs(pairs: int, opens: bool, exports: bool = False) -> _Pairs:
    return _Pairs(pairs, opens, exports)


class _Small:
    """A small file's chain (atoms: 0-1 open both, 2 read, 3 write, 4 the
    read at the end, 5-6 close both)."""

    def __init__(self) -> None:
        s = Syslet()
        src = s.openat(Param("src_path"), OPEN_SOURCE)
        dst = s.openat(Param("dst_path"), OPEN_TARGET, 0o666)
        got = s.read(src, Param("size", at_most=SMALL_COPY), stop=NEVER_STOP, keep=False)
        s.write(dst, got)
        s.read(src, 1, stop=NEVER_STOP, keep=False)
        s.close(dst)
        s.close(src)
        self.program = s.compile()


@cache
def _small() -> _Small:
    return _Small()


class _Reads:
    """The read/write fallback: ``opened`` opens both, exported; ``chunk``
    reads at an offset and writes what was read at the same offset."""

    def __init__(self) -> None:
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
def _reads() -> _Reads:
    return _Reads()


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


class _Pipe:
    """A copy's pipe, ``capacity`` bytes: what the kernel granted of the
    size asked for (over the user's pipe limits, the size it has).  Made
    per copy_file call (3 us of a copy's ~100), which closes it."""

    def __init__(self, size: int) -> None:
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        want = min(PIPE_SIZE, max(size, 1))
        try:
            self.capacity = fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, want)
        except OSError:
            self.capacity = fcntl.fcntl(self.write_end, fcntl.F_GETPIPE_SZ)

    def params(self) -> dict[str, int]:
        return {"pipe_in": self.write_end, "pipe_out": self.read_end}

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


class _Progress:
    """What the pairs did so far: bytes into the pipe and out of it, and
    whether the source's end was seen.  ``add`` raises the first error the
    way shutil would, or returns False where shutil gives up on its fast
    path before anything was copied (then the caller reads and writes)."""

    def __init__(self, src: Name, dst: Name) -> None:
        self.src, self.dst = src, dst
        self.moved_in = self.moved_out = 0
        self.at_end = False

    @property
    def done(self) -> bool:
        return self.at_end and self.moved_out == self.moved_in

    def add(self, results: Sequence[int | None], first: int, pairs: int) -> bool:
        for p in range(pairs):
            into, out = results[first + 2 * p], results[first + 2 * p + 1]
            if into is None or out is None:
                raise AssertionError(f"a hard-linked splice did not run: {results!r}")
            if into < 0:
                if self.moved_in == 0:
                    return False
                raise error(-into, self.src)
            emptied = self.moved_out == self.moved_in + into  # the pipe was empty for ``out``
            if out < 0 and not (out == -errno.EAGAIN and emptied):
                if self.moved_out == 0 and out != -errno.ENOSPC:
                    return False
                raise error(-out, self.dst)
            self.moved_in += into
            self.moved_out += max(out, 0)
            if into == 0:
                self.at_end = True
                if self.moved_out == self.moved_in:
                    return True
        return True


def _copy_file(src_path: PathArg, dst_path: PathArg) -> Helper[Any]:
    src, dst = os.fspath(src_path), os.fspath(dst_path)
    first = _checked(src_path, dst_path)  # (shutil names them as given)
    size = first.st_size if first is not None else 0
    if first is not None and size <= SMALL_COPY:
        # (a size of 0 may be a procfs file's: it reads SMALL_COPY)
        params = {"src_path": src, "dst_path": dst, "size": size or SMALL_COPY}
        (c,) = yield _small().program, [params]
        if _copied_small(c.results, src, dst):
            return dst_path
    pipe = _Pipe(size)
    try:
        pairs = -(-size // pipe.capacity) + 1  # to move it all and see the end
        if pairs <= MAX_PAIRS:
            whole = _pairs(pairs, opens=True)
            params = {"src_path": src, "dst_path": dst, **pipe.params()}
            (c,) = yield whole.program, [params]
            _raise_open_errors(c.results, src, dst)
            progress = _Progress(src, dst)
            spliced = progress.add(c.results, whole.first, pairs)
            if spliced and progress.done:
                return dst_path
            if spliced:  # it grew, or the target took less than the pipe gave it:
                pipe.close()  # again from the start, on a fresh pipe
                pipe = _Pipe(PIPE_SIZE)
        else:
            spliced = True
        if spliced and (yield from _splice_all(src, dst, pipe)):
            return dst_path
    finally:
        pipe.close()
    yield from _read_and_write(src, dst)  # (shutil's fallback from sendfile)
    return dst_path


def _copied_small(results: Sequence[int | None], src: Name, dst: Name) -> bool:
    """Whether the small chain copied the file whole; raises its errors as
    shutil would.  False: it grew, or the target took less than was read
    (the general way copies it again, and meets the error if there is one)."""
    _raise_open_errors(results, src, dst)
    read, wrote, more, closed_dst, closed_src = results[2:]
    for r, name in ((read, src), (wrote, dst), (more, src), (closed_dst, dst), (closed_src, src)):
        if r is not None and r < 0:
            raise error(-r, name)
    if read is None or more is None:
        raise AssertionError(f"an atom the chain never stops at did not run: {results!r}")
    return wrote == read and more == 0


def _raise_open_errors(results: Sequence[int | None], src: Name, dst: Name) -> None:
    for index, name in ((0, src), (1, dst)):
        r = results[index]
        if r is not None and r < 0:
            raise error(-r, name)


def _splice_all(src: Name, dst: Name, pipe: _Pipe) -> Helper[bool]:
    """Copy by chains of ``MAX_PAIRS`` pairs on exported descriptors; False
    where splicing cannot start (nothing copied: read and write instead)."""
    started = _pairs(MAX_PAIRS, opens=True, exports=True)
    (c,) = yield started.program, [{"src_path": src, "dst_path": dst, **pipe.params()}]
    fds = [fd for fd in (c[started.src], c[started.dst]) if fd is not None]
    try:
        _raise_open_errors(c.results, src, dst)
        progress = _Progress(src, dst)
        more = _pairs(MAX_PAIRS, opens=False)
        params = {"src": fds[0], "dst": fds[1], **pipe.params()}
        ok = progress.add(c.results, started.first, MAX_PAIRS)
        while ok and not progress.done:
            (c,) = yield more.program, [params]
            ok = progress.add(c.results, more.first, MAX_PAIRS)
        return ok
    finally:
        for fd in fds:
            os.close(fd)


def _read_and_write(src: Name, dst: Name) -> Helper[None]:
    """The fallback: chains of one read and one write at the same offset,
    ``COPY_IN_FLIGHT`` at a time, until a read comes back short."""
    reads = _reads()
    (c,) = yield reads.opened, [{"src": src, "dst": dst}]
    fds = [fd for fd in (c[reads.src], c[reads.dst]) if fd is not None]
    try:
        _raise_open_errors(c.results, src, dst)
        src_fd, dst_fd = fds
        offset = 0
        while True:  # rounds of COPY_IN_FLIGHT chunks, until a read comes back short
            offsets = [offset + i * COPY_CHUNK for i in range(COPY_IN_FLIGHT)]
            done = yield (
                reads.chunk,
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
                    return  # (a file that shrank meanwhile ends at its first short read)
            else:
                offset = offsets[-1] + COPY_CHUNK
    finally:
        for fd in fds:
            os.close(fd)


def copy_file(src: PathArg, dst: PathArg, *, engine: Engine | None = None) -> Any:
    """``shutil.copyfile(src, dst)`` in the kernel (see the module
    docstring); returns ``dst``.  Errors name the path they concern."""
    return drive(_copy_file(src, dst), engine, kernel_progress_engine)


async def acopy_file(src: PathArg, dst: PathArg, *, engine: AsyncEngine | None = None) -> Any:
    """``copy_file`` from a coroutine."""
    return await adrive(_copy_file(src, dst), engine)
