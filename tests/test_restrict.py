"""Restricted rings: ``Engine(restrict=[...])`` runs the programs it was
given (and any using the same ops), refuses others at submit with
``TranslateError``, and on io_uring the kernel itself refuses any other SQE
(tested with raw SQEs pushed into the engine's own ring)."""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

import pytest
from uringlets._ring import ffi, lib

import uringlets as ul
from uringlets import kernel


def file_program() -> ul.Program:
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    s.read(fd, 64)
    return s.compile()


def unlink_program() -> ul.Program:
    """Allowed atoms first (openat, read), then one no restriction here allows."""
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"))
    s.read(fd, 1)
    s.unlinkat(ul.Param("path"))
    return s.compile()


@pytest.fixture(params=["uring", "threads"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_allowed_programs_run_and_others_are_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"restricted\n")
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    allowed = file_program()
    with ul.Engine(kind, restrict=[allowed]) as eng:
        assert eng.restricted_in_kernel is (kind == "uring")
        c = eng.run(allowed, path=bytes(path))
        assert c.ok and c.results == (0, 11)
        # another program of the same ops is allowed too
        c = eng.run(file_program(), path=bytes(path))
        assert c.results == (0, 11)
        bad = unlink_program()
        for start in (
            lambda: eng.run(bad, path=bytes(victim)),
            lambda: eng.submit(bad, path=bytes(victim)),
            lambda: eng.submit_many(bad, params=[{"path": bytes(victim)}]),
        ):
            with pytest.raises(ul.TranslateError, match=r"atom 2 \(unlinkat\).*not allowed"):
                start()
        assert victim.exists() and eng.in_flight == 0
        assert eng.run(allowed, path=bytes(path)).ok  # still usable


def test_timeouts_cancels_and_exports_work_restricted(kind: str, tmp_path: Path) -> None:
    """The engine's own SQEs (LINK_TIMEOUT, ASYNC_CANCEL, FIXED_FD_INSTALL)
    stay allowed."""
    a, b = socket.socketpair()
    try:
        s = ul.Syslet()
        s.recv(ul.Param("fd"), 8, timeout=0.05)
        timed = s.compile()
        s = ul.Syslet()
        s.recv(ul.Param("fd"), 8)
        blocking = s.compile()
        s = ul.Syslet()
        fd = s.openat(ul.Param("path"))
        s.export(fd)
        exporting = s.compile()
        (tmp_path / "x").write_bytes(b"x")
        with ul.Engine(kind, restrict=[timed, blocking, exporting]) as eng:
            assert eng.run(timed, fd=a.fileno()).results == (-errno.ETIME,)
            h = eng.submit(blocking, fd=a.fileno())
            assert eng.cancel(h)
            (c,) = eng.wait(1, 5)
            assert c.cancelled
            c = eng.run(exporting, path=bytes(tmp_path / "x"))
            exported = c[fd]
            assert os.read(exported, 8) == b"x"
            os.close(exported)
    finally:
        a.close()
        b.close()


def raw_sqe(opcode: int, fd: int, flags: int = 0, addr: int = 0, length: int = 0) -> bytes:
    sqe = bytearray(64)
    struct.pack_into("=BBHi", sqe, 0, opcode, flags, 0, fd)
    struct.pack_into("=QQI", sqe, 8, 0, addr, length)
    struct.pack_into("=Q", sqe, 32, 0xABCDEF)  # user_data: no batch of the engine's
    return bytes(sqe)


def push_raw(ring: object, sqe: bytes) -> int:
    """Push one raw SQE into ``ring``, wait for its CQE and take it before
    the engine could see it; returns its result."""
    image = ffi.from_buffer(sqe)
    values = ffi.new("int64_t[1]")
    assert lib.ur_push(ring, image, 0, 1, ffi.NULL, 0, values, 1, 1, 0, 0, 0) == 1
    assert lib.ur_enter(ring, 1, 1_000_000_000) >= 0
    ud, res = ffi.new("uint64_t[1]"), ffi.new("int32_t[1]")
    unused = ffi.new("uint32_t[1]"), ffi.new("int32_t[1]")
    counts, runs = ffi.new("unsigned[2]"), ffi.new("int32_t[]", lib.UR_RUN_FIELDS)
    args = (ud, res, *unused, 1, counts, runs, counts + 1, counts)
    assert lib.ur_reap_split(ring, ffi.NULL, ffi.NULL, 0, *args) == 1
    assert ud[0] == 0xABCDEF
    return int(res[0])


@pytest.mark.skipif(
    "RESTRICTIONS" not in kernel.probe().extras, reason="this kernel cannot restrict rings"
)
def test_the_kernel_refuses_other_sqes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    allowed = file_program()
    with open(path, "rb") as f, ul.Engine("uring", restrict=[allowed]) as eng:
        ring = eng._backend.io._ring  # type: ignore[attr-defined]
        buf = ffi.new("char[16]")
        addr = int(ffi.cast("uintptr_t", buf))
        read = kernel.opcode("READ")
        # an allowed op: runs (the control: the test can tell them apart)
        assert push_raw(ring, raw_sqe(read, f.fileno(), addr=addr, length=4)) == 4
        assert ffi.buffer(buf, 4)[:] == b"0123"
        # an op no program uses: refused by the kernel
        assert push_raw(ring, raw_sqe(kernel.opcode("NOP"), -1)) == -errno.EACCES
        unlink = kernel.opcode("UNLINKAT")
        assert push_raw(ring, raw_sqe(unlink, -100, addr=ul_path(path))) == -errno.EACCES
        assert path.exists()
        # an allowed op with a flag no program uses (IOSQE_ASYNC)
        refused = raw_sqe(read, f.fileno(), flags=lib.IOSQE_ASYNC, addr=addr, length=4)
        assert push_raw(ring, refused) == -errno.EACCES
        assert eng.run(allowed, path=bytes(path)).results == (0, 10)  # the engine goes on


_KEEP: list[object] = []


def ul_path(path: Path) -> int:
    buf = ffi.new("char[]", bytes(path))
    _KEEP.append(buf)
    return int(ffi.cast("uintptr_t", buf))


def test_unrestricted_engines_run_anything(kind: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    with ul.Engine(kind) as eng:
        assert eng.restricted_in_kernel is False
        assert eng.run(unlink_program(), path=bytes(victim)).results == (0, 0, 0)
    assert not victim.exists()


def test_bad_restrict_arguments() -> None:
    with pytest.raises(ValueError, match="at least one program"):
        ul.Engine("threads", restrict=[])
    with pytest.raises(TypeError, match="Programs"):
        ul.Engine("threads", restrict=[ul.Syslet()])  # type: ignore[list-item]


def test_explain_says_whether_rings_can_be_restricted() -> None:
    text = file_program().explain()
    if not kernel.probe().available:
        pytest.skip("no io_uring here: explain() says so instead")
    can = "RESTRICTIONS" in kernel.probe().extras
    assert ("restricted rings: yes" in text) is can
    assert ("restricted rings: no" in text) is (not can)
