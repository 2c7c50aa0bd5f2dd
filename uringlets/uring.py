"""The io_uring backend of ``Engine``: ``UringBackend`` starts batches of
executions and finishes the clean ones; the rest is ``follow.PlanFollower``'s
and the ring is ``ringio.RingIO``'s.

Everything per-op was decided by the translator; the backend only follows
the plan.  Starting a batch costs Python a constant amount of work plus a few
column operations in C (``start``); an execution gets an ``Execution``
object of its own only when it leaves the clean path.  The clean path
(``plan.clean``: a program that is one kernel link, where the CQE of its last
atom says it all) finishes executions a batch at a time (``_finish_clean``):
stop rules tested on the lowest and highest result, completions made by one
``map`` in C.
"""

from __future__ import annotations

import os
import time
import warnings
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate, compress, islice, repeat
from typing import Any

from . import kernel
from .errors import ParamError
from .execution import NOT_POSTED, Batch, ScratchBlock, ScratchPool, init_scratch
from .follow import PlanFollower
from .kernel import ffi
from .notify import ColumnRun, ColumnSink, Completion, NotificationRing
from .plan import (
    UD_BATCH_MASK,
    UD_BATCH_SHIFT,
    UD_GEN_MASK,
    UD_GEN_SHIFT,
    UD_K_FIELD,
    UD_K_MASK,
    UD_K_SHIFT,
    CleanPath,
    Plan,
)
from .program import Program
from .restrict import Restriction
from .ringio import BOX_OTHERS, BOX_OTHERS_DONE, BOX_RUNS, BOX_RUNS_DONE, LAST_CLEAR, RingIO
from .syslet import STOP_ON_NEGATIVE, stop_holds, stop_holds_for_any

lib = kernel.lib

_K_STEP = 1 << UD_K_SHIFT
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # runs an iterator out, in C
_ZERO = (0,)
_NO_SLOTS = array("q")  # the slots of a batch that has none; never mutated
_RUN_FIELDS = lib.UR_RUN_FIELDS
CLOSE_GIVE_UP = 5.0  # seconds close() waits for a kernel that will not let go
# Backends abandoned with requests in the kernel: their memory is never freed.
_ABANDONED: list[Any] = []


def _clean_values(
    clean: CleanPath,
    refs: Sequence[Any],
    block: ScratchBlock,
    start: int,
    r: int,
    posted: Any = (),  # the batch's int32 array of posted CQEs
    base: int = 0,
) -> dict[Any, Any]:
    """The values of a clean execution (by Ref), copied out of its scratch
    buffer (``start`` bytes into the batch's block): the skipped reads were
    full, a posted read has its CQE's result (in ``posted`` from ``base``),
    the last atom's value has its result ``r``."""
    view = block.view
    values = {refs[i]: view[start + off : start + off + size] for i, off, size in clean.outs}
    for i, off, _, j in clean.posted_outs:
        got = posted[base + j]
        if got >= 0:  # (NOT_POSTED is negative)
            values[refs[i]] = view[start + off : start + off + got]
    if clean.last_out is not None and r >= 0:
        i, off, size = clean.last_out
        if clean.last_bytes:
            values[refs[i]] = view[start + off : start + off + r]
        else:
            region = ffi.buffer(block.buffer + (start + off), size)
            values[refs[i]] = clean.last.op.value_from(region, r)
    return values


