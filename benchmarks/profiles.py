"""Where the time goes: py-spy and perf profiles of the benchmarks' own loops.

    python benchmarks/profiles.py [-o benchmarks/results/profile.json] [--fast] [--only NAME]

For each profiled benchmark a child process runs the benchmark's time function
(the code pyperf times; the echo servers of tcp5 and rr are started here,
outside the child) in a loop; once its setup is done the profilers attach to
it, one after the other, for ``--seconds`` each:

* ``py-spy record --native --format raw``: Python and C stacks, summarised as
  inclusive and self shares per function (line numbers dropped).  A sample
  whose innermost frame is a system call wrapper (``sys_enter`` of the ring
  extension, ``syscall``/libc) is time spent in, or waiting for, the kernel;
* ``py-spy record --native`` again for 1 s, as an SVG flame graph
  (``results/profiles/NAME.svg``);
* ``perf record -F 999`` (CPU samples, kernel included): the share per DSO
  (``[kernel.kallsyms]``, libpython, the cffi ring extension, libc, ...) and the
  top symbols;
* user and system CPU seconds of the child over the perf window
  (``/proc/PID/stat``), against the wall time.

The C reference runs under ``perf record`` only.  Missing tools are recorded
and skipped.  Results: JSON read by report.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import syscalls
import workloads as wl

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "profile.json"
SVG_DIR = HERE / "results" / "profiles"
PY_SPY = Path(sys.executable).parent / "py-spy"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name: {"py": [module, time function, its extra arguments]} or {"c": [workload, executions]}
PROFILES: dict[str, dict] = {
    "nop4-uringlets": {"py": ["bench_core", "time_nop4_uringlets", []]},
    "file3-uringlets": {"py": ["bench_core", "time_file3_uringlets", []]},
    "tcp5-uringlets": {"py": ["bench_net", "time_tcp5_uringlets", []]},
    "rr-uringlets": {"py": ["bench_net", "time_rr_uringlets", []]},
    "file3-uringlets-threads": {"py": ["bench_core", "time_file3_uringlets_threads", []]},
    "file3-threadpool-batched": {"py": ["bench_core", "time_file3_threadpool_batched", []]},
    "file3-plain": {"py": ["bench_core", "time_file3_plain", []]},
    "rr-uvloop": {"py": ["bench_net", "time_rr_loop", ["uvloop", "protocol"]]},
    "tcp5-uvloop": {"py": ["bench_net", "time_tcp5_loop", ["uvloop", "protocol"]]},
    # the C reference: executions for about 2 s on the 2-core machine (x seconds / 2)
    "nop4-c-liburing": {"c": ["nop4", 64 * 40000]},
    "file3-c-liburing": {"c": ["file3", wl.NFILES * 250]},
    "tcp5-c-liburing": {"c": ["tcp5", 64 * 500]},
    "rr-c-liburing": {"c": ["rr", 64 * 4000]},
}


# -- the child ---------------------------------------------------------------------------
def child(spec: list, seconds: int, ports: dict[int, int]) -> None:
    """Set up (one call with 0 loops), say "ready", then call the time function
    in chunks of about 50 ms until ``seconds`` have passed."""
    module_name, func_name, args = spec
    module, args = syscalls.patch(module_name, args, ports)
    func = getattr(module, func_name)
    func(0, *args)
    took = func(1, *args)
    chunk = max(1, int(0.05 / max(took, 1e-6)))
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        func(chunk, *args)


# -- summaries ---------------------------------------------------------------------------
_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str | None:
    """``func (file.py:12)`` -> ``func (file.py)``; an unresolved native
    address (``0x7f.. (libc.so.6)``) -> None."""
    frame = frame.strip()
    if frame.startswith("0x"):
        return None
    return _LINE.sub(")", frame)


def summarize_pyspy(raw: Path) -> dict:
    """Inclusive and self shares (% of samples) per function; unresolved native
    frames are dropped, so a sample's self function is its innermost named
    frame (``pthread_cond_timedwait`` under ``os_read``: waiting to take the
    GIL back after the call)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not stack:
            continue
        count = int(n)
        frames = [name for f in stack.split(";") if (name := frame_name(f))]
        total += count
        leaf[frames[-1] if frames else "(unresolved)"] += count
        for name in set(frames):
            inclusive[name] += count
    skip = {"<module> (profiles.py)", "main (profiles.py)", "child (profiles.py)"}
    skip |= {"thread_run (libpython3.11.so.1.0)", "Thread._bootstrap (threading.py)"}
    skip |= {"Thread._bootstrap_inner (threading.py)", "Thread.run (threading.py)"}
    return {
        "samples": total,
        "inclusive": [
            [k, round(100 * v / total, 1)] for k, v in inclusive.most_common(40) if k not in skip
        ][:15],
        "self": [[k, round(100 * v / total, 1)] for k, v in leaf.most_common(12)],
    }


