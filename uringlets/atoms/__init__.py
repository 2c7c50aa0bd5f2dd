"""The op catalogue: everything uringlets knows about each system call.

One entry per op (``CATALOGUE``), read by every other module and restated by
none: the builder validates against its argument schema, the translator fills
SQEs through its ``prep``, the thread engine, the reference interpreter and
the io_uring engine's userspace steps call its blocking equivalent, and
``explain()`` describes it.  ``base`` holds the framework and the kernel's
failure rule; ``files`` and ``net`` hold the entries.
"""

from __future__ import annotations

from .base import (
    AT_FDCWD,
    BYTES,
    COUNT,
    FD,
    MAX_ATOMS,
    MAX_TRANSFER,
    MESSAGE,
    REQUIRED,
    SLEEP,
    STAT,
    ZERO,
    Arg,
    Op,
    SqeWriter,
    errno_result,
)
from .files import OPS as FILE_OPS
from .files import decode_statx
from .net import OPS as NET_OPS

CATALOGUE: dict[str, Op] = {op.name: op for op in (*FILE_OPS, *NET_OPS)}


def data_of(value: object) -> bytes:
    """The bytes an atom received, from its value (bytes, or a recvmsg-like
    tuple whose first item is the data); nothing if it failed."""
    if value is None:
        return b""
    if isinstance(value, tuple):
        return bytes(value[0])
    assert isinstance(value, (bytes, bytearray)), value
    return bytes(value)


__all__ = [
    "AT_FDCWD",
    "BYTES",
    "CATALOGUE",
    "COUNT",
    "FD",
    "MAX_ATOMS",
    "MAX_TRANSFER",
    "MESSAGE",
    "REQUIRED",
    "SLEEP",
    "STAT",
    "ZERO",
    "Arg",
    "Op",
    "SqeWriter",
    "data_of",
    "decode_statx",
    "errno_result",
]
