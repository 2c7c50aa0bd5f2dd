"""Network pyperf benchmarks: uringlets against plain sockets, threads, asyncio,
uvloop and C/liburing, on loopback TCP.

    python benchmarks/bench_net.py -o results.json [--fast] [--bench NAME ...]

Every value is the time of ONE request (rate = 1/value); a request sends 64 B
and expects the same 64 B back from ``benchmarks/c/echo_server``, a one-thread
epoll echo server started in its own process for each pyperf worker (the
io_uring engine only progresses inside the owning thread's wait/submit, so the
server cannot be a thread of the benchmark process) and stopped by process id.

tcp5: one short connection per request, 64 requests in flight.  The server is
started with ``-c 64``: it closes each connection once it has echoed 64 B, so
the server closes first and the TIME_WAIT sockets pile up on its one port, not
on the client's ephemeral ports (see ``ss -s``; net.ipv4.tcp_tw_reuse, 2 =
loopback only by default, is recorded in the metadata and left alone).

tcp5-uringlets    one loop = submit_many(socket+connect+send+recv+close, 64) + wait(64)
tcp5-plain        one loop = 64 x (socket, connect, sendall, recv, close), blocking, in turn
tcp5-threads      one loop = ThreadPoolExecutor.map(the plain request, 64 requests)
tcp5-asyncio      64 tasks, each doing LOOPS requests in turn (API: see below)
tcp5-uvloop       the same coroutines on a uvloop event loop
tcp5-c-liburing   benchmarks/c/uring_ref tcp5 LOOPS PORT 64 (its own clock): 64 linked
                  SOCKET(direct)+CONNECT+SEND+RECV+CLOSE chains per submit_and_wait

rr: one request-response (send 64 B, recv 64 B) on each of 64 connections that
stay open (TCP_NODELAY, made outside the timed loops; server without -c).

rr-uringlets      each connection does LOOPS request-responses in turn (one program:
                  send+recv with Param fd): submit_many over the 64 fds, then whenever
                  wait(1) returns completions, one submit_many for those connections again
rr-uringlets-batch  one loop = submit_many(params=64 fds) + wait(64): every connection
                  waits for the slowest of its batch
rr-per-event-uringlets  as rr-uringlets, written the way an event-driven program is: one
                  eng.submit(rr, tag=conn, fd=...) per connection, and, for each completion
                  wait(1) returns, one eng.submit for that connection's next request (never
                  more than 64 in flight: one per connection).  Its peers are rr-asyncio,
                  rr-uvloop (a task per connection) and rr-c-liburing (which already queues
                  each connection's next request as its completion comes): the report
                  compares it with those, so they are not run twice
rr-plain          one loop = sendall + recv on each of the 64 blocking sockets in turn
rr-asyncio        64 tasks, one per connection, each doing LOOPS request-responses
rr-uvloop         the same coroutines on a uvloop event loop
rr-c-liburing     benchmarks/c/uring_ref rr LOOPS PORT 64 (its own clock): 64 connections
                  of its own (blocking, TCP_NODELAY, plain fds), each doing LOOPS linked
                  SEND+RECV; after each submit_and_wait(1) the completed connections'
                  next requests are queued, and go in with the next submit_and_wait

asyncio/uvloop API (``--loop-api``): each event-loop benchmark has two
implementations, low-level ``loop.sock_connect/sock_sendall/sock_recv`` on
non-blocking sockets ("sock") and ``loop.create_connection`` with an
``asyncio.Protocol`` ("protocol"; streams are built on it and were slower).
The default, "fastest", uses the faster one for each benchmark; on the 2-core
machine (medians of 5 runs, us per request):

                  asyncio sock  asyncio protocol  uvloop sock  uvloop protocol
    tcp5               170            181             174            108
    rr                  36             27              37             19

so tcp5-asyncio uses "sock" and the other three "protocol" (uvloop's
transports run in C; its sock_* calls go through Python-level futures and
poll handles).  ``--loop-api sock`` or ``protocol`` runs the same code on both
loops; the API used is in each benchmark's metadata (``loop_api``).

Every request's reply is compared with what was sent; failures (exceptions,
short or wrong replies, completions not ok) are counted and, after the timed
loop, raised with the count and the first few.  uringlets waits at most
``HANG_SECONDS`` for a batch and raises if it does not complete.

Thread pool size: ``max_workers=4`` by default (``--threads-workers N``).  On
the 2-core machine, --fast runs of tcp5-threads gave 150 +- 29 us per request
with 2 workers, 157 +- 14 with 4, 167 +- 17 with 8, 187 +- 15 with 16 and
176 +- 13 with 64 (1 worker: like tcp5-plain plus the pool).  The kernel's
share of a loopback connection (about 40 us client-side on this VM) releases
the GIL, so one thread per core plus a spare overlaps it with the server;
more threads only add switching and GIL hand-offs.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_core
import pyperf
import uvloop
import workloads as wl

import uringlets as ul

BATCH = wl.BATCH
MESSAGE, MSG_SIZE = wl.MESSAGE, wl.MSG_SIZE
HANG_SECONDS = 10.0  # a batch of 64 loopback requests that takes longer is a hang
perf_counter = time.perf_counter


class Errors:
    """Failed requests of one timed call: counted in the loop, raised after it."""

    def __init__(self, name: str) -> None:
        self.name, self.count, self.first = name, 0, []

    def add(self, what: object) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(what)

    def check(self, requests: int) -> None:
        if self.count:
            raise RuntimeError(
                f"{self.name}: {self.count} of {requests} requests failed; first: {self.first!r}"
            )


# -- lazily made, once per worker process, outside the timed loops -------------------
@functools.cache
def server(close_after: int) -> wl.EchoServer:
    srv = wl.EchoServer(close_after)
    atexit.register(srv.stop)
    return srv


def tcp5_server() -> wl.EchoServer:
    return server(MSG_SIZE)


def rr_server() -> wl.EchoServer:
    return server(0)


@functools.cache
def tcp5() -> tuple[ul.Program, ul.Ref]:
    return wl.tcp5_program(tcp5_server().port)


@functools.cache
def rr() -> tuple[ul.Program, ul.Ref]:
    return wl.rr_program()


@functools.cache
def rr_sockets(blocking: bool) -> list[socket.socket]:
    socks = wl.connected_sockets(rr_server().address, BATCH, blocking=blocking)
    atexit.register(lambda: [s.close() for s in socks])
    return socks


@functools.cache
def event_loop(kind: str) -> asyncio.AbstractEventLoop:
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    atexit.register(loop.close)
    return loop


@functools.cache
def thread_pool(workers: int) -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(max_workers=workers)
    list(pool.map(tcp5_blocking, itertools.repeat(tcp5_server().address, 4 * workers)))
    return pool


def engine() -> ul.Engine:
    return bench_core.engine()


def recv_reply(sock: socket.socket) -> bytes:
    """The 64 B reply (fewer only if the peer closed early)."""
    data = sock.recv(MSG_SIZE)
    while 0 < len(data) < MSG_SIZE and (more := sock.recv(MSG_SIZE - len(data))):
        data += more
    return data


async def recv_reply_async(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    data = await loop.sock_recv(sock, MSG_SIZE)
    while 0 < len(data) < MSG_SIZE and (more := await loop.sock_recv(sock, MSG_SIZE - len(data))):
        data += more
    return data


def check_batch(name: str, done: list[ul.Completion], ref: ul.Ref, errors: Errors) -> None:
    if len(done) != BATCH:
        eng = engine()
        raise RuntimeError(
            f"{name}: only {len(done)} of {BATCH} executions completed within "
            f"{HANG_SECONDS:g} s ({eng.in_flight} still in flight): a hang"
        )
    for c in done:
        if not c.ok or c[ref] != MESSAGE:
            errors.add(c)


# -- tcp5 -------------------------------------------------------------------------------
def time_tcp5_uringlets(loops: int) -> float:
    eng, (prog, got) = engine(), tcp5()
    submit_many, wait = eng.submit_many, eng.wait
    errors = Errors("tcp5-uringlets")
    t0 = perf_counter()
    for _ in range(loops):
        submit_many(prog, BATCH)
        check_batch("tcp5-uringlets", wait(BATCH, HANG_SECONDS), got, errors)
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def tcp5_blocking(address: tuple[str, int]) -> bytes | OSError:
    """One tcp5 request on a blocking socket; the reply, or the error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        sock.sendall(MESSAGE)
        return recv_reply(sock)
    except OSError as exc:
        return exc
    finally:
        sock.close()


