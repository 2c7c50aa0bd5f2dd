"""Differential conformance: random programs over a sandbox give the same
per-atom results, stop point, data and sandbox afterwards on the io_uring
engine, the thread engine and the reference interpreter.

CI runs the ``ci`` hypothesis profile (2,000 programs), and the ``kernel``
one (150) under each older kernel it boots; the deep profile runs 100,000:
``HYPOTHESIS_PROFILE=deep .venv/bin/python -m pytest tests/test_conformance.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uringlets as ul
from uringlets.threads import run_reference

from .conftest import ALL_RULES, open_fds

PATHS = ["ten", "empty", "page", "dir", "dir/inner", "emptydir", "missing", "new1", "new2",
         "ten/x", "dir/new"]  # fmt: skip
FLAGS = [
    os.O_RDONLY,
    os.O_WRONLY | os.O_CREAT,
    os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    os.O_RDONLY | os.O_DIRECTORY,
    os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    os.O_RDWR | os.O_APPEND,
]
RULES = ALL_RULES
SIZES = [0, 1, 5, 10, 100, 4096]
DATA = [b"", b"x", b"hello", b"0123456789abcdef"]
BAD_FD = 1 << 20

settings.register_profile(
    "ci", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "deep", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "dev", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck)
)
# the sample CI runs under other kernels booted with TCG (scripts/ci-kernels.sh)
settings.register_profile(
    "kernel", max_examples=150, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# An atom spec: (op, args) with paths as indexes into PATHS, descriptors as
# "ref k" (the k-th openat so far) or BAD_FD, data as bytes or "read k", a
# read's size as an int or ("size", n, at_most): Param "n<atom>" bound to n.
AtomSpec = tuple[str, dict[str, Any], int]


@st.composite
def programs(draw: st.DrawFn) -> list[AtomSpec]:
    n = draw(st.integers(1, 12))
    specs: list[AtomSpec] = []
    opens: list[int] = []  # atom indexes of openat atoms
    reads: list[int] = []
    for i in range(n):
        rule = draw(st.sampled_from(RULES))
        choices = ["openat", "statx", "unlinkat", "mkdirat", "renameat", "nop", "timeout"]
        if opens:
            choices += ["close", "read", "read", "write", "fsync", "fstat"]
        op = draw(st.sampled_from(choices))

        def fd() -> Any:
            if opens and draw(st.integers(0, 9)):
                return ("ref", draw(st.sampled_from(opens)))
            return BAD_FD

        path = draw(st.integers(0, len(PATHS) - 1))
        if op == "openat":
            args = {"path": path, "flags": draw(st.sampled_from(FLAGS)),
                    "mode": draw(st.sampled_from([0o600, 0o644, 0o755]))}  # fmt: skip
            opens.append(i)
        elif op in ("close", "fsync", "fstat"):
            args = {"fd": fd()}
        elif op == "read":
            size: Any = draw(st.sampled_from(SIZES))
            if size and draw(st.booleans()):  # a size Param: (bound to, at_most)
                size = ("size", size, draw(st.sampled_from([size, size + 7, 8192])))
            args = {"fd": fd(), "size": size,
                    "offset": draw(st.sampled_from([None, None, 0, 3]))}  # fmt: skip
            reads.append(i)
        elif op == "write":
            data: Any = draw(st.sampled_from(DATA[1:]))  # an empty send gets no echo to wait for
            if reads and draw(st.booleans()):
                data = ("read", draw(st.sampled_from(reads)))
            args = {"fd": fd(), "data": data, "offset": draw(st.sampled_from([None, 0, 2]))}
        elif op == "statx":
            args = {"path": path, "follow_symlinks": draw(st.booleans())}
        elif op == "unlinkat":
            args = {"path": path, "rmdir": draw(st.booleans())}
        elif op == "mkdirat":
            args = {"path": path}
        elif op == "renameat":
            args = {"src": path, "dst": draw(st.integers(0, len(PATHS) - 1))}
        elif op == "timeout":
            args = {"seconds": draw(st.sampled_from([0, 0.001]))}
        else:
            args = {}
        specs.append((op, args, rule))
    return specs


# Ops a program may be compiled as if the kernel lacked them (older kernels):
# they then run as userspace steps, and without FIXED_FD_INSTALL the
# descriptors they need are real fds instead of slots.
MAYBE_MISSING = ["FIXED_FD_INSTALL", "OPENAT", "CLOSE", "READ", "WRITE", "STATX", "UNLINKAT"]


def build(specs: list[AtomSpec], missing: tuple[str, ...] = ()) -> tuple[ul.Program, list[ul.Ref]]:
    s = ul.Syslet()
    refs: list[ul.Ref] = []

    def value(v: Any, kind: str, index: int) -> Any:
        if isinstance(v, tuple) and v[0] == "size":
            return ul.Param(f"n{index}", at_most=v[2])
        if isinstance(v, tuple):
            return refs[v[1]]
        if kind == "path":
            return ul.Param(f"p{v}")
        return v

    for i, (op, args, rule) in enumerate(specs):
        call = {
            name: value(v, "path" if name in ("path", "src", "dst") else "", i)
            for name, v in args.items()
        }
        refs.append(getattr(s, op)(**call, stop=rule))
    return s.compile(ul.probe().without_ops(missing)), refs


def size_params(specs: list[AtomSpec]) -> dict[str, int]:
    """The values the size Params of ``build``'s program are bound to."""
    return {
        f"n{i}": args["size"][1]
        for i, (op, args, _) in enumerate(specs)
        if op == "read" and isinstance(args["size"], tuple)
    }


