"""The Tux-style static server: every byte of I/O is a syslet (programs.py);
Python parses requests (http.py) and chooses responses (response.py).

One ``Server`` is one engine and one listening socket, served by the thread
that calls ``serve_forever`` (the engine's owner).  Its loop waits for
completions, hands each to its tag (the ``_Acceptor`` of the accept
executions, a ``Connection``, or the ``_Lookup`` of an open), and starts
what they asked for with one ``submit_many`` per program.

Connections are connection.py's.  Descriptors of files opened for a
response belong to the open-file cache (cache.py).

Limits: ``max_connections`` (no accept is armed beyond it: the kernel's
backlog holds the rest), lowered with the open-file cache's size to what the
soft RLIMIT_NOFILE allows (``fd_budget``; on the thread engine each waiting
connection also holds a thread and its eventfd); a partial request head waits at most
``header_timeout`` seconds in all (a client sending a byte a second is
dropped); a kept-alive connection waits ``idle_timeout`` seconds for its
next request.  ``stop()`` is graceful: the accepts are cancelled and the
listener closed, idle connections end, responses under way finish, then
``serve_forever`` returns.
"""

from __future__ import annotations

import math
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..engine import Engine, Handle, Handles
from ..notify import Completion
from ..program import Program
from .cache import OpenFileCache
from .connection import Connection
from .programs import Programs, Reply
from .response import http_date


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


@dataclass(frozen=True)
class FdBudget:
    """What the soft RLIMIT_NOFILE allows: open files cached, connections,
    and on the thread engine worker threads (each holds an eventfd, and a
    waiting connection holds a thread as well as its socket)."""

    cache_size: int
    connections: int
    accepts: int
    threads: int
    thread_accepts: int


RESERVED_FDS = 64  # the process's own: the ring, the listener, Python's


def fd_budget(max_connections: int, accepts: int, cache_size: int) -> FdBudget:
    """Fit the server's limits to the descriptors this process may open, so
    that running out of them is not how a limit is reached."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    cache_size = max(1, min(cache_size, soft // 8))
    room = max(8, soft - RESERVED_FDS - cache_size)
    connections = max(1, min(max_connections, room - accepts))
    threads = max(4, min(max_connections + accepts, room // 2))
    return FdBudget(cache_size, connections, accepts, threads, max(1, min(accepts, threads // 8)))


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
            self.programs = Programs(
                self._listener.fileno(),
                self._root,
                recv_size=recv_size,
                header_timeout=header_timeout,
            )
            budget = fd_budget(max_connections, accepts, cache_size)
            # The ring runs the server's programs and nothing else.
            self.engine = Engine(
                engine,
                budget.connections + budget.accepts + 8,
                workers=budget.threads,
                restrict=self.programs.every_shape(),
            )
        except BaseException:
            self._listener.close()
            os.close(self._root)
            raise
        if self.engine.kind == "threads":  # each waiting connection holds a thread
            accepts = budget.thread_accepts
            max_connections = budget.threads - accepts
        else:
            accepts, max_connections = budget.accepts, budget.connections
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._next_sweep = 0.0
        self.cache = OpenFileCache(budget.cache_size, cache_valid)
        self.date = _DateCache()
        self.connections: set[Connection] = set()
        self._acceptor = _Acceptor(self, accepts)
        self._pending: dict[Program, Queued] = {}
        self._stop_asked = threading.Event()
        self.stopping = False  # the loop has begun to stop (seen once per iteration)
        self.now = time.monotonic()  # when the loop's last wait returned
        self._stopped = False
        self.requests = 0  # answered, for reports

    # -- the loop -------------------------------------------------------------------
    def serve_forever(self, poll: float = 0.2) -> None:
        """Serve until ``stop()``; then finish what is under way, close
        every connection and return.  ``poll``: how often a stop is seen."""
        engine = self.engine
        self._acceptor.arm()
        self._flush()
        while True:
            completions = engine.wait(1, poll)
            self.now = now = time.monotonic()
            for c in completions:
                c.tag.completed(c)
            if self._stop_asked.is_set() and not self.stopping:
                self.stopping = True
                self._begin_stop()
            if now >= self._next_sweep:
                self._sweep(now)
            self._flush()
            if self.stopping and not engine.in_flight:
                break
        self.close()

    def stop(self) -> None:
        """Ask ``serve_forever`` to stop gracefully (any thread, a signal
        handler included)."""
        self._stop_asked.set()

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

    def _begin_stop(self) -> None:
        self._acceptor.cancel()
        for conn in list(self.connections):
            conn.stop()

    # -- starting executions --------------------------------------------------------
    def start(self, program: Program, tag: Any, params: dict[str, Any]) -> tuple[Queued, int]:
        """Queue one execution; the loop starts the queue with one
        ``submit_many`` per program.  Returns where it is queued: its
        handle, once started, is ``queued.handles[index]``."""
        queued = self._pending.get(program)
        if queued is None:
            queued = self._pending[program] = Queued()
        queued.params.append(params)
        queued.tags.append(tag)
        return queued, len(queued.tags) - 1

    def start_now(self, program: Program, tag: Any, **params: Any) -> Handle:
        return self.engine.submit(program, tag=tag, **params)

    def close_listener(self) -> None:
        """At a stop, once no accept is in flight: new clients are refused
        from now on (instead of waiting in the backlog until the end)."""
        self._listener.close()

    def acceptor_room(self) -> None:
        """A connection ended: there may be room for another accept."""
        if not self.stopping and not self._stopped:
            self._acceptor.arm()

    def _flush(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, {}
            for program, queued in pending.items():
                queued.handles = self.engine.submit_many(
                    program, params=queued.params, tags=queued.tags
                )

    def _sweep(self, now: float) -> None:
        """Cancel the replies in flight for longer than ``idle_timeout``
        (a client that neither reads its answer nor asks again); their
        connections then close.  Runs about twice a second."""
        self._next_sweep = now + min(0.5, self.idle_timeout / 4)
        if self._acceptor.failed:
            self._acceptor.failed = False
            self.acceptor_room()
        for conn in self.connections:
            if conn.expires < now and isinstance(conn.step, Reply) and conn.queued is not None:
                queued, i = conn.queued
                if queued.handles is not None:  # (started)
                    self.engine.cancel(queued.handles[i])
                    conn.expires = math.inf  # once


class Queued:
    """The executions of one program queued in one loop iteration: their
    parameters and tags, and once ``_flush`` started them with one
    ``submit_many``, their ``handles`` (what a sweep cancels by)."""

    __slots__ = ("handles", "params", "tags")

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.tags: list[Any] = []
        self.handles: Handles | None = None


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
    for more connections.  An accept that fails (out of descriptors, say)
    is armed again by the next sweep, not at once: a failure that lasts
    must not spin the loop."""

    def __init__(self, server: Server, accepts: int) -> None:
        self.server = server
        self.accepts = accepts
        self.in_flight: dict[int, Handle] = {}
        self._next = 0
        self.failed = False  # an accept failed since the last sweep

    def arm(self) -> None:
        if self.failed:
            return
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
        elif not c.cancelled:
            self.failed = True  # (the sweep arms again)
        if not server.stopping:
            self.arm()
        elif not self.in_flight:
            server.close_listener()  # no accept refers to it any more


class _AcceptToken:
    """The tag of one accept execution."""

    __slots__ = ("acceptor", "token")

    def __init__(self, acceptor: _Acceptor, token: int) -> None:
        self.acceptor = acceptor
        self.token = token

    def completed(self, c: Completion) -> None:
        self.acceptor.completed(c, self.token)
