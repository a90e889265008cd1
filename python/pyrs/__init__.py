"""pyrs's handler API outside the server (pip package `pyrs-server`).

Inside the server the built-in `pyrs` module is used instead (the server
installs it before importing handler code); this package is what
`import pyrs` finds in tests, type checkers and scripts.
"""

from pyrs._response import FileResponse, Response
from pyrs._shared import HTTPError, Timeout, loads, redirect
from pyrs._events import EventStream
from pyrs._json import dumps
from pyrs._request import Headers, Request, UploadedFile

__version__ = "0.1.0"

__all__ = [
    "EventStream",
    "FileResponse",
    "HTTPError",
    "Headers",
    "Request",
    "Response",
    "Timeout",
    "UploadedFile",
    "dumps",
    "loads",
    "redirect",
]
