"""The cachemiss-thread engine: programs run by ``interpreter.execute`` on a
pool of worker threads, for machines where io_uring is missing or blocked.

Threads.  The owner thread (the Engine's) starts, cancels and reaps; only it
touches the notification ring and the execution table.  Workers only hand
over: a finished execution is appended to ``_done`` and the wake-up eventfd
(``fileno()``) is written, once until the owner drains it.

An execution's state, changed under ``_mutex`` (a C lock):

    queued --(a worker claims it)--> running --(the worker ends it)--> ended
    queued --(cancel)--> ended            running --(close gives up)--> ended
    ended --(the owner posts its completion)--> posted

Every execution enters ``ended`` exactly once, and that step appends exactly
one ``(execution, completion or None)`` to ``_done`` (None: the owner builds
the cancelled completion when it posts it), so posting from ``_done`` gives
one completion per execution.  A worker whose execution was given up (close
timed out) discards what it brings back, closing the descriptors it would
have exported, and touches neither ``_done`` nor the wake-up fd.

Interrupts on the owner thread.  A signal handler's exception
(KeyboardInterrupt) can land wherever CPython checks for them: at function
entry, after each call, at loop back-edges; never inside a straight run of
attribute, container and arithmetic operations.  So every hand-over the owner
makes is such a run ending in the one call that commits it:

- ``start``: the executions are built first (nothing is committed if that is
  interrupted), then registered and handed to the workers in one run whose
  last step is ``SimpleQueue.put``.  An exception escaping ``start`` after
  that put is an interrupt *after* the commit: the executions started iff
  ``in_flight`` grew by ``n``.
- posting (``_drain``): peek the oldest entry of ``_done``; if its execution
  is not yet posted, mark it posted, drop it from the table, count it, add it
  to the sink, and call ``NotificationRing.post``, all in one run; then pop
  the entry.  An interrupt before the post leaves it to post next time; after
  it, the next drain sees it posted and only pops it.  This is exact if
  ``post`` commits in one step (see the note in the report/issue 10):
  nothing between its entry and its append may be interrupted.
- ``cancel``: the state change and the append to ``_done`` are one run.
- the wake-up fd: an exception leaving entries in ``_done`` leaves the fd
  readable too, so an event loop watching it still calls ``reap``.

Close has a time bound: it cancels everything, waits ``close_timeout``
seconds for the workers to come back from calls that cannot be interrupted
(an ``openat`` of a FIFO with no writer), then ends the rest as cancelled and
returns.  The threads are daemons.

After ``fork()`` the child calls ``forked()`` (or ``close()``, which notices):
the backend is marked broken and touches nothing: no lock (a worker may have
held it at the fork), no join, no write, no close (the child's descriptor
numbers may since have been reused; ours are close-on-exec).
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import EngineClosed
from .interpreter import (
    Interrupt,
    call_blocking,
    error_result,
    execute,
    run_reference,
)
from .notify import PRIVATE_SINKS, CallCompletion, Completion, NotificationRing
from .program import Program

__all__ = [
    "Interrupt",
    "ThreadsBackend",
    "call_blocking",
    "default_workers",
    "error_result",
    "execute",
    "run_reference",
]

QUEUED, RUNNING, ENDED, POSTED = "queued", "running", "ended", "posted"
_ECANCELED = -125
_EIO = -5
_CHUNK_NS = 3600 * 10**9  # the longest single poll() of reap; longer waits loop
# The next execution id, process-wide, so that an id is never another
# backend's too.  A list: read and written without a call between, so no
# other thread (and no signal handler) runs between the two.
_NEXT_ID = [1]


class _Job:
    """One execution on the thread engine (the module docstring has its
    states): a program's, or a threadlet's (``call``: the callable and its
    arguments; then ``program`` is None).  ``interrupt``: the Interrupt of
    the worker running it, set only while ``running``.  ``results``: the
    worker's results list, from its claim; a copy once close gave the
    execution up."""

    __slots__ = (
        "bound", "call", "ident", "interrupt", "program", "results", "sink", "state", "tag",
    )  # fmt: skip

    def __init__(
        self,
        ident: int,
        program: Program | None,
        bound: Mapping[str, Any],
        tag: Any,
        sink: Any,
        call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:
        self.ident = ident
        self.program = program
        self.bound = bound
        self.tag = tag
        self.sink = sink
        self.call = call
        self.state = QUEUED
        self.interrupt: Interrupt | None = None
        self.results: list[int | None] | None = None


def default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


def _called(job: _Job) -> CallCompletion:
    """Run a threadlet's callable: what it returns or raises (of any type)
    is its completion's."""
    assert job.call is not None
    fn, args, kwargs = job.call
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # its result, whatever it is
        return CallCompletion(job.tag, None, exc, False)
    return CallCompletion(job.tag, value, None, False)


