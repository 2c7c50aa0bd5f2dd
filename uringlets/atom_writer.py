"""``AtomWriter``: how one atom's SQE image is written at translation time.

The catalogue's prep functions (``atoms``) fill an SQE through this writer
(it implements ``atoms.SqeWriter``): constants go into the image; anything
known only per execution (a slot, a parameter, a scratch address, a length
fed by an earlier atom) becomes a *patch point* that ``ur_push`` applies
from the execution's value column.  The writer asks the translator
(``translate._Translator``) for value indexes, constant buffers and scratch
space; the translator owns all of those.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from . import atoms, kernel
from .atoms import net
from .plan import _PACK, FIELDS, SQE_SIZE, V_SCRATCH, V_SLOTS
from .syslet import Atom, Param, Ref

if TYPE_CHECKING:
    from .translate import _Translator

# struct msghdr / struct iovec (x86_64 and aarch64 LP64 layouts)
_MSG_NAME, _MSG_NAMELEN, _MSG_IOV, _MSG_IOVLEN, _MSG_FLAGS = 0, 8, 16, 24, 48


class AtomWriter:
    """Records one atom's SQE: constants into its image, the rest as patch
    points (implements ``atoms.SqeWriter``)."""

    def __init__(self, tr: _Translator, atom: Atom, sqe: int) -> None:
        self.tr = tr
        self.atom = atom
        self.sqe = sqe  # this atom's SQE in the plan's images
        self.image = bytearray(SQE_SIZE)
        self.flags = 0

    def _const(self, field: str, value: int) -> None:
        offset, width = FIELDS[field]
        mask = (1 << (8 * width)) - 1
        struct.pack_into(_PACK[width], self.image, offset, value & mask)

    def _or(self, field: str, value: int) -> None:
        offset, width = FIELDS[field]
        (old,) = struct.unpack_from(_PACK[width], self.image, offset)
        self._const(field, old | value)

    def _and_not(self, field: str, value: int) -> None:
        offset, width = FIELDS[field]
        (old,) = struct.unpack_from(_PACK[width], self.image, offset)
        self._const(field, old & ~value)

    def _patch(self, field: str, value: int, addend: int = 0) -> None:
        offset, width = FIELDS[field]
        self.tr.patches.append((self.sqe, offset, width, value, addend))

    def set(self, field: str, value: Any) -> None:
        if isinstance(value, Param):
            self._patch(field, self.tr.param_value(value))
        else:
            self._const(field, value)

    def fd(self, value: Any) -> None:
        if isinstance(value, Ref) and value.index in self.tr.slot_of:
            self._patch("fd", V_SLOTS + self.tr.slot_of[value.index])
            self.flags |= kernel.constant("IOSQE_FIXED_FILE")
        elif isinstance(value, Ref):
            self._patch("fd", self.tr.fd_value[value.index])
        else:
            self.set("fd", value)

    def close_target(self, value: Any) -> None:
        if isinstance(value, Ref) and value.index in self.tr.slot_of:
            self._patch("file_index", V_SLOTS + self.tr.slot_of[value.index], addend=1)
        elif isinstance(value, Ref):
            self._patch("fd", self.tr.fd_value[value.index])
        else:
            self.set("fd", value)

    def new_descriptor(self, field: str, cloexec: int) -> None:
        if self.atom.index in self.tr.slot_of:
            # A direct descriptor is in no fd table: the kernel refuses a
            # close-on-exec flag for it (-EINVAL).
            self._and_not(field, cloexec)
            self._patch("file_index", V_SLOTS + self.tr.slot_of[self.atom.index], addend=1)
        else:
            self._or(field, cloexec)  # a real fd: close-on-exec, as Python makes them

    def path(self, field: str, value: Any) -> None:
        if isinstance(value, Param):
            self._patch(field, self.tr.param_value(value))
        else:
            self._const(field, self.tr.const_buffer(value + b"\0"))

    def out_buffer(self, field: str, size: int) -> None:
        offset = self.tr.scratch(self.atom.index, size)
        self._patch(field, V_SCRATCH, addend=offset)

    def const_buffer(self, field: str, data: bytes) -> None:
        self._const(field, self.tr.const_buffer(data))

    def data(self, addr_field: str, len_field: str, value: Any) -> None:
        if isinstance(value, Param):
            use = self.tr.param_use(value)
            assert use.length_value is not None
            self._patch(addr_field, use.value)
            self._patch(len_field, use.length_value)
            self.tr.length_value[self.atom.index] = use.length_value
        elif isinstance(value, Ref):
            offset, size = self.tr.data_at[value.index]
            self._patch(addr_field, V_SCRATCH, addend=offset)
            length = self.tr.feed(value.index, size)
            self._patch(len_field, length)
            self.tr.length_value[self.atom.index] = length
        else:
            self._const(addr_field, self.tr.const_buffer(value or b"\0"))
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
        tr, index = self.tr, self.atom.index
        name_ptr: tuple[str, int]
        iov_base: tuple[str, int]
        iov_len: tuple[str, int]
        if out_size is not None:
            region = tr.scratch(index, net.DATA_AT + out_size)
            tr.data_at[index] = (region + net.DATA_AT, out_size)
            name_ptr, namelen = ("scratch", region + net.NAME_AT), atoms.sockaddr.SOCKADDR_STORAGE
            iov_base, iov_len = ("scratch", region + net.DATA_AT), ("const", out_size)
        else:
            region = tr.reserve(net.DATA_AT)
            name_ptr = ("const", tr.const_buffer(name) if name else 0)
            namelen = len(name) if name else 0
            if isinstance(data, Param):
                use = tr.param_use(data)
                assert use.length_value is not None
                iov_base, iov_len = ("value", use.value), ("value", use.length_value)
                tr.length_value[index] = use.length_value
            elif isinstance(data, Ref):
                offset, size = tr.data_at[data.index]
                length = tr.feed(data.index, size)
                iov_base, iov_len = ("scratch", offset), ("value", length)
                tr.length_value[index] = length
            else:
                iov_base, iov_len = ("const", tr.const_buffer(data or b"\0")), ("const", len(data))
        init = tr.scratch_init
        init.append((region + _MSG_NAME, 8, *name_ptr))
        init.append((region + _MSG_NAMELEN, 4, "const", namelen))
        init.append((region + _MSG_IOV, 8, "scratch", region + net.IOVEC_AT))
        init.append((region + _MSG_IOVLEN, 8, "const", 1))
        init.append((region + 32, 8, "const", 0))  # msg_control
        init.append((region + 40, 8, "const", 0))  # msg_controllen
        init.append((region + _MSG_FLAGS, 4, "const", 0))
        init.append((region + net.IOVEC_AT, 8, *iov_base))
        init.append((region + net.IOVEC_AT + 8, 8, *iov_len))
        self._patch(field, V_SCRATCH, addend=region)
