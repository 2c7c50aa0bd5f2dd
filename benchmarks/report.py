"""Write benchmarks/RESULTS.md, the plots and benchmarks/README-section.md from the results.

    python benchmarks/report.py benchmarks/results/core.json [more.json ...]
        [--syscalls results/syscalls.json] [--profile results/profile.json]
        [--run results/run.json] [-o PATH] [--readme PATH] [--plots DIR]

The pyperf files hold benchmarks named ``<workload>-<implementation>``
(``file3-plain``; the workload names ``rr-per-event`` and ``file3-refill``
have a dash of their own) and the sweeps' ``nop4.b16-uringlets`` (batch size 16),
``file3.b16-c-liburing`` and ``nop.n8-uringlets`` (chain of 8 atoms); each
value is the time of one execution (one file, one request).  A benchmark found
in several files is taken from the last one.  Some workloads take a peer
measured under another workload's name (``BORROWED``: file1's and
file3-refill's plain peer is ``file3-plain``), when that name has no
measurement of its own.  ``syscalls.json`` (syscalls.py),
``profile.json`` (profiles.py) and ``run.json`` (run.sh: mode, durations,
skipped parts) are read when given or found beside the first file.  The
machine section describes the machine this script runs on (run it where the
benchmarks ran; run.sh does).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pyperf
import sections

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
DEFAULT_README = HERE / "README-section.md"
DEFAULT_PLOTS = HERE / "plots"
SUBJECT = "uringlets"
PYLIBURING_PIN = "2024.5.3"

WORKLOADS = {
    "nop4": (
        "nop4: four linked no-ops per execution",
        "One execution = one program of 4 `nop` atoms; batches of 64 executions "
        "(`submit_many(nop4, 64)` + `wait(64)`, every completion checked `ok`). "
        "This is the per-execution overhead of the engine: nothing else happens. "
        "python-liburing and C: 64 chains of 4 linked NOP SQEs (`IO_LINK | CQE_SKIP_SUCCESS` "
        "on all but the tail) per `submit_and_wait`, every CQE checked.",
        "executions/s",
    ),
    "nop1": (
        "nop1: one `run()` of a 1-nop program at a time",
        "One execution = one program of a single `nop` atom, run with `eng.run(prog)`: "
        "submit, wait for that one completion, check it `ok`, then the next. This is the "
        "fixed cost of one call, what an application pays for every blocking use. C and "
        "python-liburing: one NOP SQE per `io_uring_submit_and_wait(1)`, its CQE checked.",
        "executions/s",
    ),
    "file3": (
        "file3: openat -> read 4 KiB -> close, per file (warm page cache)",
        "2,000 warm (page-cache) files of 4 KiB, one pass per loop. uringlets: batches of "
        "64 executions with one `path` parameter each, every completion checked `ok` and "
        "4096 bytes read. C and python-liburing: the same batches of 64 linked-SQE chains "
        "(openat_direct, read, close_direct). asyncio/uvloop: per batch of 64 files, "
        "`asyncio.gather` of `loop.run_in_executor(None, open/read/close)`, the loop's default "
        "executor. The uringlets thread engine and the hand-written ThreadPoolExecutor loop "
        "it is compared with are in their own section below.",
        "files/s",
    ),
    "file1": (
        "file1: one `run()` of openat -> read 4 KiB -> close at a time (warm page cache)",
        "The file3 program over the same 2,000 warm files, one `eng.run(prog, path=p)` "
        "per file (every completion checked `ok` and 4096 bytes read) before the next. "
        "C: the same linked chain (openat_direct, read, close_direct), one per "
        "`io_uring_submit_and_wait` (`uring_ref file1`). Plain: the `file3-plain` "
        "measurement (os.open/os.read/os.close of each file in turn, which is already "
        "one at a time). One warm file at a time is where io_uring gains nothing: this "
        "bounds the engine's per-call overhead.",
        "files/s",
    ),
    "file3-refill": (
        "file3-refill: openat -> read 4 KiB -> close, 64 in flight, refilled as they complete",
        "The file3 program over the 2,000 warm files with 64 executions in flight: 64 "
        "`eng.submit(prog, path=p)`, then for each completion `wait(1)` returns, check it "
        "(`ok`, 4096 bytes) and `submit` the next file at once; the loop counts what it "
        "has in flight and never exceeds 64 (variant: the completions of one `wait(1)` "
        "replaced by one `submit_many`). C (`uring_ref file3refill`): the same, each "
        "CQE's direct-descriptor slot requeued with the next file's chain, one "
        "`io_uring_submit_and_wait(1)` per round of completions. Plain: the `file3-plain` "
        "measurement.",
        "files/s",
    ),
    "file3cold": (
        "file3 cold: the same, page cache dropped before each pass",
        "As file3, but before each timed pass over the 2,000 files (outside the timed part) "
        "`sync; echo 3 > /proc/sys/vm/drop_caches` drops the page cache, dentries and inodes, "
        "so every open and read goes to the disk.",
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
        'was sent. uringlets: one program with `Param("fd")`; each connection does its '
        "requests in turn, like the event-loop tasks: `submit_many` over the 64 fds, then "
        "whenever `wait(1)` returns completions, one `submit_many` for those connections "
        "again (batch-synchronous variant: `submit_many(params=[64 fds])` + `wait(64)` per "
        "loop, so every connection waits for the slowest of its batch). asyncio/uvloop: a "
        "task per connection doing its requests in turn. Plain: the 64 sockets in turn. "
        "C: its own 64 connections (made the same way), a linked SEND -> RECV "
        "(MSG_WAITALL) per request on the plain fd, each connection's next request "
        "queued as soon as its last completes and submitted with the next "
        "`submit_and_wait(1)`.",
        "requests/s",
    ),
    "rr-per-event": (
        "rr-per-event: rr with one `submit()` per connection as each completion arrives",
        "The rr workload (64 open connections to the echo server, send 64 B -> recv 64 B, "
        "every reply compared) written the way an event-driven program is: one "
        "`eng.submit(rr, tag=conn, fd=...)` per connection, then for every completion "
        "`wait(1)` returns, one `submit` of that connection's next request (at most 64 in "
        "flight, one per connection). Its peers are the rr measurements of the same run: "
        "asyncio and uvloop with a task per connection (`rr-asyncio`, `rr-uvloop`) and C "
        "liburing (`rr-c-liburing`, which already queues each connection's next request "
        "as its CQE comes).",
        "requests/s",
    ),
}
# Peers a workload takes from another workload's measurement (the same code
# measured once), unless the run has them under the workload's own name.
BORROWED = {
    "file1": {"plain": "file3-plain"},
    "file3-refill": {"plain": "file3-plain"},
    "rr-per-event": {
        "c-liburing": "rr-c-liburing",
        "asyncio": "rr-asyncio",
        "uvloop": "rr-uvloop",
    },
}
# Workload names with a dash in them (the rest end at the first dash).
DASHED = sorted((w for w in WORKLOADS if "-" in w), key=len, reverse=True)
PEERS = {
    "uringlets": "uringlets (io_uring engine)",
    "uringlets-sq4096": "uringlets, `sq_entries=4096`",
    "uringlets-batch": "uringlets, batch-synchronous (`submit_many(64)` + `wait(64)`)",
    "uringlets-many": "uringlets, refilled with one `submit_many` per `wait(1)`",
    "c-liburing": "C liburing (`benchmarks/c/uring_ref`)",
    "pyliburing": f"python-liburing {PYLIBURING_PIN} (PyPI `liburing`)",
    "plain": "plain Python (os.open/os.read/os.close)",
    "threadpool": "ThreadPoolExecutor (open/read/close)",
    "threads": "ThreadPoolExecutor (blocking sockets)",
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "uringlets-threads": 'uringlets thread engine (`Engine("threads", workers=2)`)',
    "threadpool-batched": "ThreadPoolExecutor(2), hand-written batches of 64",
}
# Labels that depend on the workload too.
WORKLOAD_PEERS = {
    ("tcp5", "plain"): "plain Python (blocking sockets, one request at a time)",
    ("rr", "plain"): "plain Python (blocking sockets, one request at a time)",
    ("file1", "plain"): "plain Python (os.open/os.read/os.close, one file at a time)",
    ("file3-refill", "plain"): "plain Python (os.open/os.read/os.close, one file at a time)",
    ("file3", "asyncio"): "asyncio (run_in_executor)",
    ("file3", "uvloop"): "uvloop (run_in_executor)",
}
# The thread engine comparison has its own section, not the file3 table.
THREAD_PAIR = ("uringlets-threads", "threadpool-batched")
# Headline columns: (column title, peer implementations that fill it).
HEADLINE = [
    ("C liburing", ("c-liburing",)),
    ("python-liburing", ("pyliburing",)),
    ("plain Python", ("plain",)),
    ("ThreadPoolExecutor", ("threadpool", "threads")),
    ("asyncio", ("asyncio",)),
    ("uvloop", ("uvloop",)),
]
# (workload, subject, peer, kind, bound): kind "rate" = subject rate / peer
# rate must be at least bound; "time" = subject time / peer time at most bound.
TARGETS = [
    ("nop4", "uringlets", "c-liburing", "rate", 0.5),
    ("file3", "uringlets", "c-liburing", "rate", 0.8),
    ("file3", "uringlets", "plain", "rate", 1.25),
    ("tcp5", "uringlets", "asyncio", "rate", 3.0),
    ("tcp5", "uringlets", "uvloop", "rate", 1.5),
    ("tcp5", "uringlets", "c-liburing", "rate", 0.6),
    ("rr", "uringlets", "uvloop", "rate", 1.5),
    # the application shapes (issue 10)
    ("nop1", "uringlets", "c-liburing", "rate", 0.2),
    ("file1", "uringlets", "plain", "rate", 0.7),
    ("rr-per-event", "uringlets", "uvloop", "rate", 1.2),
    ("file3-refill", "uringlets", "c-liburing", "rate", 0.7),
    ("file3-refill", "uringlets", "plain", "rate", 1.1),
    ("file3", "uringlets-threads", "threadpool-batched", "time", 1.2),
]
ENTER_TARGET = 0.05  # io_uring_enter per execution at batch 64, at most
PROFILE_OF = {  # workload of a target -> the profiles that explain it
    ("nop4", "uringlets"): ["nop4-uringlets", "nop4-c-liburing"],
    ("file3", "uringlets"): ["file3-uringlets", "file3-c-liburing", "file3-plain"],
    ("tcp5", "uringlets"): ["tcp5-uringlets", "tcp5-c-liburing", "tcp5-uvloop"],
    ("rr", "uringlets"): ["rr-uringlets", "rr-uvloop"],
    ("file3", "uringlets-threads"): ["file3-uringlets-threads", "file3-threadpool-batched"],
}
SWEEP = re.compile(r"^(?P<workload>nop4|file3)\.b(?P<batch>\d+)-(?P<impl>.+)$")
CHAIN = re.compile(r"^nop\.n(?P<chain>\d+)-(?P<impl>.+)$")


# -- loading ----------------------------------------------------------------------------
def load(paths: list[Path]) -> dict[str, pyperf.Benchmark]:
    benches: dict[str, pyperf.Benchmark] = {}
    for path in paths:
        for bench in pyperf.BenchmarkSuite.load(str(path)):
            benches[bench.get_name()] = bench
    return benches


def load_json(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def split_name(name: str) -> tuple[str, str]:
    for workload in DASHED:
        if name.startswith(workload + "-"):
            return workload, name[len(workload) + 1 :]
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
def cpu_info() -> tuple[str, int, set[str]]:
    model, count, flags = "unknown", 0, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "processor":
                    count += 1
                elif key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, count or (os.cpu_count() or 0), flags


def command_output(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def pip_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


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


def ratio_range(ul: pyperf.Benchmark, peer: pyperf.Benchmark) -> tuple[float, float, float]:
    """subject rate / peer rate (= peer time / subject time), and the range the
    ±1 std devs of both allow."""
    mu, su = ul.mean(), stdev(ul)
    mp, sp = peer.mean(), stdev(peer)
    low = max(mp - sp, 0.0) / (mu + su)
    high = (mp + sp) / (mu - su) if mu > su else float("inf")
    return mp / mu, low, high


def ratio_text(ul: pyperf.Benchmark, peer: pyperf.Benchmark) -> str:
    ratio, low, high = ratio_range(ul, peer)
    return f"{ratio:.2f}x ({low:.2f}-{high:.2f})"


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def md_link(target: Path, base: Path) -> str:
    """``target`` relative to the directory of the Markdown file ``base``."""
    return os.path.relpath(target.resolve(), base.resolve().parent)


def peer_label(workload: str, impl: str, bench: pyperf.Benchmark | None = None) -> str:
    base = workload.replace("cold", "")
    label = WORKLOAD_PEERS.get((base, impl)) or PEERS.get(impl, impl)
    if bench is not None:
        workers = run_values(bench, "threadpool_workers")
        if workers:
            label += f", max_workers={'/'.join(workers)}"
        apis = run_values(bench, "loop_api")
        if apis:
            label += f" ({'/'.join(apis)})"
    return label


def short_peer(impl: str) -> str:
    return PEERS.get(impl, impl).split(" (")[0]


# -- the pieces of the report -----------------------------------------------------------
class Data:
    def __init__(
        self,
        benches: dict[str, pyperf.Benchmark],
        sources: list[Path],
        syscalls: dict | None,
        profile: dict | None,
        run: dict | None,
    ) -> None:
        self.sources, self.syscalls, self.profile, self.run = sources, syscalls, profile, run or {}
        self.main: dict[str, dict[str, pyperf.Benchmark]] = {}
        self.borrowed: dict[tuple[str, str], str] = {}  # (workload, impl) -> measured as
        self.batch: dict[str, dict[str, dict[int, pyperf.Benchmark]]] = {}
        self.chain: dict[str, dict[int, pyperf.Benchmark]] = {}
        self.all = benches
        for name, bench in benches.items():
            if m := SWEEP.match(name):
                by_impl = self.batch.setdefault(m["workload"], {}).setdefault(m["impl"], {})
                by_impl[int(m["batch"])] = bench
            elif m := CHAIN.match(name):
                self.chain.setdefault(m["impl"], {})[int(m["chain"])] = bench
            else:
                workload, impl = split_name(name)
                self.main.setdefault(workload, {})[impl] = bench
        for workload, peers in BORROWED.items():
            impls = self.main.get(workload)
            if not impls:  # nothing of the workload itself in this run
                continue
            for impl, source in peers.items():
                if impl not in impls and source in benches:
                    impls[impl] = benches[source]
                    self.borrowed[(workload, impl)] = source

    def get(self, workload: str, impl: str) -> pyperf.Benchmark | None:
        return self.main.get(workload, {}).get(impl)


def section_machine(d: Data, add) -> None:
    model, ncpu, flags = cpu_info()
    any_bench = next(iter(d.all.values()))
    meta = any_bench.get_metadata()
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    add("## Machine and run")
    add("")
    rows = [
        (
            "CPU",
            f"{model}: **{ncpu} logical CPUs** (`os.cpu_count()` = {os.cpu_count()}); "
            + (
                f"AVX-512: {', '.join(avx512)}"
                if avx512
                else "no AVX-512 (`/proc/cpuinfo` flags: "
                + ", ".join(sorted(f for f in flags if f.startswith("avx")) or ["no avx"])
                + ")"
            ),
        ),
        ("Kernel", f"{platform.release()} ({platform.machine()})"),
        ("Python", python_text(meta)),
        ("pyperf", meta.get("perf_version", pyperf.__version__)),
    ]
    liburing = command_output(["dpkg-query", "-W", "-f", "${Version}", "liburing-dev"])
    if liburing:
        rows.append(("liburing-dev (C reference)", liburing))
    for package in ("uvloop", "liburing"):
        if version := pip_version(package):
            label = "python-liburing (PyPI `liburing`)" if package == "liburing" else package
            rows.append((label, version))
    commits = sorted({c for b in d.all.values() for c in run_values(b, "uringlets_commit")})
    if commits:
        rows.append(
            (
                "uringlets commit",
                ", ".join(f"`{c}`" for c in commits)
                + (
                    " (`+dirty`: uncommitted changes under uringlets/ at run time)"
                    if any(c.endswith("+dirty") for c in commits)
                    else ""
                ),
            )
        )
    dates = [dt for b in d.all.values() if (dt := b.get_dates())]
    if dates:
        start = min(x[0] for x in dates).strftime("%Y-%m-%d %H:%M")
        end = max(x[1] for x in dates).strftime("%H:%M")
        rows.append(("Benchmarks run", f"{start}-{end} (local time)"))
    if d.run:
        mode = d.run.get("mode", "?")
        text = f"`benchmarks/run.sh{' --fast' if mode == 'fast' else ''}`: {mode} mode"
        if "seconds" in d.run:
            text += f", {d.run['seconds']} s in all"
        steps = d.run.get("steps") or {}
        if steps:
            text += " (" + ", ".join(f"{k} {v} s" for k, v in steps.items()) + ")"
        rows.append(("Last `run.sh` (the steps it ran)", text))
        rows.append(
            (
                "Other load at start",
                d.run.get("busy") or "none: no pytest process running (`pgrep -f pytest`)",
            )
        )
    loads = [
        float(v) for b in d.all.values() for v in run_values(b, "load_avg_1min") if v != "None"
    ]
    if loads:
        rows.append(
            (
                "Load average (1 min) seen by the pyperf workers",
                f"{min(loads):.2f}-{max(loads):.2f} (2 CPUs: about 1 is this suite itself)",
            )
        )
    rows.append(("Report generated", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")))
    hosts = sorted({h for b in d.all.values() for h in run_values(b, "hostname")})
    if hosts and hosts != [platform.node()]:
        rows.append(
            (
                "Note",
                f"the benchmarks ran on {', '.join(hosts)}, this report was "
                f"generated on {platform.node()}",
            )
        )
    main = [b for w in d.main.values() for b in w.values()]
    for extra in ("bench_files", "batch", "net", "cold"):
        values = {
            str(value): None for b in main if (value := b.get_metadata().get(extra)) is not None
        }
        if values:
            rows.append((extra.replace("_", " "), "; ".join(values)))
    add("| | |")
    add("|---|---|")
    for key, value in rows:
        add(f"| {key} | {value} |")
    add("")
    add(
        f"The machine has **{ncpu} cores**: the peers that use threads (thread pools, the "
        "asyncio/uvloop default executors, the uringlets thread engine) and the echo "
        "server compete with the benchmark's own thread for them, and io_uring runs "
        "most of its work inline in the submitting thread (`DEFER_TASKRUN`), so the "
        "figures are for this small machine."
    )
    add("")


HEADLINE_ORDER = (
    "nop4",
    "file3",
    "file3cold",
    "tcp5",
    "rr",
    "nop1",
    "file1",
    "file3-refill",
    "rr-per-event",
)
HEADLINE_LABEL = {
    "file3cold": "file3 (cold cache)",
    "file3": "file3 (warm)",
    "nop1": "nop1 (one `run()` at a time)",
    "file1": "file1 (one `run()` at a time)",
    "file3-refill": "file3-refill (64 in flight, refilled)",
    "rr-per-event": "rr-per-event (one `submit()` per completion)",
}


def headline_rows(d: Data) -> list[tuple[str, str, list[str]]]:
    """(workload label, uringlets rate, ratio per HEADLINE column)."""
    rows = []
    for workload in HEADLINE_ORDER:
        impls = d.main.get(workload, {})
        ul = impls.get(SUBJECT)
        if ul is None:
            continue
        unit = WORKLOADS[workload][2]
        cells = []
        for _, peers in HEADLINE:
            peer = next((impls[p] for p in peers if p in impls), None)
            cells.append(f"{ratio_range(ul, peer)[0]:.2f}x" if peer else "—")
        label = HEADLINE_LABEL.get(workload, workload)
        rows.append((label, f"{sig3(1 / ul.mean())} {unit}", cells))
    ult, tpe = d.get("file3", THREAD_PAIR[0]), d.get("file3", THREAD_PAIR[1])
    if ult is not None:
        cells = ["—"] * len(HEADLINE)
        if tpe is not None:
            cells[3] = f"{ratio_range(ult, tpe)[0]:.2f}x"
        rows.append(("file3, thread engine", f"{sig3(1 / ult.mean())} files/s", cells))
    return rows


def headline_table(d: Data, add) -> None:
    add(
        "| workload | uringlets rate | " + " | ".join(f"vs {title}" for title, _ in HEADLINE) + " |"
    )
    add("|---|---:|" + "---:|" * len(HEADLINE))
    for label, rate, cells in headline_rows(d):
        add(f"| {label} | {rate} | " + " | ".join(cells) + " |")


def section_workloads(d: Data, add) -> None:
    order = [w for w in WORKLOADS if w in d.main] + sorted(set(d.main) - set(WORKLOADS))
    for workload in order:
        impls = {i: b for i, b in d.main[workload].items() if i not in THREAD_PAIR}
        if not impls:
            continue
        title, text, rate_unit = WORKLOADS.get(workload, (workload, "", "executions/s"))
        add(f"## {title}")
        add("")
        if text:
            add(text)
            add("")
        borrowed = {i: src for (w, i), src in d.borrowed.items() if w == workload}
        workload_table(workload, impls, rate_unit, add, borrowed=borrowed)
    ult, tpe = d.get("file3", THREAD_PAIR[0]), d.get("file3", THREAD_PAIR[1])
    if ult is not None or tpe is not None:
        add("## file3 on the uringlets thread engine")
        add("")
        add(
            'The file3 loop of the io_uring engine, run on `Engine("threads", workers=2)` '
            "(the cachemiss threads: blocking openat/read/close on 2 worker threads), against "
            "a hand-written loop doing the same work the way a Python programmer would: "
            "`ThreadPoolExecutor(max_workers=2)`, per batch of 64 files one `pool.submit` of "
            "an open/read/close function each, then every `result()` checked for 4096 bytes. "
            "Target: the engine's time per file at most 1.2x the pool's."
        )
        add("")
        pair = {i: b for i, b in (("uringlets-threads", ult), ("threadpool-batched", tpe)) if b}
        workload_table("file3", pair, "files/s", add, subject="uringlets-threads")


def workload_table(
    workload: str,
    impls: dict,
    rate_unit: str,
    add,
    subject: str = SUBJECT,
    borrowed: dict[str, str] | None = None,
) -> None:
    """One row per implementation; ``borrowed``: impl -> the benchmark name
    it was measured under (another workload's peer, the same code)."""
    borrowed = borrowed or {}
    ul = impls.get(subject)
    add(
        f"| implementation | rate ({rate_unit}) | time per {rate_unit.split('/')[0][:-1]} "
        f"(mean ± std) | {short_peer(subject)} vs this | runs x values |"
    )
    add("|---|---:|---:|---:|---:|")
    rank = {impl: k for k, impl in enumerate(PEERS)}
    others = sorted(set(impls) - {subject}, key=lambda i: (rank.get(i, 99), i))
    impl_order = [subject, *others] if subject in impls else others
    for impl in impl_order:
        bench = impls[impl]
        vs = "—" if impl == subject or ul is None else ratio_text(ul, bench)
        nrun = sum(1 for r in bench.get_runs() if r.values)
        nvalue = bench.get_nvalue()
        label = peer_label(workload, impl, bench)
        if impl in borrowed:
            label += f" — the `{borrowed[impl]}` measurement"
        add(
            f"| {label} | {sig3(1 / bench.mean())} | "
            f"{fmt_time(bench.mean(), stdev(bench))} | {vs} | {nrun} x {nvalue // max(nrun, 1)} |"
        )
    add("")


def section_sweeps(d: Data, add, plots: dict[str, Path], output: Path) -> None:
    if d.batch:
        add("## Batch-size sweep")
        add("")
        add(
            "Executions per `submit_many` (per C `submit_and_wait`), everything else as in "
            "nop4 and file3 (file3: a pass over the 2,000 warm files in batches of that size). "
            "The uringlets engine here has `sq_entries=4096`, so even 256 x 4 SQEs go to the "
            "kernel in one `io_uring_enter`, like the C reference, whose ring is sized to the "
            "batch. Rates; the ratio is uringlets over C."
        )
        add("")
        if "batch" in plots:
            add(f"![throughput against batch size]({md_link(plots['batch'], output)})")
            add("")
        for workload, impls in sorted(d.batch.items(), key=lambda kv: kv[0] != "nop4"):
            unit = "executions/s" if workload == "nop4" else "files/s"
            sizes = sorted({b for by in impls.values() for b in by})
            add(f"**{workload}** ({unit})")
            add("")
            add("| batch | uringlets | C liburing | uringlets / C |")
            add("|---:|---:|---:|---:|")
            for b in sizes:
                ul = impls.get(SUBJECT, {}).get(b)
                c = impls.get("c-liburing", {}).get(b)
                add(
                    f"| {b} | {sig3(1 / ul.mean()) if ul else '—'} | "
                    f"{sig3(1 / c.mean()) if c else '—'} | "
                    f"{ratio_text(ul, c) if ul and c else '—'} |"
                )
            add("")
    if d.chain:
        add("## Chain-length sweep")
        add("")
        add(
            "Programs of N linked `nop` atoms (64 is `MAX_ATOMS`), 64 executions per submit; "
            "C: `uring_ref nop LOOPS 64 N`, N linked NOP SQEs per chain. Executions per "
            "second, and atoms (system calls) per second = N x that."
        )
        add("")
        if "chain" in plots:
            add(f"![throughput against chain length]({md_link(plots['chain'], output)})")
            add("")
        lengths = sorted({n for by in d.chain.values() for n in by})
        add(
            "| atoms per program | uringlets executions/s | C executions/s | uringlets / C "
            "| uringlets atoms/s | C atoms/s |"
        )
        add("|---:|---:|---:|---:|---:|---:|")
        for n in lengths:
            ul, c = d.chain.get(SUBJECT, {}).get(n), d.chain.get("c-liburing", {}).get(n)
            add(
                f"| {n} | {sig3(1 / ul.mean()) if ul else '—'} | "
                f"{sig3(1 / c.mean()) if c else '—'} | "
                f"{ratio_text(ul, c) if ul and c else '—'} | "
                f"{sig3(n / ul.mean()) if ul else '—'} | {sig3(n / c.mean()) if c else '—'} |"
            )
        add("")


def make_plots(d: Data, outdir: Path) -> dict[str, Path]:
    """batch_sweep.png and chain_sweep.png; {} if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return {}
    outdir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    styles = {SUBJECT: ("uringlets", "o-"), "c-liburing": ("C liburing", "s--")}
    model, ncpu, _ = cpu_info()
    machine = f"{model}, {ncpu} CPUs, Linux {platform.release()}"

    def series(by: dict[int, pyperf.Benchmark], scale: float = 1.0):
        xs = sorted(by)
        ys = [scale * 1 / by[x].mean() for x in xs]
        # the rate range that ±1 std dev of the time allows
        lo = [y - scale / (by[x].mean() + stdev(by[x])) for x, y in zip(xs, ys, strict=True)]
        hi = [
            (scale / (by[x].mean() - stdev(by[x])) if by[x].mean() > stdev(by[x]) else y) - y
            for x, y in zip(xs, ys, strict=True)
        ]
        return xs, ys, [lo, hi]

    if d.batch:
        workloads = [w for w in ("nop4", "file3") if w in d.batch]
        fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5))
        axes = axes if len(workloads) > 1 else [axes]
        for ax, workload in zip(axes, workloads, strict=True):
            for impl, (label, style) in styles.items():
                if by := d.batch[workload].get(impl):
                    xs, ys, err = series(by)
                    ax.errorbar(xs, ys, yerr=err, fmt=style, label=label, capsize=3)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("executions per submit (batch size)")
            ax.set_ylabel("executions/s" if workload == "nop4" else "files/s")
            ax.set_title(
                "nop4: 4 linked no-ops" if workload == "nop4" else "file3: openat+read+close"
            )
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle(f"Throughput against batch size ({machine})", fontsize=10)
        fig.tight_layout()
        made["batch"] = outdir / "batch_sweep.png"
        fig.savefig(made["batch"], dpi=110)
        plt.close(fig)
    if d.chain:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for impl, (label, style) in styles.items():
            if by := d.chain.get(impl):
                xs, ys, err = series(by)
                axes[0].errorbar(xs, ys, yerr=err, fmt=style, label=label, capsize=3)
                atoms = [n * y for n, y in zip(xs, ys, strict=True)]
                axes[1].plot(xs, atoms, style, label=label)
        axes[0].set_ylabel("executions/s")
        axes[0].set_title("executions per second (64 per submit)")
        axes[1].set_ylabel("atoms (system calls) per second")
        axes[1].set_title("atoms per second = chain length x executions/s")
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("nop atoms per program (chain length)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle(f"Throughput against chain length ({machine})", fontsize=10)
        fig.tight_layout()
        made["chain"] = outdir / "chain_sweep.png"
        fig.savefig(made["chain"], dpi=110)
        plt.close(fig)
    return made


def enter_rows(sc: dict) -> dict[tuple[str, str, int], dict]:
    return {(r["workload"], r["impl"], r["batch"]): r for r in sc.get("rows", [])}


def section_syscalls(d: Data, add) -> None:
    sc = d.syscalls
    add("## System calls per execution")
    add("")
    if not sc:
        add("Not measured (run `benchmarks/syscalls.py`).")
        add("")
        return
    if sc.get("skipped"):
        add(f"Not measured: {sc['skipped']}.")
        add("")
        return
    add(
        f"Measured with `{sc['tool']}` ({sc.get('mode', '?')} mode, {sc.get('date', '')}): "
        "each row runs the benchmark's own loop in a child process twice, with N executions "
        "and with none (same setup), and divides the difference in calls by N, so process "
        "start and setup do not count. Every thread and child process of the client is "
        "counted; the echo servers are not. The uringlets rows at batch sizes other than "
        "64 use the sweep's engine (`sq_entries=4096`). strace slows each call, which can "
        "change how often threads block (futex) and how much one epoll_wait returns; the "
        "io_uring counts depend on timing only where a wait returns before a whole batch "
        "is done."
    )
    add("")
    add(
        "| workload | implementation | batch | N | io_uring_enter / execution "
        "| system calls / execution | most frequent (per execution) |"
    )
    add("|---|---|---:|---:|---:|---:|---|")
    order = {w: i for i, w in enumerate(("nop4", "file3", "tcp5", "rr"))}
    impl_order = {i: k for k, i in enumerate(PEERS)}
    rows = sorted(
        sc["rows"],
        key=lambda r: (
            order.get(r["workload"], 9),
            impl_order.get(r["impl"], 99),
            r["batch"],
        ),
    )
    for r in rows:
        top = ", ".join(f"{name} {v:.3g}" for name, v in r["top"]) or "—"
        add(
            f"| {r['workload']} | {short_peer(r['impl'])} | {r['batch']} | {r['executions']} | "
            f"{r['enter']:.4f} | {r['total']:.3f} | {top} |"
        )
    add("")
    if why := sc.get("pyliburing_skipped"):
        add(f"python-liburing rows missing: {why}.")
        add("")


def target_rows(d: Data) -> list[tuple[str, str, str, str, str | None]]:
    """(workload, target text, measured, verdict, key of the missed target or None)."""
    rows = []
    for workload, subject, peer, kind, bound in TARGETS:
        ul, other = d.get(workload, subject), d.get(workload, peer)
        who = short_peer(subject) if subject != SUBJECT else SUBJECT
        if kind == "rate":
            goal = f"{who} rate >= {bound:g}x {short_peer(peer)}"
        else:
            goal = f"{who} time per file <= {bound:g}x {short_peer(peer)}"
        label = workload if subject == SUBJECT else f"{workload} (thread engine)"
        if ul is None or other is None:
            rows.append((label, goal, "not measured", "—", None))
            continue
        ratio, low, high = ratio_range(ul, other)
        if kind == "time":  # subject time / peer time = 1 / (subject rate / peer rate)
            ratio, low, high = 1 / ratio, 1 / high, (1 / low if low > 0 else float("inf"))
            surely, surely_not, met = high <= bound, low > bound, ratio <= bound
        else:
            surely, surely_not, met = low >= bound, high < bound, ratio >= bound
        if surely:
            verdict = "**yes**"
        elif surely_not:
            verdict = "**no**"
        else:
            verdict = ("yes" if met else "no") + " (within noise)"
        measured = f"{ratio:.2f}x ({low:.2f}-{high:.2f})"
        missed = None if met else f"{workload}|{subject}|{goal}: {ratio:.2f}x"
        rows.append((label, goal, measured, verdict, missed))
    if d.syscalls and d.syscalls.get("rows"):
        by = enter_rows(d.syscalls)
        for workload in ("nop4", "file3", "tcp5", "rr"):
            # rr's main loop resubmits as completions come (batches of any
            # size); its batch-synchronous variant is the one at batch 64.
            r = by.get((workload, f"{SUBJECT}-batch" if workload == "rr" else SUBJECT, 64))
            if r is None:
                continue
            met = r["enter"] <= ENTER_TARGET
            rows.append(
                (
                    workload,
                    f"uringlets io_uring_enter per execution at batch 64 <= {ENTER_TARGET}",
                    f"{r['enter']:.4f} ({r['enter'] * 64:.2f} per batch of 64)",
                    "**yes**" if met else "**no**",
                    None if met else f"{workload}|{SUBJECT}|io_uring_enter: {r['enter']:.4f}",
                )
            )
    return rows


def section_targets(d: Data, add) -> list[str]:
    add("## Targets")
    add("")
    add("| workload | target | measured | met? |")
    add("|---|---|---:|---|")
    missed = []
    for label, goal, measured, verdict, key in target_rows(d):
        add(f"| {label} | {goal} | {measured} | {verdict} |")
        if key:
            missed.append(key)
    add("")
    add(
        "Rate targets compare means (the range in brackets is what ±1 std dev of both "
        "allows; *within noise*: that range straddles the target); the time target is the "
        "inverse ratio. io_uring_enter counts are from the syscall table above. uringlets "
        "is under active development: these numbers describe the commit above only."
    )
    add("")
    return missed


def dso_text(p: dict) -> str:
    groups: dict[str, float] = {}
    for dso, share in p.get("perf_dso", []):
        if dso == "[kernel.kallsyms]":
            key = "kernel"
        elif dso.startswith("libpython"):
            key = "interpreter (libpython)"
        elif dso.startswith(("_cffi_backend", "_ring")):
            key = "cffi + ring extension"
        elif dso.startswith("libc"):
            key = "libc"
        elif dso.startswith("uring_ref"):
            key = "uring_ref (user space)"
        else:
            key = dso
        groups[key] = groups.get(key, 0.0) + share
    return ", ".join(f"{k} {v:.0f}%" for k, v in sorted(groups.items(), key=lambda kv: -kv[1]))


def per_execution(d: Data, name: str, cpu: dict) -> str:
    """The benchmark's mean time split by the profile's CPU shares: user and
    system CPU per execution (all threads), and the rest of the wall time."""
    workload, impl = split_name(name)
    bench = d.get(workload, impl)
    if bench is None or not cpu or not cpu.get("wall"):
        return ""
    t = bench.mean() * 1e6
    user, system = t * cpu["user"] / cpu["wall"], t * cpu["sys"] / cpu["wall"]
    text = f"; of its {t:.2f} us per {'file' if workload.startswith('file') else 'execution'}"
    text += f" (benchmark mean): ~{user:.2f} us user CPU + ~{system:.2f} us kernel CPU"
    if user + system < t:
        text += f", ~{t - user - system:.2f} us neither (waiting)"
    return text


def section_profiles(d: Data, add, missed: list[str], output: Path) -> None:
    add("## Where the time goes (missed targets)")
    add("")
    prof = d.profile
    if not missed:
        add("Every target is met.")
        add("")
        return
    if not prof or not prof.get("profiles"):
        add("No profiles (run `benchmarks/profiles.py`).")
        add("")
        return
    by_name = {p["name"]: p for p in prof["profiles"]}
    tools = ", ".join(f"{v}" for v in prof.get("tools", {}).values() if v)
    add(
        f"Profiles by `benchmarks/profiles.py` ({tools}; {prof.get('date', '')}): the "
        "benchmark's own loop in a child process after its setup, "
        f"{prof.get('seconds', '?')} s per profiler. **CPU split**: `perf record -F 999` "
        "samples by DSO (kernel = `[kernel.kallsyms]`, interpreter = libpython, cffi + ring "
        "extension = the uringlets C layer), and the process's user/system CPU seconds over "
        "the perf window (`/proc/PID/stat`; 2 CPUs, so up to 2x the wall time). **py-spy** "
        "(`--native`): share of samples, over all threads, whose innermost named frame is "
        "that function (*self*; `syscall`/`sys_enter` and libc wrappers such as `read` = in "
        "the kernel, `pthread_cond_timedwait`/`PyThread_acquire_lock_timed` = waiting for "
        "the GIL or a lock, `select` = waiting for completions), and the uringlets functions "
        "with the largest inclusive shares. Flame graphs: the linked SVGs."
    )
    add("")
    shown: set[str] = set()
    groups: dict[tuple[str, str], list[str]] = {}
    for key in missed:
        workload, subject, what = key.split("|", 2)
        groups.setdefault((workload, subject), []).append(what)
    for (workload, subject), whats in groups.items():
        names = PROFILE_OF.get((workload, subject), [])
        title = f"{workload} ({'thread engine' if subject != SUBJECT else 'io_uring engine'})"
        add(f"### {title}")
        add("")
        add("Missed: " + "; ".join(whats) + ".")
        add("")
        r = enter_rows(d.syscalls or {}).get((workload, SUBJECT, 64))
        if r and subject == SUBJECT:
            text = (
                f"- System calls: {r['enter']:.4f} io_uring_enter per execution at batch "
                f"64 = {r['enter'] * 64:.2f} per batch of 64 (submits and waits together); "
                f"{r['total']:.3f} system calls per execution in all"
            )
            big = enter_rows(d.syscalls or {}).get((workload, "uringlets-sq4096", 64))
            if big:
                text += (
                    f"; with `sq_entries=4096` (the whole batch fits the SQ ring): "
                    f"{big['enter']:.4f} = {big['enter'] * 64:.2f} per batch"
                )
            add(text + ".")
        for name in names:
            p = by_name.get(name)
            if p is None:
                continue
            first = name not in shown
            shown.add(name)
            cpu = p.get("cpu", {})
            cpu_text = (
                f"user {cpu['user']} s + system {cpu['sys']} s of CPU in {cpu['wall']} s"
                if cpu
                else ""
            )
            add(f"- **{name}**: {dso_text(p)}; {cpu_text}{per_execution(d, name, cpu)}.")
            if not first:
                continue
            if spy := p.get("pyspy"):
                selfs = "; ".join(f"{n} {s}%" for n, s in spy["self"][:8])
                add(f"  - py-spy self ({spy['samples']} samples): {selfs}.")
                incl = [
                    (n, s)
                    for n, s in spy["inclusive"]
                    if "uringlets" in n or "bench_" in n or "pyliburing" in n
                ][:8]
                if incl:
                    add("  - inclusive: " + "; ".join(f"{n} {s}%" for n, s in incl) + ".")
            syms = [(s, v) for s, v in p.get("perf_sym", []) if v >= 1.0][:8]
            if syms:
                add("  - perf top symbols: " + "; ".join(f"`{s}` {v}%" for s, v in syms) + ".")
            if svg := p.get("svg"):
                add(f"  - flame graph: [{Path(svg).name}]({md_link(HERE / svg, output)})")
            if plan := p.get("plan"):
                add("  - the program's plan (`prog.explain()`):")
                add("")
                add("    ```")
                for line in plan.splitlines():
                    add(f"    {line}")
                add("    ```")
        add("")


def section_notes(d: Data, add) -> None:
    _, _, flags = cpu_info()
    add("## Notes on the peers")
    add("")
    version = pip_version("liburing")
    skipped = d.run.get("pyliburing_skipped") or next(
        (b.get_metadata().get("pyliburing_skipped") for b in d.all.values()), None
    )
    add(
        f"- **python-liburing** (PyPI `liburing`) is pinned at `liburing=={PYLIBURING_PIN}` "
        "and written the way its README shows: one `io_uring_get_sqe` + `io_uring_prep_*` "
        "call per SQE (with `io_uring_sqe_set_flags`/`io_uring_sqe_set_data64`), one "
        "`io_uring_submit_and_wait` per batch of 64 chains, `io_uring_wait_cqe` + "
        "`io_uring_cqe_seen` per CQE (`benchmarks/pyliburing_peer.py`); the chains and ring "
        "flags are the C reference's. "
        + (
            f"Installed here: {version}. "
            if version
            else "It is not installed here, so its rows are missing. "
        )
        + f"{PYLIBURING_PIN} has no wheel on PyPI: pip builds it from the sdist (Cython and "
        "the bundled C liburing 2.6). Built with the current Cython (3.3), its flag "
        "constants (`liburing.IOSQE_IO_LINK`, `IORING_SETUP_*`, ...) are missing from the "
        "package's top level, though its own tests use them there; the peer takes them from "
        "`liburing.queue.__queue_define__` and `liburing.syscall.__syscall_define__`."
        + (f" **Skipped in this run**: {skipped}." if skipped else "")
    )
    add(
        "- **python-liburing 2026 releases**: they ship wheels built with AVX-512, which die "
        "with SIGILL on CPUs without it. Checked on this machine (2026-11-27) with "
        "`liburing==2026.3.30` in a scratch venv: `import liburing` works, the first "
        "`liburing.Ring()` dies with *Illegal instruction* (exit status 132); its "
        "`liburing.so` has 25 instructions on `zmm` (AVX-512) registers. This CPU has "
        + (
            "AVX-512."
            if any(f.startswith("avx512") for f in flags)
            else "no AVX-512 (only " + ", ".join(sorted(f for f in flags if "avx" in f)) + ")."
        )
        + f" Hence the pin to {PYLIBURING_PIN}."
    )
    cold = d.run.get("cold_skipped")
    if cold:
        add(f"- **file3 cold**: skipped in this run: {cold}.")
    elif "file3cold" in d.main:
        add(
            "- **file3 cold**: the drop happens before each timed pass, not inside it; the "
            "first pass of each worker process is also cold (no warm-up advantage)."
        )
    add(
        "- **asyncio/uvloop file3** use `loop.run_in_executor(None, ...)`, the default "
        "executor (a ThreadPoolExecutor of min(32, cores + 4) threads), as asyncio "
        "programs do for files; uvloop has no file I/O of its own in its Python API."
    )
    add("")


OTHER_REPORTS = (
    "Other reports, each from its own script: [RESULTS-serve.md](RESULTS-serve.md) (the "
    "static server against nginx, granian, aiohttp, uvicorn and http.server, with wrk), "
    "[RESULTS-aio.md](RESULTS-aio.md) (the aio helpers against plain Python, C liburing, "
    "aiofiles, shutil and sockets), "
    "[RESULTS-async.md](RESULTS-async.md) (AsyncEngine against asyncio and uvloop peers), "
    "[FLOOR.md](FLOOR.md) (the per-call floor) and [SOAK.md](SOAK.md) (a million mixed "
    "executions)."
)


def render(d: Data, plots: dict[str, Path], output: Path) -> str:
    out: list[str] = []
    add = out.append
    add("# uringlets benchmark results")
    add("")
    add(
        "Generated by `benchmarks/report.py` from "
        + ", ".join(f"`{display_path(p)}`" for p in d.sources)
        + "; do not edit by hand. Re-run with `benchmarks/run.sh` (add `--fast` for a quick look)."
    )
    add("")
    add(
        "Every figure is the time of **one execution** (one file for file3, file1 and "
        "file3-refill, one request for tcp5, rr and rr-per-event); rate = 1/time. "
        f"Ratios are the {SUBJECT} rate over the peer's (above 1 = {SUBJECT} faster); the "
        "range in brackets is what the ±1 std dev of both allows."
    )
    add("")
    add(OTHER_REPORTS)
    add("")
    section_machine(d, add)
    add("## Headline")
    add("")
    add("uringlets (io_uring engine) rate, and its rate over each peer's (above 1 = faster).")
    add("")
    headline_table(d, add)
    add("")
    section_workloads(d, add)
    section_sweeps(d, add, plots, output)
    section_syscalls(d, add)
    missed = section_targets(d, add)
    section_profiles(d, add, missed, output)
    section_notes(d, add)
    for section in sections.ALL:  # other scripts' reports, kept in their own files too
        text = section.text()
        if text:
            add("")
            add(text)
    return "\n".join(out)


def render_readme(d: Data, plots: dict[str, Path], results: Path) -> str:
    """The short section for README.md (links relative to the repository root)."""
    out: list[str] = []
    add = out.append
    add("## Performance")
    add("")
    model, ncpu, _ = cpu_info()
    commits = sorted({c for b in d.all.values() for c in run_values(b, "uringlets_commit")})
    dates = [dt for b in d.all.values() if (dt := b.get_dates())]
    when = max(x[1] for x in dates).strftime("%Y-%m-%d") if dates else "?"
    add(
        f"Measured on a {ncpu}-core {model} VM (Linux {platform.release()}, "
        f"{python_text({})}) on {when}"
        + (f", uringlets {', '.join(f'`{c}`' for c in commits)}" if commits else "")
        + ". Rates of uringlets' io_uring engine and its rate over each peer's (above 1 = "
        "uringlets faster): nop4, file3, tcp5 and rr in batches of 64 executions per "
        "`submit_many`; nop1 and file1 one `run()` at a time; file3-refill and rr-per-event "
        "one `submit()` per completion, 64 in flight. Peers: the C liburing reference "
        f"(`benchmarks/c`), python-liburing {PYLIBURING_PIN} (PyPI `liburing`), plain "
        "Python, ThreadPoolExecutor, asyncio and uvloop (`run_in_executor` for files)."
    )
    add("")
    headline_table(d, add)
    add("")
    if d.get("file3", THREAD_PAIR[0]) is not None:
        add(
            '"file3, thread engine": `Engine("threads", workers=2)` against a hand-written '
            "`ThreadPoolExecutor(2)` loop doing the same work."
        )
        add("")
    if plots:
        for key, alt in (
            ("batch", "throughput against batch size"),
            ("chain", "throughput against chain length"),
        ):
            if key in plots:
                add(f"![{alt}]({display_path(plots[key])})")
                add("")
    add(
        f"Every figure, system calls per execution, the targets and where the time goes: "
        f"[{display_path(results)}]({display_path(results)}). "
        "`benchmarks/run.sh` runs the whole suite (about 8 minutes on that machine; `--fast` "
        "for a quick look)."
    )
    add("")
    return "\n".join(out)


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
    parser.add_argument("--readme", type=Path, default=DEFAULT_README)
    parser.add_argument("--plots", type=Path, default=DEFAULT_PLOTS)
    parser.add_argument("--syscalls", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--run", type=Path, default=None)
    args = parser.parse_args()
    results_dir = args.files[0].resolve().parent
    benches = load(args.files)
    if not benches:
        sys.exit("no benchmarks in " + ", ".join(map(str, args.files)))
    d = Data(
        benches,
        args.files,
        load_json(args.syscalls or results_dir / "syscalls.json"),
        load_json(args.profile or results_dir / "profile.json"),
        load_json(args.run or results_dir / "run.json"),
    )
    plots = make_plots(d, args.plots)
    args.output.write_text(render(d, plots, args.output))
    args.readme.write_text(render_readme(d, plots, args.output))
    print(f"wrote {args.output}, {args.readme}" + "".join(f", {p}" for p in plots.values()))


if __name__ == "__main__":
    main()
