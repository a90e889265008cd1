"""pyrs.Request, pyrs.Headers and pyrs.UploadedFile in pure Python, built by
pyrs.testing from a request as the server would have parsed it."""

from __future__ import annotations

import os
from typing import Any, Iterator
from urllib.parse import parse_qsl

from pyrs._shared import HTTPError, loads

MAX_FORM_PARTS = 1000


class Headers:
    """A read-only, case-insensitive mapping of request headers (str values)."""

    def __init__(self, items: list[tuple[str, str]]):
        self._items = list(items)

    def _find(self, name: str) -> Iterator[str]:
        lower = name.lower()
        return (v for n, v in self._items if n.lower() == lower)

    def __getitem__(self, name: str) -> str:
        for v in self._find(name):
            return v
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        return next(self._find(name), default)

    def get_all(self, name: str) -> list[str]:
        return list(self._find(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and next(self._find(name), None) is not None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        return [n for n, _ in self._items]

    def values(self) -> list[str]:
        return [v for _, v in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return "Headers({" + ", ".join(f'"{n}": "{v}"' for n, v in self._items) + "})"


class UploadedFile:
    """One file of a multipart/form-data body."""

    def __init__(self, name: str, filename: str, content_type: str | None, data: bytes):
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self._data = data
        self._pos = 0

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def data(self) -> bytes:
        return self._data

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._pos + size)
        chunk = self._data[min(self._pos, end):end]
        self._pos += len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if base + offset < 0:
            raise ValueError(f"negative seek position {offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            f.write(self._data)

    def __repr__(self) -> str:
        return f'<pyrs.UploadedFile "{self.name}" "{self.filename}" {self.size} bytes>'


def _multi(pairs: list[tuple[str, Any]]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    first: dict[str, Any] = {}
    every: dict[str, list[Any]] = {}
    for k, v in pairs:
        if k in every:
            every[k].append(v)
        else:
            first[k] = v
            every[k] = [v]
    return first, every


def _urlencoded(data: str) -> list[tuple[str, str]]:
    return parse_qsl(data, keep_blank_values=True, errors="replace")


def _param(header: str, name: str) -> str | None:
    """A parameter of a Content-Type or Content-Disposition value (quoted or not)."""
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            return value
    return None


def _malformed(why: str) -> HTTPError:
    return HTTPError(400, f"malformed form body: {why}")


def _multipart(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[UploadedFile]]:
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise _malformed("multipart boundary not found in Content-Type")
    delimiter = b"--" + boundary.encode("latin-1")
    if not body.startswith(delimiter):
        raise _malformed("incomplete stream")
    fields: list[tuple[str, str]] = []
    files: list[UploadedFile] = []
    rest = body[len(delimiter):]
    while True:
        if rest.startswith(b"--"):
            return fields, files
        if not rest.startswith(b"\r\n"):
            raise _malformed("incomplete stream")
        end = rest.find(b"\r\n" + delimiter)
        if end < 0:
            raise _malformed("incomplete stream")
        part, rest = rest[2:end], rest[end + 2 + len(delimiter):]
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            raise _malformed("incomplete headers")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise _malformed("failed to read headers")
            headers[name.lower()] = value.strip()
        if len(fields) + len(files) == MAX_FORM_PARTS:
            raise HTTPError(413, f"form has more than {MAX_FORM_PARTS} parts")
        disposition = headers.get("content-disposition", "")
        field = _param(disposition, "name") or ""
        filename = _param(disposition, "filename")
        if filename is None:
            fields.append((field, data.decode("utf-8", errors="replace")))
        else:
            files.append(UploadedFile(field, filename, headers.get("content-type"), data))


class Request:
    """The request as a handler sees it (the same fields as the server's pyrs.Request)."""

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        params: dict[str, str] | None = None,
        remote_addr: str = "127.0.0.1",
        remote_port: int = 1,
        http_version: str = "HTTP/1.1",
        scheme: str = "http",
    ):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = Headers(headers or [])
        self.body = body
        self.params = dict(params or {})
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.http_version = http_version
        self.scheme = scheme
        self.query, self.query_all = _multi(_urlencoded(query_string))
        self._form: tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any], dict[str, list[Any]]] | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        try:
            return loads(self.body)
        except Exception as e:
            raise HTTPError(400, f"invalid JSON body: {e}") from None

    def _parse_form(self) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any], dict[str, list[Any]]]:
        if self._form is None:
            content_type = self.headers.get("content-type") or ""
            essence = content_type.split(";")[0].strip().lower()
            fields: list[tuple[str, str]] = []
            files: list[UploadedFile] = []
            if essence == "application/x-www-form-urlencoded":
                fields = _urlencoded(self.body.decode("utf-8", "replace"))
                if len(fields) > MAX_FORM_PARTS:
                    raise HTTPError(413, f"form has more than {MAX_FORM_PARTS} parts")
            elif essence == "multipart/form-data":
                fields, files = _multipart(content_type, self.body)
            f1, fa = _multi(fields)
            u1, ua = _multi([(u.name, u) for u in files])
            self._form = (f1, fa, u1, ua)
        return self._form

    @property
    def form(self) -> dict[str, str]:
        return self._parse_form()[0]

    @property
    def form_all(self) -> dict[str, list[str]]:
        return self._parse_form()[1]

    @property
    def files(self) -> dict[str, UploadedFile]:
        return self._parse_form()[2]

    @property
    def files_all(self) -> dict[str, list[UploadedFile]]:
        return self._parse_form()[3]

    @property
    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for header in self.headers.get_all("cookie"):
            for pair in header.split(";"):
                name, eq, value = pair.strip().partition("=")
                name, value = name.strip(), value.strip()
                if not eq or not name:
                    continue
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                out.setdefault(name, value)
        return out

    @property
    def host(self) -> str:
        return self.headers.get("host") or ""

    @property
    def url(self) -> str:
        url = f"{self.scheme}://{self.host}{self.path}"
        return url + ("?" + self.query_string if self.query_string else "")

    def __repr__(self) -> str:
        target = self.path + ("?" + self.query_string if self.query_string else "")
        return f"<pyrs.Request {self.method} {target}>"

