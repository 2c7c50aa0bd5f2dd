"""The blocking-step interpreter: a program's atoms run one after another with
the catalogue's blocking calls (``atoms.Op.call``).

``execute`` is what a cachemiss thread (``threads.ThreadsBackend``) runs for
one execution; ``run_reference`` runs it in the calling thread and is the
oracle of the differential tests, the definition of what every engine must
produce; ``call_blocking`` is one atom's call, which the io_uring engine's
userspace steps use too.

Errors are results.  Whatever a blocking call raises becomes the atom's
``-errno`` result, the same on every engine (``error_result``):

=========================================  =========
``OSError``                                its errno (``EIO`` if it has none)
``ValueError``, ``TypeError``,             ``EINVAL``: an argument the call
``OverflowError``, ``struct.error``        refuses (flags past 31 bits, ...)
``MemoryError``                            ``ENOMEM``
any other ``Exception``                    ``EIO``
=========================================  =========

A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
``SystemExit``) is no result: in the calling thread (``run_reference``) it
propagates once the execution's descriptors are closed; a cachemiss thread
contains it itself (threads.py).

Ownership: descriptors created by an execution live in its private table
(``{creator atom: fd}``) from their creation until a ``close`` atom closes
them or the execution ends; at the end every one still open is closed,
except exported ones, which the completion hands to the caller (and which are
closed too if the execution ends by an exception).

Interrupts.  A worker waits interruptibly through its ``Interrupt``: a
``timeout`` atom sleeps in ``poll()`` on the interrupt's eventfd; a read or
write on a descriptor that is not a regular file first waits in ``poll()`` on
that descriptor and the eventfd together, so a cancel ends the wait and the
atom reports ``-ECANCELED``, as on io_uring.  A call that cannot be
interrupted (a read of a regular file, an open of a FIFO or on a slow file
system, or any call on a descriptor the syslet opened with ``openat``, taken
to be a regular file) runs to its end, and the execution stops right after it.
Waits of any length are cut into ``_CHUNK`` seconds, so no timeout overflows
``poll()``; an infinite one never ends.
"""

from __future__ import annotations

import errno
import math
import os
import select
import stat
import struct
import time
from collections.abc import Mapping
from typing import Any

from . import atoms
from .notify import Completion
from .program import Program
from .syslet import Atom, Param, Ref, stop_holds

_CHUNK = 3600.0  # seconds: the longest single poll() or sleep; longer waits loop
_INVALID = (ValueError, TypeError, OverflowError, struct.error)


def error_result(exc: BaseException) -> int:
    """The ``-errno`` result an atom reports when its call raised ``exc``
    (the table in the module docstring)."""
    if isinstance(exc, OSError):
        code = exc.errno
        if isinstance(code, int) and code > 0:
            return -code
        return -errno.EIO
    if isinstance(exc, MemoryError):
        return -errno.ENOMEM
    if isinstance(exc, _INVALID):
        return -errno.EINVAL
    return -errno.EIO


