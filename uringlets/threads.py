"""Blocking execution of programs: the reference interpreter and the
cachemiss-thread engine.

``execute`` runs a program with the catalogue's blocking calls
(``atoms.Op.call``), one after another.  Called directly (``run_reference``)
it is the oracle of the differential tests and the definition of what every
engine must produce; run by the worker threads of ``ThreadsBackend`` it is the
engine for machines where io_uring is missing or blocked.

Ownership: descriptors created by an execution live in its private table
(``{creator atom: fd}``) from their creation until a ``close`` atom closes
them or the execution ends; at the end every one still open is closed,
except exported ones, which the completion hands to the caller.

Threads.  The owner thread (the Engine's) submits, cancels and drains; only
it touches the notification ring.  Workers only hand over: a finished
completion is appended to a deque and the owner is poked through a pipe if
it sleeps.  Cancel while an atom is blocked: a ``timeout`` atom is woken at
once; a read or write on a descriptor that is not a regular file waits in
``poll()`` together with the worker's wakeup pipe, so cancel interrupts it and
the atom reports ``-ECANCELED``, as on io_uring.  A call that cannot be
interrupted (a read of a regular file, an open on a slow file system, or any
call on a descriptor the syslet opened with ``openat``, which is taken to be a
regular file) runs to its end, and the execution stops right after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from . import atoms
from .notify import Completion, NotificationRing
from .program import Program
from .syslet import Atom, Param, Ref, stop_holds


class Interrupt:
    """How a worker waits interruptibly.  ``set`` is called by the owner
    thread to cancel the execution the worker is running."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()
        os.write(self._w, b"\0")

    def clear(self) -> None:
        if self._event.is_set():  # only a cancel left something to drain
            self._event.clear()
            with contextlib.suppress(BlockingIOError):
                while os.read(self._r, 64):
                    pass

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep; True if interrupted."""
        return self._event.wait(seconds)

    def wait_fd(self, fd: int, events: int, timeout: float | None = None) -> int:
        """Wait until ``fd`` is ready for ``events`` (a regular file always
        is).  Returns 0, ``ECANCELED`` if interrupted, ``ETIME`` after
        ``timeout`` seconds."""
        return _poll(fd, events, timeout, self._r, self._event)

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def _poll(
    fd: int, events: int, timeout: float | None, cancel_fd: int = -1,
    cancelled: threading.Event | None = None,
) -> int:  # fmt: skip
    poller = select.poll()
    poller.register(fd, events)
    if cancel_fd >= 0:
        poller.register(cancel_fd, select.POLLIN)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = poller.poll(None if left is None else left * 1000)
        if cancelled is not None and cancelled.is_set():
            return errno.ECANCELED
        if any(f == fd for f, _ in ready):
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            return errno.ETIME


def execute(
    program: Program,
    bound: Mapping[str, Any],
    tag: Any = None,
    interrupt: Interrupt | None = None,
) -> Completion:
    """Run ``program`` with already-bound parameters; returns its completion.
    With an ``interrupt``, a set interrupt ends the execution as cancelled."""
    n = len(program.atoms)
    results: list[int | None] = [None] * n
    values: dict[int, Any] = {}
    fds: dict[int, int] = {}  # {creator atom: open fd}
    stopped_at = None
    cancelled = False
    try:
        for atom in program.atoms:
            if interrupt is not None and interrupt.is_set:
                cancelled = True
                break
            r = _run_atom(atom, bound, fds, values, interrupt)
            results[atom.index] = r
            if interrupt is not None and interrupt.is_set:
                cancelled = True
                break
            if stop_holds(atom.stop, r):
                stopped_at = atom.index
                break
    finally:
        for creator, fd in fds.items():
            if creator in program.exports:
                values[creator] = fd
            else:
                os.close(fd)
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
        return atoms.errno_result(exc)
    if op.closes_fd:
        ref = raw_args["fd"]
        if isinstance(ref, Ref):
            fds.pop(ref.index, None)
    if op.creates_fd:
        fds[atom.index] = value
    elif value is not None:
        values[atom.index] = value
    return r


def call_blocking(
    atom: Atom, args: Mapping[str, Any], interrupt: Interrupt | None = None, guard: bool = True
) -> tuple[int, Any]:
    """The atom's blocking call on resolved arguments (real fds, bytes):
    ``(normalised result, value)``; raises OSError.  Bounded by the atom's
    timeout (-ETIME) and, given an ``interrupt``, cancellable (-ECANCELED)
    where the call waits on a descriptor or sleeps."""
    op, timeout = atom.op, atom.timeout
    if interrupt is None and timeout is None and op.result != atoms.SLEEP:
        return op.outcome(op.call(args))  # nothing can interrupt it

    def wait(fd: int, events: int) -> int:
        if interrupt is not None:
            return interrupt.wait_fd(fd, events, timeout)
        return _poll(fd, events, timeout)

    if op.result == atoms.SLEEP:
        seconds = args["seconds"] if timeout is None else min(args["seconds"], timeout)
        if interrupt is not None and interrupt.sleep(seconds):
            return -errno.ECANCELED, None
        if interrupt is None:
            time.sleep(seconds)
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


# --------------------------------------------------------------------------
# The cachemiss-thread engine.
# --------------------------------------------------------------------------
class _Job:
    """One execution on the thread engine.  ``state``: queued -> running ->
    done, each step made by one thread under the backend's lock."""

    __slots__ = ("bound", "ident", "interrupt", "program", "sink", "state", "tag")

    def __init__(
        self, ident: int, program: Program, bound: Mapping[str, Any], tag: Any, sink: Any
    ) -> None:
        self.ident = ident
        self.program = program
        self.bound = bound
        self.tag = tag
        self.sink = sink
        self.state = "queued"
        self.interrupt: Interrupt | None = None


