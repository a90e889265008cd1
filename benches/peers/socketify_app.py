"""socketify.py (uWebSockets) peer for benches/compare.sh.

python socketify_app.py PORT -- serves /hello, POST /echo and /json on
127.0.0.1, one process, the same handlers as pyrs_app/main.py.
"""

import sys

from bench_payload import payload
from socketify import App, AppListenOptions


def hello(res, req):
    res.send("world", content_type=b"text/plain; charset=utf-8")


def echo(res, req):
    # uWebSockets hands the body over in chunks; a small body is one chunk, sent
    # back as it is (the fastest correct echo found for socketify).
    buf = None

    def on_data(res, chunk, is_end):
        nonlocal buf
        if is_end and buf is None:
            res.send(chunk if chunk is not None else b"", content_type=b"application/octet-stream")
            return
        buf = (buf or b"") + (chunk or b"")
        if is_end:
            res.send(buf, content_type=b"application/octet-stream")

    res.on_data(on_data)


def json_route(res, req):
    # res.send(dict) encodes with the app's JSON serializer (the json module by default).
    res.send(payload())


def main():
    port = int(sys.argv[1])
    app = App()
    app.get("/hello", hello)
    app.post("/echo", echo)
    app.get("/json", json_route)
    app.listen(AppListenOptions(port=port, host="127.0.0.1"), lambda config: print(f"Listening on http://127.0.0.1:{port}", flush=True))
    app.run()


if __name__ == "__main__":
    main()
