"""pytest suite of pyrs.testing (run by tests/python_package.rs, so by .ci/run)."""

import asyncio
import dataclasses
import os
from typing import Any, AsyncIterator, Iterator

import pyrs
import pytest
from pyrs.testing import Client

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "project_template", "project.pyrs")


class Api:
    def hello(self, request: pyrs.Request) -> str:
        return "hello " + request.query.get("name", "world")

    def data(self, request: pyrs.Request) -> dict[str, Any]:
        return {"got": request.json(), "method": request.method}

    def login(self, request: pyrs.Request) -> pyrs.Response:
        r = pyrs.redirect("/hello", status=303)
        r.set_cookie("user", request.form["name"], httponly=True)
        return r

    def whoami(self, request: pyrs.Request) -> str:
        return request.cookies.get("user", "nobody")

    def events(self, request: pyrs.Request) -> pyrs.EventStream:
        def gen() -> Iterator[Any]:
            yield "one"
            yield {"event": "tick", "data": {"n": 2}}

        return pyrs.EventStream(gen())

    def fail(self, request: pyrs.Request) -> None:
        raise pyrs.HTTPError(409)

    def crash(self, request: pyrs.Request) -> None:
        raise RuntimeError("boom")


def test_handler_class_routes_each_method() -> None:
    c = Client(Api)
    r = c.get("/hello?name=Ada")
    assert (r.status, r.text, r.header("content-type")) == (200, "hello Ada", "text/plain; charset=utf-8")
    assert c.post("/data", json={"n": 2**70}).json() == {"got": {"n": 2**70}, "method": "POST"}
    assert c.post("/data", body="{bad").status == 400
    assert c.get("/nope").status == 404
    assert c.request("get", "/hello").status == 501


def test_forms_cookies_redirects() -> None:
    c = Client(Api)
    r = c.post("/login", form={"name": "ada"})
    assert r.status == 303 and r.header("location") == "/hello"
    assert r.header_all("set-cookie") == ["user=ada; HttpOnly; SameSite=Lax; Path=/"]
    assert c.get("/whoami", cookies={"user": "ada"}).text == "ada"


def test_errors_as_the_server_sends_them() -> None:
    c = Client(Api)
    assert (c.get("/fail").status, c.get("/fail").text) == (409, "Conflict\n")
    r = c.get("/crash")
    assert (r.status, r.text) == (500, "Internal Server Error\n")
    assert r.error is not None and "RuntimeError: boom" in r.error


class Unsendable:
    def crlf_type(self, request: pyrs.Request) -> pyrs.Response:
        return pyrs.Response("x", content_type="text/plain\r\nInjected: 1")

    def euro_header(self, request: pyrs.Request) -> pyrs.Response:
        return pyrs.Response("x", headers={"X-Price": "5 \u20ac"})

    def crlf_file_type(self, request: pyrs.Request) -> pyrs.FileResponse:
        return pyrs.FileResponse(__file__, content_type="text/plain\r\nInjected: 1")

    def file_status(self, request: pyrs.Request) -> pyrs.FileResponse:
        f = pyrs.FileResponse(__file__)
        f.status = 42
        return f

    def file_partial(self, request: pyrs.Request) -> pyrs.FileResponse:
        f = pyrs.FileResponse(__file__)
        f.status = 206
        return f

    def file_partial_new(self, request: pyrs.Request) -> pyrs.FileResponse:
        return pyrs.FileResponse(__file__, status=416)


def test_what_the_server_refuses_is_a_500() -> None:
    c = Client(Unsendable)
    for path in ("/crlf_type", "/euro_header", "/crlf_file_type", "/file_status", "/file_partial", "/file_partial_new"):
        r = c.get(path)
        assert (r.status, r.text) == (500, "Internal Server Error\n"), path
        assert r.header("injected") is None, path


def test_event_stream_format() -> None:
    r = Client(Api).get("/events")
    assert r.header("content-type") == "text/event-stream"
    assert r.text == 'data: one\n\nevent: tick\ndata: {"n":2}\n\n'
    assert "".join(pyrs.EventStream([{"data": {"s": "é", "f": 1e-7}}])) == 'data: {"s":"é","f":1e-7}\n\n'


def test_project_template_through_its_project_file() -> None:
    c = Client(TEMPLATE)
    assert c.get("/hello?name=Ada").text == "Ada"
    assert c.post("/echo", body=b"ping").body == b"ping"
    assert c.get("/users/42?tag=a&tag=b").json() == {"id": 42, "tags": ["a", "b"]}
    assert c.get("/users/x").status == 400
    r = c.post("/login", form={"name": "Ada"})
    assert (r.status, r.header("location")) == (303, "/hello?name=Ada")
    assert c.get("/missing").status == 404
    assert c.put("/hello").status == 405


def test_json_contract_matches_the_server_s() -> None:
    @dataclasses.dataclass
    class P:
        x: int

    assert pyrs.dumps({"f": [0.1, 1e20, 1e-7, 1e-5], "p": P(1), 1: None}) == b'{"f":[0.1,1e+20,1e-7,0.00001],"p":{"x":1},"1":null}'
    with pytest.raises(ValueError):
        pyrs.dumps([float("nan")])
    with pytest.raises(ValueError):
        pyrs.loads("[NaN]")
    assert pyrs.loads(b"123456789012345678901234567890") == 123456789012345678901234567890


