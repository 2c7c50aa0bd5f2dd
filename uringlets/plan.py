"""The plan: what translation produces and the engines follow.

Immutable records (``PlanAtom``, ``Segment``, ``CleanPath``, ``Plan``) and the
numbers both sides agree on: the SQE field offsets, the user_data layout, the
value row layout and the link kinds.  ``translate.py`` builds plans;
``uring.py`` and ``follow.py`` follow them; ``program.py`` explains them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import atoms
from .kernel import KernelFeatures, ffi, lib

SQE_SIZE = 64
# SQE field -> (byte offset, width); see struct io_uring_sqe.  The fields
# only some op has (a URING_CMD's) are the op's: ``atoms.Op.sqe_fields``.
FIELDS: dict[str, tuple[int, int]] = {
    "opcode": (0, 1),
    "flags": (1, 1),
    "fd": (4, 4),
    "off": (8, 8),
    "addr": (16, 8),
    "len": (24, 4),
    "op_flags": (28, 4),
    "user_data": (32, 8),
    "file_index": (44, 4),
}
_PACK = {1: "=B", 2: "=H", 4: "=I", 8: "=Q"}

# user_data = generation << 44 | batch << 28 | k << 12 | aux << 8 | atom:
# execution number k of the batch in table entry ``batch``, started in that
# entry's ``generation``-th use.
# The k and batch fields are defined in ring.h (ur_reap_split reads them).
UD_K_SHIFT: int = lib.UR_UD_K_SHIFT
UD_K_MASK: int = lib.UR_UD_K_MASK
UD_K_FIELD = UD_K_MASK << UD_K_SHIFT
UD_BATCH_SHIFT: int = lib.UR_UD_BATCH_SHIFT
UD_BATCH_MASK: int = lib.UR_UD_BATCH_MASK
UD_GEN_SHIFT = 44
UD_GEN_MASK = (1 << 20) - 1
MAX_CAPACITY = UD_K_MASK + 1  # executions in flight (and in one batch) at most
UD_INSTALL = 64  # atom byte 64 + i: installing the descriptor of atom i
UD_LINK_TIMEOUT = 128  # atom byte 128 + i: the LINK_TIMEOUT SQE of atom i
UD_CANCEL = 0xFF  # atom byte of an ASYNC_CANCEL issued by the engine

# Per-execution value row: [scratch address, slot 0..n-1, ...].  (The
# user_data is not a value: an image carries its atom byte and ur_push adds
# the execution's base.)
V_SCRATCH = 0
V_SLOTS = 1

LINK_SOFT = "IO_LINK"
LINK_HARD = "IO_HARDLINK"
LINK_END = "end"


@dataclass(frozen=True)
class ParamUse:
    """Where a Param goes: ``value`` holds its address (path, data) or value;
    ``length_value`` the length of a data param; ``lo``..``hi`` the values
    an int-like one (int, offset, fd, size) may be bound to (what every
    argument it is used as fits: ``atoms.Arg.bounds``; a size: 1..at_most);
    ``copies`` more values that start each execution with its value (a
    size Param's read feeds its length to a later atom there)."""

    name: str
    kind: str
    value: int
    length_value: int | None
    lo: int = 0
    hi: int = 0
    copies: tuple[int, ...] = ()


@dataclass(frozen=True)
class PlanAtom:
    """One atom as the engine runs it.  ``link`` is the link to the next atom
    (``LINK_END`` closes the segment); ``success`` the normalised result a
    skipped CQE stands for; ``slot`` the local slot this atom fills;
    ``fd_slots`` the local slots of the descriptor Refs it takes, by argument;
    ``out`` (offset, size) of its scratch buffer; ``data_at`` where a
    userspace step copies the bytes it received; ``length_value`` the value
    index holding the length the kernel must transfer, when variable;
    ``feeds`` the value indexes to set to its result (data Refs downstream);
    ``success_value`` the value index holding a skipped atom's success
    result when it is known only per execution (``success`` is then None)."""

    index: int
    op: atoms.Op
    args: Mapping[str, Any]
    stop: int
    in_kernel: bool
    link: str
    skip: bool
    success: int | None
    slot: int | None
    fd_slots: Mapping[str, int]
    fd_values: Mapping[str, int]  # value indexes of the real fds it takes, by argument
    fd_value: int | None  # where the real fd it creates goes (None: a slot, or none)
    closes: int | None  # the value index of the real fd this close atom closes
    out: tuple[int, int] | None
    data_at: tuple[int, int] | None  # a userspace step's copy of its bytes
    sqe: int  # its SQE in the images (-1: a userspace step)
    sqe_end: int  # one past its last SQE (its LINK_TIMEOUT, if timed)
    timeout: float | None
    length_value: int | None
    feeds: tuple[int, ...]
    success_value: int | None = None
    keep: bool = True  # whether the completion gives its value back


@dataclass(frozen=True)
class Segment:
    """Atoms ``first..last`` run as one io_uring link (``in_kernel``) or as
    one userspace step."""

    first: int
    last: int
    in_kernel: bool


@dataclass(frozen=True)
class CleanPath:
    """What a clean execution looks like, when the whole program is one
    kernel link, nothing is exported and a clean run leaves no slot open:
    then the CQE of the last atom, with only the CQEs of the ``posted`` atoms
    before it, means every skip-flagged atom returned its one success result
    (``results``; placeholders for the rest), and the engine finishes the
    execution without walking the plan.  ``outs``: (atom, offset, size) of the skipped
    atoms' scratch buffers, each filled completely; ``posted_outs`` those of
    posted ones, filled as far as their CQEs say."""

    results: tuple[int, ...]
    outs: tuple[tuple[int, int, int], ...]
    last: PlanAtom
    last_out: tuple[int, int, int] | None  # the last atom's scratch buffer
    normalise: Callable[[int], int] | None  # the last atom's; None: identity
    stop: int  # the last atom's stop rule
    buffers: bool  # whether any atom returns data through scratch
    scratch_size: int
    last_bytes: bool  # the last atom's value is its first r bytes (no decoding)
    # Earlier atoms that post a CQE anyway: (atom, stop rule, full length or
    # None, hard-linked, the value index holding the full length when it is
    # known only per execution, else None).  Their CQEs are kept in
    # ``Batch.posted``.
    posted: tuple[tuple[int, int, int | None, bool, int | None], ...]
    posted_at: Mapping[int, int]  # {posted atom: its place j in ``posted``}
    prefix: tuple[int, ...]  # results[:-1]: what comes before the last atom's result
    # Skipped atoms whose success result is per execution: (atom, the value
    # index holding it).  Their results are read from the batch's columns.
    from_values: tuple[tuple[int, int], ...] = ()
    # Posted atoms with bytes (hard-linked reads and recvs): (atom, offset,
    # size, place j in ``posted``); the value is the first result bytes.
    posted_outs: tuple[tuple[int, int, int, int], ...] = ()
    # Every posted atom is hard-linked and never stops: any result it posts
    # keeps the execution on the clean path.
    posted_always_ok: bool = False
    # atom byte -> j + 1 for the posted atoms, 0 for the others: where
    # ur_reap_split puts a posted CQE (ring.h, struct ur_posted)
    posted_place: bytes = bytes(256)


@dataclass(frozen=True, eq=False)
class Plan:
    atoms: tuple[PlanAtom, ...]
    segments: tuple[Segment, ...]
    segment_of: tuple[int, ...]  # atom index -> segment index
    images_c: Any  # the SQE images (SQE_SIZE bytes each) as a C buffer, for ur_push
    patches: Any  # struct ur_patch[] (cdata), kept by the plan
    npatches: int
    value_defaults: tuple[int, ...]
    nslots: int
    scratch_size: int  # bytes of the per-execution scratch buffer (at least 1)
    out_size: int  # 0 when no atom writes into scratch: no buffer needed
    params: tuple[ParamUse, ...]
    keepalive: tuple[Any, ...]  # constant buffers the images point into
    features: KernelFeatures
    # Written into the scratch buffer per execution, before its SQEs go out:
    # (offset, width, "const" | "scratch" | "value", x) -> x, scratch + x, row[x].
    scratch_init: tuple[tuple[int, int, str, int], ...]
    creators: tuple[int, ...]  # atoms that fill a slot
    slot_index: Mapping[int, int]  # {creator atom: its local slot}
    real_creators: tuple[int, ...]  # atoms that make a real fd
    closers: tuple[tuple[int, int], ...]  # (close atom, creator atom it closes)
    clean: CleanPath | None

    @cached_property
    def first_sqes(self) -> int:
        """SQEs of the first segment, or 0 when it is a userspace step."""
        first = self.segments[0]
        return self.atoms[first.last].sqe_end if first.in_kernel else 0

    @cached_property
    def sqe_flags(self) -> bytes:
        """The IOSQE_* flags byte of each SQE image, in order."""
        return self._sqe_byte("flags")

    @cached_property
    def sqe_opcodes(self) -> bytes:
        """The opcode byte of each SQE image, in order."""
        return self._sqe_byte("opcode")

    def _sqe_byte(self, field: str) -> bytes:
        n = max((pa.sqe_end for pa in self.atoms), default=0)  # (-1: a userspace step)
        if n <= 0:
            return b""
        return ffi.buffer(self.images_c, n * SQE_SIZE)[:][FIELDS[field][0] :: SQE_SIZE]

    @cached_property
    def first_run_cqes(self) -> int:
        """CQEs an execution's first segment posts at least, whatever its
        atoms return: a lower bound of what the executions started will
        post, which a wait for all of them may ask for.  Each SQE without
        CQE_SKIP_SUCCESS posts (a cancelled one too), and the last one does
        (ur_push clears its flag), but a skip-flagged SQE that fails with a
        soft link after it cancels the rest of the link without their CQEs
        (the kernel's REQ_F_SKIP_LINK_CQES): the count stops there, at its
        own CQE.  A skip-flagged LINK_TIMEOUT never fails so (a fired one's
        -ETIME is no failure to the kernel: its atom's -ECANCELED posts
        instead): it neither counts nor stops the count."""
        n = self.first_sqes
        flags = self.sqe_flags[:n]
        opcodes = self.sqe_opcodes[:n]
        skip, link = lib.IOSQE_CQE_SKIP_SUCCESS, lib.IOSQE_IO_LINK
        timeout = lib.IORING_OP_LINK_TIMEOUT
        posts = 0
        for f, op in zip(flags[: n - 1], opcodes[: n - 1], strict=True):
            if f & skip and op == timeout:
                continue
            if f & skip:
                if f & link:  # (IO_LINK, not IO_HARDLINK: the plan sets one of them)
                    break
            else:
                posts += 1
        return posts + 1 if n else 0

    @cached_property
    def posted_place(self) -> Any:
        """The clean path's atom -> place map as C sees it (struct
        ur_posted.place), made once; the bytes it points into live as long
        as the plan."""
        assert self.clean is not None
        return ffi.from_buffer("uint8_t[]", self.clean.posted_place)

    @cached_property
    def launches(self) -> dict[int, tuple[bool, int, int, bool]]:
        """{SQ ring size: how a ring of it starts executions}, filled by
        ``UringBackend._launch``."""
        return {}


def clean_path(
    plan_atoms: list[PlanAtom],
    segments: list[Segment],
    exports: tuple[int, ...],
    closers: tuple[tuple[int, int], ...],
    scratch_size: int,
) -> CleanPath | None:
    if len(segments) != 1 or not segments[0].in_kernel or exports:
        return None
    if any(pa.timeout is not None for pa in plan_atoms):
        return None  # a timed-out atom's result needs its LINK_TIMEOUT's CQE
    *before, last = plan_atoms
    posted: list[tuple[int, int, int | None, bool, int | None]] = []
    posted_outs: list[tuple[int, int, int, int]] = []
    for pa in before:
        # (the first atom of a hard-linked run always posts: ur_push)
        skipped = pa.skip and (pa.success is not None or pa.success_value is not None)
        if skipped and not (pa.index == 0 and pa.link == LINK_HARD):
            continue
        # It posts its CQE even on success: fine for the clean path if there
        # is nothing to copy out or normalise, and its verdict is simple.
        full = pa.op.full_length(pa.args)
        if not pa.keep and pa.out is not None and pa.op.result == atoms.BYTES:
            if pa.link == LINK_END:
                return None
            # bytes nobody reads back: only its result matters
            posted.append((pa.index, pa.stop, full, pa.link == LINK_HARD, None))
            continue
        if pa.out is not None and pa.op.result == atoms.BYTES and pa.link == LINK_HARD:
            # a hard-linked read: any result goes on; its bytes are the
            # first ``result`` of its buffer
            posted_outs.append((pa.index, *pa.out, len(posted)))
        elif pa.out is not None or pa.op.result not in (atoms.ZERO, atoms.COUNT):
            return None
        per_execution = None  # a length only the execution's values hold (a data Param, a Ref)
        if pa.op.short_fails(pa.args) and full is None:
            if pa.length_value is None:
                return None
            per_execution = pa.length_value
        if pa.link == LINK_END:
            return None
        posted.append((pa.index, pa.stop, full, pa.link == LINK_HARD, per_execution))
    if any(pa.out is not None and pa.op.result != atoms.BYTES for pa in before):
        return None  # only plain bytes are copied out without decoding
    closed = {creator for _, creator in closers}
    if any(pa.slot is not None and pa.index not in closed for pa in plan_atoms):
        return None
    results = (*(pa.success if pa.success is not None else 0 for pa in before), 0)
    posting = {atom for atom, *_ in posted}
    from_values = tuple(
        (pa.index, pa.success_value)
        for pa in before
        if pa.skip and pa.success_value is not None and pa.index not in posting
    )
    in_posted = {atom for atom, *_ in posted_outs}
    outs = tuple(
        (pa.index, *pa.out)
        for pa in before
        if pa.out is not None and pa.keep and pa.index not in in_posted
    )
    identity = last.op.result in (atoms.ZERO, atoms.COUNT, atoms.BYTES, atoms.STAT, atoms.MESSAGE)
    return CleanPath(
        results,
        outs,
        last,
        (last.index, *last.out) if last.out is not None and last.keep else None,
        None if identity else last.op.normalise,
        last.stop,
        any(pa.out is not None and pa.keep for pa in plan_atoms),
        scratch_size,
        last.op.decode is None,
        tuple(posted),
        {atom: j for j, (atom, *_) in enumerate(posted)},
        results[:-1],
        from_values,
        tuple(posted_outs),
        all(hard and not stop for _, stop, _, hard, _ in posted),
        bytes(next((j + 1 for j, p in enumerate(posted) if p[0] == a), 0) for a in range(256)),
    )
