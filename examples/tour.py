"""A short tour of uringlets on this machine's kernel: real chains, each
completion printed, how fast a batch of file chains runs, and the same
chains awaited from 64 asyncio tasks, next to a threadlet."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import uringlets as ul


def show(title: str, c: ul.Completion) -> None:
    print(f"  {title:<44} {c!r}")


def main() -> None:
    features = ul.probe()
    print(f"io_uring: {'available' if features.available else features.reason}")
    with tempfile.TemporaryDirectory() as tmp, ul.Engine() as eng:
        print(f"engine: {eng.kind}\n")
        hello = os.path.join(tmp, "hello.txt")
        with open(hello, "wb") as f:
            f.write(b"hello from a syslet\n")

        # open + read + close, one trip into the kernel
        s = ul.Syslet()
        fd = s.openat(ul.Param("path"))
        data = s.read(fd, 4096, stop=ul.STOP_ON_NON_POSITIVE)
        s.close(fd)
        cat = s.compile()
        print(cat.explain(), "\n")
        c = eng.run(cat, path=hello)
        show("openat+read+close", c)
        print(f"  {'':<44} data={c[data]!r}")
        c = eng.run(cat, path=os.path.join(tmp, "missing"))
        show("the same on a missing file (stops at 0)", c)
        print(f"  {'':<44} error={c.error(fd)}")

        # mkdir + create + write + fsync + close + rename + statx
        s = ul.Syslet()
        s.mkdirat(os.path.join(tmp, "d"))
        out = s.openat(os.path.join(tmp, "d", "new"), os.O_WRONLY | os.O_CREAT, 0o644)
        s.write(out, b"written in the kernel\n")
        s.fsync(out)
        s.close(out)
        s.renameat(os.path.join(tmp, "d", "new"), os.path.join(tmp, "d", "final"))
        st = s.statx(os.path.join(tmp, "d", "final"))
        c = eng.run(s.compile())
        show("mkdir+openat+write+fsync+close+rename+statx", c)
        print(f"  {'':<44} size={c[st].st_size}")

        # a sleep in the middle of a chain
        s = ul.Syslet()
        s.nop()
        s.timeout(0.05)
        s.nop()
        t = time.perf_counter()
        c = eng.run(s.compile())
        show(f"nop+timeout(50ms)+nop in {1e3 * (time.perf_counter() - t):.0f} ms", c)

        # async: submit many, then drain
        paths = []
        for i in range(2000):
            p = os.path.join(tmp, f"f{i:04d}")
            with open(p, "wb") as f:
                f.write(os.urandom(4096))
            paths.append(os.fsencode(p))
        done = 0
        start = time.perf_counter()
        for _ in range(5):
            for k in range(0, len(paths), 64):
                eng.submit_many(cat, params=[{"path": p} for p in paths[k : k + 64]])
                for c in eng.wait(len(paths[k : k + 64])):
                    assert c.ok and len(c[data]) == 4096
                    done += 1
        elapsed = time.perf_counter() - start
        print(
            f"\nfile3 (openat+read 4 KiB+close), batches of 64: {done} files in "
            f"{elapsed * 1e3:.0f} ms = {done / elapsed:,.0f} files/s"
        )
        start = time.perf_counter()
        for _ in range(5):
            for p in paths:
                f = os.open(p, os.O_RDONLY)
                os.read(f, 4096)
                os.close(f)
        plain = time.perf_counter() - start
        print(f"plain Python loop (os.open/os.read/os.close):        {done / plain:,.0f} files/s")
        asyncio.run(from_asyncio(cat, data, paths))


async def from_asyncio(cat: ul.Program, data: ul.Ref, paths: list[bytes]) -> None:
    """The same chain awaited from 64 asyncio tasks (AsyncEngine starts the
    runs of one loop iteration together), and a threadlet beside them."""
    async with ul.AsyncEngine() as eng:
        todo = iter(paths * 5)
        done = 0

        async def task() -> None:
            nonlocal done
            for p in todo:
                c = await eng.run(cat, path=p)
                assert c.ok and len(c[data]) == 4096
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(64)))
        elapsed = time.perf_counter() - start
        print(
            f"\nfrom 64 asyncio tasks (AsyncEngine, {eng.kind}): {done} files in "
            f"{elapsed * 1e3:.0f} ms = {done / elapsed:,.0f} files/s"
        )
        st = await eng.call(os.stat, paths[0])  # a threadlet: a Python call on a cachemiss thread
        print(f"a threadlet (os.stat on a cachemiss thread): size {st.st_size}")


if __name__ == "__main__":
    main()
