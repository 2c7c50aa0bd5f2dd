"""The command line: ``python -m uringlets probe`` (and ``--help`` of
every command), here and under a seccomp filter that blocks io_uring."""

from __future__ import annotations

import json
import platform
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


def test_probe_json_says_what_the_text_says() -> None:
    out = cli("probe", "--json")
    report = json.loads(out.stdout)
    text = cli("probe")
    assert out.returncode == text.returncode == (0 if report["usable"] else 1)
    assert report["kernel"] == platform.release() and report["usable"] == ul.probe().available
    for name, where in report.get("ops", {}).items():
        (line,) = [x for x in text.stdout.splitlines() if x.split()[:1] == [name]]
        assert ("in the kernel" in line) == (where["where"] == "kernel"), line
    blocked = json.loads(cli("probe", "--json", seccomp=True).stdout)
    assert not blocked["usable"] and "EPERM" in blocked["reason"] and "ops" not in blocked


def test_probe_under_a_seccomp_block() -> None:
    out = cli("probe", seccomp=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "io_uring: not usable: io_uring_setup failed with EPERM" in out.stdout
    assert "cachemiss threads" in out.stdout


@pytest.mark.parametrize("command", [[], ["probe"], ["explain"], ["bench"], ["serve"]])
def test_help(command: list[str]) -> None:
    out = cli(*command, "--help")
    assert out.returncode == 0 and "usage: python -m uringlets" in out.stdout


def test_no_command_is_an_error() -> None:
    out = cli()
    assert out.returncode == 2 and "COMMAND" in out.stderr


PROGRAMS = """
import os
import uringlets as ul

s = ul.Syslet()
fd = s.openat(ul.Param("path"))
s.read(fd, 4096)
s.close(fd)
CAT = s.compile()
SYSLET = s


class Holder:
    PROG = CAT


def make():
    return CAT


NUMBER = 42
"""


def test_explain_prints_the_plan(tmp_path: Path) -> None:
    (tmp_path / "myprogs.py").write_text(PROGRAMS)
    want = None
    for target in ("myprogs:CAT", "myprogs:SYSLET", "myprogs:make", "myprogs:Holder.PROG",
                   f"{tmp_path / 'myprogs.py'}:CAT"):  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "uringlets", "explain", target],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("program: 3 atom(s)")
        assert "openat(path=$path" in out.stdout and "close(fd=" in out.stdout
        want = want or out.stdout
        assert out.stdout == want


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("myprogs:NUMBER", "is a int, not a Program or a Syslet"),
        ("myprogs:MISSING", "'myprogs' has no 'MISSING'"),
        ("no_such_module:X", "cannot import 'no_such_module'"),
        ("no-colon", "expected MODULE:NAME"),
    ],
)
def test_explain_refuses_what_is_no_program(tmp_path: Path, target: str, message: str) -> None:
    (tmp_path / "myprogs.py").write_text(PROGRAMS)
    out = subprocess.run(
        [sys.executable, "-m", "uringlets", "explain", target],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""


def test_bench_writes_pyperf_json_and_compares(tmp_path: Path) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for out in (first, second):
        done = cli("bench", "nop1", "read_files", "--debug-single-value", "-q", "-o", str(out))
        assert done.returncode == 0, done.stderr
    data = json.loads(first.read_text())
    names = sorted(b["metadata"]["name"] for b in data["benchmarks"])
    assert names == ["nop1-run", "read_files", "read_files-plain"]
    done = cli("bench", "nop1", "--debug-single-value", "-q", "-o", str(tmp_path / "third.json"),
               "--compare", str(first))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "nop1-run" in done.stdout or "not significant" in done.stdout


def test_bench_refuses_unknown_names_and_a_compare_without_output() -> None:
    done = cli("bench", "no-such-benchmark")
    assert done.returncode == 2 and "no benchmark named 'no-such-benchmark'" in done.stderr
    done = cli("bench", "nop1", "--compare", "old.json")
    assert done.returncode == 2 and "--compare needs -o" in done.stderr
