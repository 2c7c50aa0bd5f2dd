"""asyncio pyperf benchmarks (issue 11): syslets awaited from asyncio tasks
through ``AsyncEngine``, on the default loop and on uvloop.

    python benchmarks/bench_async.py -o results/async.json [--bench NAME ...]

Every value is the time of ONE request / file / execution (rate = 1/value).
The peers that share a shape with these are in bench_net.py (tcp5-asyncio,
tcp5-uvloop, tcp5-c-liburing, rr-asyncio, rr-uvloop, rr-c-liburing: 64
tasks, or the C reference) and here (file3 through the loop's executor and
aiofiles); run them in the same session to compare.

tcp5-async-LOOP   64 tasks, each awaiting LOOPS eng.run(socket+connect+send+recv+close)
                  in turn, against benchmarks/c/echo_server (as tcp5-asyncio)
rr-async-LOOP     64 tasks, one per connected socket, each awaiting LOOPS
                  eng.run(send+recv, fd=...) in turn (as rr-asyncio)
rr-bare-LOOP      the same requests through the least glue any asyncio door over
                  Engine needs: a future as each execution's tag, one submit_many
                  per loop iteration, a reader that sets results; no tickets, no
                  cancellation, no retagging (the floor of AsyncEngine's design)
file3-async-LOOP  64 tasks sharing the 2,000 warm files, each awaiting
                  eng.run(openat+read 4 KiB+close, path=...) in turn
file3-executor-LOOP  the same 64 tasks, each awaiting loop.run_in_executor(None,
                  open/read/close) (the loop's default executor)
file3-aiofiles-LOOP  the same 64 tasks with aiofiles (PyPI): async with
                  aiofiles.open(path, "rb") as f: await f.read(4096)
nop1-async-LOOP   one task awaiting eng.run(1 nop) in a loop (next to nop1-uringlets,
                  the sync run() of bench_core)
redis-async-LOOP  64 tasks, each with its own connection to a redis-server (Debian's,
                  started per worker process on a free port, stopped by process id),
                  each awaiting LOOPS GETs in turn: one syslet of send + recv per GET
redis-py-LOOP     the same 64 tasks with redis-py's asyncio client (redis.asyncio,
                  with hiredis when it is installed), a pool of 64 connections
call-async-LOOP   64 tasks, each awaiting LOOPS eng.call(f) of a small function
call-executor-LOOP  the same with loop.run_in_executor(None, f)
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiofiles
import bench_core
import bench_net
import pyperf
import redis.asyncio as aioredis
import uvloop
import workloads as wl

import uringlets as ul

BATCH = wl.BATCH  # tasks
SIZE = wl.FILE_SIZE
perf_counter = time.perf_counter
LOOPS = ("asyncio", "uvloop")


@functools.cache
def loop_and_engine(kind: str) -> tuple[asyncio.AbstractEventLoop, ul.AsyncEngine]:
    """One event loop of ``kind`` per worker process and an AsyncEngine made
    in it (io_uring), kept for every timed call."""
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()

    async def make() -> ul.AsyncEngine:
        return ul.AsyncEngine("uring", capacity=1024)

    eng = loop.run_until_complete(make())
    if eng.kind != "uring":
        raise RuntimeError(f"expected the io_uring engine, got {eng.kind!r}")

    def close() -> None:
        loop.run_until_complete(eng.aclose())
        loop.close()

    atexit.register(close)
    return loop, eng


def timed(kind: str, main: Callable[[ul.AsyncEngine], Awaitable[None]]) -> float:
    loop, eng = loop_and_engine(kind)
    t0 = perf_counter()
    loop.run_until_complete(main(eng))
    return perf_counter() - t0


def time_tcp5_async(loops: int, kind: str) -> float:
    prog, got = bench_net.tcp5()
    errors = bench_net.Errors(f"tcp5-async-{kind}")

    async def task(eng: ul.AsyncEngine) -> None:
        run = eng.run
        for _ in range(loops):
            c = await run(prog)
            if not c.ok or c[got] != wl.MESSAGE:
                errors.add(c)

    async def main(eng: ul.AsyncEngine) -> None:
        await asyncio.gather(*(task(eng) for _ in range(BATCH)))

    elapsed = timed(kind, main)
    errors.check(loops * BATCH)
    return elapsed


def per_connection(
    name: str, loops: int, kind: str, prog: ul.Program, ref: ul.Ref, want: bytes, fds: list[int]
) -> float:
    """One task per connected fd, each awaiting ``loops`` executions of
    ``prog`` (which takes ``fd``) in turn; the value of ``ref`` must be ``want``."""
    errors = bench_net.Errors(name)

    async def task(eng: ul.AsyncEngine, fd: int) -> None:
        run = eng.run
        for _ in range(loops):
            c = await run(prog, fd=fd)
            if not c.ok or c[ref] != want:
                errors.add(c)

    async def main(eng: ul.AsyncEngine) -> None:
        await asyncio.gather(*(task(eng, fd) for fd in fds))

    elapsed = timed(kind, main)
    errors.check(loops * len(fds))
    return elapsed


def time_rr_async(loops: int, kind: str) -> float:
    prog, got = bench_net.rr()
    fds = [s.fileno() for s in bench_net.rr_sockets(True)]
    return per_connection(f"rr-async-{kind}", loops, kind, prog, got, wl.MESSAGE, fds)


def time_rr_bare(loops: int, kind: str) -> float:
    """rr through the least glue over ``Engine`` (see the module docstring)."""
    prog, got = bench_net.rr()
    fds = [s.fileno() for s in bench_net.rr_sockets(True)]
    loop, aeng = loop_and_engine(kind)
    eng = aeng._engine  # the AsyncEngine's reader stays; its drains find nothing of ours
    submit_many, wait = eng.submit_many, eng.wait
    queued: list[tuple[dict[str, int], asyncio.Future[ul.Completion]]] = []
    errors = bench_net.Errors(f"rr-bare-{kind}")

    def drain() -> None:
        for c in wait(0):
            c.tag.set_result(c)

    def flush() -> None:
        batch = queued[:]
        queued.clear()
        submit_many(prog, params=[p for p, _ in batch], tags=[f for _, f in batch], block=False)
        drain()

    def run(fd: int) -> asyncio.Future[ul.Completion]:
        future = loop.create_future()
        if not queued:
            loop.call_soon(flush)
        queued.append(({"fd": fd}, future))
        return future

    async def task(fd: int) -> None:
        for _ in range(loops):
            c = await run(fd)
            if not c.ok or c[got] != wl.MESSAGE:
                errors.add(c)

    async def main(_: Any) -> None:
        await asyncio.gather(*(task(fd) for fd in fds))

    loop.remove_reader(aeng._fd)
    loop.add_reader(aeng._fd, drain)
    try:
        elapsed = timed(kind, main)
    finally:
        loop.remove_reader(aeng._fd)
        loop.add_reader(aeng._fd, aeng._drain)
    errors.check(loops * len(fds))
    return elapsed


def _file_tasks(
    loops: int, one: Callable[[bytes], Awaitable[int]]
) -> Callable[[Any], Awaitable[None]]:
    """64 tasks taking the next of ``loops`` passes over the files in turn;
    ``one(path)`` returns the byte count read."""
    paths = bench_core.files()
    total = loops * len(paths)
    taken = [0]
    short: list[int] = []

    async def task() -> None:
        while taken[0] < total:
            i = taken[0]
            taken[0] = i + 1
            n = await one(paths[i % len(paths)])
            if n != SIZE:
                short.append(n)

    async def main(_: Any) -> None:
        await asyncio.gather(*(task() for _ in range(BATCH)))
        if short:
            raise RuntimeError(f"{len(short)} short or failed reads, first {short[:3]}")

    return main


def time_file3_async(loops: int, kind: str) -> float:
    prog, data = bench_core.file3()
    _, eng = loop_and_engine(kind)
    run = eng.run

    async def one(path: bytes) -> int:
        c = await run(prog, path=path)
        return len(c[data]) if c.ok else -1

    return timed(kind, _file_tasks(loops, one))


def time_file3_executor(loops: int, kind: str) -> float:
    loop, _ = loop_and_engine(kind)

    async def one(path: bytes) -> int:
        return len(await loop.run_in_executor(None, bench_core.read_file, path))

    return timed(kind, _file_tasks(loops, one))


def time_file3_aiofiles(loops: int, kind: str) -> float:
    async def one(path: bytes) -> int:
        async with aiofiles.open(path, "rb") as f:
            return len(await f.read(SIZE))

    return timed(kind, _file_tasks(loops, one))


def time_nop1_async(loops: int, kind: str) -> float:
    prog = bench_core.nop1()

    async def main(eng: ul.AsyncEngine) -> None:
        run = eng.run
        for _ in range(loops):
            c = await run(prog)
            if not c.ok:
                raise RuntimeError(f"nop1-async: {c!r}")

    return timed(kind, main)


# -- redis GET ------------------------------------------------------------------------
REDIS_KEY, REDIS_VALUE = b"uringlets-bench", b"v" * 64
REDIS_REPLY = b"$%d\r\n%s\r\n" % (len(REDIS_VALUE), REDIS_VALUE)
GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(REDIS_KEY), REDIS_KEY)


@functools.cache
def redis_port() -> int:
    """A redis-server of this worker process's own, with the key set."""
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is missing: bash scripts/setup.sh bench installs it")
    with socket.socket() as s:
        s.bind((wl.LOCALHOST, 0))
        port = int(s.getsockname()[1])
    argv = [exe, "--port", str(port), "--bind", wl.LOCALHOST, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:  # by process id
        proc.terminate()
        proc.wait(5)

    atexit.register(stop)
    for _ in range(500):
        try:
            with socket.create_connection((wl.LOCALHOST, port), 0.2) as c:
                c.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                    len(REDIS_KEY), REDIS_KEY, len(REDIS_VALUE), REDIS_VALUE))  # fmt: skip
                if c.recv(16) == b"+OK\r\n":
                    return port
        except OSError:
            time.sleep(0.01)
    sys.exit(f"redis-server did not start on port {port}")


