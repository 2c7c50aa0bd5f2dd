"""starlette's StaticFiles, for uvicorn (bench_serve.py); the directory
comes from $SERVE_DIR."""

import os

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

app = Starlette(routes=[Mount("/", app=StaticFiles(directory=os.environ["SERVE_DIR"]))])
