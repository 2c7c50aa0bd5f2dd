"""Values at the edges: what the builder accepts runs on every engine, and
what no engine could run is refused when the syslet is built."""

from __future__ import annotations

import errno
import socket

import pytest

import uringlets as ul
from uringlets.threads import run_reference


def _timed_accept() -> ul.Program:
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(fd, ("127.0.0.1", 0))
    s.listen(fd, 1)
    conn = s.accept(fd, timeout=0.05)
    s.close(conn)
    return s.compile()


def test_an_accept_that_times_out_on_the_reference():
    """It used to report a descriptor of None, which the end of the
    execution then tried to close (``os.close(None)``)."""
    c = run_reference(_timed_accept())
    assert c.results == (0, 0, 0, -errno.ETIME, None) and c.stopped_at == 3


@pytest.mark.parametrize("kind", ["threads", "uring"])
def test_an_accept_that_times_out_on_an_engine(kind):
    prog = _timed_accept()
    with ul.Engine(kind, capacity=4) as eng:
        for _ in range(2):  # the worker lives on: a second one completes too
            eng.submit(prog)
            done = eng.wait(1, timeout=5.0)
            assert [c.results for c in done] == [(0, 0, 0, -errno.ETIME, None)]
