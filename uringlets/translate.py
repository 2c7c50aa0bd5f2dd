"""Syslet -> Program: the plan of segments, SQE images and patch points.

How the kernel runs a link, and what that forces on the plan
-------------------------------------------------------------
io_uring runs the SQEs of a *link* one after another: an SQE flagged
``IOSQE_IO_LINK`` or ``IOSQE_IO_HARDLINK`` starts only when the one before it
has completed.  A soft link (``IO_LINK``) is broken when the kernel considers
a request *failed*: any negative result; for ``read``/``write`` any transfer
shorter than asked; for ``send``/``recv`` a short transfer only with
``MSG_WAITALL``.  Every request after the break completes with
``-ECANCELED``.  A hard link never breaks.  Nothing in the kernel knows our
stop rules, so the kernel can only be trusted to stop a chain where *every*
result on which the atom's stop rule holds is also a kernel failure.  Each
atom's link is therefore chosen from its stop rule and the catalogue's failure
rule (``atoms.Op.kernel_fails``) over representatives of all its results:

* ``NEVER_STOP`` and no later atom needs its exact length -> ``IO_HARDLINK``;
* stop rule holds only on kernel failures -> ``IO_LINK``;
* otherwise the segment ends after the atom and userspace tests the rule.

The reverse case is allowed and common: the kernel breaks a link where the
stop rule does *not* hold (a short read with ``STOP_ON_NEGATIVE``).  The
engine then resumes the rest of the segment in userspace, patching lengths
that depend on the short result: optimistic in the kernel, exact overall.

``IOSQE_CQE_SKIP_SUCCESS`` suppresses the CQE of a request that did not fail.
We set it only where the catalogue knows the one successful result in
advance (0 for most ops, the full length for a read) *and* every error is a
kernel failure (``atoms.Op.skippable``: statx, for one, returns errors without
failing, and a skipped error would be lost).  A failed request posts its CQE
even when marked, and then *silences the rest of its chain*
(``REQ_F_SKIP_LINK_CQES``): the requests after it are cancelled without CQEs.
A failed request without the flag is followed by one ``-ECANCELED`` CQE per
cancelled request, in chain order.  The last SQE of every run we submit never
carries the flag (``ur_push`` clears it with the link flags).  So the engine
knows from the CQE stream alone that a run is over: at the CQE of its last
SQE, or at the failure CQE of a soft-linked, skip-flagged SQE before it.  CQEs
of one chain arrive in chain order, so nothing of the run comes later.  The
engine never waits for a CQE that will not come.

Descriptors created by atoms live in *slots* of a sparse fixed-file table
(direct descriptors): the slot number is patched into each SQE per execution,
so later SQEs of the same link can name a descriptor that does not exist yet.
Atoms the kernel cannot run (an op it lacks, ``fstat``) become userspace
steps between segments; a slot they need is installed as a real fd first.

The plan is immutable and owned by its Program.  Constant buffers (paths,
data, timespecs) are allocated here and kept alive by the plan for as long as
the Program lives; each in-flight execution holds its Program.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import atoms, kernel
from .errors import TranslateError
from .kernel import KernelFeatures, ffi
from .syslet import NEVER_STOP, Atom, Param, Ref, stop_holds

if TYPE_CHECKING:
    from .program import Program

from .atom_writer import AtomWriter
from .plan import (
    FIELDS,
    LINK_END,
    LINK_HARD,
    LINK_SOFT,
    SQE_SIZE,
    UD_LINK_TIMEOUT,
    ParamUse,
    Plan,
    PlanAtom,
    Segment,
    clean_path,
)


class _Translator:
    def __init__(
        self, program_atoms: tuple[Atom, ...], features: KernelFeatures, exports: tuple[int, ...]
    ) -> None:
        self.atoms = program_atoms
        self.features = features
        self.patches: list[tuple[int, int, int, int, int]] = []
        self.keepalive: list[Any] = []
        self.slot_of: dict[int, int] = {}
        self.out: dict[int, tuple[int, int]] = {}
        self.scratch_size = 0
        self.values: list[int] = [0]  # V_SCRATCH
        self.params: dict[str, ParamUse] = {}
        self.length_value: dict[int, int] = {}
        self.feeds: dict[int, list[int]] = {}
        self.data_at: dict[int, tuple[int, int]] = {}  # where an atom's received bytes land
        self.scratch_init: list[tuple[int, int, str, int]] = []
        # Descriptors are slots, except where a real fd is needed and the
        # kernel cannot install a slot as one (FIXED_FD_INSTALL, 6.8): made by
        # a userspace step, or used by one, or exported.  A real fd's number
        # lives in the value row (-1 until it exists) and is patched into the
        # SQEs that use it, so its creator ends its segment.
        self.fd_value: dict[int, int] = {}  # {creator atom: value index of its real fd}
        real = self.real_descriptors(exports)
        for atom in program_atoms:
            if atom.op.creates_fd and atom.index not in real:
                self.slot_of[atom.index] = len(self.slot_of)
        self.values += [0] * len(self.slot_of)
        for index in sorted(real):
            self.fd_value[index] = self.new_value(-1)
        for atom in program_atoms:
            for spec in atom.op.args:
                value = atom.args[spec.name]
                if isinstance(value, Param):
                    self._declare_param(atom, spec.name, spec.kind, value)

    def real_descriptors(self, exports: tuple[int, ...]) -> set[int]:
        """The creator atoms whose descriptor must be a real fd: made in
        userspace, closed in userspace, or (without FIXED_FD_INSTALL) used in
        userspace or exported."""
        real = {a.index for a in self.atoms if a.op.creates_fd and not self.in_kernel(a)}
        for atom in self.atoms:  # a userspace close must close the descriptor itself
            target = atom.args.get("fd")
            if atom.op.closes_fd and not self.in_kernel(atom) and isinstance(target, Ref):
                real.add(target.index)
        if not self.features.has_op("FIXED_FD_INSTALL"):
            real |= set(exports)
            for atom in self.atoms:
                if not self.in_kernel(atom):
                    for spec in atom.op.args:
                        v = atom.args[spec.name]
                        if spec.kind == "fd" and isinstance(v, Ref):
                            real.add(v.index)
        return real

    # -- values, buffers, params -------------------------------------------
    def new_value(self, default: int = 0) -> int:
        self.values.append(default)
        return len(self.values) - 1

    def _declare_param(self, atom: Atom, arg: str, kind: str, param: Param) -> None:
        known = self.params.get(param.name)
        if known is not None:
            if known.kind != kind:
                raise TranslateError(
                    atom.index, atom.op.name, arg, f"{param!r} is used as {known.kind} elsewhere"
                )
            return
        value = self.new_value()
        length = self.new_value() if kind == "data" else None
        self.params[param.name] = ParamUse(param.name, kind, value, length)

    def param_use(self, param: Param) -> ParamUse:
        return self.params[param.name]

    def param_value(self, param: Param) -> int:
        return self.params[param.name].value

    def const_buffer(self, data: bytes) -> int:
        buf = ffi.new("char[]", data)
        self.keepalive.append(buf)
        return int(ffi.cast("uintptr_t", buf))

    def reserve(self, size: int) -> int:
        """Room for ``size`` bytes in every execution's scratch buffer."""
        offset = (self.scratch_size + 63) & ~63
        self.scratch_size = offset + max(size, 1)
        return offset

    def scratch(self, index: int, size: int) -> int:
        """The scratch region atom ``index`` writes its output into."""
        offset = self.reserve(size)
        self.out[index] = (offset, size)
        self.data_at.setdefault(index, (offset, size))
        return offset

    def feed(self, source: int, size: int) -> int:
        """A value holding the length of what atom ``source`` received
        (``size`` until it is known)."""
        length = self.new_value(size)
        self.feeds.setdefault(source, []).append(length)
        return length

    # -- links ----------------------------------------------------------------
    def in_kernel(self, atom: Atom) -> bool:
        op = atom.op
        return (
            op.kernel_op is not None
            and self.features.has_op(op.kernel_op)
            and op.kernel_when(atom.args)
        )

    def link(self, atom: Atom) -> str:
        """The link from ``atom`` to the next one, if both run in the kernel."""
        nxt = atom.index + 1
        if nxt >= len(self.atoms) or not self.in_kernel(self.atoms[nxt]):
            return LINK_END
        op, args = atom.op, atom.args
        fed = any(
            isinstance(v, Ref) and v.index == atom.index and spec.kind == "data"
            for later in self.atoms[nxt:]
            for spec in later.op.args
            for v in (later.args[spec.name],)
        )
        if fed and op.success_result(args) is None:
            return LINK_END  # the next atoms need a length only userspace learns
        if atom.index in self.fd_value:
            return LINK_END  # the next atoms need the fd number it returns
        if atom.stop == NEVER_STOP and not fed:
            # A timed atom is soft-linked to its LINK_TIMEOUT, whose firing
            # cancels the rest of the link: the next atom cannot be hard-linked.
            return LINK_HARD if atom.timeout is None else LINK_END
        stops = [r for r in op.sample_results(args) if stop_holds(atom.stop, r)]
        if all(op.kernel_fails(r, args) for r in stops):
            return LINK_SOFT
        return LINK_END

    def link_timeout(self, atom: Atom, sqe: int, link_flag: int) -> bytes:
        """The LINK_TIMEOUT SQE that follows a timed atom.  It always posts a
        CQE (-ETIME when it fired, else -ECANCELED), after or before the
        atom's; the engine only notes whether it fired."""
        assert atom.timeout is not None
        image = bytearray(SQE_SIZE)
        image[0] = kernel.opcode("LINK_TIMEOUT")
        image[1] = link_flag
        nsec = round(atom.timeout * 1e9)
        ts = self.const_buffer(struct.pack("=qq", nsec // 10**9, nsec % 10**9))
        struct.pack_into("=Q", image, FIELDS["addr"][0], ts)
        struct.pack_into("=I", image, FIELDS["len"][0], 1)
        struct.pack_into("=Q", image, FIELDS["user_data"][0], UD_LINK_TIMEOUT + atom.index)
        return bytes(image)

    # -- the plan -------------------------------------------------------------
    def translate(self) -> tuple[list[PlanAtom], list[Segment], bytes]:
        plan_atoms: list[PlanAtom] = []
        images = bytearray()
        can_skip = bool(self.features.features & kernel.constant("IORING_FEAT_CQE_SKIP"))
        for atom in self.atoms:
            op = atom.op
            sqe = len(images) // SQE_SIZE
            writer = AtomWriter(self, atom, sqe)
            in_kernel = self.in_kernel(atom)
            if in_kernel:
                assert op.prep is not None and op.kernel_op is not None
                writer.image[0] = kernel.opcode(op.kernel_op)
                op.prep(writer, atom.args)
                struct.pack_into("=Q", writer.image, FIELDS["user_data"][0], atom.index)
                link = self.link(atom)
            else:
                link = LINK_END
                if op.result in (atoms.BYTES, atoms.MESSAGE):
                    # Its bytes may feed a kernel atom later: they get a home
                    # in scratch, where the userspace step copies them.
                    size = op.length(atom.args) or 0
                    self.data_at[atom.index] = (self.reserve(size), size)
            success = op.success_result(atom.args)
            # A timed atom always posts its CQE: the run may end with it.
            skip = (
                in_kernel
                and can_skip
                and link != LINK_END
                and atom.timeout is None
                and op.skippable(atom.args)
            )
            link_flag = {
                LINK_SOFT: kernel.constant("IOSQE_IO_LINK"),
                LINK_HARD: kernel.constant("IOSQE_IO_HARDLINK"),
                LINK_END: 0,
            }[link]
            if in_kernel:
                if atom.timeout is None:
                    writer.flags |= link_flag
                else:
                    writer.flags |= kernel.constant("IOSQE_IO_LINK")  # to its LINK_TIMEOUT
                if skip:
                    writer.flags |= kernel.constant("IOSQE_CQE_SKIP_SUCCESS")
                writer.image[1] = writer.flags
                images += writer.image
                if atom.timeout is not None:
                    images += self.link_timeout(atom, sqe + 1, link_flag)
            fd_refs = [
                (spec.name, v.index)
                for spec in op.args
                if spec.kind == "fd"
                for v in (atom.args[spec.name],)
                if isinstance(v, Ref)
            ]
            fd_slots = {name: self.slot_of[i] for name, i in fd_refs if i in self.slot_of}
            fd_values = {name: self.fd_value[i] for name, i in fd_refs if i in self.fd_value}
            plan_atoms.append(
                PlanAtom(
                    index=atom.index,
                    op=op,
                    args=atom.args,
                    stop=atom.stop,
                    in_kernel=in_kernel,
                    link=link,
                    skip=skip,
                    success=success,
                    slot=self.slot_of.get(atom.index),
                    fd_slots=fd_slots,
                    fd_values=fd_values,
                    fd_value=self.fd_value.get(atom.index),
                    closes=fd_values.get("fd") if op.closes_fd else None,
                    out=self.out.get(atom.index),
                    data_at=None if in_kernel else self.data_at.get(atom.index),
                    sqe=sqe if in_kernel else -1,
                    sqe_end=len(images) // SQE_SIZE if in_kernel else -1,
                    timeout=atom.timeout,
                    length_value=self.length_value.get(atom.index),
                    feeds=(),
                )
            )
        # feeds are known only once every consumer has been written.
        plan_atoms = [_replace_feeds(pa, tuple(self.feeds.get(pa.index, ()))) for pa in plan_atoms]
        segments: list[Segment] = []
        first = 0
        for pa in plan_atoms:
            if not pa.in_kernel or pa.link == LINK_END:
                segments.append(Segment(first, pa.index, pa.in_kernel))
                first = pa.index + 1
        return plan_atoms, segments, bytes(images)


def _replace_feeds(pa: PlanAtom, feeds: tuple[int, ...]) -> PlanAtom:
    return replace(pa, feeds=feeds) if feeds else pa


def translate(
    program_atoms: tuple[Atom, ...],
    refs: tuple[Ref, ...],
    exports: tuple[int, ...],
    features: KernelFeatures | None = None,
) -> Program:
    """Translate validated atoms into a Program (see the module docstring)."""
    from .program import Program

    if features is None:
        features = kernel.probe()
    tr = _Translator(program_atoms, features, exports)
    plan_atoms, segments, images = tr.translate()
    segment_of: list[int] = []
    for number, seg in enumerate(segments):
        segment_of += [number] * (seg.last - seg.first + 1)
    patches = ffi.new("struct ur_patch[]", max(len(tr.patches), 1))
    for i, (sqe, offset, width, value, addend) in enumerate(tr.patches):
        p = patches[i]
        p.sqe, p.offset, p.width, p.value, p.addend = sqe, offset, width, value, addend
    closers = tuple(
        (a.index, a.args["fd"].index)
        for a in program_atoms
        if a.op.closes_fd and isinstance(a.args["fd"], Ref)
    )
    plan = Plan(
        atoms=tuple(plan_atoms),
        segments=tuple(segments),
        segment_of=tuple(segment_of),
        images_c=ffi.new("char[]", images),
        patches=patches,
        npatches=len(tr.patches),
        value_defaults=tuple(tr.values),
        nslots=len(tr.slot_of),
        scratch_size=max(tr.scratch_size, 1),
        out_size=tr.scratch_size,
        params=tuple(tr.params.values()),
        keepalive=tuple(tr.keepalive),
        features=features,
        scratch_init=tuple(tr.scratch_init),
        creators=tuple(tr.slot_of),
        slot_index=dict(tr.slot_of),
        real_creators=tuple(tr.fd_value),
        closers=closers,
        clean=clean_path(plan_atoms, segments, exports, closers, max(tr.scratch_size, 1)),
    )
    return Program(program_atoms, refs, exports, plan)