class Interrupt:
    """How one cachemiss thread waits interruptibly: a flag, and an eventfd
    that is readable once the flag is set.  The worker creates it, clears it
    between executions and closes it when it exits; the owner thread sets it,
    under the backend's lock and only while the worker runs the execution
    being cancelled, so a set never reaches a closed descriptor."""

    __slots__ = ("closed", "fd", "flag")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.flag = False
        self.closed = False

    def set(self) -> None:
        """Interrupt the worker's wait (owner thread).  The flag, then one
        write: no call between them, so no signal handler either."""
        if not self.closed:
            self.flag = True
            os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        """Forget a past interrupt (the worker, between executions)."""
        self.flag = False
        try:  # noqa: SIM105 - no call to interrupt (contextlib.suppress is one)
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    @property
    def is_set(self) -> bool:
        return self.flag

    def sleep(self, seconds: float) -> bool:
        """Sleep; True if interrupted."""
        return _sleep(seconds, self)

    def wait_fd(self, fd: int, events: int, timeout: float | None = None) -> int:
        """Wait until ``fd`` is ready for ``events`` (a regular file always
        is).  Returns 0, ``ECANCELED`` if interrupted, ``ETIME`` after
        ``timeout`` seconds."""
        return _poll(fd, events, timeout, self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def _deadline(seconds: float | None) -> float | None:
    """The monotonic time ``seconds`` from now; None for no limit (None, inf,
    or a number too large for a float)."""
    if seconds is None:
        return None
    try:
        deadline = time.monotonic() + float(seconds)
    except OverflowError:
        return None
    return None if math.isinf(deadline) else deadline


def _ms_until(deadline: float | None) -> float | None:
    """poll()'s timeout (ms) for a wait until ``deadline``: at most ``_CHUNK``."""
    if deadline is None:
        return None
    return max(0.0, min(deadline - time.monotonic(), _CHUNK)) * 1000


def _poll(fd: int, events: int, timeout: float | None, interrupt: Interrupt | None = None) -> int:
    poller = select.poll()
    poller.register(fd, events)
    if interrupt is not None:
        poller.register(interrupt.fd, select.POLLIN)
    deadline = _deadline(timeout)
    while True:
        ready = poller.poll(_ms_until(deadline) if deadline is not None else _CHUNK * 1000)
        if interrupt is not None and interrupt.flag:
            return errno.ECANCELED
        if any(f == fd for f, _ in ready):
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            return errno.ETIME


def _sleep(seconds: float, interrupt: Interrupt | None) -> bool:
    """Sleep ``seconds`` (inf: for ever); True if ``interrupt`` cut it short."""
    deadline = _deadline(seconds)
    if interrupt is None:
        while deadline is None or (left := deadline - time.monotonic()) > 0:
            time.sleep(_CHUNK if deadline is None else min(left, _CHUNK))
        return False
    poller = select.poll()
    poller.register(interrupt.fd, select.POLLIN)
    while not interrupt.flag:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        poller.poll(_ms_until(deadline) if deadline is not None else _CHUNK * 1000)
    return True


def execute(
    program: Program,
    bound: Mapping[str, Any],
    tag: Any = None,
    interrupt: Interrupt | None = None,
    results: list[int | None] | None = None,
) -> Completion:
    """Run ``program`` with already-bound parameters; returns its completion.
    With an ``interrupt``, a set interrupt ends the execution as cancelled.
    ``results`` (one None per atom) receives each result as it comes, for a
    caller that must tell what ran if the execution is given up."""
    if results is None:
        results = [None] * len(program.atoms)
    values: dict[int, Any] = {}
    fds: dict[int, int] = {}  # {creator atom: open fd}
    stopped_at = None
    cancelled = ended = False
    try:
        for atom in program.atoms:
            if interrupt is not None and interrupt.flag:
                cancelled = True
                break
            try:
                r = _run_atom(atom, bound, fds, values, interrupt)
            except Exception as exc:  # resolving arguments, or a bug: still a result
                r = error_result(exc)
            results[atom.index] = r
            if interrupt is not None and interrupt.flag:
                cancelled = True
                break
            if stop_holds(atom.stop, r):
                stopped_at = atom.index
                break
        ended = True
    finally:
        for creator, fd in fds.items():
            if ended and creator in program.exports:
                values[creator] = fd
            else:
                try:  # noqa: SIM105 - no call to interrupt (contextlib.suppress is one)
                    os.close(fd)
                except OSError:
                    pass
    return Completion(tag, program, results, stopped_at, cancelled, values or None)


def _run_atom(
    atom: Atom,
    bound: Mapping[str, Any],
    fds: dict[int, int],
    values: dict[int, Any],
    interrupt: Interrupt | None,
) -> int:
    """One blocking call, interruptible by ``interrupt`` and bounded by the
    atom's timeout where the call waits on a descriptor (or sleeps)."""
    op, raw_args = atom.op, atom.args
    args: dict[str, Any] = {}
    for spec in op.args:
        value = raw_args[spec.name]
        if isinstance(value, Param):
            value = bound[value.name]
        elif isinstance(value, Ref):
            if spec.kind == "fd":
                if value.index not in fds:
                    return -errno.EBADF  # never opened, or closed already
                value = fds[value.index]
            else:  # data: the bytes the atom received (none if it failed)
                value = atoms.data_of(values.get(value.index))
        args[spec.name] = value
    # A descriptor the execution opened as a file is taken not to block (a
    # regular file): no poll() guard, so no fstat() either.
    fd_ref = raw_args.get("fd")
    guard = not (isinstance(fd_ref, Ref) and atoms.CATALOGUE[fd_ref.op].opens_files)
    try:
        r, value = call_blocking(atom, args, interrupt, guard)
    except OSError as exc:
        return error_result(exc)
    if op.closes_fd:
        ref = raw_args["fd"]
        if isinstance(ref, Ref):
            fds.pop(ref.index, None)
    if op.creates_fd:
        if r >= 0 and isinstance(value, int):  # a wait that timed out made none
            fds[atom.index] = value
    elif value is not None:
        values[atom.index] = value
    return r


def call_blocking(
    atom: Atom, args: Mapping[str, Any], interrupt: Interrupt | None = None, guard: bool = True
) -> tuple[int, Any]:
    """The atom's blocking call on resolved arguments (real fds, bytes):
    ``(normalised result, value)``.  Raises only ``OSError``, with a positive
    errno: any other ``Exception`` of the call becomes one whose errno is
    ``error_result``'s (module docstring).  Bounded by the atom's timeout
    (-ETIME) and, given an ``interrupt``, cancellable (-ECANCELED) where the
    call waits on a descriptor or sleeps."""
    try:
        return _call(atom, args, interrupt, guard)
    except OSError as exc:
        if isinstance(exc.errno, int) and exc.errno > 0:
            raise
        raise OSError(errno.EIO, f"{atom.op.name}: {exc!r}") from exc
    except Exception as exc:
        code = -error_result(exc)
        raise OSError(code, f"{atom.op.name}: {exc!r}") from exc


def _call(
    atom: Atom, args: Mapping[str, Any], interrupt: Interrupt | None, guard: bool
) -> tuple[int, Any]:
    op, timeout = atom.op, atom.timeout
    if interrupt is None and timeout is None and op.result != atoms.SLEEP:
        return op.outcome(op.call(args))  # nothing can interrupt it

    def wait(fd: int, events: int) -> int:
        return _poll(fd, events, timeout, interrupt)

    if op.result == atoms.SLEEP:
        seconds = args["seconds"] if timeout is None else min(args["seconds"], timeout)
        if _sleep(seconds, interrupt):
            return -errno.ECANCELED, None
        return (-errno.ETIME if seconds < args["seconds"] else 0), None
    if op.waits_for and guard and _may_block(args["fd"]):
        err = wait(args["fd"], op.waits_for)
        if err:
            return -err, None
    if op.interruptible is not None:
        return op.outcome(op.interruptible(args, wait))
    return op.outcome(op.call(args))


def _may_block(fd: int) -> bool:
    try:
        return not stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False  # the call itself will report the error


def run_reference(program: Program, *, tag: Any = None, **params: Any) -> Completion:
    """Run ``program`` in the calling thread, one blocking call per atom."""
    return execute(program, program.bind(params), tag)
