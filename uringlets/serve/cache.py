"""The open-file cache (nginx's ``open_file_cache``, in small).

An entry holds a regular file opened beneath the served directory (by
``openat2``, by the server's syslets) and what one fstat of that descriptor
said.  Requests for the same path within ``valid`` seconds of the entry's
last check use it as it is: no open, no stat.  The first request after that
opens the path again; the server then ``refresh``es the entry, which keeps
the old descriptor if the file is the same one unchanged and retires it
otherwise.  So a change on disk shows up within ``valid`` seconds (plus
the time a response already under way takes).

Ownership: the cache owns every descriptor it holds.  A response that reads
from an entry's descriptor holds a use of the entry (``acquire`` /
``release``); a retired or evicted entry is closed once its last use is
released, never while a read may still be in flight.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from .response import FileInfo, Response


class Entry:
    """One cached file: ``fd`` (owned by the cache), its ``info``, the
    identity it was checked against, and how many responses use it."""

    __slots__ = ("checked", "fd", "identity", "info", "plain", "retired", "uses")

    def __init__(self, fd: int, info: FileInfo, identity: tuple[int, ...], now: float) -> None:
        self.fd = fd
        self.info = info
        self.identity = identity
        self.checked = now
        self.uses = 0
        self.retired = False
        # (date, response) to a plain GET (Request.plain), kept for the second
        # the Date header names: the connections' memo, made by them
        self.plain: tuple[bytes, Response] | None = None


def identity_of(st: os.stat_result) -> tuple[int, ...]:
    """What tells a file (and its version) apart: device, inode, size and
    change and modification times in ns."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class OpenFileCache:
    """Path (relative to the served directory) -> ``Entry``; at most
    ``size`` entries (least recently used go first)."""

    def __init__(self, size: int = 1024, valid: float = 1.0) -> None:
        if size < 1:
            raise ValueError(f"the open-file cache needs room for one file, not {size}")
        if valid < 0:
            raise ValueError(f"valid must be >= 0 seconds, not {valid!r}")
        self.size = size
        self.valid = valid
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, path: bytes, now: float) -> Entry | None:
        """The entry for ``path`` if it was checked within ``valid``
        seconds; None: open the path (then ``refresh``)."""
        entry = self._entries.get(path)
        if entry is None or now - entry.checked > self.valid:
            return None
        self._entries.move_to_end(path)
        return entry

    def refresh(self, path: bytes, fd: int, st: os.stat_result, name: bytes, now: float) -> Entry:
        """The path was opened again as ``fd`` (the cache takes it): keep
        the old entry if it is the same file unchanged (``fd`` is closed),
        else replace it."""
        identity = identity_of(st)
        old = self._entries.get(path)
        if old is not None and old.identity == identity:
            os.close(fd)
            old.checked = now
            self._entries.move_to_end(path)
            return old
        if old is not None:
            self._retire(old)
        entry = Entry(fd, FileInfo.from_stat(st, name), identity, now)
        self._entries[path] = entry
        while len(self._entries) > self.size:
            _, oldest = self._entries.popitem(last=False)
            self._retire(oldest)
        return entry

    def acquire(self, entry: Entry) -> int:
        """A response reads from the entry: its descriptor stays open until
        ``release``."""
        entry.uses += 1
        return entry.fd

    def release(self, entry: Entry) -> None:
        entry.uses -= 1
        if entry.retired and not entry.uses:
            os.close(entry.fd)

    def _retire(self, entry: Entry) -> None:
        entry.retired = True
        if not entry.uses:
            os.close(entry.fd)

    def close(self) -> None:
        """Retire every entry (those still in use close at their release)."""
        for entry in self._entries.values():
            self._retire(entry)
        self._entries.clear()
