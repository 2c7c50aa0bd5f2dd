"""Threadlets: Python callables run on the engine's cachemiss threads, each
ending in one ``CallCompletion`` in the same notification ring as the
syslets' completions, on both engines, sync and from asyncio."""

from __future__ import annotations

import asyncio
import collections
import os
import select
import threading
import time

import pytest

import uringlets as ul


def slow_program(seconds: float) -> ul.Program:
    s = ul.Syslet()
    s.timeout(seconds)
    return s.compile()


def test_threadlets_return_and_raise_into_the_same_ring(engine_kind: str) -> None:
    s = ul.Syslet()
    s.nop()
    nop = s.compile()
    with ul.Engine(engine_kind) as eng:
        eng.submit(nop, tag="syslet")
        eng.submit_call(os.stat, "/etc/hosts", tag="stat")
        eng.submit_call(int, "not a number", tag="raises")
        eng.submit_call(lambda: threading.current_thread().name, tag="where")
        eng.submit_call(sum, [1, 2, 3], start=4, tag="kwargs")
        cs = {c.tag: c for c in eng.wait(5, timeout=10)}
    assert set(cs) == {"syslet", "stat", "raises", "where", "kwargs"}
    assert cs["syslet"].ok and cs["syslet"].results == (0,)
    st = cs["stat"]
    assert isinstance(st, ul.CallCompletion) and isinstance(st, ul.Completion)
    assert st.ok and st.value.st_size == os.stat("/etc/hosts").st_size
    assert st.exception is None and st.results == () and st.program is None
    bad = cs["raises"]
    assert not bad.ok and not bad.cancelled and bad.value is None
    assert isinstance(bad.exception, ValueError)
    assert cs["where"].value == "uringlets-cachemiss"  # a cachemiss thread, not the owner
    assert cs["kwargs"].value == 10
    with pytest.raises(KeyError):
        st[object()]


def test_an_exception_of_any_type_is_the_threadlets_result(engine_kind: str) -> None:
    def exits() -> None:
        raise SystemExit(3)

    def interrupts() -> None:
        raise KeyboardInterrupt

    with ul.Engine(engine_kind) as eng:
        eng.submit_call(exits, tag="exit")
        eng.submit_call(interrupts, tag="kbd")
        eng.submit_call(lambda: 5, tag="after")  # the workers are still there
        cs = {c.tag: c for c in eng.wait(3, timeout=10)}
    assert isinstance(cs["exit"].exception, SystemExit)
    assert isinstance(cs["kbd"].exception, KeyboardInterrupt)
    assert cs["after"].value == 5


def test_a_queued_threadlet_is_cancelled_a_running_one_runs_to_its_end(engine_kind: str) -> None:
    release = threading.Event()
    with ul.Engine(engine_kind, workers=1) as eng:
        running = eng.submit_call(release.wait, 10, tag="running")
        time.sleep(0.05)  # the one worker has taken it
        queued = eng.submit_call(lambda: "never", tag="queued")
        assert eng.cancel(queued) is True
        assert eng.cancel(running) is False
        release.set()
        cs = {c.tag: c for c in eng.wait(2, timeout=10)}
        assert eng.cancel(queued) is False  # ended
    assert cs["queued"].cancelled and not cs["queued"].ok and cs["queued"].value is None
    assert cs["running"].ok and cs["running"].value is True


def test_a_threadlet_blocked_until_close_still_ends_in_one_completion(engine_kind: str) -> None:
    never = threading.Event()
    eng = ul.Engine(engine_kind)
    eng.submit_call(never.wait, tag="stuck")
    eng.submit(slow_program(30), tag="syslet")
    t0 = time.monotonic()
    left = eng.close()
    assert time.monotonic() - t0 < 10
    tags = collections.Counter(c.tag for c in left)
    assert tags == {"stuck": 1, "syslet": 1}
    stuck = next(c for c in left if c.tag == "stuck")
    assert stuck.cancelled and not stuck.ok
    never.set()  # let the worker go; what it brings back is discarded
    time.sleep(0.05)


def test_many_threadlets_and_syslets_mixed_each_complete_once(engine_kind: str) -> None:
    s = ul.Syslet()
    s.nop()
    nop = s.compile()
    with ul.Engine(engine_kind, capacity=16) as eng:
        for i in range(300):
            if i % 3:
                eng.submit_call(pow, i, 2, tag=("call", i))
            else:
                eng.submit(nop, tag=("syslet", i))
        seen = collections.Counter()
        while sum(seen.values()) < 300:
            got = eng.wait(1, timeout=10)
            assert got, "nothing completed"
            for c in got:
                seen[c.tag] += 1
                if c.tag[0] == "call":
                    assert c.value == c.tag[1] ** 2
    assert set(seen.values()) == {1} and len(seen) == 300


def test_fileno_wakes_for_a_threadlet(engine_kind: str) -> None:
    """An event loop watching fileno() wakes when a threadlet ends, on the
    io_uring engine too (the pool writes the ring's eventfd)."""
    with ul.Engine(engine_kind) as eng:
        fd = eng.fileno()
        eng.submit_call(time.sleep, 0.05, tag="nap")
        got: list[ul.Completion] = []
        for _ in range(20):
            readable, _, _ = select.select([fd], [], [], 5)
            assert readable, "fileno() never became readable"
            got += eng.wait(0)
            if got:
                break
        assert [c.tag for c in got] == ["nap"] and got[0].ok


def test_submit_call_refuses_what_is_not_callable(engine_kind: str) -> None:
    with ul.Engine(engine_kind) as eng, pytest.raises(TypeError, match="callable"):
        eng.submit_call(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncengine_call_returns_raises_and_mixes_with_syslets(
    engine_kind: str, loop: str
) -> None:
    import uvloop

    s = ul.Syslet()
    s.nop()
    nop = s.compile()

    async def main() -> None:
        async with ul.AsyncEngine(engine_kind) as eng:
            assert await eng.call(pow, 2, 10) == 1024
            with pytest.raises(ZeroDivisionError):
                await eng.call(divmod, 1, 0)
            results = await asyncio.gather(
                *[eng.call(pow, i, 2) for i in range(50)], *[eng.run(nop) for _ in range(50)]
            )
            assert results[:50] == [i * i for i in range(50)]
            assert all(c.ok for c in results[50:])
            gate = threading.Event()
            task = asyncio.create_task(eng.call(gate.wait, 10))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            assert await eng.call(lambda: "still works") == "still works"

    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())