def _cancelled(job: _Job) -> Completion:
    """The completion of an execution the owner ended: cancelled while queued
    (nothing ran), or given up by close (atoms done keep their results; the
    one its worker is still in reports -ECANCELED)."""
    if job.program is None:
        return CallCompletion(job.tag, None, None, True)
    if job.results is None:
        results: list[int | None] = [None] * len(job.program.atoms)
    else:
        results = list(job.results)
        if None in results:
            results[results.index(None)] = _ECANCELED
    return Completion(job.tag, job.program, results, None, True, None)


def _failed(job: _Job, results: list[int | None], cancelled: bool) -> Completion:
    """The completion of an execution the interpreter failed on (a bug, or a
    BaseException a call let through): the atom it was in reports -EIO."""
    if job.program is None:  # (a threadlet's call cannot fail: see _called)
        return CallCompletion(job.tag, None, RuntimeError("the threadlet's worker failed"), False)
    results = list(results)
    stopped_at = None
    if None in results:
        stopped_at = results.index(None)
        results[stopped_at] = _EIO
    return Completion(job.tag, job.program, results, stopped_at, cancelled, None)


def _discard(c: Completion) -> None:
    """Drop the completion of an execution close gave up on: close the
    descriptors it exports (its others are closed already)."""
    program = c.program
    if program is None:  # a threadlet's: nothing to close
        return
    for index in program.exports:
        fd = c[program.refs[index]]
        if isinstance(fd, int):
            try:  # noqa: SIM105 - no call to interrupt (contextlib.suppress is one)
                os.close(fd)
            except OSError:
                pass


