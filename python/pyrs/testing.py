"""pyrs.testing: call handlers in-process, without sockets, and get the response
the server would send (same status, headers in the same order, same body).

    client = Client("project.pyrs")        # the routes of a project file
    client = Client(Api)                   # or a handler class: /name calls method `name`
    r = client.get("/check?word=teh")
    assert r.status == 200 and r.json() == {...}

`async def` handlers are awaited and async generators collected on one
asyncio event loop per Client (made on first use; `Client.close()`, or
leaving `with Client(...) as client:`, closes it).

A streamed body (a generator, an async generator, `EventStream`) is collected
whole into `body`, framed by `Content-Length` (the server sends it chunked, item
by item). A HEAD request gets the head the server sends (`Transfer-Encoding:
chunked`, no length); on HEAD and with a status without a body (204, 304) the
stream is closed without a single item pulled, as the server does.

Not served here: `static` directory routes, Range/conditional requests of
FileResponse (the whole file is sent), worker processes and timeouts.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import mimetypes
import os
import re
import sys
import traceback
from email.utils import formatdate
from typing import Any, AsyncIterable, Awaitable, Callable, Iterable, Mapping, TypeVar, Union

from pyrs._events import EventStream
from pyrs._json import dumps
from pyrs._request import Request
from pyrs._response import FileResponse, Response
from pyrs._shared import HTTPError

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 416: "Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a teapot",
    421: "Misdirected Request", 422: "Unprocessable Content", 425: "Too Early", 426: "Upgrade Required",
    428: "Precondition Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

#: What a route without `methods` serves (the server's http::KNOWN_METHODS).
DEFAULT_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

HeadersArg = Union[Mapping[str, str], Iterable[tuple[str, str]], None]

_T = TypeVar("_T")
#: Runs a coroutine to its end (the Client's event loop).
_Run = Callable[[Awaitable[Any]], Any]


class TestResponse:
    """What the server would have sent."""

    __test__ = False  # not a pytest test class

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, error: str | None = None):
        self.status = status
        self.reason = REASONS.get(status, "Unknown")
        self.headers = headers
        self.body = body
        #: The traceback the server would have logged (a 500), if any.
        self.error = error

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def raw(self) -> bytes:
        """The response bytes as the server writes them (a fixed Date aside)."""
        head = f"HTTP/1.1 {self.status} {self.reason}\r\n"
        head += "".join(f"{n}: {v}\r\n" for n, v in self.headers)
        return head.encode("latin-1") + b"\r\n" + self.body

    def __repr__(self) -> str:
        return f"<TestResponse {self.status} {self.reason}>"


def _json5(text: str) -> Any:
    """project.pyrs is JSON5-ish: comments, trailing commas, bare keys, single quotes."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j : j + 2])
                    j += 2
                    continue
                buf.append('\\"' if text[j] == '"' else text[j])
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c.isalpha() or c == "_":
            m = re.match(r"[A-Za-z_$][A-Za-z0-9_$]*", text[i:])
            word = m.group(0) if m else c
            rest = text[i + len(word) :].lstrip()
            out.append(f'"{word}"' if rest.startswith(":") else word)
            i += len(word)
        else:
            out.append(c)
            i += 1
    cleaned = re.sub(r",(\s*[}\]])", r"\1", "".join(out))
    return json.loads(cleaned)


def _percent_decode(seg: str, keep: tuple[int, ...]) -> bytes:
    data = seg.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25 and i + 2 < len(data) and re.fullmatch(rb"[0-9A-Fa-f]{2}", data[i + 1 : i + 3]):
            byte = int(data[i + 1 : i + 3], 16)
            out += (b"%%%02X" % byte) if byte in keep else bytes([byte])
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _decode_segment(seg: str) -> str:
    """A path segment as routing compares it (the server's http::target)."""
    if "%" not in seg:
        return seg
    try:
        return _percent_decode(seg, (0x2F, 0x25)).decode("utf-8")
    except UnicodeDecodeError:
        return seg


