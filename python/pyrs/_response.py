"""pyrs.Response and pyrs.FileResponse in pure Python (the server's are in Rust)."""

from __future__ import annotations

import datetime
import email.utils
import os
from typing import Any

_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _cookie_octet(ch: str) -> bool:
    b = ord(ch)
    return b == 0x21 or 0x23 <= b <= 0x2B or 0x2D <= b <= 0x3A or 0x3C <= b <= 0x5B or 0x5D <= b <= 0x7E


def _unix_time(expires: Any) -> int:
    if isinstance(expires, datetime.datetime):
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.timezone.utc)
        return int(expires.timestamp() // 1)
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        return int(expires // 1)
    raise TypeError("expires must be a Unix time (int or float) or a datetime")


def render_cookie(
    name: str,
    value: str,
    max_age: int | None,
    expires: int | None,
    path: str | None,
    domain: str | None,
    secure: bool,
    httponly: bool,
    samesite: str | None,
) -> str:
    """The Set-Cookie value the server renders for these arguments (same checks, same order)."""
    if not name or not all(c in _TCHAR for c in name):
        raise ValueError(f'cookie name "{name}" must be a token (letters, digits, !#$%&\'*+-.^_`|~)')
    if not all(_cookie_octet(c) for c in value):
        raise ValueError(
            f'cookie value "{value}" may hold only visible ASCII without \'"\', \',\', \';\', \'\\\\\' or spaces (percent-encode it)'
        )
    for what, v in (("path", path), ("domain", domain)):
        if v is not None and any(c == ";" or ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError(f'cookie {what} "{v}" must not contain \';\' or control characters')
    if samesite not in (None, "Lax", "Strict", "None"):
        raise ValueError(f'samesite must be "Lax", "Strict", "None" or None, not "{samesite}"')
    if samesite == "None" and not secure:
        raise ValueError('samesite="None" needs secure=True (browsers refuse it otherwise)')
    parts = [f"{name}={value}"]
    if httponly:
        parts.append("HttpOnly")
    if samesite is not None:
        parts.append(f"SameSite={samesite}")
    if secure:
        parts.append("Secure")
    if path is not None:
        parts.append(f"Path={path}")
    if domain is not None:
        parts.append(f"Domain={domain}")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if expires is not None:
        parts.append(f"Expires={email.utils.formatdate(expires, usegmt=True)}")
    return "; ".join(parts)


class Response:
    """pyrs.Response(body=None, status=200, headers=None, content_type=None)."""

    def __init__(self, body: Any = None, status: int = 200, headers: Any = None, content_type: str | None = None):
        self.body = body
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.cookies: list[str] = []

    def set_cookie(
        self,
        name: str,
        value: str = "",
        *,
        max_age: int | None = None,
        expires: Any = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "Lax",
    ) -> None:
        when = None if expires is None else _unix_time(expires)
        self.cookies.append(render_cookie(name, value, max_age, when, path, domain, secure, httponly, samesite))

    def delete_cookie(self, name: str, *, path: str | None = "/", domain: str | None = None) -> None:
        self.cookies.append(render_cookie(name, "", 0, 0, path, domain, False, False, None))

    def __repr__(self) -> str:
        return f"<pyrs.Response status={self.status}>"


class FileResponse:
    """pyrs.FileResponse(path, content_type=None, filename=None, headers=None, status=200)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        filename: str | None = None,
        headers: Any = None,
        status: int = 200,
    ):
        if status in (206, 416):
            raise ValueError(
                f"status {status} is answered by pyrs from the request's Range header; give the status of the whole file"
            )
        if not 200 <= status <= 599:
            raise ValueError(f"status {status} is not a final HTTP status (200-599)")
        self.path = os.fspath(path)
        self.content_type = content_type
        self.filename = filename
        self.headers = headers
        self.status = status

    def __repr__(self) -> str:
        return f"<pyrs.FileResponse {self.path!r}>"
