"""The echo example: the smallest pyrs project, and the wrk benchmark target."""

import pyrs


class Api:
    def echo(self, request: pyrs.Request) -> bytes:
        # bytes in, bytes out: the body comes back unchanged.
        return request.body

    def hello(self, request: pyrs.Request) -> str:
        return "world"

    def default(self, request: pyrs.Request) -> tuple[str, int]:
        return ("pyrs echo example: try POST /echo or GET /hello\n", 404)
