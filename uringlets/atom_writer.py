"""How one program's SQE images are written at translation time.

``Layout`` owns what a plan lays out besides the images: the per-execution
value row (slots, real fds, parameters, fed lengths), the scratch buffer's
regions, the constant buffers the images point into and the patch points.
``AtomWriter`` fills one SQE image through it: the catalogue's prep
functions (``atoms``) write through the writer (it implements
``atoms.SqeWriter``); constants go into the image, anything known only per
execution (a slot, a parameter, a scratch address, a length fed by an
earlier atom) becomes a *patch point* that ``ur_push`` applies from the
execution's value column.  The translator (``translate.py``) decides what
goes where and owns a Layout; this module knows nothing of it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import kernel
from .atom import Atom, Param, Ref
from .atoms import msghdr
from .errors import TranslateError
from .kernel import ffi
from .plan import _PACK, FIELDS, SQE_SIZE, V_SCRATCH, V_SLOTS, ParamUse


class Layout:
    """The per-program resources a plan's images refer to."""

    def __init__(self) -> None:
        self.patches: list[tuple[int, int, int, int, int]] = []
        self.keepalive: list[Any] = []
        self.slot_of: dict[int, int] = {}  # {creator atom: its local slot}
        self.fd_value: dict[int, int] = {}  # {creator atom: value index of its real fd}
        self.out: dict[int, tuple[int, int]] = {}
        self.scratch_size = 0
        self.values: list[int] = [0]  # V_SCRATCH
        self.params: dict[str, ParamUse] = {}
        self.length_value: dict[int, int] = {}
        self.feeds: dict[int, list[int]] = {}
        self.data_at: dict[int, tuple[int, int]] = {}  # where an atom's received bytes land
        self.scratch_init: list[tuple[int, int, str, int]] = []

    def new_value(self, default: int = 0) -> int:
        self.values.append(default)
        return len(self.values) - 1

    def declare_param(self, atom: Atom, arg: str, param: Param) -> None:
        """A value (and for data a length) for ``param``, used as argument
        ``arg`` of ``atom``; an int Param used twice must fit both."""
        spec = next(s for s in atom.op.args if s.name == arg)
        kind = spec.kind
        if kind == "size":
            assert param.at_most is not None  # (Syslet checked)
            lo, hi = 1, param.at_most
        else:
            lo, hi = spec.bounds if kind in ("int", "offset", "fd") else (0, 0)
        known = self.params.get(param.name)
        if known is not None:
            if known.kind != kind:
                raise TranslateError(
                    atom.index, atom.op.name, arg, f"{param!r} is used as {known.kind} elsewhere"
                )
            self.params[param.name] = replace(known, lo=max(lo, known.lo), hi=min(hi, known.hi))
            return
        value = self.new_value()
        length = self.new_value() if kind == "data" else None
        self.params[param.name] = ParamUse(param.name, kind, value, length, lo, hi)

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
        (``size`` until it is known; a size Param's value, when the source
        is a read of one: the value starts as a copy of it)."""
        length = self.new_value(size)
        self.feeds.setdefault(source, []).append(length)
        asked = self.length_value.get(source)
        if asked is not None:
            use = next(u for u in self.params.values() if u.value == asked)
            self.params[use.name] = replace(use, copies=(*use.copies, length))
        return length


class AtomWriter:
    """Records one atom's SQE: constants into its image, the rest as patch
    points (implements ``atoms.SqeWriter``)."""

    def __init__(
        self,
        layout: Layout,
        index: int,
        sqe: int,
        opcode: str,
        fields: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.layout = layout
        self.index = index  # the atom's
        self.sqe = sqe  # this SQE in the plan's images
        self.image = bytearray(SQE_SIZE)
        self.image[FIELDS["opcode"][0]] = kernel.opcode(opcode)
        self.fields = {**FIELDS, **fields} if fields else FIELDS
        self.flags = 0

    def _const(self, field: str, value: int) -> None:
        offset, width = self.fields[field]
        mask = (1 << (8 * width)) - 1
        struct.pack_into(_PACK[width], self.image, offset, value & mask)

    def _or(self, field: str, value: int) -> None:
        offset, width = self.fields[field]
        (old,) = struct.unpack_from(_PACK[width], self.image, offset)
        self._const(field, old | value)

    def _and_not(self, field: str, value: int) -> None:
        offset, width = self.fields[field]
        (old,) = struct.unpack_from(_PACK[width], self.image, offset)
        self._const(field, old & ~value)

    def _patch(self, field: str, value: int, addend: int = 0) -> None:
        offset, width = self.fields[field]
        self.layout.patches.append((self.sqe, offset, width, value, addend))

    def finish(self, user_data: int) -> bytes:
        """The image, with its user_data and flags."""
        struct.pack_into("=Q", self.image, FIELDS["user_data"][0], user_data)
        self.image[FIELDS["flags"][0]] = self.flags
        return bytes(self.image)

    def set(self, field: str, value: Any) -> None:
        if isinstance(value, Param):
            self._patch(field, self.layout.param_value(value))
        else:
            self._const(field, value)

    def fd(self, value: Any) -> None:
        if isinstance(value, Ref) and value.index in self.layout.slot_of:
            self._patch("fd", V_SLOTS + self.layout.slot_of[value.index])
            self.flags |= kernel.constant("IOSQE_FIXED_FILE")
        elif isinstance(value, Ref):
            self._patch("fd", self.layout.fd_value[value.index])
        else:
            self.set("fd", value)

    def second_fd(self, field: str, value: Any, flags_field: str, fixed_flag: str) -> None:
        if isinstance(value, Ref) and value.index in self.layout.slot_of:
            self._patch(field, V_SLOTS + self.layout.slot_of[value.index])
            self._or(flags_field, kernel.constant(fixed_flag))
        elif isinstance(value, Ref):
            self._patch(field, self.layout.fd_value[value.index])
        else:
            self.set(field, value)

    def close_target(self, value: Any) -> None:
        if isinstance(value, Ref) and value.index in self.layout.slot_of:
            self._patch("file_index", V_SLOTS + self.layout.slot_of[value.index], addend=1)
        elif isinstance(value, Ref):
            self._patch("fd", self.layout.fd_value[value.index])
        else:
            self.set("fd", value)

    def new_descriptor(self, field: str | None, cloexec: int) -> bool:
        if self.index in self.layout.slot_of:
            # A direct descriptor is in no fd table: the kernel refuses a
            # close-on-exec flag for it (-EINVAL).
            if field is not None:
                self._and_not(field, cloexec)
            self._patch("file_index", V_SLOTS + self.layout.slot_of[self.index], addend=1)
            return True
        if field is not None:
            self._or(field, cloexec)  # a real fd: close-on-exec, as Python makes them
        return False

    def path(self, field: str, value: Any) -> None:
        if isinstance(value, Param):
            self._patch(field, self.layout.param_value(value))
        else:
            self._const(field, self.layout.const_buffer(value + b"\0"))

    def out_buffer(self, field: str, size: Any) -> None:
        """The atom's output buffer; a size Param gets one of its
        ``at_most`` bytes, and its value is the length the kernel must
        transfer (``Layout.length_value``: a shorter one fails the link)."""
        if isinstance(size, Param):
            assert size.at_most is not None  # (Syslet checked)
            offset = self.layout.scratch(self.index, size.at_most)
            self.layout.length_value[self.index] = self.layout.param_value(size)
        else:
            offset = self.layout.scratch(self.index, size)
        self._patch(field, V_SCRATCH, addend=offset)

    def const_buffer(self, field: str, data: bytes) -> None:
        self._const(field, self.layout.const_buffer(data))

    def data(self, addr_field: str, len_field: str, value: Any) -> None:
        if isinstance(value, Param):
            use = self.layout.param_use(value)
            assert use.length_value is not None
            self._patch(addr_field, use.value)
            self._patch(len_field, use.length_value)
            self.layout.length_value[self.index] = use.length_value
        elif isinstance(value, Ref):
            offset, size = self.layout.data_at[value.index]
            self._patch(addr_field, V_SCRATCH, addend=offset)
            length = self.layout.feed(value.index, size)
            self._patch(len_field, length)
            self.layout.length_value[self.index] = length
        else:
            self._const(addr_field, self.layout.const_buffer(value or b"\0"))
            self._const(len_field, len(value))

    def kernel_flag(self, field: str, name: str) -> None:
        self._or(field, kernel.constant(name))

    def msghdr(
        self,
        field: str,
        *,
        out_size: int | None = None,
        data: Any = None,
        name: bytes | None = None,
    ) -> None:
        """A ``struct msghdr`` with one iovec in the scratch buffer, written
        there per execution (``Plan.scratch_init``): for recvmsg (``out_size``)
        with room for the peer's address and the data, for sendmsg with the
        data and the destination ``name``."""
        lay, index = self.layout, self.index
        name_ptr: tuple[str, int]
        iov_base: tuple[str, int]
        iov_len: tuple[str, int]
        if out_size is not None:
            region = lay.scratch(index, msghdr.DATA_AT + out_size)
            lay.data_at[index] = (region + msghdr.DATA_AT, out_size)
            name_ptr, namelen = ("scratch", region + msghdr.NAME_AT), msghdr.NAME_SIZE
            iov_base, iov_len = ("scratch", region + msghdr.DATA_AT), ("const", out_size)
        else:
            region = lay.reserve(msghdr.DATA_AT)
            name_ptr = ("const", lay.const_buffer(name) if name else 0)
            namelen = len(name) if name else 0
            if isinstance(data, Param):
                use = lay.param_use(data)
                assert use.length_value is not None
                iov_base, iov_len = ("value", use.value), ("value", use.length_value)
                lay.length_value[index] = use.length_value
            elif isinstance(data, Ref):
                offset, size = lay.data_at[data.index]
                length = lay.feed(data.index, size)
                iov_base, iov_len = ("scratch", offset), ("value", length)
                lay.length_value[index] = length
            else:
                iov_base, iov_len = ("const", lay.const_buffer(data or b"\0")), ("const", len(data))
        iov = ("scratch", region + msghdr.IOVEC_AT)
        for offset, width, value in msghdr.fields(name_ptr, namelen, iov, iov_base, iov_len):
            source = value if isinstance(value, tuple) else ("const", value)
            lay.scratch_init.append((region + offset, width, *source))
        self._patch(field, V_SCRATCH, addend=region)
