"""The command line: ``python -m uringlets probe`` (and ``--help`` of
every command), here and under a seccomp filter that blocks io_uring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import uringlets as ul
from uringlets import atoms

TESTS = Path(__file__).resolve().parent


def cli(*args: str, seccomp: bool = False) -> subprocess.CompletedProcess[str]:
    if seccomp:
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import seccomp_child as s; "
            "s.install_filter(); from uringlets.__main__ import main; sys.exit(main(sys.argv[2:]))"
        )
        cmd = [sys.executable, "-c", code, str(TESTS), *args]
    else:
        cmd = [sys.executable, "-m", "uringlets", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not ul.probe().available, reason="io_uring is not usable here")
def test_probe_where_io_uring_works() -> None:
    out = cli("probe")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "io_uring: usable" in lines
    assert any(line.startswith("kernel: Linux ") for line in lines)
    assert any(line.startswith("setup flags: kept ") for line in lines)
    assert any(line.startswith("restricted rings: ") for line in lines)
    features = ul.probe()
    for name, op in atoms.CATALOGUE.items():
        (line,) = [x for x in lines if x.split()[:1] == [name]]
        in_kernel = op.kernel_op is not None and features.has_op(op.kernel_op)
        assert ("in the kernel" in line) is in_kernel, line


def test_probe_under_a_seccomp_block() -> None:
    out = cli("probe", seccomp=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "io_uring: not usable: io_uring_setup failed with EPERM" in out.stdout
    assert "cachemiss threads" in out.stdout


@pytest.mark.parametrize("command", [[], ["probe"], ["serve"]])
def test_help(command: list[str]) -> None:
    out = cli(*command, "--help")
    assert out.returncode == 0 and "usage: python -m uringlets" in out.stdout


def test_no_command_is_an_error() -> None:
    out = cli()
    assert out.returncode == 2 and "COMMAND" in out.stderr
