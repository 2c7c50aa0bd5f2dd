"""Core pyperf benchmarks: uringlets against plain Python, thread pools, asyncio,
uvloop, python-liburing and C/liburing.

    python benchmarks/bench_core.py -o results.json [--fast] [--bench NAME ...] [--cold]

Every value is the time of ONE execution (nop4, nop1) or ONE file (file3,
file1, file3-refill), so a rate is 1/value:

nop4-uringlets      one loop = submit_many(nop4, 64) + wait(64), every completion checked ok
nop4-pyliburing     python-liburing 2024.5.3: 64 x 4 get_sqe/prep_nop per loop, one
                    submit_and_wait, wait_cqe/cqe_seen per CQE (see pyliburing_peer.py)
nop4-c-liburing     benchmarks/c/uring_ref nop4 LOOPS 64 (its own clock, no process start)
file3-uringlets     one loop = one pass over the 2,000 files in batches of 64 executions
                    (params per path); every completion checked ok and 4096 bytes read
file3-plain         one loop = os.open / os.read(4096) / os.close of each file in turn
file3-threadpool    one loop = ThreadPoolExecutor.map(open/read/close, files)
file3-asyncio       one loop = per batch of 64 files, asyncio.gather of
                    loop.run_in_executor(None, open/read/close, path): the loop's default
                    executor (ThreadPoolExecutor, min(32, cores + 4) = 6 threads here)
file3-uvloop        the same coroutine on a uvloop event loop
file3-pyliburing    python-liburing: openat_direct -> read -> close_direct chains, 64 per submit
file3-c-liburing    benchmarks/c/uring_ref file3 LOOPS DIR 2000 64 (same batches of 64)
file3-uringlets-threads   the file3-uringlets loop on Engine("threads", workers=2)
file3-threadpool-batched  what that engine does, written by hand: ThreadPoolExecutor(2), per
                    batch of 64 files pool.submit(open/read/close) each, then every result

The application shapes (issue 10): one call at a time, and refilling as
completions arrive, instead of batches of 64 in step:

nop1-uringlets      one loop = one eng.run(1-nop program), its completion checked ok
nop1-c-liburing     benchmarks/c/uring_ref nop1 LOOPS: one NOP per io_uring_submit_and_wait
nop1-pyliburing     python-liburing: get_sqe/prep_nop, submit_and_wait(1), wait_cqe/cqe_seen
file1-uringlets     one loop = one pass over the 2,000 files, one eng.run(file3, path=p)
                    per file, each completion checked ok and 4096 bytes read
file1-c-liburing    benchmarks/c/uring_ref file1 LOOPS DIR 2000: the file3 chain, one per
                    io_uring_submit_and_wait
                    (file1's plain peer is file3-plain: the plain loop is one at a time)
file3-refill-uringlets  one loop = one pass over the 2,000 files with 64 executions in
                    flight: eng.submit 64, then for every completion wait(1) returns,
                    check it (ok, 4096 bytes) and eng.submit the next file; never more
                    than 64 in flight (the loop counts them itself)
file3-refill-uringlets-many  the same refill, but the completions one wait(1) returned are
                    replaced by one submit_many (as rr-uringlets does): what batching buys
file3-refill-c-liburing  benchmarks/c/uring_ref file3refill LOOPS DIR 2000 64: the same
                    refill, each CQE's slot requeued, one submit_and_wait(1) per round
                    (file3-refill's plain peer is file3-plain too)

The files are warm (read once before measuring).  ``--cold`` runs instead
file3cold-uringlets/-plain/-threadpool/-c-liburing: the same passes, each
preceded (outside the timed part) by ``sync; echo 3 > /proc/sys/vm/drop_caches``,
so every open and read goes to the disk; it needs root and a file set not on
tmpfs, and exits with status 3 and the reason when either is missing.

Thread pool size: ``max_workers=2`` by default, the machine's core count
(``--threadpool-workers N`` to try others).  On the 2-core machine, --fast runs
gave 25-28 us per file with 2 workers and 24-40 us with 4 (35 us with 1): 4 is
no faster and noisier.  Warm open/read/close is CPU work, not waiting, so
threads beyond the cores only add switching and GIL hand-offs; the pool's cost
is dominated by one future and two queue hand-offs per file either way.
file3-threadpool-batched always uses 2, like the thread engine it is compared with.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyliburing_peer
import pyperf
import uvloop
import workloads as wl

import uringlets as ul

BATCH = wl.BATCH
SIZE = wl.FILE_SIZE
THREAD_ENGINE_WORKERS = 2  # Engine("threads", workers=2) and its hand-written peer
perf_counter = time.perf_counter


def _fail(what: str, detail: object) -> None:
    raise RuntimeError(f"{what}: {detail!r}")


# -- lazily made, once per worker process, outside the timed loops -------------------
@functools.cache
def engine() -> ul.Engine:
    eng = ul.Engine(engine="uring", capacity=1024)
    if eng.kind != "uring":
        raise RuntimeError(f"expected the io_uring engine, got {eng.kind!r}")
    return eng


@functools.cache
def thread_engine() -> ul.Engine:
    eng = ul.Engine(engine="threads", capacity=1024, workers=THREAD_ENGINE_WORKERS)
    if eng.kind != "threads":
        raise RuntimeError(f"expected the thread engine, got {eng.kind!r}")
    return eng


@functools.cache
def nop4() -> ul.Program:
    return wl.nop4_program()


@functools.cache
def file3() -> tuple[ul.Program, ul.Ref]:
    return wl.file3_program()


@functools.cache
def files() -> list[bytes]:
    paths = wl.ensure_files()
    wl.warm(paths)
    return paths


@functools.cache
def file3_batches(batch: int = BATCH) -> list[list[dict[str, bytes]]]:
    params = [{"path": p} for p in files()]
    return [params[i : i + batch] for i in range(0, len(params), batch)]


@functools.cache
def path_batches() -> list[list[bytes]]:
    paths = files()
    return [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]


@functools.cache
def event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """An asyncio or uvloop loop whose default executor has started its threads."""
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    atexit.register(loop.close)

    async def start() -> None:
        await asyncio.gather(*(loop.run_in_executor(None, read_file, p) for p in files()[:64]))

    loop.run_until_complete(start())
    return loop


def default_executor_workers() -> int:
    """max_workers of the default executor asyncio makes (Python 3.8+)."""
    return min(32, (os.cpu_count() or 1) + 4)


@functools.cache
def thread_pool(workers: int) -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(max_workers=workers)
    list(pool.map(read_file, files()[: 4 * workers]))  # start the threads
    return pool


def read_file(path: bytes) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, SIZE)
    finally:
        os.close(fd)


# -- nop4 -------------------------------------------------------------------------------
def run_nop(loops: int, prog: ul.Program, batch: int, eng: ul.Engine | None = None) -> float:
    """``loops`` batches of ``batch`` executions of a program of no-ops."""
    eng = eng or engine()
    submit_many, wait = eng.submit_many, eng.wait
    t0 = perf_counter()
    for _ in range(loops):
        submit_many(prog, batch)
        done = wait(batch)
        if len(done) != batch:
            _fail("nop: completions", len(done))
        for c in done:
            if not c.ok:
                _fail("nop: failed", c)
    return perf_counter() - t0


def time_nop4_uringlets(loops: int) -> float:
    return run_nop(loops, nop4(), BATCH)


def time_nop4_c(loops: int) -> float:
    return wl.c_ref_seconds("nop4", loops * BATCH)


def time_nop4_pyliburing(loops: int) -> float:
    pyliburing_peer.ring()
    t0 = perf_counter()
    pyliburing_peer.run_nop4(loops)
    return perf_counter() - t0


# -- nop1: one run() at a time -----------------------------------------------------------
@functools.cache
def nop1() -> ul.Program:
    return wl.nop_program(1)


def time_nop1_uringlets(loops: int) -> float:
    eng, prog = engine(), nop1()
    run = eng.run
    t0 = perf_counter()
    for _ in range(loops):
        c = run(prog)
        if not c.ok:
            _fail("nop1: failed", c)
    return perf_counter() - t0


def time_nop1_c(loops: int) -> float:
    return wl.c_ref_seconds("nop1", loops)


def time_nop1_pyliburing(loops: int) -> float:
    pyliburing_peer.ring()
    t0 = perf_counter()
    pyliburing_peer.run_nop1(loops)
    return perf_counter() - t0


# -- file3 ------------------------------------------------------------------------------
def time_file3_uringlets(loops: int, eng: ul.Engine | None = None, batch: int = BATCH) -> float:
    eng, (prog, data), batches = eng or engine(), file3(), file3_batches(batch)
    submit_many, wait = eng.submit_many, eng.wait
    t0 = perf_counter()
    for _ in range(loops):
        for params in batches:
            submit_many(prog, params=params)
            done = wait(len(params))
            if len(done) != len(params):
                _fail("file3: completions", len(done))
            for c in done:
                if not c.ok or len(c[data]) != SIZE:
                    _fail("file3: failed or short", c)
    return perf_counter() - t0


def time_file3_plain(loops: int) -> float:
    paths = files()
    os_open, os_read, os_close, rdonly = os.open, os.read, os.close, os.O_RDONLY
    t0 = perf_counter()
    for _ in range(loops):
        for p in paths:
            fd = os_open(p, rdonly)
            try:
                buf = os_read(fd, SIZE)
            finally:
                os_close(fd)
            if len(buf) != SIZE:
                _fail("file3-plain: short read", p)
    return perf_counter() - t0


def time_file3_threadpool(loops: int, workers: int) -> float:
    paths, pool = files(), thread_pool(workers)
    t0 = perf_counter()
    for _ in range(loops):
        for buf in pool.map(read_file, paths):
            if len(buf) != SIZE:
                _fail("file3-threadpool: short read", len(buf))
    return perf_counter() - t0


def time_file3_c(loops: int) -> float:
    files()  # the same warm file set
    return wl.c_ref_seconds("file3", loops * wl.NFILES)


def time_file3_uringlets_threads(loops: int) -> float:
    return time_file3_uringlets(loops, thread_engine())


def time_file3_threadpool_batched(loops: int) -> float:
    batches, pool = path_batches(), thread_pool(THREAD_ENGINE_WORKERS)
    submit = pool.submit
    t0 = perf_counter()
    for _ in range(loops):
        for paths in batches:
            futures = [submit(read_file, p) for p in paths]
            for f in futures:
                if len(f.result()) != SIZE:
                    _fail("file3-threadpool-batched: short read", f.result())
    return perf_counter() - t0


def time_file3_loop(loops: int, kind: str) -> float:
    loop, batches = event_loop(kind), path_batches()

    async def main() -> None:
        run_in_executor, gather = loop.run_in_executor, asyncio.gather
        for _ in range(loops):
            for paths in batches:
                for buf in await gather(*[run_in_executor(None, read_file, p) for p in paths]):
                    if len(buf) != SIZE:
                        _fail(f"file3-{kind}: short read", len(buf))

    t0 = perf_counter()
    loop.run_until_complete(main())
    return perf_counter() - t0


def time_file3_pyliburing(loops: int) -> float:
    batches = path_batches()
    pyliburing_peer.ring()
    t0 = perf_counter()
    pyliburing_peer.run_file3(loops, batches)
    return perf_counter() - t0


# -- file1: one run() of file3 at a time ------------------------------------------------
def time_file1_uringlets(loops: int) -> float:
    eng, (prog, data), paths = engine(), file3(), files()
    run = eng.run
    t0 = perf_counter()
    for _ in range(loops):
        for p in paths:
            c = run(prog, path=p)
            if not c.ok or len(c[data]) != SIZE:
                _fail("file1: failed or short", c)
    return perf_counter() - t0


def time_file1_c(loops: int) -> float:
    files()  # the same warm file set
    return wl.c_ref_seconds("file1", loops * wl.NFILES)


# -- file3-refill: 64 in flight, one submit per completion -----------------------------
REFILL = BATCH  # executions in flight


def time_file3_refill_uringlets(loops: int) -> float:
    """``loops`` passes over the files, ``REFILL`` executions in flight: each
    completion is checked and replaced at once by one ``submit`` of the next
    file.  The loop keeps the count itself, so it never has more than
    ``REFILL`` in flight, whatever the engine's capacity."""
    eng, (prog, data), paths = engine(), file3(), files()
    submit, wait = eng.submit, eng.wait
    nfiles = len(paths)
    total = loops * nfiles
    t0 = perf_counter()
    nxt = in_flight = 0
    while in_flight < REFILL and nxt < total:
        submit(prog, path=paths[nxt % nfiles])
        nxt += 1
        in_flight += 1
    while in_flight:
        done = wait(1)
        if not done:
            _fail("file3-refill: wait(1) returned nothing", in_flight)
        for c in done:
            if not c.ok or len(c[data]) != SIZE:
                _fail("file3-refill: failed or short", c)
            in_flight -= 1
            if nxt < total:
                submit(prog, path=paths[nxt % nfiles])
                nxt += 1
                in_flight += 1
    return perf_counter() - t0


