"""Following the plan through an execution that left the clean path:
``PlanFollower``, the io_uring backend's general path, over the backend's
``RingIO`` (which owns every table it reads and changes).

An execution is *promoted* (``_promote``: it gets an ``Execution``) when
something unusual happens to it: a CQE other than its clean ending, a cancel,
a resume, a userspace step.  From then on every CQE of it goes through
``_route_one``; ``_run_over`` records a run's results and tests the stop
rules, ``_advance`` runs userspace steps and pushes the next kernel segment,
``_finish`` installs exports and closes what the atoms left open, and
``_release`` posts the one completion.

Ownership.  An execution owns its slots, and through its batch its scratch
buffer (a slice of the batch's block) and its parameter buffers, from
``start`` until it finishes; the kernel may write into the scratch buffer
only while a run is in flight, an execution finishes only after the CQE that
ends its run, and the batch gives its block back only when its last
execution has finished, so the buffers outlive the kernel's use of them.
A slot is released once: ``_finish`` empties the slots the execution's own
atoms did not close (or installs exported ones as real fds first), then puts
them back on the free list.  One execution, one completion:
``Batch.done[k]`` is set exactly once, where the completion is posted.
"""

from __future__ import annotations

import errno
import os
from array import array

from . import atoms, kernel
from .execution import Batch, Execution, check_ret, init_scratch, single_sqe
from .interpreter import call_blocking
from .kernel import ffi
from .notify import Completion
from .plan import (
    LINK_HARD,
    LINK_SOFT,
    UD_BATCH_MASK,
    UD_BATCH_SHIFT,
    UD_CANCEL,
    UD_INSTALL,
    UD_K_FIELD,
    UD_K_MASK,
    UD_K_SHIFT,
    UD_LINK_TIMEOUT,
    PlanAtom,
)
from .ringio import RingIO
from .syslet import Param, Ref, stop_holds

lib = kernel.lib

_AUX_EXPORT = 0xF
_NO_SLOTS = array("q")  # never mutated
_MINUS_ONE = ffi.new("int32_t[1]", [-1])
_UD_BASE_MASK = ~(UD_K_FIELD | 0xFFF)  # user_data -> its batch's ud_base


