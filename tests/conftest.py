"""Shared fixtures: every semantics test runs on each way of executing a
program (the io_uring engine and the reference interpreter; the thread
engine joins when it exists)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringlets as ul
from uringlets.threads import run_reference

Runner = Callable[..., ul.Completion]

RUNNERS = ["uring", "reference"]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(scope="module")
def uring_engine() -> Iterator[ul.Engine]:
    eng = ul.Engine("uring", capacity=256)
    yield eng
    eng.close()


@pytest.fixture(params=RUNNERS)
def run(request: pytest.FixtureRequest) -> Runner:
    """``run(program, **params) -> Completion`` on one engine."""
    if request.param == "reference":
        return run_reference
    eng: ul.Engine = request.getfixturevalue("uring_engine")

    def run_on_engine(program: ul.Program, **params: Any) -> ul.Completion:
        c = eng.run(program, **params)
        assert eng.in_flight == 0
        return c

    return run_on_engine


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
