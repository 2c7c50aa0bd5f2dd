"""The io_uring backend of ``Engine``: submit runs, reap CQEs, route them,
clean up.

Everything per-op was decided by the translator; this module only follows the
plan.  Its tables:

* ``_execs``: ``{execution index: Execution}`` as a list, ``None`` when free;
  the index and a generation are in every SQE's ``user_data``, so a late CQE
  for a finished or cancelled execution can never reach another one;
* ``_free_slots``: the empty slots of the sparse fixed-file table;
* ``_scratch``: ``{size: [(buffer, address)]}``, per-execution buffers.

Ownership.  An execution owns its slots, its scratch buffer and its
parameter buffers from ``start`` until ``_finish``; the kernel may write into
the scratch buffer only while a run is in flight, and ``_finish`` is reached
only after the CQE that ends the run, so the buffers outlive the kernel's use
of them.  A slot is released once: ``_finish`` empties the slots the
execution's own atoms did not close (or installs exported ones as real fds
first), then puts them back on the free list.  One execution, one completion:
``_finish`` asserts the execution is still in the table, removes it, and
posts exactly one ``Completion``.
"""

from __future__ import annotations

import errno
import os
import resource
import struct
from collections.abc import Callable, Sequence
from typing import Any

from . import atoms, kernel
from .errors import EngineClosed
from .kernel import ffi
from .notify import Completion
from .program import Program
from .syslet import stop_holds
from .translate import (
    LINK_SOFT,
    UD_CANCEL,
    UD_EXEC_MASK,
    UD_EXEC_SHIFT,
    UD_GEN_SHIFT,
    UD_INSTALL,
    V_SLOTS,
    PlanAtom,
)

lib = kernel.lib
_LAST_CLEAR = lib.IOSQE_IO_LINK | lib.IOSQE_IO_HARDLINK | lib.IOSQE_CQE_SKIP_SUCCESS
_CQ_OVERFLOW = lib.IORING_SQ_CQ_OVERFLOW
_AUX_EXPORT = 0xF
_SQE = struct.Struct("=BBHiQQIIQHHiQQ")
_MINUS_ONE = ffi.new("int32_t[1]", [-1])


