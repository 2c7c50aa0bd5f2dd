"""``Backend``: what the Engine asks of the io_uring backend (uring.py) and
of the thread engine (threads.py), and nothing more.  The Engine chooses one
(``Engine._choose``); nothing else knows which it has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .notify import Completion
from .program import Program


class Backend(Protocol):
    """What an engine needs from a backend (``uring.UringBackend``,
    ``threads.ThreadsBackend``); only the owner thread calls it."""

    @property
    def kind(self) -> str: ...

    @property
    def in_flight(self) -> int:
        """Executions started and not yet posted."""
        ...

    @property
    def threadlets(self) -> int:
        """Of those, threadlets (not bounded by capacity)."""
        ...

    @property
    def broken(self) -> str | None:
        """Why the backend disabled itself, if it did."""
        ...

    def disable(self, why: str) -> None:
        """Mark the backend broken (an invariant the engine checks failed):
        from then on every call refuses with ``why``."""
        ...

    @property
    def nslots(self) -> int:
        """Its fixed-file table (0: none)."""
        ...

    def can_start(self, program: Program, n: int) -> bool:
        """Whether ``n`` executions of ``program`` can start now (slots)."""
        ...

    def start(
        self,
        program: Program,
        params: Mapping[str, list[Any]],
        n: int,
        tags: Sequence[Any] | None,
        sink: list[Completion] | None = None,
    ) -> Sequence[int]:
        """Start ``n`` executions with validated parameter columns and their
        ``tags`` (None: every tag is None).  Returns their ids.
        A ``sink`` (``run``) receives their completions too, and means the
        caller reaps at once: the backend may leave the submission to that
        reap (one system call for both)."""
        ...

    def reap(self, min_complete: int, timeout_ns: int) -> bool:
        """Post what finished; wait for ``min_complete`` events at most
        ``timeout_ns`` (< 0: no limit).  False on timeout."""
        ...

    def cancel(self, ident: int) -> bool:
        """Cancel an execution in flight; False if it already ended."""
        ...

    def close(self) -> None:
        """Cancel everything, wait until nothing of it is in use, release."""
        ...

    def fileno(self) -> int:
        """A descriptor that becomes readable when ``reap(0, ...)`` would
        make progress (a hint: readable spuriously at times, never missed)."""
        ...

    def forked(self) -> None:
        """This is a forked child: forget the parent's ring or threads
        without touching them (no cancel, no join, no teardown)."""
        ...
