"""``Engine._run_columns``: the endings of many executions as columns (what
``ul.aio.read_files`` runs on), equal to ``run_many``'s completions on every
engine and every path (clean runs, the general path, userspace steps,
batches past capacity), each execution ended exactly once and none of them
in the notification ring."""

from __future__ import annotations

import os
import threading
import time

import pytest

import uringlets as ul
from uringlets.notify import Columns

from .conftest import open_fds


def reader(size: int, stop: int = ul.STOP_ON_NEGATIVE) -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, size, stop=stop)
    s.read(fd, 1, stop=ul.NEVER_STOP, keep=False)
    s.close(fd)
    return s.compile(), data


def same(columns: Columns, completions: list[ul.Completion], ref: ul.Ref | None) -> None:
    """``columns`` says what ``completions`` say, execution by execution."""
    assert columns.n == len(completions)
    assert [columns.row(k) for k in range(columns.n)] == [c.results for c in completions]
    for i, column in enumerate(columns.results):
        assert column == [c.results[i] for c in completions]
    expected = [None] * len(completions) if ref is None else [c[ref] for c in completions]
    assert columns.values == expected


@pytest.fixture
def files(sandbox):
    """70 paths: small files, a file longer than one read, a directory, a
    missing name."""
    paths = []
    for i in range(70):
        path = sandbox / f"columns-{i}"
        path.write_bytes(b"%d" % i * (i % 7))
        paths.append(path)
    paths[5] = sandbox / "missing"
    (sandbox / "a-directory").mkdir(exist_ok=True)
    paths[6] = sandbox / "a-directory"
    paths[7].write_bytes(b"x" * 100)  # more than the 64-byte read: its second read gives 1
    paths[8].write_bytes(b"8")
    return paths


@pytest.mark.parametrize("stop", [ul.NEVER_STOP, ul.STOP_ON_NEGATIVE])
def test_columns_equal_run_many_on_every_path(make_engine, files, stop):
    prog, data = reader(64, stop)
    eng = make_engine(capacity=16)  # more executions than it holds: they start as room frees
    params = [{"path": p} for p in files]
    eng.submit_many(prog, 3, tags=["x", "y", "z"], path=files[0])  # others stay queued
    columns = eng._run_columns(prog, params, data)
    same(columns, eng.run_many(prog, params=params), data)
    assert columns.results[0][5] == -2 and columns.values[5] is None  # ENOENT
    assert columns.values[6] is None and columns.results[1][6] == -21  # EISDIR
    assert columns.values[7] == b"x" * 64 and columns.results[2][7] == 1
    assert columns.values[8] == (b"8" * 1)
    assert sorted(c.tag for c in eng.wait(3, timeout=5)) == ["x", "y", "z"]
    assert eng.in_flight == 0 and eng.wait(0) == []  # nothing of _run_columns in the ring


def test_columns_without_a_value_and_with_userspace_steps(make_engine, sandbox):
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    st = s.fstat(fd)  # a userspace step: the general path
    s.close(fd)
    prog = s.compile()
    (sandbox / "stat-me").write_bytes(b"abc")
    params = [{"path": sandbox / "stat-me"}, {"path": sandbox / "missing"}] * 3
    eng = make_engine()
    same(eng._run_columns(prog, params), eng.run_many(prog, params=params), None)
    columns = eng._run_columns(prog, params, st)
    assert [v.st_size if v else None for v in columns.values] == [3, None] * 3
    assert eng._run_columns(prog, []).n == 0


def test_columns_of_a_program_that_exports_are_refused(make_engine):
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    s.export(fd)
    prog = s.compile()
    eng = make_engine()
    with pytest.raises(ValueError, match="exports"):
        eng._run_columns(prog, [{"path": "/etc/hostname"}])
    assert eng.in_flight == 0


def test_many_columns_through_a_small_capacity_leak_nothing(make_engine, sandbox):
    prog, data = reader(4096, ul.NEVER_STOP)
    paths = []
    for i in range(50):
        path = sandbox / f"many-{i}"
        path.write_bytes(os.urandom(i * 37))
        paths.append(path)
    params = [{"path": p} for p in paths] * 20
    before = open_fds()
    eng = make_engine(capacity=64)
    for _ in range(3):
        columns = eng._run_columns(prog, params, data)
        assert columns.values == [p.read_bytes() for p in paths] * 20
    assert eng.in_flight == 0 and eng.wait(0) == []
    eng.close()
    assert open_fds() == before


