"""Nothing lost, nothing freed early: interrupts, forks, failed submits.

Rule 6: every submitted execution ends in exactly one completion, however
the calls that drive it end: a KeyboardInterrupt from a signal handler in
the middle of ``submit``, ``wait`` or ``run``, a fork, a submit that fails
half way.  Rule 9: an engine belongs to the process that made it.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import random
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

import uringlets as ul

from .conftest import ENGINES, open_fds
from .interrupts import Alarm


def _programs(sandbox: Path) -> list[ul.Program]:
    """Clean chains, short reads (the general path), failures that stop."""
    progs = []
    s = ul.Syslet()
    s.nop()
    s.nop()
    progs.append(s.compile())
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.read(fd, 4096, stop=ul.NEVER_STOP)  # short: the kernel breaks the link
    s.nop()
    s.close(fd)
    progs.append(s.compile())
    s = ul.Syslet()
    fd = s.openat(sandbox / "missing")
    s.read(fd, 16)
    s.close(fd)
    progs.append(s.compile())
    return progs


@pytest.mark.parametrize("kind", ENGINES)
def test_interrupts_at_random_points_lose_nothing(kind: str, sandbox: Path) -> None:
    progs = _programs(sandbox)
    rng = random.Random(6)
    total = 20_000  # RESULTS.md and the soak run more
    fds_before = open_fds()
    eng = ul.Engine(kind, capacity=64)
    seen: collections.Counter[int] = collections.Counter()
    attempted: list[range] = []  # each submit's tags: all of them complete or none
    returned: list[range] = []  # submits that returned: all of them must complete
    next_tag = 0

    def step() -> None:
        nonlocal next_tag
        tags = range(next_tag, min(total, next_tag + rng.randint(1, 16)))
        attempted.append(tags)
        next_tag = tags.stop
        eng.submit_many(rng.choice(progs), tags=tags, params=[{}] * len(tags))
        returned.append(tags)
        if rng.random() < 0.1:
            eng.run(progs[0], tag=-1)  # not counted: its return can be lost too
        # Completions stay in the notification ring (max_events=0) until the
        # end: a list a call returns can be lost to an interrupt at the very
        # return, in any Python program; the engine's part is to post each
        # execution's completion exactly once, which is what is counted.
        eng.wait(len(eng._notify.ready) + rng.randint(0, 8), timeout=1, max_events=0)

    with Alarm(0.0007) as alarm:
        # An interrupt may land anywhere, the loops' own back-edges too.
        while next_tag < total:
            try:
                while next_tag < total:
                    with contextlib.suppress(KeyboardInterrupt):
                        step()
            except KeyboardInterrupt:
                pass
        alarm.armed[0] = False
    # the timer is off: drain what is left, then close
    deadline = 10.0
    while eng.in_flight and deadline > 0:
        for c in eng.wait(1, timeout=1):
            seen[c.tag] += 1
        deadline -= 1
    for c in eng.wait(0):
        seen[c.tag] += 1
    for c in eng.close():
        seen[c.tag] += 1
    assert alarm.fired > 50, "the test must really interrupt"
    seen.pop(-1, None)
    assert all(count == 1 for count in seen.values()), "a completion was posted twice"
    missing = [t for tags in returned for t in tags if seen[t] != 1]
    assert not missing, (
        f"{len(missing)} executions never completed: {missing[:20]}, {eng.in_flight}"
    )
    for tags in attempted:
        got = sum(seen[t] for t in tags)
        assert got in (0, len(tags)), f"an interrupted submit started part of its batch: {tags}"
    assert len(returned) > len(attempted) // 2
    assert open_fds() == fds_before


_FORK_SCRIPT = r"""
import os, sys
import uringlets as ul

kind, ten = sys.argv[1], sys.argv[2]
s = ul.Syslet(); s.timeout(0.3); slow = s.compile()
s = ul.Syslet(); fd = s.openat(ten); s.read(fd, 4096, stop=ul.NEVER_STOP); s.close(fd)
short = s.compile()
eng = ul.Engine(kind, capacity=64)
hs = eng.submit_many(slow, 8, tags=range(8))
pid = os.fork()
if pid == 0:
    # the child: every call refused, then a normal exit with finalizers
    for call in (lambda: eng.wait(0), lambda: eng.run(short), lambda: eng.cancel(hs[0])):
        try:
            call()
            sys.exit(10)
        except ul.EngineClosed:
            pass
    eng.close()  # touches nothing of the parent's
    sys.exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
