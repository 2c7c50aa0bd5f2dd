"""``tcp_request``: connect, send a payload, receive the answer, close; and
``tcp_requests`` for many at once.  What the plain recipe does::

    with socket.create_connection(address, timeout) as sock:
        sock.sendall(payload)
        ... recv until the peer closes, a byte count or a delimiter

One chain per request (socket, connect, send all, the first recv; the
socket exported), then further recvs only for answers that need more,
all requests of a round in one batch.  Read until the peer closes (no
``until``), the chain has a second recv, as the plain loop's next one: an
answer that came whole ends with it in the same trip (0: closed), as
read_files' chain reads the end of a file.  ``timeout`` bounds each step,
as a socket timeout does: connect, the send, each recv.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from typing import Any

from ..async_engine import AsyncEngine
from ..engine import Engine
from ..program import Program
from ..syslet import Param, Ref, Syslet
from .driving import Helper, adrive, check_errors, drive, first_error, outcome

RECV_SIZE = 64 * 1024  # bytes one recv asks for
END_RECV_SIZE = 4 * 1024  # the first chain's second recv (usually 0: the peer closed)
SEND_FLAGS = socket.MSG_NOSIGNAL | socket.MSG_WAITALL
Address = tuple[Any, ...] | str | bytes
Until = int | bytes | None


class _Chains:
    """The programs of one address and timeout (an address is a constant
    of a program: compiled once each, in a bounded cache): ``first``
    (socket, connect, send, recv, the socket exported); ``to_close``: the
    answer ends when the peer closes, and ``first`` receives once more
    (``end_recv``: after a first recv that saw the close already, it sees
    it again)."""

    def __init__(self, address: Address, timeout: float | None, to_close: bool) -> None:
        s = Syslet()
        self.sock = s.socket(_family(address), socket.SOCK_STREAM)
        s.export(self.sock)
        s.connect(self.sock, address, timeout=timeout)
        s.send(self.sock, Param("payload"), SEND_FLAGS, timeout=timeout)
        self.first_recv = s.recv(self.sock, RECV_SIZE, timeout=timeout)
        self.end_recv = s.recv(self.sock, END_RECV_SIZE, timeout=timeout) if to_close else None
        self.first: Program = s.compile()


@cache
def _more(timeout: float | None) -> tuple[Program, Ref]:
    """One more recv on an exported socket."""
    s = Syslet()
    data = s.recv(Param("fd"), RECV_SIZE, timeout=timeout)
    return s.compile(), data


@lru_cache(maxsize=64)
def _chains(address: Address, timeout: float | None, to_close: bool) -> _Chains:
    return _Chains(address, timeout, to_close)


def _family(address: Address) -> int:
    if isinstance(address, (str, bytes)):
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET


def _resolved(address: Address) -> Address:
    """A host name becomes an address (as create_connection resolves it:
    the first of getaddrinfo's answers)."""
    if isinstance(address, (str, bytes)):
        return address
    host, port = address[:2]
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        return address
    except OSError:
        pass
    info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    return info[0][4]


def _valid_until(until: object) -> bool:
    if until is None:
        return True
    if isinstance(until, bytes):
        return len(until) > 0
    return isinstance(until, int) and not isinstance(until, bool) and until > 0


def _done(data: bytes, until: Until) -> tuple[bool, bytes]:
    """Whether the answer is complete, and the answer (cut where ``until``
    says)."""
    if isinstance(until, int):
        return len(data) >= until, data[:until]
    if isinstance(until, bytes):
        end = data.find(until)
        return end >= 0, data if end < 0 else data[: end + len(until)]
    return False, data


def _failure(code: int) -> OSError:
    if code in (errno.ETIME, errno.ETIMEDOUT, errno.ECANCELED):
        return TimeoutError("timed out")  # what a socket timeout raises
    return OSError(code, os.strerror(code))


def _tcp_requests(
    requests: Sequence[tuple[Address, bytes]], timeout: float | None, until: Until, errors: str
) -> Helper[list[Any]]:
    check_errors(errors)
    if not _valid_until(until):
        raise ValueError(f"until must be None, an int > 0 or non-empty bytes, not {until!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be None or seconds > 0, not {timeout!r}")
    n = len(requests)
    out: list[Any] = [None] * n
    got: list[list[bytes]] = [[] for _ in range(n)]
    fds: dict[int, int] = {}
    try:
        by_address: dict[tuple[Address, float | None], list[int]] = {}
        for i, (address, _) in enumerate(requests):
            by_address.setdefault((_resolved(address), timeout), []).append(i)
        waiting: list[int] = []  # the requests still receiving
        for key, which in by_address.items():
            chains = _chains(*key, until is None)
            done = yield chains.first, [{"payload": bytes(requests[i][1])} for i in which]
            end = chains.end_recv
            for i, c in zip(which, done, strict=True):
                fd = c[chains.sock]
                if fd is not None:
                    fds[i] = fd
                failed = first_error(c.results)
                if failed:
                    out[i] = _failure(failed)
                elif _received(got, out, i, c[chains.first_recv], until) and (
                    end is None or _received(got, out, i, c[end], until)
                ):
                    waiting.append(i)
        more, data = _more(timeout)
        while waiting:  # the answers that need more: one recv each per round
            done = yield more, [{"fd": fds[i]} for i in waiting]
            still = []
            for i, c in zip(waiting, done, strict=True):
                r = c.results[0]
                if r is not None and r < 0:
                    out[i] = _failure(-r)
                elif _received(got, out, i, c[data], until):
                    still.append(i)
            waiting = still
    finally:
        for fd in fds.values():
            os.close(fd)
    return outcome(out, errors)


def _received(got: list[list[bytes]], out: list[Any], i: int, data: bytes, until: Until) -> bool:
    """Add what request ``i`` received; returns whether it wants more."""
    if data:
        got[i].append(data)
        if until is None:
            return True  # (joined once, when the peer closes)
    whole = b"".join(got[i])
    complete, answer = _done(whole, until)
    if complete or not data:  # complete, or the peer closed
        out[i] = answer
        return False
    got[i] = [whole]
    return True


def tcp_requests(
    requests: Iterable[tuple[Address, bytes]],
    *,
    timeout: float | None = None,
    until: Until = None,
    errors: str = "raise",
    engine: Engine | None = None,
) -> list[Any]:
    """The answers to ``(address, payload)`` requests, in order, made at
    once (see ``tcp_request``).  ``errors="return"`` puts each failure in
    its request's place instead of raising the first."""
    return drive(_tcp_requests(list(requests), timeout, until, errors), engine)


def tcp_request(
    address: Address,
    payload: bytes,
    *,
    timeout: float | None = None,
    until: Until = None,
    engine: Engine | None = None,
) -> bytes:
    """Connect to ``address`` (``(host, port)``, ``(host, port, flowinfo,
    scope_id)`` or an AF_UNIX path), send all of ``payload``, and return
    what comes back: until the peer closes (``until=None``), ``until``
    bytes (an int), or up to and including the first ``until`` delimiter
    (bytes); what came after the answer is dropped.  Errors are the plain
    socket's (``ConnectionRefusedError``, ``TimeoutError`` ...)."""
    out: list[bytes] = drive(_tcp_requests([(address, payload)], timeout, until, "raise"), engine)
    return out[0]


async def atcp_requests(
    requests: Iterable[tuple[Address, bytes]],
    *,
    timeout: float | None = None,
    until: Until = None,
    errors: str = "raise",
    engine: AsyncEngine | None = None,
) -> list[Any]:
    """``tcp_requests`` from a coroutine."""
    return await adrive(_tcp_requests(list(requests), timeout, until, errors), engine)


async def atcp_request(
    address: Address,
    payload: bytes,
    *,
    timeout: float | None = None,
    until: Until = None,
    engine: AsyncEngine | None = None,
) -> bytes:
    """``tcp_request`` from a coroutine."""
    helper = _tcp_requests([(address, payload)], timeout, until, "raise")
    out: list[bytes] = await adrive(helper, engine)
    return out[0]
