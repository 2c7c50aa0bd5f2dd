"""The Tux-style static server: every byte of I/O is a syslet (programs.py);
Python parses requests (http.py) and chooses responses (response.py).

One ``Server`` is one engine and one listening socket, served by the thread
that calls ``serve_forever`` (the engine's owner).  Its loop waits for
completions, hands each to its tag (the ``_Acceptor`` of the accept
executions, a ``Connection``, or the ``_Lookup`` of an open), and starts
what they asked for with one ``submit_many`` per program.

A connection has at most one execution in flight, so its responses go out
in the order of its requests (pipelining), and its descriptor is closed
exactly once: by a ``close``-ending reply or by the ``close`` program,
after which it is forgotten.  Descriptors of files opened for a response
belong to the open-file cache (cache.py).

Limits: ``max_connections`` (no accept is armed beyond it: the kernel's
backlog holds the rest); a partial request head waits at most
``header_timeout`` seconds in all (a client sending a byte a second is
dropped); a kept-alive connection waits ``idle_timeout`` seconds for its
next request.  ``stop()`` is graceful: no more accepts, idle connections
end, responses under way finish, then ``serve_forever`` returns.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time
from collections import deque
from typing import Any

from ..engine import Engine, Handle
from ..notify import Completion
from ..program import Program
from .cache import Entry, OpenFileCache
from .http import ALLOWED_METHODS, ProtocolError, Request, RequestReader
from .programs import MAX_BODY_PER_EXECUTION, Programs, Reply
from .response import Response, error_response, file_response, http_date, redirect_response

# Where a lookup's open failed: what the client is told (anything else: 404,
# so that nothing outside the directory can be told apart from missing).
_OPEN_ERRORS = {errno.EACCES: 403}


class _DateCache:
    """The Date header's value, made once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second, self._value = second, http_date(second)
        return self._value


