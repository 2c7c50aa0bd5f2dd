"""The op catalogue: everything uringlets knows about each system call.

One entry per op (``CATALOGUE``), read by every other module and restated by
none: the builder validates against its argument schema, the translator fills
SQEs through its ``prep``, the thread engine, the reference interpreter and
the io_uring engine's userspace steps call its blocking equivalent, and
``explain()`` describes it.  ``base`` holds the framework and the kernel's
failure rule; ``values`` what an argument's value may be (the C types it
must fit); ``files``, ``pipes`` and ``net`` hold the entries; ``sockaddr`` and
``msghdr`` the struct layouts they share with the kernel.
"""

from __future__ import annotations

from .base import (
    AT_FDCWD,
    BYTES,
    C_INT,
    COUNT,
    FD,
    MAX_ATOMS,
    MAX_TRANSFER,
    MESSAGE,
    OFF_T,
    REQUIRED,
    SLEEP,
    STAT,
    U32,
    ZERO,
    Arg,
    CType,
    Op,
    SqeWriter,
    errno_result,
)
from .files import LINK_TIMEOUT_OP, decode_statx, prep_link_timeout
from .files import OPS as FILE_OPS
from .net import OPS as NET_OPS
from .pipes import OPS as PIPE_OPS
from .values import MAX_SECONDS, ArgError, check_int, check_limit, check_value

CATALOGUE: dict[str, Op] = {op.name: op for op in (*FILE_OPS, *PIPE_OPS, *NET_OPS)}


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
    "C_INT",
    "FD",
    "LINK_TIMEOUT_OP",
    "MAX_ATOMS",
    "MAX_SECONDS",
    "MAX_TRANSFER",
    "MESSAGE",
    "OFF_T",
    "REQUIRED",
    "SLEEP",
    "STAT",
    "U32",
    "ZERO",
    "Arg",
    "ArgError",
    "CType",
    "Op",
    "SqeWriter",
    "check_int",
    "check_limit",
    "check_value",
    "data_of",
    "decode_statx",
    "errno_result",
    "prep_link_timeout",
]