def test_columns_of_completions_in_order(make_engine, files):
    prog, data = reader(64)
    eng = make_engine()
    cs = eng.run_many(prog, params=[{"path": p} for p in files[:10]])
    cs.reverse()  # Columns.of goes by place, not tag
    same(Columns.of(prog, cs, data), cs, data)
    same(Columns.of(prog, cs, None), cs, None)


def test_clean_runs_become_columns_without_completions(make_engine, sandbox, monkeypatch):
    """On io_uring, a batch whose executions all end cleanly makes one
    ColumnRun and no Completion (the reason _run_columns exists)."""
    from uringlets import notify, uring

    prog, data = reader(64, ul.NEVER_STOP)
    for i in range(40):
        (sandbox / f"clean-{i}").write_bytes(b"%d" % i)
    params = [{"path": sandbox / f"clean-{i}"} for i in range(40)]
    eng = make_engine()
    made = {"runs": 0, "completions": 0}

    def counting(name: str, real):
        def count(*args):
            made[name] += 1
            return real(*args)

        return count

    monkeypatch.setattr(notify.ColumnRun, "__init__", counting("runs", notify.ColumnRun.__init__))
    for maker in ("_completions", "_one_completion"):  # the clean path's Completions
        real = getattr(uring.UringBackend, maker)
        monkeypatch.setattr(uring.UringBackend, maker, counting("completions", real))
    monkeypatch.setattr(
        notify.Completion, "__new__", counting("completions", notify.Completion.__new__)
    )
    columns = eng._run_columns(prog, params, data)
    assert columns.values == [b"%d" % i for i in range(40)]
    if eng.kind == "uring":
        assert made == {"runs": 1, "completions": 0}
    else:  # the thread engine ends each execution with a Completion
        assert made == {"runs": 0, "completions": 40}
    made.update(runs=0, completions=0)
    eng.run_many(prog, params=params)  # (and run_many still makes completions)
    assert made["runs"] == 0 and made["completions"] >= 1


def test_endings_that_come_out_of_order_keep_their_places(make_engine):
    """Executions of one batch that end in reverse order (each reads a pipe
    that another thread fills last to first) reach the columns out of order:
    all in one run (the pipes filled by one submit of another engine) or in
    many (filled one by one).  Each result and value lands in its place."""
    s = ul.Syslet()
    data = s.read(ul.Param("fd"), 64, stop=ul.NEVER_STOP)  # (hard-linked: its CQE is posted)
    s.nop()
    prog = s.compile()
    w = ul.Syslet()
    w.write(ul.Param("fd"), ul.Param("data"))
    write = w.compile()
    n = 24
    eng = make_engine()

    def fill(pipes: list[tuple[int, int]], at_once: bool) -> None:
        time.sleep(0.02)  # (the reads are waiting by then)
        backwards = [{"fd": pipes[i][1], "data": b"%d" % i * (i + 1)} for i in reversed(range(n))]
        if at_once:
            with ul.Engine() as other:
                assert all(c.ok for c in other.run_many(write, params=backwards))
        else:
            for p in backwards:
                os.write(p["fd"], p["data"])
                time.sleep(0.002)

    for at_once in (True, True, False):
        pipes = [os.pipe() for _ in range(n)]
        try:
            writer = threading.Thread(target=fill, args=(pipes, at_once))
            writer.start()
            columns = eng._run_columns(prog, [{"fd": r} for r, _ in pipes], data)
            writer.join()
            assert columns.values == [b"%d" % i * (i + 1) for i in range(n)]
            assert columns.results[0] == [len(b"%d" % i * (i + 1)) for i in range(n)]
            assert columns.results[1] == [0] * n
        finally:
            for ends in pipes:
                for end in ends:
                    os.close(end)


def test_endings_that_do_not_add_up_break_the_engine(make_engine, monkeypatch):
    """Columns that cannot be made whole (an invariant of the engine) mark
    the engine broken: the call and every later one refuse, saying why."""
    from uringlets import private_runs

    prog, data = reader(64)
    eng = make_engine()

    def lost(*args):
        raise RuntimeError("5 endings for 6 executions, or a column lost its place")

    monkeypatch.setattr(private_runs, "Columns", lost)
    with pytest.raises(ul.EngineClosed, match="5 endings for 6"):
        eng._run_columns(prog, [{"path": "/etc/hostname"}] * 6, data)
    with pytest.raises(ul.EngineClosed, match="broken"):
        eng.run(prog, path="/etc/hostname")
