"""What a static server on the engine can reach (issue 12): the server, its
two floors (peers/uringlets_floor.py) and nginx, ``wrk -t1`` at 64
keep-alive connections on a 1 KiB file, server pinned to CPU 0 and wrk to
CPU 1, rounds interleaved; and the cost of parsing one request
(``RequestReader.feed``, and llhttp through httptools with empty
callbacks), timed in the same process.

    .venv/bin/python benchmarks/serve_floor.py [--seconds 4] [--rounds 3]

Writes ``benchmarks/SERVE-FLOOR.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import httptools
from bench_serve import PEERS, PYTHON, Server, free_port, make_files, running, servers, wrk

from uringlets.serve.http import RequestReader

HERE = Path(__file__).resolve().parent
REQUEST = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends


def parse_costs() -> dict[str, float]:
    """Microseconds per request: the server's parser, and llhttp with the
    callbacks any server needs doing nothing."""

    class Empty:
        def on_message_begin(self) -> None: ...
        def on_url(self, url: bytes) -> None: ...
        def on_header(self, name: bytes, value: bytes) -> None: ...
        def on_headers_complete(self) -> None: ...
        def on_message_complete(self) -> None: ...

    reader = RequestReader()
    bare = httptools.HttpRequestParser(Empty())
    n = 100_000
    out = {}
    for name, call in (
        ("RequestReader.feed", lambda: reader.feed(REQUEST)),
        ("httptools, empty callbacks", lambda: bare.feed_data(REQUEST)),
    ):
        out[name] = min(timeit.repeat(call, number=n, repeat=5)) / n * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        root = tmp / "www"
        root.mkdir()
        make_files(root)
        for round_ in range(args.rounds):
            for name in CONTENDERS:
                port = free_port()
                with running(contender(name, root, tmp, port), port, "0"):
                    rps, _, _, errors = wrk(
                        f"http://127.0.0.1:{port}/1k.bin", 64, args.seconds, "1"
                    )
                if errors:
                    raise SystemExit(f"{name}: {errors} errors")
                rates.setdefault(name, []).append(rps)
                print(f"round {round_} {name}: {rps:,.0f} req/s", flush=True)
    parse = parse_costs()
    write_report(rates, parse, args)


CONTENDERS = ("nginx", "uringlets serve", "floor: the reply chain", "floor: one constant send")


def contender(name: str, root: Path, tmp: Path, port: int) -> Server:
    floor = [PYTHON, str(PEERS / "uringlets_floor.py"), str(root), str(port)]
    if name == "floor: the reply chain":
        return Server(name, [*floor, "reply"], "/")
    if name == "floor: one constant send":
        return Server(name, [*floor, "constant"], "/")
    return servers(root, tmp, port)["nginx" if name == "nginx" else "uringlets"]


def write_report(
    rates: dict[str, list[float]], parse: dict[str, float], args: argparse.Namespace
) -> None:
    nginx = statistics.median(rates["nginx"])
    budget = 1e6 / (0.5 * nginx)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    lines = [
        "# What a static server on the engine can reach (issue 12)",
        "",
        f"Machine: 2 CPUs, {platform.machine()}, Linux {platform.release()}, "
        f"CPython {platform.python_version()}; commit {commit}, {time.strftime('%Y-%m-%d')}. "
        f"`wrk -t1 -c64` on a 1 KiB file, {args.seconds:g} s x {args.rounds} rounds interleaved, "
        "server on CPU 0, wrk on CPU 1; medians. Produced by `benchmarks/serve_floor.py`.",
        "",
        "| server | req/s | us per request | vs nginx |",
        "|---|---:|---:|---:|",
    ]
    for name, values in rates.items():
        rps = statistics.median(values)
        lines.append(f"| {name} | {rps:,.0f} | {1e6 / rps:.1f} | {rps / nginx:.2f}x |")
    lines += [
        "",
        f"The target (0.5x nginx) leaves **{budget:.1f} us** per request on the server's core.",
        "",
        "| parsing one request (same process, after the runs) | us |",
        "|---|---:|",
        *(f"| {name} | {us:.2f} |" for name, us in parse.items()),
        "",
        "The floors answer every request with the same bytes and parse nothing "
        "(peers/uringlets_floor.py): *one constant send* is the engine's cost for a "
        "two-atom chain (send, recv); *the reply chain* is the server's own chain for a "
        "1 KiB file (send head with MSG_MORE, read the file, send the body, recv), with "
        "its four parameters bound per execution. What the server spends beyond the "
        "reply-chain floor is its own Python: parsing, choosing the response, the "
        "connection's state.",
    ]
    (HERE / "SERVE-FLOOR.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
