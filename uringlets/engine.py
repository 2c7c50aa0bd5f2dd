"""``Engine``: submit / wait / run / cancel / close, over a backend.

The Engine owns the notification ring, binds parameters, checks the owner
thread, and turns "no room" into waiting or ``RingFull``.  The backend (the
io_uring one in ``uring.py``) starts executions, reaps the kernel's
completions and posts one ``Completion`` per execution into the ring.  The
backend is chosen here and only here (``engine="auto"``); nothing else asks
which one it has.

Room.  ``capacity`` bounds the executions *in flight* (what holds kernel
resources: SQEs, slots, scratch buffers); on io_uring each also needs its
slots.  Both come back by themselves as executions end, so a blocking submit
drives the ring (processing deadlines too) until there is room, and
``block=False`` raises ``RingFull`` instead.  Ended executions wait in the
notification ring, which is unbounded: none is ever dropped.

Submission is transactional: ``backend.start`` either leaves every execution
of the call in the ring or, when it raises, nothing of them (table entry,
slots, scratch).  An engine belongs to the process that made it: in a forked
child every call raises ``EngineClosed`` and closing touches nothing the
parent still uses.
"""

from __future__ import annotations

import errno
import heapq
import math
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from . import kernel
from .backend import Backend
from .errors import EngineClosed, RingFull
from .handles import Handle, Handles
from .notify import Completion, NotificationRing
from .private_runs import PrivateRuns
from .program import Program
from .restrict import Restriction
from .threads import ThreadsBackend
from .uring import UringBackend

ENGINE_ENV = "URINGLETS_ENGINE"
_KINDS = ("auto", "uring", "threads")


_MAX_WAIT_NS = 86_400 * 10**9  # one wait of the kernel at most; longer ones loop
# How long run_many waits for half its executions in flight to end before it
# refills with whatever room there is (_start_all)
REFILL_WAIT = 0.001


def _until(timeout: float | None) -> float | None:
    """The monotonic time a ``timeout`` in seconds ends (None or inf: never)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"timeout must be None or seconds >= 0, not {timeout!r}")
    if timeout == math.inf or timeout > 10**9:
        return None  # no limit (beyond 30 years, none anyone waits for)
    return time.monotonic() + timeout


def executions(
    count: int | None, params: Sequence[Mapping[str, Any]] | None, common: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The parameters of each execution a ``submit_many`` / ``run_many``
    call asks for: one per mapping in ``params`` (merged over ``common``),
    or ``count`` times ``common`` (one mapping, shared: binding does not
    copy it)."""
    if params is not None:
        binds: list[Mapping[str, Any]] = (
            [{**common, **p} for p in params] if common else list(params)
        )
        if count is not None and count != len(binds):
            raise ValueError("count and len(params) differ")
        return binds
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, not {count!r}")
    return [common] * count


_LIVE: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines of this process