def perf_table(data: Path, sort: str, limit: int) -> list[list]:
    proc = subprocess.run(
        [
            *("perf", "report", "-i", str(data), "--no-children", "--sort", sort, "-g", "none"),
            *("--stdio", "--percent-limit", "0.5"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pct, _, rest = line.partition("%")
        try:
            share = float(pct)
        except ValueError:
            continue
        rows.append([" ".join(rest.split()), share])
        if len(rows) >= limit:
            break
    return rows


def cpu_ticks(pid: int) -> tuple[int, int]:
    """utime and stime of a process, its threads included, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


# -- the parent --------------------------------------------------------------------------
def plan_text(name: str) -> str | None:
    """``prog.explain()`` of the uringlets program a profile runs (segments,
    links, which atoms post CQEs)."""
    workload, _, impl = name.partition("-")
    if not impl.startswith("uringlets"):
        return None
    made = {
        "nop4": wl.nop4_program,
        "file3": lambda: wl.file3_program()[0],
        "tcp5": lambda: wl.tcp5_program(9)[0],  # port 9: any port, the plan is the same
        "rr": lambda: wl.rr_program()[0],
    }.get(workload)
    return made().explain() if made else None


def run_tool(argv: list[str]) -> None:
    """Run a profiler; raise with its stderr if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-1500:]}")


def profile_python(name: str, spec: list, seconds: int, ports: dict, tmp: Path) -> dict:
    tools = 3
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    argv += ["--seconds", str(tools * seconds + 3), "--ports", json.dumps(ports)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    result: dict = {"name": name, "kind": "python"}
    if plan := plan_text(name):
        result["plan"] = plan
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{name}: the child did not start ({proc.wait()})")
        pid = str(proc.pid)
        if PY_SPY.exists():
            raw = tmp / f"{name}.txt"
            spy = [str(PY_SPY), "record", "--pid", pid, "--rate", "250", "--native"]
            # (native stacks need py-spy's default, blocking mode)
            run_tool([*spy, "--duration", str(seconds), "--format", "raw", "-o", str(raw)])
            result["pyspy"] = summarize_pyspy(raw)
            SVG_DIR.mkdir(parents=True, exist_ok=True)
            svg = SVG_DIR / f"{name}.svg"
            run_tool([*spy, "--duration", "1", "-o", str(svg)])  # the picture: 1 s will do
            result["svg"] = str(svg.relative_to(HERE))
        if shutil.which("perf"):
            data = tmp / f"{name}.perf"
            u0, s0 = cpu_ticks(proc.pid)
            t0 = time.monotonic()
            run_tool(
                ["perf", "record", "-F", "999", "-o", str(data), "-p", pid, "sleep", str(seconds)]
            )
            wall = time.monotonic() - t0
            u1, s1 = cpu_ticks(proc.pid)
            result["cpu"] = {
                "wall": round(wall, 2),
                "user": round((u1 - u0) / CLK_TCK, 2),
                "sys": round((s1 - s0) / CLK_TCK, 2),
            }
            result["perf_dso"] = perf_table(data, "dso", 8)
            result["perf_sym"] = perf_table(data, "dso,sym", 15)
    finally:
        proc.kill()
        proc.wait()
    return result


def profile_c(name: str, spec: list, scale: float, ports: dict, tmp: Path) -> dict:
    workload, executions = spec
    unit = wl.NFILES if workload == "file3" else wl.BATCH
    executions = max(int(executions * scale) // unit, 1) * unit
    # tcp5's server closes after one echo; rr's keeps its connections
    port = {"tcp5": ports[wl.MSG_SIZE], "rr": ports[0]}.get(workload)
    argv = wl.c_ref_argv(workload, executions, port=port)
    data = tmp / f"{name}.perf"
    t0 = os.times()
    run_tool(["perf", "record", "-F", "999", "-o", str(data), "--", *argv])
    t1 = os.times()
    return {
        "name": name,
        "kind": "c",
        "cpu": {
            "wall": round(t1.elapsed - t0.elapsed, 2),
            "user": round(t1.children_user - t0.children_user, 2),
            "sys": round(t1.children_system - t0.children_system, 2),
        },
        "perf_dso": perf_table(data, "dso", 8),
        "perf_sym": perf_table(data, "dso,sym", 15),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--fast", action="store_true", help="1 s per profiler instead of 2")
    parser.add_argument("--seconds", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", action="append", choices=sorted(PROFILES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ports = {int(k): v for k, v in json.loads(args.ports).items()}
        child(json.loads(args.child), args.seconds, ports)
        return

    seconds = args.seconds or (1 if args.fast else 2)
    missing = [
        t for t, ok in (("py-spy", PY_SPY.exists()), ("perf", shutil.which("perf"))) if not ok
    ]
    result: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": seconds,
        "tools": {
            "py-spy": subprocess.run(
                [str(PY_SPY), "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            if PY_SPY.exists()
            else None,
            "perf": subprocess.run(
                ["perf", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            if shutil.which("perf")
            else None,
        },
        "missing": missing,
        "profiles": [],
    }
    wl.build_c_ref()
    wl.warm(wl.ensure_files())
    servers = {size: wl.EchoServer(size) for size in (wl.MSG_SIZE, 0)}
    ports = {size: srv.port for size, srv in servers.items()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, spec in PROFILES.items():
                if args.only and name not in args.only:
                    continue
                t0 = time.monotonic()
                if "py" in spec:
                    got = profile_python(name, spec["py"], seconds, ports, Path(tmp))
                elif shutil.which("perf"):
                    got = profile_c(name, spec["c"], seconds / 2, ports, Path(tmp))
                else:
                    continue
                print(f"profiled {name} ({time.monotonic() - t0:.1f} s)", flush=True)
                result["profiles"].append(got)
    finally:
        for srv in servers.values():
            srv.stop()
    wl.write_json(args.output, result)


if __name__ == "__main__":
    main()
