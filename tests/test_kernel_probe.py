"""The probe, ``python -m uringlets probe`` and ``explain()`` say what the
running kernel really has.

The kernel's own answer is asked here apart from the extension: an
``io_uring_setup`` and an ``IORING_REGISTER_PROBE`` made with ctypes.  And
the ops follow the kernel versions that brought them (BIND and LISTEN 6.11,
FIXED_FD_INSTALL 6.8, socket setsockopt 6.7).  These tests run on the
machine's kernel and, through ``scripts/test-kernel.sh``, on Debian 12's
6.1 (where BIND, LISTEN, FIXED_FD_INSTALL and setsockopt are missing, so
their userspace steps run for real) and on 6.12 with io_uring disabled.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import socket
import struct
import subprocess
import sys

import pytest

import uringlets as ul
from uringlets import atoms, kernel

SYS_IO_URING_SETUP, SYS_IO_URING_REGISTER = 425, 427  # the same number on every arch
IORING_REGISTER_PROBE = 8
IO_URING_OP_SUPPORTED = 1
PROBE_OPS = 256


def raw_probe() -> tuple[set[int] | None, int]:
    """The kernel's supported opcodes (None when no ring can be set up) and
    the errno of a refused setup."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(ctypes.c_long(SYS_IO_URING_SETUP), ctypes.c_uint(4), params)
    if fd < 0:
        return None, ctypes.get_errno()
    try:
        probe = ctypes.create_string_buffer(16 + 8 * PROBE_OPS)
        got = libc.syscall(
            ctypes.c_long(SYS_IO_URING_REGISTER),
            ctypes.c_uint(fd),
            ctypes.c_uint(IORING_REGISTER_PROBE),
            probe,
            ctypes.c_uint(PROBE_OPS),
        )
        if got < 0:
            raise OSError(ctypes.get_errno(), "IORING_REGISTER_PROBE")
        ops_len = probe.raw[1]
        supported = set()
        for i in range(ops_len):
            op, _, flags, _ = struct.unpack_from("=BBHI", probe.raw, 16 + 8 * i)
            if flags & IO_URING_OP_SUPPORTED:
                supported.add(op)
        return supported, 0
    finally:
        os.close(fd)


def kernel_version() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    assert found, platform.release()
    return int(found[1]), int(found[2])


def probe_json() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "uringlets", "probe", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


def probe_report() -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "uringlets", "probe"], capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout


def test_the_probe_reports_the_kernels_own_opcodes():
    raw, code = raw_probe()
    features = kernel.probe()
    status, report = probe_report()
    if raw is None:  # io_uring refused here (a sysctl, seccomp): the probe says so
        assert not features.available
        assert errno.errorcode[code] in (features.reason or "")
        assert status == 1 and "io_uring: not usable" in report
        return
    assert features.available and status == 0
    assert set(features.ops) == raw
    for name, op in sorted(atoms.CATALOGUE.items()):
        line = next(x for x in report.splitlines() if x.split()[:1] == [name])
        if op.kernel_op is None:
            assert "userspace step" in line
        elif op.kernel_op not in kernel.EXTRA_OPS:
            in_kernel = kernel.opcode(op.kernel_op) in raw
            assert ("in the kernel" in line) == in_kernel, line


def test_ops_follow_the_kernel_versions_that_brought_them():
    features = kernel.probe()
    if not features.available:
        pytest.skip(f"io_uring is not usable here: {features.reason} (the test above checks it)")
    version = kernel_version()
    assert features.has_op("BIND") == (version >= (6, 11))
    assert features.has_op("LISTEN") == (version >= (6, 11))
    assert features.has_op("FIXED_FD_INSTALL") == (version >= (6, 8))
    report = json.loads(probe_json())
    assert report["fixed_fd_install"] == (version >= (6, 8))
    assert features.has_op("URING_CMD_SETSOCKOPT") == (version >= (6, 7))
    assert features.has_op("SOCKET") and features.has_op("OPENAT")  # 5.19, 5.6


def listener() -> tuple[ul.Program, ul.Ref]:
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(fd, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(fd, ("127.0.0.1", 0))
    s.listen(fd, 8)
    s.export(fd)
    return s.compile(), fd


def test_explain_says_which_atoms_the_kernel_runs(make_engine):
    features = kernel.probe()
    prog, fd = listener()
    lines = {m[1]: m[0] for m in re.finditer(r"^\s+\d+ (\w+)\(.*$", prog.explain(), re.M)}
    assert set(lines) == {"socket", "setsockopt", "bind", "listen"}
    if not features.available:
        assert "every atom runs in userspace" in prog.explain()
    else:
        for name, op in (
            ("bind", "BIND"),
            ("listen", "LISTEN"),
            ("setsockopt", "URING_CMD_SETSOCKOPT"),
        ):
            says_userspace = "userspace: kernel lacks op" in lines[name]
            assert says_userspace == (not features.has_op(op)), lines[name]
    # and the program runs, whichever way: a real listening socket comes back
    eng = make_engine()
    c = eng.run(prog)
    assert c.ok, c
    sock = socket.socket(fileno=c[fd])
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
