"""Network syslets against real peers: Redis, memcached, curl, redis-cli."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

import uringlets as ul

from .conftest import open_fds
from .servers import free_port, memcached, redis


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis(free_port()) as port:
        yield port


@pytest.fixture(scope="module")
def memcached_port() -> Iterator[int]:
    with memcached(free_port()) as port:
        yield port


def client(port: int, *requests: bytes) -> tuple[ul.Program, list[ul.Ref]]:
    """socket + connect + (send + recv)* + close."""
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(fd, ("127.0.0.1", port))
    replies = []
    for request in requests:
        s.send(fd, request)
        replies.append(s.recv(fd, 4096, stop=ul.STOP_ON_NON_POSITIVE))
    s.close(fd)
    return s.compile(), replies


def test_redis_ping(run, redis_port):
    prog, (reply,) = client(redis_port, b"*1\r\n$4\r\nPING\r\n")
    c = run(prog)
    assert c.ok and c[reply] == b"+PONG\r\n"


def test_redis_set_then_get_over_one_connection(run, redis_port):
    key = f"k{os.getpid()}-{id(run)}".encode()
    prog, (set_reply, get_reply) = client(
        redis_port,
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nhello\r\n" % (len(key), key),
        b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key),
    )
    c = run(prog)
    assert c.ok and c[set_reply] == b"+OK\r\n" and c[get_reply] == b"$5\r\nhello\r\n"


def test_memcached_set_and_get(run, memcached_port):
    prog, (stored, value) = client(
        memcached_port, b"set greeting 0 0 5\r\nhello\r\n", b"get greeting\r\n"
    )
    c = run(prog)
    assert c.ok and c[stored] == b"STORED\r\n"
    assert c[value] == b"VALUE greeting 0 5\r\nhello\r\nEND\r\n"


def server_syslet(port: int, response: bytes) -> tuple[ul.Program, ul.Ref]:
    """socket+setsockopt+bind+listen+accept+recv+send+close: one reply."""
    s = ul.Syslet()
    lst = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(lst, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(lst, ("127.0.0.1", port))
    s.listen(lst, 8)
    conn = s.accept(lst)
    request = s.recv(conn, 4096)
    s.send(conn, response)
    s.close(conn)
    s.close(lst)
    return s.compile(), request


def serve_once(
    eng: ul.Engine, prog: ul.Program, port: int, argv: list[str]
) -> tuple[str, ul.Completion]:
    """Submit the server syslet, run a real client against it while the
    engine makes progress in wait()."""
    eng.submit(prog)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        done = []
        while not done:
            done = eng.wait(1, timeout=0.05)
            if not done and proc.poll() is not None and eng.in_flight == 0:
                break
        out, err = proc.communicate(timeout=30)
    assert done, err
    return out.decode(), done[0]


def test_a_syslet_answers_curl(make_engine):
    port = free_port()
    body = b"hello from a syslet\n"
    response = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)  # fmt: skip
    prog, request = server_syslet(port, response)
    with make_engine(capacity=4) as eng:
        out, c = serve_once(eng, prog, port, ["curl", "-s", "--retry", "20",
                            "--retry-connrefused", "--retry-delay", "0",
                            f"http://127.0.0.1:{port}/hello"])  # fmt: skip
    assert out == body.decode()
    assert c.ok and c[request].startswith(b"GET /hello HTTP/1.1\r\n")


def test_a_syslet_answers_redis_cli(make_engine):
    port = free_port()
    prog, request = server_syslet(port, b"+PONG\r\n")
    with make_engine(capacity=4) as eng:
        eng.submit(prog)
        out, c = _run_client_when_listening(eng, port, ["redis-cli", "-p", str(port), "PING"])
    assert out.strip() == "PONG"
    assert c.ok and c[request] == b"*1\r\n$4\r\nPING\r\n"


def _run_client_when_listening(
    eng: ul.Engine, port: int, argv: list[str]
) -> tuple[str, ul.Completion]:
    """Run ``argv`` (a client that does not retry) until it reaches the
    syslet's listener, driving the engine meanwhile."""
    done: list[ul.Completion] = []
    for _ in range(100):
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            while proc.poll() is None and not done:
                done = eng.wait(1, timeout=0.02)
            out, _ = proc.communicate(timeout=30)
        if proc.returncode == 0 and out.strip() and b"Could not connect" not in out:
            while not done:
                done = eng.wait(1, timeout=5)
            return out.decode(), done[0]
        time.sleep(0.02)
    raise AssertionError(f"{argv[0]} never reached port {port}")


