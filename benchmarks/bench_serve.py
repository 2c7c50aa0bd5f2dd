"""The static server against its peers (issue 12): ``wrk -t1`` keep-alive at
1, 64 and 256 connections on files of 1 KiB, 64 KiB and 1 MiB.

    .venv/bin/python benchmarks/bench_serve.py [--seconds 5] [--rounds 3]
        [--only uringlets --only nginx ...] [--no-workers]

Each server is started as its users would for one worker, on a free
loopback port, pinned to CPU 0 (``taskset``), with ``wrk`` pinned to CPU 1;
stopped by process id.  Peers: nginx (``sendfile on``, ``open_file_cache``,
``access_log off``, keep-alive requests unlimited), granian's static files
(``--static-path-mount``), aiohttp's static route on uvloop, starlette's
``StaticFiles`` under uvicorn (uvloop, httptools), and ``python -m
http.server`` (HTTP/1.0: a connection per request).  Each configuration is
measured ``rounds`` times, rounds interleaved across servers (one server at
a time); the median is reported.  Then ``--workers 2`` against nginx with
``worker_processes 2``, unpinned (wrk shares the two CPUs with them).

Writes ``results/serve.json``, ``RESULTS-serve.md`` and ``plots/serve.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
RESULTS = HERE / "results"
PYTHON = sys.executable
SIZES = {"1k": 1024, "64k": 64 * 1024, "1m": 1024 * 1024}
CONNECTIONS = (1, 64, 256)
# Targets at 64 connections and 1 KiB: uringlets' rate over the peer's.
TARGETS = {"nginx": 0.5, "granian": 1.0, "aiohttp": 3.0, "uvicorn": 3.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pin(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu is not None and shutil.which("taskset") else []


NGINX_CONF = """worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=20s;
    open_file_cache_valid 30s;
    keepalive_requests 1000000000;
    keepalive_timeout 65;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


@dataclass
class Server:
    name: str
    argv: list[str]
    prefix: str  # URL path the files are under
    env: dict[str, str] | None = None


def servers(root: Path, tmp: Path, port: int, workers: int = 1) -> dict[str, Server]:
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, port=port, root=root))
    env = {**os.environ, "SERVE_DIR": str(root)}
    venv_bin = Path(PYTHON).parent
    made = {
        "uringlets": Server(
            "uringlets",
            [PYTHON, "-m", "uringlets", "serve", str(root), "--port", str(port),
             "--workers", str(workers)],
            "/",
        ),
        "nginx": Server("nginx", ["nginx", "-c", str(conf)], "/"),
        "granian": Server(
            "granian",
            [str(venv_bin / "granian"), "--interface", "rsgi", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1", "--static-path-route", "/static",
             "--static-path-mount", str(root), "--no-access-log", "--working-dir", str(PEERS),
             "rsgi_app:app"],
            "/static/",
        ),
        "aiohttp": Server(
            "aiohttp", [PYTHON, str(PEERS / "aiohttp_static.py"), str(root), str(port)], "/"
        ),
        "uvicorn": Server(
            "uvicorn",
            [str(venv_bin / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--loop",
             "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
             "--app-dir", str(PEERS), "starlette_static:app"],
            "/",
            env,
        ),
        "http.server": Server(
            "http.server",
            [PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root),
             str(port)],
            "/",
        ),
    }  # fmt: skip
    return made


@contextlib.contextmanager
def running(server: Server, port: int, cpu: str | None) -> Iterator[None]:
    proc = subprocess.Popen(
        [*pin(cpu), *server.argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server.env,
        start_new_session=True,
    )
    try:
        wait_for(port, proc)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Measure:
    server: str
    size: str
    connections: int
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors and non-2xx answers


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str, connections: int, seconds: float, cpu: str | None
) -> tuple[float, float, float, int]:
    out = subprocess.run(
        [*pin(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(map(int, m.groups()))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return rps, percentile("50"), percentile("99"), errors


def make_files(root: Path) -> None:
    """The files, readable by a server that drops root (nginx's workers)."""
    for name, size in SIZES.items():
        path = root / f"{name}.bin"
        path.write_bytes(os.urandom(size))
        path.chmod(0o644)
    for directory in (root, root.parent):
        directory.chmod(0o755)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only this server (repeatable)")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker runs")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk; scripts/setup.sh bench)")
    two = (os.cpu_count() or 1) >= 2
    server_cpu, wrk_cpu = ("0", "1") if two else (None, None)
    measures: list[Measure] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        root = tmp / "www"
        root.mkdir()
        make_files(root)
        names = [n for n in servers(root, tmp, 0) if not args.only or n in args.only]
        runs: dict[tuple[str, str, int], list[tuple[float, float, float, int]]] = {}
        for round_ in range(args.rounds):
            for name in names:
                port = free_port()
                server = servers(root, tmp, port)[name]
                if name != "uringlets" and not shutil.which(server.argv[0]):
                    print(f"skipping {name}: {server.argv[0]} is not installed", file=sys.stderr)
                    continue
                with running(server, port, server_cpu):
                    for size in SIZES:
                        url = f"http://127.0.0.1:{port}{server.prefix}{size}.bin"
                        for conns in CONNECTIONS:
                            got = wrk(url, conns, args.seconds, wrk_cpu)
                            runs.setdefault((name, size, conns), []).append(got)
                            print(f"round {round_} {name} {size} c{conns}: {got[0]:,.0f} req/s "
                                  f"p50 {got[1]:.2f} ms p99 {got[2]:.2f} ms errors {got[3]}",
                                  flush=True)  # fmt: skip
        for (name, size, conns), values in runs.items():
            measures.append(
                Measure(
                    name, size, conns, 1,
                    statistics.median(v[0] for v in values),
                    statistics.median(v[1] for v in values),
                    statistics.median(v[2] for v in values),
                    sum(v[3] for v in values),
                )
            )  # fmt: skip
        if not args.no_workers and two:
            for round_ in range(args.rounds):
                for name in ("uringlets", "nginx"):
                    if args.only and name not in args.only:
                        continue
                    port = free_port()
                    server = servers(root, tmp, port, workers=2)[name]
                    with running(server, port, None):
                        url = f"http://127.0.0.1:{port}/1k.bin"
                        got = wrk(url, 64, args.seconds, None)
                        runs.setdefault((name + "-2", "1k", 64), []).append(got)
                        print(f"round {round_} {name} workers 2: {got[0]:,.0f} req/s", flush=True)
            for name in ("uringlets", "nginx"):
                values = runs.get((name + "-2", "1k", 64))
                if values:
                    measures.append(
                        Measure(
                            name, "1k", 64, 2,
                            statistics.median(v[0] for v in values),
                            statistics.median(v[1] for v in values),
                            statistics.median(v[2] for v in values),
                            sum(v[3] for v in values),
                        )
                    )  # fmt: skip
    meta = {
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}, "
        f"CPython {platform.python_version()}",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "pinned": two,
        "versions": versions(),
    }
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(
        json.dumps({"meta": meta, "measures": [asdict(m) for m in measures]}, indent=1)
    )
    print(f"wrote {args.output}")
    import report_serve

    report_serve.main([str(args.output)])


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        found["nginx"] = out.strip().split("/")[-1]
    from importlib import metadata

    for dist in ("granian", "aiohttp", "uvicorn", "starlette", "uvloop", "httptools"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[
            1
        ]
    return found


if __name__ == "__main__":
    main()