@functools.cache
def redis_sockets() -> list[socket.socket]:
    socks = []
    for _ in range(BATCH):
        sock = socket.create_connection((wl.LOCALHOST, redis_port()))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    atexit.register(lambda: [s.close() for s in socks])
    return socks


@functools.cache
def redis_get() -> tuple[ul.Program, ul.Ref]:
    """send(GET key) + recv: the reply (a 64 B value) comes in one segment."""
    s = ul.Syslet()
    fd = ul.Param("fd")
    s.send(fd, GET)
    reply = s.recv(fd, 4096, stop=ul.STOP_ON_NON_POSITIVE)
    return s.compile(), reply


def time_redis_async(loops: int, kind: str) -> float:
    prog, reply = redis_get()
    fds = [s.fileno() for s in redis_sockets()]
    return per_connection(f"redis-async-{kind}", loops, kind, prog, reply, REDIS_REPLY, fds)


@functools.cache
def redis_py_client(kind: str) -> Any:
    loop, _ = loop_and_engine(kind)
    client = aioredis.Redis(host=wl.LOCALHOST, port=redis_port(), max_connections=BATCH)
    atexit.register(lambda: loop.run_until_complete(client.aclose()))
    return client


def time_redis_py(loops: int, kind: str) -> float:
    client = redis_py_client(kind)
    errors = bench_net.Errors(f"redis-py-{kind}")

    async def task() -> None:
        get = client.get
        for _ in range(loops):
            if await get(REDIS_KEY) != REDIS_VALUE:
                errors.add("wrong value")

    async def main(_: Any) -> None:
        await asyncio.gather(*(task() for _ in range(BATCH)))

    elapsed = timed(kind, main)
    errors.check(loops * BATCH)
    return elapsed


