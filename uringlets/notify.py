"""The notification ring and ``Completion``.

One execution, one completion: every submitted execution ends in exactly one
``Completion`` (cancelled ones included), and none is ever dropped.  The ring
is bounded: room is *reserved* when an execution is submitted and *filled*
when it completes, so ``reserved + ready <= capacity`` always holds and a
completion always has a place to go.  Only the engine's owner thread touches
the ring.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Sequence
from typing import Any

from .errors import RingFull


class Completion:
    """The single event that ends an execution.

    ``results`` has one int per atom: the normalised result (``-errno`` on
    error) or ``None`` for an atom that did not run.  ``completion[ref]`` is
    the atom's typed value: bytes for a read, an ``os.stat_result`` for
    statx/fstat, the real fd of an exported descriptor (the caller owns and
    closes it), the int result otherwise; ``None`` if the atom did not succeed
    or its descriptor was not exported.  The completion owns its bytes; it
    holds no kernel resource."""

    # uring.UringBackend._route builds the clean path's completions field by
    # field: a new field must be set there too.
    __slots__ = ("_values", "cancelled", "ok", "program", "results", "stopped_at", "tag")

    def __init__(
        self,
        tag: Any,
        program: Any,
        results: list[int | None],
        stopped_at: int | None,
        cancelled: bool,
        values: dict[int, Any] | None,
    ) -> None:
        self.tag = tag
        self.program = program
        self.results = results
        self.stopped_at = stopped_at
        self.cancelled = cancelled
        self._values = values
        # Every atom ran and none stopped the execution.
        self.ok: bool = stopped_at is None and not cancelled and None not in results

    def _index(self, ref: Any) -> int:
        try:
            index = ref.index
            if index >= 0 and self.program.atoms[index].op.name == ref.op:
                return int(index)
        except (AttributeError, IndexError, TypeError):
            pass
        raise KeyError(f"{ref!r} is not a Ref of this completion's program")

    def __getitem__(self, ref: Any) -> Any:
        index = self._index(ref)
        if self._values is not None and index in self._values:
            return self._values[index]
        result = self.results[index]
        if result is None or result < 0:
            return None
        kind = self.program.atoms[index].op.result
        return result if kind in ("count", "zero", "sleep") else None

    def error(self, ref: Any) -> OSError | None:
        """The atom's error as an ``OSError``, or None if it succeeded or did
        not run."""
        result = self.results[self._index(ref)]
        if result is None or result >= 0:
            return None
        code = -result
        return OSError(code, os.strerror(code) if code in errno.errorcode else "unknown error")

    def __repr__(self) -> str:
        ended = "ok" if self.ok else f"stopped@{self.stopped_at}"
        state = "cancelled" if self.cancelled else ended
        return f"<Completion tag={self.tag!r} {state} results={self.results}>"


class NotificationRing:
    """Bounded queue of completions.  Invariant: ``reserved + len(ready) <=
    capacity``; ``reserve`` before submit, ``post`` exactly once per
    reservation."""

    __slots__ = ("capacity", "ready", "reserved")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        self.capacity = capacity
        self.reserved = 0
        self.ready: deque[Completion] = deque()

    def room(self) -> int:
        return self.capacity - self.reserved - len(self.ready)

    def reserve(self, n: int) -> None:
        if n > self.room():
            raise RingFull(
                errno.EAGAIN,
                f"notification ring full: {self.reserved} execution(s) in flight and "
                f"{len(self.ready)} completion(s) not yet drained (capacity {self.capacity}); "
                "drain completions with wait()",
            )
        self.reserved += n

    def post(self, completion: Completion) -> None:
        assert self.reserved > 0, "a completion was posted without a reservation"
        self.reserved -= 1
        self.ready.append(completion)

    def release(self, n: int) -> None:
        """Give back reservations of executions that never started."""
        assert self.reserved >= n
        self.reserved -= n

    def drain(self, max_events: int | None = None) -> list[Completion]:
        ready = self.ready
        if max_events is None or max_events >= len(ready):
            out = list(ready)
            ready.clear()
            return out
        return [ready.popleft() for _ in range(max_events)]

    def take(self, completions: Sequence[Completion]) -> None:
        """Remove specific completions (``Engine.run`` takes its own)."""
        for c in completions:
            self.ready.remove(c)
