"""Timeouts and cancellation of network atoms (rule 5: nothing leaks), and
the userspace fallbacks for ops an older kernel lacks."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator

import pytest

import uringlets as ul

from .conftest import open_fds


@pytest.fixture
def silent_peer() -> Iterator[tuple[str, int]]:
    """A listener whose connections are accepted by the kernel and never
    answered."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    yield lst.getsockname()
    lst.close()


@pytest.fixture
def hanging_listener() -> Iterator[tuple[str, int]]:
    """A listener whose accept queue is full (backlog 0, one connection never
    accepted): the kernel drops further SYNs, so a connect hangs."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    filler = socket.create_connection(lst.getsockname())
    probe = socket.socket()
    probe.setblocking(False)
    probe.connect_ex(lst.getsockname())  # may take the last place in the queue
    time.sleep(0.05)
    yield lst.getsockname()
    probe.close()
    filler.close()
    lst.close()


def recv_program(address, *, timeout=None) -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, address)
    got = s.recv(fd, 100, timeout=timeout)
    s.close(fd)
    return s.compile(), got


def test_a_timed_out_recv_reports_etime_and_leaves_nothing(run, silent_peer):
    prog, got = recv_program(silent_peer, timeout=0.1)
    before = open_fds()
    start = time.monotonic()
    c = run(prog)
    assert time.monotonic() - start >= 0.09
    assert c.results == (0, 0, -errno.ETIME, None) and c.stopped_at == 2 and c[got] is None
    assert open_fds() == before


def test_a_recv_that_beats_its_timeout_goes_on(run):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, lst.getsockname())
    s.send(fd, b"ping", timeout=5)
    prog = s.compile()
    c = run(prog)
    conn, _ = lst.accept()
    assert conn.recv(10) == b"ping"
    conn.close()
    lst.close()
    assert c.ok and c.results == (0, 0, 4)


def test_a_connect_times_out(run, hanging_listener):
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, hanging_listener, timeout=0.2)
    s.nop()
    before = open_fds()
    c = run(s.compile())
    assert c.results == (0, -errno.ETIME, None) and c.stopped_at == 1
    assert open_fds() == before


def test_cancel_in_the_middle_of_a_connect(make_engine, hanging_listener):
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, hanging_listener)
    s.nop()
    prog = s.compile()
    before = open_fds()
    with make_engine(capacity=4) as eng:
        h = eng.submit(prog, tag="connecting")
        assert eng.wait(1, timeout=0.2) == []  # it hangs
        assert eng.cancel(h)
        (c,) = eng.wait(1, timeout=5)
        assert c.cancelled and c.results == (0, -errno.ECANCELED, None)
        if eng.kind == "uring":
            assert len(eng._backend.io._free_slots) == eng._backend.nslots
    assert open_fds() == before


def test_a_per_execution_deadline_cancels(make_engine, silent_peer):
    prog, _ = recv_program(silent_peer)
    before = open_fds()
    with make_engine(capacity=4) as eng:
        start = time.monotonic()
        c = eng.run(prog, deadline=0.1)
        assert 0.09 <= time.monotonic() - start < 5
        assert c.cancelled and c.results == (0, 0, -errno.ECANCELED, None)
        h = eng.submit(prog, deadline=0.05, tag="late")
        assert [c.tag for c in eng.wait(1, timeout=5)] == ["late"]
        assert not eng.cancel(h)
    assert open_fds() == before


@pytest.mark.parametrize(
    "missing",
    [("BIND", "LISTEN"), ("URING_CMD_SETSOCKOPT",), ("FIXED_FD_INSTALL", "BIND", "LISTEN")],
)
def test_ops_the_kernel_lacks_run_as_userspace_steps(missing):
    features = ul.probe().without_ops(missing)
    s = ul.Syslet()
    lst = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(lst, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(lst, ("127.0.0.1", 0))
    s.listen(lst, 4)
    s.export(lst)
    prog = s.compile(features)
    text = prog.explain()
    assert "userspace: kernel lacks op" in text and "treated as missing" in text
    with ul.Engine("uring", capacity=4) as eng:
        c = eng.run(prog)
    assert c.ok and c.results == (0, 0, 0, 0)
    with socket.socket(fileno=c[lst]) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockname()[0] == "127.0.0.1"


def test_without_fixed_fd_install_descriptors_that_reach_userspace_are_real_fds(tmp_path):
    (tmp_path / "f").write_bytes(b"0123456789")
    features = ul.probe().without_ops(["FIXED_FD_INSTALL"])
    s = ul.Syslet()
    fd = s.openat(tmp_path / "f")
    st = s.fstat(fd)  # a userspace step: it needs a real fd
    data = s.read(fd, 4)
    other = s.openat(tmp_path / "f")
    more = s.read(other, 2)
    s.close(fd)
    prog = s.compile(features)
    assert prog.plan.real_creators == (0,) and prog.plan.creators == (3,)
    before = open_fds()
    with ul.Engine("uring", capacity=4) as eng:
        c = eng.run(prog)
    assert c.ok and c.results == (0, 0, 4, 0, 2, 0)
    assert c[st].st_size == 10 and c[data] == b"0123" and c[more] == b"01"
    assert open_fds() == before


def test_timeouts_that_do_not_fire_post_nothing():
    """On io_uring a LINK_TIMEOUT is skip-flagged: one that its atom beats
    posts no CQE (only the run's last SQE, which ends the run, posts
    whatever its flags), and a timed atom whose success is known is
    skip-flagged too.  Socket, connect and two sends, all three timed: the
    sends (hard-linked: a short send goes on, so it posts) and the last
    LINK_TIMEOUT post, nothing else (6 CQEs with neither flag)."""
    if not ul.kernel.probe().available:
        pytest.skip("no io_uring here (the tests of the fallback say why)")
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, lst.getsockname(), timeout=5)
    s.send(fd, b"pi", timeout=5)
    s.send(fd, b"ng", timeout=5)
    prog = s.compile()
    assert prog.explain().count("(LINK_TIMEOUT, posts no CQE)") == 2  # (not the run's last SQE)
    with ul.Engine("uring") as eng:
        inbox = eng._backend.io._inbox
        t = ul.Syslet()
        t.nop()
        nop = t.compile()
        for _ in range(5):
            before = inbox.taken
            c = eng.run(prog)
            assert c.ok and c.results == (0, 0, 2, 2)
            # The last LINK_TIMEOUT may post after the send ended the
            # execution, as work the next entry into the kernel runs: a
            # NOP's run (its own one CQE) takes it.
            eng.run(nop)
            assert inbox.taken - before - 1 == 3
            conn, _ = lst.accept()
            assert conn.recv(10) == b"ping"
            conn.close()
    lst.close()
