"""A Tux-style static HTTP/1.1 server built on syslets.

``python -m uringlets serve DIR`` runs it; ``Server`` embeds it.  The
modules: ``http`` (requests, sans I/O), ``response`` (choosing the answer,
sans I/O), ``cache`` (open files), ``programs`` (the syslets), ``server``
(the loop that ties them), ``workers`` (several processes on one port).
"""

from .cache import OpenFileCache
from .http import ProtocolError, Request, RequestReader
from .response import FileInfo, Response, error_response, file_response
from .server import Connection, Server
from .workers import serve

__all__ = [
    "Connection",
    "FileInfo",
    "OpenFileCache",
    "ProtocolError",
    "Request",
    "RequestReader",
    "Response",
    "Server",
    "error_response",
    "file_response",
    "serve",
]
