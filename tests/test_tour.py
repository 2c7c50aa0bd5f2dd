"""The main job (README's first command runs ``examples/tour.py``): it runs
to the end here, on the engine this machine has, and prints each section it
promises with a ratio (how long it takes, it prints itself: no timed
assertion; the timeout only stops a hang)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import EXPECT_NO_IO_URING

TOUR = Path(__file__).resolve().parents[1] / "examples" / "tour.py"


def test_the_tour_runs_and_shows_what_it_promises(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(TOUR)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"\(ratios from this run on this machine; \d+ s in all\.", out), out
    if EXPECT_NO_IO_URING:
        assert "engine: the cachemiss threads, because" in out
    else:
        assert "engine: io_uring" in out
    assert "-> <Completion tag=None ok results=(0, " in out
    verdict = r"\d+\.\d\dx (faster|slower)"
    for row in ("read_files, warm cache", "tcp_requests, one batch"):
        assert re.search(re.escape(row) + r".*" + verdict, out), out
    cold = "read_files, cold cache"
    assert re.search(re.escape(cold) + r".*" + verdict, out) or "cold cache: skipped (" in out
    assert not list(tmp_path.iterdir())  # its files are removed
