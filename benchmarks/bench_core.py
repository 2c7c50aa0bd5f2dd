"""Core pyperf benchmarks: uringlets against plain Python, a thread pool and C/liburing.

    python benchmarks/bench_core.py -o results.json [--fast] [--bench NAME ...]

Every value is the time of ONE execution (nop4) or ONE file (file3), so a
rate is 1/value:

nop4-uringlets      one loop = submit_many(nop4, 64) + wait(64), every completion checked ok
nop4-c-liburing     benchmarks/c/uring_ref nop4 LOOPS 64 (its own clock, no process start)
file3-uringlets     one loop = one pass over the 2,000 files in batches of 64 executions
                    (params per path); every completion checked ok and 4096 bytes read
file3-plain         one loop = os.open / os.read(4096) / os.close of each file in turn
file3-threadpool    one loop = ThreadPoolExecutor.map(open/read/close, files)
file3-c-liburing    benchmarks/c/uring_ref file3 LOOPS DIR 2000 64 (same batches of 64)

The files are warm (read once before measuring).

Thread pool size: ``max_workers=2`` by default, the machine's core count
(``--threadpool-workers N`` to try others).  On the 2-core machine, --fast runs
gave 25-28 us per file with 2 workers and 24-40 us with 4 (35 us with 1): 4 is
no faster and noisier.  Warm open/read/close is CPU work, not waiting, so
threads beyond the cores only add switching and GIL hand-offs; the pool's cost
is dominated by one future and two queue hand-offs per file either way.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pyperf
import workloads as wl

import uringlets as ul

BATCH = wl.BATCH
SIZE = wl.FILE_SIZE
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
def file3_batches() -> list[list[dict[str, bytes]]]:
    params = [{"path": p} for p in files()]
    return [params[i : i + BATCH] for i in range(0, len(params), BATCH)]


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
def time_nop4_uringlets(loops: int) -> float:
    eng, prog = engine(), nop4()
    submit_many, wait = eng.submit_many, eng.wait
    t0 = perf_counter()
    for _ in range(loops):
        submit_many(prog, BATCH)
        done = wait(BATCH)
        if len(done) != BATCH:
            _fail("nop4: completions", len(done))
        for c in done:
            if not c.ok:
                _fail("nop4: failed", c)
    return perf_counter() - t0


def time_nop4_c(loops: int) -> float:
    return wl.c_ref_seconds("nop4", loops * BATCH)


# -- file3 ------------------------------------------------------------------------------
def time_file3_uringlets(loops: int) -> float:
    eng, (prog, data), batches = engine(), file3(), file3_batches()
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


# -- runner -----------------------------------------------------------------------------
BENCHMARKS = {
    # name: (time function, inner loops, unit of one value)
    "nop4-uringlets": (time_nop4_uringlets, BATCH, "execution"),
    "nop4-c-liburing": (time_nop4_c, BATCH, "execution"),
    "file3-uringlets": (time_file3_uringlets, wl.NFILES, "file"),
    "file3-plain": (time_file3_plain, wl.NFILES, "file"),
    "file3-threadpool": (time_file3_threadpool, wl.NFILES, "file"),
    "file3-c-liburing": (time_file3_c, wl.NFILES, "file"),
}


def add_cmdline_args(cmd: list[str], args: object) -> None:
    """Forward this script's own options to the pyperf worker processes."""
    for name in args.bench or ():
        cmd.extend(("--bench", name))
    cmd.extend(("--threadpool-workers", str(args.threadpool_workers)))


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
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument(
        "--bench",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable; default: all)",
    )
    runner.argparser.add_argument(
        "--threadpool-workers",
        type=int,
        default=2,
        help="max_workers of file3-threadpool (default: 2, the core count it was tuned on)",
    )
    args = runner.parse_args()
    if not args.worker:
        # Once, in the parent: build the reference, make the files.
        wl.build_c_ref()
        wl.ensure_files()
    elif not wl.C_REF.exists():
        sys.exit(f"{wl.C_REF} is missing: run make -C {wl.C_DIR}")

    runner.metadata.update(git_metadata())
    runner.metadata["uringlets_version"] = ul.__version__
    runner.metadata["bench_files"] = f"{wl.NFILES} x {SIZE} B in {wl.bench_dir()}"
    runner.metadata["batch"] = BATCH

    selected = args.bench or list(BENCHMARKS)
    for name, (func, inner_loops, unit) in BENCHMARKS.items():
        if name not in selected:
            continue
        extra: tuple[int, ...] = ()
        metadata = {"unit_of_work": unit}
        if name == "file3-threadpool":
            extra = (args.threadpool_workers,)
            metadata["threadpool_workers"] = args.threadpool_workers
        runner.bench_time_func(name, func, *extra, inner_loops=inner_loops, metadata=metadata)


if __name__ == "__main__":
    main()
