"""Sweep pyperf benchmarks: batch size and chain length, uringlets against C/liburing.

    python benchmarks/bench_sweep.py -o results.json [--fast] [--batches 1,8,64] [--chains 1,64]

Batch-size sweep: executions per ``submit_many`` (per C ``submit_and_wait``) of
1, 2, 4, 8, 16, 32, 64, 128 and 256, for

nop4.bB-uringlets     one loop = submit_many(nop4, B) + wait(B), every completion checked ok;
                      one value = one execution
nop4.bB-c-liburing    benchmarks/c/uring_ref nop4 LOOPS B
file3.bB-uringlets    one loop = one pass over the 2,000 warm files in batches of B
                      executions, every completion checked ok and 4096 bytes read;
                      one value = one file
file3.bB-c-liburing   benchmarks/c/uring_ref file3 LOOPS DIR 2000 B

Chain-length sweep: programs of N = 1, 2, 4, 8, 16, 32 and 64 linked ``nop``
atoms (64 is ``MAX_ATOMS``), 64 executions per submit:

nop.nN-uringlets      one loop = submit_many(nopN, 64) + wait(64); one value = one execution
nop.nN-c-liburing     benchmarks/c/uring_ref nop LOOPS 64 N

The uringlets engine here is ``Engine("uring", capacity=1024, sq_entries=4096)``:
its submission ring holds the largest batch whole (256 x 4 SQEs of nop4, 64 x 64
of nop64), as the C reference's ring, which is sized to each batch, does.  With
the default ``sq_entries=256`` a batch of more than 256 SQEs is pushed in
several ``io_uring_enter`` calls.

These are many benchmarks, so each runs in fewer worker processes than the
main suite (``--processes 4`` by default; ``--fast``: 3 processes x 2 values),
and ``--batches`` / ``--chains`` pick a subset.
"""

from __future__ import annotations

import functools
import sys
import time

import bench_core
import pyperf
import workloads as wl

import uringlets as ul

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CHAINS = (1, 2, 4, 8, 16, 32, 64)
CHAIN_BATCH = 64
SQ_ENTRIES = 4096
SIZE = wl.FILE_SIZE
perf_counter = time.perf_counter


def _fail(what: str, detail: object) -> None:
    raise RuntimeError(f"{what}: {detail!r}")


@functools.cache
def engine() -> ul.Engine:
    eng = ul.Engine(engine="uring", capacity=1024, sq_entries=SQ_ENTRIES)
    if eng.kind != "uring":
        raise RuntimeError(f"expected the io_uring engine, got {eng.kind!r}")
    return eng


@functools.cache
def nop_program(n: int) -> ul.Program:
    return wl.nop_program(n)


def run_nop(loops: int, prog: ul.Program, batch: int) -> float:
    # Timed afresh on every call (a cached result would repeat one value).
    return bench_core.run_nop(loops, prog, batch, engine())


def time_nop4_uringlets(loops: int, batch: int) -> float:
    return run_nop(loops, nop_program(4), batch)


def time_nop4_c(loops: int, batch: int) -> float:
    return wl.c_ref_seconds("nop4", loops * batch, batch=batch)


def time_file3_uringlets(loops: int, batch: int) -> float:
    return bench_core.time_file3_uringlets(loops, engine(), batch)


def time_file3_c(loops: int, batch: int) -> float:
    bench_core.files()  # the same warm file set
    return wl.c_ref_seconds("file3", loops * wl.NFILES, batch=batch)


def time_chain_uringlets(loops: int, n: int) -> float:
    return run_nop(loops, nop_program(n), CHAIN_BATCH)


def time_chain_c(loops: int, n: int) -> float:
    return wl.c_ref_seconds("nop", loops * CHAIN_BATCH, batch=CHAIN_BATCH, chain=n)


def benchmarks(batches: tuple[int, ...], chains: tuple[int, ...]) -> dict[str, tuple]:
    """name: (time function, its argument, inner loops, unit, metadata)."""
    table: dict[str, tuple] = {}
    for b in batches:
        meta = {"sweep": "batch", "batch": b}
        table[f"nop4.b{b}-uringlets"] = (time_nop4_uringlets, b, b, "execution", meta)
        table[f"nop4.b{b}-c-liburing"] = (time_nop4_c, b, b, "execution", meta)
    for b in batches:
        meta = {"sweep": "batch", "batch": b}
        table[f"file3.b{b}-uringlets"] = (time_file3_uringlets, b, wl.NFILES, "file", meta)
        table[f"file3.b{b}-c-liburing"] = (time_file3_c, b, wl.NFILES, "file", meta)
    for n in chains:
        meta = {"sweep": "chain", "chain": n, "batch": CHAIN_BATCH}
        table[f"nop.n{n}-uringlets"] = (time_chain_uringlets, n, CHAIN_BATCH, "execution", meta)
        table[f"nop.n{n}-c-liburing"] = (time_chain_c, n, CHAIN_BATCH, "execution", meta)
    return table


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_cmdline_args(cmd: list[str], args: object) -> None:
    cmd.extend(("--batches", ",".join(map(str, args.batches))))
    cmd.extend(("--chains", ",".join(map(str, args.chains))))


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args, processes=4)
    runner.argparser.add_argument(
        "--batches",
        type=int_list,
        default=BATCHES,
        help="batch sizes, comma-separated (default: %(default)s)",
    )
    runner.argparser.add_argument(
        "--chains",
        type=int_list,
        default=CHAINS,
        help="chain lengths, comma-separated (default: %(default)s)",
    )
    args = runner.parse_args()
    if not args.worker:
        wl.build_c_ref()
        wl.ensure_files()
    elif not wl.C_REF.exists():
        sys.exit(f"{wl.C_REF} is missing: run make -C {wl.C_DIR}")

    runner.metadata.update(bench_core.git_metadata())
    runner.metadata["uringlets_version"] = ul.__version__
    runner.metadata["bench_files"] = f"{wl.NFILES} x {SIZE} B in {wl.bench_dir()}"
    runner.metadata["sweep_engine"] = (
        f'Engine("uring", capacity=1024, sq_entries={SQ_ENTRIES}); C: ring sized to the batch'
    )
    for name, (func, arg, inner_loops, unit, meta) in benchmarks(args.batches, args.chains).items():
        metadata = {"unit_of_work": unit, **meta}
        runner.bench_time_func(name, func, arg, inner_loops=inner_loops, metadata=metadata)


if __name__ == "__main__":
    main()
