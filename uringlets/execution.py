"""The state the io_uring backend keeps, and the small helpers its submit
and reap paths share.

``Batch``: the executions started by one call, one entry of the backend's
table.  ``Execution``: one of them, once it leaves the clean path.
``ScratchPool``: reused per-execution buffers.  Ownership of buffers, slots
and descriptors is described in ``follow.py``.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .kernel import ffi, lib
from .notify import Completion
from .plan import UD_K_SHIFT, Plan
from .program import Program

NOT_POSTED = lib.UR_NOT_POSTED_BITS - 2**32  # a posted CQE that has not come (ring.h)
_NOT_POSTED_ONE = array("i", [NOT_POSTED])  # (times n: a batch's posted array, made in C)
if _NOT_POSTED_ONE.itemsize != ffi.sizeof("int32_t"):
    raise ImportError("array('i') is not an int32 here")

_SQE = struct.Struct("=BBHiQQIIQHHiQQ")


def check_ret(ret: int, what: str) -> int:
    """Map a ``-errno`` return of the ring layer to OSError."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def single_sqe(opcode: int, fd: int, addr: int, op_flags: int, flags: int, ud: int) -> bytes:
    return _SQE.pack(opcode, flags, 0, fd, 0, addr, 0, op_flags, ud, 0, 0, 0, 0, 0)


class Batch:
    """The executions started by one call, in one entry of the backend's
    table: execution ``k`` of the batch has user_data ``ud_base | k << 12``.

    Shared: the program, the parameter columns and their buffers (``keep``),
    the value columns (``flat``: value ``v`` of execution ``k`` is
    ``flat[v * n + k]``), the tags (the caller's, copied into a list;
    None when every tag is None), and ``run()``'s sink.  Per execution,
    indexed by ``k``: its scratch buffer, its ``nslots`` slots
    (``slots[k * nslots:(k + 1) * nslots]``), whether it is ``done``, and the
    CQEs of ``posted`` atoms (``posted[k * len(clean.posted) + j]``,
    ``NOT_POSTED`` until it comes; ur_reap_split stores them there while the
    batch is on the clean path).

    An execution stays on the clean path (no Python object of its own) until
    something unusual happens to it: a CQE other than its clean one, a
    cancel, a resume.  It is then *promoted*: ``slow[k]`` holds its
    ``Execution`` until it finishes.  The batch leaves the table when
    ``remaining`` reaches 0; its buffers stay alive until then.  A batch
    whose executions all end together on the clean path never sets ``done``:
    it leaves the table at once, and nothing reads the marks of a batch that
    is not in it."""

    __slots__ = (
        "clean",
        "done",
        "fast_ud",
        "flat",
        "index",
        "keep",
        "n",
        "nslots",
        "params",
        "posted",
        "program",
        "promoted",
        "remaining",
        "run_last",
        "scratch",
        "sink",
        "slots",
        "slow",
        "tags",
        "ud_base",
    )

    def __init__(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        keep: Any,
        flat: Any,
        n: int,
        tags: Sequence[Any] | None,
        sink: list[Completion] | None,
        index: int,
        ud_base: int,
        scratch: ScratchBlock | None,
        slots: Any,
        run_last: int,
        fast_ud: int,
    ) -> None:
        plan = program.plan
        clean = self.clean = plan.clean
        self.program = program
        self.params = params
        self.keep = keep  # parameter and value buffers the SQEs point into
        self.flat = flat
        self.n = self.remaining = n
        self.tags = tags
        self.sink = sink
        self.index = index  # its entry in the backend's table
        self.ud_base = ud_base
        self.scratch = scratch  # the batch's scratch buffers, or None
        self.slots = slots  # int64 array: nslots per execution, execution k's at k * nslots
        self.nslots = plan.nslots
        # The last atom of the first run when it was pushed whole (else -1),
        # and the user_data (k bits zero) of the CQE that ends a clean
        # execution (-1: the clean path cannot apply).
        self.run_last = run_last
        self.fast_ud = fast_ud
        self.done = bytearray(n)
        self.slow: dict[int, Execution] = {}
        self.promoted = False  # whether any execution of the batch was promoted
        # (an int32 array: ur_reap_split writes into it, see ring.h's ur_posted)
        self.posted: Any = None
        if clean is not None and clean.posted:
            count = n * len(clean.posted)
            self.posted = ffi.new("int32_t[]", count)
            ffi.memmove(self.posted, _NOT_POSTED_ONE * count, ffi.sizeof(self.posted))


