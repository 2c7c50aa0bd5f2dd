"""Run as a child process: install a seccomp filter that makes the io_uring
system calls fail with EPERM (as Docker's default profile does), then use
uringlets and print what happened as JSON on stdout."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import struct
import sys

SYSCALLS = (425, 426, 427)  # io_uring_setup, io_uring_enter, io_uring_register
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[platform.machine()]
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
LD_ABS, JEQ, RET = 0x20, 0x15, 0x06


def install_filter() -> None:
    insns = [
        (LD_ABS, 0, 0, 4),  # A = seccomp_data.arch
        (JEQ, 1, 0, ARCH),  # same arch: go on
        (RET, 0, 0, RET_ALLOW),
        (LD_ABS, 0, 0, 0),  # A = seccomp_data.nr
    ]
    deny = len(insns) + len(SYSCALLS) + 1
    for nr in SYSCALLS:
        here = len(insns)
        insns.append((JEQ, deny - here - 1, 0, nr))
    insns.append((RET, 0, 0, RET_ALLOW))
    insns.append((RET, 0, 0, RET_ERRNO | errno.EPERM))
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(insns), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def main() -> None:
    directory = sys.argv[1]
    install_filter()
    # The filter is real: the raw system call now fails with EPERM.
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    blocked = libc.syscall(425, 4, params) == -1 and ctypes.get_errno() == errno.EPERM

    import uringlets as ul

    report: dict[str, object] = {"blocked": blocked}
    with ul.Engine() as eng:
        report["kind"] = eng.kind
        report["reason"] = eng.fallback_reason
        s = ul.Syslet()
        fd = s.openat(ul.Param("path"))
        data = s.read(fd, 100)
        s.close(fd)
        st = s.statx(ul.Param("path"))
        prog = s.compile()
        report["explain"] = prog.explain()
        c = eng.run(prog, path=os.path.join(directory, "ten"))
        report["file"] = {"results": c.results, "data": c[data].decode(), "size": c[st].st_size}
        c = eng.run(prog, path=os.path.join(directory, "missing"))
        report["missing"] = {"results": c.results, "stopped_at": c.stopped_at}
        hs = eng.submit_many(prog, 50, path=os.path.join(directory, "ten"))
        report["many"] = sorted({tuple(c.results) for c in eng.wait(len(hs))})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
