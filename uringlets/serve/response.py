"""Choosing the response, sans I/O: a pure function of the request, the
opened file's metadata and the time.

``file_response`` applies the conditional headers (``If-None-Match`` before
``If-Modified-Since``, RFC 9110 section 13.2.2) and ``Range`` (one range, with
``If-Range``); ``error_response`` and ``redirect_response`` make the rest.
Every ``Response`` carries its whole head as bytes; its body is either
``body`` (made here: error pages) or ``length`` bytes of the file from
``offset``, which the server's syslets read and send.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus

from .http import ALLOWED_METHODS, Request

SERVER = b"uringlets"
# The built-in table only, so answers do not depend on the machine's
# /etc/mime.types.
_TYPES = mimetypes.MimeTypes(filenames=())
_TYPES.add_type("text/javascript", ".js")  # RFC 9239 (Python 3.11 still says application/)
_TYPES.add_type("text/javascript", ".mjs")
_TEXT_LIKE = (b"application/javascript", b"application/json", b"image/svg+xml")


def content_type(name: bytes) -> bytes:
    """The Content-Type for a file name, by its extension (UTF-8 for text)."""
    guessed, _ = _TYPES.guess_type(os.fsdecode(name), strict=False)
    if guessed is None:
        return b"application/octet-stream"
    kind = guessed.encode()
    if kind.startswith(b"text/") or kind in _TEXT_LIKE:
        return kind + b"; charset=utf-8"
    return kind


def http_date(seconds: float) -> bytes:
    return formatdate(seconds, usegmt=True).encode()


def parse_http_date(value: bytes) -> float | None:
    """Seconds since the epoch of an HTTP date, or None if it is not one."""
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a response needs to know about a regular file, from one fstat of
    the opened descriptor (the path is never looked at again)."""

    size: int
    mtime: int  # whole seconds (what Last-Modified can say)
    etag: bytes  # strong: "<mtime in ns, hex>-<size, hex>"
    last_modified: bytes
    content_type: bytes

    @classmethod
    def from_stat(cls, st: os.stat_result, name: bytes) -> FileInfo:
        return cls(
            size=st.st_size,
            mtime=int(st.st_mtime),
            etag=b'"%x-%x"' % (st.st_mtime_ns, st.st_size),
            last_modified=http_date(int(st.st_mtime)),
            content_type=content_type(name),
        )


@dataclass(slots=True)
class Response:
    """One answer: ``head`` is the status line and headers, CRLF-ended;
    then ``body``, or ``length`` bytes of the file from ``offset``.
    ``close``: the connection ends after it."""

    status: int
    head: bytes
    close: bool
    body: bytes = b""
    offset: int = 0
    length: int = 0


# "HTTP/1.1 200 OK" and so on, made once (an HTTPStatus lookup is slow).
_STATUS_LINES = {int(s): b"HTTP/1.1 %d %s" % (s, s.phrase.encode()) for s in HTTPStatus}
_SERVER_LINE = b"Server: " + SERVER


def _head(
    status: int,
    date: bytes,
    fields: list[tuple[bytes, bytes]],
    content_length: int | None,
    close: bool,
    version: str,
) -> bytes:
    lines = [_STATUS_LINES[status], _SERVER_LINE, b"Date: " + date]
    lines.extend(name + b": " + value for name, value in fields)
    if content_length is not None:
        lines.append(b"Content-Length: %d" % content_length)
    if close:
        lines.append(b"Connection: close")
    elif version == "1.0":
        lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def error_response(
    status: int, request: Request | None, date: bytes, *, close: bool = False
) -> Response:
    """An error page (a line of text).  ``request`` None: the request was
    malformed, and the connection closes."""
    close = close or request is None or not request.keep_alive
    body = b"%d %s\n" % (status, HTTPStatus(status).phrase.encode())
    fields = [(b"Content-Type", b"text/plain; charset=utf-8")]
    if status == 405:
        fields.append((b"Allow", b", ".join(ALLOWED_METHODS)))
    version = request.version if request is not None else "1.1"
    head = _head(status, date, fields, len(body), close, version)
    if request is not None and request.head_only:
        body = b""
    return Response(status, head, close, body=body)


def redirect_response(request: Request, location: bytes, date: bytes) -> Response:
    """301 to ``location`` (a directory asked for without its slash)."""
    body = b""
    head = _head(
        301,
        date,
        [(b"Location", location)],
        len(body),
        not request.keep_alive,
        request.version,
    )
    return Response(301, head, not request.keep_alive)


def _etag_matches(header: bytes, etag: bytes, *, weak: bool) -> bool:
    if header.strip() == b"*":
        return True
    for candidate in header.split(b","):
        candidate = candidate.strip()
        if candidate.startswith(b"W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _not_modified(request: Request, info: FileInfo) -> bool:
    if request.if_none_match is not None:
        return _etag_matches(request.if_none_match, info.etag, weak=True)
    if request.if_modified_since is not None:
        since = parse_http_date(request.if_modified_since)
        return since is not None and info.mtime <= since
    return False


class RangeNotSatisfiable(Exception):
    """The range asks for nothing the file has (416)."""


def parse_range(header: bytes, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range against a file of ``size`` bytes: (offset,
    length) to send, or None if the header is to be ignored (not one
    well-formed byte range).  Raises ``RangeNotSatisfiable``."""
    unit, _, spec = header.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None  # another unit, or several ranges: answer with the whole file
    first, dash, last = spec.strip().partition(b"-")
    if not dash or not (first.isdigit() or first == b"") or not (last.isdigit() or last == b""):
        return None
    if first == b"":
        if last == b"":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        length = min(suffix, size)
        return size - length, length
    start = int(first)
    if last != b"" and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable
    end = size - 1 if last == b"" else min(int(last), size - 1)
    return start, end - start + 1


def _range_applies(request: Request, info: FileInfo) -> bool:
    if request.range is None or request.method != b"GET":
        return False
    if request.if_range is None:
        return True
    value = request.if_range.strip()
    if value.startswith(b'"') or value.startswith(b"W/"):
        return value == info.etag  # a strong comparison
    since = parse_http_date(value)
    return since is not None and int(since) == info.mtime


def file_response(request: Request, info: FileInfo, date: bytes) -> Response:
    """The answer to a GET or HEAD of a regular file: 200, 206, 304 or 416."""
    close = not request.keep_alive
    validators = [(b"Last-Modified", info.last_modified), (b"ETag", info.etag)]
    if _not_modified(request, info):
        head = _head(304, date, validators, None, close, request.version)
        return Response(304, head, close)
    fields = [(b"Content-Type", info.content_type), *validators, (b"Accept-Ranges", b"bytes")]
    offset, length, status = 0, info.size, 200
    if _range_applies(request, info):
        assert request.range is not None
        try:
            chosen = parse_range(request.range, info.size)
        except RangeNotSatisfiable:
            fields = [(b"Content-Range", b"bytes */%d" % info.size), *validators]
            head = _head(416, date, fields, 0, close, request.version)
            return Response(416, head, close)
        if chosen is not None:
            offset, length = chosen
            status = 206
            last = offset + length - 1
            fields.append((b"Content-Range", b"bytes %d-%d/%d" % (offset, last, info.size)))
    head = _head(status, date, fields, length, close, request.version)
    if request.head_only:
        length = 0
    return Response(status, head, close, offset=offset, length=length)