def test_connect_to_a_closed_port_is_econnrefused_and_frees_the_slot(run):
    port = free_port()
    prog, _ = client(port, b"x")
    before = open_fds()
    c = run(prog)
    assert c.results == (0, 0, -errno.ECONNREFUSED, None, None, None) and c.stopped_at == 2
    assert open_fds() == before


def test_a_peer_that_closes_mid_chain_gives_what_plain_sockets_give(run):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    port = lst.getsockname()[1]

    def close_at_once() -> None:
        for _ in range(2):
            conn, _ = lst.accept()
            conn.recv(100)
            conn.close()

    t = threading.Thread(target=close_at_once)
    t.start()
    try:
        # what plain sockets give
        plain = socket.create_connection(("127.0.0.1", port))
        plain.sendall(b"hi")
        expected_eof = plain.recv(100)
        plain.close()
        s = ul.Syslet()
        fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(fd, ("127.0.0.1", port))
        s.send(fd, b"hi")
        eof = s.recv(fd, 100, stop=ul.NEVER_STOP)
        s.close(fd)
        c = run(s.compile())
    finally:
        t.join()
        lst.close()
    assert expected_eof == b""
    assert c.results == (0, 0, 2, 0, 0) and c[eof] == b""


def test_udp_sendto_recvfrom_and_unix_sockets(run, tmp_path):
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    address = peer.getsockname()

    def echo() -> None:
        data, sender = peer.recvfrom(100)
        peer.sendto(data.upper(), sender)

    t = threading.Thread(target=echo)
    t.start()
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(fd, ("127.0.0.1", 0))
    s.sendto(fd, b"ping", address)
    got = s.recvfrom(fd, 100)
    s.close(fd)
    c = run(s.compile())
    t.join()
    peer.close()
    assert c.ok and c[got] == (b"PING", address)

    path = str(tmp_path / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    s = ul.Syslet()
    fd = s.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendmsg(fd, b"over unix", path)
    s.close(fd)
    c = run(s.compile())
    assert c.ok and srv.recv(100) == b"over unix"
    srv.close()


def test_recvmsg_reports_the_peer_address(run):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    port = free_port()
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(fd, ("127.0.0.1", port))
    s.setsockopt(fd, socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    msg = s.recvmsg(fd, 100)
    s.close(fd)
    prog = s.compile()
    stop = threading.Event()

    def keep_sending() -> None:  # until the syslet has bound and received
        while not stop.wait(0.01):
            a.sendto(b"datagram", ("127.0.0.1", port))

    t = threading.Thread(target=keep_sending)
    t.start()
    try:
        c = run(prog)
    finally:
        stop.set()
        t.join()
    a_addr = a.getsockname()
    a.close()
    assert c.ok and c[msg] == (b"datagram", [], 0, a_addr)


def test_shutdown_and_echo_of_a_recv_ref(run):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    seen: list[bytes] = []

    def peer() -> None:
        conn, _ = lst.accept()
        conn.sendall(b"echo me")
        data = b""
        while chunk := conn.recv(100):
            data += chunk
        seen.append(data)
        conn.close()

    t = threading.Thread(target=peer)
    t.start()
    s = ul.Syslet()
    fd = s.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(fd, lst.getsockname())
    got = s.recv(fd, 100)
    s.send(fd, got)  # exactly the bytes received
    s.shutdown(fd, socket.SHUT_WR)
    s.close(fd)
    c = run(s.compile())
    t.join()
    lst.close()
    assert c.ok and c[got] == b"echo me" and seen == [b"echo me"]
