"""``ul.aio``: every helper against the plain-Python call it stands for, on
real files, on both engines, in its sync and its async form: the same
bytes, the same errors (errno, subclass and filename)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import uringlets as ul
from uringlets import aio
from uringlets.aio import copying

from .conftest import ENGINES, open_fds
from .servers import free_port, memcached, redis


class Helpers:
    """One engine kind, one form (sync or async): the helpers called alike."""

    def __init__(self, kind: str, form: str, capacity: int = 64) -> None:
        self.kind, self.form, self.capacity = kind, form, capacity

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.form == "sync":
            with ul.Engine(self.kind, capacity=self.capacity) as eng:
                return getattr(aio, name)(*args, engine=eng, **kwargs)

        async def main() -> Any:
            async with ul.AsyncEngine(self.kind, capacity=self.capacity) as eng:
                return await getattr(aio, "a" + name)(*args, engine=eng, **kwargs)

        return asyncio.run(main())


@pytest.fixture(params=[(k, f) for k in ENGINES for f in ("sync", "async")], ids="-".join)
def helpers(request: pytest.FixtureRequest) -> Iterator[Helpers]:
    before = open_fds()
    yield Helpers(*request.param)
    assert open_fds() == before  # every descriptor a helper opened is closed


def plain_error(fn: Callable[[], Any]) -> OSError:
    with pytest.raises(OSError) as info:
        fn()
    return info.value


def same_error(got: BaseException, want: OSError) -> None:
    assert type(got) is type(want)
    assert isinstance(got, OSError)
    assert (got.errno, got.strerror, got.filename) == (want.errno, want.strerror, want.filename)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Files of the sizes that take each path of read_file: empty, small,
    exactly the first chain's read, one byte more, several large reads."""
    sizes = {
        "empty": 0,
        "small": 100,
        "first": aio.SMALL_READ,
        "over": aio.SMALL_READ + 1,
        "large": 3 * aio.LARGE_READ + 17,
    }
    made = {}
    for name, size in sizes.items():
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        made[name] = path
    return made


# -- read_file / read_files ---------------------------------------------------------------
def test_read_file_gives_what_read_bytes_gives(helpers: Helpers, files: dict[str, Path]) -> None:
    for path in files.values():
        assert helpers.call("read_file", path) == path.read_bytes()
        assert helpers.call("read_file", str(path)) == path.read_bytes()
        assert helpers.call("read_file", os.fsencode(path)) == path.read_bytes()


def test_read_file_of_procfs_reads_to_the_end(helpers: Helpers) -> None:
    # procfs answers in pieces: a short read is not the end of the file
    got = helpers.call("read_file", "/proc/self/mountinfo")
    assert got.startswith(Path("/proc/self/mountinfo").read_bytes()[:40])
    assert len(got) > 0 and got.endswith(b"\n")
    assert helpers.call("read_file", "/proc/sys/kernel/ostype") == b"Linux\n"


@pytest.mark.parametrize(
    "case", ["missing", "directory", "not-a-directory", "name-too-long", "empty-path"]
)
def test_read_file_fails_as_open_does(helpers: Helpers, tmp_path: Path, case: str) -> None:
    (tmp_path / "file").write_bytes(b"x")
    path: Any = {
        "missing": tmp_path / "missing",
        "directory": tmp_path,
        "not-a-directory": tmp_path / "file" / "below",
        "name-too-long": tmp_path / ("n" * 300),
        "empty-path": "",
    }[case]
    want = plain_error(lambda: Path(path).read_bytes() if path != "" else os.open(path, 0))
    same_error(plain_error(lambda: helpers.call("read_file", path)), want)


def test_read_file_max_size(helpers: Helpers, files: dict[str, Path]) -> None:
    small, large = files["small"], files["large"]
    assert helpers.call("read_file", small, max_size=100) == small.read_bytes()
    for path, limit in ((small, 99), (large, aio.LARGE_READ)):
        err = plain_error(lambda p=path, n=limit: helpers.call("read_file", p, max_size=n))
        assert err.errno == errno.EFBIG and err.filename == os.fspath(path)
    with pytest.raises(ValueError, match="max_size"):
        helpers.call("read_file", small, max_size=-1)