def _segments(path: str) -> list[tuple[str, str]]:
    """(raw, decoded) segments after dot-segment removal."""
    out: list[tuple[str, str]] = []
    parts = path[1:].split("/") if path.startswith("/") else path.split("/")
    for i, raw in enumerate(parts):
        dec = _decode_segment(raw)
        if dec == ".":
            pass
        elif dec == "..":
            if out:
                out.pop()
        else:
            out.append((raw, dec))
            continue
        if i == len(parts) - 1:
            out.append(("", ""))
    return out


def _decode_param(raw: str) -> str:
    """A path parameter: percent-decoded except %2F (the server's router::decode_param)."""
    pieces = re.split(r"(%2[Ff])", raw)
    return "".join(p if p.lower() == "%2f" else _percent_decode(p, ()).decode("utf-8", "replace") for p in pieces)


class _Route:
    def __init__(self, pattern: str, methods: list[str] | None, target: Callable[[Any], Any]):
        self.pattern = pattern
        self.methods = [m.upper() for m in methods] if methods is not None else None
        self.target = target
        if pattern.endswith("/*"):
            self.kind = "prefix"
            self.prefix = "/".join(_decode_segment(s) for s in pattern[:-2].split("/"))
        elif "{" in pattern:
            self.kind = "params"
            self.segs = pattern[1:].split("/")
        else:
            self.kind = "exact"
            self.exact = "/" + "/".join(d for _, d in _segments(pattern))

    def serves(self, method: str) -> bool:
        allowed = self.methods if self.methods is not None else DEFAULT_METHODS
        return method in allowed or (method == "HEAD" and "GET" in allowed)

    def allow(self) -> list[str]:
        allowed = list(self.methods if self.methods is not None else DEFAULT_METHODS)
        if "GET" in allowed and "HEAD" not in allowed:
            allowed.append("HEAD")
        return allowed


