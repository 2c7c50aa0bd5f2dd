"""nop1, file1, file3 and tcp5 beside their peers under the running kernel,
for comparing kernels in the same VM setup (issue 14: Debian 12's 6.1
against a newer one, both booted with scripts/test-kernel.sh under TCG).

    python benchmarks/kernel_compare.py -o OUT.json [--seconds 0.3] [--repeats 5]
    python benchmarks/kernel_compare.py --report A.json B.json ...   # markdown table

The time functions are bench_core's and bench_net's own (see their
docstrings for what one loop is), run in this one process: pyperf's worker
processes would each spend ~20 s importing over the guest's 9p root.  Each
benchmark is calibrated to ``--seconds`` a repeat, then the benchmarks of a
group are run in turn ``--repeats`` times (interleaved, so a slow spell of the
host hits them all); the value is the median time per unit.  Ratios are
the peer's time over uringlets' (above 1: uringlets is faster).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import bench_core
import bench_net

Timer = Callable[[int], float]
WORKERS = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default

# group: [(name, time function, units per loop)]; the first is uringlets'
GROUPS: dict[str, list[tuple[str, Timer, int]]] = {
    "nop1": [
        ("nop1-uringlets", bench_core.time_nop1_uringlets, 1),
        ("nop1-c-liburing", bench_core.time_nop1_c, 1),
    ],
    "file1": [
        ("file1-uringlets", bench_core.time_file1_uringlets, bench_core.wl.NFILES),
        ("file1-c-liburing", bench_core.time_file1_c, bench_core.wl.NFILES),
    ],
    "file3": [
        ("file3-uringlets", bench_core.time_file3_uringlets, bench_core.wl.NFILES),
        ("file3-plain", bench_core.time_file3_plain, bench_core.wl.NFILES),
        (
            "file3-threadpool",
            functools.partial(bench_core.time_file3_threadpool, workers=WORKERS),
            bench_core.wl.NFILES,
        ),
        ("file3-c-liburing", bench_core.time_file3_c, bench_core.wl.NFILES),
    ],
    "tcp5": [
        ("tcp5-uringlets", bench_net.time_tcp5_uringlets, bench_net.BATCH),
        ("tcp5-plain", bench_net.time_tcp5_plain, bench_net.BATCH),
        (
            "tcp5-asyncio",
            functools.partial(bench_net.time_tcp5_loop, kind="asyncio", api="sock"),
            bench_net.BATCH,
        ),
        ("tcp5-c-liburing", bench_net.time_tcp5_c, bench_net.BATCH),
    ],
}


# peers measured in another group: file1's plain peer is the plain loop of
# file3 (one file at a time is what the plain loop does anyway)
ALSO: dict[str, list[str]] = {"file1": ["file3-plain"]}


def calibrate(timer: Timer, seconds: float) -> int:
    loops = 1
    while True:
        if timer(loops) >= seconds / 2 or loops >= 1 << 20:
            return max(1, int(loops * seconds / max(timer(loops), 1e-9)))
        loops *= 4


def measure(seconds: float, repeats: int) -> dict[str, object]:
    values: dict[str, float] = {}
    for group in GROUPS.values():
        loops = {name: calibrate(timer, seconds) for name, timer, _ in group}
        samples: dict[str, list[float]] = {name: [] for name, _, _ in group}
        for _ in range(repeats):
            for name, timer, units in group:
                samples[name].append(timer(loops[name]) / (loops[name] * units))
        values.update({name: statistics.median(s) for name, s in samples.items()})
        print("  ".join(f"{n} {values[n] * 1e6:.2f} us" for n in samples), file=sys.stderr)
    return {"kernel": platform.release(), "values": values}


def report(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    head = ["benchmark", *(f"`{r['kernel']}`: time, ratio" for r in runs)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(runs)]
    for label, group in GROUPS.items():
        ours = group[0][0]
        for name in [n for n, _, _ in group] + ALSO.get(label, []):
            cells = []
            for r in runs:
                v = r["values"]
                ratio = "" if name == ours else f", {v[name] / v[ours]:.2f}x"
                cells.append(f"{v[name] * 1e6:.2f} us{ratio}")
            lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--report", type=Path, nargs="+")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return 0
    if args.output is None:
        parser.error("-o OUT.json or --report")
    result = measure(args.seconds, args.repeats)
    args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
