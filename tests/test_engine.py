"""Engine behaviour: the notification ring (rules 5-7), backpressure, ring
wrap, cancel, close, leaks, ownership."""

from __future__ import annotations

import copy
import gc
import os
import random
import threading

import pytest

import uringlets as ul

from .conftest import open_fds


def nop_chain(n: int = 4) -> ul.Program:
    s = ul.Syslet()
    for _ in range(n):
        s.nop()
    return s.compile()


def file3(path=None) -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    fd = s.openat(ul.Param("path") if path is None else path)
    data = s.read(fd, 4096, stop=ul.STOP_ON_NON_POSITIVE)
    s.close(fd)
    return s.compile(), data


def pipe_reader(rfd: int) -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    s.nop()
    data = s.read(rfd, 64)
    s.nop()
    return s.compile(), data


def test_ring_wrap_100k_executions_through_a_small_ring(make_engine, sandbox):
    prog, data = file3(sandbox / "ten")
    total, seen = 100_000, 0
    with make_engine(capacity=16, sq_entries=8) as eng:
        if eng.kind == "uring":
            assert eng._backend.sq_entries == 8
        while seen < total:
            room = min(eng.capacity - eng.in_flight, total - seen - eng.in_flight)
            if room > 0:
                eng.submit_many(prog, room)
            for c in eng.wait(1):
                assert c.ok and c.results == (0, 10, 0) and c[data] == b"0123456789"
                seen += 1
        assert eng.in_flight == 0
    assert seen == total


def test_rule_6_capacity_bounds_executions_in_flight_and_exactly_once(make_engine):
    s = ul.Syslet()
    s.timeout(0.05)
    slow = s.compile()
    prog = nop_chain(2)
    with make_engine(capacity=8) as eng:
        hs = eng.submit_many(slow, 8, tags=list(range(8)))
        with pytest.raises(ul.RingFull):
            eng.submit(prog, block=False, tag="x")
        assert isinstance(ul.RingFull(), BlockingIOError)
        # a blocking submit drives the ring until there is room
        eng.submit(prog, tag="y")
        assert eng.in_flight <= 8
        with pytest.raises(ValueError, match="9 executions exceed the engine's capacity of 8"):
            eng.submit_many(prog, 9)
        got = eng.wait(9)
        assert sorted(str(c.tag) for c in got) == sorted([*map(str, range(8)), "y"])
        assert [h.tag for h in hs] == list(range(8))
        assert eng.wait(0) == []


def test_blocking_submits_through_a_small_capacity_complete_once_each(make_engine):
    """10,000 blocking submits through capacity 64, drained only at the
    end: ended executions wait in the notification ring, none dropped."""
    prog = nop_chain(2)
    with make_engine(capacity=64) as eng:
        for i in range(10_000):
            eng.submit(prog, tag=i)
            assert eng.in_flight <= 64
        got = eng.wait(10_000, timeout=30)
        assert sorted(c.tag for c in got) == list(range(10_000))
        assert all(c.ok for c in got) and eng.in_flight == 0


def test_wait_min_events_zero_never_blocks_and_timeout_returns(make_engine):
    s = ul.Syslet()
    s.timeout(5)
    prog = s.compile()
    with make_engine(capacity=4) as eng:
        h = eng.submit(prog)
        assert eng.wait(0) == []
        assert eng.wait(1, timeout=0.1) == []
        assert eng.cancel(h)
        (c,) = eng.wait(1, timeout=5)
        assert c.cancelled and c.results == (-125,) and not c.ok  # -ECANCELED
        assert not eng.cancel(h)


def test_cancel_a_blocked_read_mid_chain(make_engine):
    r, w = os.pipe()
    try:
        prog, data = pipe_reader(r)
        with make_engine(capacity=4) as eng:
            h = eng.submit(prog, tag="blocked")
            # give a thread-engine worker time to reach the blocked read
            assert eng.wait(1, timeout=0.1) == [] and eng.in_flight == 1
            assert eng.cancel(h)
            (c,) = eng.wait(1)
            assert c.tag == "blocked" and c.cancelled
            assert c.results == (0, -125, None) and c[data] is None
    finally:
        os.close(r)
        os.close(w)