# -- threadlets -------------------------------------------------------------------------
def small(x: int = 3) -> int:
    return x * x


def time_call_async(loops: int, kind: str) -> float:
    async def task(eng: ul.AsyncEngine) -> None:
        call = eng.call
        for _ in range(loops):
            if await call(small) != 9:
                raise RuntimeError("call-async: wrong value")

    async def main(eng: ul.AsyncEngine) -> None:
        await asyncio.gather(*(task(eng) for _ in range(BATCH)))

    return timed(kind, main)


def time_call_executor(loops: int, kind: str) -> float:
    loop, _ = loop_and_engine(kind)

    async def task() -> None:
        run_in_executor = loop.run_in_executor
        for _ in range(loops):
            if await run_in_executor(None, small) != 9:
                raise RuntimeError("call-executor: wrong value")

    async def main(_: Any) -> None:
        await asyncio.gather(*(task() for _ in range(BATCH)))

    return timed(kind, main)


KINDS: dict[str, tuple[Callable[..., float], int, str]] = {
    "tcp5-async": (time_tcp5_async, BATCH, "request"),
    "rr-async": (time_rr_async, BATCH, "request"),
    "rr-bare": (time_rr_bare, BATCH, "request"),
    "file3-async": (time_file3_async, wl.NFILES, "file"),
    "file3-executor": (time_file3_executor, wl.NFILES, "file"),
    "file3-aiofiles": (time_file3_aiofiles, wl.NFILES, "file"),
    "nop1-async": (time_nop1_async, 1, "execution"),
    "redis-async": (time_redis_async, BATCH, "request"),
    "redis-py": (time_redis_py, BATCH, "request"),
    "call-async": (time_call_async, BATCH, "call"),
    "call-executor": (time_call_executor, BATCH, "call"),
}
BENCHMARKS = {f"{name}-{loop}": (name, loop) for name in KINDS for loop in LOOPS}


def add_cmdline_args(cmd: list[str], args: Any) -> None:
    for name in args.bench or ():
        cmd.extend(("--bench", name))


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument(
        "--bench", action="append", choices=sorted(BENCHMARKS), help="run only this one"
    )
    args = runner.parse_args()
    if not args.worker:
        wl.build_c_ref()
        wl.ensure_files()
    elif not wl.ECHO_SERVER.exists():
        sys.exit(f"{wl.ECHO_SERVER} is missing: run make -C {wl.C_DIR}")
    runner.metadata.update(bench_core.git_metadata())
    runner.metadata["uringlets_version"] = ul.__version__
    runner.metadata["tasks"] = BATCH
    runner.metadata["default_executor_workers"] = min(32, (os.cpu_count() or 1) + 4)
    for name, (kind, loop) in BENCHMARKS.items():
        if args.bench and name not in args.bench:
            continue
        func, inner, unit = KINDS[kind]
        runner.bench_time_func(
            name, func, loop, inner_loops=inner, metadata={"unit_of_work": unit, "loop": loop}
        )


if __name__ == "__main__":
    main()
