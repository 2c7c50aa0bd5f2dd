"""The thread engine (the cachemiss threads) under misuse and interrupts:
an exception of any type from a blocking call is a result, cancel and close
never touch a descriptor the engine no longer owns, close has a time bound,
KeyboardInterrupts on the owner thread lose and duplicate nothing, the
wake-up fd, fork, and timeouts of any size."""

from __future__ import annotations

import math
import os
import select
import struct
import sys
import threading
import time
import types
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import pytest

import uringlets as ul
from uringlets import atoms
from uringlets.notify import NotificationRing
from uringlets.threads import ThreadsBackend, run_reference

from .conftest import open_fds
from .interrupts import Alarm

EINVAL, EIO, ENOMEM, ECANCELED = -22, -5, -12, -125


def nops(n: int = 1, stop: int = ul.STOP_ON_NEGATIVE) -> ul.Program:
    s = ul.Syslet()
    for _ in range(n):
        s.nop(stop=stop)
    return s.compile()


class CRing:
    """A notification ring whose ``post`` is a C call (deque.append), so that
    an interrupt lands either before or after a post, never inside it."""

    __slots__ = ("post", "ready")

    def __init__(self) -> None:
        self.ready: deque[ul.Completion] = deque()
        self.post = self.ready.append


@pytest.fixture
def backend() -> Iterator[ThreadsBackend]:
    b = ThreadsBackend(CRing(), workers=2)  # type: ignore[arg-type]
    yield b
    b.close()


def run_all(b: ThreadsBackend, prog: ul.Program, n: int = 1, tags: Any = None) -> list[Any]:
    """Start ``n`` executions on a bare backend and reap them all."""
    ring = b._notify
    before = len(ring.ready)
    b.start(prog, {}, n, tags if tags is not None else [None] * n)
    assert b.reap(n, 10 * 10**9)
    got = list(ring.ready)[before:]
    assert len(got) == n
    return got


# -- 1. any exception is a result ------------------------------------------------------
RAISED = [
    (OverflowError("signed integer is greater than maximum"), EINVAL),
    (ValueError("embedded null byte"), EINVAL),
    (TypeError("an integer is required"), EINVAL),
    (struct.error("bad scope id"), EINVAL),
    (MemoryError(), ENOMEM),
    (KeyError("x"), EIO),
    (RuntimeError("anything else"), EIO),
    (OSError("no errno"), EIO),
]


@pytest.mark.parametrize(("exc", "result"), RAISED, ids=[type(e).__name__ for e, _ in RAISED])
def test_any_exception_of_a_blocking_call_is_a_result(monkeypatch, exc, result):
    prog = nops(3, stop=ul.NEVER_STOP)

    def raising(args: Any) -> None:
        raise exc

    # the thread engine and the reference both call the catalogue entry's call
    monkeypatch.setitem(atoms.CATALOGUE["nop"].__dict__, "call", raising)
    ref = run_reference(prog, tag="r")
    assert ref.results == (result, result, result) and not ref.cancelled
    with ul.Engine("threads", capacity=8, workers=1) as eng:
        for _ in range(3):  # the one worker survives each
            c = eng.run(prog, tag="t")
            assert (c.results, c.stopped_at, c.cancelled) == (ref.results, None, False)
        monkeypatch.undo()
        assert eng.run(prog).results == (0, 0, 0)


