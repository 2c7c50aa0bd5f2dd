"""Real servers for the network tests: Debian's redis-server and memcached,
started on 127.0.0.1 with free ports and stopped by process id."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def server(argv: list[str], port: int) -> Iterator[int]:
    exe = shutil.which(argv[0])
    if exe is None:
        pytest.fail(f"{argv[0]} is not installed: run scripts/test.sh (it installs it)")
    proc = subprocess.Popen([exe, *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()  # stopped by process id
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis(port: int) -> contextlib.AbstractContextManager[int]:
    return server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--protected-mode", "no"], port)  # fmt: skip


def memcached(port: int) -> contextlib.AbstractContextManager[int]:
    return server(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root"],
                  port)  # fmt: skip
