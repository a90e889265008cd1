"""A pyrs project template: copy this directory, then edit main.py and project.pyrs.

Run it with `pyrs project.pyrs` (or check it with `pyrs project.pyrs --check`).

pyrs creates ONE instance of each (module, class) named in project.pyrs, at
start-up, and every route naming that class shares it. `__init__` takes no
arguments: load data, open connections or read settings there, once. Each
handler method is called as `handler(self, request)` on one of the server's
`thread_count` Python threads, so shared state must be safe to use from several
threads at once.

`request` is a `pyrs.Request`:
    request.method        "GET", "POST", ...
    request.path          the path without the query string, as sent
    request.query_string  the raw query string ("" when there is none)
    request.query         dict of decoded query parameters (first value wins)
    request.headers       case-insensitive mapping; .get(name), .get_all(name)
    request.body          the body as bytes
    request.text          the body decoded as UTF-8
    request.json()        the body parsed as JSON (invalid JSON -> 400)
    request.params        path parameters of a /users/{id} route, as a dict
    request.remote_addr   the client's IP address; request.remote_port its port
    request.http_version  "HTTP/1.1" or "HTTP/1.0"

What a handler returns becomes the response:
    str                     -> 200 text/plain; charset=utf-8
    bytes, bytearray, memoryview -> 200 application/octet-stream
    dict or list            -> 200 application/json
    None                    -> 204 No Content
    (body, status)          -> that status; (body, status, headers) adds headers
    pyrs.Response(body, status=200, headers=None, content_type=None)
    raise pyrs.HTTPError(status, message) -> that status, message as the body
Any other exception (or an unsupported return value) gives 500 Internal Server
Error; the traceback goes to the server log and the connection stays usable.
"""

import pyrs


class Api:
    """The handlers of this project; see the `modules` list in project.pyrs."""

    def __init__(self):
        """Runs once at start-up. An exception here stops pyrs with the traceback."""
        self.greeting = "world"

    def echo(self, request):
        """POST /echo: returns the request body unchanged (bytes in, bytes out)."""
        return request.body

    def hello(self, request):
        """GET /hello: a plain-text greeting; GET /hello?name=Ada greets Ada."""
        return request.query.get("name", self.greeting)

    def default(self, request):
        """Every other path (the /* route): a short 404 that says what exists."""
        if request.path == "/":
            return "pyrs project template: try GET /hello or POST /echo\n"
        raise pyrs.HTTPError(404, f"no route for {request.path}: try GET /hello or POST /echo")

    def close(self):
        """Optional: called once at shutdown (SIGINT/SIGTERM), after in-flight requests finish."""
