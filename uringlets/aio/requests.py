"""POSIX-AIO-style requests: ``aio_read`` / ``aio_write`` start one read or
write and return an ``AioRequest`` at once; its ending is announced the way
the caller asks (``notify=``):

* ``Eventfd(fd)``: **in the kernel**.  The request's chain ends with a
  write of 1 to the eventfd, hard-linked after the transfer, so the counter
  goes up the moment the transfer is done, whether or not any Python runs;
  an event loop or another thread can wait on it.
* ``Signal(signum)``: **a userspace step**.  io_uring has no op that sends
  a signal, so ``signal.raise_signal(signum)`` is called when the engine's
  owner thread sees the ending (``aio_drain``, ``aio_suspend``,
  ``result()``, ``done()``): once per request, and, when the owner is the
  main thread, its Python handler runs before the next request's signal is
  raised (Python itself runs handlers only in the main thread).
* a callable: **a userspace step**: ``notify(request)`` is called on the
  owner thread when it sees the ending, once per request.
* None: nothing; poll ``done()`` or wait with ``result()``.

Who sees an ending: the owner thread of the request's engine, whenever it
calls ``aio_drain()``, ``aio_suspend()`` or a request's ``done()`` /
``result()``; every notification of a request happens exactly once, at the
first of those that finds it ended (a notification that raises leaves the
others of that drain to the next one).  A request's completion never enters
the engine's notification ring (``PrivateSink``), so requests may share an
engine with other work.
"""

from __future__ import annotations

import os
import signal
import struct
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..atom import NEVER_STOP
from ..atoms import MAX_TRANSFER
from ..engine import Engine
from ..handles import Handle
from ..notify import Completion, PrivateSink
from ..program import Program
from ..syslet import Param, Ref, Syslet
from .driving import kernel_progress_engine as default_engine

_ONE = struct.pack("=Q", 1)  # what a write to an eventfd adds


@dataclass(frozen=True)
class Eventfd:
    """Announce the ending by adding 1 to eventfd ``fd`` (in the kernel)."""

    fd: int


@dataclass(frozen=True)
class Signal:
    """Announce the ending by raising signal ``signum`` in this process (a
    userspace step)."""

    signum: int


Notify = Eventfd | Signal | Callable[["AioRequest"], Any] | None


SMALLEST_BUFFER = 4096  # a read's buffer: the size's power of two, at least this


def _buffer_for(size: int) -> int:
    """The buffer (a size Param's ``at_most``) of a read of ``size`` > 0
    bytes: programs go by powers of two, so a few serve every size, and
    none holds more than twice the bytes asked for."""
    return min(max(SMALLEST_BUFFER, 1 << (size - 1).bit_length()), MAX_TRANSFER)


@lru_cache(maxsize=64)
def _program(kind: str, buffer: int, notified: bool, positioned: bool) -> tuple[Program, Ref]:
    """read(fd, size, offset) of a size Param with a ``buffer``-byte buffer
    (0: a read of 0 bytes, a constant), or write(fd, data, offset)
    (``positioned`` False: at the file position, without an offset), then,
    when ``notified``, the write of 1 to the eventfd Param (hard-linked: it
    runs whatever the transfer's result)."""
    s = Syslet()
    stop = NEVER_STOP if notified else 0
    offset = Param("offset") if positioned else None
    if kind == "read":
        size = Param("size", at_most=buffer) if buffer else 0
        transfer = s.read(Param("fd"), size, offset, stop=stop)
    else:
        transfer = s.write(Param("fd"), Param("data"), offset, stop=stop)
    if notified:
        s.write(Param("eventfd"), _ONE, stop=NEVER_STOP)
    return s.compile(), transfer


