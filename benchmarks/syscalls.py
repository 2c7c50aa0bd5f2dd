"""Syscall accounting: io_uring_enter calls and all system calls per execution.

    python benchmarks/syscalls.py [-o benchmarks/results/syscalls.json] [--fast]

Each row runs one benchmark's own time function (the code pyperf times, from
bench_core.py, bench_net.py and bench_sweep.py) in a child process twice: once
with a fixed number of executions N and once with zero.  The child first sets
up (engine, files, thread pools, connections, event loops: one call of the time
function with 0 loops), then ``strace -f -c`` attaches to all its threads and
the child runs its loops and exits.  The difference between the two counts,
divided by N, is the count per execution; what the zero run also makes (the
tracer's attach, the child's exit) cancels out.  (Setup is done before
attaching because a traced system call costs about 100 us on this VM and
setup makes thousands.)  The C reference runs under ``strace -f -c`` from its
start, with LOOPS=N/64 and LOOPS=0.

The echo servers of tcp5 and rr run outside strace, started by this script,
so only the client's system calls are counted.  Counting under strace slows
every call down, which can change how often threads block (futex) and how
many events an epoll_wait returns at once; io_uring_enter counts of the
io_uring implementations do not depend on timing except where a wait returns
before all of a batch is done.

uringlets rows at batch sizes other than 64 use the sweep's engine
(``sq_entries=4096``, see bench_sweep.py); at 64, nop4 and file3 use that
engine too (its batches fit the default engine's 256 SQEs as well), tcp5, rr
and the thread engine the main suites' engines; a second tcp5 row uses the
sweep's engine, as 64 x 5 SQEs do not fit the default 256.  Peers run at
their natural batch: 64 in flight, or one at a time for plain Python.

Writes JSON: the rows, the tool and how it was run (read by report.py).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyliburing_peer
import workloads as wl

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "syscalls.json"
SWEEP_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FAST_BATCHES = (1, 8, 64, 256)
# executions per counted run (fast mode: half)
EXECUTIONS = {"nop4": 8192, "file3": wl.NFILES, "tcp5": 512, "rr": 1024}


def configs(batches: tuple[int, ...], scale: float) -> list[dict]:
    """The rows: workload, impl, batch, and how to run it (a Python time
    function with its inner loops, or the C reference)."""
    n = {w: max(int(e * scale), 1) for w, e in EXECUTIONS.items()}
    rows: list[dict] = []

    def py(workload, impl, batch, module, func, args=(), inner=64, executions=None):
        executions = executions or n[workload]
        loops = max(executions // inner, 1)
        rows.append(
            {
                "workload": workload,
                "impl": impl,
                "batch": batch,
                "executions": loops * inner,
                "py": [module, func, list(args), loops],
            }
        )

    def c(workload, executions, batch=64, **kwargs):
        rows.append(
            {
                "workload": workload,
                "impl": "c-liburing",
                "batch": batch,
                "executions": executions,
                "c": [workload, executions, batch, kwargs],
            }
        )

    files = wl.NFILES
    for b in batches:
        py("nop4", "uringlets", b, "bench_sweep", "time_nop4_uringlets", [b], inner=b)
    c("nop4", n["nop4"])
    py("nop4", "pyliburing", 64, "bench_core", "time_nop4_pyliburing")
    for b in batches:
        py("file3", "uringlets", b, "bench_sweep", "time_file3_uringlets", [b], inner=files)
    c("file3", files)
    py("file3", "pyliburing", 64, "bench_core", "time_file3_pyliburing", inner=files)
    py("file3", "plain", 1, "bench_core", "time_file3_plain", inner=files)
    py("file3", "threadpool", 64, "bench_core", "time_file3_threadpool", [2], inner=files)
    py("file3", "asyncio", 64, "bench_core", "time_file3_loop", ["asyncio"], inner=files)
    py("file3", "uvloop", 64, "bench_core", "time_file3_loop", ["uvloop"], inner=files)
    py("file3", "uringlets-threads", 64, "bench_core", "time_file3_uringlets_threads", inner=files)
    py(
        "file3",
        "threadpool-batched",
        64,
        "bench_core",
        "time_file3_threadpool_batched",
        inner=files,
    )
    py("tcp5", "uringlets", 64, "bench_net", "time_tcp5_uringlets")
    # the same with the sweep's engine: 64 x 5 SQEs exceed the default 256-entry SQ ring
    py("tcp5", "uringlets-sq4096", 64, "bench_net", "time_tcp5_uringlets", ["sq4096"])
    c("tcp5", n["tcp5"])
    py("tcp5", "plain", 1, "bench_net", "time_tcp5_plain")
    py("tcp5", "threads", 64, "bench_net", "time_tcp5_threads", [4])
    py("tcp5", "asyncio", 64, "bench_net", "time_tcp5_loop", ["asyncio", "sock"])
    py("tcp5", "uvloop", 64, "bench_net", "time_tcp5_loop", ["uvloop", "protocol"])
    py("rr", "uringlets", 64, "bench_net", "time_rr_uringlets")
    py("rr", "uringlets-batch", 64, "bench_net", "time_rr_uringlets_batch")
    c("rr", n["rr"])
    py("rr", "plain", 1, "bench_net", "time_rr_plain")
    py("rr", "asyncio", 64, "bench_net", "time_rr_loop", ["asyncio", "protocol"])
    py("rr", "uvloop", 64, "bench_net", "time_rr_loop", ["uvloop", "protocol"])
    return rows


# -- the child: run one time function ----------------------------------------------------
class ExternalServer:
    """An echo server started by the parent (outside strace)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.address = (wl.LOCALHOST, port)

    def check(self) -> None:
        pass

    def stop(self) -> None:
        pass


