"""``ul.aio`` POSIX-AIO-style requests: results as ``os.pread`` /
``os.pwrite`` give them, and each notification style delivering exactly
once per request, on both engines."""

from __future__ import annotations

import collections
import errno
import os
import select
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import uringlets as ul
from uringlets import aio

from .conftest import ENGINES, open_fds


@pytest.fixture(params=ENGINES)
def eng(request: pytest.FixtureRequest) -> Iterator[ul.Engine]:
    before = open_fds()
    with ul.Engine(request.param, progress="kernel") as engine:
        yield engine
    assert open_fds() == before


@pytest.fixture
def data_fd(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 64)
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


def test_results_are_those_of_pread_and_pwrite(eng: ul.Engine, data_fd: int) -> None:
    for size, offset in ((100, 0), (100, 16_300), (0, 5), (4096, 20_000)):
        want = os.pread(data_fd, size, offset)
        assert aio.aio_read(data_fd, size, offset, engine=eng).result(5) == want
    request = aio.aio_write(data_fd, b"written", 10, engine=eng)
    assert request.result(5) == 7 and os.pread(data_fd, 7, 10) == b"written"
    for bad in (
        aio.aio_read(987_654, 10, 0, engine=eng),
        aio.aio_write(987_654, b"x", 0, engine=eng),
    ):
        with pytest.raises(OSError) as info:
            bad.result(5)
        assert info.value.errno == errno.EBADF
    with pytest.raises(TypeError, match="notify"):
        aio.aio_read(data_fd, 1, 0, notify=42, engine=eng)  # type: ignore[arg-type]
    for size in (-1, 1 << 40, 1.0, True, "10"):
        with pytest.raises(ValueError, match=r"aio_read: size must be an int in 0\.\."):
            aio.aio_read(data_fd, size, 0, engine=eng)  # type: ignore[arg-type]
    assert eng.wait(0) == []  # nothing of theirs is left in the engine's ring


def test_reads_of_any_size_share_a_few_programs(eng: ul.Engine, data_fd: int) -> None:
    """A read's size is a Param: one program per power of two of buffer,
    each size read exactly (full, short at the end, past it), notified by
    an eventfd or not."""
    from uringlets.aio import requests

    requests._program.cache_clear()
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        sizes = [1, 2, 3, 100, 4095, 4096, 4097, 5000, 8191, 8192, 16_000]
        for size in sizes:
            for offset in (0, 16_384 - 4000, 16_384 + 10):
                for notify in (None, aio.Eventfd(efd)):
                    want = os.pread(data_fd, size, offset)
                    got = aio.aio_read(data_fd, size, offset, notify=notify, engine=eng)
                    assert got.result(5) == want, (size, offset, notify)
        assert os.eventfd_read(efd) == len(sizes) * 3  # one write of 1 per notified request
    finally:
        os.close(efd)
    # 4 KiB, 8 KiB, 16 KiB buffers, each with and without the eventfd
    assert requests._program.cache_info().currsize == 6


def test_callbacks_run_once_per_request_on_the_owner_thread(eng: ul.Engine, data_fd: int) -> None:
    calls: collections.Counter[int] = collections.Counter()
    threads = set()

    def notify(request: aio.AioRequest) -> None:
        calls[id(request)] += 1
        threads.add(threading.get_ident())

    requests = [aio.aio_read(data_fd, 16, i * 16, notify=notify, engine=eng) for i in range(200)]
    while any(not r.done() for r in requests):
        aio.aio_drain(1, engine=eng)
    for _ in range(3):
        aio.aio_drain(0, engine=eng)  # nothing is announced twice
    assert [calls[id(r)] for r in requests] == [1] * 200
    assert threads == {threading.get_ident()}
    assert [r.result() for r in requests] == [os.pread(data_fd, 16, i * 16) for i in range(200)]


