"""Engine selection: auto picks io_uring where it works, the cachemiss
threads where it is blocked (for real, under a seccomp filter), and
URINGLETS_ENGINE forces either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import uringlets as ul

from .conftest import ENGINES, EXPECT_NO_IO_URING

CHILD = Path(__file__).with_name("seccomp_child.py")


def test_auto_picks_uring_here():
    """io_uring where the run expects it (everywhere but the kernels that
    scripts/test-kernel.sh boots with kernel.io_uring_disabled); threads, and
    the reason why, where it does not."""
    features = ul.probe()
    if EXPECT_NO_IO_URING:
        assert not features.available and EXPECT_NO_IO_URING in (features.reason or "")
        with ul.Engine() as eng:
            assert eng.kind == "threads" and EXPECT_NO_IO_URING in (eng.fallback_reason or "")
        with pytest.raises(OSError, match="io_uring"):
            ul.Engine("uring")
        return
    assert features.available, features.reason
    with ul.Engine() as eng:
        assert eng.kind == "uring" and eng.fallback_reason is None


@pytest.mark.parametrize("kind", ENGINES)
def test_the_environment_variable_forces_an_engine(monkeypatch, kind):
    monkeypatch.setenv("URINGLETS_ENGINE", kind)
    with ul.Engine() as eng:
        assert eng.kind == kind
        assert (eng.fallback_reason is not None) == (kind == "threads")
    with ul.Engine(ENGINES[0]) as eng:  # an explicit choice wins over the variable
        assert eng.kind == ENGINES[0]


def test_a_bad_environment_value_is_refused(monkeypatch):
    monkeypatch.setenv("URINGLETS_ENGINE", "fast")
    with pytest.raises(ValueError, match="URINGLETS_ENGINE"):
        ul.Engine()


def test_blocked_io_uring_falls_back_to_threads(sandbox):
    env = {k: v for k, v in os.environ.items() if k != "URINGLETS_ENGINE"}
    out = subprocess.run(
        [sys.executable, str(CHILD), str(sandbox)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["blocked"] is True
    assert report["kind"] == "threads"
    # the reason names who refused: the sysctl where it is set, else the filter
    who = EXPECT_NO_IO_URING or "seccomp filter"
    assert "EPERM" in report["reason"] and who in report["reason"]
    assert "no io_uring" in report["explain"]
    assert report["file"] == {"results": [0, 10, 0, 0], "data": "0123456789", "size": 10}
    assert report["missing"] == {"results": [-2, None, None, None], "stopped_at": 0}
    assert report["many"] == [[0, 10, 0, 0]]


def test_engine_uring_refuses_clearly_where_blocked(sandbox):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import seccomp_child as s; "
        "s.install_filter(); import uringlets as ul\n"
        "try:\n    ul.Engine('uring')\nexcept OSError as e:\n    print('refused', e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(CHILD.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.startswith("refused") and "EPERM" in out.stdout
