"""The static server (``python -m uringlets serve``) against real clients:
curl, http.client and raw sockets whose every answer h11 parses strictly.
Each test runs on the io_uring engine, the thread engine, and under the
seccomp block of io_uring (where ``auto`` falls back to threads).  The
server is a real process, started on a free port and stopped by SIGTERM
to its process id, which must end it with status 0."""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest

import uringlets as ul

TESTS = Path(__file__).resolve().parent
SECRET = b"outside the served directory\n"


PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>uringlets</title>
<link rel="stylesheet" href="style.css"><script src="app.js" defer></script></head>
<body><h1 id="t">served by syslets</h1><img id="i" src="dot.png" width="64" height="64">
<p id="r">pending</p></body></html>
"""
SCRIPT = b"""window.addEventListener("load", () => {
  const color = getComputedStyle(document.getElementById("t")).color;
  const width = document.getElementById("i").naturalWidth;
  document.getElementById("r").textContent = "script ran; h1 " + color + "; image " + width;
});
"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG image."""
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    announce: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served directory ``static`` and, beside it, files it must not give."""
    top = tmp_path_factory.mktemp("serve")
    (top / "secret.txt").write_bytes(SECRET)
    (top / "static1.txt").write_bytes(SECRET)  # the /static/../static1.txt trick
    root = top / "static"
    root.mkdir()
    (root / "index.html").write_bytes(b"<!doctype html><title>top</title>\n")
    (root / "a.txt").write_bytes(bytes(range(256)) * 4)  # 1 KiB
    rng = random.Random(7)
    (root / "big.bin").write_bytes(rng.randbytes(3 * 256 * 1024 + 17))
    (root / "empty.txt").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"<p>sub</p>\n")
    (root / "sub" / "b.css").write_bytes(b"p { color: red }\n")
    (root / "space name.txt").write_bytes(b"spaced\n")
    os.symlink("a.txt", root / "inside-link")
    os.symlink(top / "secret.txt", root / "absolute-out")
    os.symlink("../secret.txt", root / "relative-out")
    os.symlink("chain2", root / "chain1")
    os.symlink("../secret.txt", root / "chain2")
    os.symlink("/proc/self/root/etc/passwd", root / "magic")
    os.mkfifo(root / "fifo")
    web = root / "web"
    web.mkdir()
    (web / "index.html").write_bytes(PAGE)
    (web / "style.css").write_bytes(
        b"body { background: rgb(200, 30, 40) } h1 { color: rgb(1, 2, 3) }\n"
    )
    (web / "app.js").write_bytes(SCRIPT)
    (web / "dot.png").write_bytes(png(8, 8, (0, 128, 255)))
    return root


def start(root: Path, how: str, *extra: str) -> Served:
    argv = ["serve", str(root), "--port", "0", "--header-timeout", "1", "--idle-timeout", "3"]
    if how == "seccomp":  # io_uring blocked: auto must fall back to threads
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import seccomp_child as s; "
            "s.install_filter(); from uringlets.__main__ import main; sys.exit(main(sys.argv[2:]))"
        )
        cmd = [sys.executable, "-c", code, str(TESTS), *argv, *extra]
    else:
        cmd = [sys.executable, "-m", "uringlets", *argv, "--engine", how, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.match(r"serving on http://127\.0\.0\.1:(\d+)/ \((.*)\)", line)
    if match is None:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"no announcement: {line!r} {err.decode()}")
    return Served(proc, int(match.group(1)), root, match.group(2))


def stop(served: Served) -> None:
    os.kill(served.proc.pid, signal.SIGTERM)
    try:
        _, err = served.proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        raise
    assert served.proc.returncode == 0, err.decode()


@pytest.fixture(scope="module", params=["uring", "threads", "seccomp"])
def served(request: pytest.FixtureRequest, tree: Path) -> Iterator[Served]:
    s = start(tree, request.param)
    if request.param == "seccomp":
        assert s.announce.startswith("engine threads (") and "EPERM" in s.announce
    elif request.param == "uring":  # its ring runs the server's programs only
        assert s.announce == "engine uring, restricted ring"
    else:
        assert s.announce == "engine threads"
    yield s
    stop(s)


# -- helpers ----------------------------------------------------------------------------
def exchange(
    sock: socket.socket, raw: bytes, count: int = 1, method: bytes = b"GET"
) -> list[tuple[h11.Response, bytes]]:
    """Send ``raw`` and read ``count`` answers, each parsed by h11."""
    sock.sendall(raw)
    client = h11.Connection(h11.CLIENT)
    out = []
    for _ in range(count):
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        head = None
        body = b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                client.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert head is not None
        out.append((head, body))
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    return out


def get(served: Served, target: str, headers: str = "") -> tuple[h11.Response, bytes]:
    with served.connect() as sock:
        raw = f"GET {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode()
        return exchange(sock, raw)[0]


def field(head: h11.Response, name: bytes) -> bytes | None:
    for n, v in head.headers:
        if n == name:
            return v
    return None


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- files --------------------------------------------------------------------------
def test_http_client_gets_every_file(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    for name in ("a.txt", "big.bin", "empty.txt", "index.html", "sub/b.css", "inside-link"):
        conn.request("GET", "/" + name)
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, (served.root / name).read_bytes()), name
    conn.request("GET", "/space%20name.txt")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"spaced\n")
    conn.request("GET", "/sub/b.css")
    r = conn.getresponse()
    r.read()
    assert r.getheader("Content-Type") == "text/css; charset=utf-8"
    conn.close()


def test_directories(served: Served) -> None:
    head, body = get(served, "/")
    assert head.status_code == 200 and body == (served.root / "index.html").read_bytes()
    head, body = get(served, "/sub/")
    assert head.status_code == 200 and body == b"<p>sub</p>\n"
    head, _ = get(served, "/sub?x=1")
    assert head.status_code == 301 and field(head, b"location") == b"/sub/"


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    names = ["a.txt", "index.html", "missing", "big.bin", "sub/b.css", "a.txt"]
    raw = b"".join(f"GET /{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for n in names)
    with served.connect() as sock:
        answers = exchange(sock, raw, len(names))
    for name, (head, body) in zip(names, answers, strict=True):
        path = served.root / name
        if path.exists():
            assert (head.status_code, body) == (200, path.read_bytes()), name
        else:
            assert head.status_code == 404


def test_keep_alive_and_close(served: Served) -> None:
    with served.connect() as sock:
        for _ in range(3):
            ((head, _),) = exchange(sock, b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert head.status_code == 200
        ((head, _),) = exchange(
            sock, b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert field(head, b"connection") == b"close"
        assert closed_by_peer(sock)
    with served.connect() as sock:  # HTTP/1.0: closes unless asked
        sock.sendall(b"GET /a.txt HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(bytes(range(256)) * 4)


def test_head_conditional_and_range(served: Served) -> None:
    head, _body = get(served, "/a.txt", "")
    etag = field(head, b"etag")
    modified = field(head, b"last-modified")
    assert etag and modified
    with served.connect() as sock:
        ((h, b),) = exchange(sock, b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\n", method=b"HEAD")
        assert h.status_code == 200 and b == b"" and field(h, b"content-length") == b"1024"
    h, b = get(served, "/a.txt", f"If-None-Match: {etag.decode()}\r\n")
    assert h.status_code == 304 and b == b""
    h, b = get(served, "/a.txt", f"If-Modified-Since: {modified.decode()}\r\n")
    assert h.status_code == 304
    h, b = get(served, "/big.bin", "Range: bytes=1000-1999\r\n")
    assert h.status_code == 206 and b == (served.root / "big.bin").read_bytes()[1000:2000]
    h, b = get(served, "/big.bin", "Range: bytes=-300000\r\n")
    assert h.status_code == 206 and b == (served.root / "big.bin").read_bytes()[-300000:]
    h, b = get(served, "/a.txt", "Range: bytes=5000-\r\n")
    assert h.status_code == 416 and field(h, b"content-range") == b"bytes */1024"


# -- errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, status, closes",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400, True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, True),
        (b"GET/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, True),
        (b"FROB / HTTP/1.1\r\nHost: a\r\n\r\n", 501, True),
        (b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 10000 + b"\r\n\r\n", 431, True),
        (b"POST /a.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab", 405, False),
        (b"DELETE /a.txt HTTP/1.1\r\nHost: a\r\n\r\n", 405, False),
        (b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n", 404, False),
    ],
)
def test_error_statuses(served: Served, raw: bytes, status: int, closes: bool) -> None:
    with served.connect() as sock:
        ((head, _),) = exchange(sock, raw)
        assert head.status_code == status
        if status == 405:
            assert field(head, b"allow") == b"GET, HEAD"
        if closes:
            assert closed_by_peer(sock)
        else:
            ((again, _),) = exchange(sock, b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert again.status_code == 200


TRAVERSALS = [
    "/../secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub/../../secret.txt",
    "/../static1.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/absolute-out",
    "/relative-out",
    "/chain1",
    "/magic",
    "/a.txt%00.html",
    "/..%5csecret.txt",
    "/fifo",
    "http://t/../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_nothing_outside_the_directory(served: Served, target: str) -> None:
    head, body = get(served, target)
    assert head.status_code in (400, 404), target
    assert SECRET not in body and b"root:" not in body


def test_curl(served: Served) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is not installed: run scripts/test.sh (it installs it)"
    url = served.url("/a.txt")
    out = subprocess.run(
        [curl, "-sv", url, url, served.url("/big.bin")], capture_output=True, check=True
    )
    want = (served.root / "a.txt").read_bytes() * 2 + (served.root / "big.bin").read_bytes()
    assert out.stdout == want
    assert (
        out.stderr.count(b"Re-using existing connection") == 2
        or out.stderr.count(b"Reusing existing connection") == 2
    )
    head = subprocess.run([curl, "-sI", url], capture_output=True, check=True).stdout
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 1024\r\n" in head
    part = subprocess.run([curl, "-s", "-r", "10-19", url], capture_output=True, check=True)
    assert part.stdout == bytes(range(10, 20))
    etag = re.search(rb"ETag: (\"[^\"]+\")", head)
    assert etag
    cond = subprocess.run(
        [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
         b"If-None-Match: " + etag.group(1), url],
        capture_output=True,
        check=True,
    )  # fmt: skip
    assert cond.stdout == b"304"


# -- limits -------------------------------------------------------------------------
def test_a_slow_head_is_dropped_without_hurting_others(served: Served) -> None:
    slow = served.connect()
    try:
        t0 = time.monotonic()
        dropped = False
        for byte in b"GET /a.txt HTTP/1.1\r\nHost: t\r\n":
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            head, _ = get(served, "/a.txt")  # others are served meanwhile
            assert head.status_code == 200
            time.sleep(0.25)
            if time.monotonic() - t0 > 4:
                break
        assert dropped or closed_by_peer(slow)
        assert time.monotonic() - t0 < 5  # header timeout 1 s (+ one recv)
    finally:
        slow.close()


def test_an_idle_connection_is_closed(served: Served) -> None:
    with served.connect() as sock:
        ((_head, _),) = exchange(sock, b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(1) == b""
        assert 2 < time.monotonic() - t0 < 8  # idle timeout 3 s


def test_a_changed_file_shows_up_within_the_cache_bound(served: Served, tree: Path) -> None:
    path = tree / "changing.txt"
    path.write_bytes(b"one\n")
    try:
        assert get(served, "/changing.txt")[1] == b"one\n"
        path.write_bytes(b"second version\n")
        time.sleep(1.2)  # cache validity: 1 s
        assert get(served, "/changing.txt")[1] == b"second version\n"
        path.unlink()
        time.sleep(1.2)
        assert get(served, "/changing.txt")[0].status_code == 404
    finally:
        path.unlink(missing_ok=True)


# -- processes ------------------------------------------------------------------------
def test_two_workers_share_the_port_and_stop_gracefully(tree: Path) -> None:
    s = start(tree, "auto", "--workers", "2")
    try:
        assert s.announce == "2 workers"
        for _ in range(20):
            head, body = get(s, "/a.txt")
            assert head.status_code == 200 and len(body) == 1024
    finally:
        stop(s)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2)


def test_a_response_under_way_finishes_at_a_stop(tree: Path) -> None:
    s = start(tree, "auto")
    with s.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        first = sock.recv(1024)
        assert first.startswith(b"HTTP/1.1 200")
        os.kill(s.proc.pid, signal.SIGTERM)
        refused = False  # the listener closes at once; the response goes on
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
            except ConnectionRefusedError:
                refused = True
                break
            time.sleep(0.05)
        assert refused
        data = first
        while chunk := sock.recv(65536):
            data += chunk
    _, err = s.proc.communicate(timeout=15)
    assert s.proc.returncode == 0, err.decode()
    assert data.endswith((tree / "big.bin").read_bytes())


def test_the_servers_ring_runs_its_programs_only(tree: Path) -> None:
    from uringlets.serve import Server

    with Server(tree, port=0, engine="uring") as server:
        assert server.engine.restricted_in_kernel
        s = ul.Syslet()
        s.unlinkat(b"/nonexistent")
        with pytest.raises(ul.TranslateError, match=r"atom 0 \(unlinkat\).*not allowed"):
            server.engine.run(s.compile())
        # (a reply shape compiled on demand uses the same ops: allowed)
        reply = server.programs.reply(12345, "close")
        server.engine._restriction.check(reply.program)  # type: ignore[union-attr]


# -- real clients: a browser and a load generator ------------------------------------
def test_a_browser_loads_a_page_with_its_assets(served: Served, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run scripts/test.sh (it installs it)"
    types = {
        "index.html": "text/html; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "dot.png": "image/png",
    }
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    for name, kind in types.items():
        conn.request("GET", "/web/" + name)
        r = conn.getresponse()
        assert (r.status, r.getheader("Content-Type")) == (200, kind), name
        assert r.read() == (served.root / "web" / name).read_bytes()
    conn.close()
    browser = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    browser += [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*browser, "--virtual-time-budget=5000", "--dump-dom", served.url("/web/")],
        capture_output=True,
        timeout=60,
    ).stdout
    # the script ran, after the stylesheet applied and the image decoded
    assert b"script ran; h1 rgb(1, 2, 3); image 8" in dom, dom[-400:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, "--window-size=400,300", f"--screenshot={shot}", served.url("/web/")],
        capture_output=True,
        timeout=60,
    )
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
    counts = {rgb: n for n, rgb in colours}
    assert counts.get((200, 30, 40), 0) > 400 * 300 // 2  # the stylesheet's background
    assert counts.get((0, 128, 255), 0) >= 60 * 60  # the image, drawn at 64x64
    assert len(counts) > 3  # and text


def wrk_run(url: str, seconds: int, connections: int) -> str:
    wrk = shutil.which("wrk")
    assert wrk, "wrk is not installed: run scripts/test.sh (it installs it)"
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        timeout=seconds + 30,
        check=True,
    )
    return out.stdout.decode()


def test_wrk_with_slow_and_oversized_clients_beside_it(served: Served) -> None:
    """wrk at 64 connections for 10 s gets only 2xx answers and no socket
    errors while slowloris clients and clients with oversized heads come
    and go; those are dropped by the server."""
    stop = threading.Event()
    dropped = {"slow": 0, "oversized": 0}

    def slowloris() -> None:
        socks = [served.connect() for _ in range(16)]
        try:
            t0 = time.monotonic()
            while not stop.is_set() and time.monotonic() - t0 < 5:
                for sock in list(socks):
                    try:
                        sock.send(b"G")
                    except OSError:
                        socks.remove(sock)
                        dropped["slow"] += 1
                time.sleep(0.5)
            for sock in socks:  # each must be closed by the server
                if closed_by_peer(sock):
                    dropped["slow"] += 1
        finally:
            for sock in socks:
                sock.close()

    def oversized() -> None:
        while not stop.is_set():
            with served.connect() as sock:
                try:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"v" * 20000 + b"\r\n\r\n")
                    answer = sock.recv(65536)
                except OSError:
                    answer = b"HTTP/1.1 431"  # reset after the answer
                if answer.startswith(b"HTTP/1.1 431") and closed_by_peer(sock):
                    dropped["oversized"] += 1
            time.sleep(0.2)

    threads = [threading.Thread(target=f) for f in (slowloris, oversized)]
    for t in threads:
        t.start()
    try:
        report = wrk_run(served.url("/a.txt"), 10, 64)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert "Socket errors" not in report, report
    assert "Non-2xx or 3xx responses" not in report, report
    requests = int(re.search(r"(\d+) requests in", report).group(1))  # type: ignore[union-attr]
    assert requests > 1000, report
    assert dropped["slow"] == 16 and dropped["oversized"] > 5, dropped


def test_connections_beyond_the_limit_wait_in_the_backlog(tree: Path) -> None:
    s = start(tree, "auto", "--max-connections", "2")
    try:
        first, second = s.connect(), s.connect()
        for sock in (first, second):
            ((head, _),) = exchange(sock, b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert head.status_code == 200
        third = s.connect()  # (the kernel's backlog completes the handshake)
        third.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.recv(1)  # not accepted while two are open
        first.close()
        third.settimeout(10)
        ((head, body),) = exchange(third, b"")  # accepted once one closed
        assert head.status_code == 200 and len(body) == 1024
        second.close()
        third.close()
    finally:
        stop(s)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("engine", ["uring", "threads"])
def test_a_low_descriptor_limit_is_a_connection_limit(tree: Path, engine: str) -> None:
    """Under a soft RLIMIT_NOFILE of 64 the server still starts on either
    engine, fits its limits to it (fd_budget): more clients than it has
    descriptors for wait in the backlog, without the loop spinning on
    failed accepts, and are served once others leave."""
    import resource

    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
        "from uringlets.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["serve", str(tree), "--port", "0", "--engine", engine]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    match = re.match(r"serving on http://127\.0\.0\.1:(\d+)/", proc.stdout.readline().decode())
    assert match, proc.stderr.read() if proc.stderr else ""
    s = Served(proc, int(match.group(1)), tree, "")
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 200
    socks = []
    try:
        for _ in range(60):  # more than the server has descriptors for
            sock = s.connect()
            sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            socks.append(sock)
        time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        time.sleep(2)
        assert cpu_seconds(proc.pid) - before < 1.0  # not spinning on failed accepts
        for sock in socks:
            sock.close()
        socks.clear()
        time.sleep(1)  # (the next sweep arms the accepts again)
        head, body = get(s, "/a.txt")
        assert head.status_code == 200 and len(body) == 1024
    finally:
        for sock in socks:
            sock.close()
        stop(s)


def test_a_stop_touches_only_descriptors_surely_open(tree: Path) -> None:
    """At a stop, only a connection waiting for its next request is shut
    down; one whose close is in flight is left alone (its number may be
    another file's by then: here a pipe stands in for that file)."""
    from uringlets.serve import Connection, Server

    with Server(tree, port=0, engine="threads") as server:
        r, w = os.pipe()
        try:
            conn = Connection(server, r)
            conn.step = server.programs.close  # its close is in flight
            conn.stop()  # must not make a socket of the pipe, nor raise
            os.write(w, b"x")
            assert os.read(r, 1) == b"x"  # the pipe is untouched
            conn.fd_closed = True
            server.connections.discard(conn)
        finally:
            os.close(r)
            os.close(w)
