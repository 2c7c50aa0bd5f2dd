"""Socket addresses as Python's ``socket`` module writes them, to and from
the kernel's ``struct sockaddr``: ``(host, port)`` for AF_INET,
``(host, port[, flowinfo, scope_id])`` for AF_INET6, a path (str or bytes;
a leading NUL byte for the abstract namespace) for AF_UNIX."""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

SOCKADDR_STORAGE = 128
_UNIX_PATH_MAX = 108


def family_of(address: Any) -> int:
    """The address family an address is written for (as ``socket`` would
    accept it); raises ValueError for anything else."""
    if isinstance(address, (str, bytes, os.PathLike)):
        return socket.AF_UNIX
    if isinstance(address, tuple) and len(address) in (2, 4):
        host = address[0]
        if not isinstance(host, str):
            raise ValueError(f"the host must be a str, got {host!r}")
        if len(address) == 4 or ":" in host:
            return socket.AF_INET6
        return socket.AF_INET
    raise ValueError(f"not a socket address: {address!r}")


def _resolve(host: str, family: int) -> str:
    """A numeric address for ``host``, resolved once, at compile time."""
    if host == "":
        return "0.0.0.0" if family == socket.AF_INET else "::"
    try:
        socket.inet_pton(family, host)
        return host
    except OSError:
        pass
    try:
        info = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    return str(info[0][4][0])


def _port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"the port must be an int in 0..65535, got {port!r}")
    return port


def _u(value: Any, what: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"the {what} must be an int in 0..{top}, got {value!r}")
    return value


def encode(address: Any, family: int | None = None) -> bytes:
    """The ``struct sockaddr`` bytes for ``address``; its length is the
    address length to give the kernel."""
    if family is None:
        family = family_of(address)
    if family == socket.AF_UNIX:
        if not isinstance(address, (str, bytes, os.PathLike)):
            raise ValueError(f"an AF_UNIX address is a path, got {address!r}")
        path = os.fsencode(address)
        if len(path) >= _UNIX_PATH_MAX:
            raise ValueError("AF_UNIX path too long")
        if path[:1] != b"\0":
            path += b"\0"
        return struct.pack("=H", family) + path
    if family == socket.AF_INET:
        if not (isinstance(address, tuple) and len(address) == 2):
            raise ValueError(f"an AF_INET address is (host, port), got {address!r}")
        host = _resolve(address[0], family)
        return (
            struct.pack("=H", family)
            + struct.pack("!H", _port(address[1]))
            + socket.inet_pton(family, host)
            + bytes(8)
        )
    if family == socket.AF_INET6:
        if not (isinstance(address, tuple) and len(address) in (2, 4)):
            raise ValueError(f"an AF_INET6 address is (host, port[, flowinfo, scope_id]), "
                             f"got {address!r}")  # fmt: skip
        flowinfo, scope_id = address[2:] if len(address) == 4 else (0, 0)
        # Python refuses a flowinfo above 20 bits (OverflowError) and wraps a
        # scope id modulo 2**32; the kernel's fields are 32 bits.
        flowinfo = _u(flowinfo, "flowinfo", 0xFFFFF)
        scope_id = _u(scope_id, "scope id", 2**32 - 1)
        host = _resolve(address[0], family)
        return (
            struct.pack("=H", family)
            + struct.pack("!HI", _port(address[1]), flowinfo)
            + socket.inet_pton(family, host)
            + struct.pack("=I", scope_id)
        )
    raise ValueError(f"unsupported address family {family}")


def decode(raw: bytes) -> Any:
    """The address as ``socket`` returns it, from ``struct sockaddr`` bytes
    (the kernel's length already applied)."""
    if len(raw) < 2:
        return "" if not raw else None
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_INET:
        (port,) = struct.unpack_from("!H", raw, 2)
        return (socket.inet_ntop(family, raw[4:8]), port)
    if family == socket.AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        (scope_id,) = struct.unpack_from("=I", raw, 24)
        return (socket.inet_ntop(family, raw[8:24]), port, flowinfo, scope_id)
    if family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return path  # abstract: bytes, as socket returns it
        return os.fsdecode(path.split(b"\0", 1)[0])
    return raw
