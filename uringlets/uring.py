"""The io_uring backend of ``Engine``: submit runs, reap CQEs, route them,
clean up.

Everything per-op was decided by the translator; this module only follows the
plan.  Its tables:

* ``_batches``: one entry per batch of executions in flight (``Batch``), the
  entry's number and a generation in every SQE's ``user_data`` beside the
  execution's place ``k`` in its batch, so a late CQE for a finished or
  cancelled execution can never reach another one;
* ``_free_slots``: the empty slots of the sparse fixed-file table;
* ``_scratch``: ``{size: [(buffer, address, view)]}``, per-execution buffers.

Starting a batch costs Python a constant amount of work plus a few
C-speed column operations; an execution gets an ``Execution`` object of its
own only when it leaves the clean path (``Batch.slow``).  The clean path
(``plan.clean``: a program that is one kernel link, where the CQE of its last
atom says it all) is handled inline in ``_route``; anything else walks the
plan (``_run_over``, ``_advance``, ``_finish``).

Ownership.  An execution owns its slots, its scratch buffer and its
parameter buffers (through its batch) from ``start`` until it finishes; the
kernel may write into the scratch buffer only while a run is in flight, and
an execution finishes only after the CQE that ends its run, so the buffers
outlive the kernel's use of them.  A slot is released once: ``_finish``
empties the slots the execution's own atoms did not close (or installs
exported ones as real fds first), then puts them back on the free list.  One
execution, one completion: ``Batch.done[k]`` is set exactly once, where the
completion is posted.
"""

from __future__ import annotations

import errno
import os
import resource
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate, compress, groupby, islice, repeat
from operator import add, itemgetter, setitem
from typing import Any

from . import atoms, kernel
from .errors import EngineClosed
from .execution import Batch, Execution, check_ret, init_scratch, single_sqe
from .kernel import ffi
from .notify import Completion, NotificationRing
from .plan import (
    LINK_SOFT,
    MAX_CAPACITY,
    UD_BATCH_MASK,
    UD_BATCH_SHIFT,
    UD_CANCEL,
    UD_GEN_MASK,
    UD_GEN_SHIFT,
    UD_INSTALL,
    UD_K_FIELD,
    UD_K_MASK,
    UD_K_SHIFT,
    UD_LINK_TIMEOUT,
    CleanPath,
    Plan,
    PlanAtom,
)
from .program import Program
from .syslet import Param, Ref, stop_holds, stop_holds_for_any
from .threads import call_blocking

lib = kernel.lib
_LAST_CLEAR = lib.IOSQE_IO_LINK | lib.IOSQE_IO_HARDLINK | lib.IOSQE_CQE_SKIP_SUCCESS
_CQ_OVERFLOW = lib.IORING_SQ_CQ_OVERFLOW
_AUX_EXPORT = 0xF
_MINUS_ONE = ffi.new("int32_t[1]", [-1])
_K_STEP = 1 << UD_K_SHIFT
_UD_BASE_MASK = ~(UD_K_FIELD | 0xFFF)  # user_data -> its batch's ud_base
_address = itemgetter(1)  # of a scratch entry (buffer, address, view)
_view = itemgetter(2)
_first = itemgetter(0)
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # runs an iterator out, in C
_ZERO = (0,)


def _clean_values(clean: CleanPath, scratch: Any, r: int) -> dict[int, Any]:
    """The values of a clean execution, copied out of its scratch buffer
    (which goes back to the pool): the skipped reads were full, the last
    atom's value has its result ``r``."""
    view = scratch[2]
    values = {i: view[off : off + size] for i, off, size in clean.outs}
    if clean.last_out is not None and r >= 0:
        i, off, size = clean.last_out
        if clean.last_bytes:
            values[i] = view[off : off + r]
        else:
            values[i] = clean.last.op.value_from(ffi.buffer(scratch[0] + off, size), r)
    return values


