"""A loopback TCP server in its own process for ``tcp_request``'s tests:
prints its port; per connection it reads one request and, by its first
word, answers and closes (``ECHO``), answers 300,000 bytes in pieces and
closes (``BIG``), answers two lines and keeps the connection open
(``LINES``), or answers nothing and waits for the client (``SILENT``)."""

from __future__ import annotations

import socketserver
import sys
import time


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


def main() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Reply)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
