"""The server's syslets: all of its I/O, compiled once per server (the reply
shapes once per body length, in a bounded cache).

* ``accept``: accept a connection (exported: the server owns it from then
  on) and receive its first bytes;
* ``recv``: receive more of a request whose head is incomplete;
* ``open``: ``openat2`` a path beneath the served directory
  (``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS``: ``..``, absolute paths and
  symlinks that lead outside fail in the kernel), exported, and fstat the
  descriptor it opened;
* ``reply``: send a response, then end one of three ways (``ENDINGS``):
  ``recv`` the next request (keep-alive), ``none`` (pipelined requests are
  already waiting), or ``close`` (shut down the sending side, read what the
  client still sends until it closes, so that closing does not reset the
  response, close).  A body from a file is read and sent in the same
  chain: ``send`` head (MSG_MORE), ``read`` the body at an offset, ``send``
  it.  A reply has no timeout of its own: the server cancels one still in
  flight ``idle_timeout`` seconds after it started;
* ``close``: close a connection.

Every send has MSG_NOSIGNAL (a client gone is an EPIPE result, not a
signal) and MSG_WAITALL (all of it or a failure).
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from dataclasses import dataclass

from ..atom import NEVER_STOP, STOP_ON_NON_POSITIVE
from ..atoms.files import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS
from ..program import Program
from ..syslet import Param, Ref, Syslet

ENDINGS = ("recv", "none", "close")
SEND_FLAGS = socket.MSG_NOSIGNAL | socket.MSG_WAITALL
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK  # a FIFO must not block the open
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
MAX_BODY_PER_EXECUTION = 256 * 1024  # bytes a reply reads and sends in one chain


@dataclass(frozen=True)
class Reply:
    """A compiled reply shape: the program and the Refs the server reads
    (``read``/``body_send`` None without a file body, ``recv`` None unless
    the ending is ``recv``)."""

    program: Program
    head_send: Ref | None
    read: Ref | None
    body_send: Ref | None
    recv: Ref | None
    body_length: int
    ending: str
    transfers: tuple[int, ...]  # the atoms that must all have succeeded (sends, read)


class Programs:
    """The compiled syslets of one server.  ``listen_fd`` and ``root_fd``
    are the server's; ``recv_size`` bounds one recv; ``header_timeout`` is
    the most a partial head may wait for more."""

    def __init__(
        self,
        listen_fd: int,
        root_fd: int,
        *,
        recv_size: int,
        header_timeout: float,
        cache_size: int = 256,
    ) -> None:
        self.recv_size = recv_size
        self._cache_size = cache_size
        self._replies: OrderedDict[tuple[int, str, bool], Reply] = OrderedDict()

        s = Syslet()
        conn = s.accept(listen_fd)
        s.export(conn)
        self.accept_recv = s.recv(
            conn, recv_size, stop=STOP_ON_NON_POSITIVE, timeout=header_timeout
        )
        self.accept_conn = conn
        self.accept = s.compile()

        s = Syslet()
        self.recv_data = s.recv(Param("conn"), recv_size, timeout=header_timeout)
        self.recv = s.compile()

        s = Syslet()
        fd = s.openat2(Param("path"), OPEN_FLAGS, resolve=RESOLVE, dir_fd=root_fd)
        s.export(fd)
        self.open_fd = fd
        self.open_stat = s.fstat(fd)
        self.open = s.compile()

        s = Syslet()
        s.close(Param("conn"))
        self.close = s.compile()

    def every_shape(self) -> list[Program]:
        """One program of each kind this server runs (with every op and SQE
        flag any reply uses): what its engine is restricted to."""
        replies = [self.reply(1, ending) for ending in ENDINGS]
        replies += [self.reply(0, "recv"), self.reply(1, "none", head=False)]
        return [self.accept, self.recv, self.open, self.close, *(r.program for r in replies)]

    def reply(self, body_length: int, ending: str, *, head: bool = True) -> Reply:
        """The reply shape for a file body of ``body_length`` bytes (0: the
        head, and any body made in Python, in one send) and ``ending``.
        ``head`` False: only more of a body (a file larger than one chain
        sends)."""
        key = (body_length, ending, head)
        reply = self._replies.get(key)
        if reply is not None:
            self._replies.move_to_end(key)
            return reply
        if ending not in ENDINGS:
            raise ValueError(f"ending must be one of {ENDINGS}, not {ending!r}")
        if not 0 <= body_length <= MAX_BODY_PER_EXECUTION or not (head or body_length):
            raise ValueError(f"a reply sends 0..{MAX_BODY_PER_EXECUTION} bytes of a file")
        s = Syslet()
        conn = Param("conn")
        head_send = read = body_send = recv = None
        if head:
            head_flags = SEND_FLAGS | (socket.MSG_MORE if body_length else 0)
            head_send = s.send(conn, Param("data"), head_flags)
        if body_length:
            read = s.read(Param("file"), body_length, Param("offset"))
            body_send = s.send(conn, read, SEND_FLAGS)
        # No LINK_TIMEOUTs here (a timed atom keeps a program off the
        # engine's clean path): the server cancels a reply that outlives its
        # time (Server._sweep).
        if ending == "recv":
            recv = s.recv(conn, self.recv_size)
        elif ending == "close":
            s.shutdown(conn, socket.SHUT_WR, stop=NEVER_STOP)
            s.recv(conn, self.recv_size, stop=NEVER_STOP)
            s.close(conn)
        transfers = tuple(r.index for r in (head_send, read, body_send) if r is not None)
        reply = Reply(s.compile(), head_send, read, body_send, recv, body_length, ending, transfers)
        self._replies[key] = reply
        while len(self._replies) > self._cache_size:
            self._replies.popitem(last=False)
        return reply
