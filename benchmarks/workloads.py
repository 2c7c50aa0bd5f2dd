"""Shared setup for the uringlets benchmarks.

* the file set: ``NFILES`` files of ``FILE_SIZE`` bytes named f0000..f1999 in
  ``bench_dir()`` (``$URINGLETS_BENCH_DIR``, default /tmp/uringlets-bench-files),
  created idempotently by ``ensure_files()`` and read once by ``warm()``;
* cold runs: ``drop_caches()`` (sync, then ``echo 3 > /proc/sys/vm/drop_caches``:
  page cache, dentries and inodes), ``cold_unavailable()`` says why it cannot
  be done here, ``fs_type()`` which file system holds the files;
* the programs: ``nop4`` (four linked no-ops), ``nop_program(n)`` (n linked
  no-ops, the chain-length sweep), ``file3`` (openat -> read 4 KiB -> close),
  ``tcp5`` (socket -> connect -> send 64 B -> recv 64 B -> close) and ``rr``
  (send 64 B -> recv 64 B on a connected socket);
* the loopback echo server of the network benchmarks, ``EchoServer``
  (``benchmarks/c/echo_server`` in its own process, stopped by process id);
* the C programs in ``benchmarks/c``: ``build_c_ref()`` runs make (the liburing
  reference and the echo server), ``c_ref_seconds()`` runs the reference and
  returns the time it measured itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import uringlets as ul

HERE = Path(__file__).resolve().parent
C_DIR = HERE / "c"
C_REF = C_DIR / "uring_ref"
ECHO_SERVER = C_DIR / "echo_server"

DIR_ENV = "URINGLETS_BENCH_DIR"
DEFAULT_DIR = "/tmp/uringlets-bench-files"
NFILES = 2000
FILE_SIZE = 4096
BATCH = 64  # executions per submit_many / per C submit_and_wait
LOCALHOST = "127.0.0.1"
MSG_SIZE = 64
MESSAGE = b"x" * MSG_SIZE  # what every network request sends, and expects back


# -- the file set ----------------------------------------------------------------------
def bench_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def file_name(i: int) -> str:
    return f"f{i:04d}"


def ensure_files(directory: Path | None = None, nfiles: int = NFILES) -> list[bytes]:
    """Create (only where missing or of the wrong size) ``nfiles`` files of
    ``FILE_SIZE`` bytes and return their paths as bytes, in order."""
    directory = bench_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(nfiles):
        path = directory / file_name(i)
        try:
            ok = path.stat().st_size == FILE_SIZE
        except FileNotFoundError:
            ok = False
        if not ok:
            # Write a temporary file and rename it, so a concurrent reader
            # never sees a short file.
            tmp = directory / f".{file_name(i)}.{os.getpid()}.tmp"
            tmp.write_bytes(os.urandom(FILE_SIZE))
            os.replace(tmp, path)
        paths.append(os.fsencode(path))
    return paths


def warm(paths: list[bytes]) -> None:
    """Read every file once, so the benchmarks run on the page cache."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            if len(os.read(fd, FILE_SIZE)) != FILE_SIZE:
                raise RuntimeError(f"{os.fsdecode(p)} is shorter than {FILE_SIZE} bytes")
        finally:
            os.close(fd)


