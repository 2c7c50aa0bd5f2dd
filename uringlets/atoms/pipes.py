"""Ops that move bytes between two descriptors inside the kernel: splice.

``splice`` has two descriptors where every other op has one: the output is
the SQE's ``fd`` (a slot: ``IOSQE_FIXED_FILE``), the input is
``splice_fd_in`` (a slot: ``SPLICE_F_FD_IN_FIXED`` in ``splice_flags``), with
its offset in ``splice_off_in`` (the ``addr`` field).  The kernel breaks a
soft link after a splice that moves less than ``size``, as after a short
read, and always runs the op in io-wq.

A splice never waits for a pipe or a socket: ``SPLICE_F_NONBLOCK`` is always
set, so an empty input or a full output reports EAGAIN on every engine.  A
splice that waits cannot be interrupted on io_uring (measured on 6.18: a
linked timeout neither fires nor cancels a splice blocked on a pipe in
io-wq, and the ring cannot be torn down under it), so no engine lets one
wait.  A regular file's side still reads from disk as needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import C_INT, COUNT, U32, Arg, Op, SqeWriter

_FIELDS = {"splice_off_in": (16, 8), "splice_flags": (28, 4), "splice_fd_in": (44, 4)}


def _offset(value: int | None) -> int:
    return -1 if value is None else value  # -1: the descriptor's position


def _prep_splice(w: SqeWriter, a: Mapping[str, Any]) -> None:
    # (the flags before second_fd, which may add SPLICE_F_FD_IN_FIXED)
    w.set("splice_flags", a["flags"] | os.SPLICE_F_NONBLOCK)
    w.fd(a["dst"])
    w.second_fd("splice_fd_in", a["src"], "splice_flags", "SPLICE_F_FD_IN_FIXED")
    w.set("off", _offset(a["dst_offset"]))
    w.set("splice_off_in", _offset(a["src_offset"]))
    w.set("len", a["size"])


def _call_splice(a: Mapping[str, Any]) -> int:
    flags = a["flags"] | os.SPLICE_F_NONBLOCK
    return os.splice(a["src"], a["dst"], a["size"], a["src_offset"], a["dst_offset"], flags)


OPS: tuple[Op, ...] = (
    Op(
        "splice",
        (
            Arg("src", "fd"),
            Arg("dst", "fd"),
            Arg("size", "size"),
            Arg("src_offset", "offset", None),
            Arg("dst_offset", "offset", None),
            # splice_flags (__u32, its top bit ours: SPLICE_F_FD_IN_FIXED),
            # os.splice's C int.
            Arg("flags", "flags", 0, fits=(U32, C_INT)),
        ),
        COUNT,
        _call_splice,
        "SPLICE",
        _prep_splice,
        length=lambda a: a["size"],
        short_fails=lambda a: True,
        # A zero-length splice(2) returns 0 before it looks at either
        # descriptor; io_uring resolves them first (EBADF).
        kernel_when=lambda a: a["size"] > 0,
        sqe_fields=_FIELDS,
    ),
)