class PlanFollower:
    """The general path: one execution at a time, atom by atom, on the
    state ``io`` owns."""

    def __init__(self, io: RingIO) -> None:
        self.io = io

    def _promote(self, batch: Batch, k: int) -> Execution:
        """Take execution ``k`` of ``batch`` off the clean path."""
        ex = batch.slow[k] = Execution(batch, k)
        if not batch.promoted:
            batch.promoted = True
            # From now on Python routes the batch's posted CQEs (_route_one):
            # those of a promoted execution belong to its general path.
            self.io._posted[batch.index].res = ffi.NULL
        return ex

    def _row(self, ex: Execution) -> list[int]:
        """The execution's value row, copied out of its batch's columns the
        first time a resume needs to patch it."""
        if ex.row is None:
            batch, k = ex.batch, ex.k
            flat, n = batch.flat, batch.n
            if flat is None:  # no columns: every value is 0
                ex.row = [0] * len(ex.program.plan.value_defaults)
            else:
                ex.row = [flat[v * n + k] for v in range(len(ex.program.plan.value_defaults))]
        return ex.row

    def _push_run(self, ex: Execution, first: int, last: int) -> None:
        """Push atoms ``first..last`` of a segment, or as many of them as fit
        the SQ ring whole (an atom and its LINK_TIMEOUT are never split)."""
        plan = ex.program.plan
        patoms = plan.atoms
        start = patoms[first].sqe
        end = first
        while end < last and patoms[end + 1].sqe_end - start <= self.io.sq_entries:
            end += 1
        count = patoms[end].sqe_end - start
        ex.run_first, ex.run_last = first, end
        # in the aux bits of its CQEs: 1..15 (0 is the batch's first run
        # only, so a clean ending's user_data can never match a later run)
        ex.run_number = ex.run_number % 15 + 1
        if plan.scratch_init:  # lengths may have changed since the last run
            init_scratch(plan, ex.scratch[1], self._row(ex).__getitem__)
        row = ffi.new("int64_t[]", self._row(ex))
        self.io._push(
            plan.images_c, count, plan, row, 1, 1, ex.ud | ex.run_number << 8, first=start
        )

    def _route_others(self, ud: int, res: int) -> None:
        self._route_one(self.io._batches[(ud >> UD_BATCH_SHIFT) & UD_BATCH_MASK], ud, res)

    def _recover(self, ud: int, res: int) -> None:
        """An exception escaped while the CQE ``(ud, res)`` was being
        routed, so its execution may be anywhere between two steps.  It ends
        cancelled: if a run of it is still in flight, the kernel is asked to
        cancel it and its CQEs finish it as usual; if none is (this CQE
        ended the run, or it was a userspace step), it is finished now (its
        descriptors closed, its one completion posted)."""
        b = self.io._batches[(ud >> UD_BATCH_SHIFT) & UD_BATCH_MASK]
        k = (ud >> UD_K_SHIFT) & UD_K_MASK
        if b is None or ud & _UD_BASE_MASK != b.ud_base or k >= b.n or b.done[k]:
            return  # it finished after all
        ex = b.slow.get(k) or self._promote(b, k)
        if ex.results is None:
            ex.results = [None] * len(ex.program.atoms)
        atom = ud & 0xFF
        if UD_INSTALL <= atom < UD_LINK_TIMEOUT:
            ex.pending = 0  # whether it was counted is not known: expect none
        elif atom < UD_INSTALL and (ud >> 8) & 0xF == ex.run_number:
            if self._ends_run(ex, atom, res):
                ex.run_first = ex.run_last = -1  # this CQE ended the run
            elif ex.run_first <= atom <= ex.run_last:
                # a CQE the run goes on after (a posted atom's): keep what it
                # said, for when the run's last CQE comes
                if ex.raw is None:
                    ex.raw = {}
                ex.raw[atom] = res
        if ex.run_first >= 0 or ex.pending:
            self._cancel(ex)
            self.io._enter(0)
        else:
            ex.cancelled = True
            self._finish(ex)

    @staticmethod
    def _ends_run(ex: Execution, atom: int, res: int) -> bool:
        """Whether the CQE ``res`` of ``atom`` ends the execution's run in
        flight (as ``_route_one`` reads it)."""
        if not ex.run_first <= atom <= ex.run_last:
            return False
        pa = ex.program.plan.atoms[atom]
        return atom == ex.run_last or (
            pa.link == LINK_SOFT and (pa.skip or res == -errno.ECANCELED)
        )

    def _route_one(self, b: Batch | None, ud: int, res: int) -> None:
        """Route one CQE that is not a clean ending.

        Stale CQEs are expected and dropped: a cancel's or a LINK_TIMEOUT's
        that outlived its execution, and the *followers* of a broken link.
        When an atom without CQE_SKIP_SUCCESS fails, the kernel posts
        ``-ECANCELED`` (skip flag or not) for every later request of its
        link, and when a request is refused at submission the atoms before
        it in the link post too; by then the engine has moved on (the run is
        over, the execution finished or resumed with a new run, whose
        number is in the aux bits).  A failed CQE that belongs to no run in
        flight is such a follower; a *successful* one would mean the kernel
        still ran something the engine considered done: the engine breaks."""
        atom = ud & 0xFF
        k = (ud >> UD_K_SHIFT) & UD_K_MASK
        if b is None or ud & _UD_BASE_MASK != b.ud_base or k >= b.n or b.done[k]:
            if atom >= UD_LINK_TIMEOUT or res < 0:  # UD_CANCEL too
                return  # a cancel, a link timeout or a follower that outlived its execution
            self.io._break(f"CQE for no execution in flight (user_data={ud:#x}, res={res})")
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
        if atom == UD_CANCEL:
            return
        if UD_INSTALL <= atom < UD_LINK_TIMEOUT:
            self._installed(ex, atom - UD_INSTALL, (ud >> 8) & 0xF, res)
            return
        # an atom's or its LINK_TIMEOUT's CQE: of the run in flight?
        index = atom - UD_LINK_TIMEOUT if atom >= UD_LINK_TIMEOUT else atom
        if (ud >> 8) & 0xF != ex.run_number or not ex.run_first <= index <= ex.run_last:
            if res < 0:
                return  # a follower of a run already over
            self.io._break(f"CQE of no run in flight (user_data={ud:#x}, res={res})")
        if atom >= UD_LINK_TIMEOUT:
            if res == -errno.ETIME:  # it fired: its atom was cancelled for it
                ex.timed_out = (ex.timed_out or frozenset()) | {index}
            return
        if atom == ex.run_last:
            self._run_over(ex, atom, res)
            return
        if ex.raw is None:
            ex.raw = {}
        ex.raw[atom] = res
        pa = ex.program.plan.atoms[atom]
        if pa.link == LINK_SOFT and (pa.skip or res == -errno.ECANCELED):
            # A skip-flagged request posts only when it failed (a short
            # transfer too), and then the kernel silences the rest of its
            # link; a -ECANCELED is a
            # follower of an earlier failure (or of a refused submission):
            # either way the run is over.
            self._run_over(ex, atom, res)

    def _broke(self, ex: Execution, pa: PlanAtom, r: int) -> bool:
        full = self._row(ex)[pa.length_value] if pa.length_value is not None else None
        return pa.op.kernel_fails(r, pa.args, full)

    def _run_over(self, ex: Execution, posted: int, res: int) -> None:
        """The run ``run_first..run_last`` is over; ``posted`` is the atom whose
        CQE ended it.  Record results, test stop rules, go on.

        A ``-ECANCELED`` the engine did not ask for is read here: on a timed
        atom it is its LINK_TIMEOUT's doing (``-ETIME``, whichever of the two
        CQEs came first); on the first atom of a longer run it means the
        kernel refused a later request of the link at submission and ran
        none of it, so the run is pushed again one atom at a time, and the
        refused atom reports its own error, as the blocking call does."""
        patoms = ex.program.plan.atoms
        raw = ex.raw
        ex.raw = None
        results = ex.results
        if results is None:
            results = ex.results = [None] * len(patoms)
        first, last = ex.run_first, ex.run_last
        ex.run_first = ex.run_last = -1  # no run in flight until the next push
        if posted > first and not ex.cancelled and self._refused(ex, first, posted, raw, res):
            self._push_run(ex, first, first)  # refused at submission: one at a time
            return
        for i in range(first, posted + 1):
            pa = patoms[i]
            if i == posted:
                r = res
            elif raw is not None and i in raw:
                r = raw[i]
            elif pa.skip and pa.success is not None:
                r = pa.success
            elif pa.skip and pa.success_value is not None:
                r = self._row(ex)[pa.success_value]
            else:
                self.io._break(f"a CQE of atom {i} is missing (execution {ex.ud:#x})")
            if r == -errno.ECANCELED and not ex.cancelled:
                if pa.timeout is not None:
                    r = -errno.ETIME  # what its LINK_TIMEOUT did to it
                elif i == first < last:
                    self._push_run(ex, i, i)  # refused at submission: one at a time
                    return
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
        if posted != last:
            self.io._break(f"a run ended at atom {posted} without a broken link (last {last})")
        self._continue(ex, last + 1)

    @staticmethod
    def _refused(
        ex: Execution, first: int, posted: int, raw: dict[int, int] | None, res: int
    ) -> bool:
        """Whether a hard-linked run ended as a link refused at submission
        does: its first atom failed, and the kernel cancelled every atom
        after it but (at most) the refused one, which reports its own
        error; each of them posted (a failed request posts even when
        skip-flagged).  A hard link that ran goes on after a failure: its
        atoms report their own results, and a skip-flagged one that
        succeeded posts nothing, so a run with an atom that posted nothing
        before the end ran.  (The first atom ran and failed, a skipped
        atom succeeded, a later one failed and cancelled the rest: that run
        must not be pushed again.)"""
        if ex.program.plan.atoms[first].link != LINK_HARD or raw is None:
            return False
        if raw.get(first, 0) >= 0 or res != -errno.ECANCELED:
            return False
        if any(i not in raw for i in range(first + 1, posted)):
            return False
        results = [raw[i] for i in range(first + 1, posted)] + [res]
        return sum(r != -errno.ECANCELED for r in results) <= 1

    def _feed(self, ex: Execution, pa: PlanAtom, r: int) -> None:
        """Later lengths follow what atom ``pa`` really received; a userspace
        step's bytes are copied where kernel atoms will look for them."""
        row = self._row(ex)
        for v in pa.feeds:
            row[v] = r if r > 0 else 0
        if pa.data_at is not None and r > 0:
            data = atoms.data_of((ex.values or {}).get(pa.index))
            offset, size = pa.data_at
            if len(data) > size:  # never: the step received at most its size
                self.io._break(f"atom {pa.index} received {len(data)} bytes into {size}")
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
            self.io._push_single(single_sqe(op, slot, 0, 0, lib.IOSQE_FIXED_FILE, ud))

    def _installed(self, ex: Execution, atom: int, aux: int, res: int) -> None:
        if ex.installed is None or ex.pending <= 0:
            self.io._break(f"an install CQE execution {ex.ud:#x} did not ask for (res={res})")
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
                    self.io._push_single(single_sqe(op, slot, 0, 0, lib.IOSQE_FIXED_FILE, ud))
                return
        if ex.installed and ex.exports is not None:
            ex.exports.update((c, fd) for c, fd in ex.installed.items() if fd >= 0)
            ex.installed = None
        for creator in live:  # exported ones too: the caller has its own fd now
            slot = ex.slots[slot_of[creator]]
            check_ret(lib.ur_update_files(self.io._ring, slot, _MINUS_ONE, 1), "close slot")
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
        """Post the execution's one completion through ``_post``, with its
        slots (empty by now)."""
        b, k = ex.batch, ex.k
        if b.slow.get(k) is not ex:
            self.io._break(f"execution {ex.ud:#x} finished twice")
        if ex.results is None:
            self.io._break(f"execution {ex.ud:#x} finished without results")
        c = Completion(ex.tag, ex.program, ex.results, ex.stopped_at, ex.cancelled, ex.values)
        slots = array("q", ex.slots) if ex.slots else _NO_SLOTS
        self.io._post(b, (k,), [c], slots, True, False)

    def _cancel(self, ex: Execution) -> None:
        ex.cancelled = True
        if ex.run_first < 0:
            return
        op = kernel.opcode("ASYNC_CANCEL")
        flags = lib.IORING_ASYNC_CANCEL_ALL
        for atom in range(ex.run_first, ex.run_last + 1):
            target = ex.ud | ex.run_number << 8 | atom
            sqe = single_sqe(op, -1, target, flags, 0, ex.ud | UD_CANCEL)
            self.io._push_single(sqe)
