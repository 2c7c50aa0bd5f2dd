"""AsyncEngine: syslets awaited from asyncio tasks, on the default loop and
on uvloop, on the io_uring engine and on the thread engine, against real
servers (redis-server, http.server) and real clients (redis-py's asyncio
client, curl)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

import uringlets as ul

from .conftest import ENGINES, open_fds
from .servers import free_port, redis, wait_for_port

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=[(loop, kind) for loop in LOOPS for kind in ENGINES], ids="-".join)
def arun(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``arun(main, **engine_kwargs)``: run ``main(eng)`` on a fresh loop of
    the kind under test, with an AsyncEngine of the kind under test made in
    it and closed after ``main``; returns what ``main`` returned."""
    loop_kind, engine_kind = request.param

    def run(main: Callable[[ul.AsyncEngine], Awaitable[Any]], **kwargs: Any) -> Any:
        async def outer() -> Any:
            async with ul.AsyncEngine(engine_kind, **kwargs) as eng:
                assert eng.kind == engine_kind
                return await main(eng)

        if loop_kind == "uvloop":
            return uvloop.run(outer())
        return asyncio.run(outer())

    return run


def nop_program() -> ul.Program:
    s = ul.Syslet()
    s.nop()
    return s.compile()


def sleep_program(seconds: float) -> ul.Program:
    s = ul.Syslet()
    s.timeout(seconds)
    return s.compile()


def test_run_and_run_many_return_each_execution_its_own_completion(arun: Any) -> None:
    prog = nop_program()
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    data = s.read(fd, 100)
    s.close(fd)
    read = s.compile()

    async def main(eng: ul.AsyncEngine) -> None:
        c = await eng.run(prog, tag="one")
        assert c.ok and c.tag == "one" and c.results == (0,)
        cs = await asyncio.gather(*[eng.run(read, tag=i, path=__file__) for i in range(50)])
        assert [c.tag for c in cs] == list(range(50))
        assert all(c.ok and c[data] == Path(__file__).read_bytes()[:100] for c in cs)
        paths = [__file__, "/nonexistent", __file__]
        cs = await eng.run_many(read, params=[{"path": p} for p in paths], tags="abc")
        assert [c.tag for c in cs] == ["a", "b", "c"]
        assert [c.ok for c in cs] == [True, False, True]
        assert cs[1].results[0] == -2 and cs[1].stopped_at == 0
        assert await eng.run_many(prog, 0) == []

    arun(main)


def test_userspace_steps_advance_with_nothing_else_to_wake_the_loop(arun: Any) -> None:
    """An fstat (a userspace step on io_uring: the slot is installed as an
    fd first) and an export queue SQEs while the loop drains the ring; they
    must be submitted in that same drain, or no CQE ever wakes the loop
    (the await hung before the fix)."""
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    s.export(fd)
    st = s.fstat(fd)
    prog = s.compile()

    async def main(eng: ul.AsyncEngine) -> None:
        for _ in range(3):
            c = await asyncio.wait_for(eng.run(prog, path=__file__), 5)
            try:
                assert c.ok and c[st].st_size == os.stat(__file__).st_size
            finally:
                os.close(c[fd])

    arun(main)


def test_runs_of_one_loop_iteration_are_started_by_one_submit(arun: Any) -> None:
    """64 tasks awaiting a chain in the same iteration: one submit_many."""
    prog = nop_program()
    calls: list[int] = []

    async def main(eng: ul.AsyncEngine) -> None:
        real = eng._engine.submit_many

        def counting(program: ul.Program, *args: Any, **kwargs: Any) -> Any:
            handles = real(program, *args, **kwargs)
            calls.append(len(handles))
            return handles

        eng._engine.submit_many = counting  # type: ignore[method-assign]
        cs = await asyncio.gather(*[eng.run(prog, tag=i) for i in range(64)])
        assert sorted(c.tag for c in cs) == list(range(64))

    arun(main)
    assert calls == [64]


