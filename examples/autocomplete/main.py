"""pyrs handlers for the autocomplete: HTTP in, Completer (service.py) out.

Routes (project.pyrs):
    GET /complete?prefix=PREFIX[&k=10]  -> {"prefix", "completions": [{"word", "count"}]}
    GET /                               -> usage text
The prefix index is built once, in __init__, before pyrs forks its workers.
"""

from typing import Any

import pyrs

from service import BadQuery, Completer

USAGE = """pyrs autocomplete example: marisa-trie over 82,834 English words, ranked by frequency.

  curl 'http://HOST:PORT/complete?prefix=spe'
  curl 'http://HOST:PORT/complete?prefix=qu&k=3'
"""


class Autocomplete:
    def __init__(self) -> None:
        self.completer = Completer()
        print(
            f"autocomplete: indexed {self.completer.words} words "
            f"({len(self.completer.top)} prefixes precomputed) in {self.completer.load_seconds:.1f} s",
            flush=True,
        )

    def complete(self, request: pyrs.Request) -> dict[str, Any]:
        k = request.query.get("k", "10")
        try:
            if not k.isdigit():
                raise BadQuery("k must be a number")
            return self.completer.complete(request.query.get("prefix", ""), int(k))
        except BadQuery as e:
            raise pyrs.HTTPError(400, str(e)) from None

    def usage(self, request: pyrs.Request) -> tuple[str, int]:
        return (USAGE, 200 if request.path == "/" else 404)