class Server:
    """Serves the files beneath ``directory`` over HTTP/1.1 on
    ``host``:``port`` (port 0: a free one; see ``address``).  ``engine``
    and ``workers`` go to ``Engine``; ``reuse_port`` sets SO_REUSEPORT (for
    several processes on one port).  Make it and call ``serve_forever`` on
    the same thread."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        engine: str = "auto",
        max_connections: int = 1024,
        accepts: int = 16,
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        linger: float = 1.0,
        recv_size: int = 16384,
        cache_size: int = 1024,
        cache_valid: float = 1.0,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> None:
        if max_connections < 1 or accepts < 1:
            raise ValueError("max_connections and accepts must be at least 1")
        self.directory = os.fspath(directory)
        self._root = os.open(self.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._listener = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        )
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._listener.bind((host, port))
            self._listener.listen(backlog)
            self.address: tuple[str, int] = self._listener.getsockname()[:2]
            capacity = max_connections + accepts + 8
            threads = None if engine == "uring" else capacity  # each waiting recv holds one
            self.engine = Engine(engine, capacity, workers=threads)
        except BaseException:
            self._listener.close()
            os.close(self._root)
            raise
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.programs = Programs(
            self._listener.fileno(),
            self._root,
            recv_size=recv_size,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            linger=linger,
        )
        self.cache = OpenFileCache(cache_size, cache_valid)
        self.date = _DateCache()
        self.connections: set[Connection] = set()
        self._acceptor = _Acceptor(self, accepts)
        self._pending: dict[Program, tuple[list[dict[str, Any]], list[Any]]] = {}
        self._stopping = threading.Event()
        self._stopped = False
        self.requests = 0  # answered, for reports

    # -- the loop -------------------------------------------------------------------
    def serve_forever(self, poll: float = 0.2) -> None:
        """Serve until ``stop()``; then finish what is under way, close
        every connection and return.  ``poll``: how often a stop is seen."""
        engine = self.engine
        self._acceptor.arm()
        self._flush()
        stopping = False
        while True:
            for c in engine.wait(1, poll):
                c.tag.completed(c)
            if self._stopping.is_set() and not stopping:
                stopping = True
                self._begin_stop()
            self._flush()
            if stopping and not engine.in_flight:
                break
        self.close()

    def stop(self) -> None:
        """Ask ``serve_forever`` to stop gracefully (any thread, a signal
        handler included)."""
        self._stopping.set()

    def close(self) -> None:
        """Release everything (``serve_forever`` does it when it returns)."""
        if self._stopped:
            return
        self._stopped = True
        for c in self.engine.close():
            fd = _exported_fd(c)
            if fd is not None:
                os.close(fd)
        for conn in list(self.connections):
            conn.forget()
        self.cache.close()
        self._listener.close()
        os.close(self._root)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _begin_stop(self) -> None:
        self._acceptor.cancel()
        for conn in list(self.connections):
            conn.stop()

    # -- starting executions --------------------------------------------------------
    def start(self, program: Program, tag: Any, **params: Any) -> None:
        """Queue one execution; the loop starts the queue with one
        ``submit_many`` per program."""
        group = self._pending.get(program)
        if group is None:
            self._pending[program] = ([params], [tag])
        else:
            group[0].append(params)
            group[1].append(tag)

    def start_now(self, program: Program, tag: Any, **params: Any) -> Handle:
        return self.engine.submit(program, tag=tag, **params)

    def acceptor_room(self) -> None:
        """A connection ended: there may be room for another accept."""
        if not self.stopping and not self._stopped:
            self._acceptor.arm()

    def _flush(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, {}
            for program, (params, tags) in pending.items():
                self.engine.submit_many(program, params=params, tags=tags)


def _exported_fd(c: Completion) -> int | None:
    """The descriptor an accept or open execution handed over, if any (its
    receiver is gone: the caller closes it)."""
    program = c.program
    if program is None or not program.exports:
        return None
    ref = program.refs[program.exports[0]]
    fd = c[ref]
    return fd if isinstance(fd, int) else None


class _Acceptor:
    """Keeps ``accepts`` accept executions in flight while there is room
    for more connections."""

    def __init__(self, server: Server, accepts: int) -> None:
        self.server = server
        self.accepts = accepts
        self.in_flight: dict[int, Handle] = {}
        self._next = 0

    def arm(self) -> None:
        server = self.server
        room = server.max_connections - len(server.connections) - len(self.in_flight)
        for _ in range(min(self.accepts - len(self.in_flight), room)):
            self._next += 1
            token = _AcceptToken(self, self._next)
            self.in_flight[self._next] = server.start_now(server.programs.accept, token)

    def cancel(self) -> None:
        for handle in list(self.in_flight.values()):
            self.server.engine.cancel(handle)

    def completed(self, c: Completion, token: int) -> None:
        server, programs = self.server, self.server.programs
        self.in_flight.pop(token, None)
        fd = c[programs.accept_conn]
        if fd is not None:
            conn = Connection(server, fd)
            if server.stopping:
                conn.close()
            else:
                conn.received(c, programs.accept_recv)
        if not server.stopping:
            self.arm()


class _AcceptToken:
    """The tag of one accept execution."""

    __slots__ = ("acceptor", "token")

    def __init__(self, acceptor: _Acceptor, token: int) -> None:
        self.acceptor = acceptor
        self.token = token

    def completed(self, c: Completion) -> None:
        self.acceptor.completed(c, self.token)


class Connection:
    """One client connection: its parser, the requests parsed and not yet
    answered, the response being sent, and what of it is in flight
    (``step``: a ``Reply``, the recv or the close program, or a
    ``_Lookup``; None when nothing is).  The tag of its executions."""

    __slots__ = ("body", "closing", "fd", "fd_closed", "reader", "requests", "server", "step")

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
        for ref in (reply.head_send, reply.read, reply.body_send):
            if ref is not None:
                result = results[ref.index]
                failed = failed or result is None or result < 0
        if reply.read is not None and results[reply.read.index] != reply.body_length:
            failed = True  # the file shrank under its cache entry: the answer is cut short
        if failed or reply.ending == "close":
            self._end_body()
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
            and time.monotonic() - reader.head_started > self.server.header_timeout
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
            entry = server.cache.refresh(relative, fd, st, relative, time.monotonic())
            self.respond(file_response(request, entry.info, date), entry)
        else:
            os.close(fd)
            if not stat.S_ISDIR(st.st_mode):
                self.respond(error_response(404, request, date))
            elif request.path is not None and request.path.endswith(b"/"):
                self.look_up(request, relative.rstrip(b"/") + b"/index.html")
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
                self._start(server.programs.recv, conn=self.fd)
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
            self.look_up(item, item.path.lstrip(b"/") or b".")

    def look_up(self, request: Request, relative: bytes) -> None:
        server = self.server
        entry = server.cache.lookup(relative, time.monotonic())
        if entry is not None:
            self.respond(file_response(request, entry.info, server.date.now()), entry)
        else:
            lookup = _Lookup(self, request, relative)
            self.step = lookup
            server.start(server.programs.open, lookup, path=relative)

    def respond(self, response: Response, entry: Entry | None = None) -> None:
        """Send ``response``: its head and Python-made body, then its file
        body from ``entry`` (in parts, if it is larger than one chain)."""
        server = self.server
        server.requests += 1
        self.closing = response.close or (self.reader.state == "closed" and not self.requests)
        if entry is not None and response.length:
            self.body = (entry, response.offset, response.length)
            server.cache.acquire(entry)
        self._send_part(response.head + response.body, head=True)

    def _send_body(self) -> None:
        self._send_part(b"", head=False)

    def _send_part(self, data: bytes, *, head: bool) -> None:
        server = self.server
        params: dict[str, Any] = {"conn": self.fd}
        length = 0
        if self.body is not None:
            entry, offset, left = self.body
            length = min(left, MAX_BODY_PER_EXECUTION)
            params["file"] = entry.fd
            params["offset"] = offset
            if left > length:
                self.body = (entry, offset + length, left - length)
            else:
                self._end_body()
        if head:
            params["data"] = data
        if self.body is not None:
            ending = "none"  # more of this body follows
        elif self.closing or server.stopping:
            ending = "close"
        elif self.requests:
            ending = "none"
        else:
            ending = "recv"
        self._start(server.programs.reply(length, ending, head=head), **params)

    def _end_body(self) -> None:
        if self.body is not None:
            self.server.cache.release(self.body[0])
            self.body = None

    def _start(self, step: Reply | Program, **params: Any) -> None:
        self.step = step
        program = step.program if isinstance(step, Reply) else step
        self.server.start(program, self, **params)

    # -- ending -----------------------------------------------------------------------
    def stop(self) -> None:
        """The server stops: a connection waiting for its next request is
        told there is none (its recv returns 0).  A direct call, not a
        syslet: it must not wait behind the connection's recv."""
        if self.step is not None and not self.requests and self.reader.state == "idle":
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
            self._start(self.server.programs.close, conn=self.fd)

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