class Client:
    """Calls the handlers of a project file (path) or of one handler class in-process."""

    def __init__(self, app: Union[str, "os.PathLike[str]", type]):
        self._routes: list[_Route] = []
        self._instances: list[Any] = []
        #: Where coroutines and async generators run; made on first use.
        self._loop: asyncio.AbstractEventLoop | None = None
        if isinstance(app, type):
            instance = app()
            self._instances.append(instance)
            for name, member in inspect.getmembers(instance, callable):
                if not name.startswith("_") and name not in ("close", "post_fork"):
                    self._routes.append(_Route(f"/{name}", None, member))
        else:
            self._load_project(os.fspath(app))

    def _load_project(self, file: str) -> None:
        with open(file, encoding="utf-8") as f:
            config = _json5(f.read())
        project_dir = os.path.dirname(os.path.abspath(file))
        if project_dir not in sys.path:
            sys.path.insert(0, project_dir)
        classes: dict[tuple[str, str], Any] = {}
        for spec in config.get("modules", []):
            if "static" in spec:
                continue
            key = (spec["module"], spec["class"])
            if key not in classes:
                cls = getattr(importlib.import_module(spec["module"]), spec["class"])
                classes[key] = cls()
                self._instances.append(classes[key])
            self._routes.append(_Route(spec["path"], spec.get("methods"), getattr(classes[key], spec["handler"])))

    def close(self) -> None:
        """Calls close() on every handler instance that has one (awaited when `async def`, as the
        server does at shutdown), then closes the Client's event loop if it made one."""
        try:
            for instance in self._instances:
                close = getattr(instance, "close", None)
                if callable(close):
                    result = close()
                    if inspect.isawaitable(result):
                        self._run(result)
        finally:
            loop, self._loop = self._loop, None
            if loop is not None:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, awaitable: Awaitable[_T]) -> _T:
        """Runs a coroutine to its end on this Client's event loop (made on first use)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    # -- routing (the server's precedence: exact, parameterised, longest prefix, /*) --

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str], int, list[str]]:
        implemented = {m for r in self._routes for m in r.allow()}
        if method not in implemented:
            return None, {}, 501, []
        segs = _segments(path)
        decoded = "/" + "/".join(d for _, d in segs)
        exact = [r for r in self._routes if r.kind == "exact" and r.exact == decoded]
        if exact:
            return self._pick(exact, method, {})
        best: tuple[tuple[bool, ...], list[_Route], dict[str, str]] | None = None
        for r in self._routes:
            if r.kind != "params" or len(r.segs) != len(segs):
                continue
            params: dict[str, str] = {}
            shape = []
            for pat, (raw, dec) in zip(r.segs, segs):
                if pat.startswith("{"):
                    if not dec:
                        break
                    params[pat[1:-1]] = _decode_param(raw)
                    shape.append(True)
                elif _decode_segment(pat) != dec:
                    break
                else:
                    shape.append(False)
            else:
                key = tuple(shape)
                if best is None or key < best[0]:
                    best = (key, [r], params)
                elif key == best[0]:
                    best[1].append(r)
        if best is not None:
            return self._pick(best[1], method, best[2])
        prefixes = [r for r in self._routes if r.kind == "prefix"]
        for r in sorted(prefixes, key=lambda r: -len(r.prefix)):
            if decoded == r.prefix or decoded.startswith(r.prefix + "/") or r.prefix == "":
                return self._pick([x for x in prefixes if x.prefix == r.prefix], method, {})
        return None, {}, 404, []

    @staticmethod
    def _pick(routes: list[_Route], method: str, params: dict[str, str]) -> tuple[_Route | None, dict[str, str], int, list[str]]:
        for r in routes:
            if r.serves(method) and (method != "HEAD" or r.methods is None or "HEAD" in r.methods):
                return r, params, 200, []
        for r in routes:
            if r.serves(method):
                return r, params, 200, []
        allow: list[str] = []
        for r in routes:
            allow.extend(m for m in r.allow() if m not in allow)
        ordered = [m for m in DEFAULT_METHODS if m in allow] + [m for m in allow if m not in DEFAULT_METHODS]
        return None, {}, 405, ordered

    # -- requests --

    def request(
        self,
        method: str,
        target: str,
        *,
        headers: HeadersArg = None,
        body: bytes | str | None = None,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
    ) -> TestResponse:
        """One request; `json=`, `form=` and `cookies=` fill the body and headers as a browser would."""
        items: list[tuple[str, str]] = [("Host", "testserver")]
        given = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        data = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        if json is not None:
            data = dumps(json)
            given.append(("Content-Type", "application/json"))
        if form is not None:
            from urllib.parse import urlencode

            data = urlencode(list(form.items())).encode("ascii")
            given.append(("Content-Type", "application/x-www-form-urlencoded"))
        if cookies:
            given.append(("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        if any(n.lower() == "host" for n, _ in given):
            items = []
        items.extend(given)
        if data:
            items.append(("Content-Length", str(len(data))))
        path, _, query = target.partition("?")
        path = path.split("#")[0]
        return self._serve(method, path, query.split("#")[0], items, data)

    def get(self, target: str, **kw: Any) -> TestResponse:
        return self.request("GET", target, **kw)

    def head(self, target: str, **kw: Any) -> TestResponse:
        return self.request("HEAD", target, **kw)

    def post(self, target: str, **kw: Any) -> TestResponse:
        return self.request("POST", target, **kw)

    def put(self, target: str, **kw: Any) -> TestResponse:
        return self.request("PUT", target, **kw)

    def patch(self, target: str, **kw: Any) -> TestResponse:
        return self.request("PATCH", target, **kw)

    def delete(self, target: str, **kw: Any) -> TestResponse:
        return self.request("DELETE", target, **kw)

    def options(self, target: str, **kw: Any) -> TestResponse:
        return self.request("OPTIONS", target, **kw)

    def _serve(self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes) -> TestResponse:
        route, params, status, allow = self._match(method, path)
        head_only = method == "HEAD"
        if route is None:
            text = {404: "Not Found\n", 405: "Method Not Allowed\n", 501: "Not Implemented\n"}[status]
            extra = [("Allow", ", ".join(allow))] if status == 405 else []
            return _finish(status, extra, "text/plain; charset=utf-8", text.encode(), head_only)
        request = Request(method, path, query, headers, body, params)
        try:
            value = route.target(request)
            if inspect.iscoroutine(value):
                # An `async def` handler: awaited as the server's event loop would.
                value = self._run(value)
        except HTTPError as e:
            return _http_error(e, head_only)
        except Exception:
            return _error(traceback.format_exc(), head_only)
        try:
            return _encode(value, head_only, self._run)
        except HTTPError as e:
            return _http_error(e, head_only)
        except Exception:
            return _error(traceback.format_exc(), head_only)


def _error(tb: str, head_only: bool) -> TestResponse:
    sys.stderr.write(tb)
    r = _finish(500, [], "text/plain; charset=utf-8", b"Internal Server Error\n", head_only)
    r.error = tb
    return r


def _http_error(e: HTTPError, head_only: bool) -> TestResponse:
    status = e.status if isinstance(e.status, int) and 200 <= e.status <= 599 else None
    if status is None:
        return _error(f"HTTPError with an invalid status {e.status!r}\n", head_only)
    message = str(e.message) if e.message is not None else REASONS.get(status, "Unknown")
    return _finish(status, [], "text/plain; charset=utf-8", (message + "\n").encode(), head_only)


def _headers(h: Any) -> list[tuple[str, str]]:
    if h is None:
        return []
    pairs = list(h.items()) if isinstance(h, dict) else list(h)
    out = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError("headers must be a dict or a list of (name, value) pairs")
        name, value = pair
        if not isinstance(name, str):
            raise TypeError("header names must be str")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise TypeError(f"header {name!r}: values must be str or int")
        # Sent as Latin-1 (one byte per character, as request headers are read): nothing past U+00FF.
        if not _TOKEN.match(name) or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F or ord(c) > 0xFF for c in value):
            raise ValueError(f"invalid header {name!r}")
        out.append((name, value))
    return out


def _finish(
    status: int,
    headers: list[tuple[str, str]],
    default_type: str,
    body: bytes,
    head_only: bool,
    content_type: str | None = None,
    streamed: bool = False,
) -> TestResponse:
    if content_type is not None:
        _headers([("Content-Type", content_type)])  # refused like any header (the server answers 500)
    out = [("Server", "pyrs"), ("Date", formatdate(usegmt=True))]
    has_type = False
    for name, value in headers:
        low = name.lower()
        if low in ("content-length", "transfer-encoding", "date", "connection"):
            continue
        if low == "server":
            out = [h for h in out if h != ("Server", "pyrs")]
        if low == "content-type":
            has_type = True
        out.append((name, value))
    if content_type is not None:
        out.append(("Content-Type", content_type))
        has_type = True
    no_body = status == 204 or status == 304
    if not no_body and not has_type and default_type:
        out.append(("Content-Type", default_type))
    if not no_body:
        # A stream's length is not known when its head goes out.
        out.append(("Transfer-Encoding", "chunked") if streamed else ("Content-Length", str(len(body))))
    return TestResponse(status, out, b"" if (no_body or head_only) else body)


def _status(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 200 <= value <= 599:
        return value
    raise ValueError(f"status {value!r} is not a final HTTP status (200-599)")


def _encode(value: Any, head_only: bool, run: _Run) -> TestResponse:
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise TypeError(f"a returned tuple must be (body, status) or (body, status, headers), got {len(value)} items")
        body, status = value[0], _status(value[1])
        headers = _headers(value[2] if len(value) == 3 else None)
        return _body(body, status, headers, None, head_only, run)
    if isinstance(value, Response):
        status = _status(value.status)
        headers = _headers(value.headers) + [("Set-Cookie", c) for c in value.cookies]
        return _body(value.body, status, headers, value.content_type, head_only, run)
    if isinstance(value, FileResponse):
        with open(value.path, "rb") as f:
            data = f.read()
        ctype = value.content_type or (mimetypes.guess_type(value.path)[0] or "application/octet-stream")
        _headers([("Content-Type", ctype)])
        if value.status in (206, 416):  # set after construction; the server writes these from Range
            raise ValueError(f"status {value.status} is answered by pyrs from the request's Range header")
        return _finish(_status(value.status), _headers(value.headers), ctype, data, head_only)
    if value is None:
        return _finish(204, [], "", b"", head_only)
    return _body(value, 200, [], None, head_only, run)


async def _collect(items: AsyncIterable[Any]) -> list[Any]:
    return [item async for item in items]


async def _aclose(items: Any) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()


def _close_unpulled(body: Any, run: _Run) -> None:
    """Closes a stream body whose head went out without a body (HEAD, 204, 304), as the server
    does: the iterator is made (`iter()`, `__aiter__()`) and closed (`close()`, `aclose()`
    awaited) without one item pulled, so a generator's code never runs."""
    try:
        if isinstance(body, EventStream):
            if hasattr(body.events, "__aiter__"):
                run(_aclose(getattr(body, "_aevents")()))
                return
            items = iter(body)
        elif hasattr(body, "__aiter__"):
            run(_aclose(body.__aiter__()))
            return
        else:
            items = iter(body)
        close = getattr(items, "close", None)
        if close is not None:
            close()
    except Exception:
        # The server logs it; the head has gone out either way.
        pass


