"""The ``struct msghdr`` region of sendmsg/recvmsg-like atoms (sendto,
recvfrom, sendmsg, recvmsg on IORING_OP_SENDMSG/RECVMSG): where its pieces
sit in the atom's scratch region, the fields the translator writes there per
execution (``SqeWriter.msghdr``), and the values decoded from what the kernel
wrote."""

from __future__ import annotations

import struct
from typing import Any

from . import sockaddr

# A msghdr region in scratch (see SqeWriter.msghdr): the struct msghdr,
# one struct iovec, room for the peer's address, then the data.
MSGHDR_SIZE = 64
IOVEC_AT = 64
NAME_AT = 80
NAME_SIZE = sockaddr.SOCKADDR_STORAGE
DATA_AT = NAME_AT + NAME_SIZE
# struct msghdr and struct iovec fields (LP64: x86_64, aarch64).
MSG_NAME, MSG_NAMELEN, MSG_IOV, MSG_IOVLEN = 0, 8, 16, 24
MSG_CONTROL, MSG_CONTROLLEN, MSG_FLAGS = 32, 40, 48
IOV_BASE, IOV_LEN = IOVEC_AT, IOVEC_AT + 8


def fields(name: Any, namelen: Any, iov: Any, base: Any, length: Any) -> list[Any]:
    """The fields of a msghdr region with one iovec, as (offset in the
    region, width, value); each value is 0 or 1 or what the caller passed
    (``iov`` must point at the region's IOVEC_AT)."""
    return [
        (MSG_NAME, 8, name),
        (MSG_NAMELEN, 4, namelen),
        (MSG_IOV, 8, iov),
        (MSG_IOVLEN, 8, 1),
        (MSG_CONTROL, 8, 0),
        (MSG_CONTROLLEN, 8, 0),
        (MSG_FLAGS, 4, 0),
        (IOV_BASE, 8, base),
        (IOV_LEN, 8, length),
    ]


def _message(region: Any, r: int) -> tuple[bytes, Any, int]:
    (namelen,) = struct.unpack("=I", region[MSG_NAMELEN : MSG_NAMELEN + 4])
    (flags,) = struct.unpack("=i", region[MSG_FLAGS : MSG_FLAGS + 4])
    name = sockaddr.decode(region[NAME_AT : NAME_AT + namelen]) if namelen else None
    return region[DATA_AT : DATA_AT + r], name, flags


def decode_recvfrom(region: Any, r: int) -> tuple[bytes, Any]:
    data, name, _ = _message(region, r)
    return data, name


def decode_recvmsg(region: Any, r: int) -> tuple[bytes, list[Any], int, Any]:
    data, name, flags = _message(region, r)
    return data, [], flags, name
