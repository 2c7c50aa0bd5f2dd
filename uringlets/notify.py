"""The notification ring and ``Completion``.

One execution, one completion: every submitted execution ends in exactly one
``Completion`` (cancelled ones included), and none is ever dropped.  The
backends post completions (the io_uring backend from ``RingIO._post``, which
the clean runs and the general path both end through; the thread backend from
its ``_drain``); the engine drains them.  A threadlet's is a
``CallCompletion``.  Only the engine's owner thread touches
the ring.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
from collections import deque
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import length_hint
from typing import TYPE_CHECKING, Any

try:  # CPython's C accessor behind namedtuple fields
    from collections import _tuplegetter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _tuplegetter = None


def _field(index: int, doc: str) -> Any:
    """A read-only attribute that reads slot ``index`` of the tuple under a
    Completion, in C where CPython offers it (namedtuple's accessor)."""
    if _tuplegetter is not None:
        return _tuplegetter(index, doc)
    return property(lambda self: tuple.__getitem__(self, index), doc=doc)  # pragma: no cover


class Completion(tuple):
    """The single event that ends an execution.

    ``results`` is a tuple of one int per atom: the normalised result
    (``-errno`` on error) or ``None`` for an atom that did not run.  It is
    immutable, so completions with the same results may share one tuple
    (the io_uring engine's clean path does).  ``completion[ref]`` is
    the atom's typed value: bytes for a read, an ``os.stat_result`` for
    statx/fstat, the real fd of an exported descriptor (the caller owns and
    closes it), the int result otherwise; ``None`` if the atom did not succeed
    or its descriptor was not exported.  The completion owns its bytes; it
    holds no kernel resource.

    Typed values are kept by the Ref of their atom: one of them (the usual
    case: a read, a recv) may sit in the pair ``_value_ref``/``_value``,
    the others in the dict ``_values``.

    Underneath it is a tuple of its nine fields, so that the io_uring
    engine can make a whole batch of completions in C
    (``map(tuple.__new__, repeat(Completion), field_tuples)``, see
    ``UringBackend._finish_clean``).  The tuple is an implementation detail
    and kept out of sight: a completion has no length, is not iterable, and
    compares and hashes by identity like any object.  The field order is
    ``FIELDS``."""

    __slots__ = ()
    FIELDS = (
        "tag", "program", "results", "stopped_at", "cancelled", "_values", "ok", "_value_ref",
        "_value",
    )  # fmt: skip

    if TYPE_CHECKING:
        tag: Any
        program: Any
        results: tuple[int | None, ...]
        stopped_at: int | None
        cancelled: bool
        _values: dict[Any, Any] | None
        ok: bool
        _value_ref: Any
        _value: Any
    else:
        tag = _field(0, "what the submitter passed as tag")
        program = _field(1, "the Program that ran")
        results = _field(2, "one int per atom (-errno on error), None where it did not run")
        stopped_at = _field(3, "the index of the atom whose stop rule held, or None")
        cancelled = _field(4, "whether the execution was cancelled")
        _values = _field(5, "{Ref: typed value}, when there are two or more")
        ok = _field(6, "every atom ran and none stopped the execution")
        _value_ref = _field(7, "the Ref of the one typed value, when there is exactly one")
        _value = _field(8, "the one typed value, when there is exactly one")

    def __new__(
        cls,
        tag: Any,
        program: Any,
        results: Sequence[int | None],
        stopped_at: int | None,
        cancelled: bool,
        values: dict[int, Any] | None,
    ) -> Completion:
        """``values`` by atom index (None or empty: none)."""
        results = tuple(results)
        ok = stopped_at is None and not cancelled and None not in results
        if values and program.dropped:  # bytes the program does not give back
            values = {i: v for i, v in values.items() if i not in program.dropped}
        by_ref: dict[Any, Any] | None = None
        one_ref = one = None
        if values:
            refs = program.refs
            if len(values) == 1:
                ((index, one),) = values.items()
                one_ref = refs[index]
            else:
                by_ref = {refs[i]: v for i, v in values.items()}
        fields = (tag, program, results, stopped_at, cancelled, by_ref, ok, one_ref, one)
        return tuple.__new__(cls, fields)

    # The tuple stays out of sight: identity semantics, no length, no iteration.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def _unordered(self, other: object) -> Any:
        return NotImplemented

    __lt__ = __le__ = __gt__ = __ge__ = _unordered

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        raise TypeError("a Completion has no length")

    def __iter__(self) -> Any:
        raise TypeError("a Completion is not iterable; see its results")

    def __contains__(self, item: object) -> bool:
        raise TypeError("a Completion is not a container; see its results")

    def __getnewargs__(self) -> tuple[Any, ...]:
        """``__new__``'s arguments (for ``copy``): values by atom index."""
        values = {ref.index: v for ref, v in (self._values or {}).items()}
        if self._value_ref is not None:
            values[self._value_ref.index] = self._value
        return (*tuple.__getitem__(self, slice(0, 5)), values)

    def _retagged(self, tag: Any) -> Completion:
        """The same completion with another tag (``AsyncEngine`` gives the
        caller's tag back in place of its routing ticket)."""
        return tuple.__new__(type(self), (tag, *tuple.__getitem__(self, slice(1, None))))

    def _index(self, ref: Any) -> int:
        try:
            index = ref.index
            if index >= 0 and self.program.refs[index] is ref:
                return int(index)
        except (AttributeError, IndexError, TypeError):
            pass
        raise KeyError(f"{ref!r} is not a Ref of this completion's program")

    def __getitem__(self, ref: Any) -> Any:
        if ref is self._value_ref and ref is not None:  # the common case first
            return self._value
        values = self._values
        if values is not None:  # keyed by the Ref itself
            try:
                return values[ref]
            except (KeyError, TypeError):
                pass
        index = self._index(ref)
        if index in self.program.dropped:
            raise KeyError(f"{ref!r}: its bytes are not kept (keep=False)")
        result = self.results[index]
        if result is None or result < 0:
            return None
        kind = self.program.atoms[ref.index].op.result
        return result if kind in ("count", "zero", "sleep") else None

    @staticmethod
    def column(completions: Sequence[Completion], ref: Any) -> list[Any]:
        """``[c[ref] for c in completions]``, taken a column at a time where
        the completions hold ``ref``'s value as their one value (a batch's
        clean endings do)."""
        n = len(completions)
        # (the tuple's own slots 7 and 8: _value_ref and _value, FIELDS)
        refs = list(map(tuple.__getitem__, completions, repeat(7, n)))
        if refs.count(ref) == n:
            return list(map(tuple.__getitem__, completions, repeat(8, n)))
        return [c[ref] for c in completions]

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


class CallCompletion(Completion):
    """The completion of a threadlet (``Engine.submit_call``): ``value`` is
    what the callable returned, ``exception`` what it raised (the other is
    None); ``ok`` means it returned; ``cancelled`` that it never ran (a
    cancel while it was queued) or that close gave up waiting for it.  It
    has no program, atoms or results (``results`` is ``()``).  Same tuple
    layout as ``Completion`` (``FIELDS``): ``exception`` sits in
    ``_values``, ``value`` in ``_value``."""

    __slots__ = ()

    if TYPE_CHECKING:
        value: Any
        exception: BaseException | None
    else:
        value = _field(8, "what the callable returned (None if it raised)")
        exception = _field(5, "what the callable raised, or None")

    def __new__(
        cls, tag: Any, value: Any, exception: BaseException | None, cancelled: bool
    ) -> CallCompletion:
        ok = exception is None and not cancelled
        fields = (tag, None, (), None, cancelled, exception, ok, None, value)
        return tuple.__new__(cls, fields)

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self.tag, self.value, self.exception, self.cancelled)

    def __getitem__(self, ref: Any) -> Any:
        raise KeyError("a threadlet's completion has no atoms: see its value")

    def error(self, ref: Any) -> OSError | None:
        raise KeyError("a threadlet's completion has no atoms: see its exception")

    def __repr__(self) -> str:
        if self.cancelled:
            state = "cancelled"
        elif self.exception is not None:
            state = f"raised {self.exception!r}"
        else:
            state = f"returned {self.value!r}"
        return f"<CallCompletion tag={self.tag!r} {state}>"


