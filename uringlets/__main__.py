"""The command line: ``python -m uringlets COMMAND``.

``probe``: what this kernel offers and why a fallback would happen (exit
status 0 only when io_uring is usable).
``serve DIR``: the Tux-style static HTTP/1.1 server (uringlets.serve).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

DISABLED_SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")


def probe_lines() -> tuple[bool, list[str]]:
    """(io_uring usable, the report's lines)."""
    from . import atoms, kernel

    features = kernel.probe()
    lines = [f"kernel: Linux {platform.release()} ({platform.machine()})"]
    try:
        disabled = DISABLED_SYSCTL.read_text().strip()
        meaning = {"0": "enabled", "1": "only for the io_uring_group", "2": "disabled"}
        lines.append(f"kernel.io_uring_disabled: {disabled} ({meaning.get(disabled, '?')})")
    except OSError:
        lines.append("kernel.io_uring_disabled: not present (kernels before 6.6)")
    if not features.available:
        lines.append(f"io_uring: not usable: {features.reason}")
        lines.append("engine: Engine('auto') runs programs on the cachemiss threads")
        return False, lines
    lines.append("io_uring: usable")
    kept = [name for name, _ in kernel._SETUP_FLAGS if name not in features.dropped_flags]
    lines.append(
        f"setup flags: kept {', '.join(kept) or 'none'}; "
        f"dropped {', '.join(features.dropped_flags) or 'none'}"
    )
    can = "RESTRICTIONS" in features.extras
    lines.append(
        "restricted rings: "
        + ("yes" if can else "no (Engine(restrict=...) checks programs at submit only)")
    )
    lines.append("ops:")
    for name, op in sorted(atoms.CATALOGUE.items()):
        if op.kernel_op is None:
            where = "userspace step (io_uring has no such op)"
        else:
            base = kernel.EXTRA_OPS.get(op.kernel_op)  # a sub-command of an opcode
            label = f"IORING_OP_{op.kernel_op}" if base is None else f"IORING_OP_{base} command"
            if features.has_op(op.kernel_op):
                where = f"in the kernel ({label})"
            else:
                where = f"userspace step (this kernel lacks {label})"
        lines.append(f"  {name:<11} {where}")
    return True, lines


def _probe(args: argparse.Namespace) -> int:
    usable, lines = probe_lines()
    print("\n".join(lines))
    return 0 if usable else 1


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
    probe = commands.add_parser(
        "probe",
        help="what this kernel offers; exit status 0 only when io_uring is usable",
        description="Say whether io_uring is usable here and why not (seccomp, "
        "kernel.io_uring_disabled, kernel version), which setup flags the kernel kept, "
        "whether rings can be restricted, and which ops run in the kernel or as "
        "userspace steps. Exit status 0 only when io_uring is usable.",
    )
    probe.set_defaults(run=_probe)
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
