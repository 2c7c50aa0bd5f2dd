"""The vocabulary every other module shares: ``Atom``, ``Ref``, ``Param`` and
the stop rules.

A leaf: it imports nothing of uringlets but the op catalogue, so the builder
(``syslet.py``), the translator, ``Program`` and the engines all import it
and none of them imports another to get these names.  ``syslet.py``
re-exports them.
"""

from __future__ import annotations

from typing import Any

from .atoms import MAX_TRANSFER, Op

# Stop rules, as in the 2007 syslet patches; combine with |.
NEVER_STOP = 0
STOP_ON_NEGATIVE = 1
STOP_ON_NONZERO = 2
STOP_ON_ZERO = 4
STOP_ON_NON_POSITIVE = 8
ALL_STOP_FLAGS = STOP_ON_NEGATIVE | STOP_ON_NONZERO | STOP_ON_ZERO | STOP_ON_NON_POSITIVE


def stop_holds(rule: int, result: int) -> bool:
    """Whether a stop rule holds for a normalised result."""
    return bool(
        (rule & STOP_ON_NEGATIVE and result < 0)
        or (rule & STOP_ON_NONZERO and result != 0)
        or (rule & STOP_ON_ZERO and result == 0)
        or (rule & STOP_ON_NON_POSITIVE and result <= 0)
    )


def stop_holds_for_any(rule: int, lo: int, hi: int, results: list[int]) -> bool:
    """Whether a stop rule holds for at least one of ``results`` (not
    empty), whose lowest is ``lo`` and highest ``hi``."""
    return bool(
        (rule & STOP_ON_NEGATIVE and lo < 0)
        or (rule & STOP_ON_NONZERO and (lo != 0 or hi != 0))
        or (rule & STOP_ON_ZERO and 0 in results)
        or (rule & STOP_ON_NON_POSITIVE and lo <= 0)
    )


# Keywords of Engine.submit / submit_many / run (and run_reference, and the
# AsyncEngine's forms, which take the same): a Param of one of these names
# could never be bound, since the keyword would take its value.
RESERVED_PARAM_NAMES = frozenset(
    {"self", "program", "count", "params", "tags", "tag", "block", "deadline"}
)


class Param:
    """A value bound per execution: ``eng.submit(prog, name=value)``.  The
    name is an identifier and none of the submit keywords
    (``RESERVED_PARAM_NAMES``).

    ``at_most`` is for a size (a read's): the buffer the program gives the
    atom is ``at_most`` bytes, fixed when it is compiled, and an execution
    binds the Param to a size in 1..at_most."""

    __slots__ = ("at_most", "name")

    def __init__(self, name: str, *, at_most: int | None = None) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"Param name must be an identifier, not {name!r}")
        if name in RESERVED_PARAM_NAMES:
            raise ValueError(
                f"Param name {name!r} is a keyword of Engine.submit/submit_many/run "
                f"and could never be bound; reserved: {', '.join(sorted(RESERVED_PARAM_NAMES))}"
            )
        if at_most is not None and (
            isinstance(at_most, bool)
            or not isinstance(at_most, int)
            or not 1 <= at_most <= MAX_TRANSFER
        ):
            raise ValueError(
                f"Param {name!r}: at_most must be an int in 1..{MAX_TRANSFER}, not {at_most!r}"
            )
        self.name = name
        self.at_most = at_most

    def __repr__(self) -> str:
        if self.at_most is None:
            return f"Param({self.name!r})"
        return f"Param({self.name!r}, at_most={self.at_most})"


class Ref:
    """The result of atom ``index`` of ``syslet`` (the builder that made it,
    compared by identity only): a descriptor or the bytes an atom received,
    usable by later atoms and as ``completion[ref]``."""

    __slots__ = ("index", "op", "syslet")

    def __init__(self, syslet: object, index: int, op: str) -> None:
        self.syslet = syslet
        self.index = index
        self.op = op

    def __repr__(self) -> str:
        return f"Ref(atom {self.index}: {self.op})"


class Atom:
    """One validated atom: op, normalised arguments (Refs and Params kept as
    such), stop rule, the seconds it may wait (None: no limit), and whether
    its completion gives its bytes back (``keep``)."""

    __slots__ = ("args", "index", "keep", "op", "stop", "timeout")

    def __init__(
        self,
        index: int,
        op: Op,
        args: dict[str, Any],
        stop: int,
        timeout: float | None = None,
        keep: bool = True,
    ) -> None:
        self.index = index
        self.op = op
        self.args = args
        self.stop = stop
        self.timeout = timeout
        self.keep = keep  # False: its bytes stay in the engine (read/recv keep=False)

    def __repr__(self) -> str:
        return f"Atom({self.index}, {self.op.name}, {self.args}, stop={self.stop})"
