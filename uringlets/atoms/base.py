"""The op catalogue's framework: ``Arg``, ``Op``, result kinds, ``SqeWriter``.

One entry per op, read by every other module and by no one restated:

* ``args``: the argument schema (name, kind, default); the builder validates
  against it, and ``kind`` says how a value reaches the SQE and the blocking
  call (``fd`` may be a Ref, ``path`` becomes a NUL-terminated buffer, ...);
* ``prep``: how to fill the SQE, written against the small ``SqeWriter``
  protocol that ``atom_writer.py`` implements (constants now, patch points for
  what changes per execution);
* ``call``: the blocking-call equivalent, used by the thread engine, the
  reference interpreter and the io_uring engine's userspace steps;
* ``result``: the result kind, which fixes the normalised result, the value
  ``c[ref]`` returns and, with ``full_length``, the kernel's failure rule.

The kernel's failure rule (when it breaks an ``IOSQE_IO_LINK``) is: a negative
result, or for ops with a ``full_length`` a transfer of any other length
(``read``/``write``: any short transfer; ``send``/``recv``: only with
``MSG_WAITALL``).  Since 6.0 some handlers (statx, unlinkat, mkdirat,
renameat, fsync) set a negative result *without* failing the request, unless
the error came before the handler ran (a bad fd): for those
``error_breaks_link`` is False, the kernel can be trusted neither to stop at
their errors nor to go on, and their errors post a CQE only without
``IOSQE_CQE_SKIP_SUCCESS``.  Results are *normalised* before a stop rule sees them, so
both engines agree: an atom that creates a descriptor reports 0 (the
descriptor lives in a slot or a private fd, reachable through its Ref), a
``timeout`` that slept its full time reports 0 (the kernel says ``-ETIME``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_ATOMS = 64
MAX_TRANSFER = 1 << 28  # bytes one read or write may move (256 MiB)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
STATX_BASIC_STATS = 0x7FF
STATX_SIZE = 256

# Result kinds: what a successful atom returns, normalised.
ZERO = "zero"  # 0 on success (close, unlinkat, ...)
FD = "fd"  # creates a descriptor; 0 on success, the descriptor via its Ref
COUNT = "count"  # bytes transferred (write, send)
BYTES = "bytes"  # bytes received; c[ref] is the data (read, recv)
STAT = "stat"  # 0 on success; c[ref] is an os.stat_result
SLEEP = "sleep"  # 0 after the full sleep
MESSAGE = "message"  # bytes received; c[ref] is a tuple, data first (recvmsg)

REQUIRED: Any = object()


@dataclass(frozen=True)
class CType:
    """A C integer type an argument passes through: a field of the SQE (as
    the kernel reads it) or a parameter of Python's blocking call."""

    name: str
    lo: int
    hi: int


C_INT = CType("int", -(2**31), 2**31 - 1)  # Python's "i" arguments (os.open flags, ...)
U32 = CType("__u32", 0, 2**32 - 1)  # an unsigned SQE field
OFF_T = CType("off_t", -(2**63), 2**63 - 1)  # loff_t in the kernel, Py_off_t in Python


