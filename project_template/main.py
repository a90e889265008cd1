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
    request.query_all     dict: name -> list of every value
    request.headers       case-insensitive mapping; .get(name), .get_all(name)
    request.body          the body as bytes
    request.text          the body decoded as UTF-8
    request.json()        the body parsed as JSON (invalid JSON -> 400)
    request.form          fields of an urlencoded or multipart form (form_all: every value)
    request.files         uploaded files: name -> pyrs.UploadedFile (.filename, .content_type,
                          .size, .data, .read(), .save(path)); files_all: every file
    request.cookies       the Cookie header as a dict
    request.params        path parameters of a /users/{id} route, as a dict
    request.url, .scheme, .host    the URL as the client asked for it
    request.remote_addr   the client's IP address; request.remote_port its port
    request.http_version  "HTTP/1.1" or "HTTP/1.0"

What a handler returns becomes the response:
    str                     -> 200 text/plain; charset=utf-8
    bytes, bytearray, memoryview -> 200 application/octet-stream
    dict or list            -> 200 application/json (datetime, UUID, dataclasses, numpy too)
    None                    -> 204 No Content
    (body, status)          -> that status; (body, status, headers) adds headers
    pyrs.Response(body, status=200, headers=None, content_type=None)
        .set_cookie(name, value, max_age=..., httponly=True, ...), .delete_cookie(name)
    pyrs.redirect(url, status=302)
    raise pyrs.HTTPError(status, message) -> that status, message as the body
        (without a message, the reason phrase: HTTPError(404) sends "Not Found")
Any other exception (or an unsupported return value) gives 500 Internal Server
Error; the traceback goes to the server log and the connection stays usable.

Test handlers without a server: `pip install ./python` (from a pyrs checkout), then
    from pyrs.testing import Client
    assert Client("project.pyrs").get("/hello?name=Ada").text == "Ada"
"""

from typing import Any

import pyrs


class Api:
    """The handlers of this project; see the `modules` list in project.pyrs."""

    def __init__(self) -> None:
        """Runs once at start-up. An exception here stops pyrs with the traceback."""
        self.greeting = "world"

    def echo(self, request: pyrs.Request) -> bytes:
        """POST /echo: returns the request body unchanged (bytes in, bytes out)."""
        return request.body

    def hello(self, request: pyrs.Request) -> str:
        """GET /hello: a plain-text greeting; GET /hello?name=Ada greets Ada."""
        return request.query.get("name", self.greeting)

    def user(self, request: pyrs.Request) -> dict[str, Any]:
        """GET /users/{id}: path parameters, JSON out."""
        user_id = request.params["id"]
        if not user_id.isdigit():
            raise pyrs.HTTPError(400, "the user id must be a number")
        return {"id": int(user_id), "tags": request.query_all.get("tag", [])}

    def upload(self, request: pyrs.Request) -> dict[str, Any]:
        """POST /upload (an HTML form, e.g. curl -F title=x -F doc=@file.txt): fields and files."""
        files = {name: {"filename": f.filename, "size": f.size} for name, f in request.files.items()}
        return {"form": request.form, "files": files}

    def login(self, request: pyrs.Request) -> pyrs.Response:
        """POST /login: sets a cookie and redirects to /hello; GET /hello can read request.cookies."""
        name = request.form.get("name", "")
        if not name.isalnum():
            raise pyrs.HTTPError(400, "name must be letters and digits")
        response = pyrs.redirect(f"/hello?name={name}", status=303)
        response.set_cookie("user", name, httponly=True, max_age=3600)
        return response

    def default(self, request: pyrs.Request) -> str:
        """Every other path (the /* route): a short 404 that says what exists."""
        if request.path == "/":
            return "pyrs project template: try GET /hello or POST /echo\n"
        raise pyrs.HTTPError(404, f"no route for {request.path}: try GET /hello or POST /echo")

    def close(self) -> None:
        """Optional: called once at shutdown (SIGINT/SIGTERM), after in-flight requests finish."""
