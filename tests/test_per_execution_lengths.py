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

import pytest

import uringlets as ul
from tests.conftest import Runner
from uringlets.threads import run_reference


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


# -- reads of a size Param (Param("n", at_most=...)) --------------------------------
def sized_read(stop: int = ul.STOP_ON_NEGATIVE, keep: bool = True) -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, ul.Param("n", at_most=8192), ul.Param("offset"), stop=stop, keep=keep)
    s.close(fd)
    return s.compile(), data


def test_a_size_param_sizes_the_buffer_once_and_each_read() -> None:
    """Its CQE is skipped on success only where its bytes are not kept:
    kept, the CQE carries their length."""
    for keep in (True, False):
        prog, _ = sized_read(keep=keep)
        text = prog.explain()
        assert "8192 scratch byte(s) per execution" in text.splitlines()[0]
        (line,) = [line for line in text.splitlines() if "size=$n<=8192" in line]
        if ul.probe().available:
            assert ("CQE_SKIP_SUCCESS (success=its full length)" in line) is not keep


SIZES = [(1, 0), (100, 0), (8192, 0), (4000, 5000), (8192, 9000), (50, 9990), (10, 20000)]


def test_a_batch_of_different_sizes(make_engine: Callable[..., ul.Engine], tmp_path: Path) -> None:
    """Full, short (near the end) and empty (past it) reads of one batch,
    each execution its own size: results and bytes as os.pread's and as the
    reference interpreter's."""
    path = tmp_path / "f"
    content = os.urandom(10_000)
    path.write_bytes(content)
    for stop in (ul.STOP_ON_NEGATIVE, ul.NEVER_STOP):
        prog, data = sized_read(stop)
        params = [{"path": bytes(path), "n": n, "offset": o} for n, o in SIZES]
        with make_engine() as eng:
            done = eng.run_many(prog, params=params)
        for c, p in zip(done, params, strict=True):
            want = content[p["offset"] : p["offset"] + p["n"]]
            ref = run_reference(prog, **p)
            assert c.results == ref.results == (0, len(want), 0), p
            assert c[data] == ref[data] == want and c.ok


def sized_copy(at_most: int, stop: int, missing: tuple[str, ...] = ()) -> ul.Program:
    """open src, open dst, read n (at most ``at_most``), write what was
    read, close both; compiled as if the kernel lacked ``missing``."""
    s = ul.Syslet()
    inp = s.openat(ul.Param("src"))
    out = s.openat(ul.Param("dst"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    s.write(out, s.read(inp, ul.Param("n", at_most=at_most), stop=stop, keep=False))
    s.close(out)
    s.close(inp)
    return s.compile(ul.probe().without_ops(missing))


def test_a_read_feeds_its_size_or_what_it_got_to_a_write(
    make_engine: Callable[..., ul.Engine], tmp_path: Path
) -> None:
    """open, open, read n, write what was read, close, close: one link in
    the kernel; the write takes the execution's size, or (a short read
    breaks the link) the length read, as the reference does."""
    src = tmp_path / "src"
    content = os.urandom(5000)
    src.write_bytes(content)
    prog = sized_copy(65536, ul.NEVER_STOP)
    assert len(prog.plan.segments) == 1
    sizes = [5000, 4096, 1, 6000, 65536]
    params = [{"src": bytes(src), "dst": bytes(tmp_path / f"d{n}"), "n": n} for n in sizes]
    with make_engine() as eng:
        done = eng.run_many(prog, params=params)
    for c, p, n in zip(done, params, sizes, strict=True):
        length = min(n, 5000)
        assert c.results == (0, 0, length, length, 0, 0) and c.ok
        assert Path(os.fsdecode(p["dst"])).read_bytes() == content[:length]
        ref = run_reference(prog, **{**p, "dst": p["dst"] + b".ref"})
        assert ref.results == c.results


@pytest.mark.parametrize("bad", [0, -1, 8193, True, 1.5, "10", None])
def test_a_size_param_binds_to_1_to_at_most(run: Runner, tmp_path: Path, bad: object) -> None:
    """A size of 0 is refused too: io_uring answers a 0-byte read without
    asking the file, read(2) does not (EISDIR)."""
    prog, _ = sized_read()
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ul.ParamError, match=r"parameter 'n': expected an int in 1\.\.8192"):
        run(prog, path=bytes(tmp_path / "f"), n=bad, offset=0)


def test_a_size_param_used_twice_binds_to_the_smaller_at_most(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abcdef")
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    first = s.read(fd, ul.Param("n", at_most=4), 0)
    second = s.read(fd, ul.Param("n", at_most=2), 1)
    s.close(fd)
    prog = s.compile()
    c = run(prog, path=bytes(tmp_path / "f"), n=2)
    assert c.results == (0, 2, 2, 0) and c[first] == b"ab" and c[second] == b"bc"
    with pytest.raises(ul.ParamError, match=r"1\.\.2"):
        run(prog, path=bytes(tmp_path / "f"), n=3)


def test_size_params_the_builder_refuses() -> None:
    s = ul.Syslet()
    fd = s.openat("/etc/hosts")
    with pytest.raises(ul.TranslateError, match=r"atom 1.*read.*size.*needs at_most="):
        s.read(fd, ul.Param("n"))
    with pytest.raises(ul.TranslateError, match=r"recv.*bufsize.*cannot be a Param"):
        s.recv(ul.Param("sock"), ul.Param("n", at_most=10))
    with pytest.raises(ul.TranslateError, match=r"read.*offset.*at_most= is for a size Param"):
        s.read(fd, 10, ul.Param("offset", at_most=10))
    for at_most in (0, -1, True, 1 << 40, "8"):
        with pytest.raises(ValueError, match=r"at_most must be an int in 1\.\."):
            ul.Param("n", at_most=at_most)  # type: ignore[arg-type]
    assert repr(ul.Param("n", at_most=5)) == "Param('n', at_most=5)"


def test_a_size_param_read_as_a_userspace_step_feeds_a_kernel_write(
    make_engine: Callable[..., ul.Engine], tmp_path: Path
) -> None:
    """Compiled as if the kernel lacked READ: the blocking read lands its
    bytes in a home of at_most bytes, which the write takes from there."""
    src = tmp_path / "src"
    content = os.urandom(9000)
    src.write_bytes(content)
    prog = sized_copy(8192, ul.STOP_ON_NEGATIVE, ("READ",))
    assert "userspace" in prog.explain()
    sizes = [8192, 1, 5000]
    params = [{"src": bytes(src), "dst": bytes(tmp_path / f"d{n}"), "n": n} for n in sizes]
    with make_engine() as eng:
        done = eng.run_many(prog, params=params)
    for c, p, n in zip(done, params, sizes, strict=True):
        assert c.results == (0, 0, n, n, 0, 0) and c.ok
        assert Path(os.fsdecode(p["dst"])).read_bytes() == content[:n]
