"""The exceptions uringlets raises, in one place."""

from __future__ import annotations


class TranslateError(ValueError):
    """A syslet that cannot be compiled.  Raised by the builder call that adds
    the bad atom or, at the latest, by ``compile()``; the message names the
    atom index, the op and the argument."""

    def __init__(
        self, index: int | None, op: str | None, argument: str | None, problem: str
    ) -> None:
        self.index = index
        self.op = op
        self.argument = argument
        where = []
        if index is not None:
            where.append(f"atom {index}")
        if op is not None:
            where.append(f"({op})")
        if argument is not None:
            where.append(f"argument {argument!r}")
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class ParamError(TypeError, ValueError):
    """A parameter missing, unknown or of the wrong type at submit."""


class RingFull(BlockingIOError):
    """The notification ring has no room for another execution."""


class EngineClosed(RuntimeError):
    """The engine was closed, or broke an invariant and disabled itself."""
