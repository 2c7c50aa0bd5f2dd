"""The ring and the tables of the io_uring backend: ``RingIO``, the base of
``follow.PlanFollower`` and ``uring.UringBackend``.

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
what they mean is decided by the subclasses (``_route_clean``,
``_route_others``).
"""

from __future__ import annotations

import errno
import resource
from array import array
from typing import Any, NoReturn

from . import kernel
from .errors import EngineClosed
from .execution import Batch, ScratchPool, check_ret
from .kernel import ffi
from .notify import NotificationRing
from .plan import (
    MAX_CAPACITY,
    Plan,
)

lib = kernel.lib
_LAST_CLEAR = lib.IOSQE_IO_LINK | lib.IOSQE_IO_HARDLINK | lib.IOSQE_CQE_SKIP_SUCCESS
_CQ_OVERFLOW = lib.IORING_SQ_CQ_OVERFLOW


class RingIO:
    """Owns one ring, its fixed-file table and the batch table.  Not
    thread-safe: the Engine calls it from its owner thread only."""

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
        self._free_slots = array("q", range(nslots - 1, -1, -1))
        # A batch holds at least one execution in flight, and the
        # notification ring bounds those by capacity: the table never fills.
        self._batches: list[Batch | None] = [None] * capacity
        self._free_batches = list(range(capacity - 1, -1, -1))
        self._generations = [0] * capacity
        # fast_ud of each entry's batch (0: none), for ur_reap_split
        self._fast = ffi.new("uint64_t[]", capacity)
        self._scratch: dict[int, ScratchPool] = {}
        self._reap_max = int(ring.cq_entries)
        self._uds = ffi.new("uint64_t[]", self._reap_max)
        self._ress = ffi.new("int32_t[]", self._reap_max)
        self._clean_k = ffi.new("uint32_t[]", self._reap_max)
        self._clean_res = ffi.new("int32_t[]", self._reap_max)
        self._nclean = ffi.new("unsigned[1]")
        # runs of clean endings of one batch: UR_RUN_FIELDS each (see ur_reap_split)
        self._clean_runs = ffi.new("int32_t[]", lib.UR_RUN_FIELDS * self._reap_max)
        self._nruns = ffi.new("unsigned[1]")
        self._reap_args = (
            ring, self._fast, capacity, self._uds, self._ress, self._clean_k, self._clean_res,
            self._reap_max, self._nclean, self._clean_runs, self._nruns,
        )  # fmt: skip
        self.in_flight = 0
        self.broken: str | None = None

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
            _LAST_CLEAR, ud_first, ud_step,
        )  # fmt: skip
        done = check_ret(k, "push")
        while done < n:  # the SQ ring was full: submit, then the rest
            self._enter(0)
            k = lib.ur_push(
                ring, images, first, count, patches, npatches, values + done, stride, n - done,
                _LAST_CLEAR, ud_first + done * ud_step, ud_step,
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
        ring, reap_args, nclean = self._ring, self._reap_args, self._nclean
        while True:
            n = lib.ur_reap_split(*reap_args)
            if n:
                nc = nclean[0]
                # The others first: they include the posted CQEs the clean
                # endings after them look for.
                if n > nc:
                    self._route_others(
                        ffi.unpack(self._uds, n - nc), ffi.unpack(self._ress, n - nc)
                    )
                if nc:
                    self._route_clean(nc, self._nruns[0])
            if ring.pending or lib.ur_sq_flags(ring) & _CQ_OVERFLOW:
                # resumes were queued, or CQEs wait in the overflow list
                lib.ur_enter(ring, 0, -1)
                continue
            if n < self._reap_max:
                return ok

    def _break(self, why: str) -> NoReturn:
        self.broken = why
        raise EngineClosed(f"engine broken: {why}")

    def _drop(self, b: Batch) -> None:
        """The batch's last execution finished: free its table entry and
        its scratch block (no CQE of it can come any more)."""
        if b.scratch is not None:
            self._scratch[b.scratch.size].give(b.scratch)
        self._batches[b.index] = None
        self._fast[b.index] = 0
        self._free_batches.append(b.index)

    # -- what the CQEs mean: the subclasses' ---------------------------------------
    def _route_others(self, uds: list[int], ress: list[int]) -> None:
        raise NotImplementedError

    def _route_clean(self, nc: int, nruns: int) -> None:
        raise NotImplementedError