def test_rule_6_close_with_work_in_flight_delivers_cancelled_completions(make_engine, sandbox):
    fds_before = open_fds()
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.timeout(30)
    s.close(fd)
    prog = s.compile()
    eng = make_engine(capacity=16)
    eng.submit_many(prog, 10, tags=list(range(10)))
    done = eng.close()
    assert sorted(c.tag for c in done) == list(range(10))
    # Acceptable: the sleep was interrupted; on the thread engine also an
    # execution still queued for a worker, which then never ran at all.
    acceptable = [(0, -125, None)] + ([(None, None, None)] if eng.kind == "threads" else [])
    for c in done:
        assert c.cancelled and c.results in acceptable
    assert open_fds() == fds_before
    with pytest.raises(ul.EngineClosed):
        eng.submit(prog)
    with pytest.raises(ul.EngineClosed):
        eng.wait()
    assert eng.close() == []


def test_rule_5_the_buffer_of_an_in_flight_read_survives_del_and_gc(make_engine):
    r, w = os.pipe()
    try:
        with make_engine(capacity=4) as eng:
            prog, data = pipe_reader(r)
            eng.submit(prog, tag="t")
            index = data.index
            del prog, data
            gc.collect()
            os.write(w, b"still here")
            (c,) = eng.wait(1)
            assert c.results == (0, 10, 0)
            assert c.program.plan.atoms[index].op.name == "read"
            assert c[c.program.refs[index]] == b"still here"
    finally:
        os.close(r)
        os.close(w)


def test_rule_5_no_leaks_after_10k_executions_with_failures_cancels_and_close(make_engine, sandbox):
    rng = random.Random(1234)
    fds_before = open_fds()
    progs = []
    for rule in (ul.STOP_ON_NEGATIVE, ul.NEVER_STOP, ul.STOP_ON_ZERO):
        s = ul.Syslet()
        a = s.openat(ul.Param("path"), stop=rule)
        b = s.openat(sandbox / "page")
        s.read(a, 4096, stop=rule)
        s.fstat(b, stop=rule)
        s.close(a, stop=ul.NEVER_STOP)  # b is left to the engine to close
        progs.append(s.compile())
    paths = [sandbox / "ten", sandbox / "missing", sandbox / "dir", sandbox / "empty"]
    eng = make_engine(capacity=64)
    nslots = eng._backend.nslots  # 0 on the thread engine
    submitted = completed = 0
    while submitted < 10_000:
        n = min(eng.capacity - eng.in_flight, 10_000 - submitted, 32)
        if n:
            prog = rng.choice(progs)
            hs = eng.submit_many(prog, params=[{"path": rng.choice(paths)} for _ in range(n)])
            submitted += n
            for h in rng.sample(hs, k=min(2, len(hs))):
                eng.cancel(h)
        completed += len(eng.wait(rng.randint(0, 8)))
    s = ul.Syslet()
    s.openat(sandbox / "ten")
    s.timeout(30)
    extra = min(eng.capacity - eng.in_flight, 8)
    eng.submit_many(s.compile(), extra)
    leftover = eng.close()
    assert extra > 0 and sum(c.cancelled for c in leftover) >= extra
    assert completed + len(leftover) == submitted + extra
    if eng.kind == "uring":
        assert len(eng._backend.io._free_slots) == nslots
    assert open_fds() == fds_before