def time_tcp5_plain(loops: int) -> float:
    address = tcp5_server().address
    errors = Errors("tcp5-plain")
    t0 = perf_counter()
    for _ in range(loops):
        for _ in range(BATCH):
            if (data := tcp5_blocking(address)) != MESSAGE:
                errors.add(data)
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def time_tcp5_threads(loops: int, workers: int) -> float:
    pool, addresses = thread_pool(workers), [tcp5_server().address] * BATCH
    errors = Errors("tcp5-threads")
    t0 = perf_counter()
    for _ in range(loops):
        for data in pool.map(tcp5_blocking, addresses):
            if data != MESSAGE:
                errors.add(data)
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


async def tcp5_task_sock(address: tuple[str, int], n: int, errors: Errors) -> None:
    """``n`` tcp5 requests in turn with loop.sock_connect/sock_sendall/sock_recv."""
    loop = asyncio.get_running_loop()
    sock_connect, sock_sendall = loop.sock_connect, loop.sock_sendall
    new_socket, af_inet, sock_stream = socket.socket, socket.AF_INET, socket.SOCK_STREAM
    for _ in range(n):
        sock = new_socket(af_inet, sock_stream)
        try:
            sock.setblocking(False)
            await sock_connect(sock, address)
            await sock_sendall(sock, MESSAGE)
            data = await recv_reply_async(loop, sock)
        except OSError as exc:
            data = exc
        finally:
            sock.close()
        if data != MESSAGE:
            errors.add(data)


