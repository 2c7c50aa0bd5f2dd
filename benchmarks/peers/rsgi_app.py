"""granian's app for bench_serve.py: the files are served by granian itself
(--static-path-mount); anything else is a 404."""

from typing import Any


async def app(scope: Any, proto: Any) -> None:
    proto.response_str(404, [("content-type", "text/plain")], "not found")
