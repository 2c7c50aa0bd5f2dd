"""Params bound per execution; missing, unknown or ill-typed ones raise
ParamError before anything is submitted."""

from __future__ import annotations

import errno
import os

import pytest

import uringlets as ul


def reader() -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, 100, ul.Param("offset"))
    s.close(fd)
    return s.compile(), data


def test_params_are_bound_per_execution(run, sandbox):
    prog, data = reader()
    assert run(prog, path=sandbox / "ten", offset=2)[data] == b"23456789"
    assert run(prog, path=str(sandbox / "page"), offset=255)[data][:2] == b"\xff\x00"
    assert run(prog, path=os.fsencode(sandbox / "ten"), offset=9)[data] == b"9"


def test_submit_many_binds_each_execution(shared_engine, sandbox):
    prog, data = reader()
    paths = [sandbox / "ten", sandbox / "page", sandbox / "missing"]
    hs = shared_engine.submit_many(
        prog, params=[{"path": p} for p in paths], offset=1, tags=["a", "b", "c"]
    )
    assert [h.tag for h in hs] == ["a", "b", "c"]
    cs = {c.tag: c for c in shared_engine.wait(3)}
    assert cs["a"][data] == b"123456789"
    assert cs["b"][data] == bytes(range(1, 101))
    assert cs["c"].results == (-2, None, None)


def test_data_and_int_params(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "w", os.O_RDWR | os.O_CREAT, ul.Param("mode"))
    s.write(fd, ul.Param("data"))
    s.close(fd)
    prog = s.compile()
    c = run(prog, mode=0o600, data=b"payload")
    assert c.results == (0, 7, 0) and (sandbox / "w").read_bytes() == b"payload"
    c = run(prog, mode=0o600, data=bytearray(b"xy"))
    assert c.results == (0, 2, 0) and (sandbox / "w").read_bytes() == b"xyyload"


def test_a_param_used_twice_is_bound_once(run, sandbox):
    s = ul.Syslet()
    p = ul.Param("p")
    s.mkdirat(p)
    s.unlinkat(p, rmdir=True)
    assert run(s.compile(), p=sandbox / "tmpdir").results == (0, 0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"offset": 0}, "missing path"),
        ({"path": "/x"}, "missing offset"),
        ({"path": "/x", "offset": 0, "extra": 1}, "unknown extra"),
        ({"path": 3, "offset": 0}, "'path': expected a path"),
        ({"path": "/x\0y", "offset": 0}, "null byte"),
        ({"path": b"/x\0y", "offset": 0}, "null byte"),  # bytes: the column check
        ({"path": "/x", "offset": -1}, "'offset': expected an int"),
        ({"path": "/x", "offset": "0"}, "'offset': expected an int"),
        ({"path": "/x", "offset": True}, "'offset': expected an int"),
        ({"path": "/x", "offset": 2**63}, "'offset': expected an int"),
    ],
)
def test_bad_params_raise_param_error(run, params, message):
    prog, _ = reader()
    with pytest.raises(ul.ParamError, match=message):
        run(prog, **params)


def test_param_error_leaves_the_engine_clean(shared_engine):
    prog, _ = reader()
    with pytest.raises(ul.ParamError):
        shared_engine.submit_many(prog, params=[{"path": "/a", "offset": 0}, {"path": 1}])
    assert shared_engine.in_flight == 0 and shared_engine.wait(0) == []


def test_a_data_param_must_be_bytes(run):
    s = ul.Syslet()
    s.write(1, ul.Param("data"))
    with pytest.raises(ul.ParamError, match="expected bytes"):
        run(s.compile(), data="text")


def test_a_batch_of_paths_of_every_length_binds_each_its_own(make_engine, sandbox):
    """The path column is packed into one buffer and cut at its NULs (in C):
    each execution must open its own path, the empty one included."""
    names = [b"a" * k for k in range(1, 40)]
    for name in names:
        (sandbox / os.fsdecode(name)).write_bytes(name)
    s = ul.Syslet()
    data = s.read(s.openat(ul.Param("path")), 64)
    prog = s.compile()
    paths = [os.fsencode(sandbox) + b"/" + name for name in names] + [b""]
    with make_engine(capacity=64) as eng:
        eng.submit_many(prog, params=[{"path": p} for p in paths], tags=range(len(paths)))
        done = sorted(eng.wait(len(paths)), key=lambda c: c.tag)
    assert [c[data] for c in done[:-1]] == names
    assert done[-1].results == (-errno.ENOENT, None)


def test_one_path_with_a_nul_among_many_is_named(shared_engine):
    prog, _ = reader()
    params = [{"path": f"/p{i}".encode(), "offset": 0} for i in range(50)]
    params[31]["path"] = b"/p\x0031"
    with pytest.raises(ul.ParamError, match="'path': embedded null byte"):
        shared_engine.submit_many(prog, params=params)
    assert shared_engine.in_flight == 0


@pytest.mark.parametrize(
    "params",
    [
        {"path": "/tmp/x", "offset": 0},
        {"path": "/tmp/\udcff-undecodable", "offset": 2**63 - 1},  # (surrogateescape)
        {"path": b"/tmp/x", "offset": 7},
        {"path": "/tmp/é", "offset": 1},
    ],
)
def test_one_execution_binds_as_bind_does(params, tmp_path):
    """``Engine.run`` binds its one execution by a shorter road
    (``Program._bind_row``); what it gives must be ``bind``'s, value for
    value, whatever the path's type."""
    prog, _ = reader()
    for p in (params, {**params, "path": tmp_path / "named"}):
        expected = {name: [value] for name, value in prog.bind(p).items()}
        assert prog.bind_columns([p]) == expected
        assert all(type(v[0]) is type(expected[k][0]) for k, v in prog.bind_columns([p]).items())


def test_a_column_of_str_paths_binds_as_bind_does(tmp_path):
    """Many executions' str paths are encoded a column at a time; each must
    come out as ``bind`` (``os.fsencode``) makes it, and a column of str and
    bytes together still binds, one execution at a time."""
    prog, _ = reader()
    names = ["/tmp/a", "/tmp/\udcff-undecodable", "/tmp/é", str(tmp_path / "x")]
    rows = [{"path": n, "offset": i} for i, n in enumerate(names)]
    expected = [prog.bind(r)["path"] for r in rows]
    assert prog.bind_columns(rows)["path"] == expected == [os.fsencode(n) for n in names]
    mixed = [*rows, {"path": b"/tmp/b", "offset": 0}]
    assert prog.bind_columns(mixed)["path"] == [*expected, b"/tmp/b"]