def test_exported_fd_is_owned_by_the_caller(make_engine, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.export(fd)
    prog = s.compile()
    before = open_fds()
    with make_engine(capacity=4) as eng:
        c = eng.run(prog)
    assert open_fds() == before | {c[fd]}
    os.close(c[fd])


def test_the_engine_belongs_to_its_thread(make_engine):
    errors = []
    with make_engine(capacity=4) as eng:

        def other() -> None:
            try:
                eng.submit(nop_chain())
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert errors and "thread" in str(errors[0])


def test_run_leaves_other_completions_queued(make_engine):
    prog = nop_chain(1)
    with make_engine(capacity=4) as eng:
        eng.submit(prog, tag="queued")
        c = eng.run(prog, tag="mine")
        assert c.tag == "mine"
        assert [c.tag for c in eng.wait(1)] == ["queued"]


def test_kind_and_explain():
    with ul.Engine() as eng:
        assert eng.kind == "uring" and eng.fallback_reason is None
    text = file3()[0].explain()
    assert "IO_LINK" in text and "CQE_SKIP_SUCCESS" in text and "slot 0" in text


def test_cq_overflow_loses_nothing(make_engine):
    """60 atoms that each post a CQE, 16 executions at once: far more CQEs than
    the CQ ring holds; the kernel keeps the rest (FEAT_NODROP) and the engine
    flushes them."""
    devnull = os.open("/dev/null", os.O_WRONLY)
    try:
        s = ul.Syslet()
        for _ in range(60):
            s.write(devnull, ul.Param("data"))  # length unknown: no CQE_SKIP_SUCCESS
        prog = s.compile()
        with make_engine(capacity=16, sq_entries=16) as eng:
            if eng.kind == "uring":
                assert eng._backend.io._reap_max < 60 * 16
            for _ in range(5):
                eng.submit_many(prog, 16, data=b"abc")
                done = eng.wait(16)
                assert len(done) == 16 and all(c.ok and c.results == (3,) * 60 for c in done)
    finally:
        os.close(devnull)


def test_rule_7_submit_only_binds_and_copies(make_engine, monkeypatch, sandbox):
    """After compile(), translation never runs again: submit binds params and
    copies the pre-built images."""
    from uringlets import translate

    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, 100)
    s.close(fd)
    prog = s.compile()

    def no_more(*args, **kwargs):
        raise AssertionError("translated again")

    monkeypatch.setattr(translate, "translate", no_more)
    monkeypatch.setattr(translate._Translator, "translate", no_more)
    with make_engine(capacity=4) as eng:
        for _ in range(3):
            c = eng.run(prog, path=sandbox / "ten")
            assert c.ok and c[data] == b"0123456789"


def test_clean_path_completions_are_whole(make_engine, sandbox):
    """The io_uring engine builds clean-path completions a batch at a time:
    every field and method must be there, as on the general path."""
    prog, data = file3(sandbox / "ten")
    with make_engine(capacity=4) as eng:
        c = eng.run(prog)
    assert (c.tag, c.ok, c.cancelled, c.stopped_at) == (None, True, False, None)
    assert c.results == (0, 10, 0) and c[data] == b"0123456789" and c.error(data) is None
    assert "ok" in repr(c) and c.program is prog


def test_polling_wait_zero_delivers_completions_that_need_the_kernel_to_run(make_engine):
    """An event-loop callback drains with wait(0): that alone must make
    progress (with DEFER_TASKRUN a recv's completion is only posted inside
    io_uring_enter)."""
    import socket
    import time

    a, b = socket.socketpair()
    try:
        s = ul.Syslet()
        data = s.recv(a.fileno(), 16)
        prog = s.compile()
        with make_engine(capacity=4) as eng:
            eng.submit(prog, tag="poll")
            assert eng.wait(0) == []
            b.send(b"hello")
            got: list[ul.Completion] = []
            until = time.monotonic() + 10
            while not got and time.monotonic() < until:
                got = eng.wait(0)
                time.sleep(0.001)
            assert [(c.tag, c[data]) for c in got] == [("poll", b"hello")]
    finally:
        a.close()
        b.close()