class UringBackend:
    """The io_uring engine's backend (``backend.Backend``): ``io`` (a
    ``RingIO``) owns the ring and every table; ``follow`` (a
    ``PlanFollower`` over it) is the general path; this class starts
    batches, finishes the clean endings and cancels and closes.  The ring's
    routes are this object's ``_route_clean`` and the follower's."""

    kind = "uring"
    threadlets = 0  # they run on a pool of the Engine's, not here

    def __init__(
        self,
        notify: NotificationRing,
        capacity: int,
        sq_entries: int,
        restriction: Restriction | None = None,
        progress: str = "owner",
    ) -> None:
        self.io = io = RingIO(notify, capacity, sq_entries, restriction, progress)
        self.follow = follow = PlanFollower(io)
        io.route_others, io.route_clean, io.recover = (
            follow._route_others, self._route_clean, follow._recover,
        )  # fmt: skip

    # -- what the Engine reads of the ring ------------------------------------------
    @property
    def in_flight(self) -> int:
        return self.io.in_flight

    @property
    def broken(self) -> str | None:
        return self.io.broken

    def disable(self, why: str) -> None:
        self.io.broken = why

    @property
    def nslots(self) -> int:
        return self.io.nslots

    @property
    def sq_entries(self) -> int:
        return self.io.sq_entries

    @property
    def setup_flags(self) -> int:
        return self.io.setup_flags

    @property
    def dropped_flags(self) -> tuple[str, ...]:
        return self.io.dropped_flags

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        return self.io.reap(min_complete, timeout_ns)

    def fileno(self) -> int:
        return self.io.fileno()

    # -- submission ------------------------------------------------------------
    def can_start(self, program: Program, n: int) -> bool:
        return len(self.io._free_slots) >= n * program.plan.nslots

    def start(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        n: int,
        tags: Sequence[Any] | None,
        sink: list[Completion] | None = None,
    ) -> Sequence[int]:
        """Start ``n`` executions as one batch (the caller checked
        ``can_start`` and the engine's capacity): build the batch's
        value columns, push the first runs in one call, and enter the kernel
        once.  With a ``sink`` (``Engine.run``, which waits next) the SQEs
        stay queued: the wait that follows submits them in the same system
        call.  Returns the executions' user_data bases."""
        io = self.io
        plan = program.plan
        box = io._box
        if (
            box[BOX_RUNS_DONE] < box[BOX_RUNS]
            or box[BOX_OTHERS_DONE] < box[BOX_OTHERS]
            or io._interrupted is not None
        ):
            # An interrupted reap left CQEs in the inbox: route them before a
            # table entry they name can be reused.
            io._route_inbox()
        whole, run_last, fast_low, columns = plan.launches.get(io.sq_entries) or self._launch(plan)
        # Everything that can fail comes first and gives back what it took:
        # the columns take slots and scratch (``_columns``), the batch
        # record is made; then the commit, with no call in it; then the
        # push, which cannot fail for a run that fits the SQ ring.
        if columns:
            flat, scratch, slots, keep = (
                self._one_row(plan, params) if n == 1 else self._columns(plan, params, n)
            )
        else:  # nothing differs between executions: every value is 0
            flat, scratch, slots, keep = None, None, _NO_SLOTS, None
        try:
            index = io._free_batches[-1]
            # never 0, so that no fast_ud is 0
            generation = io._generations[index] % UD_GEN_MASK + 1
            ud_base = generation << UD_GEN_SHIFT | index << UD_BATCH_SHIFT
            fast_ud = ud_base | fast_low if fast_low >= 0 else -1
            batch = Batch(
                program, params, keep, flat, n, tags, sink, index, ud_base, scratch, slots,
                run_last, fast_ud,
            )  # fmt: skip
            if whole:
                values = io._zeros if flat is None else ffi.from_buffer("int64_t[]", flat)
        except BaseException:
            self._give_back(slots, scratch)
            raise
        del io._free_batches[-1]
        io._generations[index] = generation
        if fast_ud >= 0:
            io._fast[index] = fast_ud
            if batch.posted is not None:  # ur_reap_split stores its posted CQEs
                clean = plan.clean
                assert clean is not None
                entry = io._posted[index]
                entry.res, entry.width, entry.n = batch.posted, len(clean.posted), n
                entry.place = plan.posted_place
        io._batches[index] = batch
        io.in_flight += n
        if whole:
            pushed = lib.ur_push(
                io._ring, plan.images_c, 0, plan.first_sqes, plan.patches, plan.npatches,
                values, n, n, LAST_CLEAR, ud_base, _K_STEP,
            )  # fmt: skip
            if pushed != n:  # the SQ ring is full: enter, then push the rest
                self._push_rest(plan, values, n, max(0, pushed), ud_base)
        else:
            # Userspace steps may run here; an exception from one ends that
            # execution (``_recover``, at the next reap) and cancels those
            # not yet begun, so that each still ends in one completion.
            k = 0
            try:
                for k in range(n):
                    self.follow._advance(self.follow._promote(batch, k), 0)
            except BaseException:
                if io.broken is None:
                    io._interrupted = (ud_base | k << UD_K_SHIFT, 0)
                    for rest in range(k + 1, n):
                        ex = batch.slow.get(rest) or self.follow._promote(batch, rest)
                        ex.results = [None] * len(plan.atoms)
                        ex.cancelled = True
                        self.follow._finish(ex)
                raise
        if sink is None:
            io._enter(0)
        return range(ud_base, ud_base + n * _K_STEP, _K_STEP)

    def _push_rest(self, plan: Plan, values: Any, n: int, done: int, ud_base: int) -> None:
        """Push the first runs of executions ``done..n-1`` of a batch whose
        push found the SQ ring full (entering the kernel to make room)."""
        self.io._enter(0)
        self.io._push(
            plan.images_c, plan.first_sqes, plan, values + done, n, n - done,
            ud_base + done * _K_STEP, _K_STEP,
        )  # fmt: skip

    def _launch(self, plan: Plan) -> tuple[bool, int, int, bool]:
        """How a ring of this size starts a program's executions (kept in
        ``plan.launches``): whether the first run goes in whole (its SQEs fit
        the SQ ring), the last atom of that run (else -1), the atom byte of
        the CQE of a clean ending (else -1), and whether the executions need
        value columns (else every value is 0: no scratch, no slots, no
        parameters)."""
        first_sqes = plan.first_sqes
        whole = 0 < first_sqes <= self.io.sq_entries
        run_last = plan.segments[0].last if whole else -1
        fast_low = run_last if whole and plan.clean is not None else -1
        columns = bool(plan.out_size or len(plan.value_defaults) > 1)
        launch = (whole, run_last, fast_low, columns)
        plan.launches[self.io.sq_entries] = launch
        return launch

    def _columns(
        self, plan: Plan, params: Mapping[str, list[Any]], n: int
    ) -> tuple[Any, ScratchBlock | None, Any, Any]:
        """The batch's value columns, one after another in one int64 array
        (value ``v`` of execution ``k`` at ``v * n + k``, see ur_push), its
        scratch block (structures written in), its slots, and the parameter
        buffers its SQEs point into.  Columns are arrays: a constant column
        is one memcpy (array * n), a list converts in C."""
        nslots = plan.nslots
        columns: list[Any] = []
        scratch, slots = self._take(plan, n)
        try:
            if scratch is not None:
                columns.append(scratch.addresses[:n])  # a copy: flat grows from it
            else:
                columns.append(array("q", _ZERO) * n)
            if nslots:
                columns += [slots] if nslots == 1 else [slots[s::nslots] for s in range(nslots)]
            defaults = plan.value_defaults
            if len(defaults) > len(columns):
                columns += [
                    array("q", (defaults[v],)) * n for v in range(len(columns), len(defaults))
                ]
            keep = self._bind(plan, params, columns) if plan.params else None
            flat = columns[0]
            for column in columns[1:]:
                flat += column
            if plan.scratch_init and scratch is not None:
                for k in range(n):

                    def value_of(v: int, k: int = k) -> int:
                        return flat[v * n + k]

                    init_scratch(plan, scratch.base + k * scratch.size, value_of)
        except BaseException:
            self._give_back(slots, scratch)
            raise
        return flat, scratch, slots, keep

    def _one_row(self, plan: Plan, params: Mapping[str, list[Any]]) -> tuple[Any, Any, Any, Any]:
        """``_columns`` for a batch of one execution: its value row (the
        columns of one execution are its row), made from the plan's defaults
        with a few stores.  A path is passed by the address of its bytes
        object, whose buffer CPython always ends with a NUL; ``params`` keeps
        it alive."""
        nslots = plan.nslots
        flat = array("q", plan.value_defaults)
        scratch, slots = self._take(plan, 1)
        if scratch is not None:
            flat[0] = scratch.base
        if nslots:
            flat[1 : 1 + nslots] = slots
        try:
            for use in plan.params:
                value = params[use.name][0]
                if use.kind in ("path", "data"):  # bytes: ``params`` keeps them
                    flat[use.value] = lib.ur_address(value)
                    if use.length_value is not None:
                        flat[use.length_value] = len(value)
                else:
                    flat[use.value] = value
            if plan.scratch_init and scratch is not None:
                init_scratch(plan, scratch.base, flat.__getitem__)
        except BaseException:
            self._give_back(slots, scratch)
            raise
        return flat, scratch, slots, None  # nothing to keep beyond ``params``

    def _take(self, plan: Plan, n: int) -> tuple[ScratchBlock | None, Any]:
        """The scratch block (None: the plan writes nothing) and the slots
        (an int64 array, ``plan.nslots`` per execution) of a batch of ``n``;
        ``_give_back`` returns them if the batch does not start."""
        io = self.io
        scratch: ScratchBlock | None = None
        slots = _NO_SLOTS
        if plan.out_size:
            pool = io._scratch.get(plan.scratch_size)
            if pool is None:
                pool = io._scratch[plan.scratch_size] = ScratchPool(plan.scratch_size)
            scratch = pool.take(n)
        if plan.nslots:
            free_slots = io._free_slots
            slots = free_slots[-n * plan.nslots :]
            del free_slots[-n * plan.nslots :]
        return scratch, slots

    def _give_back(self, slots: Any, scratch: ScratchBlock | None) -> None:
        """Undo what ``_columns`` took for a batch that does not start."""
        self.io._free_slots += slots
        if scratch is not None:
            self.io._scratch[scratch.size].give(scratch)

    @staticmethod
    def _bind(plan: Plan, params: Mapping[str, list[Any]], columns: list[Any]) -> Any:
        """Fill the parameter columns.  Paths and data of the whole batch go
        into one buffer each (a path NUL-terminated), which every execution of
        the batch keeps alive.  Returns what must be kept."""
        keep = []
        for use in plan.params:
            items = params[use.name]
            if use.kind == "path":  # NUL-terminated, found by C in one pass
                blob = b"\0".join([*items, b""])
                buf = ffi.from_buffer(blob)
                keep.append((blob, buf))
                n = len(items)
                starts = array("q", _ZERO) * n
                address = int(ffi.cast("uintptr_t", buf))
                found = lib.ur_string_starts(
                    blob, len(blob), address, ffi.from_buffer("int64_t[]", starts), n
                )
                if found != n:
                    raise ParamError(f"parameter {use.name!r}: a path holds a NUL byte")
                columns[use.value] = starts
            elif use.kind == "data":
                blob = b"".join(items)
                buf = ffi.from_buffer(blob)
                keep.append((blob, buf))
                address = int(ffi.cast("uintptr_t", buf))
                # item j starts after items 0..j-1
                lengths = map(len, islice(items, len(items) - 1))
                columns[use.value] = array("q", accumulate(lengths, initial=address))
                if use.length_value is not None:
                    columns[use.length_value] = array("q", map(len, items))
            else:
                columns[use.value] = array("q", items)
        return keep

    # -- clean endings ------------------------------------------------------------
    def _route_clean(self, nc: int, nruns: int, done: int) -> None:
        """Finish the ``nc`` executions whose clean ending ``ur_reap_box``
        found (the CQE of a program's last atom, ``Batch.fast_ud``), a run
        of one batch at a time, from run ``done`` on (runs before it were
        finished by a call an exception interrupted).  Usually there is one
        run, in order of k, and only its results are read."""
        io = self.io
        batches, run_fields = io._batches, _RUN_FIELDS
        if nruns == 1:
            bi, _, lo, hi, k0 = ffi.unpack(io._clean_runs, run_fields)
            b = batches[bi]  # in the table when ur_reap_split matched its fast_ud
            if b is None:  # since finished by _recover (an interrupt cut routing short)
                io._box[BOX_RUNS_DONE] += 1
                return
            ks: Sequence[int] = range(k0, k0 + nc) if k0 >= 0 else ffi.unpack(io._clean_k, nc)
            self._finish_clean(b, ks, ffi.unpack(io._clean_res, nc), lo, hi)
            return
        all_ks, all_ress = ffi.unpack(io._clean_k, nc), ffi.unpack(io._clean_res, nc)
        runs = ffi.unpack(io._clean_runs, run_fields * nruns)
        for r in range(done * run_fields, run_fields * nruns, run_fields):
            bi, end, lo, hi, k0 = runs[r : r + run_fields]
            start = runs[r - run_fields + 1] if r else 0
            b = batches[bi]  # a batch of several runs stays until its last
            if b is None:  # since finished by _recover (an interrupt cut routing short)
                io._box[BOX_RUNS_DONE] += 1
                continue
            ks = range(k0, k0 + end - start) if k0 >= 0 else all_ks[start:end]
            self._finish_clean(b, ks, all_ress[start:end], lo, hi)

    def _finish_clean(self, b: Batch, ks: Sequence[int], ress: list[int], lo: int, hi: int) -> None:
        """Finish executions ``ks`` of batch ``b`` from the CQEs of their last
        atoms (``ress``, from ``lo`` to ``hi``), without walking the plan:
        every skip-flagged atom returned its known success result
        (``clean.results``).  The work is done a column at a time, in C where
        Python allows it; one completion each, all made by one ``map``."""
        clean: CleanPath = b.clean  # type: ignore[assignment]
        if b.promoted or clean.posted or clean.normalise is not None:
            # (An exception escaping from _sift has the run sifted again
            # by the next reap; Execution.fast_taken keeps that harmless.)
            ks, rs, lo, hi = self._sift(b, clean, ks, ress, lo, hi)
            if not ks:
                self.io._box[BOX_RUNS_DONE] += 1  # all of it took the general path
                return
        else:
            rs = ress
        n = len(ks)
        stop = clean.stop
        stopping = (lo < 0) if stop == STOP_ON_NEGATIVE else stop_holds_for_any(stop, lo, hi, rs)
        run = None
        if type(b.sink) is ColumnSink:
            run = self._column_run(b, clean, ks, rs, stopping, lo)
        completions: list[Completion] | ColumnRun
        if run is not None:
            completions = run
        elif n == 1:
            completions = [self._one_completion(b, clean, ks[0], rs[0], stopping)]
        elif b.tags is None and not (
            stopping or clean.posted or clean.from_values or clean.buffers or lo != hi
        ):
            # Nothing tells the completions apart (no tags, no values, one
            # result tuple): the same fields for each, no columns to zip.
            same = (None, b.program, (*clean.prefix, lo), None, False, None, True, None, None)
            completions = list(map(tuple.__new__, repeat(Completion, n), repeat(same, n)))
        else:
            completions = self._completions(b, clean, ks, rs, stopping, lo, hi)
        whole = n == b.n
        freed = b.slots if whole else self._slots_of(b, ks) if b.nslots else _NO_SLOTS
        self.io._post(b, ks, completions, freed, False, True)

    def _slots_of(self, b: Batch, ks: Sequence[int]) -> Any:
        """The slots of executions ``ks`` of batch ``b``, as an int64 array."""
        ns, slots = b.nslots, b.slots
        if ns == 1:
            return array("q", map(slots.__getitem__, ks))
        out = array("q")
        for k in ks:
            out += slots[k * ns : (k + 1) * ns]
        return out

    def _completions(
        self,
        b: Batch,
        clean: CleanPath,
        ks: Sequence[int],
        rs: list[int],
        stopping: bool,
        lo: int,
        hi: int,
    ) -> list[Completion]:
        """The completions of ``_finish_clean``, made a column at a time:
        tags, results, where each stopped (``stopping``: some did), values
        copied out of the batch's scratch block."""
        n = len(ks)
        results: Any
        # The whole batch in order of k (the usual case): its columns as they are.
        whole = n == b.n and type(ks) is range and ks.start == 0
        # the batch's posted CQEs as one list, taken once (C writes an int32 array)
        everything = ffi.unpack(b.posted, n * len(clean.posted)) if whole and clean.posted else []
        if (clean.posted or clean.from_values) and whole:
            results = list(zip(*self._result_columns(b, clean, ks, rs, True, everything)))  # noqa: B905
        elif clean.posted or clean.from_values:
            results = [self._posted_results(b, k, clean, r) for k, r in zip(ks, rs, strict=True)]
        elif lo == hi:  # the usual case: one tuple, shared (results are immutable)
            results = repeat((*clean.prefix, lo), n)
        else:
            results = [(*clean.prefix, r) for r in rs]
        # Columns nothing fills are this tuple of Nones (zip iterates it anew
        # for each column).
        stopped: Any = (None,) * n
        if stopping:
            stop, last = clean.stop, clean.last.index
            stopped = [last if stop_holds(stop, r) else None for r in rs]
            oks: Any = [s is None for s in stopped]
        else:
            oks = repeat(True, n)
        # the typed values: one per execution in the pair (value_refs,
        # values), more in a dict each (dicts)
        value_refs: Any = (None,) * n
        values = dicts = value_refs
        if clean.buffers:  # copied out of the batch's block; it goes back with the batch
            one = self._value_column(b, clean, ks, rs, lo, whole, everything)
            if one is not None:
                value_refs, values = repeat(one[0], n), one[1]
            else:
                block, refs = b.scratch, b.program.refs
                assert block is not None
                stride = block.size
                starts: Any = range(0, n * stride, stride) if whole else [k * stride for k in ks]
                if clean.posted_outs:  # posted reads: sliced by their CQEs' results
                    posted, width = b.posted, len(clean.posted)
                    assert posted is not None
                    dicts = [
                        _clean_values(clean, refs, block, s, r, posted, k * width)
                        for s, r, k in zip(starts, rs, ks, strict=True)
                    ]
                else:
                    dicts = [
                        _clean_values(clean, refs, block, s, r)
                        for s, r in zip(starts, rs, strict=True)
                    ]
        # Every column has n items (strict= would parse a keyword per call).
        fields = zip(  # noqa: B905
            repeat(None, n) if b.tags is None else b.tags if whole else map(b.tags.__getitem__, ks),
            repeat(b.program, n),
            results,
            stopped,
            repeat(False, n),
            dicts,
            oks,
            value_refs,
            values,
        )
        return list(map(tuple.__new__, repeat(Completion, n), fields))

    @staticmethod
    def _value_column(
        b: Batch,
        clean: CleanPath,
        ks: Sequence[int],
        rs: list[int],
        lo: int,
        whole: bool,
        everything: list[int],
    ) -> tuple[Any, list[Any]] | None:
        """``(ref, values)`` when the clean endings ``ks`` hold one typed
        value each (a read's bytes), copied out of the batch's scratch block
        a column at a time; None when they hold more (``_clean_values``)."""
        block = b.scratch
        assert block is not None
        view, stride, refs, n = block.view, block.size, b.program.refs, len(ks)
        # where each execution's buffer starts in the block
        starts: Any = range(0, n * stride, stride) if whole else [k * stride for k in ks]
        if clean.posted_outs:
            if len(clean.posted_outs) != 1 or clean.outs or clean.last_out is not None:
                return None
            i, off, _, j = clean.posted_outs[0]  # one posted read: read_files' first
            posted, width = b.posted, len(clean.posted)
            assert posted is not None
            got = everything[j::width] if whole else [posted[k * width + j] for k in ks]
            return refs[i], [
                None if r < 0 else view[s : s + r]
                for s, r in zip(map(off.__add__, starts), got)  # noqa: B905
            ]
        if clean.last_out is None and len(clean.outs) == 1:  # one full read: file3
            i, off, size = clean.outs[0]
            return refs[i], [view[s : s + size] for s in map(off.__add__, starts)]
        if clean.last_out is not None and clean.last_bytes and not clean.outs and lo >= 0:
            i, off, _ = clean.last_out  # the last atom's bytes: rr's recv
            return refs[i], [
                view[s : s + r] for s, r in zip(map(off.__add__, starts), rs, strict=True)
            ]
        return None

    def _column_run(
        self, b: Batch, clean: CleanPath, ks: Sequence[int], rs: list[int], stopping: bool, lo: int
    ) -> ColumnRun | None:
        """The clean endings ``ks`` of batch ``b`` as one ``ColumnRun`` for
        its ``ColumnSink``: no Completion, no results tuple per execution.
        (A ColumnSink's batches are tagged first, first + 1, ...:
        ``Engine._start_all``.)  None when they have a shape a ColumnRun
        does not hold (some stopped; the sink's Ref is not their one value):
        ``_completions`` makes them instead."""
        ref = b.sink.ref  # type: ignore[union-attr]
        if stopping or b.tags is None:
            return None
        whole = len(ks) == b.n and type(ks) is range and ks.start == 0
        everything = ffi.unpack(b.posted, b.n * len(clean.posted)) if whole and clean.posted else []
        if clean.posted or clean.from_values:
            columns = self._result_columns(b, clean, ks, rs, whole, everything)
        else:
            columns = [*(repeat(r, len(ks)) for r in clean.prefix), rs]
        values = None
        if ref is not None:
            one = None
            if clean.buffers:
                one = self._value_column(b, clean, ks, rs, lo, whole, everything)
            if one is None or one[0] is not ref:
                return None
            values = one[1]
        first = b.tags[0]
        tags: Sequence[int]
        if type(ks) is range:
            tags = range(first + ks.start, first + ks.stop, ks.step)
        else:
            tags = [first + k for k in ks]
        return ColumnRun(tags, columns, values)

    def _one_completion(
        self, b: Batch, clean: CleanPath, k: int, r: int, stopping: bool
    ) -> Completion:
        """``_completions`` for one execution: its fields made directly."""
        if clean.posted or clean.from_values:
            results = self._posted_results(b, k, clean, r)
        else:
            results = (*clean.prefix, r)
        stopped = clean.last.index if stopping else None
        value_ref = value = dicts = None
        if clean.buffers:
            block = b.scratch
            assert block is not None
            start, refs = k * block.size, b.program.refs
            if clean.posted_outs:
                assert b.posted is not None
                dicts = _clean_values(clean, refs, block, start, r, b.posted, k * len(clean.posted))
            elif clean.last_out is None and len(clean.outs) == 1:  # one full read
                i, off, size = clean.outs[0]
                value_ref, value = refs[i], block.view[start + off : start + off + size]
            elif clean.last_out is not None and clean.last_bytes and not clean.outs and r >= 0:
                i, off, _ = clean.last_out  # the last atom's bytes
                value_ref, value = refs[i], block.view[start + off : start + off + r]
            else:
                dicts = _clean_values(clean, refs, block, start, r)
        tag = None if b.tags is None else b.tags[k]
        fields = (tag, b.program, results, stopped, False, dicts, not stopping, value_ref, value)
        return tuple.__new__(Completion, fields)

    def _sift(
        self, b: Batch, clean: CleanPath, ks: Sequence[int], ress: list[int], lo: int, hi: int
    ) -> tuple[Sequence[int], list[int], int, int]:
        """The unusual cases of ``_finish_clean``: send the executions that
        left the clean path, or whose earlier posted CQEs say they failed, to
        the general path, and normalise the results of the rest.  Returns
        their ks, results, lowest and highest result."""
        if b.promoted:  # those off the clean path take the general one
            stays = [not (k in b.slow or b.done[k]) for k in ks]
            for k, res, stay in zip(ks, ress, stays, strict=True):
                if not stay:
                    ex = b.slow.get(k)
                    if ex is None:
                        # finished before its clean ending came: by a
                        # follower's verdict, or by _recover after an
                        # interrupt cut the routing of this very CQE short
                        continue
                    if ex.fast_taken:
                        continue  # routed by a call an interrupt cut short
                    ex.fast_taken = True  # taken before it is routed
                    ud = b.fast_ud | k << UD_K_SHIFT
                    try:
                        self.follow._route_one(b, ud, res)
                    except BaseException:
                        if self.io.broken is None:
                            self.io._interrupted = (ud, res)  # _recover, at the next reap
                        raise
            ks = list(compress(ks, stays))
            ress = list(compress(ress, stays))
        # Earlier CQEs decide: take out those that failed (none can when every
        # posted atom goes on whatever its result, and all of them came).
        posted = None
        if clean.posted and ks and not (clean.posted_always_ok and self._all_came(b, clean, ks)):
            posted = [self._posted_ok(b, k, clean) for k in ks]
        if posted is not None and not all(posted):
            for k, res, ok in zip(ks, ress, posted, strict=True):
                if not ok:  # something failed: the general path
                    ex = self.follow._promote(b, k)
                    ex.fast_taken = True
                    try:
                        self.follow._run_over(ex, clean.last.index, res)
                    except BaseException:
                        if self.io.broken is None:
                            self.io._interrupted = (ex.ud | clean.last.index, res)
                        raise
            ks = list(compress(ks, posted))
            ress = list(compress(ress, posted))
        if not ks:
            return ks, ress, lo, hi
        if clean.normalise is not None:
            ress = list(map(clean.normalise, ress))
        return ks, ress, min(ress), max(ress)

    @staticmethod
    def _all_came(b: Batch, clean: CleanPath, ks: Sequence[int]) -> bool:
        """Whether every posted CQE of executions ``ks`` came."""
        width, posted = len(clean.posted), b.posted
        if type(ks) is range and ks.step == 1:  # consecutive (the usual run): one C pass
            return NOT_POSTED not in ffi.unpack(posted + ks.start * width, len(ks) * width)
        return all(posted[k * width + j] != NOT_POSTED for k in ks for j in range(width))

    @staticmethod
    def _posted_ok(b: Batch, k: int, clean: CleanPath) -> bool:
        """Whether the atoms that posted before the last one all went as on
        the clean path: none stopped the execution or broke the link."""
        posted = b.posted
        assert posted is not None
        base = k * len(clean.posted)
        for j, (_, stop, full, hard, length_value) in enumerate(clean.posted):
            r = posted[base + j]
            if r == NOT_POSTED or (stop and stop_holds(stop, r)):
                return False
            if length_value is not None:  # (no value columns: every value is 0)
                full = 0 if b.flat is None else b.flat[length_value * b.n + k]
            if not hard and (r < 0 or (full is not None and r != full)):
                return False
        return True

    @staticmethod
    def _result_columns(
        b: Batch,
        clean: CleanPath,
        ks: Sequence[int],
        rs: list[int],
        whole: bool,
        everything: list[int],
    ) -> list[Any]:
        """``_posted_results`` of executions ``ks``, a column per atom (zip
        makes the tuples): constants repeated, posted CQEs and per-execution
        values sliced out of their columns, the last atoms' results.
        ``whole``: ``ks`` is ``range(b.n)`` and ``everything`` the batch's
        posted array as a list."""
        n, flat = b.n, b.flat
        width = len(clean.posted)
        columns: list[Any] = [repeat(r, len(ks)) for r in clean.results[:-1]]
        for j, (index, *_) in enumerate(clean.posted):
            if whole:
                columns[index] = everything[j::width]
            else:
                posted = b.posted
                assert posted is not None
                columns[index] = [posted[k * width + j] for k in ks]
        for index, value in clean.from_values:
            if flat is None:
                columns[index] = repeat(0, len(ks))
            elif whole:
                columns[index] = flat[value * n : (value + 1) * n]
            else:
                columns[index] = [flat[value * n + k] for k in ks]
        columns.append(rs)
        return columns

    @staticmethod
    def _posted_results(b: Batch, k: int, clean: CleanPath, last: int) -> tuple[int | None, ...]:
        """Execution ``k``'s results when they are not all the clean path's
        constants: the CQEs of its posted atoms, and the per-execution
        success results of skipped ones (``from_values``)."""
        results: list[int | None] = list(clean.results)
        posted = b.posted
        if posted is not None:
            base = k * len(clean.posted)
            for j, (index, *_) in enumerate(clean.posted):
                results[index] = posted[base + j]
        if clean.from_values:
            flat, n = b.flat, b.n
            for index, value in clean.from_values:
                results[index] = 0 if flat is None else flat[value * n + k]
        results[-1] = last
        return tuple(results)

    # -- cancel and close -------------------------------------------------------
    def cancel(self, ud: int) -> bool:
        """Ask the kernel to cancel the run in flight of execution ``ud``.
        Returns False if it is no longer in flight."""
        b = self.io._batches[(ud >> UD_BATCH_SHIFT) & UD_BATCH_MASK]
        k = (ud >> UD_K_SHIFT) & UD_K_MASK
        if b is None or ud & ~UD_K_FIELD != b.ud_base or k >= b.n or b.done[k]:
            return False
        self.follow._cancel(b.slow.get(k) or self.follow._promote(b, k))
        self.io._enter(0)
        return True

    def _cancel_all(self) -> None:
        for b in list(self.io._batches):
            if b is not None:
                for k in range(b.n):
                    if not b.done[k]:
                        self.follow._cancel(b.slow.get(k) or self.follow._promote(b, k))

    def close(self) -> None:
        """Cancel everything in flight, wait until the kernel has let go of
        every buffer (every run's last CQE), then tear the ring down.  A
        kernel that still holds requests after ``CLOSE_GIVE_UP`` seconds
        (an uninterruptible read, say) keeps this backend's memory: it is
        never freed under the kernel, and a ResourceWarning says so."""
        try:
            if self.io.broken is None:
                self._cancel_all()
                self.io._enter(0)
                give_up = time.monotonic() + CLOSE_GIVE_UP
                while self.io.in_flight and time.monotonic() < give_up:
                    if not self.io.reap(1, 100_000_000):
                        self._cancel_all()
                        self.io._enter(0)
        finally:
            if self.io.in_flight:
                self.abandon(f"{self.io.in_flight} executions still held by the kernel at close")
            else:
                lib.ur_teardown(self.io._ring)
            self.io._close_eventfd()

    def abandon(self, why: str) -> None:
        """Keep every buffer alive for good (the kernel may still write into
        them) and close the ring's descriptor, which makes the kernel cancel
        what is left."""
        _ABANDONED.append(self)
        warnings.warn(
            f"uringlets: {why}; their buffers are kept alive", ResourceWarning, stacklevel=3
        )
        if self.io._ring.fd >= 0:
            os.close(self.io._ring.fd)
            self.io._ring.fd = -1

    def forked(self) -> None:
        """In a forked child: the ring is the parent's.  Touch nothing (no
        cancel, no unmap, no close); the child's copy of the mappings goes
        with the child."""
        self.io.broken = "the engine belongs to the process that made it (this is a fork)"
