"""``Handle`` and ``Handles``: the names ``Engine.submit`` and
``submit_many`` give back for executions, for ``Engine.cancel``.  A Handles
makes its Handle objects on demand (a batch keeps only the ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload


class Handle:
    """Names one submitted execution of one engine, for ``Engine.cancel``."""

    __slots__ = ("_engine", "_id", "tag")

    def __init__(self, engine: object, ident: int, tag: Any) -> None:
        self._engine = engine
        self._id = ident
        self.tag = tag

    def __repr__(self) -> str:
        return f"<Handle tag={self.tag!r}>"


class Handles(Sequence[Handle]):
    """The handles of one ``submit_many`` call, made on demand."""

    __slots__ = ("_engine", "_ids", "_tags")

    def __init__(self, engine: object, ids: Sequence[int], tags: Sequence[Any] | None) -> None:
        self._engine = engine
        self._ids = ids
        self._tags = tags  # None: every tag is None

    def __len__(self) -> int:
        return len(self._ids)

    def _tag(self, i: int) -> Any:
        return None if self._tags is None else self._tags[i]

    @overload
    def __getitem__(self, i: int) -> Handle: ...
    @overload
    def __getitem__(self, i: slice) -> list[Handle]: ...
    def __getitem__(self, i: int | slice) -> Handle | list[Handle]:
        if isinstance(i, slice):
            ids = self._ids[i]
            tags = [None] * len(ids) if self._tags is None else self._tags[i]
            return [Handle(self._engine, d, t) for d, t in zip(ids, tags, strict=True)]
        return Handle(self._engine, self._ids[i], self._tag(i))

    def __repr__(self) -> str:
        return f"<Handles of {len(self)} executions>"
