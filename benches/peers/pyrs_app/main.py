"""pyrs handlers for benches/compare.sh: the same routes as every peer."""

import time

from bench_payload import payload


class Bench:
    def hello(self, request):
        return "world"

    def echo(self, request):
        return request.body

    def json(self, request):
        return payload()

    def sleep(self, request):
        # time.sleep releases the GIL: other pool threads keep serving.
        time.sleep(0.01)
        return "slept"

    # Only benches/python_call.rs calls these (compare.sh does not route them).

    def tuple(self, request):
        return ("created", 201, {"X-Id": "7"})

    def noop(self, request):
        return None

    def fields(self, request):
        # Reads the lazily built fields a typical handler touches.
        return f"{request.method} {request.path} {request.headers.get('host')} {request.query.get('q')}"