def time_file3_refill_uringlets_many(loops: int) -> float:
    """The same refill, but the completions one ``wait(1)`` returns are
    replaced by one ``submit_many`` (as rr-uringlets does), not one
    ``submit`` each: what batching the refill buys."""
    eng, (prog, data), paths = engine(), file3(), files()
    submit_many, wait = eng.submit_many, eng.wait
    params = [{"path": p} for p in paths]
    nfiles = len(params)
    total = loops * nfiles
    t0 = perf_counter()
    nxt = in_flight = 0
    while in_flight < REFILL and nxt < total:
        n = min(REFILL - in_flight, total - nxt, nfiles - nxt % nfiles)
        submit_many(prog, params=params[nxt % nfiles : nxt % nfiles + n])
        nxt += n
        in_flight += n
    while in_flight:
        done = wait(1)
        if not done:
            _fail("file3-refill-many: wait(1) returned nothing", in_flight)
        for c in done:
            if not c.ok or len(c[data]) != SIZE:
                _fail("file3-refill-many: failed or short", c)
        in_flight -= len(done)
        free = len(done)
        while free and nxt < total:
            n = min(free, total - nxt, nfiles - nxt % nfiles)  # a slice of the file list
            submit_many(prog, params=params[nxt % nfiles : nxt % nfiles + n])
            nxt += n
            in_flight += n
            free -= n
    return perf_counter() - t0