def default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadsBackend:
    """Runs executions on a pool of worker threads (the cachemiss threads),
    with the same completions, notification ring, backpressure, cancel and
    close as the io_uring backend."""

    kind = "threads"

    def __init__(self, notify: NotificationRing, workers: int | None = None) -> None:
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, not {workers!r}")
        self._notify = notify
        self._lock = threading.Condition()
        self._queue: deque[_Job] = deque()  # guarded by _lock
        self._jobs: dict[int, _Job] = {}  # {ident: job in flight}; owner thread only
        self._done: deque[tuple[_Job, Completion]] = deque()  # workers append
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sleeping = False
        self._want = 1  # completions the sleeping owner waits for
        self._closing = False
        self._next = 1
        self.in_flight = 0
        self.broken: str | None = None
        self.nslots = 0
        self._threads = [
            threading.Thread(target=self._worker, name=f"uringlets-cachemiss-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # -- workers -----------------------------------------------------------------
    def _worker(self) -> None:
        interrupt = Interrupt()
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._closing:
                        self._lock.wait()
                    if not self._queue:
                        return
                    job = self._queue.popleft()
                    job.state = "running"
                    job.interrupt = interrupt
                    interrupt.clear()
                c = execute(job.program, job.bound, job.tag, interrupt)
                with self._lock:
                    job.state = "done"
                    job.interrupt = None
                self._done.append((job, c))
                # Poke the owner only when it sleeps and has enough to wake for.
                if self._sleeping and len(self._done) >= self._want:
                    os.write(self._wake_w, b"\0")
        finally:
            interrupt.close()

    # -- the backend protocol ----------------------------------------------------
    def can_start(self, program: Program, n: int) -> bool:
        return True

    def start(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        n: int,
        tags: Sequence[Any],
        sink: list[Completion] | None = None,
    ) -> Sequence[int]:
        first = self._next
        self._next += n
        jobs = [
            _Job(first + k, program, {name: col[k] for name, col in params.items()}, tags[k], sink)
            for k in range(n)
        ]
        for job in jobs:
            self._jobs[job.ident] = job
        self.in_flight += len(jobs)
        with self._lock:
            self._queue.extend(jobs)
            self._lock.notify(len(jobs))
        return [job.ident for job in jobs]

    def _post(self, job: _Job, c: Completion) -> None:
        del self._jobs[job.ident]  # one execution, one completion
        self.in_flight -= 1
        if job.sink is not None:
            job.sink.append(c)
        self._notify.post(c)

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        """Post finished executions; wait until ``min_complete`` were posted
        (at most ``timeout_ns``, < 0 no limit).  Returns False on timeout."""
        posted = self._drain()
        if posted >= min_complete:
            return True
        deadline = None if timeout_ns < 0 else time.monotonic() + timeout_ns / 1e9
        while posted < min_complete:
            # a worker pokes once this many are done, or when the last one is
            self._want = min(min_complete - posted, self.in_flight)
            self._sleeping = True
            try:
                if not self._done:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if left == 0.0:
                        return False
                    select.select([self._wake_r], [], [], left)
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
            finally:
                self._sleeping = False
            posted += self._drain()
        return True

    def _drain(self) -> int:
        n = 0
        done = self._done
        while done:
            job, c = done.popleft()
            self._post(job, c)
            n += 1
        return n

    def cancel(self, ident: int) -> bool:
        job = self._jobs.get(ident)
        if job is None:
            return False
        self._cancel(job)
        return True

    def _cancel(self, job: _Job) -> None:
        with self._lock:
            if job.state == "queued":
                self._queue.remove(job)
                job.state = "done"
                never_ran = True
            else:
                never_ran = False
                if job.state == "running" and job.interrupt is not None:
                    job.interrupt.set()
        if never_ran:
            results: list[int | None] = [None] * len(job.program.atoms)
            self._post(job, Completion(job.tag, job.program, results, None, True, None))

    def close(self) -> None:
        """Cancel everything, let the workers finish what cannot be
        interrupted, post every completion, and stop the threads."""
        for job in list(self._jobs.values()):
            self._cancel(job)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        for t in self._threads:
            t.join()
        self._drain()
        assert not self._jobs, "an execution ended without a completion"
        os.close(self._wake_r)
        os.close(self._wake_w)