class AsyncApi:
    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.closed = False

    async def hello(self, request: pyrs.Request) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.loops.append(asyncio.get_running_loop())
        return {"hi": request.query.get("name", "you")}

    async def made(self, request: pyrs.Request) -> tuple[str, int, dict[str, str]]:
        await asyncio.sleep(0)
        return "made", 201, {"X-Kind": "async"}

    async def fail(self, request: pyrs.Request) -> None:
        await asyncio.sleep(0)
        raise pyrs.HTTPError(418, "short and stout")

    async def crash(self, request: pyrs.Request) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    async def tokens(self, request: pyrs.Request) -> AsyncIterator[str]:
        for t in ("a", "b", "c"):
            await asyncio.sleep(0)
            yield t

    async def tokens_boom(self, request: pyrs.Request) -> AsyncIterator[str]:
        yield "a"
        raise RuntimeError("stream boom")

    def wrapped(self, request: pyrs.Request) -> pyrs.Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"x"
            await asyncio.sleep(0)
            yield b"y"

        return pyrs.Response(gen(), status=202, content_type="application/x-thing")

    def events(self, request: pyrs.Request) -> pyrs.EventStream:
        async def gen() -> AsyncIterator[Any]:
            yield "one"
            await asyncio.sleep(0)
            yield {"event": "tick", "data": {"n": 2}}

        return pyrs.EventStream(gen(), retry=100)

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.closed = True


def test_coroutine_handlers_are_awaited_on_one_loop_per_client() -> None:
    with Client(AsyncApi) as c:
        api = c._instances[0]
        r = c.get("/hello?name=Ada")
        assert (r.status, r.json(), r.header("content-type")) == (200, {"hi": "Ada"}, "application/json")
        assert c.get("/hello").json() == {"hi": "you"}
        assert len(api.loops) == 2 and api.loops[0] is api.loops[1], "one loop for the Client's requests"
        r = c.get("/made")
        assert (r.status, r.text, r.header("x-kind")) == (201, "made", "async")
        r = c.get("/fail")
        assert (r.status, r.text) == (418, "short and stout\n")
        r = c.get("/crash")
        assert (r.status, r.text) == (500, "Internal Server Error\n")
        assert r.error is not None and "RuntimeError: async boom" in r.error
    # Leaving the block awaited the async close() and closed the loop.
    assert api.closed and api.loops[0].is_closed()
    # Another Client gets a loop of its own.
    with Client(AsyncApi) as other:
        other.get("/hello")
        assert other._instances[0].loops[0] is not api.loops[0]


def test_async_generators_are_collected_into_the_body() -> None:
    c = Client(AsyncApi)
    r = c.get("/tokens")
    assert (r.status, r.text, r.header("content-type")) == (200, "abc", "text/plain; charset=utf-8")
    r = c.get("/wrapped")
    assert (r.status, r.body, r.header("content-type")) == (202, b"xy", "application/x-thing")
    r = c.get("/events")
    assert r.header("content-type") == "text/event-stream"
    assert r.text == 'retry: 100\n\ndata: one\n\nevent: tick\ndata: {"n":2}\n\n'
    r = c.get("/tokens_boom")
    assert r.status == 500 and r.error is not None and "stream boom" in r.error
    c.close()
    assert c._instances[0].closed
    c.close()  # twice is harmless


class Streams:
    """Streamed bodies that record whether an item was ever pulled."""

    def __init__(self) -> None:
        self.pulled: list[str] = []
        self.closed: list[str] = []

    def _items(self, name: str) -> Iterator[str]:
        try:
            self.pulled.append(name)
            yield "a"
        finally:
            self.closed.append(name)

    def gen(self, request: pyrs.Request) -> Iterator[str]:
        return self._items("gen")

    def gen_fn(self, request: pyrs.Request) -> Iterator[str]:
        self.pulled.append("gen_fn")
        yield "x"

    def boom(self, request: pyrs.Request) -> Iterator[str]:
        self.pulled.append("boom")
        raise ValueError("boom before the first item")
        yield "never"

    async def agen(self, request: pyrs.Request) -> AsyncIterator[str]:
        self.pulled.append("agen")
        yield "a"

    def events(self, request: pyrs.Request) -> pyrs.EventStream:
        return pyrs.EventStream(self._items("events"))

    def wrapped(self, request: pyrs.Request) -> pyrs.Response:
        return pyrs.Response(self._items("wrapped"), status=202, content_type="application/x-thing")

    def no_content(self, request: pyrs.Request) -> pyrs.Response:
        return pyrs.Response(self._items("no_content"), status=204)


def test_head_on_a_stream_sends_the_head_and_pulls_nothing() -> None:
    with Client(Streams) as c:
        api = c._instances[0]
        for path, status, ctype in [
            ("/gen", 200, "text/plain; charset=utf-8"),
            ("/gen_fn", 200, "text/plain; charset=utf-8"),
            ("/boom", 200, "text/plain; charset=utf-8"),  # never pulled, so it never raises
            ("/agen", 200, "text/plain; charset=utf-8"),
            ("/events", 200, "text/event-stream"),
            ("/wrapped", 202, "application/x-thing"),
        ]:
            r = c.head(path)
            assert (r.status, r.body, r.header("content-type")) == (status, b"", ctype), path
            assert (r.header("transfer-encoding"), r.header("content-length")) == ("chunked", None), path
            assert r.raw.endswith(b"Transfer-Encoding: chunked\r\n\r\n"), path
        r = c.get("/no_content")
        assert (r.status, r.body, r.header("transfer-encoding")) == (204, b"", None)
        assert api.pulled == [], "HEAD (and a 204) never pull an item"
        # GET pulls them, as before.
        assert c.get("/gen").text == "a" and c.get("/boom").status == 500
        assert api.pulled == ["gen", "boom"] and api.closed == ["gen"]
