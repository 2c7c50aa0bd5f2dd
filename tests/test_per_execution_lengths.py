"""Transfers whose full length is known only per execution (a data Param,
bytes fed by a Ref) with a kernel failure rule (send with MSG_WAITALL,
write): their CQEs are skipped on success (explain says so), their results
still equal the reference interpreter's, execution by execution, in a
batch of different lengths and when they fail."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import uringlets as ul
from tests.conftest import Runner


def send_then_recv() -> tuple[ul.Program, ul.Ref, ul.Ref]:
    s = ul.Syslet()
    sent = s.send(ul.Param("fd"), ul.Param("data"), socket.MSG_WAITALL | socket.MSG_NOSIGNAL)
    got = s.recv(ul.Param("fd"), 64)
    return s.compile(), sent, got


def test_explain_shows_the_skip() -> None:
    prog, _, _ = send_then_recv()
    if ul.probe().available:
        assert "CQE_SKIP_SUCCESS (success=its full length)" in prog.explain()


def test_a_batch_of_different_lengths(make_engine: Callable[..., ul.Engine]) -> None:
    prog, sent, got = send_then_recv()
    pairs = [socket.socketpair() for _ in range(6)]
    try:
        for _, b in pairs:
            b.sendall(b"reply")  # what each recv gets
        datas = [b"x" * n for n in (1, 7, 0, 300, 4096, 65)]
        with make_engine() as eng:
            handles = eng.submit_many(
                prog,
                params=[
                    {"fd": a.fileno(), "data": d} for (a, _), d in zip(pairs, datas, strict=True)
                ],
                tags=range(6),
            )
            assert len(handles) == 6
            done = sorted(eng.wait(6, 10), key=lambda c: c.tag)
        for c, d, (_, b) in zip(done, datas, pairs, strict=True):
            assert c.results == (len(d), 5) and c.ok and c[got] == b"reply"
            assert c[sent] == len(d)
            assert not d or b.recv(70000) == d
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_failing_send_stops_the_execution(run: Runner) -> None:
    prog, _, _ = send_then_recv()
    a, b = socket.socketpair()
    b.close()
    try:
        c = run(prog, fd=a.fileno(), data=b"hello")
        assert c.results == (-errno.EPIPE, None) and c.stopped_at == 0
    finally:
        a.close()


def test_writes_of_params_and_of_fed_bytes(run: Runner, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"0123456789abcdef")
    s = ul.Syslet()
    out = s.openat(ul.Param("dst"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    s.write(out, ul.Param("head"))
    inp = s.openat(ul.Param("src"))
    data = s.read(inp, 16)
    s.write(out, data)
    s.fsync(out)
    prog = s.compile()
    c = run(prog, dst=bytes(dst), src=bytes(src), head=b"HEAD:")
    assert c.results == (0, 5, 0, 16, 16, 0) and c.ok
    assert dst.read_bytes() == b"HEAD:0123456789abcdef"
    # a short read breaks the chain where the blocking calls would go on:
    # results still equal the reference's
    src.write_bytes(b"short")
    c = run(prog, dst=bytes(dst), src=bytes(src), head=b"")
    assert c.results == (0, 0, 0, 5, 5, 0)
    assert dst.read_bytes() == b"short"


def test_a_hard_linked_first_transfer_posts_and_is_checked(
    make_engine: Callable[..., ul.Engine], run: Runner
) -> None:
    """The first atom of a hard-linked run always posts its CQE: the clean
    path then compares its result with the execution's own length (the
    value column), in a batch of different lengths and when it fails."""
    s = ul.Syslet()
    flags = socket.MSG_WAITALL | socket.MSG_NOSIGNAL
    s.send(ul.Param("fd"), ul.Param("data"), flags, stop=ul.NEVER_STOP)
    got = s.recv(ul.Param("fd"), 64)
    prog = s.compile()
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        for _, b in pairs:
            b.sendall(b"ok")
        datas = [b"a" * n for n in (3, 1000, 1, 20)]
        params = [{"fd": a.fileno(), "data": d} for (a, _), d in zip(pairs, datas, strict=True)]
        with make_engine() as eng:
            eng.submit_many(prog, params=params, tags=range(4))
            done = sorted(eng.wait(4, 10), key=lambda c: c.tag)
        for c, d in zip(done, datas, strict=True):
            assert c.results == (len(d), 2) and c.ok and c[got] == b"ok"
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    a, b = socket.socketpair()
    b.close()
    try:  # hard-linked: the recv runs after the failed send, as the blocking calls do
        c = run(prog, fd=a.fileno(), data=b"hello")
        assert c.results == (-errno.EPIPE, 0) and c.stopped_at is None
    finally:
        a.close()