def time_file3_refill_c(loops: int) -> float:
    files()
    return wl.c_ref_seconds("file3refill", loops * wl.NFILES, batch=REFILL)


# -- file3, cold: the page cache dropped before each pass ------------------------------
def cold_passes(loops: int, one_pass: Callable[[], object]) -> float:
    """Run ``one_pass()`` ``loops`` times, each after dropping the caches;
    returns the seconds of the passes only (not of the drops)."""
    elapsed = 0.0
    for _ in range(loops):
        wl.drop_caches()
        t0 = perf_counter()
        one_pass()
        elapsed += perf_counter() - t0
    return elapsed


def time_file3cold_uringlets(loops: int) -> float:
    engine(), file3(), file3_batches()
    return cold_passes(loops, lambda: time_file3_uringlets(1))


def time_file3cold_plain(loops: int) -> float:
    files()
    return cold_passes(loops, lambda: time_file3_plain(1))


def time_file3cold_threadpool(loops: int, workers: int) -> float:
    thread_pool(workers)
    return cold_passes(loops, lambda: time_file3_threadpool(1, workers))


def time_file3cold_c(loops: int) -> float:
    files()
    elapsed = 0.0
    for _ in range(loops):
        wl.drop_caches()
        elapsed += wl.c_ref_seconds("file3", wl.NFILES)  # its own clock, after process start
    return elapsed


