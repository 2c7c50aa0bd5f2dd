"""Runs kept apart from the notification ring, for the ``ul.aio`` helpers
(``Engine`` inherits them from ``PrivateRuns``).

A helper owns what its executions use (descriptors and a pipe it passes as
parameters, the descriptors they export), so their completions must reach
the helper and nobody else, and an interrupt must not let the helper close
what the kernel still uses: ``_run_private`` cancels and waits for what it
started before the exception propagates.  ``_run_columns`` hands a helper
the results of many executions a column at a time (no object per
execution on the io_uring clean path); ``_submit_into`` starts one
execution whose completion goes to a sink of the caller's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .handles import Handle
from .notify import Columns, ColumnSink, Completion, PrivateSink
from .program import Program

if TYPE_CHECKING:
    from .backend import Backend

# The longest _run_private waits, after an interrupt, for its executions to end.
PRIVATE_DRAIN = 5.0


def close_exports(program: Program, c: Completion) -> None:
    """Close the descriptors completion ``c`` exported, which nobody will
    take (a helper's execution cancelled under it)."""
    for index in program.exports:
        fd = c[program.refs[index]]
        if isinstance(fd, int) and fd >= 0:
            os.close(fd)


class PrivateRuns:
    """The private-run half of ``Engine``: it owns nothing; the backend, the
    checks and the waits are the engine's."""

    _backend: Backend
    _closed: bool
    # (the engine's methods these runs are made of)
    _check: Callable[[], None]
    _refuse: Callable[[], NoReturn]
    _pump: Callable[[int, float | None], bool]
    _start: Callable[..., Sequence[int]]  # (program, binds, tags, block, sink, deadline)
    _start_all: Callable[..., None]  # (program, binds, sink, deadline, ids)

    def _run_private(
        self, program: Program, params: Sequence[Mapping[str, Any]]
    ) -> list[Completion]:
        """``run_many(program, params=params)`` for a helper that owns what
        its executions use (descriptors, a pipe, passed as parameters): the
        completions go to a ``PrivateSink``, never the notification ring,
        and an interrupt (any exception) cancels the executions it started
        and waits for every one to end (``PRIVATE_DRAIN`` seconds at most)
        before it propagates, closing the descriptors they exported, so
        that the helper may close what they used.  A second interrupt
        during that wait propagates at once."""
        binds = list(params)
        n = len(binds)
        sink = PrivateSink()
        ids: list[int] = []
        try:
            self._start_all(program, binds, sink, None, ids)
            while len(sink) < n:
                self._pump(n - len(sink), None)
                self._check()
        except BaseException:
            if not self._closed and not self._backend.broken:
                self._drain_private(program, ids, sink)
            raise
        out: list[Any] = [None] * n
        for c in sink:
            out[c.tag] = c
        return out

    def _drain_private(self, program: Program, ids: list[int], sink: PrivateSink) -> None:
        """``_run_private``'s way out: cancel ``ids``, wait for them all to
        end, close what they exported (the helper never sees them)."""
        for ident in ids:
            self._backend.cancel(ident)
        until = time.monotonic() + PRIVATE_DRAIN
        while len(sink) < len(ids) and self._backend.in_flight:
            if not self._pump(len(ids) - len(sink), until):
                break  # (left in flight: the engine's close waits for them)
        for c in sink:
            close_exports(program, c)

    def _run_columns(
        self, program: Program, params: Sequence[Mapping[str, Any]], ref: Any = None
    ) -> Columns:
        """``run_many(program, params=params)`` as columns (``Columns``:
        the results a column per atom, and each execution's value of
        ``ref``), for a helper that wants no object per execution: the
        io_uring engine's clean endings become columns directly.  The
        completions stay out of the notification ring, so an interrupt
        loses them with the call: only for programs that export nothing."""
        if program.exports:
            raise ValueError("_run_columns: a program that exports descriptors")
        binds = list(params)
        n = len(binds)
        sink = ColumnSink(ref)
        self._start_all(program, binds, sink, None)
        while (ended := sink.ended()) < n:
            self._pump(n - ended, None)
            self._check()
        try:
            return Columns(len(program.atoms), n, ref, sink)
        except RuntimeError as exc:  # the endings do not add up: the engine is not to be trusted
            self._backend.disable(f"_run_columns: {exc}")
            self._refuse()

    def _submit_into(
        self, sink: PrivateSink, program: Program, params: Mapping[str, Any], tag: Any
    ) -> Handle:
        """``submit``, with the completion put in ``sink`` instead of the
        notification ring.  The SQEs are submitted before it returns."""
        ident = self._start(program, (params,), (tag,), True, sink, None)[0]
        self._backend.reap(0, -1)  # (a start with a sink leaves its SQEs queued)
        return Handle(self, ident, tag)
