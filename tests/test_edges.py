"""Values at the edges: what the builder accepts runs on every engine, and
what no engine could run is refused when the syslet is built."""

from __future__ import annotations

import errno
import math
import os
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


def repr_short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 24 else f"{text[:8]}...({len(text)} digits)"


# -- ints at the edges of their C types --------------------------------------------
INT_MAX = 2**31 - 1


def _sock(s: ul.Syslet) -> ul.Ref:
    return s.socket(socket.AF_INET, socket.SOCK_STREAM)


# (build(s, value), op, argument): each argument goes to the kernel through an
# SQE field and to Python's call as a C int, so INT_MAX + 1 fits neither both.
INT_ARGS = [
    (lambda s, v: s.openat("/x", v), "openat", "flags"),
    (lambda s, v: s.openat("/x", os.O_RDONLY, v), "openat", "mode"),
    (lambda s, v: s.mkdirat("/x", v), "mkdirat", "mode"),
    (lambda s, v: s.socket(v, socket.SOCK_STREAM), "socket", "family"),
    (lambda s, v: s.socket(socket.AF_INET, v), "socket", "type"),
    (lambda s, v: s.socket(socket.AF_INET, socket.SOCK_STREAM, v), "socket", "proto"),
    (lambda s, v: s.listen(_sock(s), v), "listen", "backlog"),
    (lambda s, v: s.setsockopt(_sock(s), v, 1, 1), "setsockopt", "level"),
    (lambda s, v: s.setsockopt(_sock(s), 1, v, 1), "setsockopt", "optname"),
    (lambda s, v: s.send(_sock(s), b"x", v), "send", "flags"),
    (lambda s, v: s.recv(_sock(s), 1, v), "recv", "flags"),
    (lambda s, v: s.sendto(_sock(s), b"x", ("127.0.0.1", 9), v), "sendto", "flags"),
    (lambda s, v: s.recvfrom(_sock(s), 1, v), "recvfrom", "flags"),
    (lambda s, v: s.sendmsg(_sock(s), b"x", None, v), "sendmsg", "flags"),
    (lambda s, v: s.recvmsg(_sock(s), 1, v), "recvmsg", "flags"),
    (lambda s, v: s.shutdown(_sock(s), v), "shutdown", "how"),
]


@pytest.mark.parametrize("value", [INT_MAX + 1, 2**32 - 1, 2**64, -1], ids=repr_short)
@pytest.mark.parametrize(("build", "op", "arg"), INT_ARGS, ids=[f"{o}-{a}" for _, o, a in INT_ARGS])
def test_an_int_that_does_not_fit_a_c_int_is_refused(build, op, arg, value):
    """Python's call would raise OverflowError on the thread engine (killing
    its worker); the kernel would see a truncated value."""
    s = ul.Syslet()
    with pytest.raises(ul.TranslateError) as info:
        build(s, value)
    assert (info.value.op, info.value.argument) == (op, arg)
    assert f"0..{INT_MAX}" in str(info.value)


@pytest.mark.parametrize(("build", "op", "arg"), INT_ARGS, ids=[f"{o}-{a}" for _, o, a in INT_ARGS])
def test_the_largest_c_int_is_accepted(build, op, arg):
    build(ul.Syslet(), INT_MAX)


def test_every_int_argument_of_the_catalogue_declares_its_c_types():
    from uringlets import atoms

    for op in atoms.CATALOGUE.values():
        for spec in op.args:
            if spec.kind in ("int", "flags"):
                assert spec.fits, f"{op.name}.{spec.name}"
                assert spec.bounds == (0, INT_MAX), f"{op.name}.{spec.name}"


def test_values_at_the_edge_run_alike_everywhere(run, sandbox):
    """The largest accepted values reach the kernel and Python's calls
    unchanged: a mode of INT_MAX is masked to 0o7777 by both, a backlog of
    INT_MAX clamped to somaxconn, a shutdown ``how`` of INT_MAX is EINVAL."""
    s = ul.Syslet()
    fd = s.openat(sandbox / "edge", os.O_RDWR | os.O_CREAT, INT_MAX)
    s.close(fd)
    sock = _sock(s)
    s.bind(sock, ("127.0.0.1", 0))
    s.listen(sock, INT_MAX)
    s.shutdown(sock, INT_MAX, stop=ul.NEVER_STOP)
    s.close(sock)
    c = run(s.compile())
    assert c.results == (0, 0, 0, 0, 0, -errno.EINVAL, 0)
    (sandbox / "edge").unlink()


