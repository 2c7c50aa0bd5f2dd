"""The floor of a static server on ``ul.Engine`` (serve_floor.py): the
least Python any server needs per request when each request is answered by
one execution ending in one completion.

    python uringlets_floor.py DIR PORT constant|reply

No parsing (a request is whatever one recv got), no lookup, no Date: every
request gets DIR/1k.bin with the same head.  The loop is ``wait`` -> one
``submit_many`` for every answer the batch needs, tags are the connections'
descriptors.

* ``constant``: the whole response is one constant of the program: send it,
  recv the next request (2 atoms, one int parameter);
* ``reply``: the server's own reply chain for a 1 KiB file
  (``Programs.reply``): send the head (MSG_MORE), read the file at an
  offset, send the body, recv the next request (4 atoms, 4 parameters).

Not servers anyone should run: the measure of what the engine costs per
request before a server does anything of its own.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import uringlets as ul
from uringlets.serve.programs import SEND_FLAGS, Programs

ACCEPTS = 8


def main(root: Path, port: int, mode: str) -> None:
    path = root / "1k.bin"
    body = path.read_bytes()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    lfd = listener.fileno()

    s = ul.Syslet()
    conn = s.accept(lfd)
    s.export(conn)
    s.recv(conn, 4096, stop=ul.STOP_ON_NON_POSITIVE)
    accept = s.compile()

    if mode == "constant":
        s = ul.Syslet()
        fd = ul.Param("conn")
        s.send(fd, head + body, SEND_FLAGS)
        s.recv(fd, 4096, stop=ul.STOP_ON_NON_POSITIVE)
        reply = s.compile()
        common: dict[str, Any] = {}
    elif mode == "reply":
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        programs = Programs(lfd, root_fd, recv_size=4096, header_timeout=10.0)
        reply = programs.reply(len(body), "recv").program
        common = {"file": os.open(path, os.O_RDONLY), "offset": 0, "data": head}
    else:
        raise SystemExit(f"mode must be constant or reply, not {mode!r}")

    with ul.Engine(capacity=4096) as eng:
        eng.submit_many(accept, ACCEPTS, tags=[None] * ACCEPTS)
        while True:
            fds: list[int] = []
            accepted = 0
            for c in eng.wait(1, None):
                tag = c.tag
                if tag is None:  # an accept
                    accepted += 1
                    got = c[conn]
                    if got is None:
                        continue
                    if c.ok:
                        fds.append(got)
                    else:
                        os.close(got)
                elif c.ok:
                    fds.append(tag)
                else:
                    os.close(tag)
            if fds:
                eng.submit_many(reply, params=[{"conn": f, **common} for f in fds], tags=fds)
            if accepted:
                eng.submit_many(accept, accepted, tags=[None] * accepted)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
