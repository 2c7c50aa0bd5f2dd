"""``AsyncEngine``: the asyncio door (DESIGN.md, "asyncio (and uvloop)").

The loop drives the ring.  An ``AsyncEngine`` is made inside a running loop,
on its thread, and owns an ``Engine`` made there (so the loop's thread is the
engine's owner).  The engine's ``fileno()`` (an eventfd registered with the
ring, or the thread pool's wake-up fd) is watched with ``add_reader``; the
callback makes one non-blocking drain (``Engine.wait(0)``: it enters the
kernel, where DEFER_TASKRUN work runs, posts what finished and processes
deadlines) and hands each completion to whoever waits for it.  The fd is a
hint, not a count: every wake-up drains all there is.  Nothing here blocks.

Batching across tasks.  ``run`` only queues the execution and arms one
``call_soon`` flush: every ``run`` that the loop's tasks make within one
iteration is started by that flush, with one ``submit_many`` per program
(and deadline).  When the engine is full the rest stay queued and are
started by the drain that frees room, so a full engine makes ``run`` wait,
asynchronously.

Routing.  Each execution started here carries a ``_Ticket`` as its engine
tag: the future of the task that awaits it (None for ``submit``) and the
caller's tag, which its completion gets back.  Ownership: a ticket is in
``_tickets`` from its start until its completion arrives; the completion of
a ticket whose future is already done (its task was cancelled) is dropped
there, never handed to another task.

Cancellation.  Cancelling the task that awaits ``run`` (``asyncio.timeout``
included) cancels its execution with ``Engine.cancel``: atoms not yet run do
not run and its slots are closed; one still queued here is simply never
started.  ``aclose()`` cancels everything in flight and waits, without
blocking the loop, until each execution has ended (so the kernel has let go
of every buffer) before it closes the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from .engine import Engine, Handle, executions
from .errors import EngineClosed, ParamError, RingFull
from .notify import CallCompletion, Completion
from .private_runs import PRIVATE_DRAIN, close_exports
from .program import Program

CLOSE_GIVE_UP = 5.0  # seconds aclose() waits for executions to end


class _Ticket:
    """One execution started through the AsyncEngine (see the module
    docstring): ``future`` (None for ``submit``), the caller's ``tag``, and
    the engine's ``handle`` once it started."""

    __slots__ = ("future", "handle", "tag")

    def __init__(self, future: asyncio.Future[Completion] | None, tag: Any) -> None:
        self.future = future
        self.tag = tag
        self.handle: Handle | int | None = None  # an id: a Handle made on demand


_Key = tuple[Program, float | None]  # what one submit_many of a flush shares
_Queued = tuple[Mapping[str, Any], _Ticket]


