"""The ring and the tables of the io_uring backend: ``RingIO``, the one
object that owns the backend's state.  ``uring.UringBackend`` makes it and a
``follow.PlanFollower`` over it; both read and change the state only through
it.

Its tables:

* ``_batches``: one entry per batch of executions in flight (``Batch``); the
  entry's number and a generation are in every SQE's ``user_data`` beside the
  execution's place ``k`` in its batch, so a late CQE for a finished or
  cancelled execution can never reach another one.  ``_fast`` mirrors each
  entry's ``fast_ud`` for ``ur_reap_split``;
* ``_free_slots``: the empty slots of the sparse fixed-file table (an int64
  array: a batch's slot column is a slice of it);
* ``_scratch``: ``{size: ScratchPool}``, blocks of per-execution buffers.

It queues SQE images (``_push``), enters the kernel (``_enter``) and drains
the CQ ring (``reap``), sorting the CQEs in C into clean endings and the rest;
what they mean is decided by the routes the backend gives it
(``route_clean``: ``UringBackend._route_clean``; ``route_others`` and
``recover``: the follower's).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import setitem
from typing import TYPE_CHECKING, Any, NoReturn

from . import kernel
from .errors import EngineClosed
from .execution import Batch, ScratchPool, check_ret
from .kernel import ffi
from .notify import PRIVATE_SINKS, ColumnRun, Completion, NotificationRing
from .plan import (
    MAX_CAPACITY,
    Plan,
)

if TYPE_CHECKING:
    from .restrict import Restriction

lib = kernel.lib
# The longest a wait raised to every CQE still promised waits (RingIO._wait_for_all).
SURE_WAIT_NS = 50_000_000
LAST_CLEAR = lib.IOSQE_IO_LINK | lib.IOSQE_IO_HARDLINK | lib.IOSQE_CQE_SKIP_SUCCESS
_CQ_OVERFLOW = lib.IORING_SQ_CQ_OVERFLOW
# The fields of the inbox's box (ring.h, written by ur_reap_box).
BOX_OTHERS: int = lib.UR_BOX_OTHERS
BOX_OTHERS_DONE: int = lib.UR_BOX_OTHERS_DONE
BOX_CLEAN: int = lib.UR_BOX_CLEAN
BOX_RUNS: int = lib.UR_BOX_RUNS
BOX_RUNS_DONE: int = lib.UR_BOX_RUNS_DONE
BOX_MORE: int = lib.UR_BOX_MORE
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # runs an iterator out, in C


def _no_route(*args: int) -> None:
    raise EngineClosed("engine broken: a CQE came before the backend gave its routes")


class RingIO:
    """Owns one ring, its fixed-file table and the batch table.  Not
    thread-safe: the Engine calls it from its owner thread only."""

    def __init__(
        self,
        notify: NotificationRing,
        capacity: int,
        sq_entries: int,
        restriction: Restriction | None = None,
        progress: str = "owner",
    ) -> None:
        if capacity > MAX_CAPACITY:
            raise ValueError(f"capacity is at most {MAX_CAPACITY}")
        self._notify = notify
        cq_entries = 1 << max(capacity * 2, sq_entries * 2, 16).bit_length()
        # at least 2: an atom and its LINK_TIMEOUT go into the ring together
        self._ring, self.setup_flags, self.dropped_flags = kernel.setup_ring(
            max(2, sq_entries),
            min(cq_entries, 65536),
            disabled=restriction is not None,
            without=kernel.OWNER_PROGRESS_FLAGS if progress == "kernel" else (),
        )
        ring = self._ring
        self.sq_entries = int(ring.sq_entries)
        soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nslots = max(16, min(capacity * 4, soft_nofile, 65536))
        try:
            check_ret(lib.ur_register_sparse_files(ring, nslots), "register files")
            if restriction is not None:  # registered while disabled, then enabled
                restriction.register(ring)
        except OSError:
            lib.ur_teardown(ring)
            raise
        self.nslots = nslots
        self._free_slots = array("q", range(nslots - 1, -1, -1))
        # A batch holds at least one execution in flight, and the
        # notification ring bounds those by capacity: the table never fills.
        self._batches: list[Batch | None] = [None] * capacity
        self._free_batches = list(range(capacity - 1, -1, -1))
        self._generations = [0] * capacity
        # fast_ud of each entry's batch (0: none), for ur_reap_split, and
        # where it puts the batch's posted CQEs (res NULL: Python routes them)
        self._fast = ffi.new("uint64_t[]", capacity)
        self._posted = ffi.new("struct ur_posted[]", capacity)
        self._scratch: dict[int, ScratchPool] = {}
        # The value columns of a batch in which every value is 0 (no scratch,
        # slots or parameters): read by ur_push, never written.
        self._zeros = ffi.new("int64_t[]", capacity)
        self._reap_max = int(ring.cq_entries)
        self._uds = ffi.new("uint64_t[]", self._reap_max)
        self._ress = ffi.new("int32_t[]", self._reap_max)
        self._clean_k = ffi.new("uint32_t[]", self._reap_max)
        self._clean_res = ffi.new("int32_t[]", self._reap_max)
        # runs of clean endings of one batch: UR_RUN_FIELDS each (see ur_reap_split)
        self._clean_runs = ffi.new("int32_t[]", lib.UR_RUN_FIELDS * self._reap_max)
        # The inbox: the arrays above hold the CQEs last taken from the CQ
        # ring until every one is routed; the box counts them and how far
        # routing got (UR_BOX_*, written by ur_reap_box in C, advanced here).
        self._box = ffi.new("unsigned[]", lib.UR_BOX_FIELDS)
        inbox = self._inbox = ffi.new("struct ur_inbox *")
        inbox.fast_ud, inbox.nbatches, inbox.max = self._fast, capacity, self._reap_max
        inbox.posted = self._posted
        inbox.user_data, inbox.res = self._uds, self._ress
        inbox.clean_k, inbox.clean_res = self._clean_k, self._clean_res
        inbox.clean_runs, inbox.box = self._clean_runs, self._box
        self._eventfd = -1  # made by fileno(), for event loops
        # The CQE being routed when an exception escaped (user_data, res), if any.
        self._interrupted: tuple[int, int] | None = None
        self.in_flight = 0
        # CQEs the executions started whole will post at least (their first
        # segments: Plan.first_run_cqes); less the CQEs ever taken
        # (inbox.taken), a lower bound of the CQEs still to come.
        self.promised = 0
        self.broken: str | None = None
        # What the CQEs mean, given by the backend that owns this ring.
        self.route_others: Callable[[int, int], None] = _no_route  # (user_data, res)
        self.route_clean: Callable[[int, int, int], None] = _no_route  # (nc, nruns, done)
        self.recover: Callable[[int, int], None] = _no_route  # (user_data, res)

    def _push(
        self,
        images: Any,
        count: int,
        plan: Plan | None,
        values: Any,
        stride: int,
        n: int,
        ud_first: int,
        ud_step: int = 0,
        first: int = 0,
    ) -> None:
        """Queue ``n`` runs of images ``first..first+count-1`` with their value
        columns, run ``i`` with user_data base ``ud_first + i * ud_step``;
        enter the kernel whenever the SQ ring is full."""
        ring = self._ring
        patches, npatches = (plan.patches, plan.npatches) if plan is not None else (ffi.NULL, 0)
        k = lib.ur_push(
            ring, images, first, count, patches, npatches, values, stride, n,
            LAST_CLEAR, ud_first, ud_step,
        )  # fmt: skip
        done = check_ret(k, "push")
        while done < n:  # the SQ ring was full: submit, then the rest
            self._enter(0)
            k = lib.ur_push(
                ring, images, first, count, patches, npatches, values + done, stride, n - done,
                LAST_CLEAR, ud_first + done * ud_step, ud_step,
            )  # fmt: skip
            done += check_ret(k, "push")

    def _push_single(self, sqe: bytes) -> None:
        self._push(ffi.from_buffer(sqe), 1, None, ffi.new("int64_t[1]"), 1, 1, 0)

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
        return self._entered(lib.ur_enter(ring, min_complete, timeout_ns), min_complete)

    def _entered(self, r: int, min_complete: int) -> bool:
        """What ``io_uring_enter`` returned means: True when the wait (if
        any) is over, False when it timed out, a signal interrupted it, or
        the kernel asked to try again; a failure the engine cannot recover
        from breaks it.  A positive count of SQEs submitted says nothing of
        the wait (it hides an -ETIME), so the CQ ring decides."""
        if r >= 0:
            return r == 0 or not min_complete or lib.ur_cq_ready(self._ring) >= min_complete
        if r in (-errno.ETIME, -errno.EINTR, -errno.EAGAIN, -errno.ENOMEM):
            return False  # the SQEs stay queued (ring.pending): the next enter submits them
        if r == -errno.EBUSY:
            return True  # CQEs wait in the overflow list: the caller reaps them first
        if r == -errno.EBADR:
            self._break("the kernel dropped a CQE (CQ overflow allocation failure)")
        if r == -errno.EEXIST:
            self._break("io_uring_enter from a task other than the ring's single issuer")
        self._break(f"io_uring_enter failed: {os.strerror(-r)}")

    def fileno(self) -> int:
        """An eventfd registered with the ring: readable once completion
        work is waiting, so ``reap(0, ...)`` would make progress (with
        DEFER_TASKRUN the kernel signals it when the work is queued; the
        reap that follows runs it).  A hint, not a count: every reap clears
        it before it looks at the CQ ring, so a wake-up is never lost."""
        if self._eventfd < 0:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            r = lib.ur_register_eventfd(self._ring, fd)
            if r < 0:
                os.close(fd)
                raise OSError(-r, f"register eventfd: {os.strerror(-r)}")
            self._eventfd = fd
        return self._eventfd

    def _close_eventfd(self) -> None:
        if self._eventfd >= 0:
            os.close(self._eventfd)  # the ring's teardown unregisters it
            self._eventfd = -1

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        """Route what an interrupted reap left in the inbox, wait for
        ``min_complete`` CQEs (at most ``timeout_ns``, < 0 no limit), then
        route every CQE there is.  Returns False on timeout.

        Nothing taken from the CQ ring is forgotten: ``ur_reap_box`` moves
        CQEs into the inbox and records them in one C call, and routing
        marks each CQE taken before it routes it, so an exception (a
        KeyboardInterrupt from a signal handler, say) escaping from routing
        leaves the rest for the next call.  The execution whose CQE was
        being routed then is recovered by ``recover``."""
        box = self._box
        if (
            box[BOX_OTHERS_DONE] < box[BOX_OTHERS]
            or box[BOX_RUNS_DONE] < box[BOX_RUNS]
            or self._interrupted is not None
        ):
            self._route_inbox()
        if self._eventfd >= 0:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._eventfd)
        watched = self._eventfd >= 0
        if min_complete >= self.in_flight > 0:
            min_complete, timeout_ns = self._wait_for_all(min_complete, timeout_ns)
        verdict = lib.ur_cycle(
            self._ring, self._inbox, min_complete, timeout_ns, self.in_flight, watched
        )
        ok = verdict == 1 or (verdict != 0 and self._entered(verdict, min_complete))
        while True:
            if box[BOX_OTHERS] or box[BOX_RUNS]:
                self._route_inbox()
            if not box[BOX_MORE] and not self._ring.pending:
                return ok
            # routing queued resumes (the box was filled before it), CQEs
            # wait in the overflow list, or the inbox was full: round again
            # without waiting.  (Without it a poll from an event loop would
            # leave the resumes unsubmitted, and no CQE would wake it.)
            verdict = lib.ur_cycle(self._ring, self._inbox, 0, -1, self.in_flight, watched)
            if verdict < 0:
                self._entered(verdict, 0)

    def _wait_for_all(self, min_complete: int, timeout_ns: int) -> tuple[int, int]:
        """A wait that every execution in flight must end to satisfy may
        wait for every CQE they are sure to post (``promised`` less what
        came) instead of one each: one wake-up, not one per CQE, for a
        chain that posts many (a copy's splices, a file's reads).  Capped
        at half the CQ ring (a wait the ring cannot hold would never end),
        and bounded by ``SURE_WAIT`` as well as the caller's timeout: a
        count that ever came out high costs that much time, never a hang."""
        sure = self.promised - self._inbox.taken
        if sure <= min_complete:
            return min_complete, timeout_ns
        raised = min(sure, self._reap_max // 2)
        if timeout_ns < 0 or timeout_ns > SURE_WAIT_NS:
            timeout_ns = SURE_WAIT_NS
        return max(min_complete, raised), timeout_ns

    def _route_inbox(self) -> None:
        """Route the CQEs in the inbox: the others first (they include the
        posted CQEs the clean endings after them look for), then the clean
        endings, a run at a time (``route_clean`` advances the box in the
        same call-free step that posts a run's completions)."""
        if self._interrupted is not None:
            ud, res = self._interrupted
            self.recover(ud, res)  # again, if an interrupt cuts it short too
            self._interrupted = None
        box, uds, ress = self._box, self._uds, self._ress
        while box[BOX_OTHERS_DONE] < box[BOX_OTHERS]:
            i = box[BOX_OTHERS_DONE]
            box[BOX_OTHERS_DONE] = i + 1  # taken before it is routed: never routed twice
            ud, res = uds[i], ress[i]
            try:
                self.route_others(ud, res)
            except BaseException:
                if self.broken is None:
                    self._interrupted = (ud, res)
                raise
        if box[BOX_RUNS_DONE] < box[BOX_RUNS]:
            self.route_clean(box[BOX_CLEAN], box[BOX_RUNS], box[BOX_RUNS_DONE])
            if box[BOX_RUNS_DONE] < box[BOX_RUNS]:
                self._break("a run of clean endings was left unrouted")

    def _break(self, why: str) -> NoReturn:
        self.broken = why
        raise EngineClosed(f"engine broken: {why}")

    def _post(
        self,
        b: Batch,
        ks: Sequence[int],
        completions: list[Completion] | ColumnRun,
        slots: Any,
        slow: bool,
        clean_run: bool,
    ) -> None:
        """The one place where executions end, on every path: the general
        path's single execution (``follow._release``) and a run of clean
        endings (``uring._finish_clean``).  Executions ``ks`` of batch ``b``
        post ``completions`` (one each, in the same order; ``run()``'s sink
        gets them too; a ``ColumnRun`` of a clean run goes to its
        ``ColumnSink`` only), give back ``slots`` (empty by now: their own atoms
        or ``_finish`` closed them), leave ``b.slow`` if ``slow``, and with
        the batch's last execution its table entry and scratch block go.
        ``clean_run``: the run of the inbox being routed is finished with
        them (the box advances in the same commit).

        One execution, one completion: each of ``ks`` must not have ended
        before, else the engine breaks (with nothing posted).  A batch that
        ends whole at once never marks ``done``: it leaves the table, and
        nobody reads the marks of a batch that is not in it.  After the
        check the commit makes no call until the completions are posted,
        so that an interrupt cannot split it."""
        n = len(ks)
        k = ks[0]
        if n == b.n:  # the whole batch: nothing of it can have ended before
            done = b.done
            once = b.remaining == n
        elif n == 1:
            done = None  # marked in place below
            once = not b.done[k]
        else:
            done = self._marked(b.done, ks)
            once = done.count(1) == b.n - b.remaining + n
        if not once or len(completions) != n:
            self._break(f"executions {ks} of batch {b.ud_base:#x} would end twice")
        ready = self._notify.ready
        sink: Any = b.sink  # += below: in place, no call
        # (type() is a call, where a signal handler may run: both before the commit)
        run = type(completions) is ColumnRun  # (its len() came above)
        public = type(sink) not in PRIVATE_SINKS
        many: list[Completion] = completions  # type: ignore[assignment]  # (read when not run)
        if slow:
            del b.slow[k]
        if done is None:
            b.done[k] = 1
        else:
            b.done = done
        self._free_slots += slots
        self.in_flight -= n
        b.remaining -= n
        last = not b.remaining
        if last:
            self._batches[b.index] = None
            self._fast[b.index] = 0
            self._posted[b.index].res = ffi.NULL  # (before the batch's array can go)
            self._free_batches += (b.index,)
        if run:
            sink += (completions,)  # a ColumnSink's: one part for the whole run
        else:
            if public:
                ready += many
            if sink is not None:
                sink += many
        if clean_run:
            self._box[BOX_RUNS_DONE] += 1
        if last and b.scratch is not None:
            self._give_scratch(b)

    @staticmethod
    def _marked(done: bytearray, ks: Sequence[int]) -> bytearray:
        """A copy of ``done`` with executions ``ks`` marked (swapped in by
        the commit in one store)."""
        done = bytearray(done)
        if type(ks) is range and ks.step == 1:
            done[ks.start : ks.stop] = b"\1" * len(ks)
        else:
            _consume(map(setitem, repeat(done, len(ks)), ks, repeat(1, len(ks))))
        return done

    def _give_scratch(self, b: Batch) -> None:
        """Give the scratch block of a batch that has left the table back to
        its pool: none of its runs is in flight (a late follower of a broken
        link never ran, so it writes nothing).  An interrupt that loses this
        call loses only the reuse: the block is freed with the batch."""
        block = b.scratch
        if block is not None:
            b.scratch = None
            self._scratch[block.size].give(block)
