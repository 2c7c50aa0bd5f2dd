"""``serve``: one process or several on one port, and a graceful stop.

With ``workers=N`` (N > 1) the parent reserves the port (a socket bound
with SO_REUSEPORT, never listening, so no connection waits on it), forks N
workers before any engine exists, and each worker makes its own listening
socket on that port (SO_REUSEPORT: the kernel spreads connections across
them) and its own ``Server`` and engine.  SIGTERM or SIGINT to the parent
goes to every worker; each stops gracefully (no more accepts, responses
under way finish) and exits 0; the parent exits 0 when all have.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .server import Server

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _on_stop_signals(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def _serve_one(server: Server) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    previous = _on_stop_signals(lambda signum, frame: server.stop())
    try:
        server.serve_forever()
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    directory: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    announce: TextIO | None = sys.stdout,
    **options: Any,
) -> int:
    """Serve ``directory`` until SIGTERM or SIGINT; returns the exit
    status (0 after a graceful stop).  ``options`` go to ``Server``.  The
    first line written to ``announce`` says where it listens."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers == 1:
        server = Server(directory, host, port, **options)
        _announce(announce, server, 1)
        _serve_one(server)
        return 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserve = socket.socket(family, socket.SOCK_STREAM)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind((host, port))
    port = reserve.getsockname()[1]
    children: list[int] = []
    stopping = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = _on_stop_signals(forward)
    try:
        ready_r, ready_w = os.pipe()
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:  # a worker: its own socket, engine and server
                status = 1
                try:
                    os.close(ready_r)
                    reserve.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    server = Server(directory, host, port, reuse_port=True, **options)
                    os.write(ready_w, b".")
                    os.close(ready_w)
                    _serve_one(server)
                    status = 0
                finally:
                    os._exit(status)
            children.append(pid)
        os.close(ready_w)
        started = 0
        while started < workers:
            got = os.read(ready_r, workers)
            if not got:
                break  # a worker died before it was ready
            started += len(got)
        os.close(ready_r)
        reserve.close()
        if started == workers:
            _announce(announce, None, workers, (host, port))
        else:
            forward(signal.SIGTERM, None)
        status = 0 if started == workers else 1
        for pid in children:
            _, code = os.waitpid(pid, 0)  # (PEP 475: a signal does not cut it short)
            if os.waitstatus_to_exitcode(code) != 0:
                status = 1
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce(
    out: TextIO | None,
    server: Server | None,
    workers: int,
    address: tuple[str, int] | None = None,
) -> None:
    if out is None:
        return
    if server is not None:
        address = server.address
        engine = server.engine
        how = f"engine {engine.kind}"
        if engine.restricted_in_kernel:
            how += ", restricted ring"
        if engine.fallback_reason:
            how += f" ({engine.fallback_reason})"
    else:
        how = f"{workers} workers"
    assert address is not None
    host, port = address
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}/ ({how})", file=out, flush=True)
