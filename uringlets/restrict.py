"""Restricted rings (DESIGN.md, "Restricted rings"): ``Engine(restrict=[...])``.

A ``Restriction`` is the allow-list that a set of programs needs: the
catalogue ops their atoms use, the io_uring opcodes and SQE flags of their
SQE images, and the engine's own SQEs (ASYNC_CANCEL for cancels and
deadlines, FIXED_FD_INSTALL with IOSQE_FIXED_FILE for handing a slot's
descriptor over).  The engine checks every program at submit against it
(``TranslateError`` naming the first atom it refuses); on io_uring the ring
is also created disabled, registered with exactly these SQE opcodes and
flags (``IORING_REGISTER_RESTRICTIONS``; the register opcodes the engine
itself needs are added by ``ur_restrict``) and only then enabled, so the
kernel refuses any other SQE with -EACCES, whoever wrote it.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import kernel
from .errors import TranslateError
from .kernel import ffi, lib
from .plan import FIELDS, SQE_SIZE
from .program import Program

_OPCODE, _FLAGS = FIELDS["opcode"][0], FIELDS["flags"][0]  # (one byte each)


def sqe_ops_and_flags(program: Program) -> tuple[frozenset[int], int]:
    """The opcodes and the union of the SQE flags of ``program``'s images."""
    images = bytes(ffi.buffer(program.plan.images_c))  # (a char[]: one NUL more)
    starts = range(0, len(images) // SQE_SIZE * SQE_SIZE, SQE_SIZE)
    flags = 0
    for start in starts:
        flags |= images[start + _FLAGS]
    return frozenset(images[start + _OPCODE] for start in starts), flags


def engine_sqes(features: kernel.KernelFeatures) -> tuple[frozenset[int], int]:
    """The SQEs an engine issues of its own, whatever it runs."""
    ops = {kernel.opcode("ASYNC_CANCEL")}
    if features.has_op("FIXED_FD_INSTALL"):
        ops.add(kernel.opcode("FIXED_FD_INSTALL"))
    return frozenset(ops), int(lib.IOSQE_FIXED_FILE)


@dataclass(frozen=True, eq=False)
class Restriction:
    """What the programs given to ``Engine(restrict=...)`` use (see the
    module docstring).  ``permitted`` remembers the programs already
    checked (weakly)."""

    op_names: frozenset[str]
    sqe_ops: frozenset[int]
    sqe_flags: int
    permitted: weakref.WeakSet[Program] = field(default_factory=weakref.WeakSet)

    @classmethod
    def of(cls, programs: Iterable[Program], features: kernel.KernelFeatures) -> Restriction:
        programs = list(programs)
        if not programs:
            raise ValueError("restrict needs at least one program")
        names: set[str] = set()
        ops, flags = engine_sqes(features)
        all_ops = set(ops)
        for program in programs:
            if not isinstance(program, Program):
                raise TypeError(f"restrict takes Programs (Syslet.compile()), not {program!r}")
            names.update(atom.op.name for atom in program.atoms)
            program_ops, program_flags = sqe_ops_and_flags(program)
            all_ops |= program_ops
            flags |= program_flags
        restriction = cls(frozenset(names), frozenset(all_ops), flags)
        restriction.permitted.update(programs)
        return restriction

    def check(self, program: Program) -> None:
        """Refuse (``TranslateError``) a program that uses an op, opcode or
        SQE flag outside the allow-list."""
        if program in self.permitted:
            return
        for atom in program.atoms:
            if atom.op.name not in self.op_names:
                problem = "this op is not allowed on this restricted engine"
                raise TranslateError(atom.index, atom.op.name, None, problem)
        ops, flags = sqe_ops_and_flags(program)
        if not ops <= self.sqe_ops or flags & ~self.sqe_flags:
            raise TranslateError(
                None,
                None,
                None,
                f"its SQEs (opcodes {sorted(ops - self.sqe_ops)}, flags "
                f"{flags & ~self.sqe_flags:#x}) are not allowed on this restricted engine",
            )
        self.permitted.add(program)

    def register(self, ring: object) -> None:
        """Register the allow-list with a ring created disabled, then enable
        it (``ur_restrict``).  Raises ``OSError``."""
        ops = sorted(self.sqe_ops)
        err = lib.ur_restrict(ring, ffi.new("uint8_t[]", ops), len(ops), self.sqe_flags)
        if err < 0:
            raise OSError(-err, f"io_uring restrictions: {os.strerror(-err)}")