class Execution:
    """One execution off the clean path, from its promotion to ``_finish``.

    Hot state lives in slots; what the batch shares is in ``batch``.  Its
    value row stays in the batch's columns until a resume needs to patch it
    (``row``).  Cold state (results, values, installs, cancel) is created
    when needed; the class attributes below are its defaults."""

    __slots__ = (
        "__dict__",
        "batch",
        "k",
        "program",
        "raw",
        "run_first",
        "run_last",
        "run_number",
        "scratch",
        "slots",
        "tag",
        "ud",
    )
    results: list[int | None] | None = None
    values: dict[int, Any] | None = None
    row: list[int] | None = None
    installed: dict[int, int] | None = None  # aux (argument number or creator) -> fd or -errno
    pending = 0  # install CQEs still to come
    exports: dict[int, int] | None = None  # creator atom -> exported fd
    stopped_at: int | None = None
    cancelled = False
    timed_out: frozenset[int] | None = None  # atoms whose LINK_TIMEOUT fired
    fast_taken = False  # its clean-ending CQE was taken off the clean path

    def __init__(self, batch: Batch, k: int) -> None:
        self.batch = batch
        self.program = batch.program
        self.k = k
        self.tag = None if batch.tags is None else batch.tags[k]
        self.ud = batch.ud_base | k << UD_K_SHIFT  # user_data base: the low 12 bits are 0
        # (pointer, address, view) into the batch's block, or None
        self.scratch: Any = batch.scratch.entry(k) if batch.scratch is not None else None
        ns = batch.nslots
        self.slots: list[int] = batch.slots[k * ns : (k + 1) * ns].tolist() if ns else []
        # The run in flight (-1: none), numbered in the aux bits of its
        # user_data (the batch pushed run 0), so that a CQE of an earlier run
        # (a follower of a broken link) is never taken for one of this run.
        self.run_first = 0 if batch.run_last >= 0 else -1
        self.run_last = batch.run_last
        self.run_number = 0
        # CQEs of the run so far, by atom (the posted ones the batch kept).
        self.raw: dict[int, int] | None = None
        clean = batch.clean
        if batch.posted is not None and clean is not None:
            npost = len(clean.posted)
            for j, (atom, *_) in enumerate(clean.posted):
                r = batch.posted[k * npost + j]
                if r != NOT_POSTED:
                    if self.raw is None:
                        self.raw = {}
                    self.raw[atom] = r


class ScratchBlock:
    """The scratch buffers of one batch, one C allocation: execution ``k``'s
    buffer is ``size`` bytes at ``base + k * size``.  ``view`` is a buffer
    over the whole block (values are sliced out of it in one step), and
    ``addresses`` the start of each buffer as an int64 array (a batch's
    address column is a slice of it).  The block belongs to one batch from
    ``ScratchPool.take`` until the batch leaves the backend's table, which is
    after the last CQE of its last execution: no run of the kernel can write
    into it after that."""

    __slots__ = ("addresses", "base", "buffer", "capacity", "size", "view")

    def __init__(self, size: int, capacity: int) -> None:
        self.size = size
        self.capacity = capacity
        self.buffer = ffi.new("char[]", size * capacity)
        self.base = int(ffi.cast("uintptr_t", self.buffer))
        self.view = ffi.buffer(self.buffer)
        self.addresses = array("q", range(self.base, self.base + size * capacity, size))

    def entry(self, k: int) -> tuple[Any, int, Any]:
        """Execution ``k``'s buffer as ``(pointer, address, view)``; the
        pointer does not own the memory: the block does, and whoever holds
        the entry also holds the batch that holds the block."""
        address = self.base + k * self.size
        pointer = ffi.cast("char *", address)
        return pointer, address, ffi.buffer(pointer, self.size)


class ScratchPool:
    """Scratch blocks of one buffer size, reused: a batch of ``n``
    executions takes a block of the next power of two at or above ``n``
    (so a pool holds at most 17 kinds of block) and gives it back when it
    leaves the table."""

    __slots__ = ("free", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free: dict[int, list[ScratchBlock]] = {}

    def take(self, n: int) -> ScratchBlock:
        capacity = 1 << (n - 1).bit_length()
        blocks = self.free.get(capacity)
        if blocks:
            return blocks.pop()
        return ScratchBlock(self.size, capacity)

    def give(self, block: ScratchBlock) -> None:
        self.free.setdefault(block.capacity, []).append(block)


def init_scratch(plan: Plan, base: int, value_of: Callable[[int], int]) -> None:
    """Write the plan's per-execution structures (msghdrs) into a scratch
    buffer at ``base``, before any SQE that points there is submitted."""
    buf = ffi.buffer(ffi.cast("char *", base), plan.scratch_size)
    for offset, width, kind, x in plan.scratch_init:
        v = x if kind == "const" else base + x if kind == "scratch" else value_of(x)
        struct.pack_into("=Q" if width == 8 else "=I", buf, offset, v)