def _after_fork_in_child() -> None:
    for engine in list(_LIVE):
        engine._forked()
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Engine(PrivateRuns):
    """Runs programs.  ``engine``: ``"auto"`` (io_uring where the kernel
    allows it, else the cachemiss threads, with the reason in
    ``fallback_reason``), ``"uring"`` or ``"threads"``; the
    ``URINGLETS_ENGINE`` environment variable overrides ``"auto"``.
    ``capacity`` bounds the executions in flight (see the module
    docstring).  ``sq_entries`` sizes the io_uring submission ring, ``workers``
    the thread pool.  ``restrict``: the programs this engine may run
    (restrict.py): any program using another op is refused at submit
    (``TranslateError``), and on io_uring the ring itself allows only their
    SQEs (``restricted_in_kernel``).  ``progress``: on io_uring, ``"owner"``
    (the default, fastest) runs the kernel's completion work when the owner
    thread next enters the engine, so a chain goes on past a blocking atom
    only then; ``"kernel"`` has the kernel run it as soon as the atom is done
    (interrupting the owner thread like a signal), so kernel links advance
    on their own (userspace steps still wait for the owner).  The thread
    engine always advances on its own.  Every method must be called from
    the thread that made the engine."""

    def __init__(
        self,
        engine: str = "auto",
        capacity: int = 1024,
        *,
        sq_entries: int = 256,
        workers: int | None = None,
        restrict: Iterable[Program] | None = None,
        progress: str = "owner",
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        if progress not in ("owner", "kernel"):
            raise ValueError(f"progress must be 'owner' or 'kernel', not {progress!r}")
        self._progress = progress
        self._owner = threading.get_ident()
        self._pid = os.getpid()
        self._capacity = capacity
        self._notify = NotificationRing()
        self._closed = False
        self._deadlines: list[tuple[float, int]] = []  # heap of (monotonic time, execution id)
        self.fallback_reason: str | None = None
        self.restricted_in_kernel = False  # the ring itself refuses other SQEs
        self._workers = workers
        self._restriction = None if restrict is None else Restriction.of(restrict, kernel.probe())
        self._backend: Backend = self._choose(engine, capacity, sq_entries, workers)
        self.kind: str = self._backend.kind
        # The cachemiss threads that run threadlets: the thread engine's own,
        # or on io_uring a pool made at the first submit_call (see _pool).
        self._calls: ThreadsBackend | None = (
            self._backend if isinstance(self._backend, ThreadsBackend) else None
        )
        _LIVE.add(self)

    def _choose(self, engine: str, capacity: int, sq_entries: int, workers: int | None) -> Backend:
        """Pick the backend: the only place that knows there are two."""
        if engine not in _KINDS:
            raise ValueError(f"engine must be one of {_KINDS}, not {engine!r}")
        if isinstance(sq_entries, bool) or not isinstance(sq_entries, int) or sq_entries < 1:
            raise ValueError(f"sq_entries must be a positive int, not {sq_entries!r}")
        choice = engine
        if choice == "auto":
            forced = os.environ.get(ENGINE_ENV, "")
            if forced:
                if forced not in _KINDS:
                    raise ValueError(f"{ENGINE_ENV} must be one of {_KINDS}, not {forced!r}")
                choice = forced
                if forced == "threads":
                    self.fallback_reason = f"{ENGINE_ENV}=threads"
        if choice in ("auto", "uring"):
            features = kernel.probe()
            if features.available:
                restriction = self._restriction
                if restriction is not None and "RESTRICTIONS" not in features.extras:
                    restriction = None  # (checked at submit only: restricted_in_kernel False)
                try:
                    backend = UringBackend(
                        self._notify, capacity, sq_entries, restriction, self._progress
                    )
                    self.restricted_in_kernel = restriction is not None
                    return backend
                except OSError as exc:
                    if choice == "uring" or exc.errno not in kernel.UNAVAILABLE_ERRNOS:
                        raise
                    self.fallback_reason = f"io_uring ring setup failed: {exc}"
            elif choice == "uring":
                raise OSError(
                    errno.ENOSYS, f"engine='uring' but io_uring is not available: {features.reason}"
                )
            else:
                self.fallback_reason = features.reason
        return ThreadsBackend(self._notify, workers)

    # -- guards ------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed or self._backend.broken or threading.get_ident() != self._owner:
            self._refuse()

    def _refuse(self) -> NoReturn:
        if os.getpid() != self._pid:
            raise EngineClosed("the engine belongs to the process that made it (this is a fork)")
        if threading.get_ident() != self._owner:
            raise RuntimeError("an Engine may only be used from the thread that created it")
        if self._closed:
            raise EngineClosed("the engine is closed")
        raise EngineClosed(f"the engine is broken: {self._backend.broken}")

    def _forked(self) -> None:
        """In a forked child (``os.register_at_fork``): refuse every call
        from now on, and let the backend forget what it shares with the
        parent (the ring's mappings, the workers' pipes) without touching it."""
        if not self._closed:
            self._closed = True
            self._backend.forked()
            if self._calls is not None and self._calls is not self._backend:
                self._calls.forked()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        """Executions and threadlets started and not yet ended."""
        return self._backend.in_flight + self._threadlets()

    def _threadlets(self) -> int:
        """Threadlets in flight on a pool of their own (io_uring), else 0."""
        calls = self._calls
        return calls.in_flight if calls is not None and calls is not self._backend else 0

    # -- threadlets ----------------------------------------------------------------
    def submit_call(
        self, fn: Callable[..., Any], /, *args: Any, tag: Any = None, **kwargs: Any
    ) -> Handle:
        """Run ``fn(*args, **kwargs)`` on a cachemiss thread (a threadlet);
        its ``CallCompletion`` (``value`` or ``exception``) goes into the
        notification ring with the syslets' completions.  Threadlets are
        not bounded by ``capacity`` (they hold no kernel resource): they
        queue for the pool's workers (``workers``, default ``min(32,
        cpu_count + 4)``).  A queued threadlet can be cancelled; a running
        one runs to its end.  Raises ``TypeError`` if ``fn`` is not
        callable, ``EngineClosed``."""
        self._check()
        if not callable(fn):
            raise TypeError(f"submit_call needs a callable, got {fn!r}")
        return Handle(self, self._pool().start_call(fn, args, kwargs, tag), tag)

    def _pool(self) -> ThreadsBackend:
        """The threadlets' pool; on io_uring made at first use, writing the
        ring's eventfd on every hand-over, so that one descriptor wakes the
        engine for both."""
        if self._calls is None:
            pool = ThreadsBackend(self._notify, self._workers)
            pool.also_wake = self._backend.fileno()
            self._calls = pool
        return self._calls

    # -- submit ------------------------------------------------------------------
    def submit(
        self,
        program: Program,
        *,
        tag: Any = None,
        block: bool = True,
        deadline: float | None = None,
        **params: Any,
    ) -> Handle:
        """Start one execution (async_exec).  ``deadline``: seconds after
        which the execution is cancelled, at the latest in the next ``wait``
        or ``run`` (its completion then says ``cancelled``).  Raises
        ``ParamError``, ``RingFull`` when ``block=False`` and there is no
        room (``capacity`` executions in flight, or too few free slots: see
        the module docstring), ``EngineClosed``."""
        tags = None if tag is None else (tag,)
        return Handle(self, self._start(program, (params,), tags, block, None, deadline)[0], tag)

    def submit_many(
        self,
        program: Program,
        count: int | None = None,
        *,
        params: Sequence[Mapping[str, Any]] | None = None,
        tags: Sequence[Any] | None = None,
        block: bool = True,
        deadline: float | None = None,
        **common: Any,
    ) -> Handles:
        """Start ``count`` executions of one program in one call, all with the
        ``common`` parameters, or one per mapping in ``params`` (merged over
        ``common``).  All or none start."""
        binds = executions(count, params, common)
        if tags is not None:
            tags = list(tags)  # the caller may reuse its sequence; completions keep these
            if len(tags) != len(binds):
                raise ValueError("len(tags) differs from the number of executions")
        return Handles(self, self._start(program, binds, tags, block, None, deadline), tags)

    def _start(
        self,
        program: Program,
        binds: Sequence[Mapping[str, Any]],
        tags: Sequence[Any] | None,
        block: bool,
        sink: list[Completion] | None,
        deadline: float | None,
    ) -> Sequence[int]:
        """Start ``len(binds)`` executions (tags None: every tag is None);
        returns their ids."""
        if self._closed or self._backend.broken or threading.get_ident() != self._owner:
            self._refuse()
        if not isinstance(program, Program):
            raise TypeError(f"expected a Program (Syslet.compile()), got {program!r}")
        restriction = self._restriction
        if restriction is not None and program not in restriction.permitted:
            restriction.check(program)
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, (int, float))
            or not 0 <= deadline <= 10**6
        ):
            raise ValueError(f"deadline must be seconds in [0, 1e6], not {deadline!r}")
        n = len(binds)
        if n > self._capacity:
            raise ValueError(f"{n} executions exceed the engine's capacity of {self._capacity}")
        if not n:
            return ()
        columns = program.bind_columns(binds)
        backend = self._backend
        executions = backend.in_flight - backend.threadlets  # threadlets take no capacity
        while executions + n > self._capacity or not backend.can_start(program, n):
            if not block:
                raise RingFull(
                    errno.EAGAIN,
                    f"{backend.in_flight} executions in flight (capacity {self._capacity}) "
                    f"or too few free slots for {n} more; wait() for others or block",
                )
            if backend.in_flight == 0:
                raise ValueError(
                    f"{n} executions need {n * program.plan.nslots} slots; "
                    f"the engine has {backend.nslots}"
                )
            self._pump(1, None)  # processes deadlines too
            self._check()
            executions = backend.in_flight - backend.threadlets
        ids = backend.start(program, columns, n, tags, sink)  # all or nothing
        if deadline is not None:
            when = time.monotonic() + deadline
            for ident in ids:
                heapq.heappush(self._deadlines, (when, ident))
        return ids

    # -- wait / run -------------------------------------------------------------
    def wait(
        self,
        min_events: int = 1,
        timeout: float | None = None,
        max_events: int | None = None,
    ) -> list[Completion]:
        """Drain completions (async_wait): once at least ``min_events`` are
        ready (or as many as can still come), or ``timeout`` seconds passed,
        return those ready (at most ``max_events``).  ``min_events=0`` never
        blocks, for event-loop callbacks."""
        self._check()
        notify, backend = self._notify, self._backend
        until = _until(timeout)
        if self._threadlets():
            return self._wait_mixed(min_events, until, max_events)
        if len(notify.ready) >= min_events or not backend.in_flight:
            if self._deadlines:
                self._expire(time.monotonic())
            backend.reap(0, -1)  # collect what is there without waiting
        while len(notify.ready) < min_events and backend.in_flight:
            need = min(min_events - len(notify.ready), backend.in_flight)
            if not self._pump(need, until):
                break
        return notify.drain(max_events)

    def _wait_mixed(
        self, min_events: int, until: float | None, max_events: int | None
    ) -> list[Completion]:
        """``wait`` while threadlets run on a pool of their own (io_uring):
        non-blocking reaps of both, and between them a sleep on the ring's
        eventfd, which both the ring and the pool's workers signal."""
        notify, backend, calls = self._notify, self._backend, self._calls
        assert calls is not None
        poller = None
        while True:
            if self._deadlines:
                self._expire(time.monotonic())
            backend.reap(0, -1)
            calls.reap(0, -1)
            if len(notify.ready) >= min_events or not self.in_flight:
                break
            ms = -1.0
            if until is not None:
                left = until - time.monotonic()
                if left <= 0:
                    break
                ms = left * 1000
            if self._deadlines:
                to_deadline = max(0.0, (self._deadlines[0][0] - time.monotonic()) * 1000)
                ms = to_deadline if ms < 0 else min(ms, to_deadline)
            if poller is None:
                poller = select.poll()
                poller.register(backend.fileno(), select.POLLIN)
            poller.poll(min(ms, _MAX_WAIT_NS / 1e6) if ms >= 0 else None)
        return notify.drain(max_events)

    def _pump(self, need: int, until: float | None) -> bool:
        """Reap until ``need`` CQEs/completions came, ``until`` (monotonic)
        passed, or an execution's deadline expired (it is then cancelled).
        Returns False once ``until`` has passed."""
        backend, deadlines = self._backend, self._deadlines
        if until is None and not deadlines:
            backend.reap(need, -1)
            return True
        now = time.monotonic()
        self._expire(now)
        limit = until
        if deadlines and (limit is None or deadlines[0][0] < limit):
            limit = deadlines[0][0]
        if limit is None:
            backend.reap(need, -1)
            return True
        if until is not None and until <= now:
            return False
        backend.reap(need, min(_MAX_WAIT_NS, max(0, int((limit - now) * 1e9))))
        return True

    def _expire(self, now: float) -> None:
        """Cancel the executions whose deadline has passed."""
        deadlines, backend = self._deadlines, self._backend
        while deadlines and deadlines[0][0] <= now:
            backend.cancel(heapq.heappop(deadlines)[1])

    def run(
        self,
        program: Program,
        *,
        tag: Any = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Completion:
        """Submit one execution and wait for its completion, which is
        returned and not queued; other completions stay queued."""
        sink: list[Completion] = []
        self._start(program, (params,), None if tag is None else (tag,), True, sink, deadline)
        # An interrupt from here on leaves the completion in the
        # notification ring, for a later wait().
        if not self._deadlines:
            reap = self._backend.reap
            while not sink:
                reap(1, -1)
        while not sink:
            self._pump(1, None)
        self._notify.take(sink[0])
        return sink[0]

    def run_many(
        self,
        program: Program,
        count: int | None = None,
        *,
        params: Sequence[Mapping[str, Any]] | None = None,
        deadline: float | None = None,
        **common: Any,
    ) -> list[Completion]:
        """Run ``count`` executions of ``program`` (or one per mapping in
        ``params``, merged over ``common``) and return their completions in
        that order, taken like ``run``'s: other completions stay queued.
        Completion ``i``'s tag is ``i``.  More than ``capacity`` executions
        start as room frees up.  An interrupt leaves the completions of
        those started in the notification ring (tags as above), for a
        later ``wait()``."""
        binds = executions(count, params, common)
        n = len(binds)
        sink: list[Completion] = []
        self._start_all(program, binds, sink, deadline)
        while len(sink) < n:
            self._pump(n - len(sink), None)
            self._check()
        self._notify.take_all(sink)
        out: list[Any] = [None] * n
        for c in sink:
            out[c.tag] = c
        return out

    def _start_all(
        self,
        program: Program,
        binds: Sequence[Mapping[str, Any]],
        sink: list[Any],
        deadline: float | None,
        ids: list[int] | None = None,
    ) -> None:
        """Start execution ``k`` of ``binds`` with tag ``k``, into ``sink``
        (their ids appended to ``ids``, if given),
        as many at a time as capacity allows, then more as room frees up.
        Refills come in batches: with less room than half of what is left
        to start, it first waits up to ``REFILL_WAIT`` seconds for as many
        CQEs as half the executions in flight (each of them posts at least
        one more), so that executions ending one by one (a cold page cache)
        do not make one tiny batch, and one system call, each; then it
        starts whatever room there is (executions of one call that wait for
        each other still get their room)."""
        n, started, waited = len(binds), 0, False
        backend = self._backend
        while started < n:
            executing = backend.in_flight - backend.threadlets
            room = self._capacity - executing
            if executing and not waited and room * 2 < min(self._capacity, n - started):
                self._pump(max(1, executing // 2), time.monotonic() + REFILL_WAIT)
                self._check()
                waited = True
                continue
            if room <= 0:  # (then executions are in flight: capacity >= 1)
                self._pump(1, None)
                self._check()
                continue
            end = min(n, started + room)
            began = self._start(
                program, binds[started:end], range(started, end), True, sink, deadline
            )
            if ids is not None:
                ids.extend(began)
            started, waited = end, False

    def _drive(self, timeout: float | None) -> None:
        """Reap once, without draining: without waiting (``timeout`` 0), or
        waiting for a CQE at most ``timeout`` seconds (None: no limit)."""
        self._check()
        if not self._backend.in_flight:
            return
        if timeout == 0:
            self._backend.reap(0, -1)
        else:
            self._pump(1, _until(timeout))

    def fileno(self) -> int:
        """A descriptor for an event loop: it becomes readable when
        ``wait(0)`` would make progress (an eventfd registered with the
        ring on io_uring, the workers' wake-up fd on the thread engine).
        After each wake-up, call ``wait(0)``: it clears the descriptor,
        enters the kernel (where DEFER_TASKRUN work runs), drains what
        there is and processes deadlines.  A hint, not a count.  Owned by
        the engine: closed by ``close()``."""
        self._check()
        return self._backend.fileno()

    def cancel(self, handle: Handle) -> bool:
        """Cancel an execution: the atom in the kernel is interrupted if it
        blocks, atoms already done keep their results, later ones do not run
        (atoms hard-linked after the interrupted one still run).  Its
        completion has ``cancelled=True``.  Returns False if it already
        ended."""
        self._check()
        if not isinstance(handle, Handle) or handle._engine is not self:
            raise ValueError(f"{handle!r} is not a handle of this engine")
        calls = self._calls
        if calls is not None and calls is not self._backend and handle._id in calls._jobs:
            return calls.cancel(handle._id)  # a threadlet's
        return self._backend.cancel(handle._id)

    # -- close -------------------------------------------------------------------
    def close(self) -> list[Completion]:
        """Cancel what is in flight, wait until the kernel has let go of every
        buffer, close every slot, and return the completions not yet drained
        (the cancelled ones included).  Idempotent."""
        if os.getpid() != self._pid:
            self._forked()
            return []
        if threading.get_ident() != self._owner:
            raise RuntimeError("an Engine may only be used from the thread that created it")
        if self._closed:
            return []
        self._closed = True
        try:
            if self._calls is not None and self._calls is not self._backend:
                self._calls.close()
        finally:
            self._backend.close()
        return self._notify.drain()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten engine still lets the kernel go before its buffers do;
        # in a forked child it lets go of nothing (the parent's).
        if getattr(self, "_pid", None) != os.getpid():
            if hasattr(self, "_backend"):
                self._forked()
            return
        if not getattr(self, "_closed", True) and hasattr(self, "_backend"):
            self._closed = True
            # not contextlib.suppress: at interpreter exit modules may be gone
            try:  # noqa: SIM105
                self._backend.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.in_flight} in flight"
        return f"<Engine {getattr(self, 'kind', '?')} {state}>"