def _body(
    body: Any, status: int, headers: list[tuple[str, str]], ctype: str | None, head_only: bool, run: _Run
) -> TestResponse:
    if body is None:
        return _finish(status, headers, ctype or "", b"", head_only, ctype)
    if isinstance(body, str):
        return _finish(status, headers, "text/plain; charset=utf-8", body.encode("utf-8"), head_only, ctype)
    if isinstance(body, (bytes, bytearray, memoryview)):
        return _finish(status, headers, "application/octet-stream", bytes(body), head_only, ctype)
    if isinstance(body, (dict, list)):
        return _finish(status, headers, "application/json", dumps(body), head_only, ctype)
    is_events = isinstance(body, EventStream)
    if (is_events or hasattr(body, "__aiter__") or isinstance(body, Iterable)) and (head_only or status in (204, 304)):
        # No body goes out: like the server, the stream is closed without an item pulled.
        _close_unpulled(body, run)
        extra = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")] if is_events and not headers else []
        default = "text/event-stream" if is_events else "text/plain; charset=utf-8"
        return _finish(status, extra + headers, default, b"", head_only, ctype, streamed=True)
    if is_events:
        extra = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")] if not headers else []
        # Events from an async iterable are awaited on the Client's loop, as the server does.
        aevents = getattr(body, "_aevents")  # the server streams the same async generator
        events = run(_collect(aevents())) if hasattr(body.events, "__aiter__") else list(body)
        data = "".join(events).encode("utf-8")
        return _finish(status, extra + headers, "text/event-stream", data, head_only, ctype)
    if hasattr(body, "__aiter__"):
        # An async generator (or other async iterator): collected on the Client's loop.
        chunks = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in run(_collect(body))]
        return _finish(status, headers, "text/plain; charset=utf-8", b"".join(chunks), head_only, ctype)
    if isinstance(body, Iterable):
        chunks = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body]
        return _finish(status, headers, "text/plain; charset=utf-8", b"".join(chunks), head_only, ctype)
    raise TypeError(
        f"unsupported return type {type(body).__name__} (return str, bytes, dict, list, None, an iterator, a tuple or pyrs.Response)"
    )
