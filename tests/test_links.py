"""Broken links as the kernel really breaks them.

When an atom without ``CQE_SKIP_SUCCESS`` fails, io_uring posts
``-ECANCELED`` for every later request of its link (skip flag or not); when
a request is refused at submission, the atoms before it in the link never
run and post ``-ECANCELED`` too.  Each case here once broke the io_uring
engine for good; the results must equal the reference interpreter's, and a
bystander execution in flight at the same time must complete.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import uringlets as ul
from uringlets.threads import run_reference

from .conftest import ENGINES, open_fds


def _same_as_reference(eng: ul.Engine, prog: ul.Program, **params: object) -> ul.Completion:
    c = eng.run(prog, **params)
    ref = run_reference(prog, **params)
    assert (c.results, c.stopped_at, c.cancelled) == (ref.results, ref.stopped_at, ref.cancelled)
    return c


@pytest.fixture(params=ENGINES)
def eng(request: pytest.FixtureRequest) -> Iterator[ul.Engine]:
    e = ul.Engine(request.param, capacity=64)
    yield e
    e.close()


_KEEP: list[socket.socket] = []


def _bystander(eng: ul.Engine) -> tuple[ul.Handle, socket.socket]:
    """An execution that waits in a recv until the test feeds it."""
    a, b = socket.socketpair()
    _KEEP.append(a)  # its fd must outlive the execution
    s = ul.Syslet()
    s.recv(a.fileno(), 16)
    h = eng.submit(s.compile(), tag="bystander")
    return h, b


def _finish_bystander(eng: ul.Engine, b: socket.socket) -> None:
    b.send(b"ping")
    got = [c for c in eng.wait(1, timeout=5) if c.tag == "bystander"]
    assert got and got[0].results == (4,)


def test_a_failing_recv_followed_by_skipped_atoms(eng: ul.Engine) -> None:
    """recv(999) + write(999) + nop: the recv posts, and the kernel posts
    -ECANCELED for the write and the nop after it."""
    s = ul.Syslet()
    s.recv(999, 999)
    s.write(999, b"x")
    s.nop()
    prog = s.compile()
    h, b = _bystander(eng)
    for _ in range(20):
        c = _same_as_reference(eng, prog)
        assert c.results == (-errno.EBADF, None, None)
    _finish_bystander(eng, b)
    assert eng.in_flight == 0
    del h


def test_a_failure_that_does_not_stop_resumes_without_taking_followers(eng: ul.Engine) -> None:
    """The recv fails but never stops: the rest runs in userspace while the
    kernel's -ECANCELED for the same atoms is still arriving."""
    s = ul.Syslet()
    s.recv(999, 16, stop=ul.NEVER_STOP)
    s.nop()
    s.nop()
    prog = s.compile()
    for _ in range(20):
        c = _same_as_reference(eng, prog)
        assert c.results == (-errno.EBADF, 0, 0)


def test_a_kernel_refused_atom_is_its_own_error(eng: ul.Engine) -> None:
    """socket(AF_INET, SOCK_STREAM | 0x40) is refused when the kernel
    prepares it: the nop before it still runs, the socket reports EINVAL."""
    s = ul.Syslet()
    s.nop()
    s.socket(socket.AF_INET, socket.SOCK_STREAM | 0x40)
    s.nop()
    prog = s.compile()
    c = _same_as_reference(eng, prog)
    assert c.results == (0, -errno.EINVAL, None)


def test_a_failed_head_a_silent_success_and_a_failure_is_no_refusal(
    eng: ul.Engine, tmp_path: Path
) -> None:
    """A hard-linked first atom that fails (mkdir of what exists), a
    skip-flagged one that succeeds and posts nothing (an O_EXCL create), a
    posting one that fails and cancels the last: the run ran, it was not
    refused at submission, so nothing runs twice (the create again would say
    EEXIST).  Found by the deep differential conformance with size Params
    (a kept read of one posts its CQE)."""
    (tmp_path / "exists").write_bytes(b"x")
    s = ul.Syslet()
    s.mkdirat(ul.Param("exists"), stop=ul.NEVER_STOP)
    s.openat(ul.Param("new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, stop=ul.NEVER_STOP)
    s.read(1 << 20, ul.Param("n", at_most=1))  # (a bad fd: EBADF)
    s.openat(ul.Param("exists"), stop=ul.NEVER_STOP)
    prog = s.compile()
    params = {"exists": bytes(tmp_path / "exists"), "new": bytes(tmp_path / "new"), "n": 1}
    c = eng.run(prog, **params)
    assert c.results == (-errno.EEXIST, 0, -errno.EBADF, None) and c.stopped_at == 2
    (tmp_path / "new").unlink()
    ref = run_reference(prog, **params)
    assert (ref.results, ref.stopped_at) == (c.results, c.stopped_at)


class _ResettingServer:
    """A TCP server on a free loopback port that accepts and resets each
    connection at once (SO_LINGER 0)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        # shutdown wakes the accept() the thread sits in
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_a_peer_that_resets_mid_chain(eng: ul.Engine) -> None:
    server = _ResettingServer()
    try:
        s = ul.Syslet()
        fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(fd, ("127.0.0.1", server.port))
        s.recv(fd, 100, stop=ul.STOP_ON_NEGATIVE)
        s.close(fd)
        s.nop()
        prog = s.compile()
        before = open_fds()
        h, b = _bystander(eng)
        for _ in range(30):
            c = eng.run(prog)
            assert c.results[0] == 0
            # the reset may already be there when connect looks (thread
            # engine) or end the recv; an orderly close may win the race
            if c.results[1] == -errno.ECONNRESET:
                assert c.stopped_at == 1 and c.results[2:] == (None, None, None)
                continue
            assert c.results[1] == 0 and c.results[2] in (-errno.ECONNRESET, 0)
            if c.results[2] < 0:
                assert c.stopped_at == 2 and c.results[3:] == (None, None)
        _finish_bystander(eng, b)
        assert eng.in_flight == 0
        kept = {b.fileno(), _KEEP[-1].fileno()}
        b.close()
        del h
    finally:
        server.close()
        server.thread.join(5)
    assert open_fds() - before <= kept


def test_a_timed_out_atom_reports_etime_every_time(eng: ul.Engine) -> None:
    """Whichever of the atom's CQE and its LINK_TIMEOUT's comes first."""
    a, b = socket.socketpair()
    try:
        s = ul.Syslet()
        s.recv(a.fileno(), 16, timeout=0.001)
        s.nop()
        prog = s.compile()
        for _ in range(30):
            c = eng.run(prog)
            assert c.results == (-errno.ETIME, None)
    finally:
        a.close()
        b.close()