class PrivateSink(list["Completion"]):
    """Where the completion of an execution started with
    ``Engine._submit_into`` goes *instead of* the notification ring (an aio
    request keeps its own): a backend appends it here and does not post it.
    Still exactly one completion, never dropped: its owner holds it."""

    __slots__ = ()


class ColumnRun:
    """The completions of a run of clean endings, kept as columns instead of
    ``Completion`` objects (``Engine._run_columns``): the executions tagged
    ``tags`` (a range, or a list) ended with ``results[i][j]`` from atom
    ``i`` of the ``j``-th of them, and ``values[j]`` as the value of the
    sink's Ref (None when the sink asks for none).  Only a ``ColumnSink``
    receives one; it is never posted to the notification ring."""

    __slots__ = ("n", "results", "tags", "values")

    def __init__(self, tags: Sequence[int], results: list[Any], values: Any) -> None:
        self.tags, self.n, self.results, self.values = tags, len(tags), results, values

    def __len__(self) -> int:
        return self.n


class ColumnSink(list[Any]):
    """Where the executions of ``Engine._run_columns`` end instead of the
    notification ring: ``Completion`` objects (one each, from the general
    path and the thread engine) and ``ColumnRun`` s (many at once, from the
    io_uring engine's clean path).  ``ref``: the Ref whose value the clean
    path copies into a ``ColumnRun`` (None: no value).  Still exactly one
    ending per execution: ``RingIO._post`` checks it as for any sink."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        super().__init__()
        self.ref = ref

    def ended(self) -> int:
        """How many executions have ended into the sink."""
        return sum(part.n if type(part) is ColumnRun else 1 for part in self)


# sinks whose completions stay out of the notification ring
PRIVATE_SINKS = (PrivateSink, ColumnSink)


class Columns:
    """The completions of ``n`` executions of one program (tags ``0 ..
    n - 1``), a column at a time: ``results[i][k]`` is atom ``i``'s result
    in execution ``k``, ``values[k]`` execution ``k``'s value of ``ref``
    (as ``completion[ref]``).  What ``Engine._run_columns`` returns instead
    of ``n`` Completion objects, made from a ``ColumnSink``'s parts (a
    Completion's place is its tag); ``of`` makes one from completions in
    order."""

    __slots__ = ("n", "results", "values")

    def __init__(self, natoms: int, n: int, ref: Any, parts: Sequence[Any]) -> None:
        results: list[list[Any]] = [[None] * n for _ in range(natoms)]
        values: list[Any] = [None] * n
        seen = 0
        for part in parts:
            if type(part) is ColumnRun:
                tags = part.tags
                if any(length_hint(got, -1) != part.n for got in part.results):
                    raise RuntimeError("a ColumnRun's column has not one result per execution")
                if type(tags) is range and tags.step == 1:
                    where: Any = slice(tags.start, tags.stop)
                    for column, got in zip(results, part.results, strict=True):
                        column[where] = got
                    if part.values is not None:
                        values[where] = part.values
                else:  # a part of a batch: each value to its place, in C
                    for column, got in zip(results, part.results, strict=True):
                        deque(map(column.__setitem__, tags, got), maxlen=0)
                    if part.values is not None:
                        deque(map(values.__setitem__, tags, part.values), maxlen=0)
                seen += part.n
            else:
                k = part.tag
                for column, r in zip(results, part.results, strict=True):
                    column[k] = r
                if ref is not None:
                    values[k] = part[ref]
                seen += 1
        if seen != n or any(len(column) != n for column in results):  # (a broken invariant)
            raise RuntimeError(f"{seen} endings for {n} executions, or a column lost its place")
        self.n, self.results, self.values = n, results, values

    @classmethod
    def of(cls, program: Any, completions: Sequence[Completion], ref: Any) -> Columns:
        """The columns of ``completions``, execution ``k`` the ``k``-th (what
        ``AsyncEngine.run_many`` gives, whatever the tags)."""
        self = object.__new__(cls)
        n = self.n = len(completions)
        rows = [c.results for c in completions]
        self.results = list(map(list, zip(*rows))) if n else [[] for _ in program.atoms]  # noqa: B905
        self.values = [None] * n if ref is None else Completion.column(completions, ref)
        return self

    def row(self, k: int) -> tuple[int | None, ...]:
        """Execution ``k``'s results, as ``Completion.results``."""
        return tuple(column[k] for column in self.results)


