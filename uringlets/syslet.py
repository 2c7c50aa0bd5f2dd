"""The builder: ``Syslet``, ``Ref``, ``Param`` and the stop rules.

Every builder call validates its atom against the catalogue (``atoms.py``) at
once and raises ``TranslateError`` naming the atom index, the op and the
argument; ``compile()`` checks what only the whole syslet shows and hands it
to the translator.  Method signatures follow Python's ``os`` module,
descriptor first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import atoms
from .atom import (
    ALL_STOP_FLAGS,
    NEVER_STOP,
    STOP_ON_NEGATIVE,
    STOP_ON_NON_POSITIVE,
    STOP_ON_NONZERO,
    STOP_ON_ZERO,
    Atom,
    Param,
    Ref,
    stop_holds,
    stop_holds_for_any,
)
from .atoms import MAX_ATOMS, sockaddr
from .errors import TranslateError
from .kernel import KernelFeatures
from .program import Program
from .translate import translate

__all__ = [
    "NEVER_STOP",
    "STOP_ON_NEGATIVE",
    "STOP_ON_NONZERO",
    "STOP_ON_NON_POSITIVE",
    "STOP_ON_ZERO",
    "Atom",
    "Param",
    "Ref",
    "Syslet",
    "stop_holds",
    "stop_holds_for_any",
]

_PARAM_KINDS = frozenset({"path", "int", "offset", "data", "fd"})


class Syslet:
    """A linear sequence of at most ``MAX_ATOMS`` atoms.  Not thread-safe;
    compile it once, then submit the ``Program`` as often as you like.

    Ops that may wait (read, write and the socket ops) take ``timeout=``
    seconds: if the atom has not completed by then it is interrupted and
    reports ``-ETIME``, and its stop rule decides what follows."""

    def __init__(self) -> None:
        self._atoms: list[Atom] = []
        self._refs: list[Ref] = []  # the one Ref of each atom, in order
        self._exports: list[int] = []

    def __len__(self) -> int:
        return len(self._atoms)

    # -- validation --------------------------------------------------------
    def _error(self, op: str, arg: str | None, problem: str) -> TranslateError:
        return TranslateError(len(self._atoms), op, arg, problem)

    def _check_ref(self, op: str, arg: str, ref: Ref) -> Atom:
        if ref.syslet is not self:
            raise self._error(op, arg, f"{ref!r} belongs to another syslet")
        if not 0 <= ref.index < len(self._atoms):
            raise self._error(op, arg, f"{ref!r} is used before it is defined")
        return self._atoms[ref.index]

    def _check_arg(self, op: str, spec: atoms.Arg, value: Any) -> Any:
        kind, name = spec.kind, spec.name
        if isinstance(value, Param):
            if kind == "size" and spec.bindable:
                if value.at_most is None:
                    raise self._error(
                        op, name, f"a size Param needs at_most= (the buffer's size): {value!r}"
                    )
                return value
            if kind not in _PARAM_KINDS:
                raise self._error(op, name, f"a {kind} argument cannot be a Param")
            if value.at_most is not None:
                raise self._error(op, name, f"at_most= is for a size Param, not a {kind}")
            return value
        if isinstance(value, Ref):
            if kind not in ("fd", "data"):
                raise self._error(op, name, f"a Ref cannot be a {kind} argument")
            source = self._check_ref(op, name, value)
            if kind == "fd" and not source.op.creates_fd:
                raise self._error(op, name, f"{value!r} is not a descriptor")
            if kind == "data" and source.op.result not in (atoms.BYTES, atoms.MESSAGE):
                raise self._error(op, name, f"{value!r} does not produce bytes")
            return value
        try:
            return atoms.check_value(spec, value)
        except atoms.ArgError as exc:
            raise self._error(op, name, str(exc)) from None

    def _add(
        self,
        name: str,
        stop: int,
        values: Mapping[str, Any],
        timeout: float | None = None,
        keep: bool = True,
    ) -> Ref:
        op = atoms.CATALOGUE[name]
        if len(self._atoms) >= MAX_ATOMS:
            raise self._error(name, None, f"a syslet holds at most {MAX_ATOMS} atoms")
        if isinstance(stop, bool) or not isinstance(stop, int):
            raise self._error(name, "stop", f"expected a stop rule, got {stop!r}")
        if stop & ~ALL_STOP_FLAGS or stop < 0:
            raise self._error(name, "stop", f"unknown stop flags {stop:#x}")
        args = {spec.name: self._check_arg(name, spec, values[spec.name]) for spec in op.args}
        if args.get("address") is not None and isinstance(args.get("fd"), Ref):
            family = self._family(args["fd"])
            if family is not None and family != sockaddr.family_of(args["address"]):
                raise self._error(name, "address", f"{args['address']!r} is not an address of "
                                  f"the family of {args['fd']!r} ({family})")  # fmt: skip
        try:
            timeout = atoms.check_limit(timeout)
        except atoms.ArgError as exc:
            raise self._error(name, "timeout", str(exc)) from None
        if not isinstance(keep, bool):
            raise self._error(name, "keep", f"expected True or False, got {keep!r}")
        ref = Ref(self, len(self._atoms), name)
        self._atoms.append(Atom(ref.index, op, args, stop, timeout, keep))
        self._refs.append(ref)
        return ref

    def _family(self, ref: Ref) -> int | None:
        """The address family of a socket Ref, where the syslet shows it."""
        atom = self._atoms[ref.index]
        source = atom.args.get(atom.op.family_arg) if atom.op.family_arg else None
        if isinstance(source, Ref):
            return self._family(source)
        return source if isinstance(source, int) else None

    # -- the ops (thin: the catalogue holds the knowledge) -----------------
    def nop(self, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """Do nothing; result 0."""
        return self._add("nop", stop, {})

    def openat(
        self,
        path: Any,
        flags: int = os.O_RDONLY,
        mode: Any = 0o777,
        *,
        dir_fd: int | None = None,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """``os.open(path, flags, mode, dir_fd=dir_fd)``; result 0, the
        descriptor is the Ref (closed when the execution ends unless exported)."""
        return self._add(
            "openat", stop, {"path": path, "flags": flags, "mode": mode, "dir_fd": dir_fd}
        )

    def openat2(
        self,
        path: Any,
        flags: int = os.O_RDONLY,
        mode: Any = 0,
        *,
        resolve: int = 0,
        dir_fd: int | None = None,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """openat2(2): ``openat`` with ``RESOLVE_*`` rules (``resolve``,
        e.g. ``ul.RESOLVE_BENEATH``: the path may not leave ``dir_fd``);
        result 0, the descriptor is the Ref.  Unknown flags are refused
        (EINVAL), and ``mode`` must be 0 unless ``flags`` create a file."""
        return self._add(
            "openat2",
            stop,
            {"path": path, "flags": flags, "mode": mode, "resolve": resolve, "dir_fd": dir_fd},
        )

    def close(self, fd: Any, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``os.close(fd)``."""
        return self._add("close", stop, {"fd": fd})

    def read(
        self,
        fd: Any,
        size: int | Param,
        offset: Any = None,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
        keep: bool = True,
    ) -> Ref:
        """``os.read(fd, size)``, or ``os.pread`` with an offset; result the
        byte count, ``completion[ref]`` the bytes.  ``size`` may be a
        ``Param("n", at_most=N)``: the buffer is N bytes, each execution
        reads its own size in 1..N.  ``keep=False``: the bytes only feed
        later atoms (a write of this Ref) and never reach Python;
        ``completion[ref]`` raises KeyError."""
        return self._add("read", stop, {"fd": fd, "size": size, "offset": offset}, timeout, keep)

    def write(
        self,
        fd: Any,
        data: Any,
        offset: Any = None,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:
        """``os.write(fd, data)`` or ``os.pwrite``; ``data`` may be the Ref of
        a read, which writes exactly the bytes that were read."""
        return self._add("write", stop, {"fd": fd, "data": data, "offset": offset}, timeout)

    def fsync(self, fd: Any, *, datasync: bool = False, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``os.fsync(fd)`` (``os.fdatasync`` with ``datasync=True``)."""
        return self._add("fsync", stop, {"fd": fd, "datasync": datasync})

    def splice(
        self,
        src: Any,
        dst: Any,
        size: int,
        *,
        src_offset: Any = None,
        dst_offset: Any = None,
        flags: int = 0,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """``os.splice(src, dst, size, src_offset, dst_offset, flags |
        SPLICE_F_NONBLOCK)``: up to ``size`` bytes from ``src`` to ``dst``
        inside the kernel, one of them a pipe; result the count.  It never
        waits for a pipe or socket (EAGAIN instead: io_uring cannot
        interrupt a splice that waits), so it takes no ``timeout``.  The
        bytes never reach Python: a splice into a pipe and one out of it
        move data of a length no atom knows in advance (a file of unknown
        size copied in one chain)."""
        return self._add("splice", stop, {
            "src": src, "dst": dst, "size": size, "src_offset": src_offset,
            "dst_offset": dst_offset, "flags": flags,
        })  # fmt: skip

    def statx(
        self,
        path: Any,
        *,
        dir_fd: int | None = None,
        follow_symlinks: bool = True,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """``os.stat(path, ...)``; ``completion[ref]`` is the os.stat_result."""
        return self._add(
            "statx", stop, {"path": path, "dir_fd": dir_fd, "follow_symlinks": follow_symlinks}
        )

    def fstat(self, fd: Any, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``os.fstat(fd)``; ``completion[ref]`` is the os.stat_result."""
        return self._add("fstat", stop, {"fd": fd})

    def unlinkat(
        self,
        path: Any,
        *,
        dir_fd: int | None = None,
        rmdir: bool = False,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """``os.unlink(path)`` (``os.rmdir`` with ``rmdir=True``)."""
        return self._add("unlinkat", stop, {"path": path, "dir_fd": dir_fd, "rmdir": rmdir})

    def mkdirat(
        self,
        path: Any,
        mode: Any = 0o777,
        *,
        dir_fd: int | None = None,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """``os.mkdir(path, mode)``."""
        return self._add("mkdirat", stop, {"path": path, "mode": mode, "dir_fd": dir_fd})

    def renameat(
        self,
        src: Any,
        dst: Any,
        *,
        src_dir_fd: int | None = None,
        dst_dir_fd: int | None = None,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:
        """``os.rename(src, dst)``."""
        return self._add(
            "renameat",
            stop,
            {"src": src, "dst": dst, "src_dir_fd": src_dir_fd, "dst_dir_fd": dst_dir_fd},
        )

    def timeout(self, seconds: float, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``time.sleep(seconds)``; result 0 after the full sleep."""
        return self._add("timeout", stop, {"seconds": seconds})

    # -- network ops --------------------------------------------------------
    def socket(
        self, family: int, type: int, proto: int = 0, *, stop: int = STOP_ON_NEGATIVE
    ) -> Ref:
        """``socket.socket(family, type, proto)``; result 0, the descriptor is
        the Ref (a slot on io_uring: no fd reaches Python unless exported)."""
        return self._add("socket", stop, {"family": family, "type": type, "proto": proto})

    def setsockopt(
        self, fd: Any, level: int, optname: int, value: int | bytes, *,
        stop: int = STOP_ON_NEGATIVE,
    ) -> Ref:  # fmt: skip
        """``sock.setsockopt(level, optname, value)``."""
        return self._add("setsockopt", stop, {"fd": fd, "level": level, "optname": optname,
                                              "value": value})  # fmt: skip

    def bind(self, fd: Any, address: Any, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``sock.bind(address)``."""
        return self._add("bind", stop, {"fd": fd, "address": address})

    def listen(self, fd: Any, backlog: int = 128, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``sock.listen(backlog)``."""
        return self._add("listen", stop, {"fd": fd, "backlog": backlog})

    def connect(
        self,
        fd: Any,
        address: Any,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:
        """``sock.connect(address)``."""
        return self._add("connect", stop, {"fd": fd, "address": address}, timeout)

    def accept(
        self,
        fd: Any,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:
        """``sock.accept()``; result 0, the connection is the Ref."""
        return self._add("accept", stop, {"fd": fd}, timeout)

    def send(
        self,
        fd: Any,
        data: Any,
        flags: int = 0,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:
        """``sock.send(data, flags)``; ``data`` may be the Ref of a recv."""
        return self._add("send", stop, {"fd": fd, "data": data, "flags": flags}, timeout)

    def recv(
        self,
        fd: Any,
        bufsize: int,
        flags: int = 0,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
        keep: bool = True,
    ) -> Ref:
        """``sock.recv(bufsize, flags)``; ``completion[ref]`` is the data
        (``keep=False``: as for ``read``)."""
        return self._add(
            "recv", stop, {"fd": fd, "bufsize": bufsize, "flags": flags}, timeout, keep
        )

    def sendto(
        self, fd: Any, data: Any, address: Any, flags: int = 0, *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:  # fmt: skip
        """``sock.sendto(data, flags, address)``."""
        return self._add("sendto", stop, {"fd": fd, "data": data, "address": address,
                                          "flags": flags}, timeout)  # fmt: skip

    def recvfrom(
        self,
        fd: Any,
        bufsize: int,
        flags: int = 0,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:
        """``sock.recvfrom(bufsize, flags)``; ``completion[ref]`` is
        ``(data, address)``."""
        return self._add("recvfrom", stop, {"fd": fd, "bufsize": bufsize, "flags": flags}, timeout)

    def sendmsg(
        self, fd: Any, data: Any, address: Any = None, flags: int = 0, *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:  # fmt: skip
        """``sock.sendmsg([data], [], flags, address)`` (one buffer, no
        ancillary data)."""
        return self._add("sendmsg", stop, {"fd": fd, "data": data, "address": address,
                                           "flags": flags}, timeout)  # fmt: skip

    def recvmsg(
        self,
        fd: Any,
        bufsize: int,
        flags: int = 0,
        *,
        stop: int = STOP_ON_NEGATIVE,
        timeout: float | None = None,
    ) -> Ref:
        """``sock.recvmsg(bufsize, 0, flags)``; ``completion[ref]`` is
        ``(data, [], msg_flags, address)`` (no ancillary data)."""
        return self._add("recvmsg", stop, {"fd": fd, "bufsize": bufsize, "flags": flags}, timeout)

    def shutdown(self, fd: Any, how: int, *, stop: int = STOP_ON_NEGATIVE) -> Ref:
        """``sock.shutdown(how)``."""
        return self._add("shutdown", stop, {"fd": fd, "how": how})

    # -- the whole syslet --------------------------------------------------
    def export(self, ref: Ref) -> None:
        """Hand the descriptor of ``ref`` back to the caller as a real fd
        (``completion[ref]``) instead of closing it when the execution ends.
        The caller then owns that fd and must close it."""
        if not isinstance(ref, Ref):
            raise TranslateError(None, "export", "ref", f"expected a Ref, got {ref!r}")
        if ref.syslet is not self or ref.index >= len(self._atoms):
            raise TranslateError(ref.index, "export", "ref", f"{ref!r} is not of this syslet")
        if not self._atoms[ref.index].op.creates_fd:
            raise TranslateError(ref.index, ref.op, "export", f"{ref!r} is not a descriptor")
        if ref.index not in self._exports:
            self._exports.append(ref.index)

    def compile(self, features: KernelFeatures | None = None) -> Program:
        """Validate and translate once into an immutable, reusable Program.
        ``features`` defaults to what this process's kernel offers."""
        if not self._atoms:
            raise TranslateError(None, None, None, "a syslet needs at least one atom")
        program_atoms, exports = tuple(self._atoms), tuple(self._exports)
        plan = translate(program_atoms, exports, features)
        return Program(program_atoms, tuple(self._refs), exports, plan)