class Tcp5Protocol(asyncio.Protocol):
    """Sends the message once connected; ``reply`` gets the 64 B reply, or
    what came before the connection ended."""

    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self.reply, self.data = reply, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(MESSAGE)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= MSG_SIZE and not self.reply.done():
            self.reply.set_result(self.data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            if exc is None:
                self.reply.set_result(self.data)
            else:
                self.reply.set_exception(exc)


async def tcp5_task_protocol(address: tuple[str, int], n: int, errors: Errors) -> None:
    """``n`` tcp5 requests in turn with loop.create_connection and a Protocol."""
    loop = asyncio.get_running_loop()
    create_connection, create_future, partial = (
        loop.create_connection,
        loop.create_future,
        functools.partial,
    )
    host, port = address
    for _ in range(n):
        reply = create_future()
        try:
            transport, _ = await create_connection(partial(Tcp5Protocol, reply), host, port)
        except OSError as exc:
            errors.add(exc)
            continue
        try:
            data = await reply
        except OSError as exc:
            data = exc
        finally:
            transport.close()
        if data != MESSAGE:
            errors.add(data)


def time_tcp5_loop(loops: int, kind: str, api: str) -> float:
    loop, address = event_loop(kind), tcp5_server().address
    task = tcp5_task_sock if api == "sock" else tcp5_task_protocol
    errors = Errors(f"tcp5-{kind}")

    async def main() -> None:
        await asyncio.gather(*(task(address, loops, errors) for _ in range(BATCH)))

    t0 = perf_counter()
    loop.run_until_complete(main())
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def time_tcp5_c(loops: int) -> float:
    srv = tcp5_server()
    seconds = wl.c_ref_seconds("tcp5", loops * BATCH, port=srv.port)
    srv.check()
    return seconds


# -- rr ---------------------------------------------------------------------------------
def time_rr_uringlets(loops: int) -> float:
    """Each of the 64 connections does ``loops`` request-responses in turn,
    like the asyncio/uvloop tasks: whenever completions come back, the same
    connections are resubmitted at once (one ``submit_many``), so the server
    never waits for the slowest of a batch."""
    eng, (prog, got) = engine(), rr()
    params = [{"fd": s.fileno()} for s in rr_sockets(True)]
    submit_many, wait = eng.submit_many, eng.wait
    errors = Errors("rr-uringlets")
    left = [loops] * BATCH  # requests still to make, per connection
    t0 = perf_counter()
    in_flight = BATCH if loops else 0  # 0 loops: set up only
    if in_flight:
        submit_many(prog, params=params, tags=range(BATCH))
    while in_flight:
        done = wait(1, HANG_SECONDS)
        if not done:
            raise RuntimeError(f"rr-uringlets: nothing completed within {HANG_SECONDS:g} s")
        again = []
        for c in done:
            if not c.ok or c[got] != MESSAGE:
                errors.add(c)
            i = c.tag
            left[i] -= 1
            if left[i]:
                again.append(i)
        in_flight -= len(done)
        if again:
            submit_many(prog, params=[params[i] for i in again], tags=again)
            in_flight += len(again)
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def time_rr_uringlets_batch(loops: int) -> float:
    """One request on each of the 64 connections per loop: submit all 64,
    wait for all 64 (the server idles while the batch's tail is awaited)."""
    eng, (prog, got) = engine(), rr()
    params = [{"fd": s.fileno()} for s in rr_sockets(True)]
    submit_many, wait = eng.submit_many, eng.wait
    errors = Errors("rr-uringlets-batch")
    t0 = perf_counter()
    for _ in range(loops):
        submit_many(prog, params=params)
        check_batch("rr-uringlets-batch", wait(BATCH, HANG_SECONDS), got, errors)
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def time_rr_per_event_uringlets(loops: int) -> float:
    """Each of the 64 connections does ``loops`` request-responses in turn,
    one ``submit`` per request: the first for every connection, then one for
    a connection as soon as its completion is drained (``wait(1)``)."""
    eng, (prog, got) = engine(), rr()
    fds = [s.fileno() for s in rr_sockets(True)]
    submit, wait = eng.submit, eng.wait
    errors = Errors("rr-per-event-uringlets")
    left = [loops] * BATCH  # requests still to make, per connection
    t0 = perf_counter()
    in_flight = 0
    if loops:  # 0 loops: set up only
        for i, fd in enumerate(fds):
            submit(prog, tag=i, fd=fd)
            in_flight += 1
    while in_flight:
        done = wait(1, HANG_SECONDS)
        if not done:
            raise RuntimeError(
                f"rr-per-event-uringlets: nothing completed within {HANG_SECONDS:g} s "
                f"({in_flight} in flight): a hang"
            )
        for c in done:
            if not c.ok or c[got] != MESSAGE:
                errors.add(c)
            in_flight -= 1
            i = c.tag
            left[i] -= 1
            if left[i]:
                submit(prog, tag=i, fd=fds[i])
                in_flight += 1
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def time_rr_plain(loops: int) -> float:
    socks = rr_sockets(True)
    errors = Errors("rr-plain")
    t0 = perf_counter()
    for _ in range(loops):
        for sock in socks:
            try:
                sock.sendall(MESSAGE)
                data = recv_reply(sock)
            except OSError as exc:
                data = exc
            if data != MESSAGE:
                errors.add(data)
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


async def rr_task_sock(sock: socket.socket, n: int, errors: Errors) -> None:
    """``n`` request-responses in turn with loop.sock_sendall/sock_recv."""
    loop = asyncio.get_running_loop()
    sock_sendall = loop.sock_sendall
    for _ in range(n):
        try:
            await sock_sendall(sock, MESSAGE)
            data = await recv_reply_async(loop, sock)
        except OSError as exc:
            data = exc
        if data != MESSAGE:
            errors.add(data)


class RRProtocol(asyncio.Protocol):
    """Request-response on one connection: ``ask()`` sends the message and
    returns a future for the 64 B reply."""

    def __init__(self) -> None:
        self.new_future = asyncio.get_running_loop().create_future
        self.reply: asyncio.Future[bytes] | None = None
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def ask(self) -> asyncio.Future[bytes]:
        self.reply = reply = self.new_future()
        self.transport.write(MESSAGE)
        return reply

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= MSG_SIZE and self.reply is not None:
            reply, self.reply, data, self.data = self.reply, None, self.data, b""
            reply.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(exc or ConnectionResetError("the server closed"))


async def rr_task_protocol(proto: RRProtocol, n: int, errors: Errors) -> None:
    """``n`` request-responses in turn over a transport."""
    for _ in range(n):
        try:
            data = await proto.ask()
        except OSError as exc:
            data = exc
        if data != MESSAGE:
            errors.add(data)


@functools.cache
def rr_protocols(kind: str) -> list[RRProtocol]:
    """A transport and RRProtocol over each of the 64 non-blocking sockets."""
    loop = event_loop(kind)

    async def connect() -> list[RRProtocol]:
        made = [await loop.create_connection(RRProtocol, sock=s) for s in rr_sockets(False)]
        return [proto for _, proto in made]

    return loop.run_until_complete(connect())


def time_rr_loop(loops: int, kind: str, api: str) -> float:
    loop = event_loop(kind)
    errors = Errors(f"rr-{kind}")
    if api == "sock":
        socks = rr_sockets(False)

        async def main() -> None:
            await asyncio.gather(*(rr_task_sock(sock, loops, errors) for sock in socks))

    else:
        protos = rr_protocols(kind)

        async def main() -> None:
            await asyncio.gather(*(rr_task_protocol(proto, loops, errors) for proto in protos))

    t0 = perf_counter()
    loop.run_until_complete(main())
    elapsed = perf_counter() - t0
    errors.check(loops * BATCH)
    return elapsed


def time_rr_c(loops: int) -> float:
    srv = rr_server()
    seconds = wl.c_ref_seconds("rr", loops * BATCH, port=srv.port)
    srv.check()
    return seconds


# -- runner -----------------------------------------------------------------------------
BENCHMARKS = {
    # name: (time function, inner loops, unit of one value)
    "tcp5-uringlets": (time_tcp5_uringlets, BATCH, "request"),
    "tcp5-plain": (time_tcp5_plain, BATCH, "request"),
    "tcp5-threads": (time_tcp5_threads, BATCH, "request"),
    "tcp5-asyncio": (time_tcp5_loop, BATCH, "request"),
    "tcp5-uvloop": (time_tcp5_loop, BATCH, "request"),
    "tcp5-c-liburing": (time_tcp5_c, BATCH, "request"),
    "rr-uringlets": (time_rr_uringlets, BATCH, "request"),
    "rr-uringlets-batch": (time_rr_uringlets_batch, BATCH, "request"),
    "rr-per-event-uringlets": (time_rr_per_event_uringlets, BATCH, "request"),
    "rr-plain": (time_rr_plain, BATCH, "request"),
    "rr-asyncio": (time_rr_loop, BATCH, "request"),
    "rr-uvloop": (time_rr_loop, BATCH, "request"),
    "rr-c-liburing": (time_rr_c, BATCH, "request"),
}
# The asyncio/uvloop API each event-loop benchmark uses by default: the faster
# of the two on the 2-core machine (see the module docstring).
FASTEST_API = {
    "tcp5-asyncio": "sock",
    "tcp5-uvloop": "protocol",
    "rr-asyncio": "protocol",
    "rr-uvloop": "protocol",
}
API_TEXT = {
    "sock": "loop.sock_* calls",
    "protocol": "loop.create_connection + Protocol",
}


def add_cmdline_args(cmd: list[str], args: object) -> None:
    """Forward this script's own options to the pyperf worker processes."""
    for name in args.bench or ():
        cmd.extend(("--bench", name))
    cmd.extend(("--threads-workers", str(args.threads_workers)))
    cmd.extend(("--loop-api", args.loop_api))


def sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "unknown"


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument(
        "--bench",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable; default: all)",
    )
    runner.argparser.add_argument(
        "--threads-workers",
        type=int,
        default=4,
        help="max_workers of tcp5-threads (default: 4, tuned on 2 cores)",
    )
    runner.argparser.add_argument(
        "--loop-api",
        choices=("fastest", "sock", "protocol"),
        default="fastest",
        help="the API of the asyncio/uvloop benchmarks: loop.sock_* calls, "
        "create_connection + Protocol, or per benchmark the faster one (default)",
    )
    args = runner.parse_args()
    if not args.worker:
        wl.build_c_ref()  # once, in the parent: the reference and the echo server
    elif not (wl.C_REF.exists() and wl.ECHO_SERVER.exists()):
        sys.exit(f"{wl.C_REF} or {wl.ECHO_SERVER} is missing: run make -C {wl.C_DIR}")

    runner.metadata.update(bench_core.git_metadata())
    runner.metadata["uringlets_version"] = ul.__version__
    runner.metadata["batch"] = BATCH
    runner.metadata["net"] = (
        f"loopback TCP, {MSG_SIZE} B requests, benchmarks/c/echo_server; "
        f"tcp_tw_reuse={sysctl('net.ipv4.tcp_tw_reuse')}, "
        f"ip_local_port_range={sysctl('net.ipv4.ip_local_port_range').replace(chr(9), '-')}"
    )

    selected = args.bench or list(BENCHMARKS)
    for name, (func, inner_loops, unit) in BENCHMARKS.items():
        if name not in selected:
            continue
        extra: tuple[int | str, ...] = ()
        metadata = {"unit_of_work": unit}
        if name == "tcp5-threads":
            extra = (args.threads_workers,)
            metadata["threadpool_workers"] = args.threads_workers
        elif name in FASTEST_API:
            api = FASTEST_API[name] if args.loop_api == "fastest" else args.loop_api
            extra = (name.partition("-")[2], api)
            metadata["loop_api"] = API_TEXT[api]
        runner.bench_time_func(name, func, *extra, inner_loops=inner_loops, metadata=metadata)


if __name__ == "__main__":
    main()