@dataclass(frozen=True)
class Arg:
    """One argument.  ``kind`` is one of: ``fd`` (Ref to a descriptor-making
    atom, or an int fd), ``dirfd`` (None or an int fd), ``path``, ``int``,
    ``flags`` (an int fixed at compile time), ``size`` (0..MAX_TRANSFER, fixed
    at compile time: it sizes the buffer), ``offset`` (None = the file
    position, or >= 0), ``data`` (bytes, a Ref to a bytes-result atom, or a
    Param), ``seconds``, ``bool``, ``address``, ``optval``.  Kinds ``path``,
    ``int``, ``offset``, ``data`` and ``fd`` also take a Param, bound per
    execution; a ``size`` with ``bindable`` takes a Param with ``at_most``
    (the buffer's size; bound to 1..at_most), and the op's ``length`` is
    then None (known per execution: ``SqeWriter.out_buffer`` records it).

    ``fits``: for ``int`` and ``flags``, the C types the value passes
    through, as (the kernel's, Python's call's); the value must fit both
    (``bounds``), so neither the kernel truncates it nor Python raises
    OverflowError.  Int-like arguments are never negative: a negative value
    means something else to Python or to the kernel (socket's -1 defaults,
    a read's -1 offset), so both engines would not agree on it."""

    name: str
    kind: str
    default: Any = REQUIRED
    fits: tuple[CType, ...] = ()
    bindable: bool = False

    @property
    def bounds(self) -> tuple[int, int]:
        """(lowest, highest) value of an int-like argument."""
        if self.kind in ("fd", "dirfd"):
            fits: tuple[CType, ...] = (C_INT,)  # SQE fd is __s32; Python's fds are C ints
        elif self.kind == "offset":
            fits = (OFF_T,)  # SQE off (loff_t), os.pread's Py_off_t
        elif self.kind == "size":
            return 0, MAX_TRANSFER  # SQE len (__u32), Py_ssize_t: both hold it
        else:
            fits = self.fits
        if not fits:
            raise AssertionError(f"argument {self.name!r} ({self.kind}) declares no C types")
        return max(0, *(t.lo for t in fits)), min(t.hi for t in fits)

    def describe(self) -> str:
        """The range of an int-like argument, in words."""
        lo, hi = self.bounds
        types = " and ".join(dict.fromkeys(t.name for t in self.fits))
        return f"an int in {lo}..{hi}" + (f" (fits C types {types})" if types else "")


