"""How the io_uring engine waits: a wait that every execution in flight
must end to satisfy asks the kernel for every CQE they are sure to post
(one wake-up for a chain that posts many), and a count that came out high
costs at most ``SURE_WAIT_NS``, never a hang."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import Any

import pytest

import uringlets as ul
from uringlets import ringio


def _sleeps(n: int, seconds: float) -> ul.Program:
    """n hard-linked sleeps: each posts its CQE when it is done, one after
    another, over n * seconds."""
    s = ul.Syslet()
    for _ in range(n):
        s.timeout(seconds, stop=ul.NEVER_STOP)
    return s.compile()


class _Cycles:
    """Counts the reaper's trips into the kernel (ur_cycle)."""

    def __init__(self, lib: Any) -> None:
        self._lib, self.count = lib, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._lib, name)
        if name != "ur_cycle":
            return attr

        def cycle(*args: Any) -> Any:
            self.count += 1
            return attr(*args)

        return cycle


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> _Cycles:
    counter = _Cycles(ringio.lib)
    monkeypatch.setattr(ringio, "lib", counter)
    return counter


def test_a_run_waits_once_for_every_cqe_its_chain_posts(cycles: _Cycles) -> None:
    # Eight hard-linked reads of a pipe a thread writes a byte into every
    # 3 ms: each read posts its CQE (its result is not known in advance)
    # when its byte comes.
    r, w = os.pipe()
    s = ul.Syslet()
    for _ in range(8):
        s.read(r, 1, stop=ul.NEVER_STOP)
    prog = s.compile()
    assert prog.plan.first_run_cqes == 8

    def writer() -> None:
        for _ in range(8):
            time.sleep(0.003)
            os.write(w, b"x")

    try:
        with ul.Engine("uring") as eng:
            cycles.count = 0
            thread = threading.Thread(target=writer)
            thread.start()
            c = eng.run(prog)
            thread.join()
        assert c.results == (1,) * 8
        assert cycles.count <= 3  # not a trip per CQE (8)
    finally:
        os.close(r)
        os.close(w)


def test_a_wait_for_part_of_what_is_in_flight_is_not_raised(cycles: _Cycles) -> None:
    # Another execution that never ends is in flight: waiting for every
    # promised CQE would never return.
    with ul.Engine("uring") as eng:
        forever = ul.Syslet()
        forever.timeout(3600)
        pending = eng.submit(forever.compile())
        c = eng.run(_sleeps(3, 0.005))
        assert c.results == (0, 0, 0)
        eng.cancel(pending)
        assert eng.wait(1, timeout=5)[0].cancelled


def test_a_promise_too_high_costs_time_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    with ul.Engine("uring") as eng:
        io = eng._backend.io  # type: ignore[attr-defined]
        io.promised += 1000  # as if a count had come out high
        monkeypatch.setattr(ringio, "SURE_WAIT_NS", 20_000_000)
        t0 = time.monotonic()
        c = eng.run(_sleeps(2, 0.001))
        assert c.results == (0, 0)
        assert time.monotonic() - t0 < 5


def _taken(eng: ul.Engine) -> int:
    return int(eng._backend.io._inbox.taken)  # type: ignore[attr-defined]


def test_the_promise_is_a_lower_bound_whatever_the_atoms_return(tmp_path: Any) -> None:
    """Plan.first_run_cqes never exceeds the CQEs an execution posts: on
    success, and when an atom whose success is skipped fails and silences
    the rest of its link (an open that fails before reads: 1 CQE); and
    with timed atoms, whose silent LINK_TIMEOUTs neither count nor stop
    the count, when none fires and when the first does."""
    (tmp_path / "f").write_bytes(b"x" * 100)
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    s.read(fd, 4096, stop=ul.NEVER_STOP)
    s.read(fd, 1, stop=ul.NEVER_STOP)
    s.close(fd)
    reads = s.compile()
    s = ul.Syslet()
    for _ in range(4):
        s.nop()
    s.read(ul.Param("fd"), 10, stop=ul.NEVER_STOP)
    nops = s.compile()
    s = ul.Syslet()
    for _ in range(3):
        s.recv(ul.Param("fd"), 1, timeout=0.05)
    timed = s.compile()
    assert timed.plan.first_run_cqes == 4  # the three recvs and the last SQE
    s = ul.Syslet()
    s.nop()
    nop = s.compile()
    r, w = os.pipe()
    os.write(w, b"y" * 100)
    a, b = socket.socketpair()
    try:
        with ul.Engine("uring") as eng:
            for prog, params, sent in (
                (reads, {"path": str(tmp_path / "f")}, b""),
                (reads, {"path": str(tmp_path / "missing")}, b""),
                (nops, {"fd": r}, b""),
                (nops, {"fd": 987_654}, b""),
                (timed, {"fd": a.fileno()}, b"abc"),  # no timeout fires
                (timed, {"fd": a.fileno()}, b""),  # the first one fires
            ):
                b.send(sent)
                before = _taken(eng)
                c = eng.run(prog, **params)
                # The run's last LINK_TIMEOUT may post after its atom ended the
                # execution, as work the next entry into the kernel runs: a
                # NOP's run (its own one CQE) takes it.
                eng.run(nop)
                taken = _taken(eng) - before - 1
                assert taken >= prog.plan.first_run_cqes, (prog, params)
                if prog is timed:
                    assert c.results == ((1, 1, 1) if sent else (-errno.ETIME, None, None))
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
