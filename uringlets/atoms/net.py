"""Network ops of the catalogue: socket, setsockopt, bind, listen, connect,
accept, send, recv, sendto, recvfrom, sendmsg, recvmsg, shutdown.

Descriptors made by ``socket`` and ``accept`` are slots (direct descriptors)
on io_uring, so no fd crosses to Python mid-chain.  The blocking calls borrow
the fd in a ``socket.socket`` for one call and detach it again, so they behave
exactly as Python's socket methods do (and raise what they raise).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from . import sockaddr
from .base import C_INT, COUNT, FD, MESSAGE, U32, ZERO, Arg, Op, SqeWriter
from .files import BYTES
from .msghdr import decode_recvfrom, decode_recvmsg


@contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket]:
    """A socket object over ``fd`` that does not own it."""
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()


_MSG_WAITALL = int(socket.MSG_WAITALL)  # a plain int: enum arithmetic is slow


def _waitall(a: Mapping[str, Any]) -> bool:
    return bool(a["flags"] & _MSG_WAITALL)


def _data_length(a: Mapping[str, Any]) -> int | None:
    data = a["data"]
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None


# -- socket ------------------------------------------------------------------------
def _prep_socket(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.set("fd", a["family"])
    w.set("off", a["type"])
    w.set("len", a["proto"])
    w.new_descriptor("off", socket.SOCK_CLOEXEC)


def _call_socket(a: Mapping[str, Any]) -> int:
    return socket.socket(a["family"], a["type"], a["proto"]).detach()


# -- setsockopt (IORING_OP_URING_CMD, SOCKET_URING_OP_SETSOCKOPT, 6.7) --------------
# The SQE of IORING_OP_URING_CMD on a socket (io_uring_prep_cmd_sock):
# {field: (byte offset, width)} beyond the common fields.
SOCKOPT_FIELDS = {
    "cmd_op": (8, 4),
    "level": (16, 4),
    "optname": (20, 4),
    "optlen": (44, 4),
    "optval": (48, 8),
}


def optval_bytes(value: int | bytes) -> bytes:
    return struct.pack("=i", value) if isinstance(value, int) else bytes(value)


def _prep_setsockopt(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.kernel_flag("cmd_op", "URINGLETS_SOCKET_URING_OP_SETSOCKOPT")
    w.set("level", a["level"])
    w.set("optname", a["optname"])
    value = optval_bytes(a["value"])
    w.const_buffer("optval", value)
    w.set("optlen", len(value))


def _call_setsockopt(a: Mapping[str, Any]) -> None:
    with _borrowed(a["fd"]) as s:
        s.setsockopt(a["level"], a["optname"], a["value"])


# -- bind, listen, connect, accept -------------------------------------------------
def _prep_address(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    raw = sockaddr.encode(a["address"])
    w.const_buffer("addr", raw)
    w.set("off", len(raw))


def _call_bind(a: Mapping[str, Any]) -> None:
    with _borrowed(a["fd"]) as s:
        s.bind(a["address"])


def _prep_listen(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.set("len", a["backlog"])


def _call_listen(a: Mapping[str, Any]) -> None:
    with _borrowed(a["fd"]) as s:
        s.listen(a["backlog"])


def _call_connect(a: Mapping[str, Any]) -> None:
    with _borrowed(a["fd"]) as s:
        s.connect(a["address"])


def _connect_interruptible(a: Mapping[str, Any], wait: Callable[[int, int], int]) -> None:
    """connect() that a cancel or a timeout can interrupt: start it
    non-blocking, wait for the outcome (``wait`` returns 0, ECANCELED or
    ETIME), then restore the descriptor's blocking mode."""
    fd = a["fd"]
    with _borrowed(fd) as s:
        was_blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)
        try:
            err = s.connect_ex(a["address"])
            if err == errno.EINPROGRESS and was_blocking:
                err = wait(fd, select.POLLOUT) or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        finally:
            os.set_blocking(fd, was_blocking)