class NotificationRing:
    """The queue of ended executions' completions, drained by ``wait()``.

    Unbounded on purpose: what bounds resources is the engine's capacity of
    executions *in flight*; an ended execution holds nothing of the kernel's,
    and its completion waits here until drained, however many there are
    (io_uring's own answer to a full CQ ring is ``NODROP``).  Only the
    engine's owner thread touches
    the ring; ``post`` is a single append, so an interrupt can never leave a
    completion half-posted."""

    __slots__ = ("post", "ready")

    def __init__(self) -> None:
        self.ready: deque[Completion] = deque()
        # post(completion): the deque's own append, a C call, so that a
        # signal handler can run only after it has returned, never between
        # a backend's commit and the completion reaching the ring.
        self.post: Callable[[Completion], None] = self.ready.append

    def drain(self, max_events: int | None = None) -> list[Completion]:
        """Take up to ``max_events`` completions (all by default), oldest
        first.  Never loses one: an interrupt between two pops leaves the
        rest queued."""
        ready = self.ready
        if max_events is None or max_events >= len(ready):
            out = list(ready)
            ready.clear()  # nothing can run between the copy and the clear
            return out
        return [ready.popleft() for _ in range(max_events)]

    def take_all(self, taken: Sequence[Completion]) -> None:
        """Remove these completions (``Engine.run_many`` takes its own).  The
        ring is rebuilt by one C call, so an interrupt leaves it either
        whole or without exactly these."""
        ready = self.ready
        if len(ready) == len(taken) and all(map(operator.is_, ready, taken)):
            ids = None  # (usually nothing else is queued: all of it is theirs)
        else:
            ids = set(map(id, taken))
        kept = [] if ids is None else [c for c in ready if id(c) not in ids]
        deque.__init__(ready, kept)

    def take(self, completion: Completion) -> None:
        """Remove one completion (``Engine.run`` takes its own): usually the
        newest, taken in O(1)."""
        ready = self.ready
        if ready and ready[-1] is completion:
            ready.pop()
        else:
            with contextlib.suppress(ValueError):  # drained by a wait() meanwhile
                ready.remove(completion)
