"""pyrs handlers for examples/batched_model: the same two models (service.py) served per request and
batched.

    POST /logreg          [64 numbers] -> {"digit": d}    one model call per request
    POST /logreg/batched  [64 numbers] -> {"digit": d}    one model call per batch of up to 64 requests
    POST /forest, POST /forest/batched                     the same with the random forest
    GET  /                                                 usage

A batched handler gets a list of requests and returns a list of as many answers; a request whose body
is not 64 numbers gets its own 400 (an HTTPError in the list) without failing its batch.
"""

from typing import Any

import pyrs

from service import BadRow, Digits, parse_body, parse_rows

USAGE = """pyrs batched_model example: scikit-learn digit classifiers (load_digits, 8x8 pixels, 0-16).

  curl -d "$(python3 -c 'from sklearn.datasets import load_digits; print(list(load_digits().data[0]))')" \\
       http://HOST:PORT/forest/batched
  routes: POST /logreg, /logreg/batched, /forest, /forest/batched
"""


def row_of(request: pyrs.Request) -> Any:
    rows = parse_rows([request.body])  # the same parser as a batch of one
    if rows is not None:
        return rows
    try:
        return [parse_body(request.body)]
    except BadRow as e:
        raise pyrs.HTTPError(400, str(e)) from None


class Model:
    def __init__(self) -> None:
        self.digits = Digits()
        print(f"batched_model: trained logreg and a 50-tree forest in {self.digits.train_seconds:.1f} s", flush=True)

    # ---- one request per call

    def logreg(self, request: pyrs.Request) -> dict[str, int]:
        return {"digit": self.digits.predict("logreg", row_of(request))[0]}

    def forest(self, request: pyrs.Request) -> dict[str, int]:
        return {"digit": self.digits.predict("forest", row_of(request))[0]}

    # ---- batches: handler(self, requests) -> a list of answers, in order

    def logreg_batched(self, requests: list[pyrs.Request]) -> list[Any]:
        return self.batch("logreg", requests)

    def forest_batched(self, requests: list[pyrs.Request]) -> list[Any]:
        return self.batch("forest", requests)

    def batch(self, name: str, requests: list[pyrs.Request]) -> list[Any]:
        # Fast path: every body parsed in one numpy call, one model call.
        rows = parse_rows([r.body for r in requests])
        if rows is not None:
            return [{"digit": d, "batch": len(requests)} for d in self.digits.predict(name, rows)]
        # Some body is not 64 numbers: find which, answer them 400, predict the others.
        answers: list[Any] = [None] * len(requests)
        good: list[list[float]] = []
        where: list[int] = []
        for i, request in enumerate(requests):
            try:
                good.append(parse_body(request.body))
                where.append(i)
            except BadRow as e:
                answers[i] = pyrs.HTTPError(400, str(e))  # this request alone gets its 400
        if good:
            for i, digit in zip(where, self.digits.predict(name, good)):
                answers[i] = {"digit": digit, "batch": len(good)}
        return answers

    def usage(self, request: pyrs.Request) -> tuple[str, int]:
        return (USAGE, 200 if request.path == "/" else 404)