def test_a_value_python_refuses_is_refused_at_bind_time_on_both_runners(sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten", os.O_RDONLY, ul.Param("mode"))
    s.close(fd)
    prog = s.compile()
    # The catalogue refuses at bind time what os.open would reject with
    # OverflowError; the engine turning such an exception into -EINVAL is
    # covered by the monkeypatched calls below.
    with pytest.raises(ul.ParamError):
        run_reference(prog, mode=2**32 - 1)
    with ul.Engine("threads", capacity=8, workers=1) as eng:
        with pytest.raises(ul.ParamError):
            eng.run(prog, mode=2**32 - 1)
        assert eng.in_flight == 0
        assert eng.run(prog, mode=0).results == (0, 0)


def test_a_base_exception_in_a_worker_ends_the_execution_and_not_the_worker(monkeypatch):
    prog = nops(3)
    calls: list[int] = []

    def interrupting(args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # only a bug (or an async exception) does this

    monkeypatch.setitem(atoms.CATALOGUE["nop"].__dict__, "call", interrupting)
    with ul.Engine("threads", capacity=8, workers=1) as eng:
        c = eng.run(prog)
        assert (c.results, c.stopped_at, c.cancelled) == ((0, EIO, None), 1, False)
        assert eng.run(prog).results == (0, 0, 0)
        assert len(eng._backend._threads) == 1
    with pytest.raises(KeyboardInterrupt):  # the reference propagates it
        calls.clear()
        run_reference(prog)


# -- 2. cancel and close touch only what the engine owns ------------------------------
def test_cancel_after_a_failed_call_writes_into_no_one_elses_file(monkeypatch, tmp_path):
    """The worker that raised used to die with its interrupt pipe closed; a
    file opened next took the pipe's number and cancel wrote a NUL into it."""
    prog = nops(2)

    def overflowing(args: Any) -> None:
        raise OverflowError("too big")

    monkeypatch.setitem(atoms.CATALOGUE["nop"].__dict__, "call", overflowing)
    with ul.Engine("threads", capacity=8, workers=1) as eng:
        h = eng.submit(prog, tag="boom")
        (c,) = eng.wait(1, timeout=5)
        assert c.tag == "boom" and c.results == (EINVAL, None)
        paths = [tmp_path / f"user{i}" for i in range(4)]
        fds = [os.open(p, os.O_RDWR | os.O_CREAT) for p in paths]
        try:
            assert not eng.cancel(h)
        finally:
            for fd in fds:
                os.close(fd)
        assert all(p.read_bytes() == b"" for p in paths)
    assert eng.close() == []


def test_cancel_of_an_execution_that_ended_unposted_does_nothing(backend):
    prog = nops(1)
    (ident,) = backend.start(prog, {}, 1, ["t"])
    deadline = time.monotonic() + 5
    while not backend._done and time.monotonic() < deadline:
        time.sleep(0.001)  # ended by its worker, not yet reaped
    assert not backend.cancel(ident)
    assert backend.reap(1, 10**9)
    (c,) = backend._notify.ready
    assert c.results == (0,) and not c.cancelled


# -- 3. close has a time bound ---------------------------------------------------------
@pytest.mark.parametrize("export", [False, True])
def test_close_returns_in_time_with_a_worker_stuck_in_a_fifo_open(tmp_path, export):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    s = ul.Syslet()
    fd = s.openat(fifo, os.O_RDONLY)  # blocks, uninterruptibly, until a writer opens
    s.fstat(fd)
    if export:
        s.export(fd)
    prog = s.compile()
    before = open_fds()
    eng = ul.Engine("threads", capacity=8, workers=2)
    backend = eng._backend
    backend.close_timeout = 0.3
    threads = list(backend._threads)
    eng.submit(prog, tag="stuck")
    eng.submit(nops(1), tag="quick")
    assert [c.tag for c in eng.wait(1, timeout=5)] == ["quick"]
    time.sleep(0.05)  # the other worker is in open() now
    t0 = time.monotonic()
    done = eng.close()
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 1.0
    (c,) = done
    assert c.tag == "stuck" and c.cancelled and c.results == (ECANCELED, None)
    assert c[fd] is None
    # Release the worker: its open() returns a descriptor, which it closes
    # (exported or not); it posts nothing anywhere, and exits.
    w = os.open(fifo, os.O_WRONLY)
    try:
        for t in threads:
            t.join(5)
            assert not t.is_alive()
    finally:
        os.close(w)
    assert len(eng._notify.ready) == 0 and backend.in_flight == 0
    assert open_fds() == before


def test_close_waits_for_interruptible_work_and_cancels_it_promptly(tmp_path):
    r, w = os.pipe()
    try:
        s = ul.Syslet()
        s.read(r, 10)
        s.nop()
        prog = s.compile()
        eng = ul.Engine("threads", capacity=64, workers=2)
        eng.submit_many(prog, 40, tags=list(range(40)))
        time.sleep(0.05)
        t0 = time.monotonic()
        done = eng.close()
        assert time.monotonic() - t0 < 0.5
        assert sorted(c.tag for c in done) == list(range(40))
        for c in done:
            assert c.cancelled and c.results in ((ECANCELED, None), (None, None))
    finally:
        os.close(r)
        os.close(w)


# -- 4. interrupts on the owner thread ------------------------------------------------
needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals"
)


@needs_main_thread
def test_interrupts_in_start_reap_and_cancel_lose_and_duplicate_nothing(backend):
    """The backend alone, with a ring whose post is one C call: every
    execution started is posted exactly once, whatever the interrupts hit."""
    prog = nops(1)
    total, batch = 30_000, 64
    ring: CRing = backend._notify  # type: ignore[assignment]
    started: set[int] = set()
    ids: deque[int] = deque()
    next_tag = end = before = 0
    tagset: set[int] = set()
    with Alarm() as alarm:
        armed = alarm.armed
        while next_tag < total or backend.in_flight:
            try:
                before = backend.in_flight
                armed[0] = True
                if next_tag < total and backend.in_flight < 4 * batch:
                    end = min(total, next_tag + batch)
                    tags = list(range(next_tag, end))
                    tagset = set(tags)
                    got = backend.start(prog, {}, end - next_tag, tags)
                    started |= tagset
                    next_tag = end
                    ids += got
                if ids:
                    backend.cancel(ids.popleft())
                backend.reap(1, 1_000_000)
                armed[0] = False
            except KeyboardInterrupt:
                armed[0] = False
                if backend.in_flight - before == end - next_tag > 0:
                    started |= tagset  # the interrupt came after the commit
                    next_tag = end
    assert alarm.fired > 20
    # An interrupt between a post and its popleft leaves that entry, already
    # POSTED, in _done for the next collect to drop: one more, uninterrupted.
    backend.reap(0, 0)
    seen = Counter(c.tag for c in ring.ready)
    assert set(seen) == started == set(range(total))
    assert max(seen.values()) == 1
    assert not backend._jobs and not backend._done and backend.in_flight == 0
    for c in ring.ready:
        assert c.results == ((None,) if c.cancelled else (0,))
    t0 = time.monotonic()
    backend.close()
    assert time.monotonic() - t0 < 1


# NotificationRing.post as a Python function can be interrupted at its entry,
# after the backend committed the hand-over: the completion is lost.
_PYTHON_POST = isinstance(NotificationRing.__dict__.get("post"), types.FunctionType)


@needs_main_thread
@pytest.mark.xfail(
    _PYTHON_POST, reason="notify.py: post is a Python function (see above)", strict=False
)
def test_interrupts_while_20k_executions_are_submitted_and_reaped_through_the_engine():
    prog = nops(1)
    total, batch = 20_000, 64
    eng = ul.Engine("threads", capacity=256, workers=2)
    backend = eng._backend
    started: set[int] = set()
    next_tag = end = 0
    tagset: set[int] = set()
    before = 0
    with Alarm() as alarm:
        armed = alarm.armed
        while next_tag < total or backend.in_flight:
            try:
                before = backend.in_flight
                armed[0] = True
                if next_tag < total and backend.in_flight <= 256 - batch:
                    end = min(total, next_tag + batch)
                    tags = list(range(next_tag, end))
                    tagset = set(tags)
                    eng.submit_many(prog, end - next_tag, tags=tags)
                    started |= tagset
                    next_tag = end
                # Completions stay in the notification ring (max_events=0):
                # a list a call returns can be lost to an interrupt at the
                # very return, in any Python program; what is counted is
                # that the engine posts each exactly once.
                eng.wait(len(eng._notify.ready) + 1, timeout=0.001, max_events=0)
                armed[0] = False
            except KeyboardInterrupt:
                armed[0] = False
                if backend.in_flight - before == end - next_tag > 0:
                    started |= tagset  # the interrupt came after the commit
                    next_tag = end
    received = eng.wait(0)
    assert alarm.fired > 20
    seen = Counter(c.tag for c in received)
    assert set(seen) == started == set(range(total))
    assert max(seen.values()) == 1
    assert eng.run(prog).results == (0,)
    t0 = time.monotonic()
    assert eng.close() == []
    assert time.monotonic() - t0 < 1


# -- 5. the wake-up fd, fork -----------------------------------------------------------
def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_no_wake_up_is_lost_between_the_owner_draining_the_fd_and_a_hand_over(backend):
    """Executions handed over while the owner drains the wake-up fd: every
    reap that waits for them is woken.  A lost wake-up sleeps until the
    reap's bound (in use, a whole poll chunk: an hour), so a reap that took
    its whole bound of 3 s here is one (they take microseconds)."""
    prog = nops(1)
    slept = []
    for _ in range(2_000):
        backend.start(prog, {}, 16, [None] * 16)
        while backend.in_flight:
            t0 = time.monotonic()
            backend.reap(min(2, backend.in_flight), 3_000_000_000)
            if time.monotonic() - t0 >= 3:
                slept.append(len(backend._notify.ready))
    assert not slept, f"{len(slept)} reaps were not woken"
    assert len(backend._notify.ready) == 32_000


def test_fileno_becomes_readable_without_the_owner_waiting_and_is_written_once(backend):
    fd = backend.fileno()
    assert not readable(fd)
    backend.start(nops(1), {}, 50, [None] * 50)
    deadline = time.monotonic() + 5
    while len(backend._done) < 50 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert readable(fd)
    assert os.eventfd_read(fd) == 1  # one write for 50 hand-overs
    os.eventfd_write(fd, 1)
    assert backend.reap(0, 0)
    assert len(backend._notify.ready) == 50
    assert not readable(fd)  # drained by reap
    run_all(backend, nops(1))  # a reap that slept
    assert not readable(fd)
    backend.start(nops(1), {}, 1, [None])
    assert readable(fd, 5)


@needs_main_thread
def test_the_wake_fd_stays_readable_when_an_interrupt_leaves_completions_unposted(backend):
    backend.start(nops(1), {}, 10, [None] * 10)
    deadline = time.monotonic() + 5
    while len(backend._done) < 10 and time.monotonic() < deadline:
        time.sleep(0.001)
    calls = 0

    def post(c: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt

    real = backend._notify
    backend._notify = type("R", (), {"post": staticmethod(post)})()
    with pytest.raises(KeyboardInterrupt):
        backend.reap(0, 0)
    backend._notify = real
    assert readable(backend.fileno())
    assert backend.reap(0, 0)
    assert backend.in_flight == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_can_neither_use_nor_disturb_the_parents_engine():
    r, w = os.pipe()
    try:
        s = ul.Syslet()
        data = s.read(r, 64)
        prog = s.compile()
        eng = ul.Engine("threads", capacity=8, workers=2)
        eng.submit(prog, tag="parent")
        time.sleep(0.05)  # a worker waits in the read
        pid = os.fork()
        if pid == 0:  # the child: close (which must notice the fork), then exit
            code = 1
            try:
                eng._backend.close()
                code = 0 if eng._backend.broken else 2
                try:
                    eng._backend.start(prog, {}, 1, [None])
                    code = 3
                except ul.EngineClosed:
                    pass
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        os.write(w, b"from the parent")
        (c,) = eng.wait(1, timeout=5)
        assert c.tag == "parent" and not c.cancelled and c[data] == b"from the parent"
        assert eng.run(nops(1)).ok
        eng.close()
    finally:
        os.close(r)
        os.close(w)


def test_forked_touches_nothing(backend):
    s = ul.Syslet()
    s.timeout(0.2)
    (ident,) = backend.start(s.compile(), {}, 1, ["t"])
    time.sleep(0.02)
    job = backend._jobs[ident]
    interrupt = job.interrupt
    assert interrupt is not None
    saved = backend._jobs, backend._done, backend.in_flight
    with backend._mutex:  # as if a worker held it at the fork
        backend.forked()
        backend.close()  # no lock, no join, no cancel
    assert backend.broken and not interrupt.flag and not interrupt.closed
    assert backend.fileno() == -1
    # undo, so that the fixture closes it for real
    backend._jobs, backend._done, backend.in_flight = saved
    backend._closed, backend.broken = False, None


# -- 6. timeouts of any size -----------------------------------------------------------
@pytest.mark.parametrize("timeout_ns", [10**400, math.inf, 2**63, -1])
def test_reap_takes_timeouts_of_any_size(backend, timeout_ns):
    s = ul.Syslet()
    s.timeout(0.05)
    backend.start(s.compile(), {}, 1, [None])
    assert backend.reap(1, timeout_ns)


def test_reap_honours_its_timeout(backend):
    s = ul.Syslet()
    s.timeout(5)
    backend.start(s.compile(), {}, 1, [None])
    t0 = time.monotonic()
    assert not backend.reap(1, 50_000_000)
    assert 0.04 <= time.monotonic() - t0 < 0.5
    assert not backend.reap(1, 0)
    assert backend.in_flight == 1


def test_reap_for_more_than_can_come_returns(backend):
    t0 = time.monotonic()
    assert not backend.reap(3, -1)
    run_all(backend, nops(1))
    assert time.monotonic() - t0 < 5


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
