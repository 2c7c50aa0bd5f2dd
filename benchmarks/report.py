"""Write benchmarks/RESULTS.md from pyperf JSON files.

    python benchmarks/report.py benchmarks/results/core.json [more.json ...] [-o PATH]

Benchmarks are named ``<workload>-<implementation>`` (``file3-plain``); each
value is the time of one execution (or one file).  A benchmark found in
several files is taken from the last one.  The machine section describes the
machine this script runs on (run it where the benchmarks ran; run.sh does).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import pyperf

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
SUBJECT = "uringlets"

WORKLOADS = {
    "nop4": (
        "nop4: four linked no-ops per execution",
        "One execution = one program of 4 `nop` atoms; batches of 64 executions "
        "(`submit_many(nop4, 64)` + `wait(64)`, every completion checked `ok`). "
        "This is the per-execution overhead of the engine: nothing else happens.",
        "executions/s",
    ),
    "file3": (
        "file3: openat -> read 4 KiB -> close, per file",
        "2,000 warm (page-cache) files of 4 KiB, one pass per loop. uringlets: batches of "
        "64 executions with one `path` parameter each, every completion checked `ok` and "
        "4096 bytes read. C: the same batches of 64 linked-SQE chains "
        "(openat_direct, read, close_direct).",
        "files/s",
    ),
    "tcp5": (
        "tcp5: socket -> connect -> send 64 B -> recv 64 B -> close, per connection",
        "One request = one short loopback TCP connection to `benchmarks/c/echo_server -c 64` "
        "(one-thread epoll echo server in its own process, which closes each connection "
        "after echoing 64 B, so the TIME_WAIT sockets are on its port, not on the "
        "client's ephemeral ports); 64 requests in flight, every reply compared with "
        "what was sent. uringlets: `submit_many(tcp5, 64)` + `wait(64)`. C: 64 linked "
        "SQE chains SOCKET(direct) -> CONNECT -> SEND -> RECV (MSG_WAITALL) -> "
        "CLOSE(direct) per `submit_and_wait`. asyncio/uvloop: 64 tasks, each doing "
        "its requests in turn. Threads: `pool.map` over 64 blocking requests.",
        "requests/s",
    ),
    "rr": (
        "rr: send 64 B -> recv 64 B on an open connection",
        "One request = one request-response on one of 64 loopback TCP connections "
        "(TCP_NODELAY) to `benchmarks/c/echo_server`, made before timing; one "
        "request per connection per loop, 64 in flight, every reply compared with what "
        'was sent. uringlets: one program with `Param("fd")`, '
        "`submit_many(rr, params=[64 fds])` + `wait(64)`. asyncio/uvloop: a task per "
        "connection doing its requests in turn. Plain: the 64 sockets in turn.",
        "requests/s",
    ),
}
PEERS = {
    "uringlets": "uringlets (io_uring engine)",
    "c-liburing": "C liburing (`benchmarks/c/uring_ref`)",
    "plain": "plain Python (os.open/os.read/os.close)",
    "threadpool": "ThreadPoolExecutor (open/read/close)",
    "threads": "ThreadPoolExecutor (blocking sockets)",
    "asyncio": "asyncio",
    "uvloop": "uvloop",
}
# Labels that depend on the workload too.
WORKLOAD_PEERS = {
    ("tcp5", "plain"): "plain Python (blocking sockets, one request at a time)",
    ("rr", "plain"): "plain Python (blocking sockets, one request at a time)",
}
# (workload, peer, uringlets rate / peer rate must be at least)
TARGETS = [
    ("nop4", "c-liburing", 0.5),
    ("file3", "c-liburing", 0.8),
    ("file3", "plain", 1.25),
    ("tcp5", "asyncio", 3.0),
    ("tcp5", "uvloop", 1.5),
    ("tcp5", "c-liburing", 0.6),
    ("rr", "uvloop", 1.5),
]


# -- loading ----------------------------------------------------------------------------
def load(paths: list[Path]) -> dict[str, pyperf.Benchmark]:
    benches: dict[str, pyperf.Benchmark] = {}
    for path in paths:
        for bench in pyperf.BenchmarkSuite.load(str(path)):
            benches[bench.get_name()] = bench
    return benches


def split_name(name: str) -> tuple[str, str]:
    workload, _, impl = name.partition("-")
    return workload, impl


def run_values(bench: pyperf.Benchmark, key: str) -> list[str]:
    """The distinct values of a metadata key over the runs, in first-seen order."""
    seen: dict[str, None] = {}
    for run in bench.get_runs():
        value = run.get_metadata().get(key)
        if value is not None:
            seen[str(value)] = None
    return list(seen)


# -- machine ----------------------------------------------------------------------------
def cpu_info() -> tuple[str, int]:
    model, count = "unknown", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "processor":
                    count += 1
                elif key == "model name" and model == "unknown":
                    model = value.strip()
    except OSError:
        pass
    return model, count or (os.cpu_count() or 0)


def command_output(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


# -- formatting -------------------------------------------------------------------------
def sig3(x: float) -> str:
    """A rate with three significant figures and thousands separators."""
    if x <= 0:
        return "0"
    digits = len(str(int(x)))
    return f"{round(x, 3 - digits):,.0f}" if digits >= 3 else f"{x:.3g}"


def fmt_time(mean: float, std: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        if mean * scale >= 1.0 or unit == "ns":
            break
    m, s = mean * scale, std * scale
    decimals = 0 if m >= 100 else 1 if m >= 10 else 2 if m >= 1 else 3
    return f"{m:.{decimals}f} ± {s:.{decimals}f} {unit}"


def stdev(bench: pyperf.Benchmark) -> float:
    return bench.stdev() if bench.get_nvalue() > 1 else 0.0


def python_text(meta: dict) -> str:
    impl = meta.get("python_implementation", platform.python_implementation().lower())
    version = meta.get("python_version", platform.python_version())
    return f"{'CPython' if impl == 'cpython' else impl} {version}"


def ratio_text(ul: pyperf.Benchmark, peer: pyperf.Benchmark) -> str:
    """uringlets rate / peer rate, with the range the std devs allow."""
    ratio, low, high = ratio_range(ul, peer)
    return f"{ratio:.2f}x ({low:.2f}-{high:.2f})"


def ratio_range(ul: pyperf.Benchmark, peer: pyperf.Benchmark) -> tuple[float, float, float]:
    mu, su = ul.mean(), stdev(ul)
    mp, sp = peer.mean(), stdev(peer)
    low = max(mp - sp, 0.0) / (mu + su)
    high = (mp + sp) / (mu - su) if mu > su else float("inf")
    return mp / mu, low, high


# -- report -----------------------------------------------------------------------------
def render(benches: dict[str, pyperf.Benchmark], sources: list[Path]) -> str:
    out: list[str] = []
    add = out.append
    add("# uringlets benchmark results")
    add("")
    add(
        "Generated by `benchmarks/report.py` from "
        + ", ".join(f"`{display_path(p)}`" for p in sources)
        + "; do not edit by hand. Re-run with `benchmarks/run.sh` (add `--fast` for a quick look)."
    )
    add("")
    add(
        "Every figure is the time of **one execution** (one file for file3, one request "
        "for tcp5 and rr); rate = 1/time. "
        f"Ratios are the {SUBJECT} rate over the peer's (above 1 = {SUBJECT} faster); the "
        "range in brackets is what the ±1 std dev of both allows."
    )
    add("")

    # machine and run
    model, ncpu = cpu_info()
    any_bench = next(iter(benches.values()))
    meta = any_bench.get_metadata()
    add("## Machine and run")
    add("")
    rows = [
        ("CPU", f"{model} ({ncpu} logical CPUs, `os.cpu_count()` = {os.cpu_count()})"),
        ("Kernel", f"{platform.release()} ({platform.machine()})"),
        ("Python", python_text(meta)),
        ("pyperf", meta.get("perf_version", pyperf.__version__)),
    ]
    liburing = command_output(["dpkg-query", "-W", "-f", "${Version}", "liburing-dev"])
    if liburing:
        rows.append(("liburing-dev", liburing))
    commits = sorted({c for b in benches.values() for c in run_values(b, "uringlets_commit")})
    if commits:
        rows.append(
            (
                "uringlets commit",
                ", ".join(f"`{c}`" for c in commits)
                + " (`+dirty`: uncommitted changes under uringlets/ at run time)",
            )
        )
    dates = [d for b in benches.values() if (d := b.get_dates())]
    if dates:
        start = min(d[0] for d in dates).strftime("%Y-%m-%d %H:%M")
        end = max(d[1] for d in dates).strftime("%H:%M")
        rows.append(("Benchmarks run", f"{start}-{end} (local time)"))
    rows.append(("Report generated", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")))
    hosts = sorted({h for b in benches.values() for h in run_values(b, "hostname")})
    if hosts and hosts != [platform.node()]:
        rows.append(
            (
                "Note",
                f"the benchmarks ran on {', '.join(hosts)}, this report was "
                f"generated on {platform.node()}",
            )
        )
    for extra in ("bench_files", "batch", "net"):
        values = {
            str(value): None
            for b in benches.values()
            if (value := b.get_metadata().get(extra)) is not None
        }
        if values:
            rows.append((extra.replace("_", " "), "; ".join(values)))
    add("| | |")
    add("|---|---|")
    for key, value in rows:
        add(f"| {key} | {value} |")
    add("")

    # one table per workload
    workloads: dict[str, dict[str, pyperf.Benchmark]] = {}
    for name, bench in benches.items():
        workload, impl = split_name(name)
        workloads.setdefault(workload, {})[impl] = bench
    order = [w for w in WORKLOADS if w in workloads] + sorted(set(workloads) - set(WORKLOADS))
    for workload in order:
        impls = workloads[workload]
        title, text, rate_unit = WORKLOADS.get(workload, (workload, "", "executions/s"))
        add(f"## {title}")
        add("")
        if text:
            add(text)
            add("")
        ul = impls.get(SUBJECT)
        add(
            f"| implementation | rate ({rate_unit}) | time per {rate_unit.split('/')[0][:-1]} "
            f"(mean ± std) | {SUBJECT} vs this | runs x values |"
        )
        add("|---|---:|---:|---:|---:|")
        impl_order = [SUBJECT, *sorted(set(impls) - {SUBJECT})]
        for impl in (i for i in impl_order if i in impls):
            bench = impls[impl]
            label = WORKLOAD_PEERS.get((workload, impl)) or PEERS.get(impl, impl)
            workers = run_values(bench, "threadpool_workers")
            if workers:
                label += f", max_workers={'/'.join(workers)}"
            apis = run_values(bench, "loop_api")
            if apis:
                label += f" ({'/'.join(apis)})"
            vs = "—" if impl == SUBJECT or ul is None else ratio_text(ul, bench)
            nrun = sum(1 for r in bench.get_runs() if r.values)
            nvalue = bench.get_nvalue()
            add(
                f"| {label} | {sig3(1 / bench.mean())} | {fmt_time(bench.mean(), stdev(bench))} "
                f"| {vs} | {nrun} x {nvalue // max(nrun, 1)} |"
            )
        add("")

    # targets
    add("## Targets")
    add("")
    add(f"| workload | target ({SUBJECT} rate / peer rate) | measured | met? |")
    add("|---|---|---:|---|")
    for workload, peer, target in TARGETS:
        impls = workloads.get(workload, {})
        goal = f">= {target:g}x {PEERS.get(peer, peer).split(' (')[0]}"
        if SUBJECT not in impls or peer not in impls:
            add(f"| {workload} | {goal} | not measured | — |")
            continue
        ratio, low, high = ratio_range(impls[SUBJECT], impls[peer])
        if low >= target:
            verdict = "**yes**"
        elif high < target:
            verdict = "**no**"
        else:
            verdict = ("yes" if ratio >= target else "no") + " (within noise)"
        add(f"| {workload} | {goal} | {ratio:.2f}x ({low:.2f}-{high:.2f}) | {verdict} |")
    add("")
    add(
        "*Met* uses the ratio of the means; *within noise* means the ±1 std dev range "
        "straddles the target. uringlets is under active development: these numbers "
        "describe the commit above only."
    )
    add("")
    return "\n".join(out)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="pyperf JSON files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"Markdown file to write (default: {display_path(DEFAULT_OUTPUT)})",
    )
    args = parser.parse_args()
    benches = load(args.files)
    if not benches:
        sys.exit("no benchmarks in " + ", ".join(map(str, args.files)))
    args.output.write_text(render(benches, args.files))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