def test_eventfd_is_written_by_the_kernel_without_the_owner(eng: ul.Engine) -> None:
    """The read waits on an empty pipe; another thread fills it while the
    owner thread sits in select() on the eventfd, not in the engine."""
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    r, w = os.pipe()
    try:
        requests = [aio.aio_read(r, 5, notify=aio.Eventfd(efd), engine=eng)]
        filler = threading.Timer(0.2, os.write, (w, b"hello"))
        filler.start()
        ready, _, _ = select.select([efd], [], [], 10)
        filler.join()
        assert ready == [efd] and os.eventfd_read(efd) == 1
        assert requests[0].result(5) == b"hello"
        # many at once: the counter says how many ended, exactly
        many = [aio.aio_read(r, 1, notify=aio.Eventfd(efd), engine=eng) for _ in range(30)]
        os.write(w, b"x" * 30)
        total = 0
        while total < 30:
            select.select([efd], [], [], 10)
            total += os.eventfd_read(efd)
        assert total == 30
        assert b"".join(m.result(5) for m in many) == b"x" * 30
        select.select([efd], [], [], 0.1)
        with pytest.raises(BlockingIOError):
            os.eventfd_read(efd)  # nothing more: once per request
    finally:
        for fd in (efd, r, w):
            os.close(fd)


def test_a_signal_handler_runs_once_per_request(eng: ul.Engine, data_fd: int) -> None:
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)  # Python, in the handler

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        sig = aio.Signal(signal.SIGUSR1)
        requests = [aio.aio_read(data_fd, 8, i, notify=sig, engine=eng) for i in range(64)]
        while aio.aio_suspend([r for r in requests if not r.done()], 5):
            pass
        assert len(seen) == 64 and all(r.done() for r in requests)
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_cancel_ends_a_request_once(eng: ul.Engine) -> None:
    r, w = os.pipe()
    calls: list[aio.AioRequest] = []
    try:
        request = aio.aio_read(r, 10, notify=calls.append, engine=eng)
        assert not request.done()
        assert request.cancel()
        with pytest.raises(InterruptedError):
            request.result(5)
        assert calls == [request] and not request.cancel()
    finally:
        os.close(r)
        os.close(w)


def test_requests_leave_the_engines_other_work_alone(eng: ul.Engine, data_fd: int) -> None:
    s = ul.Syslet()
    s.nop()
    nop = s.compile()
    eng.submit_many(nop, 3, tags=["a", "b", "c"])
    request = aio.aio_read(data_fd, 4, 0, engine=eng)
    # the caller's own wait never sees a request's completion, ended or not
    assert sorted(c.tag for c in eng.wait(3, timeout=5)) == ["a", "b", "c"]
    assert eng.wait(0) == []  # (on the threads engine the read may still be running)
    assert request.result(5) == os.pread(data_fd, 4, 0)
    assert eng.wait(0) == [] and eng.in_flight == 0


def test_a_callback_that_raises_leaves_the_others_for_the_next_drain(
    eng: ul.Engine, data_fd: int
) -> None:
    calls: list[aio.AioRequest] = []

    def notify(request: aio.AioRequest) -> None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("the first callback fails")

    requests = [aio.aio_read(data_fd, 4, i, notify=notify, engine=eng) for i in range(10)]
    failed = False
    while len(calls) < 10:
        try:
            aio.aio_drain(1, engine=eng)
        except RuntimeError:
            failed = True
    assert failed and sorted(map(id, calls)) == sorted(map(id, requests))  # each once


def test_progress_owner_defers_the_kernels_part_until_the_owner_calls_in() -> None:
    """The difference ``progress=`` makes on io_uring: with "owner" the
    eventfd write after a read that had to wait runs at the owner's next
    call into the engine; with "kernel" at once (above)."""
    with pytest.raises(ValueError, match="progress"):
        ul.Engine(progress="soon")
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    r, w = os.pipe()
    try:
        with ul.Engine("uring", progress="owner") as eng:
            request = aio.aio_read(r, 5, notify=aio.Eventfd(efd), engine=eng)
            os.write(w, b"hello")
            assert select.select([efd], [], [], 0.3)[0] == []  # nobody ran the completion work
            assert request.result(5) == b"hello"  # the owner calls in: it runs
            assert os.eventfd_read(efd) == 1
    finally:
        for fd in (efd, r, w):
            os.close(fd)


def test_the_default_engine_of_requests_announces_while_the_thread_sleeps() -> None:
    """``aio_read`` without ``engine=`` runs on ``aio.kernel_progress_engine()``
    (progress="kernel"): the eventfd is written while the thread sleeps in
    select(), with no call into the engine."""
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    r, w = os.pipe()
    try:
        request = aio.aio_read(r, 5, notify=aio.Eventfd(efd))
        os.write(w, b"hello")
        assert select.select([efd], [], [], 5)[0] == [efd]
        assert os.eventfd_read(efd) == 1
        assert request.result(5) == b"hello"
    finally:
        for fd in (efd, r, w):
            os.close(fd)
