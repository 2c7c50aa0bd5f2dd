"""aiohttp's static route on uvloop, as its users serve a directory
(bench_serve.py): python aiohttp_static.py DIR PORT"""

import sys

import uvloop
from aiohttp import web

app = web.Application()
app.router.add_static("/", sys.argv[1])
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
