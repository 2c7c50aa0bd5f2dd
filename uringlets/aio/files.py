"""Whole files: ``read_file``/``read_files``, ``write_file`` (atomic),
``copy_file``, and their async forms.  Each is a sans-I/O generator
(``driving``) over programs compiled once, at first use."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any, Literal, overload

from ..async_engine import AsyncEngine
from ..atom import NEVER_STOP
from ..engine import Engine
from ..notify import Columns
from ..program import Program
from ..syslet import Param, Syslet
from .driving import (
    Columnar,
    Helper,
    PathArg,
    Request,
    adrive,
    check_errors,
    drive,
    error,
    first_error,
    kernel_progress_engine,
    outcome,
)

SMALL_READ = 16 * 1024  # what the first chain of read_file(s) reads of each file
LARGE_READ = 1024 * 1024  # one read of a larger file's continuation
OPEN_READ = os.O_RDONLY | os.O_CLOEXEC
OPEN_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


# -- the programs (compiled once, at first use) ------------------------------------------
class _Reads:
    """``small``: open, read ``SMALL_READ`` bytes, read 1 more byte (0: the
    end was reached, as a plain read loop's last read), close: a whole file
    in one chain.  The reads never stop the chain, so the close always runs.
    ``opened``: open (exported) and fstat, for a larger file; ``read_at``:
    one read of it at an offset."""

    def __init__(self) -> None:
        s = Syslet()
        fd = s.openat(Param("path"), OPEN_READ)
        self.data = s.read(fd, SMALL_READ, stop=NEVER_STOP)
        s.read(fd, 1, stop=NEVER_STOP, keep=False)  # (only its result matters)
        s.close(fd)
        self.small = s.compile()

        s = Syslet()
        self.fd = s.openat(Param("path"), OPEN_READ)
        s.export(self.fd)
        self.stat = s.fstat(self.fd)
        self.opened = s.compile()

        s = Syslet()
        self.chunk = s.read(Param("fd"), LARGE_READ, Param("offset"))
        self.read_at = s.compile()


class _Writes:
    """``temp``: create the temporary file, write, fsync, close;
    ``temp_nosync`` the same without fsync; ``more``: open it again and
    write the rest at an offset (after a short write), fsync, close;
    ``publish``: rename it over the target, then open, fsync and close the
    directory; ``publish_nosync`` only renames."""

    def __init__(self) -> None:
        self.temp, self.temp_nosync = (self._temp(sync) for sync in (True, False))
        self.write_index = 1

        s = Syslet()
        fd = s.openat(Param("path"), os.O_WRONLY | os.O_CLOEXEC)
        self.more_write = s.write(fd, Param("data"), Param("offset"))
        s.fsync(fd, stop=NEVER_STOP)
        s.close(fd)
        self.more = s.compile()

        s = Syslet()
        s.renameat(Param("temp"), Param("path"), stop=NEVER_STOP)
        directory = s.openat(Param("directory"), OPEN_DIR)
        s.fsync(directory, stop=NEVER_STOP)
        s.close(directory)
        self.publish = s.compile()

        s = Syslet()
        s.renameat(Param("temp"), Param("path"))
        self.publish_nosync = s.compile()

    @staticmethod
    def _temp(sync: bool) -> Program:
        s = Syslet()
        fd = s.openat(Param("path"), OPEN_TEMP, 0o666)
        s.write(fd, Param("data"))  # (atom 1: write_index)
        if sync:
            s.fsync(fd, stop=NEVER_STOP)
        s.close(fd)
        return s.compile()


@cache
def _reads() -> _Reads:
    return _Reads()


@cache
def _writes() -> _Writes:
    return _Writes()


# -- reading ----------------------------------------------------------------------------
def _read_files(paths: Sequence[PathArg], max_size: int | None, errors: str) -> Helper[list[Any]]:
    check_errors(errors)
    larger: list[int] = []
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0
    ):
        raise ValueError(f"max_size must be None or an int >= 0, not {max_size!r}")
    reads = _reads()
    names: list[Any] = list(map(os.fspath, paths))  # type: ignore[arg-type]
    # (a column of str paths is encoded by the binding, a pass in C)
    got: Columns = yield Columnar(reads.small, [{"path": n} for n in names], reads.data)
    out = got.values
    opened, lengths, more, closed = got.results
    # The usual result of every file: (0, length, 0, 0): opened, read, at the
    # end, closed; checked a column at a time (None: an atom did not run).
    usual = not (any(opened) or any(more) or any(closed)) and None not in lengths
    if not usual or min(lengths, default=0) < 0:
        for i, (length, further) in enumerate(zip(lengths, more, strict=True)):
            code = first_error(got.row(i))
            if code:
                out[i] = error(code, names[i])
            elif length is None or further is None:
                out[i] = error(errno.EIO, names[i])  # (a chain that never stops ran whole)
            elif further > 0:
                out[i] = None
                larger.append(i)  # a byte beyond SMALL_READ: the rest in more reads
    if max_size is not None:
        known = lengths if usual else [n for n in lengths if n is not None]
        if max(known, default=0) > max_size:
            for i, (length, value) in enumerate(zip(lengths, out, strict=True)):
                if type(value) is bytes and length > max_size:
                    out[i] = error(errno.EFBIG, names[i])
    if larger:
        yield from _read_larger(reads, names, larger, out, max_size)
    return outcome(out, errors)


def _read_larger(
    reads: _Reads, names: list[Any], which: list[int], out: list[Any], max_size: int | None
) -> Helper[None]:
    """Read the files ``which`` (larger than the first chain reads) whole:
    open and fstat each, then reads at offsets, all of a round in one
    batch, until each file's read returns 0."""
    opened = yield reads.opened, [{"path": names[i]} for i in which]
    fds: dict[int, int] = {}
    try:
        parts: dict[int, list[bytes]] = {}
        sizes: dict[int, int] = {}
        for i, c in zip(which, opened, strict=True):
            fd = c[reads.fd]
            if fd is not None:
                fds[i] = fd
            code = first_error(c.results)
            if code:
                out[i] = error(code, names[i])
            elif max_size is not None and c[reads.stat].st_size > max_size:
                out[i] = error(errno.EFBIG, names[i])
            else:
                parts[i] = []
                sizes[i] = c[reads.stat].st_size
        # Round one reads each file's size and one more chunk (a plain loop's
        # last, empty read); a file that grew meanwhile goes another round.
        offsets = {i: 0 for i in parts}
        while offsets:
            todo: list[tuple[int, int]] = []
            for i, offset in offsets.items():
                size = max(sizes[i] - offset, 0)
                for k in range(size // LARGE_READ + 1):
                    todo.append((i, offset + k * LARGE_READ))
            got = yield reads.read_at, [{"fd": fds[i], "offset": o} for i, o in todo]
            ended: set[int] = set()
            for (i, _), c in zip(todo, got, strict=True):
                if i in ended:
                    continue
                r = c.results[0]
                if r is None or r < 0:
                    out[i] = error(-r if r else errno.EIO, names[i])
                    ended.add(i)
                elif r == 0:
                    ended.add(i)  # the end of the file
                else:
                    parts[i].append(c[reads.chunk])
                    offsets[i] += r
                    if r < LARGE_READ:
                        ended.add(i)
            for i in ended:
                del offsets[i]
                if not isinstance(out[i], OSError):
                    out[i] = b"".join(parts[i])
                    if max_size is not None and len(out[i]) > max_size:
                        out[i] = error(errno.EFBIG, names[i])
    finally:
        for fd in fds.values():
            os.close(fd)


@overload
def read_files(
    paths: Iterable[PathArg],
    *,
    max_size: int | None = ...,
    errors: Literal["raise"] = ...,
    engine: Engine | None = ...,
) -> list[bytes]: ...
@overload
def read_files(
    paths: Iterable[PathArg],
    *,
    max_size: int | None = ...,
    errors: Literal["return"],
    engine: Engine | None = ...,
) -> list[bytes | OSError]: ...
def read_files(
    paths: Iterable[PathArg],
    *,
    max_size: int | None = None,
    errors: str = "raise",
    engine: Engine | None = None,
) -> list[Any]:
    """The contents of ``paths``, in order: one chain per file (open, read,
    read to the end, close), all of them in one batch (more than the
    engine's capacity as room frees up).  ``errors="raise"``: the first
    failing file's ``OSError`` is raised once every file is done;
    ``"return"``: it takes the file's place in the list.  ``max_size``: a
    larger file fails with EFBIG."""
    return drive(_read_files(list(paths), max_size, errors), engine)


def read_file(path: PathArg, *, max_size: int | None = None, engine: Engine | None = None) -> bytes:
    """``pathlib.Path(path).read_bytes()``: the whole file, from one chain
    when it is at most 16 KiB, else from reads at offsets that follow."""
    out: list[bytes] = drive(_read_files([path], max_size, "raise"), engine)
    return out[0]


async def aread_files(
    paths: Iterable[PathArg],
    *,
    max_size: int | None = None,
    errors: str = "raise",
    engine: AsyncEngine | None = None,
) -> list[Any]:
    """``read_files`` from a coroutine."""
    return await adrive(_read_files(list(paths), max_size, errors), engine)


async def aread_file(
    path: PathArg, *, max_size: int | None = None, engine: AsyncEngine | None = None
) -> bytes:
    """``read_file`` from a coroutine."""
    out: list[bytes] = await adrive(_read_files([path], max_size, "raise"), engine)
    return out[0]


# -- writing ----------------------------------------------------------------------------
def _write_file(path: PathArg, data: bytes, fsync: bool) -> Helper[None]:
    writes = _writes()
    target = os.fspath(path)
    name = os.fsencode(target)
    directory, base = os.path.split(name)  # (bytes: the temporary name is made of them)
    temp = os.path.join(directory, b".%s.%s.tmp" % (base, secrets.token_hex(6).encode()))
    created = True  # (not known while the first chain runs: closed then, it is removed)
    try:
        program = writes.temp if fsync else writes.temp_nosync
        done = yield program, [{"path": temp, "data": data}]
        c = done[0]
        created = c.results[0] == 0
        code = first_error(c.results)
        written = c.results[writes.write_index] or 0
        while not code and written < len(data):  # a short write: the rest, as a plain loop
            done = yield writes.more, [{"path": temp, "data": data[written:], "offset": written}]
            code = first_error(done[0].results)
            written += done[0][writes.more_write] or 0
        if code:
            raise error(code, target)
        if fsync:
            request: Request = (
                writes.publish,
                [{"temp": temp, "path": name, "directory": directory or b"."}],
            )
        else:
            request = (writes.publish_nosync, [{"temp": temp, "path": name}])
        done = yield request
        results = done[0].results
        if results[0] is not None and results[0] < 0:
            raise error(-results[0], target)
        created = False  # renamed: it is the target now
        code = first_error(results)
        if code:  # the directory's fsync: the file is in place, maybe not durable
            raise error(code, os.path.dirname(target) or ("." if isinstance(target, str) else b"."))
    finally:
        if created:  # (a plain call: this also runs when the helper is closed)
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes-like, not {type(data).__name__}")


def write_file(
    path: PathArg, data: bytes | bytearray | memoryview, *, fsync: bool = True,
    engine: Engine | None = None,
) -> None:  # fmt: skip
    """Replace ``path``'s content with ``data`` atomically: a temporary file
    in the same directory (``.NAME.RANDOM.tmp``, mode 0o666 less the umask,
    as ``open(path, "wb")`` would make it) is written, fsynced and closed in
    one chain, then renamed over ``path`` and the directory fsynced in a
    second.  A reader sees the old content or the new, never a part; a crash
    may leave the temporary file behind, never a partial ``path``.
    ``fsync=False`` skips both fsyncs (atomic, not durable).  On failure
    the temporary file is removed and the ``OSError`` names ``path``."""
    drive(_write_file(path, _as_bytes(data), fsync), engine, kernel_progress_engine)


async def awrite_file(
    path: PathArg, data: bytes | bytearray | memoryview, *, fsync: bool = True,
    engine: AsyncEngine | None = None,
) -> None:  # fmt: skip
    """``write_file`` from a coroutine."""
    await adrive(_write_file(path, _as_bytes(data), fsync), engine)
