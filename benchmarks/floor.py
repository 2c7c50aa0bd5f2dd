"""What the contract allows at best for one ``run()`` at a time (issue 10).

Measures, interleaved round by round in one process so that drift hits all
alike, the per-call time of:

- ``engine``: ``Engine.run`` as users call it (nop1, and file1's
  openat -> read 4 KiB -> close over the warm bench files);
- ``cffi``: the least any design under DESIGN.md can run per call.  One
  cffi call with two arguments (``benchmarks/c/cffi_floor.c``, built here
  with cffi against ``ring.c``) pushes the program's SQE images, enters the
  kernel once and reaps the one CQE; Python then makes what the contract
  requires of every execution (a ``Completion``, and for file1 the ``bytes``
  of the read).  No bookkeeping, no checks, no tags, no parameters beyond the
  path: it is not an engine (it cannot cancel, fail, or hold two
  executions); it bounds what a cffi ring layer can reach;
- ``capi``: the same floor with its C written against CPython's C API
  (``benchmarks/c/capi_floor.c``, built here with gcc): one method call that
  also makes the Completion and its bytes in C.  DESIGN.md rules this out
  ("the ring layer is a cffi (API mode) extension"); it measures what that
  clause costs;
- the peers: ``plain`` (os.open/os.read/os.close) and the C liburing
  reference (``benchmarks/c/uring_ref nop1`` / ``file1``, its own clock).

    .venv/bin/python benchmarks/floor.py [--rounds 7]

Prints per-call times (median and min over the rounds) and the ratios the
issue's targets are stated in (nop1: rate over C; file1: rate over plain).
Each floor runs on an engine of its own that is not used otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads as wl

import uringlets as ul
from uringlets.kernel import ffi
from uringlets.notify import Completion

NOP_CALLS = 100_000
ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "benchmarks" / "c"
UR_DIR = ROOT / "uringlets"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_cffi_floor(directory: Path) -> Any:
    """Build benchmarks/c/cffi_floor.c (with ring.c) as a cffi API-mode
    module in ``directory`` and import it."""
    builder = FFI()
    builder.cdef(
        "struct ur_ring; struct ur_inbox; struct ur_patch;\n" + (C_DIR / "cffi_floor.h").read_text()
    )
    builder.set_source(
        "cffi_floor",
        '#include "ring_compat.h"\n#include "ring.h"\n#include "cffi_floor.h"\n',
        sources=[str(C_DIR / "cffi_floor.c"), str(UR_DIR / "ring.c")],
        include_dirs=[str(UR_DIR), str(C_DIR)],
        extra_compile_args=["-O2", "-std=gnu11"],
    )
    return _load("cffi_floor", Path(builder.compile(tmpdir=str(directory))))


def build_capi_floor(directory: Path) -> Any:
    """Compile benchmarks/c/capi_floor.c (with ring.c) into ``directory``
    with gcc and the Python headers, and import it."""
    target = directory / ("capi_floor" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [
            "gcc", "-O2", "-std=gnu11", "-shared", "-fPIC",
            f"-I{UR_DIR}", f"-I{sysconfig.get_paths()['include']}",
            str(C_DIR / "capi_floor.c"), str(UR_DIR / "ring.c"), "-o", str(target),
        ],
        check=True,
    )  # fmt: skip
    return _load("capi_floor", target)


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


class Setup:
    """One program on one engine's ring, ready for a floor: the batch
    table's entry 0 marks the program's last CQE as a clean ending, and the
    value row holds a scratch buffer (slot 0) that this object keeps."""

    def __init__(self, prog: ul.Program) -> None:
        self.engine = ul.Engine("uring")  # kept open as long as the floor runs
        backend: Any = self.engine._backend.io
        plan = prog.plan
        self.prog, self.plan, self.backend = prog, plan, backend
        self.ud = 1 << 44  # entry 0, generation 1
        backend._fast[0] = self.ud | plan.segments[0].last
        self.scratch = ffi.new("char[]", plan.scratch_size)
        self.values = backend._zeros
        self.values[0] = _address(self.scratch)  # (slot 0: values[1] is 0)
        self.out: Any = plan.clean.outs[0] if plan.clean and plan.clean.outs else None
        self.ref = prog.refs[self.out[0]] if self.out else None


def cffi_run(module: Any, setup: Setup, results: tuple[int, ...]) -> Callable[..., Completion]:
    """``run(path)`` on the cffi floor: one call, then the Completion (and
    the read's bytes) made in Python."""
    lane = module.ffi.new("struct lane *")
    cast, backend, plan = module.ffi.cast, setup.backend, setup.plan
    lane.ring = cast("struct ur_ring *", _address(backend._ring))
    lane.inbox = cast("struct ur_inbox *", _address(backend._inbox))
    lane.images = cast("void *", _address(plan.images_c))
    lane.nsqes = plan.first_sqes
    lane.patches = cast("struct ur_patch *", _address(plan.patches) if plan.npatches else 0)
    lane.npatches = plan.npatches
    lane.values = cast("int64_t *", _address(setup.values))
    lane.ud = setup.ud
    prog, prefix, ref, out = setup.prog, results[:-1], setup.ref, setup.out
    view = ffi.buffer(setup.scratch)
    go, new, null = module.lib.lane_run, tuple.__new__, module.ffi.NULL

    def run(path: bytes | None = None, lane: Any = lane) -> Completion:
        r = go(lane, null if path is None else path)
        value = view[out[1] : out[1] + out[2]] if out else None
        return new(Completion, (None, prog, (*prefix, r), None, False, None, True, ref, value))

    return run


def capi_run(module: Any, setup: Setup, results: tuple[int, ...]) -> Callable[..., Completion]:
    """``run(path)`` on the C-API floor: one method call makes it all."""
    backend, plan, out = setup.backend, setup.plan, setup.out
    lane = module.lane(
        _address(backend._ring), _address(backend._inbox), _address(plan.images_c),
        plan.first_sqes, _address(plan.patches) if plan.npatches else 0, plan.npatches,
        _address(setup.values), setup.ud, _address(setup.scratch) + out[1] if out else 0,
        out[2] if out else 0, Completion, setup.prog, results[:-1], setup.ref,
    )  # fmt: skip
    run: Callable[..., Completion] = lane.run
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    wl.build_c_ref()
    paths = wl.ensure_files()
    nop = wl.nop_program(1)
    file3, data = wl.file3_program()
    build_dir = tempfile.TemporaryDirectory()
    cffi_floor = build_cffi_floor(Path(build_dir.name))
    capi_floor = build_capi_floor(Path(build_dir.name))
    setups = [Setup(nop), Setup(file3), Setup(nop), Setup(file3)]
    runs = {
        "nop1 cffi": cffi_run(cffi_floor, setups[0], (0,)),
        "file1 cffi": cffi_run(cffi_floor, setups[1], (0, 4096, 0)),
        "nop1 capi": capi_run(capi_floor, setups[2], (0,)),
        "file1 capi": capi_run(capi_floor, setups[3], (0, 4096, 0)),
    }
    for name, run in runs.items():  # each floor gives what the engine gives
        c = run(None) if name.startswith("nop1") else run(paths[0])
        if not c.ok or (name.startswith("file1") and len(c[data]) != 4096):
            sys.exit(f"{name}: {c!r}")
    engine = ul.Engine("uring")

    def nop_loop(run: Callable[..., object], *args: object) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(NOP_CALLS):
                run(*args)

        return loop

    def file_loop(run: Callable[..., object], *args: object) -> Callable[[], None]:
        def loop() -> None:
            for p in paths:
                run(*args, p)

        return loop

    def plain_loop() -> None:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)

    loops = {
        "nop1 engine": nop_loop(engine.run, nop),
        "nop1 cffi": nop_loop(runs["nop1 cffi"], None),
        "nop1 capi": nop_loop(runs["nop1 capi"], None),
        "file1 engine": file_loop(lambda p: engine.run(file3, path=p)),
        "file1 cffi": file_loop(runs["file1 cffi"]),
        "file1 capi": file_loop(runs["file1 capi"]),
        "file1 plain": plain_loop,
    }
    timed = list(loops)
    samples: dict[str, list[float]] = {name: [] for name in [*timed, "nop1 C", "file1 C"]}
    for _ in range(args.rounds):
        for name in timed:
            count = NOP_CALLS if name.startswith("nop1") else len(paths)
            t0 = time.perf_counter()
            loops[name]()
            samples[name].append((time.perf_counter() - t0) / count)
        samples["nop1 C"].append(wl.c_ref_seconds("nop1", NOP_CALLS) / NOP_CALLS)
        samples["file1 C"].append(wl.c_ref_seconds("file1", len(paths)) / len(paths))

    med = {name: statistics.median(v) for name, v in samples.items()}
    low = {name: min(v) for name, v in samples.items()}
    print(f"{'per call':14} {'median':>10} {'min':>10}")
    for name in samples:
        print(f"{name:14} {med[name] * 1e6:9.2f}us {low[name] * 1e6:9.2f}us")
    print("ratios (rate over the peer's; medians, and mins in brackets):")
    for what, peer in (("nop1", "C"), ("file1", "plain"), ("file1", "C")):
        for side in ("engine", "cffi", "capi"):
            a, b = f"{what} {peer}", f"{what} {side}"
            print(f"  {what} {side} vs {peer}: {med[a] / med[b]:.2f}x ({low[a] / low[b]:.2f}x)")


if __name__ == "__main__":
    main()
