"""The request side of HTTP/1.1, sans I/O: bytes in, requests out.

``RequestReader`` is one connection's parser state.  It never touches a
socket: the server feeds it what a recv returned and gets back the complete
requests in that data, in order (pipelining), and at most one
``ProtocolError`` after them, which ends the connection.  Parsing is
llhttp's (through httptools, as uvicorn does), in its strict mode; the
limits and the rules llhttp leaves to a server (Host, the size of the head
and of the target, the methods answered) are checked here, so every
malformed request becomes a precise status.

States, one at a time:

* ``idle``: between requests (nothing of the next one has arrived);
* ``head``: part of a request's head has arrived (``head_started`` is the
  time of its first byte, for the header-read time limit);
* ``body``: a request's body is being read and thrown away;
* ``closed``: the client asked to close, or a request was malformed; what
  arrives after it is ignored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote_to_bytes

import httptools

MAX_HEAD = 8192  # bytes of request line and headers (431 beyond)
MAX_TARGET = 4096  # bytes of request target (414 beyond)

ALLOWED_METHODS = (b"GET", b"HEAD")


class ProtocolError(Exception):
    """A request the server answers with an error ``status`` and then
    closes the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class Request:
    """One parsed request: what choosing a response needs.  ``path`` is the
    target's path percent-decoded once (None when the target has no usable
    path: then the answer is 404); the conditional and range headers are
    kept as sent (None: absent)."""

    method: bytes
    target: bytes
    path: bytes | None
    version: str  # "1.0" or "1.1"
    keep_alive: bool
    if_none_match: bytes | None = None
    if_modified_since: bytes | None = None
    range: bytes | None = None
    if_range: bytes | None = None

    @property
    def head_only(self) -> bool:
        return self.method == b"HEAD"

    @property
    def plain(self) -> bool:
        """A kept-alive HTTP/1.1 GET with no conditional or range header:
        its answer depends only on the file and the date."""
        return (
            self.method == b"GET"
            and self.keep_alive
            and self.version == "1.1"
            and self.if_none_match is None
            and self.if_modified_since is None
            and self.range is None
        )


