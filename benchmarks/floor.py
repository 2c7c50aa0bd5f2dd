"""What the contract allows at best for one ``run()`` at a time (issue 10).

Measures, interleaved round by round in one process so that drift hits all
alike, the per-call time of:

- ``engine``: ``Engine.run`` as users call it (nop1, and file1's
  openat -> read 4 KiB -> close over the warm bench files);
- ``floor``: the least Python any design under DESIGN.md can run per call:
  the same SQE images pushed and submitted with one wait, the one CQE
  reaped, and what the contract makes per execution (a ``Completion``, and
  for file1 the ``bytes`` of the read): two cffi calls and a handful of
  lines, no bookkeeping, no checks, no tags, no parameters beyond the path.
  It is not an engine (it cannot cancel, fail, or hold two executions); it
  bounds what one could reach with a cffi ring layer;
- ``capi``: the same floor with its C written against CPython's C API
  (``benchmarks/c/capi_floor.c``, built here with gcc): one method call
  that pushes, waits, reaps and makes the Completion and its bytes in C.
  DESIGN.md rules this out ("the ring layer is a cffi (API mode)
  extension"); it measures what that clause costs;
- the peers: ``plain`` (os.open/os.read/os.close) and the C liburing
  reference (``benchmarks/c/uring_ref nop1`` / ``file1``, its own clock).

    .venv/bin/python benchmarks/floor.py [--rounds 7]

Prints per-call times (median and min over the rounds) and the ratios the
issue's targets are stated in (nop1: rate over C; file1: rate over plain).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads as wl

import uringlets as ul
from uringlets.kernel import ffi, lib
from uringlets.notify import Completion
from uringlets.ringio import BOX_RUNS, BOX_RUNS_DONE, LAST_CLEAR

NOP_CALLS = 100_000
ROOT = Path(__file__).resolve().parent.parent


def build_capi_floor(directory: Path) -> Any:
    """Compile benchmarks/c/capi_floor.c with ring.c into ``directory`` and
    import it."""
    target = directory / ("capi_floor" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [
            "gcc", "-O2", "-std=gnu11", "-shared", "-fPIC",
            f"-I{ROOT / 'uringlets'}", f"-I{sysconfig.get_paths()['include']}",
            str(ROOT / "benchmarks" / "c" / "capi_floor.c"), str(ROOT / "uringlets" / "ring.c"),
            "-o", str(target),
        ],
        check=True,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("capi_floor", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def capi_lane(module: Any, eng: ul.Engine, prog: ul.Program, results: tuple[int, ...]) -> Any:
    """A capi_floor Lane running ``prog`` on ``eng``'s ring (the engine must
    not be used afterwards; the returned lane keeps its scratch buffer)."""
    backend: Any = eng._backend
    plan = prog.plan
    ud = 1 << 44  # entry 0, generation 1: its CQE is a clean ending
    backend._fast[0] = ud | plan.segments[0].last
    scratch = backend.floor_scratch = ffi.new("char[]", plan.scratch_size)
    values = backend._zeros
    values[0] = _address(scratch)  # (slot 0: values[1] is 0)
    out: Any = plan.clean.outs[0] if plan.clean and plan.clean.outs else None
    return module.lane(
        _address(backend._ring), _address(backend._inbox), _address(plan.images_c),
        plan.first_sqes, _address(plan.patches) if plan.npatches else 0, plan.npatches,
        _address(values), ud, _address(scratch) + out[1] if out else 0, out[2] if out else 0,
        Completion, prog, results[:-1], prog.refs[out[0]] if out else None,
    )  # fmt: skip


def floor_run(eng: ul.Engine, prog: ul.Program, results: tuple[int, ...]) -> Callable[..., object]:
    """A ``run(path=None)`` with nothing but what every design must do,
    on ``eng``'s ring (the engine must not be used afterwards)."""
    backend: Any = eng._backend
    ring, inbox, box = backend._ring, backend._inbox, backend._box
    clean_res = backend._clean_res
    plan = prog.plan
    images, nsqes, patches, npatches = plan.images_c, plan.first_sqes, plan.patches, plan.npatches
    ud = 1 << 44  # entry 0, generation 1: mark its CQE as a clean ending
    backend._fast[0] = ud | plan.segments[0].last
    values = backend._zeros
    scratch = ffi.new("char[]", plan.scratch_size)  # the closure keeps it
    values[0] = _address(scratch)  # (slot 0: values[1] is 0)
    view = ffi.buffer(scratch)
    out: Any = plan.clean.outs[0] if plan.clean and plan.clean.outs else None
    new, push, cycle, address = tuple.__new__, lib.ur_push, lib.ur_cycle, lib.ur_address
    prefix = results[:-1]
    value_ref = prog.refs[out[0]] if out else None

    def run(path: bytes | None = None) -> Completion:
        if path is not None:
            values[2] = address(path)
        push(ring, images, 0, nsqes, patches, npatches, values, 1, 1, LAST_CLEAR, ud, 0)
        cycle(ring, inbox, 1, -1, 1)
        r = clean_res[0]
        box[BOX_RUNS_DONE] = box[BOX_RUNS]
        value = view[out[1] : out[1] + out[2]] if out else None
        fields = (None, prog, (*prefix, r), None, False, None, True, value_ref, value)
        return new(Completion, fields)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    wl.build_c_ref()
    paths = wl.ensure_files()
    nop = wl.nop_program(1)
    file3, _ = wl.file3_program()

    engine = ul.Engine("uring")
    # kept open to the end: the floors use their rings
    floor_engines = [ul.Engine("uring") for _ in range(4)]
    floor_nop = floor_run(floor_engines[0], nop, (0,))
    floor_file = floor_run(floor_engines[1], file3, (0, 4096, 0))
    build_dir = tempfile.TemporaryDirectory()
    capi = build_capi_floor(Path(build_dir.name))
    capi_nop = capi_lane(capi, floor_engines[2], nop, (0,)).run
    capi_file = capi_lane(capi, floor_engines[3], file3, (0, 4096, 0)).run

    def engine_nop() -> None:
        run = engine.run
        for _ in range(NOP_CALLS):
            run(nop)

    def floor_nop_loop() -> None:
        for _ in range(NOP_CALLS):
            floor_nop()

    def capi_nop_loop() -> None:
        for _ in range(NOP_CALLS):
            capi_nop(None)

    def capi_file_loop() -> None:
        for p in paths:
            capi_file(p)

    def engine_file() -> None:
        run = engine.run
        for p in paths:
            run(file3, path=p)

    def floor_file_loop() -> None:
        for p in paths:
            floor_file(p)

    def plain_file() -> None:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)

    timed: dict[str, tuple[Callable[[], None], int]] = {
        "nop1 engine": (engine_nop, NOP_CALLS),
        "nop1 floor": (floor_nop_loop, NOP_CALLS),
        "nop1 capi": (capi_nop_loop, NOP_CALLS),
        "file1 engine": (engine_file, len(paths)),
        "file1 floor": (floor_file_loop, len(paths)),
        "file1 capi": (capi_file_loop, len(paths)),
        "file1 plain": (plain_file, len(paths)),
    }
    samples: dict[str, list[float]] = {name: [] for name in [*timed, "nop1 C", "file1 C"]}
    for _ in range(args.rounds):
        for name, (func, calls) in timed.items():
            t0 = time.perf_counter()
            func()
            samples[name].append((time.perf_counter() - t0) / calls)
        samples["nop1 C"].append(wl.c_ref_seconds("nop1", NOP_CALLS) / NOP_CALLS)
        samples["file1 C"].append(wl.c_ref_seconds("file1", len(paths)) / len(paths))

    med = {name: statistics.median(v) for name, v in samples.items()}
    low = {name: min(v) for name, v in samples.items()}
    print(f"{'per call':14} {'median':>10} {'min':>10}")
    for name in samples:
        print(f"{name:14} {med[name] * 1e6:9.2f}us {low[name] * 1e6:9.2f}us")
    print("ratios (rate over the peer's, medians):")
    for what, peer in (("nop1", "C"), ("file1", "plain"), ("file1", "C")):
        for side in ("engine", "floor", "capi"):
            ratio = med[f"{what} {peer}"] / med[f"{what} {side}"]
            print(f"  {what} {side} vs {peer}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
