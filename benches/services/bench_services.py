"""The service under test for benches/services.sh, for the peer adapters
(flask_app.py, wsgi_app.py, tornado_app.py): the SAME classes the pyrs examples
serve (examples/NAME/service.py), chosen by $BENCH_SERVICE, behind one table of
routes. pyrs itself serves examples/NAME/main.py (pyrs_*.pyrs).

`ROUTES[(method, path)](query, body)` returns the JSON-able answer, or raises
`BAD` (a 400). Every adapter also answers GET /pid (its pid) and GET /gc
(gc.collect(), then its pid): benches/services.sh reads memory after it.
"""

import gc
import json
import os
import sys

NAME = os.environ["BENCH_SERVICE"]
EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", NAME)
sys.path.insert(0, os.path.abspath(EXAMPLE))

import service  # noqa: E402  (examples/NAME/service.py)

if NAME == "spellcheck":
    _spell = service.SpellService()
    BAD = service.BadQuery
    ROUTES = {("GET", "/correct"): lambda query, body: _spell.correct(query.get("q", ""))}
elif NAME == "classifier":
    _model = service.ProductClassifier()
    BAD = (service.BadTitle, ValueError)
    ROUTES = {("POST", "/classify"): lambda query, body: _model.classify(json.loads(body)["title"])}
elif NAME == "usernames":
    _names = service.UsernameService(os.environ["USERNAMES_DB"])
    BAD = service.BadName
    ROUTES = {("GET", "/available"): lambda query, body: _names.available(query.get("name", ""))}
else:
    raise SystemExit(f"unknown BENCH_SERVICE {NAME!r}")

ROUTES[("GET", "/pid")] = lambda query, body: {"pid": os.getpid()}


def _collect(query, body):
    gc.collect()
    return {"pid": os.getpid()}


ROUTES[("GET", "/gc")] = _collect
