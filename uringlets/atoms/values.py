"""What a constant argument value may be, by argument kind (see ``Arg``).

The builder asks ``check_value`` about every argument that is neither a Ref
nor a Param, and ``check_limit`` about an atom's ``timeout=``; both raise
``ArgError`` (the builder names the atom, the op and the argument).  A value
accepted here is one every engine can pass on: it fits the C types of the
SQE field and of Python's blocking call (``Arg.bounds``), so the kernel does
not truncate it and Python does not raise OverflowError in a worker.

Seconds.  A duration (the ``timeout`` op's sleep) is a finite number in
0..``MAX_SECONDS``.  A limit (an atom's ``timeout=``) is a number in
(0, ``MAX_SECONDS``], or ``None`` or ``math.inf`` for no limit.  NaN, other
infinities and larger finite numbers (``10**400`` included) are refused,
never clamped.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any

from . import sockaddr
from .base import AT_FDCWD, C_INT, MAX_TRANSFER, Arg

MAX_SECONDS = 10**6


class ArgError(ValueError):
    """What is wrong with one argument's value."""


def check_int(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgError(f"expected {what}, got {value!r}")
    if not lo <= value <= hi:
        raise ArgError(f"{value} is out of range: expected {what}")
    return int(value)  # a plain int (socket.MSG_* are IntFlags: their arithmetic is slow)


def _number(value: Any, what: str) -> float:
    """A number of seconds as a float (an int too large for a float is
    infinity: it is out of every range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgError(f"expected {what}, got {value!r}")
    if isinstance(value, int):
        if abs(value) > MAX_SECONDS:
            return math.inf if value > 0 else -math.inf
        return float(value)
    return value


def check_seconds(value: Any) -> float:
    """A duration: finite, 0..MAX_SECONDS."""
    seconds = _number(value, "seconds as a number")
    if not 0 <= seconds <= MAX_SECONDS:  # False for NaN
        raise ArgError(f"{value!r} is not between 0 and 1e6 seconds")
    return seconds


def check_limit(value: Any) -> float | None:
    """An atom's ``timeout=``: None for no limit (``None`` or ``math.inf``),
    else seconds in (0, MAX_SECONDS]."""
    if value is None:
        return None
    seconds = _number(value, "seconds")
    if seconds == math.inf and isinstance(value, float):
        return None
    if not 0 < seconds <= MAX_SECONDS:  # False for NaN
        raise ArgError(f"{value!r} is not in (0, 1e6] seconds (math.inf: no limit)")
    return seconds


def check_value(spec: Arg, value: Any) -> Any:
    """The normalised value of a constant argument (not a Ref, not a Param)."""
    kind = spec.kind
    if kind == "fd":
        return check_int(value, *spec.bounds, "a descriptor")
    if kind == "dirfd":
        if value is None or (type(value) is int and value == AT_FDCWD):
            return None
        return check_int(value, *spec.bounds, "a directory descriptor")
    if kind in ("int", "flags"):
        return check_int(value, *spec.bounds, spec.describe())
    if kind == "size":
        return check_int(value, *spec.bounds, f"a size up to {MAX_TRANSFER}")
    if kind == "offset":
        return None if value is None else check_int(value, *spec.bounds, "a non-negative offset")
    if kind == "path":
        if not isinstance(value, (str, bytes, os.PathLike)):
            raise ArgError(f"expected str, bytes or os.PathLike, got {value!r}")
        path = os.fsencode(value)
        if b"\0" in path:
            raise ArgError("embedded null byte")
        return path
    if kind == "data":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ArgError(f"expected bytes, a Ref or a Param, got {value!r}")
        data = bytes(value)
        if len(data) > MAX_TRANSFER:
            raise ArgError(f"{len(data)} bytes is more than {MAX_TRANSFER}")
        return data
    if kind == "seconds":
        return check_seconds(value)
    if kind == "address":
        if value is None and spec.default is None:
            return None
        try:
            sockaddr.encode(value)
        except (ValueError, TypeError, OSError, struct.error) as exc:
            raise ArgError(str(exc)) from None
        return value
    if kind == "optval":
        if isinstance(value, bool) or not isinstance(value, (int, bytes, bytearray)):
            raise ArgError(f"expected an int or bytes, got {value!r}")
        if isinstance(value, int):
            return check_int(value, C_INT.lo, C_INT.hi, "an int that fits a C int")
        return bytes(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ArgError(f"expected True or False, got {value!r}")
        return value
    raise AssertionError(f"unknown argument kind {kind!r}")