def _check(ret: int, what: str) -> int:
    """Map a ``-errno`` return of the ring layer to OSError."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def _single_sqe(opcode: int, fd: int, addr: int, op_flags: int, flags: int, ud: int) -> bytes:
    return _SQE.pack(opcode, flags, 0, fd, 0, addr, 0, op_flags, ud, 0, 0, 0, 0, 0)


class Execution:
    """One submission of a program.  ``row`` is its value row (user_data
    base, scratch address, slots, params, variable lengths) and is patched in
    place when a short result changes a later length.  ``run_first..run_last``
    is the run in the kernel (or the userspace step waiting for installs)."""

    __slots__ = (
        "cancelled",
        "exports",
        "index",
        "installed",
        "keep",
        "pending",
        "plan",
        "program",
        "raw",
        "results",
        "row",
        "run_first",
        "run_last",
        "scratch",
        "sink",
        "slots",
        "stopped_at",
        "tag",
        "ud",
        "values",
    )

    def __init__(self, program: Program, tag: Any, index: int, ud: int) -> None:
        self.program = program
        self.plan = program.plan
        self.tag = tag
        self.index = index
        self.ud = ud
        self.results: list[int | None] = [None] * len(program.atoms)
        self.values: dict[int, Any] | None = None
        self.raw: dict[int, int] | None = None
        self.installed: dict[int, int] | None = None  # aux -> fd or -errno
        self.pending = 0  # install CQEs still to come
        self.exports: dict[int, int] | None = None  # creator atom -> fd
        self.stopped_at: int | None = None
        self.cancelled = False
        self.sink: list[Completion] | None = None
        self.keep: list[Any] | None = None
        self.run_first = self.run_last = -1


class UringBackend:
    """Owns one ring and its fixed-file table.  Not thread-safe: the Engine
    calls it from its owner thread only."""

    kind = "uring"

    def __init__(
        self,
        post: Callable[[Completion], None],
        capacity: int,
        sq_entries: int,
        features: kernel.KernelFeatures,
    ) -> None:
        if capacity > UD_EXEC_MASK + 1:
            raise ValueError(f"capacity is at most {UD_EXEC_MASK + 1}")
        self._post = post
        self.features = features
        cq_entries = 1 << max(capacity * 2, sq_entries * 2, 16).bit_length()
        self._ring, self.setup_flags, self.dropped_flags = kernel.setup_ring(
            sq_entries, min(cq_entries, 65536)
        )
        ring = self._ring
        self.sq_entries = int(ring.sq_entries)
        soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nslots = max(16, min(capacity * 4, soft_nofile, 65536))
        try:
            _check(lib.ur_register_sparse_files(ring, nslots), "register files")
        except OSError:
            lib.ur_teardown(ring)
            raise
        self.nslots = nslots
        self._free_slots = list(range(nslots - 1, -1, -1))
        self._execs: list[Execution | None] = [None] * capacity
        self._gens = [0] * capacity
        self._free = list(range(capacity - 1, -1, -1))
        self._scratch: dict[int, list[tuple[Any, int]]] = {}
        self._reap_max = int(ring.cq_entries)
        self._uds = ffi.new("uint64_t[]", self._reap_max)
        self._ress = ffi.new("int32_t[]", self._reap_max)
        self._single: list[Any] = []  # one-off SQE images until they are pushed
        self.in_flight = 0
        self.broken: str | None = None

    # -- submission ------------------------------------------------------------
    def can_start(self, program: Program, n: int) -> bool:
        return len(self._free_slots) >= n * program.plan.nslots and len(self._free) >= n

    def start(
        self,
        program: Program,
        binds: Sequence[dict[str, Any]],
        tags: Sequence[Any],
        sink: list[Completion] | None = None,
    ) -> list[int]:
        """Start one execution per bind (the caller checked ``can_start``).
        Returns their user_data bases, the handles' identities."""
        plan = program.plan
        nslots = plan.nslots
        defaults = plan.value_defaults
        pool = self._scratch.setdefault(plan.scratch_size, [])
        free, gens, execs, free_slots = self._free, self._gens, self._execs, self._free_slots
        started: list[Execution] = []
        rows: list[int] = []
        for bind, tag in zip(binds, tags, strict=True):
            e = free.pop()
            gen = gens[e] = (gens[e] + 1) & 0x7FFFFFFF
            ud = gen << UD_GEN_SHIFT | e << UD_EXEC_SHIFT
            ex = Execution(program, tag, e, ud)
            ex.sink = sink
            if pool:
                ex.scratch = pool.pop()
            else:
                buf = ffi.new("char[]", plan.scratch_size)
                ex.scratch = (buf, int(ffi.cast("uintptr_t", buf)))
            row = list(defaults)
            row[0] = ud
            row[1] = ex.scratch[1]
            if nslots:
                ex.slots = [free_slots.pop() for _ in range(nslots)]
                row[V_SLOTS : V_SLOTS + nslots] = ex.slots
            else:
                ex.slots = ()
            if plan.params:
                self._bind(ex, row, bind)
            ex.row = row
            execs[e] = ex
            started.append(ex)
            rows += row
        self.in_flight += len(started)
        first = plan.segments[0]
        if first.in_kernel and first.last - first.first < self.sq_entries:
            count = first.last + 1
            for ex in started:
                ex.run_first, ex.run_last = 0, first.last
            values = ffi.new("int64_t[]", rows)
            self._push(plan.images_c, 0, count, plan, values, len(defaults), len(started))
        else:
            for ex in started:
                self._advance(ex, 0)
        self._enter(0)
        return [ex.ud for ex in started]

    def _bind(self, ex: Execution, row: list[int], bind: dict[str, Any]) -> None:
        keep = ex.keep = []
        for use in ex.plan.params:
            value = bind[use.name]
            if use.kind == "path":
                buf = ffi.new("char[]", value)
                keep.append(buf)
                row[use.value] = int(ffi.cast("uintptr_t", buf))
            elif use.kind == "data":
                buf = ffi.from_buffer(value or b"\0")
                keep.append(buf)
                row[use.value] = int(ffi.cast("uintptr_t", buf))
                assert use.length_value is not None
                row[use.length_value] = len(value)
            else:
                row[use.value] = value

    def _push(
        self, images: Any, first: int, count: int, plan: Any, values: Any, nvalues: int, n: int
    ) -> None:
        """Queue ``n`` runs of images ``first..first+count-1``; enter the
        kernel whenever the SQ ring is full."""
        done = 0
        while done < n:
            k = lib.ur_push(
                self._ring,
                images,
                first,
                count,
                plan.patches if plan else ffi.NULL,
                plan.npatches if plan else 0,
                values + done * nvalues,
                nvalues,
                n - done,
                _LAST_CLEAR,
            )
            _check(k, "push")
            done += k
            if done < n:
                self._enter(0)

    def _push_run(self, ex: Execution, first: int, last: int) -> None:
        count = min(last - first + 1, self.sq_entries)
        ex.run_first, ex.run_last = first, first + count - 1
        values = ffi.new("int64_t[]", ex.row)
        self._push(ex.plan.images_c, first, count, ex.plan, values, len(ex.row), 1)

    def _push_single(self, sqe: bytes) -> None:
        buf = ffi.from_buffer(sqe)
        self._push(buf, 0, 1, None, ffi.new("int64_t[1]"), 1, 1)

    # -- entering the kernel ------------------------------------------------
    def _enter(self, min_complete: int, timeout_ns: int = -1) -> bool:
        """Submit what is queued, and wait for ``min_complete`` CQEs at most
        ``timeout_ns``.  Returns False if the wait timed out or a signal
        interrupted it."""
        ring = self._ring
        if min_complete == 0 and ring.pending == 0:
            return True
        r = lib.ur_enter(ring, min_complete, timeout_ns)
        if r >= 0:
            return True
        if r in (-errno.ETIME, -errno.EINTR):
            return False
        if r == -errno.EBUSY:  # CQ overflow backpressure on old kernels: reap first
            self.reap(0, -1)
            return True
        if r == -errno.EBADR:
            self._break("the kernel dropped a CQE (CQ overflow allocation failure)")
        _check(r, "io_uring_enter")
        return True

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        """Wait for ``min_complete`` CQEs (at most ``timeout_ns``, < 0 no
        limit), then route every CQE there is.  Returns False on timeout."""
        ok = self._enter(min_complete, timeout_ns)
        ring, uds, ress, cap = self._ring, self._uds, self._ress, self._reap_max
        while True:
            n = lib.ur_reap(ring, uds, ress, cap)
            if n:
                self._route(ffi.unpack(uds, n), ffi.unpack(ress, n))
            if ring.pending or lib.ur_sq_flags(ring) & _CQ_OVERFLOW:
                # resumes were queued, or CQEs wait in the overflow list
                lib.ur_enter(ring, 0, -1)
                continue
            if n < cap:
                return ok

    def _break(self, why: str) -> None:
        self.broken = why
        raise EngineClosed(f"engine broken: {why}")

    # -- routing CQEs ------------------------------------------------------------
    def _route(self, uds: list[int], ress: list[int]) -> None:
        execs = self._execs
        for ud, res in zip(uds, ress, strict=True):
            atom = ud & 0xFF
            ex = execs[(ud >> UD_EXEC_SHIFT) & UD_EXEC_MASK]
            if ex is None or ex.ud != ud & ~0xFFF:
                if atom == UD_CANCEL:
                    continue  # the cancel outlived its execution: harmless
                self._break(f"CQE for no execution in flight (user_data={ud:#x}, res={res})")
                return
            if atom == UD_CANCEL:
                continue
            if atom >= UD_INSTALL:
                self._installed(ex, atom - UD_INSTALL, (ud >> 8) & 0xF, res)
            elif atom == ex.run_last:
                self._run_over(ex, atom, res)
            else:
                if ex.raw is None:
                    ex.raw = {}
                ex.raw[atom] = res
                pa = ex.plan.atoms[atom]
                if pa.skip and pa.link == LINK_SOFT:
                    # A skip-flagged request posts only when it failed, and then
                    # the kernel silences the rest of its chain.
                    self._run_over(ex, atom, res)

    def _broke(self, ex: Execution, pa: PlanAtom, r: int) -> bool:
        full = ex.row[pa.length_value] if pa.length_value is not None else None
        return pa.op.kernel_fails(r, pa.args, full)

    def _run_over(self, ex: Execution, posted: int, res: int) -> None:
        """The run ``run_first..run_last`` is over; ``posted`` is the atom whose
        CQE ended it.  Record results, test stop rules, go on."""
        patoms = ex.plan.atoms
        raw = ex.raw
        ex.raw = None
        results = ex.results
        last = ex.run_last
        for i in range(ex.run_first, posted + 1):
            pa = patoms[i]
            if i == posted:
                r = res
            elif raw is not None and i in raw:
                r = raw[i]
            else:
                assert pa.skip and pa.success is not None, "a CQE was lost"
                r = pa.success
            r = pa.op.normalise(r)
            results[i] = r
            if r >= 0 and pa.out is not None:
                self._collect(ex, pa, r)
            for v in pa.feeds:  # later lengths follow what was really received
                ex.row[v] = r if r > 0 else 0
            if stop_holds(pa.stop, r):
                ex.stopped_at = i
                self._finish(ex)
                return
            if i < last and pa.link == LINK_SOFT and self._broke(ex, pa, r):
                # The kernel cancelled the rest though the stop rule did not
                # hold: resume in userspace (unless cancelled).
                self._continue(ex, i + 1)
                return
        assert posted == last, "a run ended early without a broken link"
        self._continue(ex, last + 1)

    def _continue(self, ex: Execution, i: int) -> None:
        if ex.cancelled:
            self._finish(ex)
        else:
            self._advance(ex, i)

    def _collect(self, ex: Execution, pa: PlanAtom, r: int) -> None:
        """Copy a successful atom's output out of the scratch buffer: the
        completion owns its bytes, and the buffer goes back to the pool."""
        assert pa.out is not None
        offset, size = pa.out
        data = ffi.buffer(ex.scratch[0] + offset, size)
        if ex.values is None:
            ex.values = {}
        if pa.op.result == atoms.STAT:
            ex.values[pa.index] = atoms.decode_statx(data[:])
        else:
            ex.values[pa.index] = data[:r]

    # -- the plan, step by step --------------------------------------------------
    def _advance(self, ex: Execution, i: int) -> None:
        """Run the program from atom ``i``: userspace steps here and now,
        the next kernel segment pushed (entered by the caller), or finish."""
        plan = ex.plan
        n = len(plan.atoms)
        while i < n:
            seg = plan.segments[plan.segment_of[i]]
            if seg.in_kernel:
                self._push_run(ex, i, seg.last)
                return
            pa = plan.atoms[i]
            if pa.fd_slots and ex.installed is None:
                self._install(ex, i, [ex.slots[s] for s in pa.fd_slots.values()])
                return
            r = self._userspace(ex, pa)
            ex.results[i] = r
            if stop_holds(pa.stop, r):
                ex.stopped_at = i
                break
            if ex.cancelled:
                break
            i += 1
        self._finish(ex)

    def _install(self, ex: Execution, atom: int, slots: list[int]) -> None:
        """Install the slots a userspace step needs as real fds
        (FIXED_FD_INSTALL); the CQEs come back to ``_installed``, numbered by
        argument in the aux bits."""
        ex.installed = {}
        ex.pending = len(slots)
        ex.run_first = ex.run_last = -1
        op = kernel.opcode("FIXED_FD_INSTALL")
        for n, slot in enumerate(slots):
            ud = ex.ud | n << 8 | (UD_INSTALL + atom)
            self._push_single(_single_sqe(op, slot, 0, 0, lib.IOSQE_FIXED_FILE, ud))

    def _installed(self, ex: Execution, atom: int, aux: int, res: int) -> None:
        assert ex.installed is not None and ex.pending > 0, "unexpected install CQE"
        ex.installed[atom if aux == _AUX_EXPORT else aux] = res
        ex.pending -= 1
        if ex.pending:
            return
        if ex.exports is not None:  # the exports of a finishing execution
            self._finish(ex)
        else:
            self._advance(ex, atom)

    def _userspace(self, ex: Execution, pa: PlanAtom) -> int:
        """Run one atom with its blocking call, on real fds; installed fds
        are closed afterwards.  Returns the normalised result."""
        installed = ex.installed or {}
        ex.installed = None
        args = dict(pa.args)
        try:
            for n, name in enumerate(pa.fd_slots):
                fd = installed.get(n, -errno.EBADF)
                if fd < 0:
                    return fd
                args[name] = fd
            for spec in pa.op.args:
                value = args[spec.name]
                if spec.kind == "data" and hasattr(value, "index"):
                    args[spec.name] = (ex.values or {}).get(value.index, b"")
                elif hasattr(value, "name") and not isinstance(value, (bytes, str)):
                    args[spec.name] = None  # Params in userspace steps: not yet
            try:
                r, value = pa.op.outcome(pa.op.call(args))
            except OSError as exc:
                return atoms.errno_result(exc)
            if value is not None:
                if ex.values is None:
                    ex.values = {}
                ex.values[pa.index] = value
            return r
        finally:
            for fd in installed.values():
                if fd >= 0:
                    os.close(fd)

    # -- endings ------------------------------------------------------------------
    def _live_slots(self, ex: Execution) -> list[int]:
        """Local slots filled by the execution's atoms and not closed by them."""
        plan, results = ex.plan, ex.results
        live = {c for c in plan.creators if results[c] == 0}
        for closer, creator in plan.closers:
            if results[closer] == 0:
                live.discard(creator)
        return sorted(live)

    def _finish(self, ex: Execution) -> None:
        plan = ex.plan
        live = self._live_slots(ex) if plan.nslots else []
        if ex.exports is None and ex.program.exports:
            wanted = [i for i in ex.program.exports if i in live]
            ex.exports = {}
            if wanted:
                slot_of = {c: k for k, c in enumerate(plan.creators)}
                ex.installed = {}
                ex.pending = len(wanted)
                op = kernel.opcode("FIXED_FD_INSTALL")
                for creator in wanted:
                    ud = ex.ud | _AUX_EXPORT << 8 | (UD_INSTALL + creator)
                    slot = ex.slots[slot_of[creator]]
                    self._push_single(_single_sqe(op, slot, 0, 0, lib.IOSQE_FIXED_FILE, ud))
                return
        if ex.installed and ex.exports is not None:
            for creator, fd in ex.installed.items():
                if fd >= 0:
                    ex.exports[creator] = fd
            ex.installed = None
        # Empty the slots the atoms left filled; each slot is released once.
        if live:
            slot_of = {c: k for k, c in enumerate(plan.creators)}
            for creator in live:
                slot = ex.slots[slot_of[creator]]
                _check(lib.ur_update_files(self._ring, slot, _MINUS_ONE, 1), "close slot")
        assert self._execs[ex.index] is ex, "an execution finished twice"
        self._execs[ex.index] = None
        self._free.append(ex.index)
        self._free_slots += ex.slots
        self._scratch[plan.scratch_size].append(ex.scratch)
        self.in_flight -= 1
        values = ex.values
        if ex.exports:
            values = dict(values or {})
            values.update(ex.exports)
        c = Completion(ex.tag, ex.program, ex.results, ex.stopped_at, ex.cancelled, values)
        if ex.sink is not None:
            ex.sink.append(c)
        self._post(c)

    # -- cancel and close -------------------------------------------------------
    def cancel(self, ud: int) -> bool:
        """Ask the kernel to cancel the run in flight of execution ``ud``.
        Returns False if it is no longer in flight."""
        ex = self._execs[(ud >> UD_EXEC_SHIFT) & UD_EXEC_MASK]
        if ex is None or ex.ud != ud:
            return False
        self._cancel(ex)
        self._enter(0)
        return True

    def _cancel(self, ex: Execution) -> None:
        ex.cancelled = True
        if ex.run_first < 0:
            return
        op = kernel.opcode("ASYNC_CANCEL")
        flags = lib.IORING_ASYNC_CANCEL_ALL
        for atom in range(ex.run_first, ex.run_last + 1):
            sqe = _single_sqe(op, -1, ex.ud | atom, flags, 0, ex.ud | UD_CANCEL)
            self._push_single(sqe)

    def close(self) -> None:
        """Cancel everything in flight, wait until the kernel has let go of
        every buffer (every run's last CQE), then tear the ring down."""
        try:
            if self.broken is None:
                for ex in list(self._execs):
                    if ex is not None:
                        self._cancel(ex)
                rounds = 0
                while self.in_flight:
                    if not self.reap(1, 1_000_000_000):
                        rounds += 1
                        for ex in list(self._execs):
                            if ex is not None:
                                self._cancel(ex)
                        if rounds > 30:
                            break
        finally:
            lib.ur_teardown(self._ring)
