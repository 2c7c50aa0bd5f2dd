"""How the helpers run: the engines they use and the drivers of their
sans-I/O generators.

A helper is a generator that yields ``(program, params)`` requests and is
sent back the completions, in order (or yields a ``Columnar`` and is sent
``Columns``); ``drive`` runs one on an ``Engine`` (``Engine._run_private``,
``Engine._run_columns``: private_runs.py), ``adrive`` on an ``AsyncEngine``,
so the sync and async forms share every decision.  The generator's
``finally`` blocks close what it opened: the drivers close it on every path.

Interrupts.  An exception while a request runs (KeyboardInterrupt, a signal
handler's, the cancel of the awaiting task) first cancels the executions
the request started and waits for them to end, closing what they exported;
only then does it reach the helper, whose ``finally`` blocks so never close
a descriptor or pipe the kernel still uses.  A ``Columnar`` request (its
program exports nothing and uses nothing of the helper's) just loses its
columns with the call.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from ..async_engine import AsyncEngine
from ..engine import Engine
from ..notify import Columns
from ..program import Program

T = TypeVar("T")
PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class Columnar(NamedTuple):
    """A request to run ``program`` once per mapping of ``params`` and be
    sent back ``Columns`` (results a column per atom, each execution's
    value of ``value``) instead of a list of completions: on the io_uring
    engine no object is made per execution but the value itself.  Only for
    programs that export nothing (``Engine._run_columns``)."""

    program: Program
    params: Sequence[Mapping[str, Any]]
    value: Any


# A helper yields (program, params) and is sent the completions in order,
# or yields a Columnar and is sent Columns.
Request = tuple[Program, Sequence[Mapping[str, Any]]] | Columnar
Helper = Generator[Request, Any, T]

# -- the engines the helpers run on ---------------------------------------------------
_thread_engines = threading.local()
_loop_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
    weakref.WeakKeyDictionary()
)


def engine() -> Engine:
    """The calling thread's engine for the helpers that read (read_file(s),
    tcp_request(s)): ``Engine("auto")``, progress by its owner, made at
    first use and kept for the thread.  With owner progress (io_uring's
    DEFER_TASKRUN) an atom the kernel hands to its worker threads (an open
    on a cold dentry cache) comes back to the ring when done, and the
    chain's reads then run asynchronously on the calling thread, into its
    cache; with kernel progress the worker would go on with them, blocking,
    one worker a file (measured: cold read_files 3.0x the plain loop
    against 2.1x)."""
    eng: Engine | None = getattr(_thread_engines, "engine", None)
    if eng is None or eng._closed:
        eng = _thread_engines.engine = Engine()
    return eng


def kernel_progress_engine() -> Engine:
    """The calling thread's engine for the helpers whose chains io_uring
    runs on its worker threads (copy_file's splices, write_file's O_CREAT
    open, fsync and rename) and for aio_read/aio_write:
    ``Engine("auto", progress="kernel")``, made at first use and kept for
    the thread.  The worker goes on down the chain by itself instead of
    handing each step back to the thread (measured: copy_file of 4 KiB 173
    against 221 us, of 256 MiB 268 against 295 ms), and an ``Eventfd``
    notification is written in the kernel when the transfer is done,
    whatever the thread does meanwhile."""
    eng: Engine | None = getattr(_thread_engines, "kernel_progress", None)
    if eng is None or eng._closed:
        eng = _thread_engines.kernel_progress = Engine(progress="kernel")
    return eng


def async_engine() -> AsyncEngine:
    """The running loop's engine for the async helpers (made at first use,
    dropped with the loop)."""
    loop = asyncio.get_running_loop()
    eng = _loop_engines.get(loop)
    if eng is None or eng._closed:
        eng = _loop_engines[loop] = AsyncEngine()
    return eng


def drive(helper: Helper[T], eng: Engine | None, default: Callable[[], Engine] = engine) -> T:
    eng = default() if eng is None else eng
    try:
        request = next(helper)
        while True:
            if isinstance(request, Columnar):
                reply: Any = eng._run_columns(*request)
            else:
                program, params = request
                reply = eng._run_private(program, params)
            request = helper.send(reply)
    except StopIteration as end:
        return end.value
    finally:
        helper.close()  # its finally blocks close what it opened


async def adrive(helper: Helper[T], eng: AsyncEngine | None) -> T:
    eng = async_engine() if eng is None else eng
    try:
        request = next(helper)
        while True:
            program, params = request[:2]
            reply: Any = await eng._run_private(program, params)
            if isinstance(request, Columnar):
                reply = Columns.of(program, reply, request.value)
            request = helper.send(reply)
    except StopIteration as end:
        return end.value
    finally:
        helper.close()


def error(code: int, filename: Any) -> OSError:
    """The OSError a plain call fails with (its subclass by errno)."""
    return OSError(code, os.strerror(code), filename)


def first_error(results: tuple[int | None, ...]) -> int:
    """The errno of the first failed atom (0: none failed)."""
    for r in results:
        if r is not None and r < 0:
            return -r
    return 0


def check_errors(errors: str) -> None:
    """The ``errors=`` of a many-item helper: "raise" or "return"."""
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")


def outcome(out: list[Any], errors: str) -> list[Any]:
    """A many-item helper's answer: with ``errors="raise"`` the first
    failure (once every item is done) is raised, else the list as it is,
    failures in their items' places."""
    if errors == "raise" and any(issubclass(kind, BaseException) for kind in {*map(type, out)}):
        for item in out:  # (the kinds, a pass in C, said there is one)
            if isinstance(item, BaseException):
                raise item
    return out
