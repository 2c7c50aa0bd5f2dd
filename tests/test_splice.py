"""The splice op on every engine: results and errors equal os.splice's
(with SPLICE_F_NONBLOCK, which the op always sets), the bytes land where
they should, and nothing waits on a pipe."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator

import pytest

import uringlets as ul

NONBLOCK = os.SPLICE_F_NONBLOCK


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    yield r, w
    os.close(r)
    os.close(w)


def _copy_chain(src: object, dst: object, size: int, first_stop: int) -> ul.Program:
    """open src, open dst, splice src -> pipe, splice pipe -> dst, close both."""
    s = ul.Syslet()
    fin = s.openat(src, os.O_RDONLY)
    fout = s.openat(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    s.splice(fin, ul.Param("w"), size, src_offset=0, stop=first_stop)
    s.splice(ul.Param("r"), fout, size, dst_offset=0, stop=ul.NEVER_STOP)
    s.close(fout)
    s.close(fin)
    return s.compile()


@pytest.mark.parametrize("stop", [ul.NEVER_STOP, ul.STOP_ON_NEGATIVE])
@pytest.mark.parametrize("size", [4096, 65536])
def test_a_file_through_a_pipe_into_a_file(run, sandbox, pipe, size, stop):
    # 4096: exactly the file (a full transfer); 65536: a short splice, which
    # breaks the kernel's soft link (STOP_ON_NEGATIVE) but not a hard one.
    r, w = pipe
    c = run(_copy_chain(sandbox / "page", sandbox / "copy", size, stop), r=r, w=w)
    assert c.results == (0, 0, 4096, 4096, 0, 0) and c.ok
    assert (sandbox / "copy").read_bytes() == (sandbox / "page").read_bytes()


def test_an_empty_file_moves_nothing_and_the_empty_pipe_says_eagain(run, sandbox, pipe):
    r, w = pipe
    c = run(_copy_chain(sandbox / "empty", sandbox / "copy", 4096, ul.NEVER_STOP), r=r, w=w)
    assert c.results == (0, 0, 0, -errno.EAGAIN, 0, 0)
    assert (sandbox / "copy").read_bytes() == b""


def test_a_slot_on_the_input_side_and_an_offset_in_the_middle(run, sandbox, pipe):
    r, w = pipe
    s = ul.Syslet()
    fin = s.openat(sandbox / "page", os.O_RDONLY)
    moved = s.splice(fin, w, 100, src_offset=1000)
    s.close(fin)
    c = run(s.compile())
    assert c.results == (0, 100, 0) and c[moved] == 100
    assert os.read(r, 200) == (sandbox / "page").read_bytes()[1000:1100]


def test_it_never_waits_on_a_pipe(run, sandbox, pipe):
    r, w = pipe
    empty = ul.Syslet()
    empty.splice(r, ul.Param("out"), 10)
    with open(os.devnull, "wb") as devnull:
        c = run(empty.compile(), out=devnull.fileno())
    assert c.results == (-errno.EAGAIN,) and c.stopped_at == 0

    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    os.write(w, b"x" * 4096)  # full
    s = ul.Syslet()
    fin = s.openat(sandbox / "page", os.O_RDONLY)
    s.splice(fin, w, 4096, src_offset=0)
    c = run(s.compile())
    assert c.results == (0, -errno.EAGAIN)


def os_splice_errno(*args: object, **kwargs: object) -> int:
    with pytest.raises(OSError) as info:
        os.splice(*args, **kwargs)  # type: ignore[arg-type]
    return -info.value.errno


def test_errors_equal_os_splice(run, sandbox, pipe):
    _r, w = pipe
    a = os.open(sandbox / "ten", os.O_RDONLY | os.O_CLOEXEC)
    b = os.open(sandbox / "copy", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        cases = [
            ((a, b, 10), {}),  # two files: no pipe
            ((a, w, 10), {"offset_dst": 0}),  # an offset on a pipe
            ((a, w, 10), {"offset_src": 0, "flags": 0x10}),  # an unknown flag
            ((a, 999, 10), {}),  # not a descriptor
        ]
        for (src, dst, size), kw in cases:
            want = os_splice_errno(src, dst, size, flags=kw.get("flags", 0) | NONBLOCK,
                                   offset_src=kw.get("offset_src"),
                                   offset_dst=kw.get("offset_dst"))  # fmt: skip
            s = ul.Syslet()
            s.splice(src, dst, size, src_offset=kw.get("offset_src"),
                     dst_offset=kw.get("offset_dst"), flags=kw.get("flags", 0))  # fmt: skip
            assert run(s.compile()).results == (want,), (kw, want)
    finally:
        os.close(a)
        os.close(b)


def test_zero_bytes_is_zero_whatever_the_descriptors(run):
    # splice(2) answers a zero length before it looks at the descriptors
    assert os.splice(999, 998, 0) == 0
    s = ul.Syslet()
    s.splice(999, 998, 0)
    assert run(s.compile()).results == (0,)


def test_the_plan_says_where_it_runs(sandbox):
    text = _copy_chain(sandbox / "page", sandbox / "copy", 65536, ul.NEVER_STOP).explain()
    assert "splice(" in text and "HARDLINK" in text


def test_bad_arguments_name_the_atom_op_and_argument():
    s = ul.Syslet()
    s.nop()
    with pytest.raises(ul.TranslateError) as info:
        s.splice(0, 1, 10, flags=1 << 31)  # beyond os.splice's C int
    assert (info.value.index, info.value.op, info.value.argument) == (1, "splice", "flags")
    with pytest.raises(ul.TranslateError) as info:
        s.splice(0, 1, -1)
    assert info.value.argument == "size"
    with pytest.raises(TypeError):
        s.splice(0, 1, 10, timeout=1.0)  # type: ignore[call-arg]  # it never waits