def patch(module_name: str, args: list, ports: dict[int, int]) -> tuple:
    """Import the benchmark module; point bench_net at the parent's echo
    servers; an "sq4096" argument swaps in the sweep's engine (sq_entries=4096)
    for bench_core's.  Returns the module and the remaining arguments."""
    module = importlib.import_module(module_name)
    if module_name == "bench_net":
        module.server = lambda close_after: ExternalServer(ports[close_after])
    if "sq4096" in args:
        import bench_core
        import bench_sweep

        bench_core.engine = bench_sweep.engine
        args = [a for a in args if a != "sq4096"]
    return module, args


def child(spec: list, loops: int, ports: dict[int, int]) -> None:
    """Set up (a call with 0 loops), say "ready", wait for a line on stdin
    (strace has attached), then run ``loops`` loops and exit."""
    module_name, func_name, args, _ = spec
    module, args = patch(module_name, args, ports)
    func = getattr(module, func_name)
    func(0, *args)
    print("ready", flush=True)
    sys.stdin.readline()
    func(loops, *args)


# -- the parent: strace and subtract ---------------------------------------------------
def parse_strace(path: Path) -> dict[str, int]:
    """{syscall: calls} and "total" from an ``strace -c`` summary."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[3].isdigit():
            continue
        counts[fields[-1]] = int(fields[3])
    if "total" not in counts:
        raise RuntimeError(f"no strace summary in {path}:\n{path.read_text()}")
    return counts


def count(argv: list[str], tmp: Path) -> dict[str, int]:
    """Run ``argv`` under ``strace -f -c`` from its start (the C reference)."""
    out = tmp / "strace.txt"
    proc = subprocess.run(
        ["strace", "-f", "-c", "-o", str(out), "--", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} under strace failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return parse_strace(out)


def count_attached(argv: list[str], tmp: Path) -> dict[str, int]:
    """Start the Python child ``argv``, let it set up untraced (a system call
    under strace costs ~100 us on this VM, and setup makes thousands), attach
    ``strace -f -c`` to all its threads, then let it run its loops."""
    out = tmp / "strace.txt"
    child = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    tracer = None
    try:
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            child.kill()
            _, err = child.communicate()
            raise RuntimeError(f"{' '.join(argv)} did not start:\n{err[-2000:]}")
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-o", str(out), "-p", str(child.pid)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tracer.stderr is not None
        seen = ""
        while "attached" not in (line := tracer.stderr.readline()):
            seen += line
            if not line:
                raise RuntimeError(f"strace did not attach to {child.pid}: {seen}")
        child.stdin.write("go\n")
        child.stdin.close()
        err = child.stderr.read() if child.stderr else ""
        if child.wait() != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({child.returncode}):\n{err[-2000:]}")
        tracer.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
    return parse_strace(out)


def measure(row: dict, ports: dict[int, int], tmp: Path) -> dict:
    if "c" in row:
        workload, executions, batch, kwargs = row["c"]
        # tcp5's server closes after one echo; rr's keeps its connections
        port = {"tcp5": ports[wl.MSG_SIZE], "rr": ports[0]}.get(workload)
        argv = wl.c_ref_argv(workload, executions, batch=batch, port=port, **kwargs)
        argv0 = wl.c_ref_argv(workload, 0, batch=batch, port=port, **kwargs)
    else:
        loops = row["py"][3]
        base = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(row["py"])]
        base += ["--ports", json.dumps(ports)]
        argv, argv0 = [*base, "--loops", str(loops)], [*base, "--loops", "0"]
    t0 = time.monotonic()
    counter = count if "c" in row else count_attached
    run, baseline = counter(argv, tmp), counter(argv0, tmp)
    n = row["executions"]
    per = {
        name: (calls - baseline.get(name, 0)) / n for name, calls in run.items() if name != "total"
    }
    top = sorted(((k, v) for k, v in per.items() if v > 0), key=lambda kv: -kv[1])[:4]
    return {
        "workload": row["workload"],
        "impl": row["impl"],
        "batch": row["batch"],
        "executions": n,
        "enter": per.get("io_uring_enter", 0.0),
        "total": (run["total"] - baseline["total"]) / n,
        "top": [[k, round(v, 4)] for k, v in top],
        "calls_run": run["total"],
        "calls_baseline": baseline["total"],
        "seconds": round(time.monotonic() - t0, 2),
    }


def strace_version() -> str | None:
    if not shutil.which("strace"):
        return None
    proc = subprocess.run(["strace", "-V"], capture_output=True, text=True, check=False)
    first = proc.stdout.splitlines()[0] if proc.stdout else ""
    return "strace " + first.split()[-1] if first else "strace"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--fast", action="store_true", help="half the executions, batches 1/8/64/256"
    )
    parser.add_argument("--only", action="append", help="only rows of this workload (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--loops", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ports = {int(k): v for k, v in json.loads(args.ports).items()}
        child(json.loads(args.child), args.loops, ports)
        return

    version = strace_version()
    result: dict = {
        "tool": f"{version} -f -c" if version else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "fast" if args.fast else "full",
        "rows": [],
    }
    if version is None:
        result["skipped"] = "strace is not installed (apt-get install -y strace)"
        print(result["skipped"], file=sys.stderr)
    else:
        wl.build_c_ref()
        wl.warm(wl.ensure_files())
        servers = {size: wl.EchoServer(size) for size in (wl.MSG_SIZE, 0)}
        ports = {size: srv.port for size, srv in servers.items()}
        rows = configs(FAST_BATCHES if args.fast else SWEEP_BATCHES, 0.5 if args.fast else 1.0)
        if args.only:
            rows = [r for r in rows if r["workload"] in args.only]
        if why := pyliburing_peer.status():
            result["pyliburing_skipped"] = why
            rows = [r for r in rows if r["impl"] != "pyliburing"]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for row in rows:
                    got = measure(row, ports, Path(tmp))
                    print(
                        f"{got['workload']:>5} {got['impl']:<18} batch {got['batch']:>3}: "
                        f"{got['enter']:.4f} io_uring_enter, {got['total']:.3f} syscalls "
                        f"per execution ({got['seconds']} s)",
                        flush=True,
                    )
                    result["rows"].append(got)
        finally:
            for srv in servers.values():
                srv.stop()
    wl.write_json(args.output, result)


if __name__ == "__main__":
    main()
