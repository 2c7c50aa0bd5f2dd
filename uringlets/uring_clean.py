"""The clean endings of the io_uring backend (``UringBackend`` inherits
them): executions on the clean path (``plan.clean``: a program that is one
kernel link, where the CQE of its last atom says it all) finish a batch at a
time, without walking the plan.  Stop rules are tested on the lowest and
highest result; results, values and completions are made a column at a time
(``_completions``: one ``map`` in C), or kept as columns for a
``ColumnSink`` (``_column_run``).  Executions that left the clean path go to
``follow.PlanFollower`` (``_sift``); every ending goes through
``RingIO._post``.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

from .execution import NOT_POSTED, Batch, ScratchBlock
from .kernel import ffi, lib
from .notify import ColumnRun, ColumnSink, Completion
from .plan import UD_K_SHIFT, CleanPath
from .ringio import BOX_RUNS_DONE
from .syslet import STOP_ON_NEGATIVE, stop_holds, stop_holds_for_any

if TYPE_CHECKING:
    from .follow import PlanFollower
    from .ringio import RingIO

_NO_SLOTS = array("q")  # the slots of a batch that has none; never mutated
_RUN_FIELDS = lib.UR_RUN_FIELDS


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


def _ks_array(ks: Sequence[int]) -> Any:
    """Executions ``ks`` of a batch as a C array, for the gathers below."""
    return ffi.new("uint32_t[]", ks if type(ks) is list else list(ks))


def _posted_columns(b: Batch, width: int, ks: Sequence[int]) -> list[list[int]]:
    """The posted CQEs of executions ``ks`` of batch ``b`` (not in order of
    k: a cold cache's endings), a column per posted atom, gathered in C
    from one array of ``ks``."""
    n = len(ks)
    ks_c, out = _ks_array(ks), ffi.new("int32_t[]", n)
    columns = []
    for j in range(width):
        lib.ur_posted_column(b.posted, width, j, ks_c, n, out)
        columns.append(ffi.unpack(out, n))
    return columns


class CleanEndings:
    """The clean-path half of ``UringBackend``: it owns nothing; ``io`` and
    ``follow`` are the backend's."""

    io: RingIO
    follow: PlanFollower

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
        results: list[Any] | None = None,
    ) -> tuple[Any, list[Any]] | None:
        """``(ref, values)`` when the clean endings ``ks`` hold one typed
        value each (a read's bytes), copied out of the batch's scratch block
        a column at a time; None when they hold more (``_clean_values``).
        ``results``: their result columns, if made already (a posted read's
        lengths are one of them)."""
        block = b.scratch
        assert block is not None
        view, stride, refs, n = block.view, block.size, b.program.refs, len(ks)
        # where each execution's buffer starts in the block
        starts: Any = range(0, n * stride, stride) if whole else [k * stride for k in ks]
        if clean.posted_outs:
            if len(clean.posted_outs) != 1 or clean.outs or clean.last_out is not None:
                return None
            i, off, _, j = clean.posted_outs[0]  # one posted read: read_files' first
            width = len(clean.posted)
            if results is not None:
                got = results[i]
            else:
                got = everything[j::width] if whole else _posted_columns(b, width, ks)[j]
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
                one = self._value_column(b, clean, ks, rs, lo, whole, everything, columns)
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
        return lib.ur_posted_missing(posted, width, _ks_array(ks), len(ks)) == 0

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
        gathered = None if whole else _posted_columns(b, width, ks)
        for j, (index, *_) in enumerate(clean.posted):
            columns[index] = everything[j::width] if gathered is None else gathered[j]
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
