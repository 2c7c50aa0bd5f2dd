"""The server's protocol logic without sockets (uringlets.serve.http and
.response): requests in, the chosen answer out, every answer read back by
h11 as a strict client would."""

from __future__ import annotations

import os
from email.utils import formatdate

import h11
import pytest

from uringlets.serve.http import ProtocolError, Request, RequestReader, decode_path
from uringlets.serve.response import (
    FileInfo,
    Response,
    content_type,
    error_response,
    file_response,
    parse_range,
)

DATE = b"Sun, 06 Dec 2026 09:00:00 GMT"
MTIME = 1_700_000_000


def feed(data: bytes, reader: RequestReader | None = None) -> list[Request | ProtocolError]:
    return (reader or RequestReader()).feed(data)


def one(data: bytes) -> Request:
    (request,) = feed(data)
    assert isinstance(request, Request)
    return request


def status_of(data: bytes) -> int:
    items = feed(data)
    assert isinstance(items[-1], ProtocolError), items
    return items[-1].status


def info(size: int = 1000, name: bytes = b"a.txt") -> FileInfo:
    ns = MTIME * 10**9
    st = os.stat_result((0o100644, 7, 1, 1, 0, 0, size, MTIME, MTIME, MTIME, MTIME, MTIME,
                         MTIME, ns, ns, ns))  # fmt: skip
    return FileInfo.from_stat(st, name)


