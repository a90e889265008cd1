"""pyrs handlers for the spell checker: HTTP in, SpellService (service.py) out.

Routes (project.pyrs):
    GET  /correct?q=TEXT[&n=5]   -> one correction as JSON
    POST /correct  ["q1", ...]   -> a JSON list of corrections (batch)
    GET  /                       -> usage text
The dictionary is loaded once, in __init__, before pyrs forks its workers;
they all share that one copy.
"""

from typing import Any

import pyrs

from service import BadQuery, SpellService

USAGE = """pyrs spellcheck example: symspellpy, English, edit distance 2.

  curl 'http://HOST:PORT/correct?q=speling'
  curl 'http://HOST:PORT/correct?q=whereis+th+elove'
  curl -d '["speling", "recieve", "whereis th elove"]' http://HOST:PORT/correct
"""


class Spellcheck:
    def __init__(self) -> None:
        self.service = SpellService()
        print(
            f"spellcheck: loaded {self.service.words} words in {self.service.load_seconds:.1f} s",
            flush=True,
        )

    def correct(self, request: pyrs.Request) -> Any:
        try:
            if request.method == "POST":
                return self.service.correct_batch(request.json())
            n = request.query.get("n", "5")
            if not n.isdigit():
                raise BadQuery("n must be a number")
            return self.service.correct(request.query.get("q", ""), int(n))
        except BadQuery as e:
            raise pyrs.HTTPError(400, str(e)) from None

    def usage(self, request: pyrs.Request) -> tuple[str, int]:
        return (USAGE, 200 if request.path == "/" else 404)
