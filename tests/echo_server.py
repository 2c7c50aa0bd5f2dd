"""A loopback TCP server in its own process (so its descriptors are not the
test process's): prints its port, then echoes every connection until EOF;
with ``--reply`` it answers one request per connection instead (``Reply``,
for ``tcp_request``'s tests)."""

from __future__ import annotations

import socket
import socketserver
import sys
import time


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        # no Nagle delay: each echo leaves at once
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionError:
            pass  # a client that closed with data unread: the kernel reset it


class Reply(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        request = sock.recv(65536)
        word = request.split(b" ", 1)[0]
        if word == b"ECHO":
            sock.sendall(request.upper())
        elif word == b"BIG":
            for _ in range(30):
                sock.sendall(b"0123456789" * 1000)
                time.sleep(0.001)
        elif word == b"LINES":
            sock.sendall(b"first line\r\nsecond line\r\n")
            sock.recv(1)  # until the client closes
        elif word == b"SILENT":
            sock.recv(1)
        sock.close()


class Server(socketserver.ThreadingTCPServer):
    # A listen backlog for a batch of connects at once (socketserver's
    # default of 5 drops the rest of the SYNs: they come again 1 s later).
    request_queue_size = 128


def main() -> None:
    handler = Reply if "--reply" in sys.argv[1:] else Echo
    server = Server(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