got = eng.wait(8, timeout=5)
assert sorted(c.tag for c in got) == list(range(8)), got
assert all(c.ok for c in got), got
c = eng.run(short)
assert c.results == (0, 10, 0), c
eng.close()
print("parent ok")
"""


@pytest.mark.parametrize("kind", ENGINES)
def test_a_forked_child_can_neither_use_nor_disturb_the_engine(kind: str, sandbox: Path) -> None:
    """Rule 9, in a process of its own (a forked pytest would run on): the
    child exits through sys.exit with its finalizers; the parent's
    executions complete with their own results and the engine works on."""
    out = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, kind, str(sandbox / "ten")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "parent ok" in out.stdout, out.stderr


def test_a_handle_belongs_to_its_engine(engine_kind: str) -> None:
    s = ul.Syslet()
    s.timeout(5)
    prog = s.compile()
    with ul.Engine(engine_kind) as a, ul.Engine(engine_kind) as b:
        ha = a.submit(prog, tag="a")
        hb = b.submit(prog, tag="b")
        with pytest.raises(ValueError, match="not a handle of this engine"):
            b.cancel(ha)
        assert b.cancel(hb)
        (c,) = b.wait(1, timeout=5)
        assert c.tag == "b" and c.cancelled
        assert a.in_flight == 1


def test_timeouts_inf_and_huge_mean_no_limit(engine_kind: str) -> None:
    s = ul.Syslet()
    s.nop()
    prog = s.compile()
    with ul.Engine(engine_kind) as eng:
        eng.submit(prog)
        assert len(eng.wait(1, timeout=math.inf)) == 1
        eng.submit(prog)
        assert len(eng.wait(1, timeout=10**400)) == 1
        with pytest.raises(ValueError):
            eng.wait(1, timeout=math.nan)
        with pytest.raises(ValueError):
            eng.wait(1, timeout=-1)


def test_sq_entries_one_still_runs_a_timed_atom() -> None:
    a, b = os.pipe()
    try:
        s = ul.Syslet()
        s.read(a, 1, timeout=0.01)
        prog = s.compile()
        with ul.Engine("uring", sq_entries=1) as eng:
            c = eng.run(prog)
            assert c.results == (-62,)  # -ETIME
    finally:
        os.close(a)
        os.close(b)


def test_a_failed_submit_leaves_nothing_behind(sandbox: Path) -> None:
    """MemoryError injected after the columns took slots and scratch: the
    batch table, slots and scratch are as before, 200 times over."""
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    s.read(fd, 64)
    s.close(fd)
    prog = s.compile()
    with ul.Engine("uring", capacity=16) as eng:
        backend = eng._backend
        free_slots, free_batches = len(backend.io._free_slots), len(backend.io._free_batches)
        real = backend._launch

        def failing(plan: object) -> object:
            raise MemoryError

        backend._launch = failing  # type: ignore[method-assign]
        prog.plan.launches.clear()
        for _ in range(200):
            with pytest.raises(MemoryError):
                eng.submit(prog, path=sandbox / "ten")
        backend._launch = real  # type: ignore[method-assign]
        assert len(backend.io._free_slots) == free_slots
        assert len(backend.io._free_batches) == free_batches and eng.in_flight == 0
        c = eng.run(prog, path=sandbox / "ten")
        assert c.results == (0, 10, 0)


def test_an_enter_failure_after_the_push_breaks_with_a_reason(sandbox: Path) -> None:
    """io_uring_enter failing with an error the engine cannot handle (its
    ring descriptor closed under it): EngineClosed with the reason, never a
    hang or a lost completion reported as success."""
    s = ul.Syslet()
    s.timeout(0.05)
    prog = s.compile()
    eng = ul.Engine("uring")
    eng.submit(prog)
    ring = eng._backend.io._ring
    fd = ring.fd
    os.close(fd)  # io_uring_enter now fails with EBADF
    with pytest.raises(ul.EngineClosed, match="io_uring_enter failed"):
        eng.wait(1, timeout=1)
    with pytest.raises(ul.EngineClosed, match="broken"):
        eng.submit(prog)
    ring.fd = -1
    with pytest.warns(ResourceWarning, match="kept alive"):
        eng.close()


def test_fileno_wakes_an_event_loop_for_every_completion_of_a_burst(engine_kind: str) -> None:
    """64 chains whose first atoms complete at once without a CQE of their
    own (a full recv, skip-flagged, then a recv that waits for more): an
    event loop that sleeps in select() on fileno() between its wait(0)
    calls still gets all 64 completions when the rest arrives.  (io_uring
    runs at most 20 items of deferred work per enter and signals the
    eventfd only when its list of them was empty: a poll that left some
    would let the loop sleep through everything after it.)"""
    import select
    import socket

    pairs = [socket.socketpair() for _ in range(64)]
    try:
        s = ul.Syslet()
        fd = ul.Param("fd")
        s.recv(fd, 1, socket.MSG_WAITALL)
        data = s.recv(fd, 16)
        prog = s.compile()
        with ul.Engine(engine_kind, capacity=64) as eng:
            wake = eng.fileno()
            eng.submit_many(prog, params=[{"fd": a.fileno()} for a, _ in pairs], tags=range(64))
            got: list[ul.Completion] = eng.wait(0)
            for _, b in pairs:
                b.send(b"1")
            # io_uring: woken once, by the deferred work of the first bytes
            # (the thread engine wakes only when an execution ends)
            select.select([wake], [], [], 0.5)
            time.sleep(0.05)  # all 64 first bytes are in
            got += eng.wait(0)  # one poll, as an event loop makes
            assert got == []
            for _, b in pairs:
                b.send(b"2")
            while len(got) < 64:
                readable, _, _ = select.select([wake], [], [], 5)
                assert readable, f"fileno() slept through {64 - len(got)} completions"
                got += eng.wait(0)
            assert sorted(c.tag for c in got) == list(range(64))
            assert all(c.ok and c[data] == b"2" for c in got)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_short_soak_ends_every_execution_once_and_leaves_nothing(engine_kind: str) -> None:
    """benchmarks/soak.py in short: 20,000 mixed executions (successes,
    ENOENT, ECONNREFUSED, short reads, userspace steps, timeouts, deadlines,
    cancels) in random batches through capacities 16 to 256; each ends in
    one completion with the results its kind must have, and descriptors and
    slots are back where they started.  RESULTS.md has the 1,000,000 run."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("uringlets_soak", path)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    sys.modules["uringlets_soak"] = soak  # its dataclasses look their module up
    spec.loader.exec_module(soak)
    report = soak.soak(engine_kind, 20_000, seed=7)
    assert report.problems == []
    assert report.executions == 20_000 and len(report.by_kind) == 8
    assert report.fds_after == report.fds_before
    assert report.slots_free_after == report.slots_free_before