def make_sandbox(root: Path, salt: int = 0) -> Path:
    """The sandbox; ``salt`` rotates the bytes of the files (same sizes), so
    that sandboxes told apart by their data cannot be mixed up unseen."""
    root.mkdir()
    (root / "ten").write_bytes(b"0123456789"[salt % 10 :] + b"0123456789"[: salt % 10])
    (root / "empty").write_bytes(b"")
    (root / "page").write_bytes(bytes((i + salt) % 256 for i in range(256)) * 16)
    (root / "dir").mkdir()
    (root / "dir" / "inner").write_bytes(b"x")
    (root / "emptydir").mkdir()
    return root


def snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), p.read_bytes())
    return out


def observe(c: ul.Completion, specs: list[AtomSpec], refs: list[ul.Ref]) -> Any:
    values = []
    for (op, _, _), ref in zip(specs, refs, strict=True):
        v = c[ref]
        if op in ("statx", "fstat") and v is not None:
            v = (stat.S_IFMT(v.st_mode), v.st_size, v.st_nlink)
        elif op in ("openat", "socket"):
            v = None  # descriptors are normalised away
        values.append(v)
    return c.results, c.stopped_at, c.ok, values


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, ul.Engine]]:
    made = {kind: ul.Engine(kind, capacity=8) for kind in ("uring", "threads")}
    yield made
    for eng in made.values():
        eng.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@given(
    specs=programs(),
    missing=st.one_of(
        st.just(()), st.lists(st.sampled_from(MAYBE_MISSING), unique=True).map(tuple)
    ),
)
def test_uring_threads_and_reference_agree(engines, workdir, specs, missing):
    prog, refs = build(specs, missing)
    fds_before = open_fds()
    outcomes = {}
    for kind in ("reference", "uring", "threads"):
        root = workdir / kind
        if root.exists():
            shutil.rmtree(root)
        make_sandbox(root)
        params: dict[str, Any] = {f"p{i}": str(root / p) for i, p in enumerate(PATHS)}
        params = {k: v for k, v in params.items() if k in prog.param_kinds}
        params.update(size_params(specs))
        if kind == "reference":
            c = run_reference(prog, **params)
        else:
            c = engines[kind].run(prog, **params)
        outcomes[kind] = (observe(c, specs, refs), snapshot(root))
    assert outcomes["uring"] == outcomes["reference"], prog.explain()
    assert outcomes["threads"] == outcomes["reference"], prog.explain()
    assert open_fds() == fds_before


BATCH = 6


@pytest.fixture(scope="module")
def batch_engines() -> Iterator[dict[str, ul.Engine]]:
    """Shared by the examples, so that buffers and slots are reused across
    batches; capacity 64 gives 256 slots, enough for any program here."""
    made = {kind: ul.Engine(kind, capacity=64) for kind in ("uring", "threads")}
    yield made
    for eng in made.values():
        eng.close()