class UringBackend:
    """Owns one ring and its fixed-file table.  Not thread-safe: the Engine
    calls it from its owner thread only."""

    kind = "uring"

    def __init__(
        self,
        notify: NotificationRing,
        capacity: int,
        sq_entries: int,
    ) -> None:
        if capacity > MAX_CAPACITY:
            raise ValueError(f"capacity is at most {MAX_CAPACITY}")
        self._notify = notify
        cq_entries = 1 << max(capacity * 2, sq_entries * 2, 16).bit_length()
        self._ring, self.setup_flags, self.dropped_flags = kernel.setup_ring(
            sq_entries, min(cq_entries, 65536)
        )
        ring = self._ring
        self.sq_entries = int(ring.sq_entries)
        soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nslots = max(16, min(capacity * 4, soft_nofile, 65536))
        try:
            check_ret(lib.ur_register_sparse_files(ring, nslots), "register files")
        except OSError:
            lib.ur_teardown(ring)
            raise
        self.nslots = nslots
        self._free_slots = list(range(nslots - 1, -1, -1))
        # A batch holds at least one execution in flight, and the
        # notification ring bounds those by capacity: the table never fills.
        self._batches: list[Batch | None] = [None] * capacity
        self._free_batches = list(range(capacity - 1, -1, -1))
        self._generations = [0] * capacity
        # fast_ud of each entry's batch (0: none), for ur_reap_split
        self._fast = ffi.new("uint64_t[]", capacity)
        self._scratch: dict[
            int, list[tuple[Any, int, Any]]
        ] = {}  # {size: [(buffer, address, view)]}
        self._reap_max = int(ring.cq_entries)
        self._uds = ffi.new("uint64_t[]", self._reap_max)
        self._ress = ffi.new("int32_t[]", self._reap_max)
        self._clean_b = ffi.new("uint32_t[]", self._reap_max)
        self._clean_k = ffi.new("uint32_t[]", self._reap_max)
        self._clean_res = ffi.new("int32_t[]", self._reap_max)
        self._nclean = ffi.new("unsigned[1]")
        self._clean_span = ffi.new("int32_t[2]")  # lowest and highest clean res
        self.in_flight = 0
        self.broken: str | None = None

    # -- submission ------------------------------------------------------------
    def can_start(self, program: Program, n: int) -> bool:
        return len(self._free_slots) >= n * program.plan.nslots

    def start(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        n: int,
        tags: Sequence[Any],
        sink: list[Completion] | None = None,
    ) -> Sequence[int]:
        """Start ``n`` executions as one batch (the caller checked
        ``can_start`` and reserved their completions): build the batch's
        value columns, push the first runs in one call, and enter the kernel
        once.  Returns the executions' user_data bases."""
        plan = program.plan
        nslots = plan.nslots
        index = self._free_batches.pop()
        # never 0, so that no fast_ud is 0
        generation = self._generations[index] = self._generations[index] % UD_GEN_MASK + 1
        ud_base = generation << UD_GEN_SHIFT | index << UD_BATCH_SHIFT
        # {value index: column of n values}; value v of execution k is
        # flat[v * n + k] (see ur_push).  Columns are arrays: a constant
        # column is one memcpy (array * n), a list converts in C.
        columns: list[Any] = []
        scratch: list[Any] | None = None
        if plan.out_size:
            pool = self._scratch.setdefault(plan.scratch_size, [])
            while len(pool) < n:
                buf = ffi.new("char[]", plan.scratch_size)
                pool.append((buf, int(ffi.cast("uintptr_t", buf)), ffi.buffer(buf)))
            scratch = pool[-n:]
            del pool[-n:]
            columns.append(array("q", map(_address, scratch)))
        else:
            columns.append(array("q", _ZERO) * n)
        slots: list[int] = []
        if nslots:
            free_slots = self._free_slots
            slots = free_slots[-n * nslots :]
            del free_slots[-n * nslots :]
            columns += [array("q", slots[s::nslots]) for s in range(nslots)]
        defaults = plan.value_defaults
        columns += [array("q", (defaults[v],)) * n for v in range(len(columns), len(defaults))]
        keep = self._bind(plan, params, columns) if plan.params else None
        flat = columns[0]
        for column in columns[1:]:
            flat += column
        batch = Batch(program, params, keep, flat, n, tags, sink)
        batch.index, batch.ud_base = index, ud_base
        batch.scratch, batch.slots = scratch, slots
        if plan.scratch_init:
            assert scratch is not None
            for k in range(n):

                def value_of(v: int, k: int = k) -> int:
                    return flat[v * n + k]

                init_scratch(plan, scratch[k][1], value_of)
        first = plan.segments[0]
        first_sqes = plan.atoms[first.last].sqe_end if first.in_kernel else 0
        whole = first.in_kernel and first_sqes <= self.sq_entries
        if whole:
            batch.run_last = first.last
            if plan.clean is not None:
                batch.fast_ud = self._fast[index] = ud_base | first.last
        self._batches[index] = batch
        self.in_flight += n
        if whole:
            values = ffi.from_buffer("int64_t[]", flat)
            self._push(plan.images_c, 0, first_sqes, plan, values, n, n, ud_base, _K_STEP)
        else:
            for k in range(n):
                self._advance(self._promote(batch, k), 0)
        self._enter(0)
        return range(ud_base, ud_base + n * _K_STEP, _K_STEP)

    @staticmethod
    def _bind(plan: Plan, params: Mapping[str, list[Any]], columns: list[Any]) -> Any:
        """Fill the parameter columns.  Paths and data of the whole batch go
        into one buffer each (a path NUL-terminated), which every execution of
        the batch keeps alive.  Returns what must be kept."""
        keep = []
        for use in plan.params:
            items = params[use.name]
            if use.kind in ("path", "data"):
                sep = b"\0" if use.kind == "path" else b""
                blob = sep.join(items) + b"\0"
                buf = ffi.from_buffer(blob)
                keep.append((blob, buf))
                address = int(ffi.cast("uintptr_t", buf))
                # item j starts after items 0..j-1 and their separators
                steps = map(add, map(len, islice(items, len(items) - 1)), repeat(len(sep)))
                columns[use.value] = array("q", accumulate(steps, initial=address))
                if use.length_value is not None:
                    columns[use.length_value] = array("q", map(len, items))
            else:
                columns[use.value] = array("q", items)
        return keep

    def _promote(self, batch: Batch, k: int) -> Execution:
        """Take execution ``k`` of ``batch`` off the clean path."""
        ex = batch.slow[k] = Execution(batch, k)
        batch.promoted = True
        return ex

    def _row(self, ex: Execution) -> list[int]:
        """The execution's value row, copied out of its batch's columns the
        first time a resume needs to patch it."""
        if ex.row is None:
            batch, k = ex.batch, ex.k
            flat, n = batch.flat, batch.n
            ex.row = [flat[v * n + k] for v in range(len(ex.program.plan.value_defaults))]
        return ex.row

    def _push(
        self,
        images: Any,
        first: int,
        count: int,
        plan: Plan | None,
        values: Any,
        stride: int,
        n: int,
        ud_first: int,
        ud_step: int = 0,
    ) -> None:
        """Queue ``n`` runs of images ``first..first+count-1`` with their value
        columns, run ``i`` with user_data base ``ud_first + i * ud_step``;
        enter the kernel whenever the SQ ring is full."""
        done = 0
        patches = plan.patches if plan is not None else ffi.NULL
        npatches = plan.npatches if plan is not None else 0
        while done < n:
            k = lib.ur_push(
                self._ring,
                images,
                first,
                count,
                patches,
                npatches,
                values + done,
                stride,
                n - done,
                _LAST_CLEAR,
                ud_first + done * ud_step,
                ud_step,
            )
            check_ret(k, "push")
            done += k
            if done < n:
                self._enter(0)

    def _push_run(self, ex: Execution, first: int, last: int) -> None:
        """Push atoms ``first..last`` of a segment, or as many of them as fit
        the SQ ring whole (an atom and its LINK_TIMEOUT are never split)."""
        plan = ex.program.plan
        patoms = plan.atoms
        start = patoms[first].sqe
        end = first
        while end < last and patoms[end + 1].sqe_end - start <= self.sq_entries:
            end += 1
        count = patoms[end].sqe_end - start
        ex.run_first, ex.run_last = first, end
        if plan.scratch_init:  # lengths may have changed since the last run
            init_scratch(plan, ex.scratch[1], self._row(ex).__getitem__)
        row = ffi.new("int64_t[]", self._row(ex))
        self._push(plan.images_c, start, count, plan, row, 1, 1, ex.ud)

    def _push_single(self, sqe: bytes) -> None:
        self._push(ffi.from_buffer(sqe), 0, 1, None, ffi.new("int64_t[1]"), 1, 1, 0)

    # -- entering the kernel ------------------------------------------------
    def _enter(self, min_complete: int, timeout_ns: int = -1) -> bool:
        """Submit what is queued, and wait for ``min_complete`` CQEs at most
        ``timeout_ns``.  Returns False if the wait timed out or a signal
        interrupted it."""
        ring = self._ring
        if not ring.pending:
            # Nothing to submit: no system call when the CQ ring already
            # holds what is asked for, or when nothing is in flight.  A poll
            # (min_complete 0) on an empty CQ ring does enter: with
            # DEFER_TASKRUN completions are only posted inside the call.
            ready = lib.ur_cq_ready(ring)
            if (ready and ready >= min_complete) or (not min_complete and not self.in_flight):
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
        check_ret(r, "io_uring_enter")
        return True

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        """Wait for ``min_complete`` CQEs (at most ``timeout_ns``, < 0 no
        limit), then route every CQE there is.  Returns False on timeout."""
        ok = self._enter(min_complete, timeout_ns)
        ring, uds, ress, cap = self._ring, self._uds, self._ress, self._reap_max
        fast, nbatches = self._fast, len(self._batches)
        clean_b, clean_k, clean_res = self._clean_b, self._clean_k, self._clean_res
        nclean, span = self._nclean, self._clean_span
        unpack = ffi.unpack
        while True:
            n = lib.ur_reap_split(
                ring, fast, nbatches, uds, ress, clean_b, clean_k, clean_res, cap, nclean, span
            )
            if n:
                nc = nclean[0]
                # The others first: they include the posted CQEs the clean
                # endings after them look for.
                if n > nc:
                    self._route_others(unpack(uds, n - nc), unpack(ress, n - nc))
                if nc:
                    self._route_clean(
                        unpack(clean_b, nc), unpack(clean_k, nc), unpack(clean_res, nc), span
                    )
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
    def _route_others(self, uds: list[int], ress: list[int]) -> None:
        batches = self._batches
        for ud, res in zip(uds, ress, strict=True):
            self._route_one(batches[(ud >> UD_BATCH_SHIFT) & UD_BATCH_MASK], ud, res)

    def _route_clean(self, bis: list[int], ks: list[int], ress: list[int], span: Any) -> None:
        """Finish the executions whose clean ending arrived (``ur_reap_split``
        found them: the CQE of a program's last atom, ``Batch.fast_ud``), a
        batch at a time; usually all of them belong to one batch.  ``span``:
        the lowest and highest of ``ress``."""
        if bis.count(bis[0]) == len(bis):
            b = self._batches[bis[0]]
            self._finish_clean(b, ks, ress, span[0], span[1])  # type: ignore[arg-type]
            return
        # Several batches: sorted by batch (then k), in C, and cut into runs.
        batches = self._batches
        for bi, run in groupby(sorted(zip(bis, ks, ress, strict=True)), _first):
            _, run_ks, run_ress = zip(*run, strict=True)
            lo, hi = min(run_ress), max(run_ress)
            b = batches[bi]
            assert b is not None
            self._finish_clean(b, list(run_ks), list(run_ress), lo, hi)

    def _finish_clean(self, b: Batch, ks: list[int], ress: list[int], lo: int, hi: int) -> None:
        """Finish executions ``ks`` of batch ``b`` from the CQEs of their last
        atoms (``ress``, from ``lo`` to ``hi``), without walking the plan:
        every skip-flagged atom returned its known success result
        (``clean.results``).  The work is done a column at a time, in C where
        Python allows it; one completion each, all made by one ``map``."""
        if b.promoted:  # those off the clean path take the general one
            stays = [not (k in b.slow or b.done[k]) for k in ks]
            for k, res, stay in zip(ks, ress, stays, strict=True):
                if not stay:
                    self._route_one(b, b.fast_ud | k << UD_K_SHIFT, res)
            ks = list(compress(ks, stays))
            ress = list(compress(ress, stays))
            if not ks:
                return
            lo, hi = min(ress), max(ress)
        clean: CleanPath = b.clean  # type: ignore[assignment]
        if clean.posted:  # earlier CQEs decide: take out those that failed
            posted = [self._posted_ok(b, k, clean) for k in ks]
            if not all(posted):
                for k, res, ok in zip(ks, ress, posted, strict=True):
                    if not ok:  # something failed: the general path
                        self._run_over(self._promote(b, k), clean.last.index, res)
                ks = list(compress(ks, posted))
                ress = list(compress(ress, posted))
                if not ks:
                    return
                lo, hi = min(ress), max(ress)
        n = len(ks)
        rs = ress
        if clean.normalise is not None:
            rs = list(map(clean.normalise, ress))
            lo, hi = min(rs), max(rs)
        prefix = clean.results[:-1]
        if clean.posted:
            results = [self._posted_results(b, k, clean, r) for k, r in zip(ks, rs, strict=True)]
        else:
            results = [[*prefix, r] for r in rs]
        stop = clean.stop
        if stop_holds_for_any(stop, lo, hi, rs):
            last = clean.last.index
            stopped: Any = [last if stop_holds(stop, r) else None for r in rs]
            oks: Any = [s is None for s in stopped]
        else:
            stopped, oks = repeat(None, n), repeat(True, n)
        values: Any = repeat(None, n)
        if clean.buffers:
            assert b.scratch is not None
            scratch = list(map(b.scratch.__getitem__, ks))
            if clean.last_out is None and len(clean.outs) == 1:  # one full read: file3
                i, off, size = clean.outs[0]
                end = off + size
                values = [{i: view[off:end]} for view in map(_view, scratch)]
            elif clean.last_out is not None and clean.last_bytes and not clean.outs and lo >= 0:
                i, off, _ = clean.last_out  # the last atom's bytes: rr's recv
                views = map(_view, scratch)
                values = [{i: view[off : off + r]} for view, r in zip(views, rs, strict=True)]
            else:
                values = [_clean_values(clean, s, r) for s, r in zip(scratch, rs, strict=True)]
            self._scratch[clean.scratch_size] += scratch
        fields = zip(
            map(b.tags.__getitem__, ks),
            repeat(b.program, n),
            results,
            stopped,
            repeat(False, n),
            values,
            oks,
            strict=True,
        )
        completions = list(map(tuple.__new__, repeat(Completion, n), fields))
        # release: done marks, slots (all closed by the program's own atoms on
        # this path), scratch buffers (above); then the completions.
        ns = b.nslots
        if n == b.n:  # the usual case: the whole batch at once; it leaves the
            # table below, and the done marks of a batch not in it are never read
            if ns:
                self._free_slots += b.slots
        else:
            _consume(map(setitem, repeat(b.done, n), ks, repeat(1, n)))
            if ns == 1:
                self._free_slots += map(b.slots.__getitem__, ks)
            elif ns:
                for k in ks:
                    self._free_slots += b.slots[k * ns : (k + 1) * ns]
        if b.sink is not None:
            b.sink += completions
        notify = self._notify
        notify.ready += completions
        notify.reserved -= n
        self.in_flight -= n
        b.remaining -= n
        if not b.remaining:
            self._drop(b)

    def _drop(self, b: Batch) -> None:
        """The batch's last execution finished: free its table entry."""
        self._batches[b.index] = None
        self._fast[b.index] = 0
        self._free_batches.append(b.index)

    @staticmethod
    def _posted_ok(b: Batch, k: int, clean: CleanPath) -> bool:
        """Whether the atoms that posted before the last one all went as on
        the clean path: none stopped the execution or broke the link."""
        posted = b.posted
        assert posted is not None
        base = k * len(clean.posted)
        for j, (_, stop, full, hard) in enumerate(clean.posted):
            r = posted[base + j]
            if r is None or (stop and stop_holds(stop, r)):
                return False
            if not hard and (r < 0 or (full is not None and r != full)):
                return False
        return True

    @staticmethod
    def _posted_results(b: Batch, k: int, clean: CleanPath, last: int) -> list[int | None]:
        results: list[int | None] = list(clean.results)
        posted = b.posted
        assert posted is not None
        base = k * len(clean.posted)
        for j, (index, *_) in enumerate(clean.posted):
            results[index] = posted[base + j]
        results[-1] = last
        return results

    def _route_one(self, b: Batch | None, ud: int, res: int) -> None:
        atom = ud & 0xFF
        k = (ud >> UD_K_SHIFT) & UD_K_MASK
        if b is None or ud & _UD_BASE_MASK != b.ud_base or k >= b.n or b.done[k]:
            if atom == UD_CANCEL or UD_LINK_TIMEOUT <= atom < UD_CANCEL:
                return  # a cancel or link timeout that outlived its execution
            self._break(f"CQE for no execution in flight (user_data={ud:#x}, res={res})")
        assert b is not None
        ex = b.slow.get(k)
        if ex is None:
            clean = b.clean
            if clean is not None and atom in clean.posted_at:
                # an earlier atom's CQE on the clean path: keep it for the last
                assert b.posted is not None
                b.posted[k * len(clean.posted) + clean.posted_at[atom]] = res
                return
            ex = self._promote(b, k)
        if UD_LINK_TIMEOUT <= atom < UD_CANCEL:
            if res == -errno.ETIME:  # it fired: its atom was cancelled for it
                ex.timed_out = (ex.timed_out or frozenset()) | {atom - UD_LINK_TIMEOUT}
            return
        if atom == ex.run_last:
            self._run_over(ex, atom, res)
        elif atom == UD_CANCEL:
            return
        elif atom >= UD_INSTALL:
            self._installed(ex, atom - UD_INSTALL, (ud >> 8) & 0xF, res)
        else:
            if ex.raw is None:
                ex.raw = {}
            ex.raw[atom] = res
            pa = ex.program.plan.atoms[atom]
            if pa.skip and pa.link == LINK_SOFT:
                # A skip-flagged request posts only when it failed, and then
                # the kernel silences the rest of its chain.
                self._run_over(ex, atom, res)

    def _broke(self, ex: Execution, pa: PlanAtom, r: int) -> bool:
        full = self._row(ex)[pa.length_value] if pa.length_value is not None else None
        return pa.op.kernel_fails(r, pa.args, full)

    def _run_over(self, ex: Execution, posted: int, res: int) -> None:
        """The run ``run_first..run_last`` is over; ``posted`` is the atom whose
        CQE ended it.  Record results, test stop rules, go on."""
        patoms = ex.program.plan.atoms
        raw = ex.raw
        ex.raw = None
        results = ex.results
        if results is None:
            results = ex.results = [None] * len(patoms)
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
            if pa.fd_value is not None and r >= 0:
                self._row(ex)[pa.fd_value] = r  # the real fd it made
            elif pa.closes is not None and r == 0:
                self._row(ex)[pa.closes] = -1  # that number may be reused now
            r = pa.op.normalise(r)
            if r == -errno.ECANCELED and ex.timed_out and i in ex.timed_out:
                r = -errno.ETIME  # what its LINK_TIMEOUT did to it
            results[i] = r
            if r >= 0 and pa.out is not None:
                self._collect(ex, pa, r)
            if pa.feeds:
                self._feed(ex, pa, r)
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

    def _feed(self, ex: Execution, pa: PlanAtom, r: int) -> None:
        """Later lengths follow what atom ``pa`` really received; a userspace
        step's bytes are copied where kernel atoms will look for them."""
        row = self._row(ex)
        for v in pa.feeds:
            row[v] = r if r > 0 else 0
        if pa.data_at is not None and r > 0:
            data = atoms.data_of((ex.values or {}).get(pa.index))
            offset, _ = pa.data_at
            ffi.memmove(ffi.cast("char *", ex.scratch[1] + offset), data, len(data))

    def _continue(self, ex: Execution, i: int) -> None:
        if ex.cancelled or i >= len(ex.program.atoms):
            self._finish(ex)
        else:
            self._advance(ex, i)

    def _collect(self, ex: Execution, pa: PlanAtom, r: int) -> None:
        """Copy a successful atom's output out of the scratch buffer: the
        completion owns its bytes, and the buffer goes back to the pool."""
        assert pa.out is not None
        offset, size = pa.out
        if ex.values is None:
            ex.values = {}
        if pa.op.decode is None:  # plain bytes: a slice of the pooled view copies them
            ex.values[pa.index] = ex.scratch[2][offset : offset + r]
        else:
            ex.values[pa.index] = pa.op.value_from(ffi.buffer(ex.scratch[0] + offset, size), r)

    # -- the plan, step by step --------------------------------------------------
    def _advance(self, ex: Execution, i: int) -> None:
        """Run the program from atom ``i``: userspace steps here and now,
        the next kernel segment pushed (entered by the caller), or finish."""
        plan = ex.program.plan
        n = len(plan.atoms)
        if ex.results is None:
            ex.results = [None] * n
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
            if pa.closes is not None and r == 0:
                self._row(ex)[pa.closes] = -1  # that number may be reused now
            if pa.feeds:
                self._feed(ex, pa, r)
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
            self._push_single(single_sqe(op, slot, 0, 0, lib.IOSQE_FIXED_FILE, ud))

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
        """Run one atom with its blocking call, on real fds (slots installed
        for it, closed again afterwards).  Returns the normalised result."""
        installed = ex.installed or {}
        ex.installed = None
        args = dict(pa.args)
        try:
            for n, name in enumerate(pa.fd_slots):
                fd = installed.get(n, -errno.EBADF)
                if fd < 0:
                    return fd
                args[name] = fd
            if pa.fd_values:
                row = self._row(ex)
                for name, v in pa.fd_values.items():
                    if row[v] < 0:
                        return -errno.EBADF  # never made, or closed already
                    args[name] = row[v]
            for spec in pa.op.args:
                value = args[spec.name]
                if isinstance(value, Ref) and spec.kind == "data":
                    args[spec.name] = atoms.data_of((ex.values or {}).get(value.index))
                elif isinstance(value, Param):
                    args[spec.name] = ex.batch.params[value.name][ex.k]
            try:
                r, value = call_blocking(ex.program.atoms[pa.index], args)
            except OSError as exc:
                return atoms.errno_result(exc)
            if pa.fd_value is not None:
                self._row(ex)[pa.fd_value] = value  # a real fd the execution owns now
            elif value is not None:
                if ex.values is None:
                    ex.values = {}
                ex.values[pa.index] = value
            return r
        finally:
            for fd in installed.values():
                if fd >= 0:
                    os.close(fd)

    # -- endings ------------------------------------------------------------------
    def _live(self, ex: Execution) -> tuple[list[int], list[int]]:
        """The creator atoms whose descriptor is still open at the end, as
        (slots, real fds): made by the execution, not closed by it."""
        plan, results = ex.program.plan, ex.results
        assert results is not None
        live = {c for c in (*plan.creators, *plan.real_creators) if results[c] == 0}
        for closer, creator in plan.closers:
            if results[closer] == 0:
                live.discard(creator)
        slots = [c for c in plan.creators if c in live]
        reals = [c for c in plan.real_creators if c in live]
        return slots, reals

    def _finish(self, ex: Execution) -> None:
        """The execution is over: install its exported slots as real fds
        (one more trip through the ring), close what its atoms left open,
        then release it.  Each slot and each real fd is released once."""
        plan = ex.program.plan
        if plan.nslots or plan.real_creators:
            live, reals = self._live(ex)
        else:
            live, reals = [], []
        slot_of = plan.slot_index
        if ex.exports is None and ex.program.exports:
            wanted = [i for i in ex.program.exports if i in live]
            ex.exports = {}
            if wanted:
                ex.installed = {}
                ex.pending = len(wanted)
                ex.run_first = ex.run_last = -1
                op = kernel.opcode("FIXED_FD_INSTALL")
                for creator in wanted:
                    ud = ex.ud | _AUX_EXPORT << 8 | (UD_INSTALL + creator)
                    slot = ex.slots[slot_of[creator]]
                    self._push_single(single_sqe(op, slot, 0, 0, lib.IOSQE_FIXED_FILE, ud))
                return
        if ex.installed and ex.exports is not None:
            ex.exports.update((c, fd) for c, fd in ex.installed.items() if fd >= 0)
            ex.installed = None
        for creator in live:  # exported ones too: the caller has its own fd now
            slot = ex.slots[slot_of[creator]]
            check_ret(lib.ur_update_files(self._ring, slot, _MINUS_ONE, 1), "close slot")
        if reals:
            row = self._row(ex)
            for creator in reals:
                fd = row[plan.atoms[creator].fd_value]  # type: ignore[index]
                if creator in ex.program.exports:
                    ex.exports = {**(ex.exports or {}), creator: fd}
                else:
                    os.close(fd)
        if ex.exports:
            ex.values = {**(ex.values or {}), **ex.exports}
        self._release(ex)

    def _release(self, ex: Execution) -> None:
        """Give back the execution's slots and scratch buffer (its slots are
        empty by now), post its one completion, and give back its batch's
        table entry if it was the batch's last."""
        b, k = ex.batch, ex.k
        assert not b.done[k] and b.slow.get(k) is ex, "an execution finished twice"
        b.done[k] = 1
        del b.slow[k]
        if ex.slots:
            self._free_slots += ex.slots
        if ex.scratch is not None:
            self._scratch[ex.program.plan.scratch_size].append(ex.scratch)
        self.in_flight -= 1
        assert ex.results is not None
        c = Completion(ex.tag, ex.program, ex.results, ex.stopped_at, ex.cancelled, ex.values)
        if b.sink is not None:
            b.sink.append(c)
        self._notify.post(c)
        b.remaining -= 1
        if not b.remaining:
            self._drop(b)

    # -- cancel and close -------------------------------------------------------
    def cancel(self, ud: int) -> bool:
        """Ask the kernel to cancel the run in flight of execution ``ud``.
        Returns False if it is no longer in flight."""
        b = self._batches[(ud >> UD_BATCH_SHIFT) & UD_BATCH_MASK]
        k = (ud >> UD_K_SHIFT) & UD_K_MASK
        if b is None or ud & ~UD_K_FIELD != b.ud_base or k >= b.n or b.done[k]:
            return False
        self._cancel(b.slow.get(k) or self._promote(b, k))
        self._enter(0)
        return True

    def _cancel(self, ex: Execution) -> None:
        ex.cancelled = True
        if ex.run_first < 0:
            return
        op = kernel.opcode("ASYNC_CANCEL")
        flags = lib.IORING_ASYNC_CANCEL_ALL
        for atom in range(ex.run_first, ex.run_last + 1):
            sqe = single_sqe(op, -1, ex.ud | atom, flags, 0, ex.ud | UD_CANCEL)
            self._push_single(sqe)

    def _cancel_all(self) -> None:
        for b in list(self._batches):
            if b is not None:
                for k in range(b.n):
                    if not b.done[k]:
                        self._cancel(b.slow.get(k) or self._promote(b, k))

    def close(self) -> None:
        """Cancel everything in flight, wait until the kernel has let go of
        every buffer (every run's last CQE), then tear the ring down."""
        try:
            if self.broken is None:
                self._cancel_all()
                rounds = 0
                while self.in_flight:
                    if not self.reap(1, 1_000_000_000):
                        rounds += 1
                        self._cancel_all()
                        if rounds > 30:
                            break
        finally:
            lib.ur_teardown(self._ring)
