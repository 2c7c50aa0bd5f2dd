"""The command line: ``python -m uringlets COMMAND``.

``probe``: what this kernel offers and why a fallback would happen (exit
status 0 only when io_uring is usable).
``explain MODULE:NAME``: the plan of a program.
``bench [NAME ...]``: the pyperf suite (uringlets.benchsuite).
``serve DIR``: the Tux-style static HTTP/1.1 server (uringlets.serve).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .program import Program
from .syslet import Syslet


def probe_report() -> dict[str, Any]:
    """What ``probe`` says, as data (``probe --json``): the kernel, the
    io_uring_disabled sysctl (None before 6.6), whether io_uring is usable
    and why not, the setup flags kept and dropped, restricted rings,
    whether the kernel installs exported slots as fds, and where each op
    of the catalogue runs: ``"kernel"`` (with the io_uring
    op) or ``"userspace"`` (with why)."""
    from . import atoms, kernel

    features = kernel.probe()
    try:
        disabled: str | None = Path(kernel.DISABLED_SYSCTL).read_text().strip()
    except OSError:
        disabled = None
    report: dict[str, Any] = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "io_uring_disabled": disabled,
        "usable": features.available,
        "reason": features.reason,
    }
    if not features.available:
        return report
    kept = [name for name, _ in kernel._SETUP_FLAGS if name not in features.dropped_flags]
    report["setup_flags"] = {"kept": kept, "dropped": list(features.dropped_flags)}
    report["restricted_rings"] = "RESTRICTIONS" in features.extras
    # exported descriptors: a slot installed as a real fd by the kernel (6.8),
    # else the creator makes a real fd from the start and ends its segment
    report["fixed_fd_install"] = features.has_op("FIXED_FD_INSTALL")
    ops: dict[str, dict[str, str]] = {}
    for name, op in sorted(atoms.CATALOGUE.items()):
        if op.kernel_op is None:
            ops[name] = {"where": "userspace", "why": "io_uring has no such op"}
            continue
        base = kernel.EXTRA_OPS.get(op.kernel_op)  # a sub-command of an opcode
        label = f"IORING_OP_{op.kernel_op}" if base is None else f"IORING_OP_{base} command"
        if features.has_op(op.kernel_op):
            ops[name] = {"where": "kernel", "op": label}
        else:
            ops[name] = {"where": "userspace", "why": f"this kernel lacks {label}"}
    report["ops"] = ops
    return report


def probe_lines() -> tuple[bool, list[str]]:
    """(io_uring usable, the report's lines)."""
    report = probe_report()
    lines = [f"kernel: Linux {report['kernel']} ({report['machine']})"]
    disabled = report["io_uring_disabled"]
    if disabled is None:
        lines.append("kernel.io_uring_disabled: not present (kernels before 6.6)")
    else:
        meaning = {"0": "enabled", "1": "only for the io_uring_group", "2": "disabled"}
        lines.append(f"kernel.io_uring_disabled: {disabled} ({meaning.get(disabled, '?')})")
    if not report["usable"]:
        lines.append(f"io_uring: not usable: {report['reason']}")
        lines.append("engine: Engine('auto') runs programs on the cachemiss threads")
        return False, lines
    lines.append("io_uring: usable")
    flags = report["setup_flags"]
    lines.append(
        f"setup flags: kept {', '.join(flags['kept']) or 'none'}; "
        f"dropped {', '.join(flags['dropped']) or 'none'}"
    )
    lines.append(
        "restricted rings: "
        + (
            "yes"
            if report["restricted_rings"]
            else "no (Engine(restrict=...) checks programs at submit only)"
        )
    )
    lines.append("ops:")
    for name, where in report["ops"].items():
        if where["where"] == "kernel":
            text = f"in the kernel ({where['op']})"
        else:
            text = f"userspace step ({where['why']})"
        lines.append(f"  {name:<11} {text}")
    return True, lines


def _probe(args: argparse.Namespace) -> int:
    if args.json:
        report = probe_report()
        print(json.dumps(report, indent=2))
        return 0 if report["usable"] else 1
    usable, lines = probe_lines()
    print("\n".join(lines))
    return 0 if usable else 1


def load_program(target: str) -> Program:
    """The Program ``MODULE:NAME`` names: a Program, a Syslet (compiled
    here), or a callable taking no arguments that returns one of them.
    ``MODULE`` is an importable module or a path to a ``.py`` file; ``NAME``
    may be dotted.  Raises ``LookupError`` or ``TypeError`` saying what is
    wrong."""
    module_name, sep, name = target.partition(":")
    if not sep or not module_name or not name:
        raise LookupError(f"expected MODULE:NAME, got {target!r}")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if spec is None or spec.loader is None:
                raise ImportError(f"no module in {module_name}")
            module: Any = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as exc:
        raise LookupError(f"cannot import {module_name!r}: {exc}") from None
    found: Any = module
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LookupError(f"{module_name!r} has no {name!r}") from None
    if callable(found) and not isinstance(found, (Program, Syslet)):
        found = found()
    if isinstance(found, Syslet):
        found = found.compile()
    if not isinstance(found, Program):
        raise TypeError(f"{target} is a {type(found).__name__}, not a Program or a Syslet")
    return found


def _explain(args: argparse.Namespace) -> int:
    try:
        program = load_program(args.target)
    except (LookupError, TypeError) as exc:
        print(f"python -m uringlets explain: {exc}", file=sys.stderr)
        return 2
    print(program.explain())
    return 0


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
    probe.add_argument(
        "--json", action="store_true", help="the same, as JSON (scripts/kernel-features.py)"
    )
    probe.set_defaults(run=_probe)
    explain = commands.add_parser(
        "explain",
        help="print the plan of a program (MODULE:NAME)",
        description="Import MODULE (a module name or a path to a .py file), take NAME from "
        "it (a Program, a Syslet, or a callable without arguments returning one) and print "
        "how it runs on this kernel: segments, link flags, slots, CQEs skipped, userspace "
        "steps. Exit status 2 when the target cannot be found or is no program.",
    )
    explain.add_argument("target", metavar="MODULE:NAME", help="e.g. myapp.io:FETCH")
    explain.set_defaults(run=_explain)
    # (main hands "bench" and what follows to benchsuite.main: pyperf parses it)
    commands.add_parser(
        "bench",
        help="run the pyperf suite, or the named part of it (--help: its options)",
        add_help=False,
    )
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from .benchsuite import main as bench

        return bench(argv[1:])
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
