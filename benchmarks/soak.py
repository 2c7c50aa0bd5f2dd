"""Soak: many mixed executions through small capacities, on each engine
(issue 10).  Successes, ENOENT, ECONNREFUSED, short reads (the general
path), userspace steps (ops compiled as if the kernel lacked them),
cancels, deadlines and timeouts, in random batches through capacities 16
to 256.  Checks that every execution ends in exactly one completion with
the results its kind must have, and that descriptors, slots and memory
come back to where they started.

    .venv/bin/python benchmarks/soak.py [--executions 1000000] [--engine uring|threads|both]

``tests/test_robustness.py`` runs a short form (``soak(...)``) in CI.
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import random
import resource
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uringlets as ul

CAPACITIES = (16, 32, 64, 128, 256)


@dataclass
class Kind:
    """One kind of execution: its program, its parameters, and what its
    completion must say (``check(c)`` returns a problem or None)."""

    name: str
    program: ul.Program
    params: Callable[[], dict[str, Any]]
    check: Callable[[ul.Completion], str | None]
    deadline: float | None = None


@dataclass
class Report:
    executions: int = 0
    seconds: float = 0.0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    cancels: int = 0
    fds_before: int = 0
    fds_after: int = 0
    slots_free_before: int = 0
    slots_free_after: int = 0
    rss_kib: list[int] = field(default_factory=list)  # sampled along the run
    problems: list[str] = field(default_factory=list)


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def refused_port() -> int:
    """A loopback port nothing listens on (bound, never listened: refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def kinds(sandbox: Path) -> list[Kind]:
    (sandbox / "full").write_bytes(b"x" * 512)
    (sandbox / "short").write_bytes(b"0123456789")
    full, short, missing = sandbox / "full", sandbox / "short", sandbox / "missing"
    port = refused_port()

    def read_program(features: ul.KernelFeatures | None = None) -> tuple[ul.Program, ul.Ref]:
        s = ul.Syslet()
        fd = s.openat(ul.Param("path"), os.O_RDONLY)
        data = s.read(fd, 512, stop=ul.STOP_ON_NEGATIVE)
        s.close(fd)
        return s.compile(features), data

    read, data = read_program()
    stepped, stepped_data = read_program(ul.probe().without_ops(["READ", "CLOSE"]))
    s = ul.Syslet()
    sock = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(sock, ("127.0.0.1", port))
    s.close(sock)
    connect = s.compile()
    s = ul.Syslet()
    s.timeout(0.001)
    s.nop()
    timer = s.compile()
    s = ul.Syslet()
    s.timeout(30)
    s.nop()
    slow = s.compile()

    def full_read(c: ul.Completion, ref: ul.Ref = data) -> str | None:
        if c.results != (0, 512, 0) or c[ref] != b"x" * 512:
            return f"full read: {c!r}"
        return None

    def short_read(c: ul.Completion) -> str | None:
        if c.results != (0, 10, 0) or c[data] != b"0123456789":
            return f"short read: {c!r}"
        return None

    def enoent(c: ul.Completion) -> str | None:
        if c.results != (-errno.ENOENT, None, None) or c.stopped_at != 0:
            return f"ENOENT: {c!r}"
        return None

    def refused(c: ul.Completion) -> str | None:
        if c.results != (0, -errno.ECONNREFUSED, None) or c.stopped_at != 1:
            return f"ECONNREFUSED: {c!r}"
        return None

    def timed(c: ul.Completion) -> str | None:
        if c.results != (0, 0) or not c.ok:  # timeout normalises -ETIME to 0
            return f"timeout: {c!r}"
        return None

    def cancelled(c: ul.Completion) -> str | None:
        if not c.cancelled or c.results[1] is not None:
            return f"cancel/deadline: {c!r}"
        return None

    return [
        Kind("success", read, lambda: {"path": full}, full_read),
        Kind("short read", read, lambda: {"path": short}, short_read),
        Kind("ENOENT", read, lambda: {"path": missing}, enoent),
        Kind("ECONNREFUSED", connect, dict, refused),
        Kind(
            "userspace steps",
            stepped,
            lambda: {"path": full},
            lambda c: full_read(c, stepped_data),
        ),
        Kind("timeout", timer, dict, timed),
        Kind("deadline", slow, dict, cancelled, deadline=0.002),
        Kind("cancel", slow, dict, cancelled),
    ]


def soak(engine_kind: str, executions: int, seed: int = 1) -> Report:
    """Run ``executions`` mixed executions on a fresh engine per capacity
    (the total split among them) and report."""
    rng = random.Random(seed)
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        mix = kinds(sandbox)
        report.fds_before = open_fd_count()
        t0 = time.monotonic()
        per_capacity = executions // len(CAPACITIES)
        # one mark per execution, made up front so that the soak's own books
        # do not grow while RSS is sampled
        seen = bytearray(per_capacity * len(CAPACITIES))
        serial = 0
        for capacity in CAPACITIES:
            with ul.Engine(engine_kind, capacity=capacity) as eng:
                ring: Any = getattr(eng._backend, "io", None)  # the io_uring one's tables
                free_slots = _free_slots(ring)
                _soak_one(eng, mix, per_capacity, serial, rng, report, seen)
                serial += per_capacity
                left = eng.wait(eng.in_flight, timeout=60)
                _check_all(left, mix, report, seen)
                if eng.in_flight:
                    report.problems.append(
                        f"{eng.in_flight} still in flight at capacity {capacity}"
                    )
                if _free_slots(ring) != free_slots:
                    report.problems.append(f"slots not all back at capacity {capacity}")
                report.slots_free_before += free_slots
                report.slots_free_after += _free_slots(ring)
        report.seconds = time.monotonic() - t0
        report.fds_after = open_fd_count()
    if seen.count(1) != len(seen):
        report.problems.append(f"{len(seen) - seen.count(1)} executions without a completion")
    if report.fds_after != report.fds_before:
        report.problems.append(f"descriptors: {report.fds_before} -> {report.fds_after}")
    return report


def _free_slots(ring: Any) -> int:
    """The free slots of an io_uring engine's ring (``RingIO``), or 0."""
    return len(ring._free_slots) if ring is not None else 0


def _check_all(cs: list[ul.Completion], mix: list[Kind], report: Report, seen: bytearray) -> None:
    """Check each completion against its kind, and that it is the first of
    its execution (``seen``: one mark per execution, by serial)."""
    for c in cs:
        i, serial = c.tag
        if seen[serial]:
            report.problems.append(f"a second completion for execution {serial}")
        seen[serial] = 1
        kind = mix[i]
        report.by_kind[kind.name] += 1
        report.executions += 1
        if (problem := kind.check(c)) is not None and len(report.problems) < 20:
            report.problems.append(problem)


def _soak_one(
    eng: ul.Engine,
    mix: list[Kind],
    executions: int,
    serial: int,
    rng: random.Random,
    report: Report,
    seen: bytearray,
) -> None:
    """Random batches of random kinds until ``executions`` were submitted
    (numbered from ``serial``); cancels land on the 'cancel' kind right
    after its submit."""
    submitted = 0
    cancel_kind = next(i for i, k in enumerate(mix) if k.name == "cancel")
    sample_every = max(1, executions // 20)
    next_sample = 0
    while submitted < executions:
        i = rng.randrange(len(mix))
        kind = mix[i]
        n = min(rng.randint(1, eng.capacity), executions - submitted)
        tags = [(i, serial + j) for j in range(n)]
        serial += n
        handles = eng.submit_many(
            kind.program, params=[kind.params() for _ in range(n)], tags=tags,
            deadline=kind.deadline,
        )  # fmt: skip
        submitted += n
        if i == cancel_kind:
            for h in handles:
                eng.cancel(h)
                report.cancels += 1
        done = eng.wait(rng.randint(0, min(8, eng.in_flight)), timeout=10)
        _check_all(done, mix, report, seen)
        if submitted >= next_sample:
            report.rss_kib.append(rss_kib())
            next_sample += sample_every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=("uring", "threads", "both"), default="both")
    args = parser.parse_args()
    for kind in ("uring", "threads") if args.engine == "both" else (args.engine,):
        r = soak(kind, args.executions)
        rss = r.rss_kib
        print(
            f"{kind}: {r.executions:,} executions in {r.seconds:.1f} s "
            f"({r.executions / r.seconds:,.0f}/s), {r.cancels:,} cancels; "
            f"by kind {dict(r.by_kind)}; descriptors {r.fds_before} -> {r.fds_after}; "
            f"free slots {r.slots_free_before} -> {r.slots_free_after}; "
            f"RSS {rss[0] if rss else 0:,} -> {rss[-1] if rss else 0:,} KiB "
            f"(max {max(rss, default=0):,}); problems: {r.problems or 'none'}"
        )


if __name__ == "__main__":
    main()