def test_a_completion_is_an_object_not_a_tuple(make_engine, sandbox):
    """Completions are tuples underneath (made a batch at a time in C);
    none of that shows."""
    prog, _ = file3(sandbox / "ten")
    with make_engine(capacity=4) as eng:
        c, d = eng.run(prog), eng.run(prog)
    assert c != d and c == c and len({c, d}) == 2 and bool(c)
    for misuse in (len, list, lambda x: 1 in x, lambda x: x < d):
        with pytest.raises(TypeError):
            misuse(c)
    with pytest.raises(KeyError):
        c[0]


def test_untagged_identical_completions_are_still_one_object_each(make_engine):
    """A batch with no tags, no values and equal results (the backend may
    make its completions from one set of fields): one distinct completion
    per execution all the same."""
    prog = nop_chain()
    with make_engine(capacity=16) as eng:
        hs = eng.submit_many(prog, 16)
        done = eng.wait(16)
    assert len(done) == 16 and len({id(c) for c in done}) == 16 and done[0] != done[1]
    assert all(c.ok and c.tag is None and c.results == (0,) * len(prog) for c in done)
    assert [h.tag for h in hs] == [None] * 16 and all(c.program is prog for c in done)


def test_a_completion_copies_with_all_its_values(make_engine, sandbox):
    """``copy.copy`` rebuilds a completion from its fields: the one value
    kept beside the fields and values kept in the dict alike."""
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    head = s.read(fd, 3)
    tail = s.read(fd, 3)
    s.export(fd)
    two = s.compile()
    one, data = file3(sandbox / "ten")
    with make_engine(capacity=4) as eng:
        c1, c2 = eng.run(one), eng.run(two)
    try:
        for c, refs in ((c1, [data]), (c2, [fd, head, tail])):
            d = copy.copy(c)
            assert d is not c and type(d) is ul.Completion
            assert (d.tag, d.results, d.stopped_at, d.cancelled, d.ok) == (
                c.tag, c.results, c.stopped_at, c.cancelled, c.ok,
            )  # fmt: skip
            assert [d[r] for r in refs] == [c[r] for r in refs]
        assert c1[data] == b"0123456789" and (c2[head], c2[tail]) == (b"012", b"345")
    finally:
        os.close(c2[fd])


def test_one_batch_mixes_clean_and_unusual_endings(make_engine, sandbox):
    """A batch where some executions fail, some are cancelled and the rest
    end cleanly: each gets its own exact completion."""
    prog, data = file3()
    paths = [str(sandbox / ("ten" if k % 3 else "missing")).encode() for k in range(48)]
    with make_engine(capacity=64) as eng:
        hs = eng.submit_many(prog, params=[{"path": p} for p in paths], tags=list(range(48)))
        eng.cancel(hs[7])
        cs = sorted(eng.wait(48), key=lambda c: c.tag)
    assert [c.tag for c in cs] == list(range(48))
    for k, c in enumerate(cs):
        if k % 3 == 0:
            assert c.results == (-2, None, None) and c.stopped_at == 0 and not c.ok
        elif c.cancelled:
            assert k == 7 and not c.ok
        else:
            assert c.ok and c.results == (0, 10, 0) and c[data] == b"0123456789"


