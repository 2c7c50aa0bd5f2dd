"""What the running kernel offers io_uring users, probed once per process.

Only this module imports the ``_ring`` extension (the others take its
``ffi`` and ``lib`` from here).  It reads the ABI constants
(``lib.IORING_*``) for the translator and owns ring setup with fallback: we
ask for ``SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL | COOP_TASKRUN``, and
on ``-EINVAL`` drop the newest flag and retry, recording what was dropped so
``explain()`` can say so.  Features are probed (``IORING_REGISTER_PROBE``),
never assumed from the kernel version.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ._ring import ffi, lib

# io_uring_setup errors that mean "io_uring is not for this process": blocked
# by seccomp (EPERM), not built in (ENOSYS), refused (EINVAL), no memory.
UNAVAILABLE_ERRNOS = frozenset({errno.EPERM, errno.ENOSYS, errno.EINVAL, errno.ENOMEM})

# Flags in the order we give them up on -EINVAL: newest and most optional first.
# DEFER_TASKRUN needs SINGLE_ISSUER, so it goes before it.
_SETUP_FLAGS: tuple[tuple[str, int], ...] = (
    # SQ_TASKRUN tells an event loop's poll that deferred work is left (ur_cycle)
    ("TASKRUN_FLAG", lib.IORING_SETUP_TASKRUN_FLAG),
    ("DEFER_TASKRUN", lib.IORING_SETUP_DEFER_TASKRUN),
    ("SINGLE_ISSUER", lib.IORING_SETUP_SINGLE_ISSUER),
    ("COOP_TASKRUN", lib.IORING_SETUP_COOP_TASKRUN),
    ("SUBMIT_ALL", lib.IORING_SETUP_SUBMIT_ALL),
)


# Catalogue kernel ops that are a sub-command of an opcode (probed by trying):
# {name: the opcode}.
EXTRA_OPS = {"URING_CMD_SETSOCKOPT": "URING_CMD"}
# Capabilities probed that are not ops: ``KernelFeatures.extras`` also holds
# "RESTRICTIONS" (rings can be restricted, 5.10).


def opcode(name: str) -> int:
    """The ABI number of ``IORING_OP_<name>`` (or our name for a newer op)."""
    name = EXTRA_OPS.get(name, name)
    value = getattr(lib, f"IORING_OP_{name}", None)
    if value is None:
        value = getattr(lib, f"URINGLETS_OP_{name}")
    return int(value)


def constant(name: str) -> int:
    """An ``IORING_*``/``IOSQE_*`` constant as the kernel header defines it."""
    return int(getattr(lib, name))


@dataclass(frozen=True)
class KernelFeatures:
    """The result of one probe.  ``available`` is False with ``reason`` set
    when io_uring cannot be used at all (blocked by seccomp, disabled by
    sysctl, missing)."""

    available: bool
    reason: str | None = None
    ops: frozenset[int] = frozenset()
    setup_flags: int = 0
    dropped_flags: tuple[str, ...] = ()
    features: int = 0
    forced_missing: frozenset[str] = field(default=frozenset())

    # Capabilities that are not opcodes of their own, each probed for real.
    extras: frozenset[str] = field(default=frozenset())

    def has_op(self, name: str) -> bool:
        if name in self.forced_missing:
            return False
        if name in EXTRA_OPS:
            return name in self.extras
        return opcode(name) in self.ops

    def without_ops(self, names: Iterable[str]) -> KernelFeatures:
        """A copy that reports ``names`` missing (to test the fallbacks)."""
        return replace(self, forced_missing=self.forced_missing | frozenset(names))


# What ``Engine(progress="kernel")`` does without: completion work is then
# run by the kernel as soon as it is done (interrupting the owner thread like
# a signal), not deferred to the owner's next enter, so a chain goes on after
# a blocking atom without the owner calling in.
OWNER_PROGRESS_FLAGS = frozenset({"TASKRUN_FLAG", "DEFER_TASKRUN", "COOP_TASKRUN"})


def setup_ring(
    entries: int, cq_entries: int = 0, *, disabled: bool = False, without: Iterable[str] = ()
) -> tuple[Any, int, tuple[str, ...]]:
    """Create a ring, giving up flags the kernel refuses; ``disabled``: with
    IORING_SETUP_R_DISABLED, which is never given up (the caller registers
    restrictions, then enables it); ``without``: flags not to ask for.

    Returns ``(ring, flags, dropped)``: the ``struct ur_ring *`` (owned by the
    caller, released with ``lib.ur_teardown``), the setup flags it has, and
    the names of the flags dropped.  Raises ``OSError`` when no combination
    works."""
    ring = ffi.new("struct ur_ring *")
    unwanted = set(without)
    wanted = [(name, bit) for name, bit in _SETUP_FLAGS if name not in unwanted]
    dropped: list[str] = []
    while True:
        flags = lib.IORING_SETUP_R_DISABLED if disabled else 0
        for _, bit in wanted:
            flags |= bit
        err = lib.ur_setup(ring, entries, cq_entries, flags)
        if err == 0:
            return ring, flags, tuple(dropped)
        if err != -errno.EINVAL or not wanted:
            raise OSError(-err, f"io_uring_setup: {os.strerror(-err)}")
        name, _ = wanted.pop(0)
        dropped.append(name)


@functools.cache
def probe() -> KernelFeatures:
    """Probe once per process: can we set a ring up, with which flags, and
    which opcodes does the kernel support."""
    try:
        ring, flags, dropped = setup_ring(8)
    except OSError as exc:
        code = exc.errno or 0
        reason = f"io_uring_setup failed with {errno.errorcode.get(code, str(code))}"
        why = refusal(code)
        return KernelFeatures(available=False, reason=f"{reason} ({why})" if why else reason)
    try:
        supported = ffi.new("uint8_t[256]")
        n = lib.ur_probe_ops(ring.fd, supported, 256)
        if n < 0:
            reason = f"IORING_REGISTER_PROBE failed: {errno.errorcode.get(-n, -n)}"
            return KernelFeatures(available=False, reason=reason)
        ops = frozenset(i for i in range(256) if supported[i])
        extras = set()
        if opcode("URING_CMD") in ops and _try_setsockopt(ring):
            extras.add("URING_CMD_SETSOCKOPT")
        if _try_restrictions():
            extras.add("RESTRICTIONS")
        return KernelFeatures(
            available=True,
            ops=ops,
            setup_flags=flags,
            dropped_flags=dropped,
            features=int(ring.features),
            extras=frozenset(extras),
        )
    finally:
        lib.ur_teardown(ring)


DISABLED_SYSCTL = "/proc/sys/kernel/io_uring_disabled"
GROUP_SYSCTL = "/proc/sys/kernel/io_uring_group"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def refusal(code: int) -> str | None:
    """Who refused ``io_uring_setup`` with ``code``, as far as this process
    can tell: the ``kernel.io_uring_disabled`` sysctl (6.6+), a seccomp
    filter, or a kernel built without io_uring.  None: no idea."""
    disabled = _read(DISABLED_SYSCTL)
    if code == errno.EPERM and disabled == "2":
        return "kernel.io_uring_disabled=2: io_uring is disabled for every process"
    if code == errno.EPERM and disabled == "1":
        group = _read(GROUP_SYSCTL)
        who = (
            "CAP_SYS_ADMIN (kernel.io_uring_group is not set)"
            if group in (None, "-1")
            else f"members of kernel.io_uring_group (gid {group}) and CAP_SYS_ADMIN"
        )
        return f"kernel.io_uring_disabled=1: only {who} may use io_uring"
    status = _read("/proc/self/status") or ""
    if "\nSeccomp:\t2" in status and code in (errno.EPERM, errno.ENOSYS, errno.EACCES):
        return "a seccomp filter (as Docker's default profile) blocks io_uring_setup"
    if code == errno.ENOSYS:
        return "the kernel has no io_uring (CONFIG_IO_URING off, or older than 5.1)"
    return None


def _try_restrictions() -> bool:
    """Whether rings can be restricted (IORING_REGISTER_RESTRICTIONS, 5.10):
    a disabled ring restricted to NOP, then enabled."""
    try:
        ring, _, _ = setup_ring(2, disabled=True)
    except OSError:
        return False
    try:
        ops = ffi.new("uint8_t[]", [opcode("NOP")])
        return bool(lib.ur_restrict(ring, ops, 1, 0) == 0)
    finally:
        lib.ur_teardown(ring)


def _try_setsockopt(ring: Any) -> bool:
    """Whether ``IORING_OP_URING_CMD`` does ``SOCKET_URING_OP_SETSOCKOPT``
    (6.7): try SO_REUSEADDR on a throwaway socket."""
    sqe = bytearray(64)
    value = ffi.new("int *", 1)
    with socket.socket() as sock:
        struct.pack_into("=BBHi", sqe, 0, lib.IORING_OP_URING_CMD, 0, 0, sock.fileno())
        struct.pack_into("=I", sqe, 8, lib.URINGLETS_SOCKET_URING_OP_SETSOCKOPT)
        struct.pack_into("=II", sqe, 16, socket.SOL_SOCKET, socket.SO_REUSEADDR)
        struct.pack_into("=Q", sqe, 32, 1)  # user_data
        struct.pack_into("=I", sqe, 44, 4)  # optlen
        struct.pack_into("=Q", sqe, 48, int(ffi.cast("uintptr_t", value)))
        image = ffi.from_buffer(bytes(sqe))
        values = ffi.new("int64_t[1]")
        if lib.ur_push(ring, image, 0, 1, ffi.NULL, 0, values, 1, 1, 0, 0, 0) != 1:
            return False
        if lib.ur_enter(ring, 1, 1_000_000_000) < 0:
            return False
        ud, res = ffi.new("uint64_t[1]"), ffi.new("int32_t[1]")
        unused = ffi.new("uint32_t[1]"), ffi.new("int32_t[1]")
        counts, runs = ffi.new("unsigned[2]"), ffi.new("int32_t[]", lib.UR_RUN_FIELDS)
        # no batches (0): every CQE is an "other", copied to ud/res
        args = (ud, res, *unused, 1, counts, runs, counts + 1, counts)
        if lib.ur_reap_split(ring, ffi.NULL, ffi.NULL, 0, *args) != 1:
            return False
        return res[0] == 0 and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