class AsyncEngine:
    """Runs programs from asyncio tasks (default loop or uvloop).  Takes
    ``Engine``'s arguments; must be made inside the running loop, and used
    from the loop's thread only.  Use it as ``async with`` or call
    ``aclose()``."""

    def __init__(
        self,
        engine: str = "auto",
        capacity: int = 1024,
        *,
        sq_entries: int = 256,
        workers: int | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()  # RuntimeError outside a running loop
        self._engine = Engine(engine, capacity, sq_entries=sq_entries, workers=workers)
        try:
            self._fd = self._engine.fileno()
        except BaseException:
            self._engine.close()
            raise
        # {(program, deadline): [(params, ticket), ...]}: queued, not started
        self._queued: dict[_Key, list[_Queued]] = {}
        self._flush_armed = False
        self._tickets: set[_Ticket] = set()  # started, completion not yet arrived
        self._stream: asyncio.Queue[Completion | None] = asyncio.Queue()
        self._drained = asyncio.Event()  # set when nothing is in flight (aclose)
        # abandoned tickets someone waits to see end (_run_private): _route
        # hands their completions over
        self._settling: dict[_Ticket, asyncio.Future[Completion]] = {}
        self._closed = False
        self._broken: BaseException | None = None
        try:
            self._loop.add_reader(self._fd, self._drain)
        except BaseException:
            self._engine.close()
            raise

    # -- what the Engine says -----------------------------------------------------
    @property
    def kind(self) -> str:
        return self._engine.kind

    @property
    def fallback_reason(self) -> str | None:
        return self._engine.fallback_reason

    @property
    def capacity(self) -> int:
        return self._engine.capacity

    @property
    def in_flight(self) -> int:
        """Executions started and not yet ended (queued ones not included)."""
        return self._engine.in_flight

    # -- run ------------------------------------------------------------------------
    async def run(
        self,
        program: Program,
        *,
        tag: Any = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Completion:
        """Run one execution and return its completion.  Started with the
        other ``run`` calls of this loop iteration (one ``submit_many`` per
        program); waits for room when the engine is full.  Raises
        ``ParamError`` (bad parameters), ``EngineClosed``; cancelling the
        awaiting task cancels the execution."""
        ticket = self._queue(program, params, tag, deadline)
        try:
            return await ticket.future  # type: ignore[misc]
        except asyncio.CancelledError:
            self._abandon(ticket)
            raise

    async def run_many(
        self,
        program: Program,
        count: int | None = None,
        *,
        params: Sequence[Mapping[str, Any]] | None = None,
        tags: Sequence[Any] | None = None,
        deadline: float | None = None,
        **common: Any,
    ) -> list[Completion]:
        """Run ``count`` executions of ``program`` (or one per mapping in
        ``params``, merged over ``common``) and return their completions in
        the same order.  Cancelling the awaiting task cancels them all."""
        binds = executions(count, params, common)
        if tags is not None and len(tags) != len(binds):
            raise ValueError("len(tags) differs from the number of executions")
        tickets = [
            self._queue(program, bind, None if tags is None else tags[i], deadline)
            for i, bind in enumerate(binds)
        ]
        try:
            futures = [t.future for t in tickets if t.future is not None]  # (all of them)
            return list(await asyncio.gather(*futures))
        except BaseException:
            for ticket in tickets:
                self._abandon(ticket)
            raise

    async def _run_private(
        self, program: Program, params: Sequence[Mapping[str, Any]]
    ) -> list[Completion]:
        """``run_many(program, params=params)`` for a helper that owns what
        its executions use (descriptors, a pipe): when the awaiting task is
        cancelled (or anything else escapes), the executions are cancelled
        and awaited (``PRIVATE_DRAIN`` seconds at most) before it
        propagates, so that the helper may close what they used.  A second
        cancel during that wait propagates at once."""
        tickets = [self._queue(program, bind, None, None) for bind in params]
        try:
            futures = [t.future for t in tickets if t.future is not None]
            return list(await asyncio.gather(*futures))
        except BaseException:
            ended = [t.future for t in tickets if t.future is not None and t.future.done()]
            waits = []
            for ticket in tickets:
                self._abandon(ticket)
                if ticket in self._tickets:  # started, not ended
                    waits.append(self._settling.setdefault(ticket, self._loop.create_future()))
            try:
                if waits and self._broken is None and not self._closed:
                    await asyncio.wait(waits, timeout=PRIVATE_DRAIN)
            finally:
                for ticket in tickets:
                    self._settling.pop(ticket, None)
                for done in (*ended, *waits):  # what they exported is nobody's now
                    if done.done() and not done.cancelled() and done.exception() is None:
                        close_exports(program, done.result())
            raise

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the engine's cachemiss threads (a
        threadlet) and return what it returns, or raise what it raises.
        Cancelling the awaiting task cancels it if it has not started yet
        (a running callable runs to its end; its result is dropped)."""
        self._check()
        future: asyncio.Future[Completion] = self._loop.create_future()
        ticket = _Ticket(future, None)
        ticket.handle = self._engine.submit_call(fn, *args, tag=ticket, **kwargs)
        self._tickets.add(ticket)  # (its hand-over wakes the fd reader: no pump here)
        c = await self._outcome(ticket)
        assert isinstance(c, CallCompletion)
        if c.exception is not None:
            raise c.exception
        if c.cancelled:
            raise asyncio.CancelledError
        return c.value

    def submit(
        self,
        program: Program,
        *,
        tag: Any = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Handle:
        """Start one execution now; its completion comes out of
        ``completions()``.  Raises ``RingFull`` when the engine is full
        (``run`` waits instead), ``ParamError``, ``EngineClosed``."""
        self._check()
        ticket = _Ticket(None, tag)
        handle = self._engine.submit(program, tag=ticket, block=False, deadline=deadline, **params)
        ticket.handle = handle
        self._tickets.add(ticket)
        self._after_start(deadline)
        return handle

    async def completions(self) -> AsyncIterator[Completion]:
        """The completions of executions started with ``submit``, as they
        end; the iteration stops when the engine is closed."""
        while True:
            c = await self._stream.get()
            if c is None:
                self._stream.put_nowait(None)  # for any other iterator
                return
            yield c

    def cancel(self, handle: Handle) -> bool:
        """Cancel an execution started with ``submit`` (see
        ``Engine.cancel``)."""
        self._check()
        return self._engine.cancel(handle)

    # -- closing --------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel what is queued or in flight, wait (without blocking the
        loop) until every execution has ended, then close the engine.
        Awaiting ``run`` calls get their cancelled completions, queued ones
        ``EngineClosed``.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        closed = EngineClosed("the engine is closed")
        for group in self._queued.values():
            for _, ticket in group:
                if ticket.future is not None and not ticket.future.done():
                    ticket.future.set_exception(closed)
        self._queued.clear()
        if self._broken is None:
            for ticket in list(self._tickets):
                if ticket.handle is not None:
                    with contextlib.suppress(EngineClosed):
                        self._engine.cancel(self._handle(ticket))
            give_up = time.monotonic() + CLOSE_GIVE_UP
            while self._engine.in_flight and time.monotonic() < give_up and self._broken is None:
                self._drained.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):  # a drain every 50 ms at least
                        await self._drained.wait()
                self._drain()
        self._loop.remove_reader(self._fd)
        for c in self._engine.close():  # what is left: posted, not yet routed
            self._route(c)
        self._fail_all(closed)
        self._stream.put_nowait(None)

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- inside -----------------------------------------------------------------------
    def _check(self) -> None:
        if self._broken is not None:
            raise EngineClosed(f"the engine is broken: {self._broken}") from self._broken
        if self._closed:
            raise EngineClosed("the engine is closed")

    def _queue(
        self, program: Program, params: Mapping[str, Any], tag: Any, deadline: float | None
    ) -> _Ticket:
        """Queue one execution for the next flush; returns its ticket."""
        if self._closed or self._broken is not None:
            self._check()
        if type(program) is not Program and not isinstance(program, Program):
            raise TypeError(f"expected a Program (Syslet.compile()), got {program!r}")
        ticket = _Ticket(self._loop.create_future(), tag)
        key = (program, deadline)
        group = self._queued.get(key)
        if group is None:
            self._queued[key] = [(params, ticket)]
            if not self._flush_armed:
                self._flush_armed = True
                self._loop.call_soon(self._flush)
        else:
            group.append((params, ticket))
        return ticket

    async def _outcome(self, ticket: _Ticket) -> Completion:
        assert ticket.future is not None
        try:
            return await ticket.future
        except asyncio.CancelledError:
            self._abandon(ticket)
            raise

    def _abandon(self, ticket: _Ticket) -> None:
        """The task gave up on ``ticket``'s execution: cancel it if it
        started (one still queued is skipped by the flush, its future being
        done)."""
        if ticket.future is not None and not ticket.future.done():
            ticket.future.cancel()
        if ticket in self._tickets and not self._closed and self._broken is None:
            assert ticket.handle is not None
            with contextlib.suppress(EngineClosed):
                self._engine.cancel(self._handle(ticket))

    def _handle(self, ticket: _Ticket) -> Handle:
        handle = ticket.handle
        if isinstance(handle, Handle):
            return handle
        assert handle is not None
        return Handle(self._engine, handle, ticket.tag)

    def _flush(self) -> None:
        """The ``call_soon`` callback ``run`` arms: start what the loop's
        tasks queued in this iteration, then drain."""
        self._flush_armed = False
        self._pump()

    def _pump(self) -> None:
        """Start what is queued as room allows, drain, and again while a
        drain frees room for more: every callback of this engine (the flush,
        the fd reader, a deadline's timer) comes here.  What a submission
        completes inline is in the CQ ring at once, so it is handed over in
        the same callback."""
        while self._broken is None:
            started = not self._closed and self._start_queued()
            if self._broken is not None:
                return
            try:
                completions = self._engine.wait(0)
            except EngineClosed as exc:
                if not self._closed:
                    self._break(exc)
                return
            for c in completions:
                self._route(c)
            if not self._engine.in_flight:
                self._drained.set()
            if self._closed or not (self._queued and (completions or started)):
                return

    def _start_queued(self) -> bool:
        """Start what ``run`` queued: one ``submit_many`` per program and
        deadline, as much as there is room for; the rest waits for a drain
        that frees room.  Returns whether anything started."""
        engine = self._engine
        started = False
        for key in list(self._queued):
            group = [q for q in self._queued[key] if not q[1].future.done()]  # type: ignore[union-attr]
            program, deadline = key
            while group:
                room = engine.capacity - engine.in_flight
                if room <= 0:
                    break
                n = self._start(program, deadline, group[: min(room, len(group))])
                if not n:
                    break  # too few slots: the drain that frees them flushes again
                del group[:n]
                started = True
                self._after_start(deadline)
            if group:
                self._queued[key] = group
            else:
                del self._queued[key]
            if self._broken is not None:
                break
        return started

    def _start(self, program: Program, deadline: float | None, batch: list[_Queued]) -> int:
        """Start a prefix of ``batch`` with one ``submit_many``; returns how
        many started.  A parameter error fails only its own execution."""
        n = len(batch)
        while n:
            part = batch[:n]
            try:
                handles = self._engine.submit_many(
                    program,
                    params=[params for params, _ in part],
                    tags=[ticket for _, ticket in part],
                    block=False,
                    deadline=deadline,
                )
            except RingFull as exc:
                if n == 1 and not self._engine.in_flight:  # it can never start
                    future = part[0][1].future
                    assert future is not None
                    future.set_exception(
                        ValueError(f"{program!r} needs more slots than the engine has: {exc}")
                    )
                    return 1
                n //= 2  # too few free slots for all of them
                continue
            except (ParamError, ValueError, TypeError) as exc:
                if n == 1:
                    future = part[0][1].future
                    assert future is not None
                    future.set_exception(exc)
                    return 1
                return self._start_each(program, deadline, part)
            except EngineClosed as exc:
                self._break(exc)
                return 0
            # Handles are made on demand (a cancel); a ticket keeps the id.
            tickets = self._tickets
            for (_, ticket), ident in zip(part, handles._ids, strict=True):
                ticket.handle = ident
                tickets.add(ticket)
            return n
        return 0

    def _start_each(self, program: Program, deadline: float | None, part: list[_Queued]) -> int:
        """One of ``part`` has bad parameters: start them one at a time, so
        that only the culprits fail.  Returns how many were dealt with."""
        for i in range(len(part)):
            if not self._start(program, deadline, part[i : i + 1]):
                return i
        return len(part)

    def _after_start(self, deadline: float | None) -> None:
        """An execution with a deadline started: drain once it has passed,
        so that the engine cancels it even if nothing else wakes the loop."""
        if deadline is not None:
            self._loop.call_later(deadline + 0.001, self._pump)

    def _drain(self) -> None:
        """The fd reader's and the deadline timers' callback."""
        if self._broken is None:
            self._pump()

    def _route(self, c: Completion) -> None:
        ticket = c.tag
        if type(ticket) is not _Ticket:  # pragma: no cover - every start here tags
            return
        self._tickets.discard(ticket)
        settled = self._settling.pop(ticket, None)
        if settled is not None and not settled.done():
            settled.set_result(c)
        future = ticket.future
        if future is None:
            self._stream.put_nowait(c._retagged(ticket.tag))
        elif not future.done():
            future.set_result(c._retagged(ticket.tag))
        # else: its task gave up on it; the completion is dropped here

    def _break(self, exc: BaseException) -> None:
        """The engine broke: every waiter gets the error."""
        self._broken = exc
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        self._fail_all(exc)
        self._stream.put_nowait(None)

    def _fail_all(self, exc: BaseException) -> None:
        for group in self._queued.values():
            for _, ticket in group:
                if ticket.future is not None and not ticket.future.done():
                    ticket.future.set_exception(exc)
        self._queued.clear()
        for ticket in self._tickets:
            if ticket.future is not None and not ticket.future.done():
                ticket.future.set_exception(exc)
        self._tickets.clear()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.in_flight} in flight"
        return f"<AsyncEngine {self.kind} {state}>"