def test_clean_endings_of_several_batches_and_of_part_of_a_batch(make_engine, sandbox):
    """Clean endings reaped together from several batches, and a batch whose
    executions end at different times: every completion is its own."""
    import socket

    prog, data = file3()
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        s = ul.Syslet()
        got = s.recv(ul.Param("fd"), 16)
        recv_prog = s.compile()
        with make_engine(capacity=64) as eng:
            eng.submit_many(recv_prog, params=[{"fd": a.fileno()} for a, _ in pairs], tags="abcd")
            for tag in range(3):
                path = str(sandbox / "ten").encode()
                eng.submit_many(prog, params=[{"path": path}] * 5, tags=[tag] * 5)
            files = eng.wait(15, timeout=10)
            assert sorted(c.tag for c in files) == [0] * 5 + [1] * 5 + [2] * 5
            assert all(c.ok and c[data] == b"0123456789" for c in files)
            pairs[1][1].send(b"one")
            pairs[3][1].send(b"three")
            first = eng.wait(2, timeout=10)
            assert sorted((c.tag, c[got]) for c in first) == [("b", b"one"), ("d", b"three")]
            pairs[0][1].send(b"zero")
            pairs[2][1].send(b"two")
            rest = eng.wait(2, timeout=10)
            assert sorted((c.tag, c[got]) for c in rest) == [("a", b"zero"), ("c", b"two")]
            assert eng.in_flight == 0
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_scratch_buffers_go_back_to_the_pool_with_their_own_addresses(make_engine, tmp_path):
    """Rounds of batches reading distinct files, ending whole or in parts,
    with a cancel among them: every read lands in the buffer its completion
    copies from (the pool keeps each buffer with its address)."""
    paths = []
    for i in range(24):
        (tmp_path / f"f{i}").write_bytes(b"%04d" % i * 1024)  # 4096: a full read, the clean path
        paths.append(str(tmp_path / f"f{i}").encode())
    prog, data = file3()
    with make_engine(capacity=64) as eng:
        for round_ in range(6):
            order = paths[round_ % 3 :] + paths[: round_ % 3]
            hs = eng.submit_many(prog, params=[{"path": p} for p in order], tags=order)
            if round_ == 2:
                eng.cancel(hs[5])
            # odd rounds end in parts, even ones as a whole batch
            got = eng.wait(5) + eng.wait(len(order) - 5) if round_ % 2 else eng.wait(len(order))
            assert sorted(c.tag for c in got) == sorted(order)
            for c in got:
                if not c.cancelled:
                    i = int(c.tag.rsplit(b"f", 1)[1])
                    assert c.ok and c[data] == b"%04d" % i * 1024, (round_, c)


def test_tags_are_taken_at_submit(make_engine):
    """A caller that reuses its list of tags after submit_many does not
    change the tags of the completions still to come."""
    prog = nop_chain()
    tags = ["a", "b", "c"]
    with make_engine(capacity=8) as eng:
        eng.submit_many(prog, 3, tags=tags)
        tags[:] = ["x", "y", "z"]
        assert sorted(c.tag for c in eng.wait(3)) == ["a", "b", "c"]


def test_run_many_returns_completions_in_order_and_leaves_others_queued(make_engine, sandbox):
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, 64)
    s.close(fd)
    read = s.compile()
    s = ul.Syslet()
    s.nop()
    nop = s.compile()
    (sandbox / "missing").unlink(missing_ok=True)
    paths = []
    for i in range(70):
        path = sandbox / f"run-many-{i}"
        path.write_bytes(b"%d" % i)
        paths.append(path)
    paths[33] = sandbox / "missing"
    eng = make_engine(capacity=16)  # more executions than it holds: they start as room frees
    eng.submit_many(nop, 3, tags=["x", "y", "z"])
    cs = eng.run_many(read, params=[{"path": p} for p in paths])
    assert [c.tag for c in cs] == list(range(70))
    assert [c[data] for c in cs] == [None if i == 33 else b"%d" % i for i in range(70)]
    assert not cs[33].ok and cs[33].results[0] == -2
    assert sorted(c.tag for c in eng.wait(3, timeout=5)) == ["x", "y", "z"]
    assert eng.run_many(nop, 0) == []
    assert [c.results for c in eng.run_many(nop, 3)] == [(0,)] * 3
    with pytest.raises(ValueError, match="count"):
        eng.run_many(nop, 2, params=[{}])
    with pytest.raises(ul.ParamError):
        eng.run_many(read, params=[{"path": paths[0]}, {}])
    assert eng.in_flight == 0 and eng.wait(0) == []  # a refused batch started nothing