def _prep_accept(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.new_descriptor("op_flags", socket.SOCK_CLOEXEC)


def _call_accept(a: Mapping[str, Any]) -> int:
    with _borrowed(a["fd"]) as s:
        conn, _ = s.accept()
        return conn.detach()


# One lock per listening descriptor number: of the threads that one
# connection wakes, only the one holding it may accept, after checking that
# the connection is still there; the others wait again.
_ACCEPT_LOCKS: dict[int, threading.Lock] = {}
_ACCEPT_LOCKS_GUARD = threading.Lock()


def _accept_interruptible(a: Mapping[str, Any], wait: Callable[[int, int], int]) -> int:
    """accept() that a cancel or a timeout can interrupt.  An interrupted wait
    is an error (OSError: ETIME or ECANCELED), never a result without a
    descriptor: the caller would take the missing descriptor for one.

    Several executions may accept on one listener: a connection makes all
    their polls ready, and a plain accept() by each would leave all but one
    blocked where no cancel reaches them.  So the accept is made only under
    the listener's lock and only while a connection is still pending (the
    descriptor's blocking mode, which the listener's other users share, is
    left alone)."""
    fd = a["fd"]
    with _ACCEPT_LOCKS_GUARD:
        lock = _ACCEPT_LOCKS.setdefault(fd, threading.Lock())
    while True:
        err = wait(fd, select.POLLIN)
        if err:
            raise OSError(err, os.strerror(err))
        if not lock.acquire(timeout=0.05):
            continue  # another thread is accepting: wait (interruptibly) again
        try:
            still = select.poll()
            still.register(fd, select.POLLIN)
            if still.poll(0):
                return _call_accept(a)
        finally:
            lock.release()


# -- send, recv ------------------------------------------------------------------------
def _prep_send(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.data("addr", "len", a["data"])
    w.set("op_flags", a["flags"])


def _call_send(a: Mapping[str, Any]) -> int:
    with _borrowed(a["fd"]) as s:
        return s.send(a["data"], a["flags"])


def _prep_recv(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.out_buffer("addr", a["bufsize"])
    w.set("len", a["bufsize"])
    w.set("op_flags", a["flags"])


def _call_recv(a: Mapping[str, Any]) -> bytes:
    with _borrowed(a["fd"]) as s:
        return s.recv(a["bufsize"], a["flags"])


# -- sendto, sendmsg, recvfrom, recvmsg (IORING_OP_SENDMSG/RECVMSG) -------------------
def _prep_sendmsg(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    address = a["address"]
    name = sockaddr.encode(address) if address is not None else None
    w.msghdr("addr", data=a["data"], name=name)
    w.set("op_flags", a["flags"])


def _call_sendto(a: Mapping[str, Any]) -> int:
    with _borrowed(a["fd"]) as s:
        return s.sendto(a["data"], a["flags"], a["address"])


def _call_sendmsg(a: Mapping[str, Any]) -> int:
    with _borrowed(a["fd"]) as s:
        if a["address"] is None:
            return s.sendmsg([a["data"]], [], a["flags"])
        return s.sendmsg([a["data"]], [], a["flags"], a["address"])


def _prep_recvmsg(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.msghdr("addr", out_size=a["bufsize"])
    w.set("op_flags", a["flags"])


def _call_recvfrom(a: Mapping[str, Any]) -> tuple[bytes, Any]:
    with _borrowed(a["fd"]) as s:
        return s.recvfrom(a["bufsize"], a["flags"])


def _call_recvmsg(a: Mapping[str, Any]) -> tuple[bytes, list[Any], int, Any]:
    with _borrowed(a["fd"]) as s:
        return s.recvmsg(a["bufsize"], 0, a["flags"])


# -- shutdown --------------------------------------------------------------------------
def _prep_shutdown(w: SqeWriter, a: Mapping[str, Any]) -> None:
    w.fd(a["fd"])
    w.set("len", a["how"])


def _call_shutdown(a: Mapping[str, Any]) -> None:
    with _borrowed(a["fd"]) as s:
        s.shutdown(a["how"])


_FD = Arg("fd", "fd")
# The ints: what the SQE field holds and the kernel reads it into, then
# Python's C int.  msg flags: SQE msg_flags (__u32); backlog, how, level,
# optname: an SQE __u32 the kernel reads as an int; socket's family, type
# and proto: ints (from SQE fd, off and len).
_FLAGS = Arg("flags", "flags", 0, fits=(U32, C_INT))

OPS: tuple[Op, ...] = (
    Op(
        "socket",
        (
            Arg("family", "flags", fits=(C_INT,)),
            Arg("type", "flags", fits=(C_INT,)),
            Arg("proto", "flags", 0, fits=(C_INT,)),
        ),
        FD,
        _call_socket,
        "SOCKET",
        _prep_socket,
        family_arg="family",
    ),
    Op(
        "setsockopt",
        (
            _FD,
            Arg("level", "flags", fits=(U32, C_INT)),
            Arg("optname", "flags", fits=(U32, C_INT)),
            Arg("value", "optval"),
        ),
        ZERO,
        _call_setsockopt,
        "URING_CMD_SETSOCKOPT",
        _prep_setsockopt,
        sqe_fields=SOCKOPT_FIELDS,
    ),
    Op("bind", (_FD, Arg("address", "address")), ZERO, _call_bind, "BIND", _prep_address),
    Op(
        "listen",
        (_FD, Arg("backlog", "int", 128, fits=(U32, C_INT))),
        ZERO,
        _call_listen,
        "LISTEN",
        _prep_listen,
    ),
    Op(
        "connect",
        (_FD, Arg("address", "address")),
        ZERO,
        _call_connect,
        "CONNECT",
        _prep_address,
        interruptible=_connect_interruptible,
    ),
    # No ``waits_for``: the generic wait before a call reports an interrupted
    # wait as a result with no value, and an op that creates a descriptor
    # must then raise instead (see _accept_interruptible).
    Op(
        "accept",
        (_FD,),
        FD,
        _call_accept,
        "ACCEPT",
        _prep_accept,
        interruptible=_accept_interruptible,
        family_arg="fd",
    ),
    Op(
        "send",
        (_FD, Arg("data", "data"), _FLAGS),
        COUNT,
        _call_send,
        "SEND",
        _prep_send,
        length=_data_length,
        short_fails=_waitall,
        waits_for=select.POLLOUT,
    ),
    Op(
        "recv",
        (_FD, Arg("bufsize", "size"), _FLAGS),
        BYTES,
        _call_recv,
        "RECV",
        _prep_recv,
        length=lambda a: a["bufsize"],
        short_fails=_waitall,
        waits_for=select.POLLIN,
    ),
    Op(
        "sendto",
        (_FD, Arg("data", "data"), Arg("address", "address"), _FLAGS),
        COUNT,
        _call_sendto,
        "SENDMSG",
        _prep_sendmsg,
        length=_data_length,
        short_fails=_waitall,
        waits_for=select.POLLOUT,
    ),
    Op(
        "recvfrom",
        (_FD, Arg("bufsize", "size"), _FLAGS),
        MESSAGE,
        _call_recvfrom,
        "RECVMSG",
        _prep_recvmsg,
        length=lambda a: a["bufsize"],
        short_fails=_waitall,
        waits_for=select.POLLIN,
        decode=decode_recvfrom,
    ),
    Op(
        "sendmsg",
        (_FD, Arg("data", "data"), Arg("address", "address", None), _FLAGS),
        COUNT,
        _call_sendmsg,
        "SENDMSG",
        _prep_sendmsg,
        length=_data_length,
        short_fails=_waitall,
        waits_for=select.POLLOUT,
    ),
    Op(
        "recvmsg",
        (_FD, Arg("bufsize", "size"), _FLAGS),
        MESSAGE,
        _call_recvmsg,
        "RECVMSG",
        _prep_recvmsg,
        length=lambda a: a["bufsize"],
        short_fails=_waitall,
        waits_for=select.POLLIN,
        decode=decode_recvmsg,
    ),
    # A failed shutdown (ENOTCONN) does not fail the request: the link goes on.
    Op(
        "shutdown",
        (_FD, Arg("how", "flags", fits=(U32, C_INT))),
        ZERO,
        _call_shutdown,
        "SHUTDOWN",
        _prep_shutdown,
        error_breaks_link=False,
    ),
)