# -- runner -----------------------------------------------------------------------------
BENCHMARKS = {
    # name: (time function, inner loops, unit of one value)
    "nop4-uringlets": (time_nop4_uringlets, BATCH, "execution"),
    "nop4-c-liburing": (time_nop4_c, BATCH, "execution"),
    "nop4-pyliburing": (time_nop4_pyliburing, BATCH, "execution"),
    "nop1-uringlets": (time_nop1_uringlets, 1, "execution"),
    "nop1-c-liburing": (time_nop1_c, 1, "execution"),
    "nop1-pyliburing": (time_nop1_pyliburing, 1, "execution"),
    "file3-uringlets": (time_file3_uringlets, wl.NFILES, "file"),
    "file3-plain": (time_file3_plain, wl.NFILES, "file"),
    "file3-threadpool": (time_file3_threadpool, wl.NFILES, "file"),
    "file3-asyncio": (time_file3_loop, wl.NFILES, "file"),
    "file3-uvloop": (time_file3_loop, wl.NFILES, "file"),
    "file3-pyliburing": (time_file3_pyliburing, wl.NFILES, "file"),
    "file3-c-liburing": (time_file3_c, wl.NFILES, "file"),
    "file3-uringlets-threads": (time_file3_uringlets_threads, wl.NFILES, "file"),
    "file3-threadpool-batched": (time_file3_threadpool_batched, wl.NFILES, "file"),
    "file1-uringlets": (time_file1_uringlets, wl.NFILES, "file"),
    "file1-c-liburing": (time_file1_c, wl.NFILES, "file"),
    "file3-refill-uringlets": (time_file3_refill_uringlets, wl.NFILES, "file"),
    "file3-refill-uringlets-many": (time_file3_refill_uringlets_many, wl.NFILES, "file"),
    "file3-refill-c-liburing": (time_file3_refill_c, wl.NFILES, "file"),
}
COLD_BENCHMARKS = {
    "file3cold-uringlets": (time_file3cold_uringlets, wl.NFILES, "file"),
    "file3cold-plain": (time_file3cold_plain, wl.NFILES, "file"),
    "file3cold-threadpool": (time_file3cold_threadpool, wl.NFILES, "file"),
    "file3cold-c-liburing": (time_file3cold_c, wl.NFILES, "file"),
}
PYLIBURING = {"nop4-pyliburing", "nop1-pyliburing", "file3-pyliburing"}
EXIT_COLD_UNAVAILABLE = 3