@given(specs=programs())
@settings(max_examples=max(settings().max_examples // 10, 20))
def test_batches_agree_with_the_reference(batch_engines, workdir, specs):
    """One submit_many of BATCH executions, each on a sandbox of its own:
    every completion, and every sandbox afterwards, equals the reference's.
    Exercises what single runs cannot: the clean endings of a batch finished
    together, in any order, beside executions that left the clean path."""
    prog, refs = build(specs, ())
    fds_before = open_fds()

    def params_for(root: Path, k: int) -> dict[str, Any]:
        """Execution k's: its sandbox, and its sizes (each its own)."""
        params: dict[str, Any] = {f"p{i}": str(root / p) for i, p in enumerate(PATHS)}
        params = {k: v for k, v in params.items() if k in prog.param_kinds}
        sizes = {name: max(1, n - k) for name, n in size_params(specs).items()}
        return {**params, **sizes}

    expected = []
    for k in range(BATCH):  # sandbox k has its own bytes (salt k)
        root = workdir / f"batch-reference-{k}"
        if root.exists():
            shutil.rmtree(root)
        make_sandbox(root, salt=k)
        c = run_reference(prog, **params_for(root, k))
        expected.append((observe(c, specs, refs), snapshot(root)))
    for kind in ("uring", "threads"):
        roots = [workdir / f"batch-{kind}-{k}" for k in range(BATCH)]
        for k, r in enumerate(roots):
            if r.exists():
                shutil.rmtree(r)
            make_sandbox(r, salt=k)
        eng = batch_engines[kind]
        params = [params_for(r, k) for k, r in enumerate(roots)]
        eng.submit_many(prog, params=params, tags=range(BATCH))
        done = sorted(eng.wait(BATCH, timeout=30), key=lambda c: c.tag)
        assert [c.tag for c in done] == list(range(BATCH))
        for c, r, want in zip(done, roots, expected, strict=True):
            assert (observe(c, specs, refs), snapshot(r)) == want, (kind, prog.explain())
    assert open_fds() == fds_before


# --------------------------------------------------------------------------
# Network programs: a loopback echo server and a port that refuses.
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """The echo server runs in another process, stopped by process id."""
    script = Path(__file__).with_name("echo_server.py")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)


@st.composite
def net_programs(draw: st.DrawFn) -> list[AtomSpec]:
    """socket, [setsockopt], connect (echo or refused), (send, recv)*, [shutdown],
    close.  Each recv follows a send and can hold all of it, so what it gets
    does not depend on timing."""

    def rule() -> int:
        return draw(st.sampled_from(RULES))

    specs: list[AtomSpec] = []
    if draw(st.booleans()):
        specs.append(("nop", {}, rule()))  # refused links: the atoms before one still run
    # a type the kernel refuses when it prepares the request (EINVAL), sometimes
    specs.append(("socket", {"refused": draw(st.integers(0, 5)) == 0}, rule()))
    if draw(st.booleans()):
        specs.append(("setsockopt", {}, rule()))
    specs.append(("connect", {"to": draw(st.sampled_from(["echo", "echo", "refused"]))}, rule()))
    last_data = 0
    for _ in range(draw(st.integers(0, 2))):
        data: Any = draw(st.sampled_from(DATA[1:]))  # an empty send gets no echo to wait for
        size = len(data)
        recvs = [i for i, s in enumerate(specs) if s[0] == "recv"]
        if recvs and draw(st.booleans()):
            data = ("read", recvs[-1])  # echo what came back
            size = last_data
        specs.append(("send", {"data": data}, rule()))
        bufsize = draw(st.sampled_from([max(size, 1), size + 10, 4096]))
        specs.append(("recv", {"bufsize": bufsize}, rule()))
        last_data = size
    if draw(st.booleans()):
        specs.append(("shutdown", {"how": draw(st.sampled_from([0, 1, 2]))}, rule()))
    specs.append(("close", {}, rule()))
    return specs


def build_net(specs: list[AtomSpec], ports: dict[str, int]) -> tuple[ul.Program, list[ul.Ref]]:
    s = ul.Syslet()
    refs: list[ul.Ref] = []
    fd = None
    for op, args, rule in specs:
        if op == "nop":
            ref = s.nop(stop=rule)
        elif op == "socket":
            kind = socket.SOCK_STREAM | (0x40 if args["refused"] else 0)
            fd = s.socket(socket.AF_INET, kind, stop=rule)
            ref = fd
        elif op == "setsockopt":
            ref = s.setsockopt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1, stop=rule)
        elif op == "connect":
            ref = s.connect(fd, ("127.0.0.1", ports[args["to"]]), stop=rule, timeout=5)
        elif op == "send":
            data = args["data"]
            data = refs[data[1]] if isinstance(data, tuple) else data
            ref = s.send(fd, data, stop=rule, timeout=5)
        elif op == "recv":
            ref = s.recv(fd, args["bufsize"], stop=rule, timeout=5)
        elif op == "shutdown":
            ref = s.shutdown(fd, args["how"], stop=rule)
        else:
            ref = s.close(fd, stop=rule)
        refs.append(ref)
    return s.compile(), refs


@given(specs=net_programs())
@settings(max_examples=max(settings().max_examples // 10, 20))
def test_network_programs_agree(engines, echo_port, specs):
    refused = _refused_port()
    prog, refs = build_net(specs, {"echo": echo_port, "refused": refused})
    fds_before = open_fds()
    outcomes = {
        "reference": observe(run_reference(prog), specs, refs),
        "uring": observe(engines["uring"].run(prog), specs, refs),
        "threads": observe(engines["threads"].run(prog), specs, refs),
    }
    assert outcomes["uring"] == outcomes["reference"], prog.explain()
    assert outcomes["threads"] == outcomes["reference"], prog.explain()
    assert open_fds() == fds_before


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
