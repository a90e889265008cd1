"""Plain WSGI adapter (run by Granian): granian --interface wsgi wsgi_app:app."""

import json
from urllib.parse import parse_qsl

from bench_services import BAD, ROUTES

JSON = [("Content-Type", "application/json")]


def app(environ, start_response):
    handler = ROUTES.get((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try:
        out = json.dumps(handler(query, body)).encode()
    except BAD as e:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [str(e).encode()]
    start_response("200 OK", JSON + [("Content-Length", str(len(out)))])
    return [out]