@pytest.mark.parametrize("shape", ["whole batch", "one of a batch", "run of a batch"])
def test_an_execution_that_would_end_twice_breaks_the_engine(shape: str) -> None:
    """``_post`` is the one place executions end: ending one again (a
    broken invariant, driven here by hand) breaks the engine with the
    reason and posts nothing, whichever kind of ending it is."""
    s = ul.Syslet()
    s.nop()
    prog = s.compile()
    eng = ul.Engine("uring")
    backend = eng._backend
    n = 1 if shape == "whole batch" else 4
    eng.submit_many(prog, n)
    batch = next(b for b in backend.io._batches if b is not None)
    assert len(eng.wait(n)) == n
    # the batch left the table; drive its ending again as if it had not
    batch.remaining = n
    ks = range(n) if shape == "whole batch" else (0,) if shape == "one of a batch" else range(2)
    if shape != "whole batch":
        batch.done[0] = 1  # execution 0 ended already, the others not
        batch.remaining = n - 1
    before = len(backend.io._notify.ready)
    fake = [ul.Completion(None, prog, (0,), None, False, None)] * len(ks)
    if shape == "whole batch":
        batch.remaining = 0  # all of it ended already
    with pytest.raises(ul.EngineClosed, match="would end twice"):
        backend.io._post(batch, ks, fake, array("q"), False, False)
    assert len(backend.io._notify.ready) == before
    with pytest.raises(ul.EngineClosed, match="broken"):
        eng.submit(prog)
    eng.close()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "ten").write_bytes(b"0123456789")
    yield tmp_path


def test_fileno_wakes_an_event_loop_and_wait_zero_processes_deadlines(engine_kind: str) -> None:
    """Rule 8 for event loops: select() on fileno() wakes when a recv's data
    arrives; wait(0) then returns the completion.  A deadline passes with
    nothing but wait(0) calls."""
    import select
    import socket

    a, b = socket.socketpair()
    try:
        s = ul.Syslet()
        data = s.recv(a.fileno(), 16)
        prog = s.compile()
        s2 = ul.Syslet()
        s2.timeout(30)
        slow = s2.compile()
        with ul.Engine(engine_kind) as eng:
            fd = eng.fileno()
            eng.submit(prog, tag="recv")
            got: list[ul.Completion] = []
            got += eng.wait(0)
            assert got == []
            b.send(b"hello")
            for _ in range(50):
                if got:
                    break
                r, _, _ = select.select([fd], [], [], 5)
                assert r, "fileno() never became readable"
                got += eng.wait(0)
            assert [c.tag for c in got] == ["recv"] and got[0][data] == b"hello"
            eng.submit(slow, tag="slow", deadline=0.05)
            ended: list[ul.Completion] = []
            for _ in range(200):
                ended += eng.wait(0)
                if ended:
                    break
                select.select([fd], [], [], 0.02)
            assert [c.tag for c in ended] == ["slow"] and ended[0].cancelled
    finally:
        a.close()
        b.close()
