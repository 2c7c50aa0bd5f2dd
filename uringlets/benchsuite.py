"""``python -m uringlets bench``: the pyperf suite of the shapes users call,
each next to the plain-Python way of doing the same, so that one run gives
same-run ratios.

    python -m uringlets bench [NAME ...] [-o OUT.json] [--compare OLD.json]
                              [pyperf options: --fast, --rigorous, -p N, ...]

``NAME`` selects benchmarks by prefix (``read_files`` runs ``read_files``
and ``read_files-plain``).  Every value is the time of one call of the
helper (one file, one copy, one request), so a rate is 1/value.  With
``--compare`` the new results are compared to ``OLD.json`` by ``pyperf
compare_to`` once the run is written.  Needs pyperf (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import aio
from .engine import Engine
from .syslet import Syslet

FILES = 500  # files of read_files' benchmark
FILE_SIZE = 4096
TCP_REQUESTS = 64
perf_counter = time.perf_counter


@functools.cache
def _dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="uringlets-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def _files() -> list[str]:
    paths = []
    for i in range(FILES):
        path = _dir() / f"f{i:04d}"
        path.write_bytes(os.urandom(FILE_SIZE))
        paths.append(str(path))
    return paths


@functools.cache
def _sources() -> dict[str, str]:
    made = {}
    for name, size in (("4k", 4096), ("1m", 1 << 20)):
        path = _dir() / f"copy-{name}"
        path.write_bytes(os.urandom(size))
        made[name] = str(path)
    return made


@functools.cache
def _echo_port() -> int:
    """A loopback server in its own process: answers each connection's
    request and closes (stopped at exit, by process id)."""
    code = (
        "import socket, socketserver, sys\n"
        "class H(socketserver.BaseRequestHandler):\n"
        "    def handle(self):\n"
        "        self.request.sendall(self.request.recv(65536))\n"
        "class S(socketserver.ThreadingTCPServer):\n"
        "    daemon_threads = True\n"
        "    request_queue_size = 1024\n"
        "s = S(('127.0.0.1', 0), H)\n"
        "print(s.server_address[1], flush=True)\n"
        "s.serve_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    atexit.register(proc.kill)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


@functools.cache
def _engine() -> Engine:
    return Engine()


# -- the benchmarks: loops -> seconds -------------------------------------------------
def nop1_run(loops: int) -> float:
    s = Syslet()
    s.nop()
    prog, run = s.compile(), _engine().run
    t0 = perf_counter()
    for _ in range(loops):
        run(prog)
    return perf_counter() - t0


def read_files(loops: int) -> float:
    paths, eng = _files(), _engine()
    aio.read_files(paths, engine=eng)  # warm
    t0 = perf_counter()
    for _ in range(loops):
        aio.read_files(paths, engine=eng)
    return perf_counter() - t0


def plain_read_files(paths: list[str]) -> list[bytes]:
    """What read_files stands for, as a careful plain loop: open, read to
    the end, close."""
    out = []
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            out.append(b"".join(chunks))
        finally:
            os.close(fd)
    return out


def read_files_plain(loops: int) -> float:
    paths = _files()
    t0 = perf_counter()
    for _ in range(loops):
        plain_read_files(paths)
    return perf_counter() - t0


def write_file(loops: int) -> float:
    target, eng = _dir() / "written", _engine()
    t0 = perf_counter()
    for i in range(loops):
        aio.write_file(target, b"%d" % i * 512, engine=eng)
    return perf_counter() - t0


def write_file_recipe(loops: int) -> float:
    """The usual recipe: a tempfile in the same directory, write, fsync,
    os.replace."""
    target = _dir() / "written-recipe"
    t0 = perf_counter()
    for i in range(loops):
        fd, temp = tempfile.mkstemp(dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(b"%d" % i * 512)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    return perf_counter() - t0


def _copy(size: str, how: Callable[[str, str], Any]) -> Callable[[int], float]:
    def bench(loops: int) -> float:
        src = _sources()[size]
        dst = str(_dir() / f"copied-{size}")
        t0 = perf_counter()
        for _ in range(loops):
            how(src, dst)
        return perf_counter() - t0

    return bench


def tcp_requests(loops: int) -> float:
    address, eng = ("127.0.0.1", _echo_port()), _engine()
    requests = [(address, b"request %d" % i) for i in range(TCP_REQUESTS)]
    t0 = perf_counter()
    for _ in range(loops):
        aio.tcp_requests(requests, timeout=10, engine=eng)
    return perf_counter() - t0


def tcp_requests_plain(loops: int) -> float:
    address = ("127.0.0.1", _echo_port())
    payloads = [b"request %d" % i for i in range(TCP_REQUESTS)]
    t0 = perf_counter()
    for _ in range(loops):
        for payload in payloads:
            with socket.create_connection(address, 10) as sock:
                sock.sendall(payload)
                while sock.recv(65536):
                    pass
    return perf_counter() - t0


# name -> (function, calls per loop)
BENCHMARKS: dict[str, tuple[Callable[[int], float], int]] = {
    "nop1-run": (nop1_run, 1),
    "read_files": (read_files, FILES),
    "read_files-plain": (read_files_plain, FILES),
    "write_file": (write_file, 1),
    "write_file-recipe": (write_file_recipe, 1),
    "copy_file-4k": (_copy("4k", lambda s, d: aio.copy_file(s, d, engine=_engine())), 1),
    "copy_file-4k-shutil": (_copy("4k", shutil.copyfile), 1),
    "copy_file-1m": (_copy("1m", lambda s, d: aio.copy_file(s, d, engine=_engine())), 1),
    "copy_file-1m-shutil": (_copy("1m", shutil.copyfile), 1),
    "tcp_requests": (tcp_requests, TCP_REQUESTS),
    "tcp_requests-plain": (tcp_requests_plain, TCP_REQUESTS),
}


def selected(names: list[str]) -> list[str]:
    """The benchmarks whose names start with one of ``names`` (all: none
    given).  Raises ValueError for a name that selects nothing."""
    if not names:
        return list(BENCHMARKS)
    out = []
    for name in names:
        found = [b for b in BENCHMARKS if b.startswith(name)]
        if not found:
            raise ValueError(f"no benchmark named {name!r}; there are: {', '.join(BENCHMARKS)}")
        out += [b for b in found if b not in out]
    return out


def main(argv: list[str]) -> int:
    try:
        import pyperf
    except ImportError:
        print("python -m uringlets bench needs pyperf: pip install 'uringlets[bench]'",
              file=sys.stderr)  # fmt: skip
        return 2

    def add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
        cmd.extend(args.names)

    runner = pyperf.Runner(
        add_cmdline_args=add_cmdline_args,
        program_args=("-m", "uringlets", "bench"),  # (pyperf puts the interpreter first)
    )
    runner.argparser.prog = "python -m uringlets bench"
    runner.argparser.description = __doc__.split("\n\n")[0]
    runner.argparser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks to run, by prefix: " + ", ".join(BENCHMARKS),
    )
    runner.argparser.add_argument("--compare", metavar="OLD.json",
                                  help="compare the results with OLD.json (needs -o)")  # fmt: skip
    args = runner.parse_args(argv)
    try:
        names = selected(args.names)
    except ValueError as exc:
        print(f"python -m uringlets bench: {exc}", file=sys.stderr)
        return 2
    if args.compare and not args.output:
        print("python -m uringlets bench: --compare needs -o OUT.json", file=sys.stderr)
        return 2
    for name in names:
        function, calls = BENCHMARKS[name]
        runner.bench_time_func(name, function, inner_loops=calls)
    if args.compare and not args.worker:
        return subprocess.run(
            [sys.executable, "-m", "pyperf", "compare_to", args.compare, args.output,
             "--table"],
        ).returncode  # fmt: skip
    return 0
