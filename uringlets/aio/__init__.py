"""AIO-style helpers ("glibc plugins") built from syslets, sync
(``read_file``) and async (``await aread_file``): whole files
(``files``), TCP requests (``net``) and POSIX-AIO-style requests whose
ending is announced as the caller asks (``requests``).

Each helper is a small sans-I/O generator that yields ``(program,
params)`` requests and is sent back the completions, in order
(``driving``): the sync and async forms share every decision and give the
same bytes and the same errors.

Engines.  A helper runs on the ``engine=`` it is given or on the calling
thread's: ``engine()`` (progress by its owner) for the helpers that read,
``kernel_progress_engine()`` (progress="kernel") for copy_file, write_file,
aio_read and aio_write; for the async forms, the running loop's
(``async_engine()``).  Each is made at first use and kept for the thread
(or loop).
It takes only its own completions (they never reach the notification ring:
``Engine._run_private``), so it can share an engine with the caller's own
executions.

Errors are those of the plain calls: ``OSError`` (its subclass by errno)
with ``filename`` the path as given (``os.fspath``).  Descriptors a helper
opens are closed on every path, exceptions included: an interrupt (or
the cancel of the awaiting task) cancels the helper's executions and waits
for them to end first (``Engine._run_private``), so nothing the kernel
still uses is closed under it.
"""

from .copying import COPY_CHUNK, acopy_file, copy_file
from .driving import async_engine, engine, kernel_progress_engine
from .files import (
    LARGE_READ,
    SMALL_READ,
    aread_file,
    aread_files,
    awrite_file,
    read_file,
    read_files,
    write_file,
)
from .net import atcp_request, atcp_requests, tcp_request, tcp_requests
from .requests import AioRequest, Eventfd, Signal, aio_drain, aio_read, aio_suspend, aio_write

__all__ = [
    "COPY_CHUNK",
    "LARGE_READ",
    "SMALL_READ",
    "AioRequest",
    "Eventfd",
    "Signal",
    "acopy_file",
    "aio_drain",
    "aio_read",
    "aio_suspend",
    "aio_write",
    "aread_file",
    "aread_files",
    "async_engine",
    "atcp_request",
    "atcp_requests",
    "awrite_file",
    "copy_file",
    "engine",
    "kernel_progress_engine",
    "read_file",
    "read_files",
    "tcp_request",
    "tcp_requests",
    "write_file",
]  # fmt: skip
