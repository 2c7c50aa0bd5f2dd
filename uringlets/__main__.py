"""The command line: ``python -m uringlets COMMAND``.

``serve DIR``: the Tux-style static HTTP/1.1 server (uringlets.serve).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(
        args.directory,
        args.host,
        args.port,
        workers=args.workers,
        engine=args.engine,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m uringlets", description="syslets for Python on io_uring"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a directory over HTTP/1.1 (static files, syslets for all I/O)",
        description="Serve the files beneath DIR over HTTP/1.1: GET and HEAD, keep-alive, "
        "pipelining, conditional and range requests; paths cannot leave DIR (openat2 "
        "RESOLVE_BENEATH). Stops gracefully on SIGTERM or SIGINT.",
    )
    serve.add_argument("directory", metavar="DIR", help="the directory to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (8000; 0: a free one)")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument(
        "--engine", choices=("auto", "uring", "threads"), default="auto", help="engine (auto)"
    )
    serve.add_argument("--max-connections", type=int, default=1024, help="per worker (1024)")
    serve.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds a request head may take (10)"
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="seconds a kept-alive connection waits (30)",
    )
    serve.set_defaults(run=_serve)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
