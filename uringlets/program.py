"""``Program``: a compiled syslet, immutable and reusable, with ``explain()``
and the parameter binding every engine shares."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from . import kernel
from .atom import (
    STOP_ON_NEGATIVE,
    STOP_ON_NON_POSITIVE,
    STOP_ON_NONZERO,
    STOP_ON_ZERO,
    Atom,
    Param,
    Ref,
)
from .atoms import MAX_TRANSFER
from .errors import ParamError
from .plan import LINK_END, ParamUse, Plan

_MISSING = object()  # (no value is this object)
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()

_STOP_NAMES = (
    (STOP_ON_NEGATIVE, "NEGATIVE"),
    (STOP_ON_NONZERO, "NONZERO"),
    (STOP_ON_ZERO, "ZERO"),
    (STOP_ON_NON_POSITIVE, "NON_POSITIVE"),
)


def _str_paths_encoded(column: list[Any]) -> list[Any]:
    """A column of str paths as ``os.fsencode`` makes them, a pass in C;
    any other column as it is (``_column_ok`` then judges it)."""
    if {*map(type, column)} != {str}:
        return column
    n = len(column)
    return list(map(str.encode, column, repeat(_FS_ENCODING, n), repeat(_FS_ERRORS, n)))


def _column_ok(use: ParamUse, column: list[Any]) -> bool:
    """Whether every value is already of the exact bound type and valid
    (a column at a time: these run in C)."""
    kind = use.kind
    if kind == "path":  # no NUL inside: the joined column has only the n - 1 joints
        return {*map(type, column)} == {bytes} and b"\0".join(column).count(0) == len(column) - 1
    if kind == "data":
        return {*map(type, column)} == {bytes} and max(map(len, column)) <= MAX_TRANSFER
    return {*map(type, column)} == {int} and min(column) >= use.lo and max(column) <= use.hi


def stop_name(rule: int) -> str:
    names = [name for bit, name in _STOP_NAMES if rule & bit]
    return "|".join(names) if names else "NEVER"


class Program:
    """A validated, translated syslet.  Holds its plan (and so the constant
    buffers the SQE images point into) for as long as it lives; every
    in-flight execution keeps its Program alive.  ``refs`` are the Refs the
    builder handed out, one per atom: a completion knows its values by them
    (``Completion.__getitem__``), so a Ref of another syslet never matches."""

    __slots__ = (
        "__weakref__", "atoms", "dropped", "exports", "param_kinds", "param_uses", "plan", "refs",
    )  # fmt: skip

    def __init__(
        self, atoms: tuple[Atom, ...], refs: tuple[Ref, ...], exports: tuple[int, ...], plan: Plan
    ) -> None:
        self.atoms = atoms
        self.refs = refs
        self.exports = exports
        self.plan = plan
        self.param_uses: dict[str, ParamUse] = {use.name: use for use in plan.params}
        self.param_kinds: dict[str, str] = {use.name: use.kind for use in plan.params}
        # atoms whose bytes the completion does not give back (keep=False)
        self.dropped = frozenset(a.index for a in atoms if not a.keep)

    def __len__(self) -> int:
        return len(self.atoms)

    def __repr__(self) -> str:
        ops = "+".join(a.op.name for a in self.atoms)
        return f"<Program {ops}: {len(self.plan.segments)} segment(s)>"

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one execution's parameters: every Param bound, nothing
        else, each of its kind.  Returns name -> value (paths and data as
        bytes).  Raises ``ParamError``."""
        kinds = self.param_kinds
        if params.keys() != kinds.keys():
            missing = sorted(kinds.keys() - params.keys())
            unknown = sorted(params.keys() - kinds.keys())
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise ParamError(f"parameters: {'; '.join(parts)}")
        bound: dict[str, Any] = {}
        for name, value in params.items():
            kind = kinds[name]
            if kind == "path":
                if not isinstance(value, (str, bytes, os.PathLike)):
                    raise ParamError(f"parameter {name!r}: expected a path, got {value!r}")
                path = os.fsencode(value)
                if b"\0" in path:
                    raise ParamError(f"parameter {name!r}: embedded null byte")
                bound[name] = path
            elif kind == "data":
                if not isinstance(value, (bytes, bytearray, memoryview)):
                    raise ParamError(f"parameter {name!r}: expected bytes, got {value!r}")
                if len(value) > MAX_TRANSFER:
                    raise ParamError(f"parameter {name!r}: more than {MAX_TRANSFER} bytes")
                bound[name] = bytes(value)
            else:  # int, offset, fd: what every argument it is used as fits
                lo, hi = self.param_uses[name].lo, self.param_uses[name].hi
                if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                    raise ParamError(
                        f"parameter {name!r}: expected an int in {lo}..{hi}, got {value!r}"
                    )
                bound[name] = value
        return bound

    def bind_columns(self, binds: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Validate the parameters of many executions at once; returns
        ``{name: [value per execution]}``.  The common case (exact types, a
        column of paths all str or all bytes, no stray keys) costs a few
        list passes; anything else goes through ``bind`` one execution at a
        time, which names the culprit."""
        kinds = self.param_kinds
        if not kinds:
            if any(binds):
                for b in binds:
                    self.bind(b)
            return {}
        if len(binds) == 1:
            return self._bind_row(binds[0])
        nkeys = len(kinds)
        try:
            columns = {name: list(map(itemgetter(name), binds)) for name in kinds}
        except KeyError:
            columns = {}
        if columns and {*map(len, binds)} == {nkeys}:
            for name, use in self.param_uses.items():
                if use.kind == "path":
                    columns[name] = _str_paths_encoded(columns[name])
                if not _column_ok(use, columns[name]):
                    break
            else:
                return columns
        bound = [self.bind(b) for b in binds]
        return {name: [b[name] for b in bound] for name in kinds}

    def _bind_row(self, params: Mapping[str, Any]) -> dict[str, list[Any]]:
        """``bind_columns`` of one execution (``Engine.run``, one
        ``submit``): each value checked where it stands, a str path encoded
        as ``os.fsencode`` would; anything unusual goes through ``bind``,
        which names the culprit."""
        row: dict[str, list[Any]] = {}
        if len(params) == len(self.param_uses):
            for name, use in self.param_uses.items():
                value = params.get(name, _MISSING)
                kind, vtype = use.kind, type(value)
                if kind == "path":
                    if vtype is str:
                        value = value.encode(_FS_ENCODING, _FS_ERRORS)
                    elif vtype is not bytes:
                        break
                    if b"\0" in value:
                        break
                elif kind == "data":
                    if vtype is not bytes or len(value) > MAX_TRANSFER:
                        break
                elif vtype is not int or not use.lo <= value <= use.hi:
                    break
                row[name] = [value]
            else:
                return row
        return {name: [value] for name, value in self.bind(params).items()}

    def explain(self) -> str:
        """How the program runs: segments, link flags, slots, userspace steps."""
        plan = self.plan
        feats = plan.features
        lines = [
            f"program: {len(self.atoms)} atom(s), {len(plan.segments)} segment(s), "
            f"{plan.nslots} slot(s), {plan.scratch_size} scratch byte(s) per execution"
        ]
        if feats.available:
            lines.append(
                "kernel: io_uring; dropped setup flags: "
                + (", ".join(feats.dropped_flags) or "none")
                + (
                    f"; treated as missing: {', '.join(sorted(feats.forced_missing))}"
                    if feats.forced_missing
                    else ""
                )
                + (
                    "; restricted rings: yes"
                    if "RESTRICTIONS" in feats.extras
                    else "; restricted rings: no (Engine(restrict=...) checks at submit only)"
                )
            )
        else:
            lines.append(f"kernel: no io_uring ({feats.reason}); every atom runs in userspace")
        for number, seg in enumerate(plan.segments):
            where = "kernel link" if seg.in_kernel else "userspace step"
            lines.append(f"segment {number} ({where}): atoms {seg.first}-{seg.last}")
            for pa in plan.atoms[seg.first : seg.last + 1]:
                args = ", ".join(f"{k}={_show(v, plan)}" for k, v in pa.args.items())
                notes = [f"stop={stop_name(pa.stop)}"]
                if pa.in_kernel:
                    notes.append("ends segment" if pa.link == LINK_END else pa.link)
                    if pa.skip:
                        success = "its full length" if pa.success is None else pa.success
                        notes.append(f"CQE_SKIP_SUCCESS (success={success})")
                else:
                    if pa.op.kernel_op is None:
                        reason = "no such io_uring op"
                    elif not pa.op.kernel_when(pa.args):
                        reason = "io_uring differs from the system call for these arguments"
                    else:
                        reason = "kernel lacks op"
                    notes.append(f"userspace: {reason}")
                if pa.timeout is not None and not pa.in_kernel:
                    notes.append(f"timeout {pa.timeout:g}s (poll)")
                elif pa.timeout is not None:
                    # Its LINK_TIMEOUT is the SQE after the atom's; the last
                    # SQE of a segment posts whatever its flags (ur_push).
                    skip = kernel.constant("IOSQE_CQE_SKIP_SUCCESS")
                    silent = pa.link != LINK_END and plan.sqe_flags[pa.sqe + 1] & skip
                    how = "LINK_TIMEOUT, posts no CQE" if silent else "LINK_TIMEOUT"
                    notes.append(f"timeout {pa.timeout:g}s ({how})")
                if pa.slot is not None:
                    notes.append(f"-> slot {pa.slot}")
                elif pa.fd_value is not None:
                    notes.append("-> real fd")
                if not pa.keep:
                    notes.append("bytes not kept")
                lines.append(f"  {pa.index:2d} {pa.op.name}({args})  [{'; '.join(notes)}]")
        if self.exports:
            lines.append("exports: " + ", ".join(f"atom {i}" for i in self.exports))
        return "\n".join(lines)


def _show(value: Any, plan: Plan) -> str:
    if isinstance(value, Ref):
        slot = plan.atoms[value.index].slot
        return f"slot {slot}" if slot is not None else f"atom {value.index}"
    if isinstance(value, Param):
        return f"${value.name}" if value.at_most is None else f"${value.name}<={value.at_most}"
    if isinstance(value, bytes) and len(value) > 24:
        return repr(value[:24]) + "..."
    return repr(value)
