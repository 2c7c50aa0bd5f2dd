"""Shared fixtures: every semantics test runs on each way of executing a
program: the io_uring engine, the thread engine and the reference
interpreter."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringlets as ul
from uringlets.threads import run_reference

Runner = Callable[..., ul.Completion]

# What the suite expects of this kernel: io_uring usable, unless the run says
# otherwise (scripts/test-kernel.sh under kernel.io_uring_disabled sets
# URINGLETS_EXPECT_NO_IO_URING to the words the fallback reason must hold;
# test_selection checks both ways).  Only then do the io_uring engine's
# parametrisations go: a machine that merely lacks io_uring fails there.
EXPECT_NO_IO_URING = os.environ.get("URINGLETS_EXPECT_NO_IO_URING")
ENGINES = ["threads"] if EXPECT_NO_IO_URING else ["uring", "threads"]
ALL_RULES = [
    ul.NEVER_STOP,
    ul.STOP_ON_NEGATIVE,
    ul.STOP_ON_NONZERO,
    ul.STOP_ON_ZERO,
    ul.STOP_ON_NON_POSITIVE,
    ul.STOP_ON_NEGATIVE | ul.STOP_ON_ZERO,
    ul.STOP_ON_NONZERO | ul.STOP_ON_ZERO,
]
RUNNERS = [*ENGINES, "reference"]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(scope="module", params=ENGINES)
def shared_engine(request: pytest.FixtureRequest) -> Iterator[ul.Engine]:
    """One engine of each kind per test module."""
    eng = ul.Engine(request.param, capacity=256)
    yield eng
    eng.close()


@pytest.fixture(params=ENGINES)
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_engine(engine_kind: str) -> Iterator[Callable[..., ul.Engine]]:
    """``make_engine(**kwargs)``: a fresh engine of the kind under test,
    closed after the test if it is still open."""
    made: list[ul.Engine] = []

    def make(**kwargs: Any) -> ul.Engine:
        eng = ul.Engine(engine_kind, **kwargs)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.close()


@pytest.fixture(params=RUNNERS)
def run(request: pytest.FixtureRequest) -> Runner:
    """``run(program, **params) -> Completion`` on one engine."""
    if request.param == "reference":
        return run_reference
    eng: ul.Engine = _engine_of_kind(request, request.param)

    def run_on_engine(program: ul.Program, **params: Any) -> ul.Completion:
        c = eng.run(program, **params)
        assert eng.in_flight == 0
        return c

    return run_on_engine


_ENGINES: dict[str, ul.Engine] = {}


def _engine_of_kind(request: pytest.FixtureRequest, kind: str) -> ul.Engine:
    """A process-wide engine of each kind for the ``run`` fixture."""
    eng = _ENGINES.get(kind)
    if eng is None:
        eng = _ENGINES[kind] = ul.Engine(kind, capacity=256)
    return eng


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for eng in _ENGINES.values():
        eng.close()


@pytest.fixture
def sandbox(tmp_path: Any) -> Any:
    """A directory with a 10-byte file, an empty file, a 4 KiB file, a
    directory holding one file, and an empty directory."""
    (tmp_path / "ten").write_bytes(b"0123456789")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "page").write_bytes(bytes(range(256)) * 16)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner").write_bytes(b"x")
    (tmp_path / "emptydir").mkdir()
    return tmp_path