@pytest.mark.parametrize("value", [2**63, -1])
def test_an_offset_beyond_off_t_is_refused(value):
    with pytest.raises(ul.TranslateError, match=r"argument 'offset'"):
        ul.Syslet().read(0, 1, value)


# -- seconds --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value", [10**400, -(10**400), 1e7, 10**6 + 1, math.nan, 0, -1], ids=repr_short
)
def test_a_bad_timeout_is_a_translate_error(value):
    """10**400 used to raise OverflowError (a float conversion)."""
    s = ul.Syslet()
    with pytest.raises(ul.TranslateError) as info:
        s.recv(0, 1, timeout=value)
    assert (info.value.op, info.value.argument) == ("recv", "timeout")


@pytest.mark.parametrize("value", [-math.inf])
def test_minus_infinity_is_no_timeout_either(value):
    with pytest.raises(ul.TranslateError, match="'timeout'"):
        ul.Syslet().read(0, 1, timeout=value)


def test_an_infinite_timeout_means_no_limit(run):
    s = ul.Syslet()
    s.nop()
    limited = s.connect(_sock(s), ("127.0.0.1", 9), timeout=math.inf, stop=ul.NEVER_STOP)
    prog = s.compile()
    assert prog.atoms[limited.index].timeout is None
    assert "LINK_TIMEOUT" not in prog.explain()
    assert run(prog).results[:2] == (0, 0)


@pytest.mark.parametrize("value", [10**400, math.inf, math.nan, -1, 10**6 + 1], ids=repr_short)
def test_a_sleep_is_finite(value):
    with pytest.raises(ul.TranslateError, match=r"\(timeout\) argument 'seconds'"):
        ul.Syslet().timeout(value)


def test_the_longest_sleep_and_limit_are_accepted():
    s = ul.Syslet()
    s.timeout(10**6)
    s.read(0, 1, timeout=10**6)


# -- socket addresses -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        (("::1", 80, 0, 2**32), "scope id"),
        (("::1", 80, 0, -1), "scope id"),
        (("::1", 80, 0, "eth0"), "scope id"),
        (("::1", 80, 2**20, 0), "flowinfo"),
        (("::1", 80, -1, 0), "flowinfo"),
        (("::1", 80, 0.5, 0), "flowinfo"),
    ],
)
def test_a_bad_ipv6_address_is_a_translate_error(address, fragment):
    """A scope id beyond 32 bits raised struct.error; a flowinfo beyond 20
    bits made Python's call raise OverflowError."""
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with pytest.raises(ul.TranslateError, match=fragment) as info:
        s.connect(fd, address)
    assert (info.value.index, info.value.op, info.value.argument) == (1, "connect", "address")


def test_the_largest_ipv6_fields_are_accepted():
    s = ul.Syslet()
    s.connect(s.socket(socket.AF_INET6, socket.SOCK_STREAM), ("::1", 80, 2**20 - 1, 2**32 - 1))


# -- params -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["tag", "tags", "block", "deadline", "program", "count", "params", "self"]
)
def test_a_param_named_like_a_submit_keyword_is_refused(name):
    with pytest.raises(ValueError, match=f"Param name '{name}' is a keyword"):
        ul.Param(name)


def test_an_int_param_is_bound_within_what_its_argument_fits(make_engine, sandbox):
    """A mode Param of INT_MAX + 1 reached os.open on the thread engine."""
    s = ul.Syslet()
    fd = s.openat(sandbox / "m", os.O_RDWR | os.O_CREAT, ul.Param("mode"))
    s.close(fd)
    prog = s.compile()
    for bad in (INT_MAX + 1, 2**32 - 1, -1):
        with pytest.raises(ul.ParamError, match=f"'mode': expected an int in 0..{INT_MAX}"):
            run_reference(prog, mode=bad)
    with make_engine(capacity=4) as eng:
        with pytest.raises(ul.ParamError, match="'mode'"):
            eng.submit_many(prog, 3, mode=INT_MAX + 1)  # the column check
        with pytest.raises(ul.ParamError, match="'mode'"):
            eng.submit_many(prog, params=[{"mode": 0o600}, {"mode": 2**32 - 1}])
        assert eng.in_flight == 0
        assert eng.run(prog, mode=INT_MAX).results == (0, 0)


def test_a_param_used_twice_fits_both_arguments(sandbox):
    s = ul.Syslet()
    n = ul.Param("n")
    s.mkdirat(sandbox / "d", n)
    s.listen(_sock(s), n)
    prog = s.compile()
    with pytest.raises(ul.ParamError, match=f"0..{INT_MAX}"):
        prog.bind({"n": INT_MAX + 1})
    assert prog.bind({"n": 0o700}) == {"n": 0o700}
