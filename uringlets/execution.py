"""The state of one execution on the io_uring engine, and the small helpers
the backend's submit and reap paths share.

``Batch``: what the executions started by one call share.  ``Execution``:
one submission, pooled per table entry by the backend.  Ownership of buffers,
slots and descriptors is described in ``uring.py``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

from .kernel import ffi
from .notify import Completion
from .plan import CleanPath, Plan
from .program import Program

_SQE = struct.Struct("=BBHiQQIIQHHiQQ")


def check_ret(ret: int, what: str) -> int:
    """Map a ``-errno`` return of the ring layer to OSError."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def single_sqe(opcode: int, fd: int, addr: int, op_flags: int, flags: int, ud: int) -> bytes:
    return _SQE.pack(opcode, flags, 0, fd, 0, addr, 0, op_flags, ud, 0, 0, 0, 0, 0)


class Batch:
    """What the executions started by one call share: the program, the
    parameter columns and their buffers, the value columns (``flat``: value
    ``v`` of execution ``k`` is ``flat[v * n + k]``), and ``run()``'s sink."""

    __slots__ = ("clean", "flat", "keep", "n", "params", "program", "sink")

    def __init__(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        keep: Any,
        flat: Any,
        n: int,
        sink: list[Completion] | None,
    ) -> None:
        self.program = program
        # Read only on the clean path, which ``fast_ud`` opens only when set.
        self.clean: CleanPath = program.plan.clean  # type: ignore[assignment]
        self.params = params
        self.keep = keep  # parameter buffers the SQEs point into
        self.flat = flat
        self.n = n
        self.sink = sink


class Execution:
    """One submission of a program, from ``start`` to ``_finish``.

    Hot state lives in slots; what the batch shares is in ``batch``.  Its
    value row stays in the batch's columns until a resume needs to patch it
    (``row``).  Cold state (results, values, installs, cancel) is created on
    the slow path only; the class attributes below are its defaults."""

    __slots__ = (
        "__dict__",
        "batch",
        "fast_ud",
        "k",
        "program",
        "raw",
        "run_last",
        "scratch",
        "slots",
        "tag",
        "ud",
    )
    run_first = 0
    results: list[int | None] | None = None
    values: dict[int, Any] | None = None
    row: list[int] | None = None
    installed: dict[int, int] | None = None  # aux (argument number or creator) -> fd or -errno
    pending = 0  # install CQEs still to come
    exports: dict[int, int] | None = None  # creator atom -> exported fd
    stopped_at: int | None = None
    cancelled = False
    timed_out: frozenset[int] | None = None  # atoms whose LINK_TIMEOUT fired

    @classmethod
    def blank(cls) -> Execution:
        """An unused object for the backend's pool; ``start`` fills it."""
        return cls.__new__(cls)

    def reset(self) -> None:
        """Forget the cold state a slow-path execution left, so the pooled
        object comes back clean (the clean path never sets any)."""
        self.__dict__.clear()

    # The slots, filled by ``UringBackend.start`` for each execution:
    batch: Batch
    program: Program  # batch.program, kept here for the hot path
    k: int  # its place in the batch
    tag: Any
    ud: int  # user_data base: generation and table index
    scratch: Any  # (buffer, address, view) from the pool, or None
    slots: list[int]
    run_last: int
    # The user_data of the CQE that ends this execution on the clean path,
    # or -1 when that path cannot apply.
    fast_ud: int
    raw: dict[int, int] | None  # CQEs of the run so far, by atom


def init_scratch(plan: Plan, base: int, value_of: Callable[[int], int]) -> None:
    """Write the plan's per-execution structures (msghdrs) into a scratch
    buffer at ``base``, before any SQE that points there is submitted."""
    buf = ffi.buffer(ffi.cast("char *", base), plan.scratch_size)
    for offset, width, kind, x in plan.scratch_init:
        v = x if kind == "const" else base + x if kind == "scratch" else value_of(x)
        struct.pack_into("=Q" if width == 8 else "=I", buf, offset, v)
