"""Validated atoms -> their plan: segments, SQE images and patch points.

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

from dataclasses import replace

from . import atoms, kernel
from .atom import NEVER_STOP, Atom, Param, Ref, stop_holds
from .atom_writer import AtomWriter, Layout
from .kernel import KernelFeatures, ffi
from .plan import (
    LINK_END,
    LINK_HARD,
    LINK_SOFT,
    SQE_SIZE,
    UD_LINK_TIMEOUT,
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
        self.layout = lay = Layout()
        # Descriptors are slots, except where a real fd is needed and the
        # kernel cannot install a slot as one (FIXED_FD_INSTALL, 6.8): made by
        # a userspace step, or used by one, or exported.  A real fd's number
        # lives in the value row (-1 until it exists) and is patched into the
        # SQEs that use it, so its creator ends its segment.
        real = self.real_descriptors(exports)
        for atom in program_atoms:
            if atom.op.creates_fd and atom.index not in real:
                lay.slot_of[atom.index] = len(lay.slot_of)
        lay.values += [0] * len(lay.slot_of)
        for index in sorted(real):
            lay.fd_value[index] = lay.new_value(-1)
        for atom in program_atoms:
            for spec in atom.op.args:
                value = atom.args[spec.name]
                if isinstance(value, Param):
                    lay.declare_param(atom, spec.name, value)

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
        if fed and op.success_result(args) is None and not _size_bound(atom):
            return LINK_END  # the next atoms need a length only userspace learns
        if atom.index in self.layout.fd_value:
            return LINK_END  # the next atoms need the fd number it returns
        if atom.stop == NEVER_STOP and not fed:
            # A timed atom is soft-linked to its LINK_TIMEOUT, whose firing
            # cancels the rest of the link: the next atom cannot be hard-linked.
            return LINK_HARD if atom.timeout is None else LINK_END
        stops = [r for r in op.sample_results(args) if stop_holds(atom.stop, r)]
        if all(op.kernel_fails(r, args) for r in stops):
            return LINK_SOFT
        return LINK_END

    def link_timeout(self, atom: Atom, sqe: int, link_flag: int, can_skip: bool) -> bytes:
        """The LINK_TIMEOUT SQE that follows a timed atom (``atoms``).
        Skip-flagged where the kernel can skip CQEs: it then posts nothing,
        neither when its atom ends first (-ECANCELED) nor when it fires
        (-ETIME; its atom's -ECANCELED says so: ``follow._run_over``), unless
        it ends a run (ur_push clears the flag of a run's last SQE)."""
        assert atom.timeout is not None
        writer = AtomWriter(self.layout, atom.index, sqe, atoms.LINK_TIMEOUT_OP)
        atoms.prep_link_timeout(writer, atom.timeout)
        writer.flags = link_flag
        if can_skip:
            writer.flags |= kernel.constant("IOSQE_CQE_SKIP_SUCCESS")
        return writer.finish(UD_LINK_TIMEOUT + atom.index)

    # -- the plan -------------------------------------------------------------
    def translate(self) -> tuple[list[PlanAtom], list[Segment], bytes]:
        lay = self.layout
        plan_atoms: list[PlanAtom] = []
        images = bytearray()
        can_skip = bool(self.features.features & kernel.constant("IORING_FEAT_CQE_SKIP"))
        for atom in self.atoms:
            op = atom.op
            sqe = len(images) // SQE_SIZE
            in_kernel = self.in_kernel(atom)
            link = self.link(atom) if in_kernel else LINK_END
            if not in_kernel and op.result in (atoms.BYTES, atoms.MESSAGE):
                # Its bytes may feed a kernel atom later: they get a home in
                # scratch, where the userspace step copies them (as many as
                # it may receive: a size Param's at_most).
                size = op.length(atom.args)
                if size is None:
                    size = _size_bound(atom)
                lay.data_at[atom.index] = (lay.reserve(size), size)
            # (A timed atom that its LINK_TIMEOUT cancels fails, -ECANCELED:
            # that CQE posts, skip flag or not, and says the timeout fired.)
            may_skip = in_kernel and can_skip and link != LINK_END
            skip = may_skip and op.skippable(atom.args)
            success = op.success_result(atom.args)
            if link == LINK_HARD and op.full_length(atom.args) is not None:
                # A hard link goes on after a short transfer: it is an
                # ordinary result here, so its CQE must post (the clean path
                # takes it as a posted atom, its bytes cut to the result).
                # (A transfer whose length is known only per execution is
                # skip-flagged below even when hard-linked: a short one is
                # rare there, and takes the general path.)
                skip = False
            success_value = None  # a success known only per execution (see below)
            link_flag = {
                LINK_SOFT: kernel.constant("IOSQE_IO_LINK"),
                LINK_HARD: kernel.constant("IOSQE_IO_HARDLINK"),
                LINK_END: 0,
            }[link]
            if in_kernel:
                assert op.prep is not None and op.kernel_op is not None
                writer = AtomWriter(lay, atom.index, sqe, op.kernel_op, op.sqe_fields)
                op.prep(writer, atom.args)
                # A transfer whose full length is a per-execution value (a
                # data Param, bytes fed by a Ref, a size Param) that the
                # kernel fails when short: a skipped CQE means it moved
                # exactly that many bytes.  (Not a read of a size Param whose
                # bytes are kept: its CQE carries their length to the clean
                # path, which cuts them out of the buffer.)
                length_value = lay.length_value.get(atom.index)
                if (
                    may_skip
                    and success is None
                    and length_value is not None
                    and op.error_breaks_link
                    and op.short_fails(atom.args)
                    and not (atom.keep and atom.index in lay.out)
                ):
                    skip, success_value = True, length_value
                if atom.timeout is None:
                    writer.flags |= link_flag
                else:
                    writer.flags |= kernel.constant("IOSQE_IO_LINK")  # to its LINK_TIMEOUT
                if skip:
                    writer.flags |= kernel.constant("IOSQE_CQE_SKIP_SUCCESS")
                images += writer.finish(atom.index)
                if atom.timeout is not None:
                    images += self.link_timeout(atom, sqe + 1, link_flag, can_skip)
            fd_refs = [
                (spec.name, v.index)
                for spec in op.args
                if spec.kind == "fd"
                for v in (atom.args[spec.name],)
                if isinstance(v, Ref)
            ]
            fd_slots = {name: lay.slot_of[i] for name, i in fd_refs if i in lay.slot_of}
            fd_values = {name: lay.fd_value[i] for name, i in fd_refs if i in lay.fd_value}
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
                    success_value=success_value,
                    keep=atom.keep,
                    slot=lay.slot_of.get(atom.index),
                    fd_slots=fd_slots,
                    fd_values=fd_values,
                    fd_value=lay.fd_value.get(atom.index),
                    closes=fd_values.get("fd") if op.closes_fd else None,
                    out=lay.out.get(atom.index),
                    data_at=None if in_kernel else lay.data_at.get(atom.index),
                    sqe=sqe if in_kernel else -1,
                    sqe_end=len(images) // SQE_SIZE if in_kernel else -1,
                    timeout=atom.timeout,
                    length_value=lay.length_value.get(atom.index),
                    feeds=(),
                )
            )
        # feeds are known only once every consumer has been written.
        plan_atoms = [_replace_feeds(pa, tuple(lay.feeds.get(pa.index, ()))) for pa in plan_atoms]
        segments: list[Segment] = []
        first = 0
        for pa in plan_atoms:
            if not pa.in_kernel or pa.link == LINK_END:
                segments.append(Segment(first, pa.index, pa.in_kernel))
                first = pa.index + 1
        return plan_atoms, segments, bytes(images)