def test_a_hard_linked_short_read_ends_on_the_clean_path(make_engine, sandbox, monkeypatch):
    """A read that never stops goes on after a short transfer: its CQE
    posts and its bytes are cut to its result, without the general path."""
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    first = s.read(fd, 4096, stop=ul.NEVER_STOP)
    end = s.read(fd, 1, stop=ul.NEVER_STOP)
    s.close(fd)
    prog = s.compile()
    (sandbox / "short").write_bytes(b"ten bytes!")
    eng = make_engine()
    if eng.kind == "uring":
        from uringlets.follow import PlanFollower

        def no_general_path(*args):
            raise AssertionError("took the general path")

        monkeypatch.setattr(PlanFollower, "_promote", no_general_path)
    cs = eng.run_many(prog, 8, path=sandbox / "short")
    assert all(c.ok and c.results == (0, 10, 0, 0) for c in cs)
    assert all(c[first] == b"ten bytes!" and c[end] == b"" for c in cs)
    c = eng.run(prog, path=sandbox)  # EISDIR from both reads: the chain still closes
    assert c.ok and c.results == (0, -21, -21, 0) and c[first] is None


def test_keep_false_bytes_feed_later_atoms_and_never_come_back(make_engine, sandbox):
    (sandbox / "kept-src").write_bytes(b"0123456789" * 1000)
    s = ul.Syslet()
    src = s.openat(ul.Param("src"))
    dst = s.openat(ul.Param("dst"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    data = s.read(src, 4096, keep=False)  # full: the clean path
    tail = s.read(src, 100_000, keep=False, stop=ul.NEVER_STOP)  # short: the rest in userspace
    s.write(dst, data)
    s.write(dst, tail)
    s.close(dst)
    s.close(src)
    prog = s.compile()
    assert "bytes not kept" in prog.explain()
    eng = make_engine()
    for c in eng.run_many(prog, 3, src=sandbox / "kept-src", dst=sandbox / "kept-dst"):
        assert c.ok and c.results == (0, 0, 4096, 5904, 4096, 5904, 0, 0)
        for ref in (data, tail):
            with pytest.raises(KeyError, match="not kept"):
                c[ref]
        assert c._values is None and c._value is None  # no copy of them was made
    assert (sandbox / "kept-dst").read_bytes() == b"0123456789" * 1000
    with pytest.raises(ul.TranslateError, match="keep"):
        ul.Syslet().read(0, 10, keep=1)


def test_completion_column_is_each_completions_value(make_engine, sandbox):
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, 64)
    s.close(fd)
    prog = s.compile()
    for i in range(5):
        (sandbox / f"col-{i}").write_bytes(b"%d" % i * (i + 1))
    eng = make_engine()
    paths = [sandbox / f"col-{i}" for i in range(5)]
    cs = eng.run_many(prog, params=[{"path": p} for p in paths])
    assert (
        ul.Completion.column(cs, data) == [c[data] for c in cs] == [p.read_bytes() for p in paths]
    )
    mixed = [*cs, eng.run(prog, path=sandbox / "no-such-file")]  # one without the value
    assert ul.Completion.column(mixed, data) == [*(p.read_bytes() for p in paths), None]
    assert ul.Completion.column([], data) == []


@pytest.mark.timeout(60)
def test_run_many_refills_even_when_executions_wait_for_later_ones(make_engine):
    """Past capacity run_many refills in batches, but never waits for
    executions that wait for later ones of the same call: executions 0-2
    read a pipe that only the last one writes; the others end at once."""
    s = ul.Syslet()
    data = s.read(ul.Param("r"), 1, stop=ul.NEVER_STOP)
    s.write(ul.Param("w"), ul.Param("data"))
    prog = s.compile()
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.write(b_w, b"b" * 7)
        blocked = [{"r": a_r, "w": null, "data": b""}] * 3
        quick = [{"r": b_r, "w": null, "data": b""}] * 6
        last = [{"r": b_r, "w": a_w, "data": b"aaa"}]
        eng = make_engine(capacity=4)
        cs = eng.run_many(prog, params=blocked + quick + last)
        assert [c[data] for c in cs] == [b"a"] * 3 + [b"b"] * 7
        assert all(c.ok for c in cs)
    finally:
        for fd in (a_r, a_w, b_r, b_w, null):
            os.close(fd)