def decode_path(target: bytes) -> bytes | None:
    """The path of a request target, percent-decoded exactly once; None for
    a target no file can answer (not origin- or absolute-form, or a NUL in
    the decoded path)."""
    if target[:1] == b"/" and b"%" not in target and b"?" not in target and b"#" not in target:
        return target  # nothing to decode or cut (llhttp refuses NUL and spaces)
    if target.startswith((b"http://", b"https://")):  # absolute-form: the path after the host
        slash = target.find(b"/", target.find(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    if not target.startswith(b"/"):
        return None  # "*" or authority-form: no file
    for sep in (b"?", b"#"):
        cut = target.find(sep)
        if cut >= 0:
            target = target[:cut]
    path = unquote_to_bytes(target)
    if b"\0" in path:
        return None
    return path


_CONDITIONAL_HEADERS = {
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"range": "range",
    b"if-range": "if_range",
}


class RequestReader:
    """One connection's request parser (see the module docstring).  Limits:
    ``max_head`` bytes of request line and headers, ``max_target`` bytes of
    target.  ``clock`` gives the time ``head_started`` records."""

    def __init__(
        self,
        *,
        max_head: int = MAX_HEAD,
        max_target: int = MAX_TARGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_head = max_head
        self.max_target = max_target
        self._clock = clock
        self._parser = httptools.HttpRequestParser(self)
        self.state = "idle"
        self.head_started = 0.0
        self._ready: list[Request] = []
        self._began_here = False
        self._completed_here = 0
        self._previous = b""  # the chunk fed before, to find a bad request line in
        self._error: ProtocolError | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._target = b""
        self._head_size = 0  # request line and complete headers
        self._unparsed = 0  # bytes fed while the head was incomplete
        self._hosts = 0
        self._fields: dict[str, bytes] | None = None  # made at the first one

    # -- the one entry point ----------------------------------------------------
    def feed(self, data: bytes) -> list[Request | ProtocolError]:
        """The complete requests in ``data`` (with what came before), in
        order; a ``ProtocolError`` last if one is malformed (then the state
        is ``closed``).  Nothing after a close is parsed."""
        if self.state == "closed" or not data:
            return []
        self._began_here = False
        self._completed_here = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade request is answered as a plain one; what follows it
            # is not HTTP/1.1 any more, so the connection ends after it.
            self._close_after_ready()
        except httptools.HttpParserInvalidMethodError:
            if _METHOD_THEN_SPACE.match(self._bad_request_start(data)):
                self._fail(501, "unknown method")
            else:
                self._fail(400, "malformed request line")
        except httptools.HttpParserInvalidURLError:
            self._fail(400, "malformed request target")
        except httptools.HttpParserCallbackError:
            pass  # _Refused (the reason is in _error) or _Closed (a request that closes)
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed request ({exc})")
        else:
            # A head still incomplete: llhttp holds its last, partial line.
            # Whole chunks fed since the head began count against the limit
            # (the chunk it began in does not: its offset is unknown), so
            # a head is refused within max_head plus one recv.
            if self.state == "head" and not self._began_here:
                self._unparsed += len(data)
                if self._unparsed > self.max_head:
                    self._fail(431, "request header fields too large")
        self._previous = data
        # (the list of requests becomes the answer: feed adds the error)
        out = cast("list[Request | ProtocolError]", self._ready)
        self._ready = []
        if self._error is not None:
            out.append(self._error)
        return out

    def _bad_request_start(self, data: bytes) -> bytes:
        """The first bytes of the request llhttp refused, as far as one can
        tell without its offsets (bodies aside, a request ends with an
        empty line)."""
        if self._began_here:
            segments = data.split(b"\r\n\r\n", self._completed_here + 1)
            start = segments[min(self._completed_here, len(segments) - 1)]
        else:  # it began in the chunk before
            start = self._previous.rpartition(b"\r\n\r\n")[2] + data
        return start.lstrip(b"\r\n")

    def _fail(self, status: int, detail: str) -> None:
        if self._error is None:
            self._error = ProtocolError(status, detail)
        self.state = "closed"

    def _close_after_ready(self) -> None:
        for request in self._ready:
            request.keep_alive = False
        self.state = "closed"

    def _refuse(self, status: int, detail: str) -> None:
        """From a parser callback: stop parsing with this error."""
        self._fail(status, detail)
        raise _Refused

    # -- httptools callbacks ------------------------------------------------------
    def on_message_begin(self) -> None:
        self.state = "head"
        self._began_here = True
        self.head_started = self._clock()
        # (_reset_message, inline: this runs once a request)
        self._target = b""
        self._head_size = self._unparsed = self._hosts = 0
        self._fields = None

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._head_size += len(url)
        if len(self._target) > self.max_target:
            self._refuse(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head:
            self._refuse(431, "request header fields too large")
        lower = name.lower()
        if lower == b"host":
            self._hosts += 1
        else:
            field = _CONDITIONAL_HEADERS.get(lower)
            if field is not None:
                if self._fields is None:
                    self._fields = {}
                self._fields[field] = value

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.0", "1.1"):
            self._refuse(505, f"HTTP/{version} is not supported")
        if self._hosts > 1:
            self._refuse(400, "more than one Host header")
        if version == "1.1" and not self._hosts:
            self._refuse(400, "HTTP/1.1 request without Host")
        target = self._target
        request = Request(
            parser.get_method(),
            target,
            decode_path(target),
            version,
            bool(parser.should_keep_alive()),
        )
        if self._fields is not None:
            for field, value in self._fields.items():
                setattr(request, field, value)
        self._ready.append(request)
        self.state = "body"

    def on_message_complete(self) -> None:
        self._completed_here += 1
        request = self._ready[-1] if self._ready else None
        if request is not None and not request.keep_alive:
            self.state = "closed"
            raise _Closed
        self.state = "idle"

    # (bodies are read and dropped: on_body is not defined)


# A token (RFC 9110's tchar) and a space: a request line whose method is
# merely unknown (501), not malformed (400).
_METHOD_THEN_SPACE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


class _Refused(Exception):
    """Raised in a callback to stop llhttp; the reason is in ``_error``."""


class _Closed(Exception):
    """Raised in on_message_complete of a request that closes: llhttp stops
    there, so pipelined bytes after it are never parsed."""