def _size_bound(atom: Atom) -> int:
    """The ``at_most`` of the atom's size Param (0: its size is none).
    Such a length is known per execution when the SQE is written, so the
    atoms it feeds may go in the same link, with that length, and are
    resumed with the length it did transfer when it comes short (the
    kernel breaks the link then); and as a userspace step it receives at
    most that many bytes."""
    for spec in atom.op.args:
        value = atom.args[spec.name]
        if spec.kind == "size" and isinstance(value, Param) and value.at_most is not None:
            return value.at_most
    return 0


def _replace_feeds(pa: PlanAtom, feeds: tuple[int, ...]) -> PlanAtom:
    return replace(pa, feeds=feeds) if feeds else pa


def translate(
    program_atoms: tuple[Atom, ...],
    exports: tuple[int, ...],
    features: KernelFeatures | None = None,
) -> Plan:
    """Translate validated atoms into their plan (see the module docstring)."""
    if features is None:
        features = kernel.probe()
    tr = _Translator(program_atoms, features, exports)
    plan_atoms, segments, images = tr.translate()
    lay = tr.layout
    segment_of: list[int] = []
    for number, seg in enumerate(segments):
        segment_of += [number] * (seg.last - seg.first + 1)
    patches = ffi.new("struct ur_patch[]", max(len(lay.patches), 1))
    for i, (sqe, offset, width, value, addend) in enumerate(lay.patches):
        p = patches[i]
        p.sqe, p.offset, p.width, p.value, p.addend = sqe, offset, width, value, addend
    closers = tuple(
        (a.index, a.args["fd"].index)
        for a in program_atoms
        if a.op.closes_fd and isinstance(a.args["fd"], Ref)
    )
    scratch_size = max(lay.scratch_size, 1)
    return Plan(
        atoms=tuple(plan_atoms),
        segments=tuple(segments),
        segment_of=tuple(segment_of),
        images_c=ffi.new("char[]", images),
        patches=patches,
        npatches=len(lay.patches),
        value_defaults=tuple(lay.values),
        nslots=len(lay.slot_of),
        scratch_size=scratch_size,
        out_size=lay.scratch_size,
        params=tuple(lay.params.values()),
        keepalive=tuple(lay.keepalive),
        features=features,
        scratch_init=tuple(lay.scratch_init),
        creators=tuple(lay.slot_of),
        slot_index=dict(lay.slot_of),
        real_creators=tuple(lay.fd_value),
        closers=closers,
        clean=clean_path(plan_atoms, segments, exports, closers, scratch_size),
    )