class AioRequest:
    """One started read or write.  Keeps its buffer (a write's data, a
    read's bytes once done) itself; the descriptor stays the caller's (do
    not close it while the request is in flight)."""

    __slots__ = ("__weakref__", "_sink", "engine", "handle", "kind", "notify", "transfer")

    def __init__(self, engine: Engine, kind: str, notify: Notify, transfer: Ref) -> None:
        self.engine = engine
        self.kind = kind
        self.notify = notify
        self.transfer = transfer
        self.handle: Handle | None = None
        self._sink = PrivateSink()  # the engine puts its completion here, not in its ring

    @property
    def completion(self) -> Completion | None:
        return self._sink[0] if self._sink else None

    def done(self) -> bool:
        """Whether it ended (drives the engine once, without waiting, and
        announces what ended)."""
        aio_drain(0, engine=self.engine)
        return bool(self._sink)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the ending (``timeout`` seconds at most: TimeoutError);
        return the bytes read or the count written, as ``os.pread`` /
        ``os.pwrite`` would, or raise their OSError."""
        aio_suspend([self], timeout)  # (announces it, if it ended)
        if not self._sink:
            raise TimeoutError("the request has not ended")
        c = self._sink[0]
        if c.cancelled:
            raise InterruptedError("the request was cancelled")
        r = c.results[0]
        if r is None or r < 0:
            code = -r if r is not None else 0
            raise OSError(code, os.strerror(code))
        return c[self.transfer] if self.kind == "read" else r

    def cancel(self) -> bool:
        """Ask the kernel to stop it; False if it already ended."""
        return self.handle is not None and self.engine.cancel(self.handle)

    def __repr__(self) -> str:
        state = "ended" if self._sink else "in flight"
        return f"<AioRequest {self.kind} {state}>"


# Requests in flight, per engine: what aio_drain announces.
_in_flight: weakref.WeakKeyDictionary[Engine, set[AioRequest]] = weakref.WeakKeyDictionary()


def _start(
    kind: str, fd: int, size: int, params: dict[str, Any], notify: Notify, eng: Engine | None
) -> AioRequest:
    if not (notify is None or isinstance(notify, (Eventfd, Signal)) or callable(notify)):
        raise TypeError(f"notify must be None, Eventfd, Signal or a callable, not {notify!r}")
    eng = default_engine() if eng is None else eng
    positioned = params["offset"] is not None
    if not positioned:
        del params["offset"]
    if isinstance(notify, Eventfd):
        params["eventfd"] = notify.fd
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TRANSFER:
        raise ValueError(f"aio_read: size must be an int in 0..{MAX_TRANSFER}, not {size!r}")
    buffer = 0
    if kind == "read" and size:
        buffer = _buffer_for(size)
        params["size"] = size
    program, transfer = _program(kind, buffer, isinstance(notify, Eventfd), positioned)
    request = AioRequest(eng, kind, notify, transfer)
    request.handle = eng._submit_into(request._sink, program, {"fd": fd, **params}, request)
    _in_flight.setdefault(eng, set()).add(request)
    return request


def aio_read(
    fd: int,
    size: int,
    offset: int | None = None,
    *,
    notify: Notify = None,
    engine: Engine | None = None,
) -> AioRequest:
    """Start ``os.pread(fd, size, offset)`` (``os.read(fd, size)`` without
    an offset: a pipe, a socket); see the module docstring."""
    return _start("read", fd, size, {"offset": offset}, notify, engine)


def aio_write(
    fd: int,
    data: bytes,
    offset: int | None = None,
    *,
    notify: Notify = None,
    engine: Engine | None = None,
) -> AioRequest:
    """Start ``os.pwrite(fd, data, offset)`` (``os.write(fd, data)``
    without an offset); see the module docstring."""
    return _start("write", fd, 0, {"offset": offset, "data": bytes(data)}, notify, engine)


def aio_drain(timeout: float | None = 0, *, engine: Engine | None = None) -> int:
    """Drive the engine (wait up to ``timeout`` seconds for one ending, 0:
    not at all, None: as long as requests are in flight) and announce every
    request that ended; returns how many were announced."""
    eng = default_engine() if engine is None else engine
    pending = _in_flight.get(eng)
    if not pending:
        return 0
    if not any(r._sink for r in pending):
        eng._drive(timeout)
    ended = [r for r in pending if r._sink]
    for request in ended:
        pending.discard(request)  # announced once, before its notification runs
    for i, request in enumerate(ended):
        notify = request.notify
        try:
            if isinstance(notify, Signal):
                signal.raise_signal(notify.signum)
            elif callable(notify):
                notify(request)
        except BaseException:
            pending.update(ended[i + 1 :])  # the rest: at the next drain, still once each
            raise
    return len(ended)


def aio_suspend(requests: Iterable[AioRequest], timeout: float | None = None) -> list[AioRequest]:
    """Wait until at least one of ``requests`` ended (``timeout`` seconds at
    most), announcing what ends meanwhile; returns those that ended."""
    requests = list(requests)
    until = None if timeout is None else time.monotonic() + timeout
    for eng in {r.engine for r in requests}:
        aio_drain(0, engine=eng)  # what ended already is announced first
    while True:
        done = [r for r in requests if r._sink]
        if done or not requests:
            return done
        left = None if until is None else until - time.monotonic()
        if left is not None and left <= 0:
            return []
        engines = {r.engine for r in requests}
        for eng in engines:
            aio_drain(left if len(engines) == 1 else 0, engine=eng)
        if len(engines) > 1 and not any(r._sink for r in requests):
            time.sleep(0.001)  # (requests on several engines: poll them in turn)
