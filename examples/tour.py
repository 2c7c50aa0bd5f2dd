"""What syslets buy on this machine, measured here and now (under a
minute): which engine runs and why, one chain and its plan, then the
helpers against the plain Python a user would otherwise write, each timed
in the same run (best of a few passes):

* ``read_files`` over 2,000 files of 4 KiB, warm, against the plain os loop;
* the same cold (the page cache dropped before each pass: root only),
  where the kernel works on many files at once and the plain loop on one;
* 256 TCP request/answer exchanges with a local server: ``tcp_requests``
  (one batch of chains) against plain sockets one after another, and
  against asyncio streams.

Nothing is hidden: where uringlets is slower, the ratio says so.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uringlets as ul
from uringlets import aio
from uringlets.__main__ import probe_lines
from uringlets.benchsuite import plain_read_files

FILES = 2000
FILE_SIZE = 4096
REQUESTS = 256


def best(
    passes: int, *runs: Callable[[], Any], before: Callable[[], None] | None = None
) -> list[float]:
    """The fastest of ``passes`` timed runs of each of ``runs``, taken in
    turns (a pass of each, the order alternating), so that a machine that
    speeds up or slows down meanwhile does so for all of them; ``before``
    runs untimed before each."""
    times: list[list[float]] = [[] for _ in runs]
    for p in range(passes):
        order = list(enumerate(runs))
        for i, run in order if p % 2 == 0 else reversed(order):
            if before is not None:
                before()
            t0 = time.perf_counter()
            run()
            times[i].append(time.perf_counter() - t0)
    return [min(t) for t in times]


def row(what: str, ours: float, theirs: float, peer: str, unit: str, count: int) -> None:
    ratio = theirs / ours
    verdict = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
    print(f"  {what:<34} {ours / count * 1e6:8.1f} us/{unit}   {peer:<26} "
          f"{theirs / count * 1e6:8.1f} us/{unit}   {verdict}")  # fmt: skip


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def can_drop_caches() -> str | None:
    """None if the page cache can be dropped here, else why not."""
    if os.geteuid() != 0:
        return "dropping the page cache needs root"
    try:
        drop_caches()
    except OSError as exc:
        return f"cannot drop the page cache here ({exc.strerror})"
    return None


def files_section(root: Path) -> None:
    paths = []
    for i in range(FILES):
        path = root / f"f{i:04d}"
        path.write_bytes(os.urandom(FILE_SIZE))
        paths.append(str(path))
    eng = aio.engine()
    assert aio.read_files(paths, engine=eng) == plain_read_files(paths)  # same bytes
    print(f"\nreading {FILES:,} files of {FILE_SIZE // 1024} KiB (read_files vs the plain os loop)")
    ours, theirs = best(
        5, lambda: aio.read_files(paths, engine=eng), lambda: plain_read_files(paths)
    )
    row("read_files, warm cache", ours, theirs, "plain os loop", "file", FILES)
    why_not = can_drop_caches()
    if why_not is not None:
        print(f"  cold cache: skipped ({why_not}; run as root to see it)")
        return
    ours, theirs = best(
        3,
        lambda: aio.read_files(paths, engine=eng),
        lambda: plain_read_files(paths),
        before=drop_caches,
    )
    row("read_files, cold cache", ours, theirs, "plain os loop", "file", FILES)


SERVER = """
import asyncio
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(b"answer to " + data)
        self.transport.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def plain_requests(address: tuple[str, int], payloads: list[bytes]) -> list[bytes]:
    import socket

    out = []
    for payload in payloads:
        with socket.create_connection(address, 10) as sock:
            sock.sendall(payload)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            out.append(b"".join(chunks))
    return out


async def asyncio_requests(address: tuple[str, int], payloads: list[bytes]) -> list[bytes]:
    async def one(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(payload)
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data

    return list(await asyncio.gather(*(one(p) for p in payloads)))


def tcp_section() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        address = ("127.0.0.1", int(server.stdout.readline()))
        payloads = [b"request %d" % i for i in range(REQUESTS)]
        requests = [(address, p) for p in payloads]
        eng = aio.engine()
        want = [b"answer to " + p for p in payloads]
        assert aio.tcp_requests(requests, timeout=10, engine=eng) == want
        assert plain_requests(address, payloads) == want
        print(f"\n{REQUESTS} TCP exchanges with a local asyncio server (connect, send, receive "
              "until closed; the one-process server bounds all three)")  # fmt: skip
        ours, plain, gathered = best(
            5,
            lambda: aio.tcp_requests(requests, timeout=10, engine=eng),
            lambda: plain_requests(address, payloads),
            lambda: asyncio.run(asyncio_requests(address, payloads)),
        )
        row("tcp_requests, one batch", ours, plain, "plain sockets, in turn", "request",
            REQUESTS)  # fmt: skip
        row("tcp_requests, one batch", ours, gathered, "asyncio streams, gathered", "request",
            REQUESTS)  # fmt: skip
    finally:
        server.kill()
        server.wait()


def main() -> None:
    started = time.perf_counter()
    print(f"uringlets tour: Linux {platform.release()}, CPython {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    _, lines = probe_lines()
    with ul.Engine() as eng:
        if eng.kind == "uring":
            restricted = next((x for x in lines if x.startswith("restricted rings:")), "")
            print(f"engine: io_uring ({restricted or 'restricted rings: unknown'})")
        else:
            print(f"engine: the cachemiss threads, because {eng.fallback_reason}")
        s = ul.Syslet()
        fd = s.openat(ul.Param("path"))
        data = s.read(fd, 4096, stop=ul.STOP_ON_NON_POSITIVE)
        s.close(fd)
        cat = s.compile()
        print("\none chain, open + read + close, and how it runs here:")
        print("  " + cat.explain().replace("\n", "\n  "))
        c = eng.run(cat, path="/etc/hostname")
        print(f"  -> {c!r}, data {c[data]!r}")
    root = Path(tempfile.mkdtemp(prefix=".tour-", dir=Path.cwd()))  # on disk, not tmpfs
    try:
        files_section(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tcp_section()
    print(f"\n(ratios from this run on this machine; {time.perf_counter() - started:.0f} s in all. "
          "`python -m uringlets bench` measures more, with pyperf)")  # fmt: skip


if __name__ == "__main__":
    main()