class ThreadsBackend:
    """Runs executions on a pool of worker threads (the cachemiss threads),
    with the same completions, notification ring, cancel and close as the
    io_uring backend.  ``close_timeout``: the seconds ``close()`` waits for
    workers in calls that cannot be interrupted (default 2)."""

    kind = "threads"
    close_timeout = 2.0

    def __init__(self, notify: NotificationRing, workers: int | None = None) -> None:
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, not {workers!r}")
        self._notify = notify
        self._mutex = threading.Lock()  # the states of executions; never held across a wait
        # Batches (deques of _Job) for the workers; None tells one to exit.
        self._queue: queue.SimpleQueue[deque[_Job] | None] = queue.SimpleQueue()
        self._jobs: dict[int, _Job] = {}  # {ident: _Job started, not yet posted}; owner only
        self._done: deque[tuple[_Job, Completion | None]] = deque()  # ended, not yet posted
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake, select.POLLIN)
        self._signalled = False  # the wake fd was written and not yet drained
        self._sleeping = False  # the owner sleeps in reap until _want are in _done
        self._want = 1
        self._closed = False
        self._pid = os.getpid()
        self.in_flight = 0
        self.threadlets = 0  # of in_flight: threadlets (not bounded by capacity)
        self.broken: str | None = None
        self.nslots = 0
        # An eventfd of the owner's to write too on every hand-over (the io_uring
        # engine's, when this pool runs its threadlets: one fd wakes it for both).
        self.also_wake = -1
        self._threads: dict[threading.Thread, Interrupt] = {}  # {worker: its Interrupt}
        try:
            for _ in range(workers):
                self._spawn()
        except BaseException:
            for _ in self._threads:
                self._queue.put(None)
            self._closed = True
            os.close(self._wake)
            raise

    # -- workers -----------------------------------------------------------------
    def _spawn(self) -> None:
        """Start one worker (with the mutex free, or held by a dying worker)."""
        interrupt = Interrupt()
        thread = threading.Thread(
            target=self._worker, args=(interrupt,), name="uringlets-cachemiss", daemon=True
        )
        self._threads[thread] = interrupt
        try:
            thread.start()
        except BaseException:
            del self._threads[thread]
            interrupt.close()
            raise

    def _worker(self, interrupt: Interrupt) -> None:
        told = False
        try:
            told = self._work(interrupt)
        finally:
            with self._mutex:
                interrupt.close()
                self._threads.pop(threading.current_thread(), None)
                if not told and not self._closed:  # a bug killed it: replace it
                    try:
                        self._spawn()
                    except BaseException:
                        self.broken = "a cachemiss thread died and could not be replaced"

    def _work(self, interrupt: Interrupt) -> bool:
        """Run executions until told to exit (True)."""
        get, put, mutex = self._queue.get, self._queue.put, self._mutex
        while True:
            batch = get()
            if batch is None:
                return True
            try:
                job = batch.popleft()
            except IndexError:  # another worker took the last one
                continue
            if batch:
                put(batch)  # the rest, for the other workers
            if interrupt.flag:
                interrupt.clear()  # no one sets it between executions
            with mutex:
                if job.state is not QUEUED:
                    continue  # cancelled before it ran
                job.state = RUNNING
                job.interrupt = interrupt
                program = job.program
                results: list[int | None] = [None] * len(program.atoms) if program else []
                job.results = results
            c: Completion | None = None
            try:
                if program is None:
                    c = _called(job)
                else:
                    c = execute(program, job.bound, job.tag, interrupt, results)
            except BaseException:  # the execution ends all the same
                pass
            if c is None:
                c = _failed(job, results, interrupt.flag)
            self._finish(job, c)

    def _finish(self, job: _Job, c: Completion) -> None:
        """Hand a finished execution to the owner, or discard it if close gave
        it up.  The wake fd is written once until the owner drains it, and not
        while the owner sleeps for more than are there."""
        with self._mutex:
            if job.state is RUNNING:
                job.state = ENDED
                job.interrupt = None
                done = self._done
                done.append((job, c))
                if not self._signalled and (not self._sleeping or len(done) >= self._want):
                    self._signalled = True
                    os.eventfd_write(self._wake, 1)
                    if self.also_wake >= 0:
                        os.eventfd_write(self.also_wake, 1)
                return
        _discard(c)

    # -- the backend protocol ----------------------------------------------------
    def can_start(self, program: Program, n: int) -> bool:
        return True

    def fileno(self) -> int:
        """A descriptor readable when ``reap(0, ...)`` would post something
        (-1 once closed).  Written when a worker hands an execution over and
        no write is pending; not while the owner sleeps in ``reap``."""
        return -1 if self._closed else self._wake

    def start(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        n: int,
        tags: Sequence[Any] | None,
        sink: list[Completion] | None = None,
    ) -> Sequence[int]:
        if self._closed:
            raise EngineClosed("the engine is closed")
        first = _NEXT_ID[0]
        ids = range(first, first + n)
        batch = deque(
            [
                _Job(
                    first + k,
                    program,
                    {name: col[k] for name, col in params.items()},
                    None if tags is None else tags[k],
                    sink,
                )
                for k in range(n)
            ]
        )
        table = dict(zip(ids, batch, strict=True))
        # The commit: one run without a call, ending in the put.
        _NEXT_ID[0] = first + n
        self._jobs |= table
        self.in_flight += n
        self._queue.put(batch)
        return ids

    def start_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tag: Any,
    ) -> int:
        """Start one threadlet: ``fn(*args, **kwargs)`` on a worker; its
        completion (``CallCompletion``) goes into the same notification
        ring.  Returns its id."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        ident = _NEXT_ID[0]
        job = _Job(ident, None, {}, tag, None, (fn, args, kwargs))
        batch = deque((job,))
        # The commit: one run without a call, ending in the put.
        _NEXT_ID[0] = ident + 1
        self._jobs[ident] = job
        self.in_flight += 1
        self.threadlets += 1
        self._queue.put(batch)
        return ident

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        """Post finished executions; wait until ``min_complete`` were posted
        (at most ``timeout_ns``; < 0 or inf: no limit).  Returns False on
        timeout, or at once if fewer can still come."""
        posted = self._collect()
        if posted >= min_complete:
            return True
        deadline = None
        if timeout_ns >= 0:
            try:
                deadline = time.monotonic_ns() + int(timeout_ns)
            except (OverflowError, ValueError):  # inf, nan: no limit
                deadline = None
        done = self._done
        while posted < min_complete:
            if not self.in_flight:
                return False
            want = min(min_complete - posted, self.in_flight)
            if len(done) < want:
                if deadline is None:
                    ms: float = _CHUNK_NS / 1e6
                else:
                    left = deadline - time.monotonic_ns()
                    if left <= 0:
                        return False
                    ms = min(left, _CHUNK_NS) / 1e6
                self._want = want
                self._sleeping = True
                try:
                    if len(done) < want:
                        self._poller.poll(ms)
                except BaseException:
                    self._sleeping = False
                    self._keep_signalled()
                    raise
                self._sleeping = False
            posted += self._collect()
        return True

    def _collect(self) -> int:
        """Drain the wake fd, then post what is in ``_done``.

        The fd is read *before* the flag is cleared.  The other order loses
        a wake-up: a worker that hands over between the clear and the read
        writes the fd and sets the flag again, the read consumes that write,
        and the flag then says "written" while the fd is empty, so the next
        hand-over writes nothing and a sleeping owner is never woken.  In
        this order a worker that sees the flag still set appended its
        execution before the clear, hence before the drain that follows."""
        try:
            if self._signalled:
                try:  # noqa: SIM105 - no call to interrupt (contextlib.suppress is one)
                    os.eventfd_read(self._wake)
                except BlockingIOError:  # a worker set the flag and writes now
                    pass
                self._signalled = False
            return self._drain()
        except BaseException:
            self._keep_signalled()
            raise

    def _keep_signalled(self) -> None:
        """On an exception: what is left in ``_done`` keeps the wake fd
        readable, so a loop watching ``fileno()`` reaps it."""
        if self._done and not self._closed:  # a spurious wake-up costs one reap
            self._signalled = True
            os.eventfd_write(self._wake, 1)

    def _drain(self) -> int:
        """Post every entry of ``_done``: one completion per execution, each
        hand-over committed by ``post`` at the end of a run with no call
        before it (module docstring).  Returns how many were posted."""
        done, jobs, post = self._done, self._jobs, self._notify.post
        n = 0
        while done:
            job, c = done[0]
            if job.state is not POSTED:
                if c is None:
                    c = _cancelled(job)
                sink = job.sink
                # (type() is a call, where a signal handler may run: before
                # the hand-over, never between it and the post)
                public = type(sink) not in PRIVATE_SINKS
                job.state = POSTED
                del jobs[job.ident]
                self.in_flight -= 1
                if job.program is None:
                    self.threadlets -= 1
                if sink is not None:
                    sink += (c,)  # an operator, not a call: nothing can land between
                if public:
                    post(c)
                n += 1
            done.popleft()
        return n

    def disable(self, why: str) -> None:
        self.broken = why

    def cancel(self, ident: int) -> bool:
        """Cancel an execution: a queued one ends now (nothing ran), a running
        one is interrupted where it waits.  False if it already ended."""
        job = self._jobs.get(ident)
        if job is None:
            return False
        try:
            state = self._cancel(job)
            if state is QUEUED:
                self._drain()
        except BaseException:
            self._keep_signalled()
            raise
        # a running threadlet cannot be interrupted: it runs to its end
        return state is QUEUED or (state is RUNNING and job.program is not None)

    def _cancel(self, job: _Job) -> str:
        """Cancel one execution; returns the state it was in."""
        with self._mutex:
            state = job.state
            if state is QUEUED:
                job.state = ENDED
                self._done.append((job, None))
            elif state is RUNNING and job.interrupt is not None and job.program is not None:
                # the Interrupt of the worker running it now: alive, as a
                # worker closes it only when it exits, between executions
                job.interrupt.set()
        return state

    def close(self) -> None:
        """Cancel everything, wait up to ``close_timeout`` seconds for the
        workers to come back, end the rest as cancelled (their workers
        discard what they bring back), post every completion, and stop the
        threads.  Resumable if interrupted."""
        if self._closed:
            return
        if os.getpid() != self._pid:
            self.forked()
            return
        for job in list(self._jobs.values()):
            self._cancel(job)
        self._drain()
        deadline = time.monotonic_ns() + int(self.close_timeout * 1e9)
        while self.in_flight:
            left = deadline - time.monotonic_ns()
            if left <= 0:
                break
            self.reap(self.in_flight, left)
        stuck: set[Interrupt] = set()
        with self._mutex:
            for job in self._jobs.values():
                if job.state is RUNNING:
                    job.state = ENDED
                    if job.interrupt is not None:
                        stuck.add(job.interrupt)
                    job.interrupt = None
                    job.results = list(job.results or ())
                    self._done.append((job, None))
        self._drain()
        with self._mutex:
            if not self._closed:
                self._closed = True  # no execution is running: no worker writes the fd
                os.close(self._wake)
            workers = list(self._threads.items())
        for _ in workers:
            self._queue.put(None)
        until = time.monotonic() + 0.5
        for thread, interrupt in workers:
            if interrupt not in stuck:
                thread.join(max(0.0, until - time.monotonic()))

    def forked(self) -> None:
        """In a forked child: disable the backend, touching nothing it shares
        with the parent (module docstring)."""
        self._closed = True
        self.broken = f"the engine belongs to process {self._pid}, not to this forked child"
        self.in_flight = 0
        self._jobs = {}
        self._done = deque()
