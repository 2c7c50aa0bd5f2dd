"""Shared setup for the uringlets benchmarks.

* the file set: ``NFILES`` files of ``FILE_SIZE`` bytes named f0000..f1999 in
  ``bench_dir()`` (``$URINGLETS_BENCH_DIR``, default /tmp/uringlets-bench-files),
  created idempotently by ``ensure_files()`` and read once by ``warm()``;
* the two programs, ``nop4`` (four linked no-ops) and ``file3``
  (openat -> read 4 KiB -> close);
* the C liburing reference in ``benchmarks/c``: ``build_c_ref()`` runs make,
  ``c_ref_seconds()`` runs it and returns the time it measured itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import uringlets as ul

HERE = Path(__file__).resolve().parent
C_DIR = HERE / "c"
C_REF = C_DIR / "uring_ref"

DIR_ENV = "URINGLETS_BENCH_DIR"
DEFAULT_DIR = "/tmp/uringlets-bench-files"
NFILES = 2000
FILE_SIZE = 4096
BATCH = 64  # executions per submit_many / per C submit_and_wait


# -- the file set ----------------------------------------------------------------------
def bench_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def file_name(i: int) -> str:
    return f"f{i:04d}"


def ensure_files(directory: Path | None = None, nfiles: int = NFILES) -> list[bytes]:
    """Create (only where missing or of the wrong size) ``nfiles`` files of
    ``FILE_SIZE`` bytes and return their paths as bytes, in order."""
    directory = bench_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(nfiles):
        path = directory / file_name(i)
        try:
            ok = path.stat().st_size == FILE_SIZE
        except FileNotFoundError:
            ok = False
        if not ok:
            # Write a temporary file and rename it, so a concurrent reader
            # never sees a short file.
            tmp = directory / f".{file_name(i)}.{os.getpid()}.tmp"
            tmp.write_bytes(os.urandom(FILE_SIZE))
            os.replace(tmp, path)
        paths.append(os.fsencode(path))
    return paths


def warm(paths: list[bytes]) -> None:
    """Read every file once, so the benchmarks run on the page cache."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            if len(os.read(fd, FILE_SIZE)) != FILE_SIZE:
                raise RuntimeError(f"{os.fsdecode(p)} is shorter than {FILE_SIZE} bytes")
        finally:
            os.close(fd)


# -- the programs ----------------------------------------------------------------------
def nop4_program() -> ul.Program:
    """Four linked no-ops: the cost of an execution with no work in it."""
    s = ul.Syslet()
    for _ in range(4):
        s.nop()
    return s.compile()


def file3_program() -> tuple[ul.Program, ul.Ref]:
    """openat($path) -> read(fd, 4096) -> close(fd); returns the program and
    the Ref of the read, whose value is the bytes read."""
    s = ul.Syslet()
    fd = s.openat(ul.Param("path"), os.O_RDONLY)
    data = s.read(fd, FILE_SIZE, stop=ul.STOP_ON_NON_POSITIVE)
    s.close(fd)
    return s.compile(), data


# -- the C liburing reference ----------------------------------------------------------
def build_c_ref() -> Path:
    """``make -C benchmarks/c`` (a no-op when up to date); returns the binary."""
    proc = subprocess.run(["make", "-C", str(C_DIR)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the C reference failed:\n{proc.stdout}{proc.stderr}")
    return C_REF


def c_ref_seconds(
    workload: str,
    executions: int,
    *,
    directory: Path | None = None,
    nfiles: int = NFILES,
    batch: int = BATCH,
) -> float:
    """Run the C reference for ``executions`` executions of ``workload``
    (``"nop4"``: a multiple of ``batch``; ``"file3"``: a multiple of
    ``nfiles``, whole passes over the file set) and return the seconds it
    measured around its own loop (process start and setup excluded)."""
    if workload == "nop4":
        loops, rest = divmod(executions, batch)
        argv = [str(C_REF), "nop4", str(loops), str(batch)]
    elif workload == "file3":
        loops, rest = divmod(executions, nfiles)
        directory = bench_dir() if directory is None else Path(directory)
        argv = [str(C_REF), "file3", str(loops), str(directory), str(nfiles), str(batch)]
    else:
        raise ValueError(f"unknown workload {workload!r}")
    if rest or loops < 1:
        raise ValueError(
            f"{workload}: {executions} executions is not a positive whole number "
            f"of {batch if workload == 'nop4' else nfiles}"
        )
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    fields = dict(item.split("=", 1) for item in proc.stdout.split())
    if int(fields["executions"]) != executions:
        raise RuntimeError(
            f"{' '.join(argv)} ran {fields['executions']} executions, expected {executions}"
        )
    return int(fields["elapsed_ns"]) / 1e9