def test_read_files_in_order_with_errors_in_place(
    helpers: Helpers, files: dict[str, Path], tmp_path: Path
) -> None:
    paths: list[Any] = [*files.values(), tmp_path / "missing", tmp_path, files["small"]]
    got = helpers.call("read_files", paths, errors="return")
    assert len(got) == len(paths)
    for path, item in zip(paths, got, strict=True):
        try:
            want: Any = Path(path).read_bytes()
        except OSError as exc:
            same_error(item, exc)
        else:
            assert item == want
    # errors="raise": the first failing file's error, once all are done
    err = plain_error(lambda: helpers.call("read_files", paths))
    same_error(err, plain_error(lambda: Path(tmp_path / "missing").read_bytes()))
    assert helpers.call("read_files", []) == []
    with pytest.raises(ValueError, match="errors"):
        helpers.call("read_files", paths, errors="ignore")


def test_read_files_more_than_the_engine_holds(helpers: Helpers, tmp_path: Path) -> None:
    helpers.capacity = 16
    paths = []
    for i in range(300):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(i * 37))
        paths.append(path)
    paths.insert(150, tmp_path / "missing")
    got = helpers.call("read_files", paths, errors="return")
    assert got[150].errno == errno.ENOENT
    assert [g for i, g in enumerate(got) if i != 150] == [
        p.read_bytes() for i, p in enumerate(paths) if i != 150
    ]


def test_read_files_leaves_the_callers_completions_alone(engine_kind: str, tmp_path: Path) -> None:
    s = ul.Syslet()
    s.nop()
    nop = s.compile()
    (tmp_path / "f").write_bytes(b"data")
    with ul.Engine(engine_kind) as eng:
        eng.submit_many(nop, 5, tags=list("abcde"))
        assert aio.read_files([tmp_path / "f"] * 40, engine=eng) == [b"data"] * 40
        assert sorted(c.tag for c in eng.wait(5, timeout=5)) == list("abcde")


def test_eacces_as_open_gives_it(tmp_path: Path) -> None:
    """A file nobody may read: as root, the capabilities that bypass
    permissions are dropped for the child that tries (setpriv)."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"no")
    secret.chmod(0)
    code = (
        "import sys, uringlets as ul\nfrom uringlets import aio\n"
        "p = sys.argv[1]\n"
        "try:\n    open(p, 'rb')\nexcept OSError as e:\n    want = (e.errno, e.filename)\n"
        "for kind in ('uring', 'threads'):\n"
        "    with ul.Engine(kind) as eng:\n"
        "        try:\n            aio.read_file(p, engine=eng)\n"
        "        except PermissionError as e:\n            assert (e.errno, e.filename) == want\n"
        "        else:\n            raise SystemExit('read')\n"
        "print('ok', want)\n"
    )
    argv = [sys.executable, "-c", code, str(secret)]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.fail("setpriv (util-linux) is needed to drop root's DAC capabilities")
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ok ({errno.EACCES}, ")


# -- write_file ---------------------------------------------------------------------------
def test_write_file_replaces_the_content(helpers: Helpers, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    for data in (b"first", os.urandom(300_000), b"", bytearray(b"again"), memoryview(b"view")):
        helpers.call("write_file", target, data)
        assert target.read_bytes() == bytes(data)
    helpers.call("write_file", str(target), b"nosync", fsync=False)
    assert target.read_bytes() == b"nosync"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("case", ["missing-directory", "target-is-directory", "not-bytes"])
def test_write_file_fails_and_leaves_nothing(helpers: Helpers, tmp_path: Path, case: str) -> None:
    if case == "not-bytes":
        with pytest.raises(TypeError, match="bytes-like"):
            helpers.call("write_file", tmp_path / "x", "text")
        return
    target = tmp_path / "missing" / "x" if case == "missing-directory" else tmp_path / "dir"
    if case == "target-is-directory":
        target.mkdir()
    err = plain_error(lambda: helpers.call("write_file", target, b"data"))
    if case == "missing-directory":
        same_error(err, plain_error(lambda: os.open(target, os.O_WRONLY | os.O_CREAT)))
    else:  # rename(2) of a file over a directory
        assert err.errno == errno.EISDIR and err.filename == os.fspath(target)
    assert [p.name for p in tmp_path.iterdir()] == (["dir"] if case != "missing-directory" else [])


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # (root without CAP_SYS_ADMIN: a container)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_write_file_enospc_as_the_plain_recipe(helpers: Helpers, tiny_tmpfs: Path) -> None:
    target = tiny_tmpfs / "big"
    target.write_bytes(b"old")

    def plain() -> None:
        with open(tiny_tmpfs / "plain", "wb") as f:
            f.write(b"x" * 1024 * 1024)

    want = plain_error(plain)
    (tiny_tmpfs / "plain").unlink()
    err = plain_error(lambda: helpers.call("write_file", target, b"x" * 1024 * 1024))
    assert type(err) is type(want) and err.errno == want.errno == errno.ENOSPC
    assert err.filename == os.fspath(target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["big"]


WRITER = """
import os, sys
from uringlets import aio
target, kind = sys.argv[1], sys.argv[2]
import uringlets as ul
with ul.Engine(kind) as eng:
    n = 0
    while True:
        n += 1
        aio.write_file(target, (b"%08d" % n) * 20000, fsync=n % 2 == 0, engine=eng)
        print(n, flush=True)
