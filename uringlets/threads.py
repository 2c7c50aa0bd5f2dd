"""Blocking execution of programs: the reference interpreter.

``run_reference`` runs a program synchronously in the calling thread with
the catalogue's blocking calls (``atoms.Op.call``): the oracle of the
differential tests, and the definition of what every engine must produce.

Ownership: descriptors created by the execution live in a private table
(``{creator atom: fd}``) from their creation until a ``close`` atom closes
them or the execution ends; at the end every one still open is closed,
except exported ones, which the completion hands to the caller.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from . import atoms
from .notify import Completion
from .program import Program
from .syslet import Param, Ref, stop_holds


def execute(program: Program, bound: dict[str, Any], tag: Any = None) -> Completion:
    """Run ``program`` with already-bound parameters; returns its completion."""
    n = len(program.atoms)
    results: list[int | None] = [None] * n
    values: dict[int, Any] = {}
    fds: dict[int, int] = {}  # {creator atom: open fd}
    stopped_at = None
    try:
        for atom in program.atoms:
            op = atom.op
            r = _run_atom(atom.index, op, atom.args, bound, fds, values)
            results[atom.index] = r
            if stop_holds(atom.stop, r):
                stopped_at = atom.index
                break
    finally:
        for creator, fd in fds.items():
            if creator in program.exports:
                values[creator] = fd
            else:
                os.close(fd)
    return Completion(tag, program, results, stopped_at, False, values or None)


def _run_atom(
    index: int,
    op: atoms.Op,
    raw_args: dict[str, Any],
    bound: dict[str, Any],
    fds: dict[int, int],
    values: dict[int, Any],
) -> int:
    args: dict[str, Any] = {}
    for spec in op.args:
        value = raw_args[spec.name]
        if isinstance(value, Param):
            value = bound[value.name]
        elif isinstance(value, Ref):
            if spec.kind == "fd":
                if value.index not in fds:
                    return -errno.EBADF  # never opened, or closed already
                value = fds[value.index]
            else:  # data: the bytes the atom received (none if it failed)
                value = values.get(value.index, b"")
        args[spec.name] = value
    try:
        r, value = op.outcome(op.call(args))
    except OSError as exc:
        return atoms.errno_result(exc)
    if op.closes_fd:
        ref = raw_args["fd"]
        if isinstance(ref, Ref):
            fds.pop(ref.index, None)
    if op.creates_fd:
        fds[index] = value
    elif value is not None:
        values[index] = value
    return r


def run_reference(program: Program, *, tag: Any = None, **params: Any) -> Completion:
    """Run ``program`` in the calling thread, one blocking call per atom."""
    return execute(program, program.bind(params), tag)