def add_cmdline_args(cmd: list[str], args: object) -> None:
    """Forward this script's own options to the pyperf worker processes."""
    for name in args.bench or ():
        cmd.extend(("--bench", name))
    cmd.extend(("--threadpool-workers", str(args.threadpool_workers)))
    if args.cold:
        cmd.append("--cold")


def git_metadata() -> dict[str, str]:
    """The commit the measured uringlets tree is at, and whether it differs
    (read-only git commands)."""
    root = str(wl.HERE.parent)
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", root, "diff", "--quiet", "HEAD", "--", "uringlets"],
                capture_output=True,
                check=False,
            ).returncode
            != 0
        )
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"uringlets_commit": head + ("+dirty" if dirty else "")}


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args, processes=10)
    runner.argparser.add_argument(
        "--bench",
        action="append",
        choices=sorted({**BENCHMARKS, **COLD_BENCHMARKS}),
        help="run only this benchmark (repeatable; default: all of the set)",
    )
    runner.argparser.add_argument(
        "--cold",
        action="store_true",
        help="run the cold-cache file3 set (root; drops the page cache before each pass)",
    )
    runner.argparser.add_argument(
        "--threadpool-workers",
        type=int,
        default=2,
        help="max_workers of file3-threadpool (default: 2, the core count it was tuned on)",
    )
    args = runner.parse_args()
    table = COLD_BENCHMARKS if args.cold else BENCHMARKS
    selected = [name for name in table if not args.bench or name in args.bench]
    if not args.worker:
        # Once, in the parent: build the reference, make the files, check the peers.
        wl.build_c_ref()
        wl.ensure_files()
        if args.cold and (why := wl.cold_unavailable()):
            print(f"cold file3 skipped: {why}", file=sys.stderr)
            sys.exit(EXIT_COLD_UNAVAILABLE)
        if PYLIBURING & set(selected) and (why := pyliburing_peer.status()):
            print(f"python-liburing skipped: {why}", file=sys.stderr)
            selected = [name for name in selected if name not in PYLIBURING]
            runner.metadata["pyliburing_skipped"] = why
    elif not wl.C_REF.exists():
        sys.exit(f"{wl.C_REF} is missing: run make -C {wl.C_DIR}")

    runner.metadata.update(git_metadata())
    runner.metadata["uringlets_version"] = ul.__version__
    runner.metadata["bench_files"] = f"{wl.NFILES} x {SIZE} B in {wl.bench_dir()}"
    runner.metadata["batch"] = BATCH
    if args.cold:
        runner.metadata["cold"] = (
            f"sync; echo 3 > /proc/sys/vm/drop_caches before each pass; files on "
            f"{wl.fs_type(wl.bench_dir())}"
        )

    for name in selected:
        func, inner_loops, unit = table[name]
        extra: tuple[int | str, ...] = ()
        metadata: dict[str, object] = {"unit_of_work": unit}
        if name in ("file3-threadpool", "file3cold-threadpool"):
            extra = (args.threadpool_workers,)
            metadata["threadpool_workers"] = args.threadpool_workers
        elif name == "file3-uringlets-threads":
            metadata["engine_workers"] = THREAD_ENGINE_WORKERS
        elif name in ("file3-asyncio", "file3-uvloop"):
            extra = (name.split("-")[1],)
            metadata["threadpool_workers"] = default_executor_workers()
        elif name in PYLIBURING:
            metadata["pyliburing"] = f"liburing=={pyliburing_peer.PIN}"
        runner.bench_time_func(name, func, *extra, inner_loops=inner_loops, metadata=metadata)


if __name__ == "__main__":
    main()