# -- cold runs -------------------------------------------------------------------------
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_caches() -> None:
    """Write back dirty pages, then drop the page cache, dentries and inodes
    (needs root); raises OSError where that is not allowed."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def cold_unavailable(directory: Path | None = None) -> str | None:
    """Why cold-cache runs cannot be done here (None: they can).  Tries one
    drop; a tmpfs file set lives in the page cache and cannot be dropped."""
    directory = bench_dir() if directory is None else Path(directory)
    try:
        drop_caches()
    except OSError as exc:
        return f"writing {DROP_CACHES} failed: {exc.strerror or exc} (uid {os.getuid()})"
    kind = fs_type(directory)
    if kind in ("tmpfs", "ramfs"):
        return f"{directory} is on {kind}: its files stay in memory whatever is dropped"
    return None


def fs_type(path: Path) -> str:
    """The type of the file system that holds ``path`` (from /proc/mounts)."""
    path = Path(path).resolve()
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = mount == "/" or str(path) == mount or str(path).startswith(mount + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


# -- the programs ----------------------------------------------------------------------
def nop_program(n: int) -> ul.Program:
    """``n`` linked no-ops (1 <= n <= 64, ``MAX_ATOMS``): the chain-length sweep."""
    s = ul.Syslet()
    for _ in range(n):
        s.nop()
    return s.compile()


def nop4_program() -> ul.Program:
    """Four linked no-ops: the cost of an execution with no work in it."""
    return nop_program(4)


def file3_program() -> tuple[ul.Program, ul.Ref]:
    """openat($path) -> read(fd, 4096) -> close(fd); returns the program and
    the Ref of the read, whose value is the bytes read."""
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"), os.O_RDONLY)
    data = s.read(fd, FILE_SIZE, stop=ul.STOP_ON_NON_POSITIVE)
    s.close(fd)
    return s.compile(), data


def tcp5_program(port: int) -> tuple[ul.Program, ul.Ref]:
    """socket -> connect(127.0.0.1:port) -> send 64 B -> recv 64 B -> close:
    one short connection; returns the program and the Ref of the recv."""
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, (LOCALHOST, port))
    # MSG_WAITALL, as the C reference: "all 64 bytes" is then what the kernel
    # checks, so the whole chain is one link with one CQE (see explain()).
    s.send(fd, MESSAGE, socket.MSG_WAITALL)
    got = s.recv(fd, MSG_SIZE, socket.MSG_WAITALL, stop=ul.STOP_ON_NON_POSITIVE)
    s.close(fd)
    return s.compile(), got


def rr_program() -> tuple[ul.Program, ul.Ref]:
    """send 64 B -> recv 64 B on the connected socket ``$fd`` (a plain int fd):
    one request-response; returns the program and the Ref of the recv."""
    s = ul.Syslet()
    s.send(ul.Param("fd"), MESSAGE, socket.MSG_WAITALL)
    got = s.recv(ul.Param("fd"), MSG_SIZE, socket.MSG_WAITALL, stop=ul.STOP_ON_NON_POSITIVE)
    return s.compile(), got


# -- the echo server -------------------------------------------------------------------
class EchoServer:
    """``benchmarks/c/echo_server`` on 127.0.0.1 and a free port, in its own
    process: the io_uring engine (DEFER_TASKRUN) only makes progress inside
    the owning thread's wait/submit, so the peer cannot be a thread of the
    benchmark process.

    ``close_after=N``: the server closes each connection once it has echoed N
    bytes, so for one-shot clients it closes first and the TIME_WAIT sockets
    are its own (on its one port), not the client's (on ephemeral ports)."""

    def __init__(self, close_after: int = 0) -> None:
        argv = [str(ECHO_SERVER)]
        if close_after:
            argv += ["-c", str(close_after)]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.stdout.close()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{' '.join(argv)} did not start ({self.proc.returncode})")
        self.port = int(line)
        self.address = (LOCALHOST, self.port)

    def check(self) -> None:
        """Raise if the server is no longer running."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{' '.join(self.argv)} exited with {self.proc.returncode}")

    def stop(self) -> None:
        """Stop it by process id (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connected_sockets(address: tuple[str, int], n: int, *, blocking: bool) -> list[socket.socket]:
    """``n`` TCP connections to ``address`` with TCP_NODELAY, each checked
    with one echo (the caller closes them)."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(MESSAGE)
        got = b""
        while len(got) < MSG_SIZE and (chunk := sock.recv(MSG_SIZE - len(got))):
            got += chunk
        if got != MESSAGE:
            raise RuntimeError(f"the echo server at {address} answered {got!r}")
        sock.setblocking(blocking)
        socks.append(sock)
    return socks


# -- the C programs --------------------------------------------------------------------
def build_c_ref() -> Path:
    """``make -C benchmarks/c`` (a no-op when up to date): the liburing
    reference and the echo server; returns the reference binary."""
    proc = subprocess.run(["make", "-C", str(C_DIR)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the C programs failed:\n{proc.stdout}{proc.stderr}")
    return C_REF


def c_ref_argv(
    workload: str,
    executions: int,
    *,
    directory: Path | None = None,
    nfiles: int = NFILES,
    batch: int = BATCH,
    port: int | None = None,
    chain: int = 4,
) -> list[str]:
    """The command line of the C reference for ``executions`` executions of
    ``workload`` (see ``c_ref_seconds``; 0 executions: setup and teardown only)."""
    unit = {"file3": nfiles, "file1": nfiles, "file3refill": nfiles, "nop1": 1}.get(workload, batch)
    loops, rest = divmod(executions, unit)
    if rest or loops < 0:
        raise ValueError(f"{workload}: {executions} executions is not a whole number of {unit}")
    if workload == "nop4":
        return [str(C_REF), "nop4", str(loops), str(batch)]
    if workload == "nop1":
        return [str(C_REF), "nop1", str(loops)]
    if workload == "nop":
        return [str(C_REF), "nop", str(loops), str(batch), str(chain)]
    if workload in ("tcp5", "rr"):
        if port is None:
            raise ValueError(f"{workload} needs the port of an echo server")
        return [str(C_REF), workload, str(loops), str(port), str(batch)]
    if workload in ("file3", "file1", "file3refill"):
        directory = bench_dir() if directory is None else Path(directory)
        argv = [str(C_REF), workload, str(loops), str(directory), str(nfiles)]
        return argv if workload == "file1" else [*argv, str(batch)]
    raise ValueError(f"unknown workload {workload!r}")


def c_ref_seconds(
    workload: str,
    executions: int,
    *,
    directory: Path | None = None,
    nfiles: int = NFILES,
    batch: int = BATCH,
    port: int | None = None,
    chain: int = 4,
) -> float:
    """Run the C reference for ``executions`` executions of ``workload``
    (``"nop4"``, ``"nop"`` (``chain`` linked no-ops), ``"tcp5"`` and ``"rr"``
    (``batch`` connections, ``executions / batch`` request-responses each): a
    multiple of ``batch``, tcp5 and rr against the echo server on ``port``;
    ``"nop1"``: one NOP per submit_and_wait, any number; ``"file3"``: a
    multiple of ``nfiles``, whole passes over the file set in submits of
    ``batch``; ``"file1"``: the same passes, one chain per submit_and_wait;
    ``"file3refill"``: the same passes with ``batch`` chains in flight, each
    refilled as it completes) and return the seconds it measured around its
    own loop (process start and setup excluded)."""
    argv = c_ref_argv(
        workload,
        executions,
        directory=directory,
        nfiles=nfiles,
        batch=batch,
        port=port,
        chain=chain,
    )
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    fields = dict(item.split("=", 1) for item in proc.stdout.split())
    if int(fields["executions"]) != executions:
        raise RuntimeError(
            f"{' '.join(argv)} ran {fields['executions']} executions, expected {executions}"
        )
    return int(fields["elapsed_ns"]) / 1e9


def write_json(path: Path, result: object) -> None:
    """Write ``result`` to ``path`` whole or not at all (via a temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
