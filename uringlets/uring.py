"""The io_uring backend of ``Engine``: ``UringBackend`` starts batches of
executions (here) and finishes the clean ones (``uring_clean.CleanEndings``,
which it inherits); the rest is ``follow.PlanFollower``'s and the ring is
``ringio.RingIO``'s.

Everything per-op was decided by the translator; the backend only follows
the plan.  Starting a batch costs Python a constant amount of work plus a few
column operations in C (``start``); an execution gets an ``Execution``
object of its own only when it leaves the clean path.
"""

from __future__ import annotations

import os
import time
import warnings
from array import array
from collections.abc import Mapping, Sequence
from itertools import accumulate, islice
from typing import Any

from . import kernel
from .errors import ParamError
from .execution import Batch, ScratchBlock, ScratchPool, init_scratch
from .follow import PlanFollower
from .kernel import ffi
from .notify import Completion, NotificationRing
from .plan import (
    UD_BATCH_MASK,
    UD_BATCH_SHIFT,
    UD_GEN_MASK,
    UD_GEN_SHIFT,
    UD_K_FIELD,
    UD_K_MASK,
    UD_K_SHIFT,
    Plan,
)
from .program import Program
from .restrict import Restriction
from .ringio import BOX_OTHERS, BOX_OTHERS_DONE, BOX_RUNS, BOX_RUNS_DONE, LAST_CLEAR, RingIO
from .uring_clean import CleanEndings

lib = kernel.lib

_K_STEP = 1 << UD_K_SHIFT
_ZERO = (0,)
_NO_SLOTS = array("q")  # the slots of a batch that has none; never mutated
CLOSE_GIVE_UP = 5.0  # seconds close() waits for a kernel that will not let go
# Backends abandoned with requests in the kernel: their memory is never freed.
_ABANDONED: list[Any] = []


class UringBackend(CleanEndings):
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
            io.promised += n * plan.first_run_cqes
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
                    for copy in use.copies:
                        flat[copy] = value
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
                for copy in use.copies:
                    columns[copy] = array("q", items)
        return keep

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
