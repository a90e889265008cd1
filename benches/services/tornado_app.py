"""Tornado adapter, one process (how the original services ran): python tornado_app.py PORT."""

import json
import sys

import tornado.ioloop
import tornado.web

from bench_services import BAD, ROUTES


class Dispatch(tornado.web.RequestHandler):
    def _serve(self):
        handler = ROUTES.get((self.request.method, self.request.path))
        if handler is None:
            raise tornado.web.HTTPError(404)
        query = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        try:
            out = handler(query, self.request.body)
        except BAD as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(out))

    get = post = _serve


def main():
    app = tornado.web.Application([(r"/.*", Dispatch)])
    app.listen(int(sys.argv[1]), address="127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
