"""The ``ul.aio`` helpers against their peers (issue 13), one pyperf run.

    python benchmarks/bench_aio.py -o results/aio.json [--fast] [--bench NAME ...]
    python benchmarks/bench_aio.py --report results/aio.json    # RESULTS-aio.md

Every value is the time of ONE call's unit: one file (read_files), one
write, one copy, one request:

read_files-uringlets       aio.read_files over the 2,000 warm 4 KiB files (workloads.py)
read_files-plain           the plain os loop: os.open, os.read until b"", os.close
read_files-c-liburing      benchmarks/c/uring_ref readfiles: the same chains in C (batch 1024)
bytes-4k                   making the 2,000 bytes objects a read_files returns, out of one
                           buffer; the report adds it to C's time (C+bytes: the floor)
aread_files-asyncio        await aio.aread_files on the default loop, and -uvloop
aiofiles-asyncio           aiofiles.open + read of every file, gathered, and -uvloop
read_files-cold-uringlets  the same pass after dropping the page cache (root; not timed),
read_files-cold-plain      against the plain loop,
read_files-cold-c-liburing and the C chains (one process per pass, its own timing)
write_file-uringlets       aio.write_file(fsync=True) of 4 KiB, on its default engine
write_file-recipe          tempfile.mkstemp in the directory, write, fsync, os.replace
write_file-recipe-dirsync  the same, then an fsync of the directory (which write_file
                           makes too: the rename is durable when it returns)
write_file-c-liburing      write_file's two chains in C (benchmarks/c/uring_ref writefile)
copy_file-4k-c-liburing    copy_file's chain in C at its best (one trip: uring_ref copyfile)
copy_file-SIZE-uringlets   aio.copy_file of 4 KiB, 1 MiB, 256 MiB (warm source), on its
                           default engine
copy_file-SIZE-shutil      shutil.copyfile (sendfile)
tcp_requests-uringlets     aio.tcp_requests: 64 requests of 64 bytes to the C echo server
                           (it closes after echoing them), in one call
tcp_requests-plain         socket.create_connection, sendall, recv until closed, in turn
tcp_requests-asyncio       asyncio streams, the 64 gathered; and -uvloop
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiofiles
import pyperf
import sections
import uvloop
import workloads as wl

from uringlets import aio
from uringlets.kernel import ffi

HERE = Path(__file__).resolve().parent
perf_counter = time.perf_counter
REQUESTS = 64
COPY_SIZES = {"4k": 4096, "1m": 1 << 20, "256m": 256 << 20}


@functools.cache
def files() -> list[str]:
    paths = [os.fsdecode(p) for p in wl.ensure_files()]
    wl.warm([os.fsencode(p) for p in paths])
    return paths


@functools.cache
def scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="uringlets-aio-", dir=wl.bench_dir().parent))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def source(size: str) -> str:
    path = scratch() / f"source-{size}"
    with open(path, "wb") as f:
        left = COPY_SIZES[size]
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)
    return str(path)


@functools.cache
def echo() -> wl.EchoServer:
    server = wl.EchoServer(close_after=wl.MSG_SIZE)
    atexit.register(server.stop)
    return server


def plain_read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check(got: list[bytes]) -> None:
    if len(got) != wl.NFILES or any(len(b) != wl.FILE_SIZE for b in got):
        raise RuntimeError("a read came back short")


# -- read_files -------------------------------------------------------------------------
def time_read_files_uringlets(loops: int, cold: bool = False) -> float:
    paths, eng, total = files(), aio.engine(), 0.0
    for _ in range(loops):
        if cold:
            wl.drop_caches()
        t0 = perf_counter()
        got = aio.read_files(paths, engine=eng)
        total += perf_counter() - t0
        _check(got)
    return total


def time_read_files_plain(loops: int, cold: bool = False) -> float:
    paths, total = files(), 0.0
    for _ in range(loops):
        if cold:
            wl.drop_caches()
        t0 = perf_counter()
        got = [plain_read(p) for p in paths]
        total += perf_counter() - t0
        _check(got)
    return total


def _c_ref(*args: str) -> float:
    """Seconds the C reference measured around its own loop."""
    out = subprocess.run([str(wl.C_REF), *args], capture_output=True, text=True, check=True)
    fields = dict(item.split("=", 1) for item in out.stdout.split())
    return int(fields["elapsed_ns"]) / 1e9


def time_read_files_c(loops: int, cold: bool = False) -> float:
    files()
    if not cold:
        return _c_ref("readfiles", str(loops), str(wl.bench_dir()), str(wl.NFILES), "1024")
    total = 0.0
    for _ in range(loops):  # one pass per process: the cache is dropped before each
        wl.drop_caches()
        total += _c_ref("readfiles", "1", str(wl.bench_dir()), str(wl.NFILES), "1024")
    return total


def time_bytes_4k(loops: int) -> float:
    """What returning the files costs any Python read_files, whatever reads
    them: one pass makes 2,000 bytes objects of 4 KiB, sliced out of one
    buffer (as the engine copies them out of its scratch block), and the
    previous pass's list is dropped in the timed region, as in the
    read_files benchmarks' loops.  C's chains plus this is the floor of a
    read_files in Python."""
    stride = 16 * 1024 + 1  # (read_files' buffer per file)
    view = ffi.buffer(ffi.new("char[]", wl.NFILES * stride))
    starts = range(0, wl.NFILES * stride, stride)
    total, got = 0.0, None
    for _ in range(loops):
        t0 = perf_counter()
        got = [view[s : s + wl.FILE_SIZE] for s in starts]
        total += perf_counter() - t0
    del got
    return total


def time_write_file_c(loops: int) -> float:
    """write_file's two chains in C (uring_ref writefile): the floor of the
    design on io_uring."""
    directory = scratch() / "c-writefile"
    directory.mkdir(exist_ok=True)
    return _c_ref("writefile", str(loops), str(directory))


def time_copy_file_c(loops: int) -> float:
    """copy_file's chain for 4 KiB in C at its best (one trip, the size
    known: uring_ref copyfile)."""
    return _c_ref("copyfile", str(loops), source("4k"), str(scratch() / "c-copy-4k"))


def _aread(loop_kind: str) -> Callable[[int], float]:
    def bench(loops: int) -> float:
        paths = files()

        async def main() -> float:
            eng = aio.async_engine()
            t0 = perf_counter()
            for _ in range(loops):
                _check(await aio.aread_files(paths, engine=eng))
            return perf_counter() - t0

        return (uvloop.run if loop_kind == "uvloop" else asyncio.run)(main())

    return bench


def _aiofiles(loop_kind: str) -> Callable[[int], float]:
    def bench(loops: int) -> float:
        paths = files()

        async def one(path: str) -> bytes:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()  # type: ignore[no-any-return]

        async def main() -> float:
            t0 = perf_counter()
            for _ in range(loops):
                _check(list(await asyncio.gather(*(one(p) for p in paths))))
            return perf_counter() - t0

        return (uvloop.run if loop_kind == "uvloop" else asyncio.run)(main())

    return bench


# -- write_file, copy_file ------------------------------------------------------------------
DATA = os.urandom(4096)


def time_write_file_uringlets(loops: int) -> float:
    target = scratch() / "written"
    aio.write_file(target, DATA)  # (its default engine made, as a user's first call makes it)
    t0 = perf_counter()
    for _ in range(loops):
        aio.write_file(target, DATA)
    return perf_counter() - t0


def _write_file_recipe(directory_fsync: bool) -> Callable[[int], float]:
    """The usual recipe (tempfile, write, fsync, os.replace); with
    ``directory_fsync`` also what write_file does beyond it (the issue asks
    for it): an fsync of the directory, so that the rename is durable."""

    def bench(loops: int) -> float:
        target = scratch() / "written-recipe"
        t0 = perf_counter()
        for _ in range(loops):
            fd, temp = tempfile.mkstemp(dir=target.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(DATA)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
            if directory_fsync:
                dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return perf_counter() - t0

    return bench


def _copy(size: str, how: str) -> Callable[[int], float]:
    def bench(loops: int) -> float:
        src, dst = source(size), str(scratch() / f"copy-{size}")
        shutil.copyfile(src, dst)  # warm
        if how == "uringlets":
            aio.copy_file(src, dst)  # (its default engine made, as a user's first call makes it)
        t0 = perf_counter()
        for _ in range(loops):
            if how == "uringlets":
                aio.copy_file(src, dst)
            else:
                shutil.copyfile(src, dst)
        return perf_counter() - t0

    return bench


# -- tcp_requests ---------------------------------------------------------------------
def time_tcp_uringlets(loops: int) -> float:
    requests = [(echo().address, wl.MESSAGE)] * REQUESTS
    eng = aio.engine()
    t0 = perf_counter()
    for _ in range(loops):
        got = aio.tcp_requests(requests, timeout=10, engine=eng)
        if got != [wl.MESSAGE] * REQUESTS:
            raise RuntimeError("an answer differs")
    return perf_counter() - t0


def time_tcp_plain(loops: int) -> float:
    address = echo().address
    t0 = perf_counter()
    for _ in range(loops):
        for _ in range(REQUESTS):
            with socket.create_connection(address, 10) as sock:
                sock.sendall(wl.MESSAGE)
                got = b""
                while chunk := sock.recv(65536):
                    got += chunk
            if got != wl.MESSAGE:
                raise RuntimeError("an answer differs")
    return perf_counter() - t0


def _tcp_async(loop_kind: str) -> Callable[[int], float]:
    def bench(loops: int) -> float:
        address = echo().address

        async def one() -> bytes:
            reader, writer = await asyncio.open_connection(*address)
            writer.write(wl.MESSAGE)
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            return got

        async def main() -> float:
            t0 = perf_counter()
            for _ in range(loops):
                got = await asyncio.gather(*(one() for _ in range(REQUESTS)))
                if got != [wl.MESSAGE] * REQUESTS:
                    raise RuntimeError("an answer differs")
            return perf_counter() - t0

        return (uvloop.run if loop_kind == "uvloop" else asyncio.run)(main())

    return bench


# name -> (function, units per loop)
BENCHMARKS: dict[str, tuple[Callable[[int], float], int]] = {
    "read_files-uringlets": (time_read_files_uringlets, wl.NFILES),
    "read_files-plain": (time_read_files_plain, wl.NFILES),
    "read_files-c-liburing": (time_read_files_c, wl.NFILES),
    "bytes-4k": (time_bytes_4k, wl.NFILES),
    "aread_files-asyncio": (_aread("asyncio"), wl.NFILES),
    "aread_files-uvloop": (_aread("uvloop"), wl.NFILES),
    "aiofiles-asyncio": (_aiofiles("asyncio"), wl.NFILES),
    "aiofiles-uvloop": (_aiofiles("uvloop"), wl.NFILES),
    "read_files-cold-uringlets": (
        functools.partial(time_read_files_uringlets, cold=True), wl.NFILES
    ),
    "read_files-cold-plain": (functools.partial(time_read_files_plain, cold=True), wl.NFILES),
    "read_files-cold-c-liburing": (functools.partial(time_read_files_c, cold=True), wl.NFILES),
    "write_file-uringlets": (time_write_file_uringlets, 1),
    "write_file-recipe": (_write_file_recipe(False), 1),
    "write_file-recipe-dirsync": (_write_file_recipe(True), 1),
    "write_file-c-liburing": (time_write_file_c, 1),
    "copy_file-4k-c-liburing": (time_copy_file_c, 1),
    **{f"copy_file-{size}-{how}": (_copy(size, how), 1)
       for size in COPY_SIZES for how in ("uringlets", "shutil")},
    "tcp_requests-uringlets": (time_tcp_uringlets, REQUESTS),
    "tcp_requests-plain": (time_tcp_plain, REQUESTS),
    "tcp_requests-asyncio": (_tcp_async("asyncio"), REQUESTS),
    "tcp_requests-uvloop": (_tcp_async("uvloop"), REQUESTS),
}  # fmt: skip

# (ours, peer, target ratio or None) for the report
PAIRS = [
    ("read_files-uringlets", "read_files-plain", 1.3),
    ("read_files-uringlets", "read_files-c-liburing", 0.85),
    ("read_files-cold-uringlets", "read_files-cold-plain", 3.0),
    ("read_files-c-liburing+bytes-4k", "read_files-plain", None),
    ("read_files-uringlets", "read_files-c-liburing+bytes-4k", None),
    ("read_files-cold-c-liburing", "read_files-cold-plain", None),
    ("read_files-cold-c-liburing+bytes-4k", "read_files-cold-plain", None),
    ("read_files-cold-uringlets", "read_files-cold-c-liburing+bytes-4k", None),
    ("aread_files-asyncio", "aiofiles-asyncio", 5.0),
    ("aread_files-uvloop", "aiofiles-uvloop", 5.0),
    ("write_file-uringlets", "write_file-recipe", 1.0),
    ("write_file-c-liburing", "write_file-recipe", None),
    ("write_file-recipe-dirsync", "write_file-recipe", None),
    ("write_file-uringlets", "write_file-recipe-dirsync", None),
    ("copy_file-4k-uringlets", "copy_file-4k-shutil", 1.0),
    ("copy_file-4k-c-liburing", "copy_file-4k-shutil", None),
    ("copy_file-1m-uringlets", "copy_file-1m-shutil", 1.0),
    ("copy_file-256m-uringlets", "copy_file-256m-shutil", 1.0),
    ("tcp_requests-uringlets", "tcp_requests-plain", None),
    ("tcp_requests-uringlets", "tcp_requests-asyncio", None),
    ("tcp_requests-uringlets", "tcp_requests-uvloop", None),
]


def report(path: Path) -> None:
    """RESULTS-aio.md from a pyperf JSON file of this script."""
    suite = pyperf.BenchmarkSuite.load(str(path))
    means = {b.get_name(): statistics.median(b.get_values()) for b in suite.get_benchmarks()}
    for chains in ("read_files-c-liburing", "read_files-cold-c-liburing"):
        if chains in means and "bytes-4k" in means:  # the floor: C's chains, then the bytes
            means[f"{chains}+bytes-4k"] = means[chains] + means["bytes-4k"]
    meta = suite.get_benchmarks()[0].get_metadata()
    lines = [
        "# The aio helpers against their peers (issue 13)",
        "",
        f"Machine: {meta.get('cpu_count')} CPUs, {meta.get('platform')}, "
        f"{meta.get('python_implementation')} {meta.get('python_version')}; "
        f"{time.strftime('%Y-%m-%d')}. `benchmarks/bench_aio.py`, one pyperf run (values: "
        "median per unit: a file, a write, a copy, a request). Ratio: the peer's time over "
        "ours (above 1: uringlets is faster).",
        "",
        "| uringlets | time | peer | time | ratio | target |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for ours, peer, target in PAIRS:
        if ours not in means or peer not in means:
            continue
        ratio = means[peer] / means[ours]
        met = "" if target is None else f"{target:g}x: {'met' if ratio >= target else 'no'}"
        cells = [ours, _fmt(means[ours]), peer, _fmt(means[peer]), f"{ratio:.2f}x", met]
        lines.append("| " + " | ".join(cells) + " |")
    sections.AIO.source.write_text("\n".join(lines) + "\n")
    sections.AIO.update()
    print("\n".join(lines))


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-2 else f"{seconds * 1e3:.1f} ms"


def add_cmdline_args(cmd: list[str], args: object) -> None:
    for name in getattr(args, "bench", None) or ():
        cmd += ["--bench", name]


def main() -> None:
    if "--report" in sys.argv:
        report(Path(sys.argv[sys.argv.index("--report") + 1]))
        return
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args, processes=6)
    runner.argparser.add_argument("--bench", action="append", choices=sorted(BENCHMARKS))
    args = runner.parse_args()
    names = args.bench or list(BENCHMARKS)
    if any("cold" in n for n in names) and (why := wl.cold_unavailable()) is not None:
        print(f"cold runs skipped: {why}", file=sys.stderr)
        names = [n for n in names if "cold" not in n]
    wl.build_c_ref()
    for name in names:
        function, units = BENCHMARKS[name]
        runner.bench_time_func(name, function, inner_loops=units)
    if args.output and not args.worker:
        report(Path(args.output))


if __name__ == "__main__":
    main()
