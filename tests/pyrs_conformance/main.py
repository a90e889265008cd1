"""Handler cases run twice by tests/python_package.rs: through the real server and
through pyrs.testing; the responses must be the same bytes (Date and X-Request-Id aside)."""

import asyncio
import dataclasses
import datetime
import uuid
from typing import Any, Iterator

import pyrs


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Api:
    def text(self, request: pyrs.Request) -> str:
        return "héllo ✓"

    def raw(self, request: pyrs.Request) -> bytes:
        return b"\x00\x01bytes"

    def data(self, request: pyrs.Request) -> dict[str, Any]:
        return {"a": 1, "big": 2**70, "f": [0.1, 1e20, 1e-7, -0.0], "none": None, "s": "é\"\n",
                "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                "id": uuid.UUID(int=7), "p": Point(1, 2.5), 3: "int key"}

    def listing(self, request: pyrs.Request) -> list[Any]:
        return [1, "two", {"three": 3}, (4, 5)]

    def nothing(self, request: pyrs.Request) -> None:
        return None

    def created(self, request: pyrs.Request) -> tuple[str, int, dict[str, str]]:
        return ("made", 201, {"X-Custom": "yes", "Content-Type": "text/csv", "Server": "mine"})

    def response(self, request: pyrs.Request) -> pyrs.Response:
        r = pyrs.Response(b"<b>hi</b>", status=203, headers=[("X-A", "1")], content_type="text/html")
        r.set_cookie("sid", "abc", httponly=True, max_age=60)
        r.set_cookie("t", "x", expires=1445412480, samesite="Strict", secure=True, domain="example.com")
        r.delete_cookie("old", path="/app")
        return r

    def go(self, request: pyrs.Request) -> pyrs.Response:
        return pyrs.redirect("/text?from=go", status=303)

    def missing(self, request: pyrs.Request) -> None:
        raise pyrs.HTTPError(404)

    def teapot(self, request: pyrs.Request) -> None:
        raise pyrs.HTTPError(418, "short and stout")

    def boom(self, request: pyrs.Request) -> None:
        raise ValueError("kaboom")

    def bad_header(self, request: pyrs.Request) -> tuple[str, int, dict[str, str]]:
        return ("x", 200, {"X-Evil": "a\r\nInjected: 1"})

    def gen_boom(self, request: pyrs.Request) -> Iterator[str]:
        raise ValueError("before the first item")
        yield "never"

    def gen_http_error(self, request: pyrs.Request) -> Iterator[str]:
        raise pyrs.HTTPError(404, "no such stream")
        yield "never"

    async def async_created(self, request: pyrs.Request) -> tuple[str, int, dict[str, str]]:
        await asyncio.sleep(0)
        return "made async", 201, {"X-Kind": "async"}

    async def async_teapot(self, request: pyrs.Request) -> None:
        await asyncio.sleep(0)
        raise pyrs.HTTPError(418, "short and stout, awaited")

    async def async_boom(self, request: pyrs.Request) -> None:
        await asyncio.sleep(0)
        raise ValueError("async kaboom")

    def nan(self, request: pyrs.Request) -> dict[str, float]:
        return {"x": float("nan")}

    def echo(self, request: pyrs.Request) -> dict[str, Any]:
        return {
            "method": request.method, "path": request.path, "query": request.query, "query_all": request.query_all,
            "params": request.params, "cookies": request.cookies, "host": request.host, "url": request.url,
            "content_type": request.headers.get("content-type"), "len": len(request.body),
        }

    def form(self, request: pyrs.Request) -> dict[str, Any]:
        files = {k: [(f.filename, f.content_type, f.data.decode()) for f in v] for k, v in request.files_all.items()}
        return {"form": request.form_all, "files": files}

    def json_echo(self, request: pyrs.Request) -> dict[str, Any]:
        return {"got": request.json()}

    def which(self, request: pyrs.Request) -> dict[str, Any]:
        """Which pyrs module handler code got (not one of the compared cases)."""
        return {"built_in": not hasattr(pyrs, "__file__"), "version": pyrs.__version__}