"""


@pytest.mark.parametrize("kind", ENGINES)
def test_write_file_is_atomic_for_readers_and_across_kills(tmp_path: Path, kind: str) -> None:
    """A writer process replaces the file over and over and is killed at
    random points; a reader checks every version it sees is whole."""
    target = tmp_path / "atomic"
    target.write_bytes(b"%08d" % 0 * 20000)
    seen = 0
    for round_ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), kind],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None
            writer.stdout.readline()  # it is writing
            for _ in range(40 + round_ * 17):
                data = target.read_bytes()
                assert len(data) == 160_000 and data == data[:8] * 20000
                seen += 1
        finally:
            writer.kill()
            writer.wait()
        data = target.read_bytes()
        assert len(data) == 160_000 and data == data[:8] * 20000  # old or new, never part
    assert seen > 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "atomic"]
    assert all(name.startswith(".atomic.") and name.endswith(".tmp") for name in leftovers)


# -- the default engines ----------------------------------------------------------------
def test_default_engines_are_per_thread_and_per_loop(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert aio.read_file(path) == b"abc"
    assert aio.engine() is aio.engine()
    seen: list[ul.Engine] = []
    t = threading.Thread(target=lambda: seen.append(aio.engine()))
    t.start()
    t.join()
    assert seen[0] is not aio.engine()  # (closed when collected: it is that thread's)
    # copy_file, write_file, aio_read and aio_write run on one whose kernel goes on by itself
    assert aio.kernel_progress_engine() is aio.kernel_progress_engine() is not aio.engine()

    async def main() -> ul.AsyncEngine:
        assert await aio.aread_file(path) == b"abc"
        return aio.async_engine()

    asyncio.run(main())


# -- copy_file ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size",
    [0, 1, 4096, copying.SMALL_COPY, copying.SMALL_COPY + 1, aio.COPY_CHUNK - 1, aio.COPY_CHUNK,
     3 * aio.COPY_CHUNK + 7],
)  # fmt: skip
def test_copy_file_copies_as_shutil_does(helpers: Helpers, tmp_path: Path, size: int) -> None:
    src, dst, ref = tmp_path / "src", tmp_path / "dst", tmp_path / "ref"
    src.write_bytes(os.urandom(size))
    dst.write_bytes(b"older and longer content" * 100_000)  # truncated first
    assert helpers.call("copy_file", src, dst) == dst
    shutil.copyfile(src, ref)
    assert dst.read_bytes() == ref.read_bytes() == src.read_bytes()
    assert dst.stat().st_mode == ref.stat().st_mode


def test_copy_file_larger_than_one_chain_of_pipes(helpers: Helpers, tmp_path: Path) -> None:
    # more than MAX_PAIRS pipes' worth: chains of pairs on exported descriptors
    src, dst = tmp_path / "src", tmp_path / "dst"
    size = (copying.MAX_PAIRS + 1) * copying.PIPE_SIZE + 3
    src.write_bytes(os.urandom(size))
    assert helpers.call("copy_file", src, dst) == dst
    assert dst.read_bytes() == src.read_bytes()


def test_copy_file_of_a_file_larger_than_its_stat_said(
    helpers: Helpers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chain is sized from the stat; a file that grew since (here: a stat
    # that says 0 bytes) does not end in it, and is copied again whole.
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(3 * copying.PIPE_SIZE + 5))
    checked = copying._checked

    def stale(a: Any, b: Any) -> os.stat_result | None:
        st = checked(a, b)
        assert st is not None
        return os.stat_result((*st[:6], 0, *st[7:]))

    monkeypatch.setattr(copying, "_checked", stale)
    assert helpers.call("copy_file", src, dst) == dst
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(("real", "said"), [(100_000, 10), (1000, 5000), (0, 3)])
def test_copy_file_of_a_small_file_that_changed_since_its_stat(
    helpers: Helpers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real: int, said: int
) -> None:
    """The small chain reads the stat's size: a file that grew is copied
    again the general way; one that shrank writes what the read got."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(real))
    dst.write_bytes(b"x" * 200_000)
    checked = copying._checked

    def stale(a: Any, b: Any) -> os.stat_result | None:
        st = checked(a, b)
        assert st is not None
        return os.stat_result((*st[:6], said, *st[7:]))

    monkeypatch.setattr(copying, "_checked", stale)
    if real <= said:  # it ends in the small chain: no pipe is made
        monkeypatch.setattr(copying, "_Pipe", None)
    assert helpers.call("copy_file", src, dst) == dst
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("way", ["small", "splice"])
def test_copy_file_of_what_the_kernel_cannot_splice_reads_and_writes(
    helpers: Helpers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    # A procfs file's stat says 0 bytes: the small chain reads it whole.  Said
    # to be larger, it goes to the splices, which fail: then it reads and
    # writes, as shutil falls back from sendfile to read/write.
    src, dst, ref = Path("/proc/self/limits"), tmp_path / "dst", tmp_path / "ref"
    r, w = os.pipe()
    try:
        with open(src, "rb") as f, pytest.raises(OSError) as info:
            os.splice(f.fileno(), w, 4096)
    finally:
        os.close(r)
        os.close(w)
    assert info.value.errno == errno.EINVAL  # (the premise)
    if way == "splice":
        checked = copying._checked

        def large(a: Any, b: Any) -> os.stat_result | None:
            st = checked(a, b)
            assert st is not None
            return os.stat_result((*st[:6], copying.SMALL_COPY + 1, *st[7:]))

        monkeypatch.setattr(copying, "_checked", large)
    assert helpers.call("copy_file", src, dst) == dst
    shutil.copyfile(src, ref)
    assert dst.read_bytes() == ref.read_bytes() != b""


@pytest.mark.parametrize(
    "case", ["same-file", "missing-source", "source-directory", "missing-target-directory",
             "target-directory", "fifo"],
)  # fmt: skip
def test_copy_file_fails_as_shutil_does(helpers: Helpers, tmp_path: Path, case: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"content")
    if case == "same-file":
        dst = src
    elif case == "missing-source":
        src = tmp_path / "missing"
    elif case == "source-directory":
        src = tmp_path
    elif case == "missing-target-directory":
        dst = tmp_path / "missing" / "dst"
    elif case == "target-directory":
        dst.mkdir()
    elif case == "fifo":
        os.mkfifo(tmp_path / "fifo")
        src = tmp_path / "fifo"
    with pytest.raises(Exception) as plain:
        shutil.copyfile(src, dst)
    with pytest.raises(Exception) as ours:
        helpers.call("copy_file", src, dst)
    assert type(ours.value) is type(plain.value)
    assert str(ours.value) == str(plain.value)
    assert os.path.exists(tmp_path / "dst") == (case in ("target-directory",))


# -- tcp_request --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reply_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("echo_server.py")), "--reply"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()  # stopped by process id
        proc.wait()


def plain_request(address: Any, payload: bytes, timeout: float | None = None,
                  until: Any = None) -> bytes:  # fmt: skip
    """The plain-socket recipe tcp_request stands for."""
    with socket.create_connection(address, timeout) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if not chunk:
                return data
            if isinstance(until, int) and len(data) >= until:
                return data[:until]
            if isinstance(until, bytes) and until in data:
                return data[: data.index(until) + len(until)]


def test_tcp_request_answers_as_plain_sockets_do(helpers: Helpers, reply_port: int) -> None:
    address = ("127.0.0.1", reply_port)
    for payload, until in (
        (b"ECHO hello", None),
        (b"BIG", None),
        (b"BIG", 12_345),
        (b"LINES", b"\r\n"),
        (b"LINES", b"line\r\n"),
        (b"ECHO short", 1000),  # closed before the count: what came
        (b"ECHO no delimiter", b"\n"),
        (b"QUIT", None),  # closed with no answer: both recvs of the chain see the close
    ):
        want = plain_request(address, payload, 5, until)
        assert helpers.call("tcp_request", address, payload, timeout=5, until=until) == want
    assert helpers.call("tcp_request", ("localhost", reply_port), b"ECHO name") == b"ECHO NAME"


def test_tcp_requests_batch_in_order_with_errors(helpers: Helpers, reply_port: int) -> None:
    refused = ("127.0.0.1", free_port())
    requests = [(("127.0.0.1", reply_port), b"ECHO %d" % i) for i in range(40)]
    requests.insert(7, (refused, b"ECHO"))
    requests.insert(20, (("127.0.0.1", reply_port), b"BIG"))
    got = helpers.call("tcp_requests", requests, timeout=5, errors="return")
    assert isinstance(got[7], ConnectionRefusedError) and got[7].errno == errno.ECONNREFUSED
    assert got[20] == b"0123456789" * 30_000
    assert [g for i, g in enumerate(got) if i not in (7, 20)] == [b"ECHO %d" % i for i in range(40)]
    with pytest.raises(ConnectionRefusedError):
        helpers.call("tcp_requests", requests, timeout=5)


def test_tcp_request_errors_as_plain_sockets(helpers: Helpers, reply_port: int) -> None:
    refused = ("127.0.0.1", free_port())
    want = plain_error(lambda: plain_request(refused, b"x", 5))
    got = plain_error(lambda: helpers.call("tcp_request", refused, b"x", timeout=5))
    assert type(got) is type(want) and got.errno == want.errno
    silent = ("127.0.0.1", reply_port)
    want = plain_error(lambda: plain_request(silent, b"SILENT", 0.2))
    got = plain_error(lambda: helpers.call("tcp_request", silent, b"SILENT", timeout=0.2))
    assert type(got) is type(want) is TimeoutError and str(got) == str(want) == "timed out"
    # an answer, then nothing and no close: the recv after it times out, as a socket's does
    want = plain_error(lambda: plain_request(silent, b"LINES", 0.2))
    got = plain_error(lambda: helpers.call("tcp_request", silent, b"LINES", timeout=0.2))
    assert type(got) is type(want) is TimeoutError and str(got) == str(want) == "timed out"
    for bad in (0, -1, b"", "text", True):
        with pytest.raises(ValueError, match="until"):
            helpers.call("tcp_request", silent, b"x", until=bad)


def test_tcp_request_talks_to_redis_and_memcached(helpers: Helpers) -> None:
    with redis(free_port()) as port:
        address = ("127.0.0.1", port)
        assert helpers.call("tcp_request", address, b"PING\r\n", until=b"\r\n") == b"+PONG\r\n"
        answer = helpers.call("tcp_request", address, b"SET k v\r\nGET k\r\n", until=b"v\r\n")
        assert answer == plain_request(address, b"SET k v\r\nGET k\r\n", 5, b"v\r\n")
    with memcached(free_port()) as port:
        address = ("127.0.0.1", port)
        request = b"set key 0 0 5\r\nhello\r\nget key\r\n"
        want = plain_request(address, request, 5, b"END\r\n")
        assert want.endswith(b"VALUE key 0 5\r\nhello\r\nEND\r\n")
        assert helpers.call("tcp_request", address, request, until=b"END\r\n") == want


def test_copy_file_enospc_as_shutil(helpers: Helpers, tiny_tmpfs: Path, tmp_path: Path) -> None:
    """A copy that does not fit: the write comes back short, then fails;
    copy_file must say so as shutil does, never return a cut copy."""
    src = tmp_path / "big"
    (tiny_tmpfs / "filler").write_bytes(b"f" * 24 * 1024)  # 40 KiB left
    for size in (60 * 1024, 100 * 1024, 3 * aio.COPY_CHUNK):  # (60: a small file's chain)
        src.write_bytes(os.urandom(size))
        with pytest.raises(OSError) as plain:
            shutil.copyfile(src, tiny_tmpfs / "plain")
        (tiny_tmpfs / "plain").unlink()
        with pytest.raises(OSError) as ours:
            helpers.call("copy_file", src, tiny_tmpfs / "ours")
        assert ours.value.errno == plain.value.errno == errno.ENOSPC
        assert type(ours.value) is type(plain.value)
        (tiny_tmpfs / "ours").unlink()


@pytest.mark.parametrize("kind", ENGINES)
def test_an_interrupted_copy_leaves_nothing_behind(kind: str, tmp_path: Path) -> None:
    """A Ctrl-C while copy_file's chains are in flight: the helper's
    executions are cancelled and waited for before it closes the pipe and
    the descriptors they use, none of their completions reaches the
    notification ring, nothing stays open, and the engine goes on."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(48 * copying.PIPE_SIZE))
    before = open_fds()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    interrupted = 0
    try:
        with ul.Engine(kind) as eng:
            for delay in (0.002, 0.005, 0.01):
                signal.setitimer(signal.ITIMER_REAL, delay)  # one shot, mid-copy
                try:
                    aio.copy_file(src, dst, engine=eng)
                except KeyboardInterrupt:
                    interrupted += 1
                signal.setitimer(signal.ITIMER_REAL, 0)
                assert eng.in_flight == 0
                assert eng.wait(0) == []  # no helper completion left for the caller
            assert aio.copy_file(src, dst, engine=eng) == dst
            assert dst.read_bytes() == src.read_bytes()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert interrupted >= 2, "the copies must really be interrupted"
    assert open_fds() == before


@pytest.mark.parametrize("kind", ENGINES)
def test_a_cancelled_async_copy_leaves_nothing_behind(kind: str, tmp_path: Path) -> None:
    """The task awaiting acopy_file is cancelled while its chains are in
    flight: they are cancelled and awaited before the helper closes what
    they use; nothing stays in flight or open, and the engine goes on."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(48 * copying.PIPE_SIZE))
    before = open_fds()

    async def main() -> int:
        cancelled = 0
        async with ul.AsyncEngine(kind) as eng:
            for delay in (0.002, 0.005, 0.01):
                task = asyncio.ensure_future(aio.acopy_file(src, dst, engine=eng))
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    cancelled += 1
                assert eng.in_flight == 0
            assert await aio.acopy_file(src, dst, engine=eng) == dst
        return cancelled

    assert asyncio.run(main()) >= 2, "the copies must really be cancelled mid-flight"
    assert dst.read_bytes() == src.read_bytes()
    assert open_fds() == before
