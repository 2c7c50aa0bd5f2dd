"""One client connection of the server: its request parser, the requests
parsed and not yet answered, the response being sent, and the one
execution of it in flight (``step``).

A connection has at most one execution in flight, so its responses go out
in the order of its requests (pipelining).  Its descriptor is closed
exactly once: by a ``close``-ending reply or by the ``close`` program (then
``fd_closed``), after which it is forgotten; only ``Server.close`` closes a
leftover one directly.  A response reading from a cached file holds a use
of the cache entry until its last part is sent (``body``).
"""

from __future__ import annotations

import errno
import math
import os
import socket
import stat
from collections import deque
from typing import TYPE_CHECKING, Any

from ..notify import Completion
from ..program import Program
from .cache import Entry
from .http import ALLOWED_METHODS, ProtocolError, Request, RequestReader
from .programs import MAX_BODY_PER_EXECUTION, Reply
from .response import Response, error_response, file_response, redirect_response

if TYPE_CHECKING:
    from .server import Queued, Server

# Where a lookup's open failed: what the client is told (anything else: 404,
# so that nothing outside the directory can be told apart from missing).
_OPEN_ERRORS = {errno.EACCES: 403}


class Connection:
    """One client connection: its parser, the requests parsed and not yet
    answered, the response being sent, and what of it is in flight
    (``step``: a ``Reply``, the recv or the close program, or a
    ``_Lookup``; None when nothing is).  The tag of its executions."""

    __slots__ = (
        "body", "closing", "expires", "fd", "fd_closed", "queued", "reader", "requests", "server",
        "step",
    )  # fmt: skip

    def __init__(self, server: Server, fd: int) -> None:
        self.server = server
        self.fd = fd
        self.reader = RequestReader()
        self.requests: deque[Request | ProtocolError] = deque()
        self.step: Reply | Program | _Lookup | None = None
        # the file body still to send: (entry, offset, bytes left), while
        # the entry is acquired
        self.body: tuple[Entry, int, int] | None = None
        self.closing = False  # the response being sent is the last
        self.fd_closed = False
        # where the reply in flight was queued (Server.start), and when the
        # server cancels it if it is still in flight
        self.queued: tuple[Queued, int] | None = None
        self.expires = math.inf
        server.connections.add(self)

    # -- completions ------------------------------------------------------------------
    def completed(self, c: Completion) -> None:
        """An execution of this connection ended."""
        step, self.step = self.step, None
        programs = self.server.programs
        if step is programs.close:
            self.fd_closed = True
            self.forget()
        elif step is programs.recv:
            self.received(c, programs.recv_data)
        elif isinstance(step, Reply):
            self.replied(c, step)
        else:  # pragma: no cover - one execution in flight, always recorded
            raise AssertionError(f"{self!r}: a completion for no step ({step!r})")

    def replied(self, c: Completion, reply: Reply) -> None:
        results = c.results
        if reply.ending == "close" and results[-1] is not None:
            self.fd_closed = True  # its close atom ran
        failed = c.cancelled
        for index in reply.transfers:
            result = results[index]
            failed = failed or result is None or result < 0
        if reply.read is not None and results[reply.read.index] != reply.body_length:
            failed = True  # the file shrank under its cache entry: the answer is cut short
        if self.body is not None and (failed or not self.body[2]):
            self._end_body()  # its last part is sent (or never will be)
        if failed or reply.ending == "close":
            self.close()
            return
        if reply.ending == "none":
            self.advance()
        else:
            self.received(c, reply.recv)

    def received(self, c: Completion, ref: Any) -> None:
        """``ref`` of ``c`` received data (or failed: the connection ends)."""
        data = c[ref]
        if not data or c.cancelled:
            self.close()  # the client closed, went silent, or the server stops
            return
        self.requests.extend(self.reader.feed(data))
        reader = self.reader
        if (
            reader.state == "head"
            and not self.requests
            and self.server.now - reader.head_started > self.server.header_timeout
        ):
            self.close()  # a head that trickles in: dropped
            return
        self.advance()

    def looked_up(self, c: Completion, request: Request, relative: bytes) -> None:
        """The open of ``relative`` for ``request`` ended."""
        server = self.server
        programs = server.programs
        fd = c[programs.open_fd]
        st = c[programs.open_stat]
        date = server.date.now()
        if fd is None or st is None:
            if fd is not None:
                os.close(fd)
            code = -c.results[0] if c.results[0] is not None and c.results[0] < 0 else 0
            self.respond(error_response(_OPEN_ERRORS.get(code, 404), request, date))
        elif stat.S_ISREG(st.st_mode):
            os.set_blocking(fd, True)  # opened O_NONBLOCK only so that a FIFO cannot block
            entry = server.cache.refresh(relative, fd, st, relative, server.now)
            self.respond(file_response(request, entry.info, date), entry)
        else:
            os.close(fd)
            if not stat.S_ISDIR(st.st_mode):
                self.respond(error_response(404, request, date))
            elif request.path is not None and request.path.endswith(b"/"):
                self.look_up(request, relative.rstrip(b"/") + b"/index.html", date)
            else:
                location = request.target.partition(b"?")[0] + b"/"
                self.respond(redirect_response(request, location, date))

    # -- what to do next ----------------------------------------------------------------
    def advance(self) -> None:
        """Send more of the body under way, answer the next request, or
        wait for one."""
        if self.step is not None or self.fd_closed:
            return
        if self.body is not None:
            self._send_body()
            return
        server = self.server
        if self.closing or not self.requests:
            if self.closing or self.reader.state == "closed" or server.stopping:
                self.close()
            else:
                self._start(server.programs.recv)
            return
        item = self.requests.popleft()
        date = server.date.now()
        if isinstance(item, ProtocolError):
            self.respond(error_response(item.status, None, date))
        elif item.method not in ALLOWED_METHODS:
            self.respond(error_response(405, item, date))
        elif item.path is None:
            self.respond(error_response(404, item, date))
        else:
            self.look_up(item, item.path.lstrip(b"/") or b".", date)

    def look_up(self, request: Request, relative: bytes, date: bytes) -> None:
        server = self.server
        entry = server.cache.lookup(relative, server.now)
        if entry is not None:
            if request.plain:  # the same answer for every such request within a second
                memo = entry.plain
                if memo is None or memo[0] is not date:
                    memo = entry.plain = (date, file_response(request, entry.info, date))
                self.respond(memo[1], entry)
            else:
                self.respond(file_response(request, entry.info, date), entry)
        else:
            lookup = _Lookup(self, request, relative)
            self.step = lookup
            server.start(server.programs.open, lookup, {"path": relative})

    def respond(self, response: Response, entry: Entry | None = None) -> None:
        """Send ``response``: its head and Python-made body, then its file
        body from ``entry`` (in parts, if it is larger than one chain)."""
        server = self.server
        server.requests += 1
        self.closing = response.close or (self.reader.state == "closed" and not self.requests)
        if entry is not None and response.length:
            self.body = (entry, response.offset, response.length)
            server.cache.acquire(entry)  # released when the last part has been sent
        self._send_part(response.head + response.body, head=True)

    def _send_body(self) -> None:
        self._send_part(b"", head=False)

    def _send_part(self, data: bytes, *, head: bool) -> None:
        server = self.server
        params: dict[str, Any] = {"conn": self.fd}
        length = left = 0
        if self.body is not None:
            entry, offset, left = self.body
            length = min(left, MAX_BODY_PER_EXECUTION)
            params["file"] = entry.fd
            params["offset"] = offset
            left -= length
            self.body = (entry, offset + length, left)
        if head:
            params["data"] = data
        if left:
            ending = "none"  # more of this body follows
        elif self.closing or server.stopping:
            ending = "close"
        elif self.requests:
            ending = "none"
        else:
            ending = "recv"
        reply = server.programs.reply(length, ending, head=head)
        self.step = reply
        self.expires = server.now + server.idle_timeout
        self.queued = server.start(reply.program, self, params)

    def _end_body(self) -> None:
        if self.body is not None:
            self.server.cache.release(self.body[0])
            self.body = None

    def _start(self, program: Program) -> None:
        """Start the recv or the close program (replies: ``_send_part``)."""
        self.step = program
        self.queued = None  # (only replies are swept)
        self.server.start(program, self, {"conn": self.fd})

    # -- ending -----------------------------------------------------------------------
    def stop(self) -> None:
        """The server stops: a connection waiting for its next request is
        told there is none (its recv returns 0).  A direct call, not a
        syslet: it must not wait behind the connection's recv."""
        step = self.step
        waiting = step is self.server.programs.recv or (
            isinstance(step, Reply) and step.ending == "recv"
        )
        # Only then is the descriptor surely open (a close in flight may have
        # closed it, and its number may be another file's by now).
        if waiting and not self.requests and self.reader.state == "idle":
            sock = socket.socket(fileno=self.fd)
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # the client is gone already: the recv ends anyway
            finally:
                sock.detach()

    def close(self) -> None:
        """Close the descriptor (by a syslet); the connection is forgotten
        when that ends."""
        self._end_body()
        if self.fd_closed:
            self.forget()
        elif self.step is not self.server.programs.close:
            self._start(self.server.programs.close)

    def forget(self) -> None:
        """Drop the connection; its descriptor is closed already (or, at
        ``Server.close``, closed here)."""
        self._end_body()
        if not self.fd_closed:
            self.fd_closed = True
            os.close(self.fd)
        self.server.connections.discard(self)
        self.server.acceptor_room()

    def __repr__(self) -> str:
        return f"<Connection fd={self.fd} step={self.step!r}>"


class _Lookup:
    """The tag of an open started for a request."""

    __slots__ = ("conn", "relative", "request")

    def __init__(self, conn: Connection, request: Request, relative: bytes) -> None:
        self.conn = conn
        self.request = request
        self.relative = relative

    def completed(self, c: Completion) -> None:
        self.conn.step = None
        self.conn.looked_up(c, self.request, self.relative)