class SqeWriter(Protocol):
    """What ``prep`` functions write through (implemented by atom_writer.py).
    Every method takes the raw argument value (a constant, a Param or a Ref)
    and records a constant or a per-execution patch point."""

    def set(self, field: str, value: Any) -> None: ...
    def fd(self, value: Any) -> None: ...
    def second_fd(self, field: str, value: Any, flags_field: str, fixed_flag: str) -> None:
        """An op's other descriptor, in ``field``: a slot sets the op's own
        ``fixed_flag`` in ``flags_field`` (IOSQE_FIXED_FILE is ``fd``'s)."""
        ...

    def close_target(self, value: Any) -> None: ...
    def new_descriptor(self, field: str | None, cloexec: int) -> bool:
        """The atom makes a descriptor: a direct one in its slot (returns
        True; ``cloexec`` cleared from ``field``) or a real fd (False;
        ``cloexec`` set in ``field``).  ``field`` None: the op carries its
        flags elsewhere and sets ``cloexec`` itself."""
        ...

    def path(self, field: str, value: Any) -> None: ...
    def out_buffer(self, field: str, size: Any) -> None: ...
    def const_buffer(self, field: str, data: bytes) -> None: ...
    def data(self, addr_field: str, len_field: str, value: Any) -> None: ...
    def kernel_flag(self, field: str, name: str) -> None: ...
    def msghdr(
        self,
        field: str,
        *,
        out_size: int | None = None,
        data: Any = None,
        name: bytes | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Op:
    """One catalogue entry.  ``kernel_op`` names the io_uring opcode (None:
    the op always runs in userspace, on a real fd).  ``length(args)`` is the
    transfer length when known at compile time; ``short_fails(args)`` says
    whether the kernel treats a shorter transfer as failure."""

    name: str
    args: tuple[Arg, ...]
    result: str
    call: Callable[[Mapping[str, Any]], Any]
    kernel_op: str | None = None
    prep: Callable[[SqeWriter, Mapping[str, Any]], None] | None = None
    length: Callable[[Mapping[str, Any]], int | None] = lambda a: None
    short_fails: Callable[[Mapping[str, Any]], bool] = lambda a: False
    closes_fd: bool = False
    error_breaks_link: bool = True
    # The descriptors it creates are taken to be files that never block (so
    # the thread engine does not guard calls on them with poll()).
    opens_files: bool = False
    # poll() events the blocking call may wait for on its ``fd`` argument
    # (0: it never waits on a descriptor); lets the thread engine interrupt it.
    waits_for: int = 0
    # The value c[ref] gives, from the atom's scratch region (a sliceable C
    # buffer the kernel wrote) and its result; None: the first r bytes.
    decode: Callable[[Any, int], Any] | None = None
    # The blocking call made interruptible: call(args, wait) where
    # wait(fd, events) -> 0 when ready, ECANCELED or ETIME.
    interruptible: Callable[[Mapping[str, Any], Callable[[int, int], int]], Any] | None = None

    # Whether these arguments may go to the kernel at all: where io_uring's
    # op differs from the system call for some arguments, those run in
    # userspace instead.
    kernel_when: Callable[[Mapping[str, Any]], bool] = lambda a: True
    # SQE fields of this op beyond the common ones (plan.FIELDS), as
    # {name: (byte offset, width)}: a URING_CMD's command-specific layout.
    sqe_fields: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)
    # Where the address family of the socket it creates comes from: an int
    # argument holding it (socket), or the fd argument whose socket's family
    # it inherits (accept); None if it creates no socket.
    family_arg: str | None = None

    def value_from(self, region: Any, result: int) -> Any:
        """The typed value of a successful atom whose output the kernel wrote
        into ``region``."""
        if self.decode is not None:
            return self.decode(region, result)
        return region[:result]

    @property
    def creates_fd(self) -> bool:
        return self.result == FD

    def normalise(self, raw: int) -> int:
        """The result a stop rule sees, from the kernel's CQE result."""
        if self.result == SLEEP and raw == -errno.ETIME:
            return 0
        if self.result == FD and raw > 0:
            return 0
        return raw

    def full_length(self, args: Mapping[str, Any]) -> int | None:
        """The length whose short transfer the kernel treats as failure
        (None: only negative results fail, or the length is not yet known)."""
        return self.length(args) if self.short_fails(args) else None

    def kernel_fails(self, result: int, args: Mapping[str, Any], full: int | None = None) -> bool:
        """Whether the kernel certainly breaks a soft link after this
        (normalised) result.  ``full`` gives the length for transfers whose
        length is known only per execution."""
        if result < 0:
            return self.error_breaks_link
        if not self.short_fails(args):
            return False
        if full is None:
            full = self.length(args)
        return full is not None and result != full

    def success_result(self, args: Mapping[str, Any]) -> int | None:
        """The only normalised result the kernel counts as success, if there
        is exactly one."""
        if self.result in (ZERO, FD, STAT, SLEEP):
            return 0
        return self.full_length(args)

    def skippable(self, args: Mapping[str, Any]) -> bool:
        """Whether ``IOSQE_CQE_SKIP_SUCCESS`` is safe: a skipped CQE must mean
        the one success result, so every error must be a kernel failure."""
        return self.error_breaks_link and self.success_result(args) is not None

    def sample_results(self, args: Mapping[str, Any]) -> tuple[int, ...]:
        """Representatives of every class of result this atom can produce."""
        if self.result in (ZERO, FD, STAT, SLEEP):
            return (-errno.EIO, 0)
        full = self.full_length(args)
        if full is None:
            return (-errno.EIO, 0, 1, 1 << 20)
        return tuple(sorted({-errno.EIO, 0, min(1, full), max(full - 1, 0), full}))

    def outcome(self, returned: Any) -> tuple[int, Any]:
        """(normalised result, value) from what the blocking call returned."""
        if self.result == COUNT:
            return int(returned), None
        if self.result == BYTES:
            return len(returned), bytes(returned)
        if self.result == MESSAGE:
            return len(returned[0]), returned
        if self.result in (FD, STAT):
            return 0, returned
        return 0, None


def errno_result(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)
