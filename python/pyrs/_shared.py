# The part of the `pyrs` module written in Python. The server runs this very file
# (src/python/mod.rs includes it) with `Response` already defined; the package
# imports it. Keep it free of other imports of the package.
import json as _json

try:
    Response  # type: ignore[used-before-def]  # noqa: B018 (defined by the server)
except NameError:
    from pyrs._response import Response


class HTTPError(Exception):
    """Raise HTTPError(status, message) in a handler to answer with that status
    (the body is the message, or the status's reason phrase without one)."""

    def __init__(self, status, message=None):
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self):
        return f'{self.status}: {self.message}' if self.message is not None else str(self.status)


class Timeout(BaseException):
    """Raised by pyrs inside a handler that runs past its timeout; answered 503.

    A BaseException, like KeyboardInterrupt, so that 'except Exception:' in
    handler code does not swallow it."""


def redirect(url, status=302):
    """A response that sends the client to `url` (301, 302, 303, 307 or 308)."""
    if status not in (301, 302, 303, 307, 308):
        raise ValueError(f'redirect status must be 301, 302, 303, 307 or 308, not {status!r}')
    return Response(None, status=status, headers=[('Location', url)])


def _reject_constant(name):
    raise ValueError(f'{name} is not valid JSON')


def _finite_float(text):
    value = float(text)
    if value in (float('inf'), float('-inf')):
        raise ValueError(f'number {text} is out of range')
    return value


_decoder = _json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def loads(data):
    """Parses JSON (str, or UTF-8 bytes) as request.json() does: integers of any
    size exact, NaN, Infinity and out-of-range numbers refused (ValueError)."""
    if not isinstance(data, str):
        data = bytes(data).decode('utf-8')
    return _decoder.decode(data)