def read_back(response: Response, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
    """Parse ``response`` as h11's client does after sending ``method``."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    body = response.body if response.body else b"\0" * response.length
    client.receive_data(response.head + body)
    head = client.next_event()
    assert isinstance(head, h11.Response), head
    data = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            data += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, data
        else:
            raise AssertionError(f"unexpected {event!r}")


def header(response: h11.Response, name: bytes) -> bytes | None:
    values = [v for n, v in response.headers if n == name.lower()]
    assert len(values) <= 1, values
    return values[0] if values else None


# -- requests -------------------------------------------------------------------------
def test_a_simple_get() -> None:
    r = one(b"GET /dir/a.txt?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (r.method, r.target, r.path, r.version, r.keep_alive) == (
        b"GET",
        b"/dir/a.txt?x=1",
        b"/dir/a.txt",
        "1.1",
        True,
    )


def test_pipelined_requests_come_out_in_order() -> None:
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
    assert [r.path for r in feed(data)] == [b"/%d" % i for i in range(5)]  # type: ignore[union-attr]


def test_a_request_fed_a_byte_at_a_time() -> None:
    now = [5.0]
    reader = RequestReader(clock=lambda: now[0])
    data = b'HEAD /x HTTP/1.1\r\nHost: h\r\nIf-None-Match: "e"\r\n\r\n'
    for _i, byte in enumerate(data[:-1]):
        now[0] += 1
        assert reader.feed(bytes([byte])) == []
        assert reader.state == "head"
    assert reader.head_started == 6.0  # the first byte's time
    (r,) = reader.feed(data[-1:])
    assert isinstance(r, Request) and r.head_only and r.if_none_match == b'"e"'
    assert reader.state == "idle"


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: a\r\n\r\n", 400),
        (b"FROB / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 1200 + b"\r\n", 431),
    ],
)
def test_malformed_requests_get_precise_statuses(data: bytes, status: int) -> None:
    assert status_of(data) == status


def test_an_endless_header_line_is_refused_before_it_ends() -> None:
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ") == []
    out: list[Request | ProtocolError] = []
    for _ in range(10):
        out += reader.feed(b"v" * 1000)
    assert [e.status for e in out if isinstance(e, ProtocolError)] == [431]
    assert reader.state == "closed"


def test_requests_before_a_malformed_one_are_answered_first() -> None:
    items = feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert isinstance(items[0], Request) and items[0].path == b"/a"
    assert isinstance(items[1], ProtocolError) and items[1].status == 400


def test_other_methods_are_parsed_for_a_405() -> None:
    r = one(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    assert r.method == b"POST"


def test_a_body_is_skipped_and_the_next_request_parsed() -> None:
    items = feed(
        b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd"
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert [r.path for r in items] == [b"/a", b"/b"]  # type: ignore[union-attr]


def test_keep_alive_rules() -> None:
    assert one(b"GET / HTTP/1.0\r\n\r\n").keep_alive is False
    assert one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive is True
    assert one(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive is False


def test_nothing_is_parsed_after_a_request_that_closes() -> None:
    reader = RequestReader()
    items = reader.feed(
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert [r.path for r in items] == [b"/a"]  # type: ignore[union-attr]
    assert reader.state == "closed"
    assert reader.feed(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n") == []


@pytest.mark.parametrize(
    "target, path",
    [
        (b"/a%2520b", b"/a%20b"),  # decoded once only
        (b"/%2e%2e/etc/passwd", b"/../etc/passwd"),  # (openat2 refuses it, not the parser)
        (b"/a%2fb", b"/a/b"),
        (b"/a?b#c", b"/a"),
        (b"/a%00b", None),
        (b"http://host:1/x/y?q", b"/x/y"),
        (b"http://host", b"/"),
        (b"*", None),
    ],
)
def test_decode_path(target: bytes, path: bytes | None) -> None:
    assert decode_path(target) == path


# -- responses ------------------------------------------------------------------------
def request(headers: bytes = b"", method: bytes = b"GET") -> Request:
    return one(method + b" /a.txt HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n")


def test_a_whole_file() -> None:
    r = file_response(request(), info(1000), DATE)
    assert (r.status, r.offset, r.length, r.close) == (200, 0, 1000, False)
    head, body = read_back(r)
    assert head.status_code == 200 and len(body) == 1000
    assert header(head, b"content-type") == b"text/plain; charset=utf-8"
    assert header(head, b"etag") == b'"%x-%x"' % (MTIME * 10**9, 1000)
    assert header(head, b"last-modified") == formatdate(MTIME, usegmt=True).encode()
    assert header(head, b"date") == DATE
    assert header(head, b"accept-ranges") == b"bytes"


def test_head_has_the_headers_and_no_body() -> None:
    r = file_response(request(method=b"HEAD"), info(1000), DATE)
    assert r.length == 0 and b"Content-Length: 1000\r\n" in r.head
    head, body = read_back(r, b"HEAD")
    assert head.status_code == 200 and body == b""


def test_if_none_match() -> None:
    etag = info().etag
    for value in (etag, b'"x", ' + etag, b"W/" + etag, b"*"):
        r = file_response(request(b"If-None-Match: " + value + b"\r\n"), info(), DATE)
        assert r.status == 304 and r.length == 0, value
        head, body = read_back(r)
        assert header(head, b"etag") == etag and body == b""
    assert file_response(request(b'If-None-Match: "other"\r\n'), info(), DATE).status == 200


def test_if_none_match_wins_over_if_modified_since() -> None:
    later = formatdate(MTIME + 100, usegmt=True).encode()
    r = file_response(
        request(b'If-None-Match: "other"\r\nIf-Modified-Since: ' + later + b"\r\n"), info(), DATE
    )
    assert r.status == 200


def test_if_modified_since() -> None:
    def status(seconds: float) -> int:
        value = formatdate(seconds, usegmt=True).encode()
        return file_response(request(b"If-Modified-Since: " + value + b"\r\n"), info(), DATE).status

    assert status(MTIME) == 304 and status(MTIME + 60) == 304
    assert status(MTIME - 1) == 200
    assert file_response(request(b"If-Modified-Since: junk\r\n"), info(), DATE).status == 200


@pytest.mark.parametrize(
    "spec, offset, length",
    [(b"bytes=0-9", 0, 10), (b"bytes=990-", 990, 10), (b"bytes=-5", 995, 5),
     (b"bytes=-5000", 0, 1000), (b"bytes=10-20000", 10, 990), (b"bytes=999-999", 999, 1)],
)  # fmt: skip
def test_ranges(spec: bytes, offset: int, length: int) -> None:
    r = file_response(request(b"Range: " + spec + b"\r\n"), info(1000), DATE)
    assert (r.status, r.offset, r.length) == (206, offset, length)
    head, body = read_back(r)
    assert head.status_code == 206 and len(body) == length
    assert header(head, b"content-range") == b"bytes %d-%d/1000" % (offset, offset + length - 1)


@pytest.mark.parametrize("spec", [b"bytes=1000-", b"bytes=5000-6000", b"bytes=-0"])
def test_unsatisfiable_ranges(spec: bytes) -> None:
    r = file_response(request(b"Range: " + spec + b"\r\n"), info(1000), DATE)
    assert r.status == 416
    head, body = read_back(r)
    assert header(head, b"content-range") == b"bytes */1000" and body == b""


@pytest.mark.parametrize(
    "spec", [b"bytes=0-1,5-6", b"bytes=9-2", b"items=0-1", b"bytes=a-b", b"bytes=-"]
)
def test_ranges_that_are_ignored(spec: bytes) -> None:
    assert parse_range(spec, 1000) is None
    r = file_response(request(b"Range: " + spec + b"\r\n"), info(1000), DATE)
    assert (r.status, r.length) == (200, 1000)


def test_if_range() -> None:
    etag = info().etag
    same = file_response(request(b"Range: bytes=0-1\r\nIf-Range: " + etag + b"\r\n"), info(), DATE)
    assert same.status == 206
    other = file_response(request(b'Range: bytes=0-1\r\nIf-Range: "x"\r\n'), info(), DATE)
    assert other.status == 200
    date = formatdate(MTIME, usegmt=True).encode()
    by_date = file_response(
        request(b"Range: bytes=0-1\r\nIf-Range: " + date + b"\r\n"), info(), DATE
    )
    assert by_date.status == 206


def test_head_ignores_range() -> None:
    r = file_response(request(b"Range: bytes=0-1\r\n", method=b"HEAD"), info(), DATE)
    assert r.status == 200


def test_error_pages() -> None:
    r = error_response(405, request(method=b"POST"), DATE)
    head, body = read_back(r)
    assert head.status_code == 405 and header(head, b"allow") == b"GET, HEAD"
    assert body == b"405 Method Not Allowed\n" and not r.close
    for status in (400, 414, 431, 501):
        r = error_response(status, None, DATE)
        head, _ = read_back(r)
        assert head.status_code == status and r.close
        assert header(head, b"connection") == b"close"


def test_http_1_0_keep_alive_is_said() -> None:
    r = file_response(one(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), info(), DATE)
    assert b"Connection: keep-alive\r\n" in r.head and not r.close
    r = file_response(one(b"GET /a HTTP/1.0\r\n\r\n"), info(), DATE)
    assert b"Connection: close\r\n" in r.head and r.close


def test_content_types() -> None:
    assert content_type(b"index.html") == b"text/html; charset=utf-8"
    assert content_type(b"s.css") == b"text/css; charset=utf-8"
    assert content_type(b"a.js") == b"text/javascript; charset=utf-8"
    assert content_type(b"i.png") == b"image/png"
    assert content_type(b"noext") == b"application/octet-stream"
