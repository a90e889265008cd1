"""Granian WSGI peer for benches/compare.sh (granian --interface wsgi granian_wsgi:app)."""

import json

from bench_payload import payload

TEXT = [("Content-Type", "text/plain; charset=utf-8")]
NOT_FOUND = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "10")]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    if path == "/hello" and method == "GET":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "5")])
        return [b"world"]
    if path == "/echo" and method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/json" and method == "GET":
        body = json.dumps(payload()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", NOT_FOUND)
    return [b"Not Found\n"]
