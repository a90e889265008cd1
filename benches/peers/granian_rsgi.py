"""Granian RSGI peer for benches/compare.sh (granian --interface rsgi granian_rsgi:app)."""

import json

from bench_payload import payload

TEXT = [("content-type", "text/plain; charset=utf-8")]
OCTETS = [("content-type", "application/octet-stream")]
JSON = [("content-type", "application/json")]


async def app(scope, proto):
    path = scope.path
    method = scope.method
    if path == "/hello" and method == "GET":
        proto.response_str(200, TEXT, "world")
    elif path == "/echo" and method == "POST":
        proto.response_bytes(200, OCTETS, await proto())
    elif path == "/json" and method == "GET":
        proto.response_bytes(200, JSON, json.dumps(payload()).encode())
    else:
        proto.response_str(404, TEXT, "Not Found\n")