def test_thousands_of_runs_through_a_small_capacity_each_complete_once(arun: Any) -> None:
    """5,000 concurrent awaits through capacity 16: each task gets its own
    completion, the engine never holds more than 16, and a ticker task
    keeps running (the loop is never blocked)."""
    prog = nop_program()
    sleepy = sleep_program(0.001)

    async def main(eng: ul.AsyncEngine) -> tuple[collections.Counter[int], float, int]:
        seen: collections.Counter[int] = collections.Counter()
        most = 0
        gaps = [0.0]
        stop = False

        async def ticker() -> None:
            last = time.monotonic()
            while not stop:
                await asyncio.sleep(0.001)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async def one(i: int) -> None:
            nonlocal most
            c = await eng.run(sleepy if i % 7 == 0 else prog, tag=i)
            most = max(most, eng.in_flight)
            assert c.ok
            seen[c.tag] += 1

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*[one(i) for i in range(5000)])
        stop = True
        await tick
        return seen, max(gaps), most

    seen, gap, most = arun(main, capacity=16)
    assert seen == collections.Counter(range(5000))
    assert most <= 16
    assert gap < 1.0, f"the loop was blocked for {gap:.3f} s"


def _stalled_connect_target() -> tuple[socket.socket, list[socket.socket], int]:
    """A listener whose accept queue is full: a further connect to it
    stalls (its SYN is dropped) until cancelled."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.05)
    return listener, fillers, port


@pytest.mark.parametrize("where", ["sleep", "recv", "connect"])
def test_a_cancelled_task_cancels_its_execution(arun: Any, where: str) -> None:
    """asyncio.timeout in the middle of a sleep, a recv or a connect: the
    task sees TimeoutError, the execution is cancelled (its atoms after the
    interrupted one never run), nothing in flight remains, and no
    descriptor or slot is left behind."""
    a, b = socket.socketpair()
    listener, fillers, port = _stalled_connect_target()
    s = ul.Syslet()
    if where == "sleep":
        s.timeout(30)
    elif where == "recv":
        s.recv(a.fileno(), 100)
    else:
        fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(fd, ("127.0.0.1", port))
        s.close(fd)
    s.write(b.fileno(), b"ran")
    prog = s.compile()
    fds_before = open_fds()

    async def main(eng: ul.AsyncEngine) -> tuple[int, int]:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await eng.run(prog)
        waited = time.monotonic() - t0
        for _ in range(200):  # the cancelled execution ends soon after
            if not eng.in_flight:
                break
            await asyncio.sleep(0.01)
        assert waited < 5
        backend: Any = eng._engine._backend
        free = len(backend.io._free_slots) if eng.kind == "uring" else 0
        total = backend.nslots if eng.kind == "uring" else 0
        return eng.in_flight, total - free

    try:
        in_flight, slots_taken = arun(main)
    finally:
        listener.close()
        for f in fillers:
            f.close()
    assert in_flight == 0 and slots_taken == 0
    a.setblocking(False)
    with pytest.raises(BlockingIOError):
        a.recv(10)  # the atom after the cancelled one never wrote
    a.close()
    b.close()
    assert open_fds() <= fds_before | {a.fileno(), b.fileno()}


def test_a_completion_for_an_abandoned_task_is_dropped(arun: Any) -> None:
    """A task cancelled while its execution runs: the execution's completion
    comes back (cancelled) and is dropped; other tasks get their own."""
    slow = sleep_program(0.05)
    prog = nop_program()

    async def main(eng: ul.AsyncEngine) -> None:
        doomed = asyncio.create_task(eng.run(slow, tag="doomed"))
        await asyncio.sleep(0.01)
        doomed.cancel()
        others = await asyncio.gather(*[eng.run(prog, tag=i) for i in range(10)])
        assert [c.tag for c in others] == list(range(10))
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.sleep(0.1)
        assert eng.in_flight == 0 and not eng._tickets

    arun(main)


def test_deadline_cancels_without_other_activity(arun: Any) -> None:
    """A deadline expires while nothing else happens: the loop still wakes
    the engine, which cancels the execution."""
    slow = sleep_program(30)

    async def main(eng: ul.AsyncEngine) -> ul.Completion:
        return await eng.run(slow, deadline=0.05)

    t0 = time.monotonic()
    c = arun(main)
    assert c.cancelled and not c.ok and time.monotonic() - t0 < 5


def test_submit_and_completions(arun: Any) -> None:
    prog = nop_program()

    async def main(eng: ul.AsyncEngine) -> list[Any]:
        for i in range(5):
            eng.submit(prog, tag=i)
        tags = []
        async for c in eng.completions():
            assert c.ok
            tags.append(c.tag)
            if len(tags) == 5:
                break
        return tags

    assert sorted(arun(main)) == list(range(5))


def test_bad_parameters_fail_only_their_own_run(arun: Any) -> None:
    s = ul.Syslet()
    s.openat(ul.Param("path"))
    prog = s.compile()

    async def main(eng: ul.AsyncEngine) -> None:
        good = [eng.run(prog, path=__file__) for _ in range(3)]
        bad = eng.run(prog, path=42)
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert all(isinstance(c, ul.Completion) and c.ok for c in results[:3])
        assert isinstance(results[3], ul.ParamError)
        with pytest.raises(TypeError):
            await eng.run("not a program")  # type: ignore[arg-type]

    arun(main)


def test_a_program_needing_more_slots_than_the_engine_has_fails_its_run(arun: Any) -> None:
    """capacity 1 gives 16 slots: a program making 17 descriptors can never
    start, and its run fails instead of waiting for room forever."""
    s = ul.Syslet()
    for _ in range(17):
        s.socket(socket.AF_INET, socket.SOCK_STREAM)
    greedy = s.compile()

    async def main(eng: ul.AsyncEngine) -> None:
        if eng.kind == "threads":
            assert (await eng.run(greedy)).ok  # no slots there
            return
        with pytest.raises(ValueError, match="slots"):
            await eng.run(greedy)
        assert (await eng.run(nop_program())).ok

    arun(main, capacity=1)


def test_aclose_with_executions_in_flight(arun: Any) -> None:
    """aclose cancels what runs and waits for each to end: the awaiting
    tasks get cancelled completions, later calls EngineClosed."""
    slow = sleep_program(30)

    async def main(eng: ul.AsyncEngine) -> None:
        tasks = [asyncio.create_task(eng.run(slow, tag=i)) for i in range(8)]
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await eng.aclose()
        assert time.monotonic() - t0 < 5
        cs = await asyncio.gather(*tasks)
        assert all(c.cancelled for c in cs) and [c.tag for c in cs] == list(range(8))
        with pytest.raises(ul.EngineClosed):
            await eng.run(slow)
        await eng.aclose()  # idempotent

    arun(main)


def test_made_outside_a_running_loop_is_refused() -> None:
    with pytest.raises(RuntimeError):
        ul.AsyncEngine()


# -- real peers ---------------------------------------------------------------------------
def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _replies(data: bytes) -> int:
    """How many complete RESP replies (simple, integer, error, bulk)
    ``data`` holds."""
    count = at = 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return count
        if data[at : at + 1] == b"$":
            size = int(data[at + 1 : end])
            if size >= 0:
                end += 2 + size
                if len(data) < end + 2:
                    return count
        at = end + 2
        count += 1


class SyslRedis:
    """A small Redis client on an AsyncEngine: one persistent connection
    (a real fd the program takes as a parameter), each request one syslet
    of send + recv, more recvs while a reply is incomplete."""

    def __init__(self, eng: ul.AsyncEngine, port: int) -> None:
        self.eng = eng
        self.sock = socket.create_connection(("127.0.0.1", port))
        s = ul.Syslet()
        fd = ul.Param("fd")
        s.send(fd, ul.Param("request"))
        self.reply = s.recv(fd, 65536, stop=ul.STOP_ON_NON_POSITIVE)
        self.ask = s.compile()
        s = ul.Syslet()
        self.more = s.recv(ul.Param("fd"), 65536, stop=ul.STOP_ON_NON_POSITIVE)
        self.read = s.compile()

    async def call(self, request: bytes, replies: int = 1) -> bytes:
        fd = self.sock.fileno()
        c = await self.eng.run(self.ask, fd=fd, request=request)
        assert c.ok, c
        data: bytes = c[self.reply]
        while _replies(data) < replies:
            c = await self.eng.run(self.read, fd=fd)
            assert c.ok, c
            data += c[self.more]
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis(free_port()) as port:
        yield port


def test_a_redis_client_on_asyncengine_answers_as_redis_py_does(arun: Any, redis_port: int) -> None:
    import redis.asyncio as aioredis

    run_id = os.urandom(8).hex()

    async def main(eng: ul.AsyncEngine) -> None:
        reference = aioredis.Redis(port=redis_port)
        clients = [SyslRedis(eng, redis_port) for _ in range(8)]
        try:

            async def task(i: int) -> None:
                me = clients[i]
                # a fresh key each run (an id() can repeat across parametrized runs)
                key = f"ul-{os.getpid()}-{run_id}-{i}".encode()
                assert await me.call(_resp(b"PING")) == b"+PONG\r\n"
                assert await reference.ping() is True
                assert await me.call(_resp(b"SET", key, b"v%d" % i)) == b"+OK\r\n"
                assert await reference.get(key) == b"v%d" % i
                await reference.set(key + b"r", b"from redis-py %d" % i)
                got = await me.call(_resp(b"GET", key + b"r"))
                want = b"from redis-py %d" % i
                assert got == b"$%d\r\n%s\r\n" % (len(want), want)
                # pipelined: three requests in one send, three replies
                pipe = _resp(b"INCR", key + b"n") * 3
                replies = await me.call(pipe, replies=3)
                assert replies == b":1\r\n:2\r\n:3\r\n"
                assert int(await reference.get(key + b"n")) == 3

            await asyncio.gather(*[task(i) for i in range(8)])
        finally:
            for c in clients:
                c.close()
            await reference.aclose()

    arun(main)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_bytes(b"<h1>uringlets</h1>\n" * 50)
    port = free_port()
    # http.server's own, with a listen backlog for 64 connects at once (its
    # default of 5 drops SYNs, and the kernel retries them seconds later)
    code = (
        "import functools, http.server as h, sys\n"
        "h.ThreadingHTTPServer.request_queue_size = 128\n"
        "handler = functools.partial(h.SimpleHTTPRequestHandler, directory=sys.argv[2])\n"
        "h.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), handler).serve_forever()\n"
    )
    argv = [sys.executable, "-c", code, str(port), str(root)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield port, root
    finally:
        proc.terminate()  # stopped by process id
        proc.wait(10)


def test_http_fetch_chains_from_64_tasks_get_what_curl_gets(
    arun: Any, http_server: tuple[int, Path]
) -> None:
    port, root = http_server
    curl = subprocess.run(
        ["curl", "-s", "--http1.0", f"http://127.0.0.1:{port}/index.html"],
        capture_output=True,
        check=True,
    ).stdout
    assert curl == (root / "index.html").read_bytes()
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, ("127.0.0.1", port))
    s.send(fd, b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    head = s.recv(fd, 65536, flags=socket.MSG_WAITALL, stop=ul.STOP_ON_NEGATIVE)
    s.close(fd)
    fetch = s.compile()

    async def main(eng: ul.AsyncEngine) -> list[bytes]:
        cs = await asyncio.gather(*[eng.run(fetch, tag=i) for i in range(64)])
        assert all(c.ok for c in cs), [c for c in cs if not c.ok][:1]
        return [c[head] for c in cs]

    for response in arun(main, capacity=64):
        status, _, body = response.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.0 200")
        assert body == curl


def test_under_a_seccomp_block_asyncengine_runs_on_threads(tmp_path: Path) -> None:
    """io_uring blocked for real (seccomp, as Docker's default profile):
    AsyncEngine("auto") falls back to the thread engine and says why."""
    code = (
        "import sys, asyncio; sys.path.insert(0, sys.argv[1]); import seccomp_child as s; "
        "s.install_filter(); import uringlets as ul\n"
        "async def main():\n"
        "    async with ul.AsyncEngine() as eng:\n"
        "        t = ul.Syslet(); t.nop(); p = t.compile()\n"
        "        cs = await asyncio.gather(*[eng.run(p, tag=i) for i in range(20)])\n"
        "        print(eng.kind, sorted(c.tag for c in cs) == list(range(20)),"
        " all(c.ok for c in cs), bool(eng.fallback_reason))\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["threads", "True", "True", "True"]
